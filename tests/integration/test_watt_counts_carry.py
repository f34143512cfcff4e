"""Experiment d of issue 19 (Watt Counts): one sweep over an H100 and an H200, one
host at a time, the store carried between them.

examples/vllm-gpu-watt-counts.toml, shortened to seconds and run `--simulate`:
`farmctl run` on a "host" with a simulated H100 into a store, the store copied to
a second "host" with a simulated H200, the same command there. The second run
measures the H200's runs only, and every H100 result is still there, unchanged;
a third run measures nothing. Then `recommend` and `report` across both GPUs,
every point with its validity verdict, and the crossing figure's section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farm.store import Store

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vllm-gpu-watt-counts.toml"
SWEEP = "vllm-gpu-watt-counts-8b-sim"
# The example with seconds-long load points (and no cool-down wait, no CodeCarbon:
# simulated GPUs); its GPUs, engine, scenario kind and repetitions rule as shipped.
SHORTEN = (("duration_s = 40", "duration_s = 0.8"), ("warmup_s = 20", "warmup_s = 0.05"),
           ("start = 0.25, factor = 2, max_points = 10",
            "start = 4, factor = 2, max_points = 4, min_requests = 3"),
           ("input_tokens = [512]", "input_tokens = [64]"),
           ("output_tokens = [256]", "output_tokens = [16]"),
           ("idle_baseline_s = 5", "idle_baseline_s = 0.2"),
           ("min_steady_s = 30", "min_steady_s = 0.1\ncooldown_timeout_s = 0\ncodecarbon = false"))


def host(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    text = EXAMPLE.read_text()
    for old, new in SHORTEN:
        assert old in text, old
        text = text.replace(old, new)
    (path / "wc.toml").write_text(text)
    return path


def farmctl(where: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{where}/wc.db",
           "FARM_HOME": str(where / ".farm"), "FARM_OWNER": "gpu-session"}
    env.pop("FARM_BROKER_URL", None)
    return subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=where, env=env,
                          capture_output=True, text=True, timeout=300)


def results(where: Path) -> dict[str, dict]:
    """run id → its result row's identity and figures, every load point."""
    with Store.open(f"sqlite:///{where}/wc.db") as store:
        rows = store.result_rows(store.find_sweep(SWEEP).id)
    out: dict[str, dict] = {}
    for row in rows:
        out.setdefault(row["run_id"], {"gpu": row["gpu_model"], "status": row["status"],
                                       "points": []})["points"].append(
            (row["load_value"], row["finished_at"], row["energy_per_request_j"],
             row["valid"]))
    return out


@pytest.mark.slow
def test_the_store_carried_between_hosts_measures_nothing_twice(tmp_path):
    h100, h200 = host(tmp_path, "h100-host"), host(tmp_path, "h200-host")
    first = farmctl(h100, "run", "--simulate", "--quiet", "wc.toml", "--sim", "H100-80GB")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "run(s) need GPUs this machine lacks (sim.h200-141gb.x1)" in first.stderr
    before = results(h100)
    assert {r["gpu"] for r in before.values()} == {"h100-80gb"}
    assert all(r["status"] == "succeeded" for r in before.values())
    assert 2 <= len(before) <= 3                       # the adaptive rule: 2 to 3 runs

    for f in h100.glob("wc.db*"):                      # the store and its WAL, if any
        shutil.copy(f, h200 / f.name)
    second = farmctl(h200, "run", "--simulate", "--quiet", "wc.toml", "--sim", "H200-141GB")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "run(s) need GPUs this machine lacks (sim.h100-80gb.x1)" in second.stderr
    assert "2 new run(s), 0 sent again, 0 already done" in second.stderr
    after = results(h200)
    carried = {run_id: r for run_id, r in after.items() if r["gpu"] == "h100-80gb"}
    assert carried == before                           # same runs, same results, untouched
    measured = {run_id: r for run_id, r in after.items() if r["gpu"] == "h200-141gb"}
    assert 2 <= len(measured) <= 3 and all(r["status"] == "succeeded"
                                           for r in measured.values())
    with Store.open(f"sqlite:///{h200}/wc.db") as store:
        assert store.counts()["results"] == len(after)   # one result per run

    # Back on an H100 host: nothing left to measure there.
    third = farmctl(h200, "run", "--simulate", "--quiet", "wc.toml", "--sim", "H100-80GB")
    assert third.returncode == 0, third.stderr
    assert "0 new run(s), 0 sent again, 2 already done" in third.stderr
    assert results(h200) == after

    # Every point carries its validity verdict, in results and in the report.
    rows = json.loads(farmctl(h200, "results", SWEEP, "--format", "json").stdout)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert rows and all(row["valid"] in (True, False) for row in rows)
    ranked = farmctl(h200, "recommend", SWEEP, "--model", "llama-3.1-8b-random", "--rate", "1",
                     "--format", "json")
    assert ranked.returncode in (0, 7), ranked.stderr          # 7: nothing met the SLO
    answer = json.loads(ranked.stdout)
    assert answer["simulated"] is True and answer["rate_rps"] == 1
    (workload,) = answer["workloads"]
    seen = {r["gpu_model"] for r in workload["ranking"]} | {
        e["configuration"].split()[0] for e in workload["excluded_configurations"]}
    assert {"h100-80gb", "h200-141gb"} <= {s.removeprefix("sim:") for s in seen}
    report = farmctl(h200, "report", SWEEP, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert 'id="rate_crossing"' in page and "idle amortised" in page
    assert list((tmp_path / "report" / "figures").glob("rate-crossing-*.png"))
