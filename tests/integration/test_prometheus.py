"""A real Prometheus server (Debian's `prometheus`) scrapes a recorder and a `--sim`
worker once a second during a small sweep; the scraped series are queried through
Prometheus's HTTP API, as a lab's dashboards and alerts would.

SQLite only: the store's SQL is checked on PostgreSQL by tests/unit/workers/test_exporter.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import textwrap
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tests.conftest import unavailable
from tests.integration.farmproc import wait_for
from tests.integration.test_farm import all_finished, sweep_toml, write

pytestmark = pytest.mark.integration


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'farm.db'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """A private Prometheus server: its own config, storage and loopback port."""

    def __init__(self, binary: str, tmp: Path, targets: dict[str, int]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = "".join(f"""
              - job_name: {job}
                static_configs: [{{targets: ["127.0.0.1:{port}"]}}]""" for job, port in
                       targets.items())
        config = tmp / "prometheus.yml"
        config.write_text(textwrap.dedent("""\
            global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
            scrape_configs:""") + textwrap.dedent(jobs) + "\n")
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 30, "Prometheus to be ready", interval_s=0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as page:
                return page.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        """The instant vector of `promql` now: [{"metric": labels, "value": float}]."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as page:
            body = json.load(page)
        assert body["status"] == "success", body
        return [{"metric": r["metric"], "value": float(r["value"][1])}
                for r in body["data"]["result"]]

    def eventually(self, promql: str, check, timeout_s: float = 20) -> list[dict]:
        """Query until `check(result)` holds (scrapes and the recorder's 5 s snapshot lag)."""
        return wait_for(lambda: (r := self.query(promql)) and check(r) and r, timeout_s,
                        f"Prometheus: {promql}", interval_s=0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")
    if binary is None:
        unavailable("no prometheus binary (Debian: apt-get install prometheus; "
                    "scripts/setup --dev installs it as root)")
    return binary


@pytest.mark.slow
def test_prometheus_scrapes_the_recorder_and_a_sim_worker_during_a_sweep(
        farm, store, prometheus_binary) -> None:
    worker_port, recorder_port = free_port(), free_port()
    farm.start("recorder", "recorder", "--name", "recorder@test",
               env={"FARM_METRICS_PORT": str(recorder_port),
                    "FARM_METRICS_ADDRESS": "127.0.0.1"})
    farm.worker("h100", "H100-80GBx2", env={"FARM_METRICS_PORT": str(worker_port),
                                            "FARM_METRICS_ADDRESS": "127.0.0.1"})
    prom = Prometheus(prometheus_binary, farm.tmp,
                      {"farm-worker": worker_port, "farm-recorder": recorder_port})
    try:
        text = sweep_toml("prom", '["sim:H100-80GB"]', duration_s=1.0, repetitions=3)
        runs = expand(parse_sweep(text))
        prom.eventually('up{job=~"farm-.*"}', lambda r: len(r) == 2 and
                        all(s["value"] == 1 for s in r), timeout_s=30)
        farm.env["FARM_OWNER"] = "alice"      # the identity a sweep is owned by
        farm.cli("enqueue", str(write(farm, "prom", text)))
        wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 60, "all runs")
        queried(prom, runs)
    finally:
        prom.stop()


def queried(prom: Prometheus, runs: list) -> None:
    """What a lab's dashboard reads, checked on the scraped series."""
    # Per GPU, under DCGM-exporter's labels.
    power = prom.query('farm_gpu_power_watts{job="farm-worker"}')
    assert sorted(s["metric"]["gpu"] for s in power) == ["0", "1"]
    assert all(s["metric"]["modelName"].startswith("Simulated ") and s["metric"]["Hostname"]
               and s["metric"]["UUID"].startswith("SIM-h100-80gb-") for s in power)
    assert all(s["value"] > 0 for s in power)
    limits = prom.query("farm_gpu_power_limit_watts")
    assert [s["value"] for s in limits] == [700.0, 700.0]
    assert prom.query("farm_gpu_sm_clock_hertz")[0]["value"] > 1e9
    prom.eventually("increase(farm_gpu_energy_joules_total[1m])",
                    lambda r: len(r) == 2 and all(s["value"] > 0 for s in r))
    # The bitmask decoded in PromQL, as the dashboard does: no SW power cap at idle.
    assert [s["value"] for s in prom.query("floor(farm_gpu_throttle_reasons / 4) % 2")] == [0, 0]
    # The runs were seen on the GPUs while they ran (1 s scrapes of ≥ 2 s runs).
    seen = prom.query("max_over_time(farm_gpu_run_info[5m])")
    assert {s["metric"]["run_id"] for s in seen} <= {r.run_id for r in runs}
    assert seen, "no run was seen on a GPU"
    assert prom.query('max_over_time(farm_gpu_state{state="running"}[5m])')[0]["value"] == 1
    # Free again once the last result is in (the GPU is released after the result is
    # sent, and the next scrape is up to a second later).
    prom.eventually("farm_gpu_state == 1",
                    lambda r: {s["metric"]["state"] for s in r} == {"free"})

    # Farm-wide, from the recorder: runs, the ledger, queues and liveness.
    prom.eventually('farm_runs{owner="alice", status="succeeded"}',
                    lambda r: r[0]["value"] == len(runs))
    joules = prom.query('farm_owner_energy_joules_total{owner="alice"}')
    assert joules[0]["metric"]["simulated"] == "true" and joules[0]["value"] > 0
    seconds = prom.query('farm_owner_gpu_seconds_total{owner="alice"}')
    assert seconds[0]["value"] > 0
    assert prom.query('farm_owner_results_total{owner="alice"}')[0]["value"] == len(runs)
    assert prom.query('farm_worker_up{worker="h100@test"}')[0]["value"] == 1
    assert prom.query('farm_worker_gpus{worker="h100@test"}')
    depth = prom.query("farm_queue_messages")
    assert {s["metric"]["queue"] for s in depth} >= {runs[0].hardware.queue}
    assert prom.query("farm_store_up")[0]["value"] == 1
    # Both processes' own CPU time, for the cost of being scraped (benchmarks/).
    assert len(prom.query("process_cpu_seconds_total")) == 2
