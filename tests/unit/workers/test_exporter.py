"""The Prometheus collectors: the worker's per-GPU one (simulated and fake-NVML GPUs)
and the recorder's (a store on SQLite and PostgreSQL, a broker stand-in), and the
/metrics server. In seconds, without Prometheus (tests/integration/test_prometheus.py
has the real server)."""

from __future__ import annotations

import socket
import urllib.request
from datetime import timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from farm.exporter import RecorderCollector
from farm.store import ledger
from farm.store.counts import connect
from farm_contract.records import EnergyWindow, GpuInfo
from farm_contract.settings import Settings
from tasks.metrics_http import registry_with, serve_metrics
from tests import factories
from tests.fake_nvml import FakeNvml, patched
from workers.exporter import GPU_LABELS, THROTTLE_REASONS, GpuCollector
from workers.gpu.base import GpuDevice
from workers.gpu.nvml import NvmlInventory
from workers.gpu.sim import SimInventory
from workers.tenants import TenantWatch


def scrape(collector) -> dict[str, list]:
    """name → samples, as Prometheus reads the exposition text."""
    text = generate_latest(registry_with(collector)).decode()
    return {s.name: [x for x in fam.samples if x.name == s.name] for fam in
            text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    matches = [s.value for s in samples[name]
               if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


# ------------------------------------------------------------ worker: per GPU


def test_sim_gpus_carry_dcgm_labels_and_readings_in_base_units() -> None:
    devices = SimInventory("H100-80GBx2", host="node1").devices()
    holder = {devices[1].info.uuid: "run-abc"}
    watch = TenantWatch(devices, lambda: holder, settle_s=0, own_pids=set)
    watch.poll()
    samples = scrape(GpuCollector(devices, watch, "w@node1", host="node1"))
    uuid0 = devices[0].info.uuid
    power = samples["farm_gpu_power_watts"][0]
    assert set(GPU_LABELS) <= set(power.labels)
    assert power.labels["Hostname"] == "node1" and power.labels["gpu"] == "0"
    assert power.labels["modelName"] == devices[0].info.name
    assert value(samples, "farm_gpu_power_limit_watts", UUID=uuid0) == 700.0
    assert value(samples, "farm_gpu_enforced_power_limit_watts", UUID=uuid0) == 700.0
    assert value(samples, "farm_gpu_sm_clock_hertz", UUID=uuid0) > 1e9      # MHz → Hz
    assert value(samples, "farm_gpu_energy_joules_total", UUID=uuid0) >= 0
    assert value(samples, "farm_gpu_throttle_reasons", UUID=uuid0) == 0
    assert value(samples, "farm_gpu_info", UUID=uuid0, model="h100-80gb", backend="sim",
                 worker="w@node1") == 1
    # Tenancy: one state per GPU, the run on the second.
    assert value(samples, "farm_gpu_state", UUID=uuid0, state="free") == 1
    assert value(samples, "farm_gpu_state", UUID=devices[1].info.uuid, state="running") == 1
    assert value(samples, "farm_gpu_run_info", UUID=devices[1].info.uuid,
                 run_id="run-abc") == 1
    assert len(samples["farm_gpu_run_info"]) == 1
    assert value(samples, "farm_gpu_foreign_processes", UUID=uuid0) == 0


def test_a_power_cap_shows_as_a_throttle_reason() -> None:
    device = SimInventory("L4", host="n").devices()[0]
    device.set_power_w(10_000)            # clamped at the limit: the SW power cap bit
    samples = scrape(GpuCollector([device], None, "w"))
    assert value(samples, "farm_gpu_throttle_reasons") == 0x4
    assert int(value(samples, "farm_gpu_throttle_reasons")) & THROTTLE_REASONS["sw_power_cap"]
    assert "farm_gpu_state" not in samples      # no watch: no tenancy


class Bare(GpuDevice):
    """A device with an energy counter that fails and no optional reading at all."""

    energy_sensor = power_sensor = "none"

    def __init__(self) -> None:
        self.info = GpuInfo(index=3, uuid="GPU-bare", name="Bare", model="bare",
                            backend="gpu", memory_mib=1)
        self.energy_reads = 0

    def energy_mj(self):
        self.energy_reads += 1
        raise RuntimeError("counter gone")

    def power_w(self):
        return None

    def temperature_c(self):
        return 40.0

    def compute_pids(self):
        return []


def test_a_reading_the_device_lacks_or_fails_is_absent_never_zero() -> None:
    samples = scrape(GpuCollector([Bare()], None, "w"))
    assert value(samples, "farm_gpu_temperature_celsius") == 40.0
    for name in ("farm_gpu_power_watts", "farm_gpu_energy_joules_total",
                 "farm_gpu_sm_clock_hertz", "farm_gpu_power_limit_watts",
                 "farm_gpu_throttle_reasons"):
        assert name not in samples, name


def test_the_energy_counter_is_read_at_most_once_per_interval() -> None:
    now = [0.0]
    device = Bare()
    collector = GpuCollector([device], None, "w", energy_every_s=5.0, clock=lambda: now[0])
    for t in (0.0, 1.0, 4.9, 5.0, 6.0, 10.5):
        now[0] = t
        list(collector.collect())
    assert device.energy_reads == 3          # at 0, 5 and 10.5 s


def test_nvml_gpus_give_both_limits_and_the_driver_name() -> None:
    fake = FakeNvml()
    fake.gpus[1]["limit_mw"] = 500_000     # set by a run: default 700 W
    with patched(fake):
        inventory = NvmlInventory()
        samples = scrape(GpuCollector(inventory.devices(), None, "w", host="gpu-node"))
        inventory.shutdown()
    assert value(samples, "farm_gpu_power_limit_watts", UUID="GPU-bbbb") == 500.0
    assert value(samples, "farm_gpu_default_power_limit_watts", UUID="GPU-bbbb") == 700.0
    assert value(samples, "farm_gpu_power_watts", UUID="GPU-bbbb") == 698.0
    assert value(samples, "farm_gpu_energy_joules_total", UUID="GPU-aaaa") == 1000.0
    assert value(samples, "farm_gpu_throttle_reasons", UUID="GPU-bbbb") == 0x4
    assert value(samples, "farm_gpu_utilization_ratio", UUID="GPU-bbbb") == pytest.approx(0.97)
    assert value(samples, "farm_gpu_power_watts", UUID="GPU-aaaa",
                 modelName="NVIDIA H100 80GB HBM3", gpu="0") == 123.5


# ------------------------------------------------------- recorder: farm-wide


class Broker:
    """BrokerState's read side, in memory."""

    def __init__(self, adverts=(), lengths=None, down=False):
        self.adverts, self.lengths, self.down = list(adverts), lengths or {}, down

    def workers(self):
        if self.down:
            raise ConnectionError("redis down")
        return self.adverts

    def queue_length(self, queue):
        return self.lengths.get(queue, 0)

    def unreadable_count(self):
        return 2


def filled(store) -> tuple[str, list]:
    """Two results of owner alice (one metered 500 J, one with no run energy) and a
    queued run; returns the sweep's id and runs."""
    spec, toml, runs = factories.sweep()
    sid = store.record_sweep(spec, toml, owner="alice")
    store.add_runs(sid, runs)
    for run, joules in ((runs[0], 500.0), (runs[1], None)):
        result = factories.result(run)
        result.windows.append(EnergyWindow(
            name="run", start_s=0.0, duration_s=30.0, energy_j=joules,
            null_reason=None if joules is not None else "counter reset"))
        store.mark_started(factories.event(run.run_id))
        store.record_result(result)
    return sid, runs


def test_the_ledger_bills_gpu_seconds_and_metered_joules_per_owner(store, store_url) -> None:
    _sid, runs = filled(store)
    with connect(store_url) as connection:
        rows = ledger.energy_ledger(connection)
    model = runs[0].hardware.gpu_model
    assert [(r.owner, r.gpu_model, r.simulated) for r in rows] == [("alice", model, True)]
    row = rows[0]
    assert (row.results, row.metered, row.unmetered) == (2, 1, 1)
    assert row.gpu_seconds == pytest.approx(2 * 30.0 * runs[0].hardware.gpu_count)
    assert row.energy_j == pytest.approx(500.0)


def test_the_recorder_exports_runs_queues_ledger_and_liveness(store, store_url) -> None:
    _sid, runs = filled(store)
    now = [0.0]
    advert = {"name": "w1@node1", "host": "node1", "backend": "sim", "queues": ["sim.h100.x1"],
              "gpus": [{"uuid": "A", "model": "h100"}, {"uuid": "B", "model": "h100"}],
              "gpu_states": [{"uuid": "A", "state": "running", "settled": True},
                             {"uuid": "B", "state": "free", "settled": False}]}
    broker = Broker([advert], {"sim.h100.x1": 3})
    collector = RecorderCollector(store_url, broker, fair_share_window_s=86400,
                                  read_every_s=5, clock=lambda: now[0])
    samples = scrape(collector)
    assert value(samples, "farm_store_up") == 1 and value(samples, "farm_broker_up") == 1
    assert value(samples, "farm_runs", owner="alice", status="succeeded") == 2
    assert value(samples, "farm_runs", owner="alice", status="queued") == len(runs) - 2
    assert value(samples, "farm_queue_messages", queue="sim.h100.x1") == 3
    assert value(samples, "farm_queue_runs", queue=runs[0].hardware.queue, status="succeeded") >= 1
    assert value(samples, "farm_owner_energy_joules_total", owner="alice") == 500.0
    assert value(samples, "farm_owner_unmetered_results_total", owner="alice") == 1
    assert value(samples, "farm_owner_gpu_seconds_total", owner="alice",
                 simulated="true") == pytest.approx(60.0 * runs[0].hardware.gpu_count)
    assert value(samples, "farm_worker_up", worker="w1@node1", Hostname="node1") == 1
    assert value(samples, "farm_worker_gpus", worker="w1@node1", state="running") == 1
    assert value(samples, "farm_worker_gpus", worker="w1@node1", state="settling") == 1
    assert value(samples, "farm_unreadable_messages") == 2

    # Within the interval the snapshot is served again; then the worker is gone: 0.
    broker.adverts = []
    now[0] = 1.0
    assert value(scrape(collector), "farm_worker_up", worker="w1@node1") == 1
    now[0] = 6.0
    assert value(scrape(collector), "farm_worker_up", worker="w1@node1") == 0
    now[0] = 6.0 + 3601
    assert "farm_worker_up" not in scrape(collector)      # forgotten after an hour


def test_an_unreadable_source_says_down_and_exports_no_counts(tmp_path) -> None:
    collector = RecorderCollector(f"sqlite:///{tmp_path / 'none.db'}", Broker(down=True),
                                  fair_share_window_s=60)
    samples = scrape(collector)
    assert value(samples, "farm_store_up") == 0 and value(samples, "farm_broker_up") == 0
    assert "farm_runs" not in samples and "farm_worker_up" not in samples
    assert "farm_queue_messages" not in samples


# ------------------------------------------------------------------ serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_are_off_by_default_and_a_taken_port_is_not_fatal(caplog) -> None:
    collector = GpuCollector(SimInventory("L4", host="n").devices(), None, "w")
    assert serve_metrics(Settings(), collector, "worker") is None
    port = free_port()
    settings = Settings(metrics_port=port, metrics_address="127.0.0.1")
    server = serve_metrics(settings, collector, "worker")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
        assert "farm_gpu_power_watts{" in text and "process_cpu_seconds_total" in text
        assert serve_metrics(settings, collector, "worker") is None    # the port is taken
        assert "metrics not served" in caplog.text
    finally:
        server.shutdown()


def test_ledger_duration_is_the_results_own(store, store_url) -> None:
    """GPU-seconds follow the result's duration, not the run row's timestamps."""
    spec, toml, runs = factories.sweep()
    sid = store.record_sweep(spec, toml, owner="bob")
    store.add_runs(sid, runs[:1])
    result = factories.result(runs[0], started_at=factories.T0 - timedelta(hours=1))
    store.record_result(result.model_copy(update={"duration_s": 12.5}))
    with connect(store_url) as connection:
        (row,) = ledger.energy_ledger(connection)
    assert row.gpu_seconds == pytest.approx(12.5 * runs[0].hardware.gpu_count)
    assert row.energy_j is None and row.unmetered == 1
