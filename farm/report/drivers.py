"""What drove a load point: the SM clock it ran at, the throttle reasons seen, and
whether it was host-bound, memory-bound or compute-bound — read from the run's
stored power timeline over the point's steady window. Pure data; the "clocks"
figure (figures/clock_pareto.py) labels its points with it.

The rule, per GPU (a run's figures are sums over its GPUs, divided by their
count), with P the mean board power over the steady window, P_idle the idle
power with a CUDA context held (measured with the run), P_cap the enforced power
limit (read back after setting it, else the limit the preflight saw):

- **achieved clock**: the median of the timeline's `sm_clock_mhz` samples inside
  the steady window, over the run's GPUs;
- **throttle reasons**: every NVML clocks-event reason set in some sample inside
  the window (GPU idle, which an engine between steps sets, is left out);
- **bound**:
  - *host-bound*: no power-cap or thermal reason in ≥ THROTTLED_SHARE of the
    samples, and the dynamic power P − P_idle is below HOST_BOUND_SHARE of the
    headroom P_cap − P_idle: the GPU had clock and power to spare but drew little
    more than an idle context, so it waited on the host (the hf engine on a
    0.67 B model drew 137–149 W on an H100 whose context-held idle is ~120 W);
  - *memory-bound*: otherwise, when the memory's share of the dynamic power,
    (P_mem − P_mem,idle) ÷ (P − P_idle), is ≥ MEMORY_BOUND_SHARE, P_mem the
    timeline's memory power over the window and P_mem,idle over the run's
    context-held idle window: HBM traffic, not SM work, drew the power;
  - *compute-bound*: otherwise (the SMs drew it);
  - *unknown*: a figure the step needs was not stored (no idle power, no cap, no
    memory power series): the data cannot tell, and nothing is guessed.

The two thresholds are first choices, not calibrations: no vLLM point on an 8B
model had been measured when they were set, and a GPU session should check
them against its timelines (docs/report.md says so next to the figure).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from farm.report.points import RunPoint
from farm_contract.derive import window_samples

HOST_BOUND_SHARE = 0.20
MEMORY_BOUND_SHARE = 0.15
# A power-cap or thermal reason in at least this share of a window's samples
# holds the clock for the window (a single sample is a transient).
THROTTLED_SHARE = 0.20

# NVML clocks-event (throttle) reason bits (nvmlClocksEventReason*).
GPU_IDLE = 0x1
REASONS = {0x2: "applications clocks", 0x4: "SW power cap", 0x8: "HW slowdown",
           0x10: "sync boost", 0x20: "SW thermal", 0x40: "HW thermal",
           0x80: "HW power brake", 0x100: "display clock"}
POWER_CAP_BITS = 0x4 | 0x80
THERMAL_BITS = 0x20 | 0x40 | 0x8

UNKNOWN = "unknown"


def reason_names(mask: int) -> list[str]:
    """The named reasons of a clocks-event bitmask (GPU idle left out), in bit order;
    bits NVML has no name for here as hex."""
    names = [name for bit, name in REASONS.items() if mask & bit]
    rest = mask & ~(GPU_IDLE | sum(REASONS))
    return names + ([f"0x{rest:x}"] if rest else [])


@dataclass(frozen=True)
class Driver:
    """What drove one run point (None: not in the stored data)."""

    sm_clock_mhz: float | None          # median over the steady window
    throttles: tuple[str, ...]          # reasons seen in the window
    bound: str                          # host-bound | memory-bound | compute-bound | unknown
    why: str                            # the numbers behind `bound`, in words

    @property
    def label(self) -> str:
        """E.g. "1185 MHz · SW power cap · memory-bound"."""
        clock = f"{self.sm_clock_mhz:.0f} MHz" if self.sm_clock_mhz is not None else "clock —"
        return " · ".join([clock, ", ".join(self.throttles) or "no throttle", self.bound])


def _window(windows: Sequence[Any], name: str, load_point: int | None = None) -> Any:
    return next((w for w in windows if w.name == name
                 and (load_point is None or w.load_point == load_point)), None)


def _inside(trace: Any, series: str, window: Any) -> list[Any]:
    """The non-None samples of `series` (every GPU) in [start, end) of `window`, picked
    by the rule the worker's figures use (`window_samples`)."""
    values = getattr(trace, series, None) if trace is not None else None
    if values is None or window is None:
        return []
    keep = window_samples(trace.t_s, float(window.start_s), float(window.duration_s),
                          end_included=False)
    return [gpu[i] for gpu in values for i in keep if gpu[i] is not None]


