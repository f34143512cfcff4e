"""The worker's Prometheus collector: each GPU's readings and tenancy, read at scrape time.

Labels are DCGM-exporter's (`gpu`, `UUID`, `modelName`, `Hostname`), so
dashboards and alerts a lab wrote for DCGM-exporter select the farm's GPUs the
same way. The readings are the device seam's (workers/gpu/base.py), taken when
Prometheus asks — no thread, no loop of its own. A reading a device lacks
(None) or fails to give yields no sample: never a 0 that was not measured.

The energy counter is read less often: one NVML read costs 3–18 ms on an H100
(FIELD_NOTES), so it is read at most once per `energy_every_s` per GPU and the
last value is served in between (a counter's rate() does not need more).

Tenancy comes from the worker's `TenantWatch` (free, settling, running one of
our runs, held by a foreign process) and the allocator's busy map behind it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.gpu.base import GpuDevice
from workers.tenants import TenantWatch

log = logging.getLogger(__name__)

# DCGM-exporter's label names, then the farm's own.
GPU_LABELS = ["gpu", "UUID", "modelName", "Hostname"]
INFO_LABELS = [*GPU_LABELS, "model", "backend", "worker"]

ENERGY_EVERY_S = 5.0

# NVML's clocks-event (throttle) reason bits (nvmlClocksEventReason*), for the docs and
# dashboards: the bitmask alone is exported, as DCGM-exporter does — a series per
# reason would be a third of a scrape's samples (benchmarks/bench_metrics.py).
# PromQL for one bit: floor(farm_gpu_throttle_reasons / 4) % 2 (sw_power_cap).
THROTTLE_REASONS = {
    "gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4,
    "hw_slowdown": 0x8, "sync_boost": 0x10, "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40, "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
GPU_STATES = ("free", "settling", "running", "held")


@dataclass(frozen=True)
class Reading:
    """One gauge per GPU: a device method and the factor to the metric's unit."""

    metric: str
    method: str
    scale: float
    doc: str


READINGS = (
    Reading("farm_gpu_power_watts", "power_w", 1.0,
            "Board power, as fresh as the device gives it (NVML: the per-100 ms field)."),
    Reading("farm_gpu_power_average_watts", "power_avg_w", 1.0,
            "Board power averaged over the last second (NVML: nvmlDeviceGetPowerUsage)."),
    Reading("farm_gpu_memory_power_watts", "memory_power_w", 1.0, "Memory (HBM) power."),
    Reading("farm_gpu_temperature_celsius", "temperature_c", 1.0, "GPU core temperature."),
    Reading("farm_gpu_sm_clock_hertz", "sm_clock_mhz", 1e6, "Current SM clock."),
    Reading("farm_gpu_memory_clock_hertz", "memory_clock_mhz", 1e6, "Current memory clock."),
    Reading("farm_gpu_utilization_ratio", "utilization_pct", 0.01,
            "Share of the last sample period in which a kernel ran (0..1)."),
    Reading("farm_gpu_power_limit_watts", "power_management_limit_w", 1.0,
            "Power-management limit (what a run's power_limit_w sets)."),
    Reading("farm_gpu_enforced_power_limit_watts", "power_limit_w", 1.0,
            "Power limit the driver enforces now (the lowest of all limits)."),
    Reading("farm_gpu_default_power_limit_watts", "default_power_limit_w", 1.0,
            "Power limit at default settings."),
)


def _read(device: GpuDevice, method: str) -> float | None:
    try:
        value = getattr(device, method)()
    except Exception:   # a failed reading is a missing sample, never a failed scrape
        log.debug("%s of %s failed", method, device.info.uuid, exc_info=True)
        return None
    return None if value is None else float(value)


