"""The monitoring files agree with the code: Prometheus's config passes `promtool`,
every series the Grafana dashboard queries is one the farm (or Flower) exports,
and the compose files turn the metrics on where the scrape config looks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from farm.exporter import RecorderCollector
from tasks.metrics_http import registry_with
from tests.conftest import unavailable
from tests.paths import ROOT
from tests.unit.workers.test_exporter import Broker, filled
from workers.exporter import GpuCollector
from workers.gpu.sim import SimInventory
from workers.tenants import TenantWatch

DEPLOY = ROOT / "deploy"


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'farm.db'}"     # the names do not depend on the database


def exported(collector) -> set[str]:
    text = generate_latest(registry_with(collector)).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_the_dashboard_queries_only_series_the_farm_exports(store, store_url) -> None:
    devices = SimInventory("H100-80GBx2", host="n").devices()
    watch = TenantWatch(devices, lambda: {devices[0].info.uuid: "run"}, 0, own_pids=set)
    watch.poll()
    filled(store)
    advert = {"name": "w", "host": "n", "queues": ["q"], "gpus": []}
    names = (exported(GpuCollector(devices, watch, "w"))
             | exported(RecorderCollector(store_url, Broker([advert]), fair_share_window_s=60)))
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "farm.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {m for e in exprs for m in re.findall(r"\b(farm_[a-z_]+)", e)}
    assert used, "the dashboard queries nothing of the farm's"
    assert used <= names, f"not exported: {sorted(used - names)}"
    flower = {m for e in exprs for m in re.findall(r"\b(flower_[a-z_]+)", e)}
    assert flower <= {"flower_events_total", "flower_task_runtime_seconds_bucket"}
    assert {u for p in dashboard["panels"] for t in p.get("targets", ())
            for u in [t["datasource"]["uid"]]} == {"${datasource}"}


def test_the_prometheus_config_is_valid_and_scrapes_the_compose_ports(tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("no promtool (Debian's prometheus package)")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # promtool resolves the file_sd path as the container sees it: point it at ours.
    config["scrape_configs"][1]["file_sd_configs"][0]["files"] = [
        str(DEPLOY / "prometheus" / "targets" / "*.yml")]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["farm-recorder"]["static_configs"][0]["targets"] == ["recorder:9460"]
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]
    workers = yaml.safe_load((DEPLOY / "prometheus" / "targets" / "workers.yml").read_text())
    assert workers[0]["targets"] == ["worker:9461"]


def test_compose_turns_the_metrics_on_where_prometheus_looks() -> None:
    main = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert main["recorder"]["environment"]["FARM_METRICS_PORT"] == 9460
    assert main["worker"]["environment"]["FARM_METRICS_PORT"] == 9461
    assert "ports" not in main["recorder"]          # scraped on the compose network only
    worker = yaml.safe_load((DEPLOY / "compose.worker.yml").read_text())["services"]["worker"]
    assert worker["environment"]["FARM_METRICS_PORT"] == 9461
    assert "9461:9461" in worker["ports"]
    monitoring = yaml.safe_load((DEPLOY / "compose.monitoring.yml").read_text())["services"]
    assert all(p.startswith("127.0.0.1:") for s in monitoring.values() for p in s["ports"])
    mounts = monitoring["prometheus"]["volumes"] + monitoring["grafana"]["volumes"]
    for mount in mounts:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    assert "FARM_GRAFANA_PASSWORD:?" in (DEPLOY / "compose.monitoring.yml").read_text()
