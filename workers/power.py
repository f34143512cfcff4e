"""Energy windows (hardware counter deltas) and the timeline sampler.

Energy of a window is the difference of each GPU's energy counter read at the
window's edges (3–18 ms per read on an H100: edges only, never a loop), summed
over the run's GPUs. A counter that went backwards is a reset or a wrap: with a
known wrap point (RAPL) and a plausible single wrap the delta is corrected,
otherwise the window's energy is None with a reason — missing data, never
negative or zero energy.

The timeline is sampled in a background thread at the sweep's period: power
(instantaneous where the device has it), memory power, temperature, SM clock
and throttle reasons. Each window also carries the timeline's integral over the
same interval and the ratio of the two, flagged when a window long enough to
judge disagrees beyond the sweep's tolerance. The same thread watches the GPUs
for foreign compute processes (isolation).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from farm_contract.derive import TRACE_DIGITS, WINDOW_DIGITS, timeline_integral, window_samples
from farm_contract.records import EnergyWindow, PowerTrace, SourceEnergy
from workers.energy import EnergySource, SourceReading, read_all
from workers.gpu.base import GpuDevice

log = logging.getLogger(__name__)

# Secondary series sampled with power; each a GpuDevice method returning a number or None.
SERIES = ("memory_power_w", "temperature_c", "sm_clock_mhz", "throttle_reasons")
PID_CHECK_S = 1.0
# The longest an integral waits for a sample being read (a hung read is missing data).
READ_WAIT_S = 2.0
# Reads the extra energy sources while the GPUs' counters are read (window edges).
_EDGE_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="meter-edge")


@dataclass
class _OpenWindow:
    start_s: float
    counters_mj: list[float | None]
    # The extra sources' readings at the opening edge, resolved when the window closes.
    sources: Future[list[SourceReading]] | None = None
    # Per GPU, when its counter was seen to move (tick-aligned edges), else None.
    ticks_s: list[float] | None = None


# How long an aligned edge waits for a counter to move, in its update periods: past
# that the counter is stalled (or steps more coarsely than it says) and the edge is
# read as it is.
ALIGN_WAIT_PERIODS = 2.5


@dataclass
class Contamination:
    """A foreign compute process seen on a run's GPU."""

    at_s: float
    gpu_uuid: str
    pids: list[int]


def _read(gpu: GpuDevice, name: str) -> float | int | None:
    """One reading; a failing reading is a missing sample, not a failed run."""
    try:
        return getattr(gpu, name)()
    except Exception as exc:  # vendor errors mid-run: keep sampling the rest
        log.debug("reading %s of %s failed: %s", name, gpu.info.uuid, exc)
        return None


@dataclass
class _Series:
    power_w: list[list[float | None]]
    extra: dict[str, list[list[float | int | None]]] = field(default_factory=dict)


