"""The quiet-GPU gate: before the idle baselines, wait until each GPU is at rest.

Measured on an H200: the second run's no-context idle baseline read 82.6 W
against a clean 76.9 W (+7.5%), because its window opened while the GPU was
still settling after the previous engine had exited. Temperature alone
(`workers.preflight`'s cool-down) does not catch this: the board is cool long
before its power has settled. So each GPU's power is polled until, over the
last `window_s`:

- its mean is within the band of the lowest quiet mean this worker has seen on
  that GPU (its idle reference; the first run has none and is judged by the
  rules below alone),
- the window's second half differs from its first by no more than the band
  (the power is not still falling or rising),
- its utilisation stays at or below `max_utilization_pct` (nothing runs on it).

The band is `power_band_pct` of the mean, but at least `power_band_w`. A gate
not met within `timeout_s` lets the run go on and records what it saw: the
verdict stays with the reader, who has the data. Only real GPUs are gated:
simulated GPUs have no settling to wait for, and the host CPU's RAPL power
moves with every other process on it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean

from farm_contract.records import QuietGate, QuietGpu
from farm_contract.runspec import QuietGateSpec
from workers.errors import RunAborted
from workers.gpu.base import GpuDevice

# Polls per window: enough samples for two half-means at ~0.25 s, cheap reads.
POLLS_PER_WINDOW = 40
MAX_POLL_S = 0.25


class IdlePowerReferences:
    """The lowest quiet mean power each GPU was seen at: its idle reference.

    Kept for the worker's lifetime, like the idle temperature. Only windows the
    gate judged quiet update it, so a busy window can never raise or lower it.
    """

    def __init__(self) -> None:
        self._by_uuid: dict[str, float] = {}
        self._lock = threading.Lock()

    def snapshot(self, uuids: list[str]) -> dict[str, float]:
        """The references of these GPUs (for a run's own process)."""
        with self._lock:
            return {u: self._by_uuid[u] for u in uuids if u in self._by_uuid}

    def update(self, references: dict[str, float]) -> None:
        """Take these GPUs' references from a run's process (it held them alone)."""
        with self._lock:
            self._by_uuid.update(references)

    def get(self, uuid: str) -> float | None:
        """The GPU's reference (Units: W), None before its first quiet window."""
        with self._lock:
            return self._by_uuid.get(uuid)

    def observe(self, uuid: str, power_w: float) -> None:
        """Note a quiet window's mean power (Units: W)."""
        with self._lock:
            known = self._by_uuid.get(uuid)
            self._by_uuid[uuid] = power_w if known is None else min(known, power_w)

    def rebase(self, uuid: str, power_w: float) -> None:
        """Replace the reference: the GPU's idle level has moved (Units: W)."""
        with self._lock:
            self._by_uuid[uuid] = power_w


@dataclass
class _Sample:
    t_s: float
    power_w: float | None
    utilization_pct: float | None


def _read(gpu: GpuDevice, name: str) -> float | None:
    try:
        return getattr(gpu, name)()
    except Exception:  # a reading the driver refuses is just not there
        return None


def judge(gpu: GpuDevice, samples: list[_Sample], spec: QuietGateSpec,
          reference_w: float | None) -> QuietGpu:
    """Whether one GPU's window of samples is quiet, with the figures that say why."""
    powers = [s.power_w for s in samples if s.power_w is not None]
    utils = [s.utilization_pct for s in samples if s.utilization_pct is not None]
    utilization = max(utils) if utils else None
    if len(powers) < 4:
        return QuietGpu(uuid=gpu.info.uuid, reference_power_w=reference_w,
                        utilization_pct=utilization, quiet=False,
                        reason="no power readings")
    half = len(powers) // 2
    mean_w = fmean(powers)
    trend_w = fmean(powers[half:]) - fmean(powers[:half])
    band_w = max(spec.power_band_pct / 100.0 * mean_w, spec.power_band_w)
    reasons = []
    if abs(trend_w) > band_w:
        reasons.append(f"power still {'falling' if trend_w < 0 else 'rising'} "
                       f"({trend_w:+.1f} W over the window)")
    if reference_w is not None and mean_w > reference_w + band_w:
        reasons.append(f"{mean_w:.1f} W, above the idle reference {reference_w:.1f} W "
                       f"+ {band_w:.1f} W")
    if utilization is not None and utilization > spec.max_utilization_pct:
        reasons.append(f"utilisation {utilization:g}%")
    return QuietGpu(uuid=gpu.info.uuid, power_w=round(mean_w, 3), trend_w=round(trend_w, 3),
                    reference_power_w=reference_w, band_w=round(band_w, 3),
                    utilization_pct=utilization, quiet=not reasons,
                    reason="; ".join(reasons) or None)


def wait_until_quiet(gpus: list[GpuDevice], spec: QuietGateSpec,
                     references: IdlePowerReferences, abort: threading.Event,
                     clock: Callable[[], float] = time.monotonic,
                     wait: Callable[[float], bool] | None = None) -> QuietGate:
    """Poll the GPUs until every one is quiet over the last window, or the timeout.

    Raises RunAborted on shutdown. Quiet windows update `references`. `clock` and
    `wait` (default: `abort.wait`) are for tests that script time.
    """
    wait = wait or abort.wait
    if not spec.enabled:
        return QuietGate(met=None, waited_s=0.0, window_s=spec.window_s,
                         note="the quiet-GPU gate is off in this sweep")
    gated = [g for g in gpus if g.info.backend == "gpu"]
    if not gated:
        kinds = sorted({g.info.backend for g in gpus})
        return QuietGate(met=None, waited_s=0.0, window_s=spec.window_s,
                         note=f"not applied to {', '.join(kinds)} devices "
                              "(only real GPUs settle after a run)")
    poll_s = min(MAX_POLL_S, spec.window_s / POLLS_PER_WINDOW)
    windows: dict[str, deque[_Sample]] = {g.info.uuid: deque() for g in gated}
    started = clock()
    while True:
        now = clock()
        for gpu in gated:
            window = windows[gpu.info.uuid]
            window.append(_Sample(now, _read(gpu, "power_w"), _read(gpu, "utilization_pct")))
            while window and window[0].t_s < now - spec.window_s:
                window.popleft()
        waited = now - started
        if waited >= spec.window_s:
            verdicts = [judge(g, list(windows[g.info.uuid]), spec,
                              references.get(g.info.uuid)) for g in gated]
            met = all(v.quiet for v in verdicts)
            if met or waited >= max(spec.timeout_s, spec.window_s):
                break
        if wait(poll_s):
            raise RunAborted("worker shutting down while the GPUs settled")
    notes = []
    if met:
        for verdict in verdicts:
            references.observe(verdict.uuid, verdict.power_w)  # type: ignore[arg-type]
    else:
        notes.append(f"not quiet after {waited:.0f} s: " + "; ".join(
            f"{v.uuid}: {v.reason}" for v in verdicts if not v.quiet))
        # Steady and unused for the whole timeout, yet above its reference: the
        # GPU's idle level itself has moved (a warmer room, a driver change).
        # Take the new level, or every later run would wait out the timeout.
        for gpu, verdict in zip(gated, verdicts, strict=True):
            alone = judge(gpu, list(windows[gpu.info.uuid]), spec, None)
            if not verdict.quiet and alone.quiet and alone.power_w is not None:
                references.rebase(verdict.uuid, alone.power_w)
                notes.append(f"{verdict.uuid}: idle reference moved to {alone.power_w:.1f} W")
    return QuietGate(met=met, waited_s=round(waited, 2), window_s=spec.window_s,
                     gpus=verdicts, note="; ".join(notes) or None)