def _cap_w(p: RunPoint, result: dict[str, Any] | None) -> float | None:
    """The enforced limit of one GPU: read back after setting it, else the preflight's."""
    if p.get("applied_power_limit_w") is not None:
        return float(p.get("applied_power_limit_w"))
    preflight = (result or {}).get("preflight")
    limits = [g.power_limit_w for g in (preflight.gpus if preflight else [])
              if g.power_limit_w is not None]
    return min(limits) if limits else None


def driver(p: RunPoint, load_point: int, trace: Any, result: dict[str, Any] | None) -> Driver:
    """What drove run point `p`, the `load_point`-th load point of its run."""
    windows = (result or {}).get("windows") or []
    steady = _window(windows, "steady", load_point)
    clocks = _inside(trace, "sm_clock_mhz", steady)
    masks = [int(m) for m in _inside(trace, "throttle_reasons", steady)]
    seen = 0
    for mask in masks:
        seen |= mask
    capped = sum(1 for m in masks if m & POWER_CAP_BITS)
    hot = sum(1 for m in masks if m & THERMAL_BITS)
    throttled = bool(masks) and max(capped, hot) >= THROTTLED_SHARE * len(masks)
    bound, why = _bound(p, result, steady, windows, trace, throttled, bool(masks))
    return Driver(statistics.median(clocks) if clocks else None, tuple(reason_names(seen)),
                  bound, why)


def _bound(p: RunPoint, result: dict[str, Any] | None, steady: Any, windows: Sequence[Any],
           trace: Any, throttled: bool, have_masks: bool) -> tuple[str, str]:
    n = max(1, p.gpu_count)
    power, idle, cap = p.get("avg_power_w"), p.get("idle_ctx_power_w"), _cap_w(p, result)
    if power is None or idle is None or cap is None or steady is None:
        missing = [name for name, v in (("steady power", power), ("idle power", idle),
                                        ("power limit", cap), ("steady window", steady))
                   if v is None]
        return UNKNOWN, f"not stored: {', '.join(missing)}"
    power, idle = power / n, idle / n
    dynamic, headroom = power - idle, cap - idle
    if headroom <= 0:
        return UNKNOWN, f"idle {idle:.0f} W is not below the {cap:.0f} W limit"
    share = dynamic / headroom
    words = f"{power:.0f} W, idle {idle:.0f} W, limit {cap:.0f} W: {share:.0%} of the headroom"
    if not have_masks:
        return UNKNOWN, f"{words}; no throttle reasons stored"
    if not throttled and share < HOST_BOUND_SHARE:
        return "host-bound", f"{words} (< {HOST_BOUND_SHARE:.0%}), no throttle"
    mem = _inside(trace, "memory_power_w", steady)
    mem_idle = _inside(trace, "memory_power_w", _window(windows, "idle_ctx"))
    if not mem or not mem_idle or dynamic <= 0:
        return UNKNOWN, f"{words}; no memory power over the window and the idle one"
    mem_share = (statistics.fmean(mem) - statistics.fmean(mem_idle)) / dynamic
    words += f"; memory {mem_share:.0%} of the dynamic power"
    if mem_share >= MEMORY_BOUND_SHARE:
        return "memory-bound", f"{words} (≥ {MEMORY_BOUND_SHARE:.0%})"
    return "compute-bound", f"{words} (< {MEMORY_BOUND_SHARE:.0%})"


def combine(drivers: Sequence[Driver]) -> Driver:
    """One configuration's driver over its repetitions: the median of their clocks,
    every reason any saw, the bound they agree on, else "mixed (…)" with the counts."""
    clocks = [d.sm_clock_mhz for d in drivers if d.sm_clock_mhz is not None]
    throttles = tuple(sorted({t for d in drivers for t in d.throttles},
                             key=lambda t: [*REASONS.values(), t].index(t)))
    bounds = Counter(d.bound for d in drivers)
    bound = (next(iter(bounds)) if len(bounds) == 1 else
             "mixed (" + ", ".join(f"{b} ×{k}" for b, k in bounds.most_common()) + ")")
    whys = list(dict.fromkeys(d.why for d in drivers))
    return Driver(statistics.median(clocks) if clocks else None, throttles, bound,
                  whys[0] if len(whys) == 1 else f"{len(drivers)} runs: " + " | ".join(whys))