class PowerSampler:
    """Samples every GPU at a fixed period in a daemon thread; watches for tenants."""

    def __init__(self, gpus: list[GpuDevice], period_s: float, clock=time.monotonic,
                 allowed_pids: Callable[[], set[int]] | None = None,
                 on_tenant: Callable[[list[Contamination]], None] | None = None):
        self.gpus = gpus
        # Told each sighting at once: the run stops early, its measurement being lost anyway.
        self.on_tenant = on_tenant
        self.period_s = period_s
        self.clock = clock
        self.origin = clock()
        self.t_s: list[float] = []
        self._series = _Series(power_w=[[] for _ in gpus],
                               extra={name: [[] for _ in gpus] for name in SERIES})
        self.allowed_pids = allowed_pids
        self.contamination: list[Contamination] = []
        self._next_pid_check = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # A sample being read: its time (taken before its readings), None between
        # samples. An integral up to a later time waits for it (`integral`).
        self._reading_since: float | None = None
        self._appended = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)

    @property
    def power_w(self) -> list[list[float | None]]:
        """Each GPU's power samples (Units: W), one list per GPU; None where a read failed."""
        return self._series.power_w

    def start(self) -> None:
        """Start the sampling thread."""
        self._thread.start()

    def _loop(self) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            self.sample()
            # Schedule on a fixed grid so sampling jitter does not accumulate.
            next_at += self.period_s
            self._stop.wait(max(0.0, next_at - self.clock()))

    def sample(self) -> None:
        """Take one sample of every GPU's series now; check for tenants when one is due."""
        # Stamped before its readings, which describe the GPUs from then on (stamped
        # after them, a sample read before a load started could be stamped inside
        # the load's window, an idle reading counted in it).
        with self._lock:
            now = self.clock() - self.origin
            self._reading_since = now
        power = [_read(gpu, "power_w") for gpu in self.gpus]
        extra = {name: [_read(gpu, name) for gpu in self.gpus] for name in SERIES}
        with self._lock:
            self._reading_since = None
            self._appended.notify_all()
            self.t_s.append(now)
            for series, value in zip(self._series.power_w, power):
                series.append(value)
            for name, values in extra.items():
                for series, value in zip(self._series.extra[name], values):
                    series.append(value)
        if self.allowed_pids is not None and now >= self._next_pid_check:
            self._next_pid_check = now + PID_CHECK_S
            self.check_tenants(now)

    def check_tenants(self, now_s: float | None = None) -> list[Contamination]:
        """Record compute processes on the run's GPUs that are not the run's own."""
        allowed = self.allowed_pids() if self.allowed_pids else set()
        found = []
        for gpu in self.gpus:
            pids = _read(gpu, "compute_pids")
            foreign = sorted(set(pids or []) - allowed)
            if foreign:
                found.append(Contamination(now_s if now_s is not None else self.now_s(),
                                           gpu.info.uuid, foreign))
        with self._lock:
            self.contamination.extend(found)
        if found and self.on_tenant is not None:
            self.on_tenant(found)
        return found

    def now_s(self) -> float:
        """Seconds since the sampler was made (the timeline's clock)."""
        return self.clock() - self.origin

    def stop(self) -> None:
        """Stop the sampling thread and wait for it (at most 5 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def integral(self, start_s: float, end_s: float) -> tuple[float | None, float | None,
                                                             float | None]:
        """(energy J, average W, peak W) of the summed timeline over [start, end].

        Trapezoidal integral of the samples inside the window, scaled to the full
        window, spanning samples a GPU's reading is missing from; None when fewer
        than two samples with every GPU's reading fall inside it
        (`farm_contract.derive.timeline_integral`).
        """
        with self._lock:
            # A sample stamped inside the window but still being read belongs to it:
            # wait for it (a read is bounded by the device's own timeouts), so the
            # integral stored with the window is the one the stored trace gives.
            self._appended.wait_for(lambda: self._reading_since is None
                                    or self._reading_since > end_s, timeout=READ_WAIT_S)
            # Only the window's samples are copied out (the rule picks them again).
            inside = window_samples(self.t_s, start_s, end_s - start_s)
            t_s = [self.t_s[i] for i in inside]
            power_w = [[s[i] for i in inside] for s in self._series.power_w]
        return timeline_integral(t_s, power_w, start_s, end_s - start_s)

    def values_in(self, name: str, start_s: float, duration_s: float) -> list[float]:
        """Every non-missing sample of a series (all GPUs) in [start, end) of a window,
        picked by the rule every window figure uses (`window_samples`)."""
        with self._lock:
            series = self._series.power_w if name == "power_w" else self._series.extra[name]
            inside = window_samples(self.t_s, start_s, duration_s, end_included=False)
            return [s[i] for s in series for i in inside if s[i] is not None]

    def trace(self, sensor: str) -> PowerTrace:
        """The samples as a PowerTrace from `sensor`, rounded; series never read are None."""
        def rounded(series, digits):
            return [[None if v is None else round(v, digits) for v in s] for s in series]

        def present(series):
            return series if any(v is not None for s in series for v in s) else None

        with self._lock:
            extra = self._series.extra
            return PowerTrace(
                sensor=sensor, sample_period_s=self.period_s,
                gpu_uuids=[g.info.uuid for g in self.gpus],
                t_s=[round(t, TRACE_DIGITS) for t in self.t_s],
                power_w=rounded(self._series.power_w, 2),
                memory_power_w=present(rounded(extra["memory_power_w"], 2)),
                temperature_c=present(rounded(extra["temperature_c"], 1)),
                sm_clock_mhz=present(rounded(extra["sm_clock_mhz"], 0)),
                throttle_reasons=present([[None if v is None else int(v) for v in s]
                                          for s in extra["throttle_reasons"]]),
            )


def counter_delta_j(before_mj: float | None, after_mj: float | None,
                    wraps_at_mj: float | None) -> tuple[float | None, str | None]:
    """Energy between two counter reads (J), or None with the reason."""
    if before_mj is None or after_mj is None:
        return None, "energy counter unavailable"
    if after_mj >= before_mj:
        return (after_mj - before_mj) / 1000.0, None
    if wraps_at_mj:
        # One wrap of a counter with a known range (RAPL): the delta is still exact.
        return (wraps_at_mj - before_mj + after_mj) / 1000.0, None
    return None, "energy counter went backwards (reset or wrap)"


@dataclass
class AgreementPolicy:
    """When counter and timeline energy of a window must agree (from the sweep)."""

    tolerance: float = 0.03
    min_window_s: float = 5.0


def source_energy(source: EnergySource, before: SourceReading, after: SourceReading,
                  duration_s: float) -> SourceEnergy:
    """An extra source's energy between two reads at a window's edges.

    The rules of the GPUs' counters (`counter_delta_j`: missing, backwards,
    one known wrap; too short a window), plus one of its own: reads of two
    epochs (the source's readings broke in between) bound nothing.
    """
    if before.energy_j is None or after.energy_j is None:
        return SourceEnergy(energy_j=None, null_reason=(before.reason or after.reason
                                                        or "energy reading unavailable"))
    if before.epoch != after.epoch:
        return SourceEnergy(energy_j=None,
                            null_reason="readings were interrupted inside the window")
    wraps_mj = None if source.wraps_at_j is None else source.wraps_at_j * 1000.0
    delta_j, why = counter_delta_j(before.energy_j * 1000.0, after.energy_j * 1000.0, wraps_mj)
    if delta_j is not None and duration_s < 2 * source.update_s:
        delta_j, why = None, (f"window ({duration_s * 1000:.0f} ms) shorter than twice the "
                              f"source's update period ({source.update_s:g} s)")
    return SourceEnergy(energy_j=delta_j, null_reason=why)


class Meter:
    """Named energy windows over a run's GPUs, from their energy counters.

    `sources` (`workers.energy`) are read at the same edges; each window carries
    their energies beside the GPUs' (`EnergyWindow.sources`).
    """

    def __init__(self, gpus: list[GpuDevice], sampler: PowerSampler,
                 agreement: AgreementPolicy | None = None,
                 sources: list[EnergySource] | None = None):
        self.gpus = gpus
        self.sampler = sampler
        self.agreement = agreement or AgreementPolicy()
        self.sources = list(sources or [])
        self.windows: list[EnergyWindow] = []
        self._open: dict[tuple[str, int | None], _OpenWindow] = {}

    def now_s(self) -> float:
        """Seconds on the sampler's timeline: the clock windows are placed on."""
        return self.sampler.now_s()

    def _read(self) -> list[float | None]:
        # Not swallowed: a GPU lost at a window edge fails the run (retried), while
        # an unsupported counter is None and makes the window null.
        return [gpu.energy_mj() for gpu in self.gpus]

    def _read_sources(self) -> Future[list[SourceReading]] | None:
        """The extra sources' readings, started on the edge pool (None without any)."""
        return _EDGE_POOL.submit(read_all, self.sources) if self.sources else None

    def _read_edge(self) -> tuple[list[float | None], float, Future[list[SourceReading]] | None]:
        """The GPUs' counters, the time right after them, and the sources' readings in
        flight meanwhile (a slow meter neither delays nor stretches the GPUs' window)."""
        pending = self._read_sources()
        counters = self._read()
        return counters, self.now_s(), pending

    def settle(self) -> None:
        """Wait until the sources' readings at every open window's opening edge are in.

        `begin` does not wait for them (a slow meter never delays the engine);
        `end` does. Tests use this to change a source only after it was read.
        """
        for opened in list(self._open.values()):
            if opened.sources is not None:
                opened.sources.result()

    def _read_ticks(self) -> tuple[list[float | None], list[float] | None]:
        """Each GPU's counter just after it moved, and when. Where some counter did
        not move within ALIGN_WAIT_PERIODS of its update period, or has none, the
        times are None and the counters are read afresh, all at once: the caller
        places that edge at this read, as an unaligned one.

        A counter that moves every ~100 ms, read at an arbitrary time, is up to one
        update stale, so a window read at arbitrary edges is off by up to one
        update's energy: 2% of a 5 s idle window, as the H200 showed (+11 J on
        580 J). Read just after it moves, both edges sit on updates and the delta
        is the energy between them, to within one read's latency (~3 ms on NVML).
        """
        periods = [getattr(gpu, "counter_update_s", 0.0) for gpu in self.gpus]
        if not self.gpus or any(p <= 0 for p in periods):
            return self._read(), None
        first = self._read()
        if any(v is None for v in first):
            return first, None
        deadline = time.monotonic() + ALIGN_WAIT_PERIODS * max(periods)
        values: list[float | None] = list(first)
        ticks: list[float | None] = [None] * len(self.gpus)
        while any(t is None for t in ticks):
            if time.monotonic() > deadline:
                return self._read(), None
            for i, gpu in enumerate(self.gpus):
                if ticks[i] is None and (value := gpu.energy_mj()) != first[i]:
                    values[i], ticks[i] = value, self.now_s()
            time.sleep(0.001)
        return values, ticks  # type: ignore[return-value]

    def begin(self, name: str, load_point: int | None = None, align: bool = False) -> None:
        """Open window `name` (of `load_point`): read the counters at its start edge.

        `align`: read each counter just after it moves (`_read_ticks`; waits up to
        ~ALIGN_WAIT_PERIODS updates). For windows whose state holds across the edge —
        the idle baselines — where a short window makes one update's energy count.
        """
        if align:
            counters, ticks = self._read_ticks()
            # The sources are read right after the GPUs' edge, wherever it fell.
            start_s = min(ticks) if ticks is not None else self.now_s()
            pending = self._read_sources()
            self._open[(name, load_point)] = _OpenWindow(start_s, counters, pending, ticks)
            return
        start_s = self.now_s()
        counters, _, pending = self._read_edge()
        self._open[(name, load_point)] = _OpenWindow(start_s, counters, pending)

    def end(self, name: str, load_point: int | None = None, align: bool = False) -> EnergyWindow:
        """Close window `name` (of `load_point`) and return its energy.

        Energy (J) is the counters' delta summed over the GPUs; None with a reason when
        a counter is unsupported or moves too coarsely for the window. The timeline
        integral is kept beside it for the agreement check. With `align` at both
        edges, each GPU's delta is between two of its counter's updates, scaled to
        the window from its own span (GPUs' counters move at different instants);
        the window says `edges = "tick"`.
        """
        opened = self._open.pop((name, load_point))
        ticks: list[float] | None = None
        if align:
            counters, ticks = self._read_ticks()
            end_s = max(ticks) if ticks is not None else self.now_s()
            pending = self._read_sources()
        else:
            counters, end_s, pending = self._read_edge()
        aligned = ticks is not None and opened.ticks_s is not None
        sources = pending.result() if pending else []
        opening = opened.sources.result() if opened.sources else []
        per_gpu: list[float | None] = []
        reason = None
        duration = end_s - opened.start_s
        for i, (gpu, before, after) in enumerate(zip(self.gpus, opened.counters_mj, counters)):
            delta, why = counter_delta_j(before, after,
                                         getattr(gpu, "energy_wraps_at_mj", None))
            if delta is not None and duration < 2 * getattr(gpu, "counter_update_s", 0.0):
                # A 10 ms window on a counter that moves every 100 ms reads 0 J or a
                # whole tick: neither is the window's energy.
                delta, why = None, (f"window ({duration * 1000:.0f} ms) shorter than twice "
                                    f"the counter's update period")
            if delta is not None and aligned:
                span = ticks[i] - opened.ticks_s[i]  # type: ignore[index]
                delta, why = ((delta * duration / span, None) if span > 0 else
                              (None, "the counter's updates at the edges are not in order"))
            per_gpu.append(delta)
            reason = reason or why
        energy = None if any(e is None for e in per_gpu) else sum(per_gpu)  # type: ignore[arg-type]
        timeline_j, avg_w, peak_w = self.sampler.integral(opened.start_s, end_s)
        agreement = timeline_j / energy if timeline_j is not None and energy else None
        window = EnergyWindow(
            name=name, load_point=load_point, start_s=round(opened.start_s, WINDOW_DIGITS),
            duration_s=round(duration, WINDOW_DIGITS), energy_j=energy, per_gpu_energy_j=per_gpu,
            timeline_energy_j=timeline_j,
            avg_power_w=(energy / duration if energy is not None and duration > 0 else avg_w),
            peak_power_w=peak_w, null_reason=reason, agreement=agreement,
            disagrees=(agreement is not None and duration >= self.agreement.min_window_s
                       and abs(agreement - 1.0) > self.agreement.tolerance),
            edges="tick" if aligned else "read",
            sources={source.name: source_energy(source, before_r, after_r, duration)
                     for source, before_r, after_r in zip(self.sources, opening, sources)},
        )
        self.windows.append(window)
        return window

    def window(self, name: str, load_point: int | None = None) -> EnergyWindow | None:
        """The closed window `name` (of `load_point`), or None."""
        for w in self.windows:
            if w.name == name and w.load_point == load_point:
                return w
        return None