class GpuCollector(Collector):
    """Per-GPU metrics of one worker process, for a prometheus_client registry."""

    def __init__(self, devices: list[GpuDevice], watch: TenantWatch | None, worker: str, *,
                 host: str | None = None, energy_every_s: float = ENERGY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.devices = list(devices)
        self.watch, self.worker = watch, worker
        self.host = host or socket.gethostname()
        self.energy_every_s, self._clock = energy_every_s, clock
        self._energy: dict[str, tuple[float, float | None]] = {}   # uuid → (read at, J)
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """Nothing: registering must not read the GPUs (collect is called per scrape)."""
        return []

    def _labels(self, device: GpuDevice) -> list[str]:
        info = device.info
        return [str(info.index), info.uuid, info.name, self.host]

    def _energy_j(self, device: GpuDevice) -> float | None:
        """The energy counter in J, re-read only once `energy_every_s` has passed."""
        uuid, now = device.info.uuid, self._clock()
        with self._lock:        # two scrapes at once read the counter once
            last = self._energy.get(uuid)
            if last is None or now - last[0] >= self.energy_every_s:
                mj = _read(device, "energy_mj")
                last = (now, None if mj is None else mj / 1000.0)
                self._energy[uuid] = last
            return last[1]

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read now."""
        info = GaugeMetricFamily("farm_gpu_info", "A GPU this worker serves (value 1), with "
                                 "the farm's model slug, backend and worker name.",
                                 labels=INFO_LABELS)
        gauges = {r.metric: GaugeMetricFamily(r.metric, r.doc, labels=GPU_LABELS)
                  for r in READINGS}
        energy = CounterMetricFamily(
            "farm_gpu_energy_joules", "The GPU's energy counter (NVML: total energy since the "
            f"driver loaded), read at most every {self.energy_every_s:g} s.", labels=GPU_LABELS)
        reasons = GaugeMetricFamily("farm_gpu_throttle_reasons", "Why clocks are held back "
                                    "now, NVML's clocks-event bitmask (0: not held back; "
                                    "0x4 SW power cap, 0x8 HW slowdown, 0x20/0x40 thermal).",
                                    labels=GPU_LABELS)
        for device in self.devices:
            labels = self._labels(device)
            info.add_metric([*labels, device.info.model, device.info.backend, self.worker], 1)
            for reading in READINGS:
                value = _read(device, reading.method)
                if value is not None:
                    gauges[reading.metric].add_metric(labels, value * reading.scale)
            if (joules := self._energy_j(device)) is not None:
                energy.add_metric(labels, joules)
            if (mask := _read(device, "throttle_reasons")) is not None:
                reasons.add_metric(labels, mask)
        yield info
        yield from gauges.values()
        yield from (energy, reasons)
        if self.watch is not None:
            yield from self._tenancy()

    def _tenancy(self) -> Iterator[Metric]:
        """Each GPU's state (one-hot), the run on it and its foreign processes."""
        state = GaugeMetricFamily("farm_gpu_state", "1 for the GPU's state now: free, "
                                  "settling (a tenant left less than FARM_GPU_SETTLE_S ago), "
                                  "running (one of our runs) or held (a foreign process).",
                                  labels=[*GPU_LABELS, "state"])
        run = GaugeMetricFamily("farm_gpu_run_info", "The farm run holding the GPU (value 1).",
                                labels=[*GPU_LABELS, "run_id"])
        foreign = GaugeMetricFamily("farm_gpu_foreign_processes", "Compute processes on the "
                                    "GPU that are not this worker's (other tenants).",
                                    labels=GPU_LABELS)
        by_uuid = {d.info.uuid: d for d in self.devices}
        try:
            tenancies = self.watch.states()
        except Exception:
            log.debug("tenant states unavailable", exc_info=True)
            tenancies = []
        for tenancy in tenancies:
            device = by_uuid.get(tenancy.uuid)
            if device is None:
                continue
            labels = self._labels(device)
            now = ("settling" if tenancy.state == "free" and not tenancy.settled
                   else tenancy.state)
            for name in GPU_STATES:
                state.add_metric([*labels, name], 1 if name == now else 0)
            if tenancy.run_id is not None:
                run.add_metric([*labels, tenancy.run_id], 1)
            foreign.add_metric(labels, len(tenancy.pids))
        yield from (state, run, foreign)
