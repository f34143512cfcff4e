"""Before a run: the GPUs must be free of other tenants and back to idle temperature.

A foreign compute process on a run's GPU makes the run go back to its queue
(GpuBusy): measuring beside another tenant would be wrong. A GPU still
warm from the previous run is given time to cool to within a band of its idle
temperature; if it does not in time the run goes ahead and records that it did
not (the verdict is the reader's, with the data to judge).
"""

from __future__ import annotations

import threading
import time

from farm_contract.records import GpuState, Preflight
from farm_contract.runspec import MeasurementSpec
from workers.errors import RunAborted, TransientError
from workers.gpu.base import GpuDevice

POLL_S = 1.0


class GpuBusy(TransientError):
    """A foreign compute process is on one of the run's GPUs: the run is handed back
    (tasks/measure.py) until the GPU is free again. `busy`: uuid → foreign pids."""
    kind = "gpu_busy"

    def __init__(self, message: str, busy: dict[str, list[int]] | None = None):
        super().__init__(message)
        self.busy = busy or {}


class IdleTemperatures:
    """The coolest temperature each GPU was seen at between runs: its idle reference.

    Kept for the worker's lifetime; the first reading of a GPU starts it.
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

    def observe(self, uuid: str, temperature_c: float | None) -> float | None:
        """Note a reading (Units: °C; None: not read); returns the GPU's idle reference."""
        with self._lock:
            if temperature_c is not None:
                known = self._by_uuid.get(uuid)
                self._by_uuid[uuid] = temperature_c if known is None else min(known,
                                                                              temperature_c)
            return self._by_uuid.get(uuid)


def _reading(gpu: GpuDevice, name: str):
    method = getattr(gpu, name, None)
    try:
        return method() if method else None
    except Exception:  # a reading the driver refuses is just not recorded
        return None


def gpu_state(gpu: GpuDevice, idle_temperature_c: float | None,
              foreign_pids: list[int]) -> GpuState:
    """The GPU's state now: temperature, limits, clocks and persistence (None: not read)."""
    return GpuState(
        uuid=gpu.info.uuid, temperature_c=_reading(gpu, "temperature_c"),
        idle_temperature_c=idle_temperature_c,
        power_limit_w=_reading(gpu, "power_limit_w") or gpu.info.power_limit_w,
        default_power_limit_w=_reading(gpu, "default_power_limit_w"),
        sm_clock_mhz=_reading(gpu, "sm_clock_mhz"),
        memory_clock_mhz=_reading(gpu, "memory_clock_mhz"),
        persistence_mode=_reading(gpu, "persistence_mode"), foreign_pids=foreign_pids)


def foreign_pids(gpus: list[GpuDevice], own: set[int]) -> dict[str, list[int]]:
    """Compute processes on each GPU that are not in `own`, by GPU UUID (busy GPUs only)."""
    found = {}
    for gpu in gpus:
        pids = _reading(gpu, "compute_pids") or []
        foreign = sorted(set(pids) - own)
        if foreign:
            found[gpu.info.uuid] = foreign
    return found


def run_preflight(gpus: list[GpuDevice], spec: MeasurementSpec, own_pids: set[int],
                  idle_temps: IdleTemperatures, abort: threading.Event,
                  clock=time.monotonic) -> Preflight:
    """Check the GPUs are free, then wait (up to the cooldown timeout) for them to cool.

    Raises GpuBusy when another tenant is on a GPU and RunAborted on shutdown;
    a GPU still warm at the timeout is recorded in the note, not an error.
    """
    busy = foreign_pids(gpus, own_pids)
    if busy:
        raise GpuBusy("; ".join(f"foreign process {', '.join(map(str, pids))} on GPU {uuid}"
                                for uuid, pids in busy.items()) + " at preflight", busy)
    started = clock()
    while True:
        warm = []
        for gpu in gpus:
            temperature = _reading(gpu, "temperature_c")
            reference = idle_temps.observe(gpu.info.uuid, temperature)
            if (temperature is not None and reference is not None
                    and temperature > reference + spec.cooldown_band_c):
                warm.append(f"{gpu.info.uuid} at {temperature:.0f} °C "
                            f"(idle {reference:.0f} °C)")
        waited = clock() - started
        if not warm or waited >= spec.cooldown_timeout_s:
            break
        if abort.wait(POLL_S):
            raise RunAborted("worker shutting down while the GPUs cooled")
    states = [gpu_state(g, idle_temps.observe(g.info.uuid, None), []) for g in gpus]
    notes = []
    if warm:
        notes.append(f"not back within {spec.cooldown_band_c:g} °C of idle after "
                     f"{waited:.0f} s: {'; '.join(warm)}")
    blind = [g.info.uuid for g in gpus if _reading(g, "compute_pids") is None]
    if blind:
        # Isolation cannot be checked there: say so rather than imply it was clean.
        notes.append("process list unavailable (isolation unchecked) on " + ", ".join(blind))
    note = "; ".join(notes) or None
    return Preflight(gpus=states, cooled=not warm, waited_s=round(waited, 2), note=note)
