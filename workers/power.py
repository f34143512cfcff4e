"""Energy windows (hardware counter deltas) and the power timeline sampler.

Energy of a window is the difference of each GPU's energy counter read at the
window's edges, summed over the run's GPUs. A counter that went backwards (a
driver reload or reset) makes the window's energy None with a reason: missing
data, never negative or zero energy. The timeline is sampled in a background
thread at the sweep's period; each window also carries the timeline's integral
over the same interval, so the two methods can be compared.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from farm.records import EnergyWindow, PowerTrace
from workers.gpu.base import GpuDevice


@dataclass
class _OpenWindow:
    start_s: float
    counters_mj: list[float | None]


class PowerSampler:
    """Samples every GPU's power at a fixed period in a daemon thread."""

    def __init__(self, gpus: list[GpuDevice], period_s: float, clock=time.monotonic):
        self.gpus = gpus
        self.period_s = period_s
        self.clock = clock
        self.origin = clock()
        self.t_s: list[float] = []
        self.power_w: list[list[float | None]] = [[] for _ in gpus]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            self.sample()
            # Schedule on a fixed grid so sampling jitter does not accumulate.
            next_at += self.period_s
            self._stop.wait(max(0.0, next_at - self.clock()))

    def sample(self) -> None:
        readings = [gpu.power_w() for gpu in self.gpus]
        now = self.clock() - self.origin
        with self._lock:
            self.t_s.append(now)
            for series, value in zip(self.power_w, readings):
                series.append(value)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def integral(self, start_s: float, end_s: float) -> tuple[float | None, float | None,
                                                             float | None]:
        """(energy J, average W, peak W) of the summed timeline over [start, end].

        Trapezoidal integral of the samples inside the window; None when fewer than
        two samples fall inside it or any GPU's reading is missing there.
        """
        with self._lock:
            points = [
                (t, [series[i] for series in self.power_w])
                for i, t in enumerate(self.t_s) if start_s <= t <= end_s
            ]
        if len(points) < 2 or any(v is None for _, vs in points for v in vs):
            return None, None, None
        totals = [(t, sum(vs)) for t, vs in points]  # type: ignore[arg-type]
        energy = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(totals))
        span = totals[-1][0] - totals[0][0]
        # Scale to the full window: the samples cover slightly less than it.
        window = end_s - start_s
        energy_full = energy * (window / span) if span > 0 else None
        return energy_full, (energy / span if span > 0 else None), max(p for _, p in totals)

    def trace(self, sensor: str) -> PowerTrace:
        with self._lock:
            return PowerTrace(
                sensor=sensor, sample_period_s=self.period_s,
                gpu_uuids=[g.info.uuid for g in self.gpus],
                t_s=[round(t, 4) for t in self.t_s],
                power_w=[[None if v is None else round(v, 2) for v in s] for s in self.power_w],
            )


class Meter:
    """Named energy windows over a run's GPUs, from their energy counters."""

    def __init__(self, gpus: list[GpuDevice], sampler: PowerSampler):
        self.gpus = gpus
        self.sampler = sampler
        self.windows: list[EnergyWindow] = []
        self._open: dict[tuple[str, int | None], _OpenWindow] = {}

    def now_s(self) -> float:
        return self.sampler.clock() - self.sampler.origin

    def _read(self) -> list[float | None]:
        return [gpu.energy_mj() for gpu in self.gpus]

    def begin(self, name: str, load_point: int | None = None) -> None:
        self._open[(name, load_point)] = _OpenWindow(self.now_s(), self._read())

    def end(self, name: str, load_point: int | None = None) -> EnergyWindow:
        opened = self._open.pop((name, load_point))
        counters = self._read()
        end_s = self.now_s()
        per_gpu: list[float | None] = []
        reason = None
        for before, after in zip(opened.counters_mj, counters):
            if before is None or after is None:
                per_gpu.append(None)
                reason = reason or "energy counter unavailable"
            elif after < before:
                per_gpu.append(None)
                reason = reason or "energy counter went backwards (reset or wrap)"
            else:
                per_gpu.append((after - before) / 1000.0)
        energy = None if any(e is None for e in per_gpu) else sum(per_gpu)  # type: ignore[arg-type]
        timeline_j, avg_w, peak_w = self.sampler.integral(opened.start_s, end_s)
        duration = end_s - opened.start_s
        window = EnergyWindow(
            name=name, load_point=load_point, start_s=round(opened.start_s, 4),
            duration_s=round(duration, 4), energy_j=energy, per_gpu_energy_j=per_gpu,
            timeline_energy_j=timeline_j,
            avg_power_w=(energy / duration if energy is not None and duration > 0 else avg_w),
            peak_power_w=peak_w, null_reason=reason,
        )
        self.windows.append(window)
        return window

    def window(self, name: str, load_point: int | None = None) -> EnergyWindow | None:
        for w in self.windows:
            if w.name == name and w.load_point == load_point:
                return w
        return None
