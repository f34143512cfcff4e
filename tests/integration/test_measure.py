"""`farmctl measure --sim H100-80GB -- python tool.py …`: a command under the farm's
meter, through the whole farm (private Redis, worker, recorder, SQLite store), stored
as a run of kind `measure` with its windows, validity verdict, owner, and J per
output and per total token made of its tool's counts (a vllm-bench-format file the
script writes); and a command that writes no result file fails the run, saying so."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# A load tool's stand-in: it runs for a while (its child too: the tool's own process
# tree), then writes a `vllm bench serve --save-result`-shaped file.
TOOL = """
import json, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
time.sleep(1.5)
child.wait()
if len(sys.argv) > 1:
    json.dump({"completed": 40, "failed": 2, "total_input_tokens": 1200,
               "total_output_tokens": 800, "duration": 1.5, "mean_ttft_ms": 12.5,
               "median_ttft_ms": 11.0, "p99_ttft_ms": 30.0}, open(sys.argv[1], "w"))
"""


def _measure(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FARM_OWNER": "carol",
           "FARM_DB_URL": f"sqlite:///{tmp_path / 'farm.db'}",
           "FARM_HOME": str(tmp_path / ".farm")}
    for key in ("FARM_BROKER_URL", "FARM_ENERGY_SOURCES", "FARM_ALLOW_COMMANDS"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "farm.cli", "measure", "--sim", "H100-80GB",
                           "--output-tokens", "20", "--idle-baseline-s", "0.5",
                           "--min-steady-s", "1", "--cooldown-timeout-s", "0", "--quiet",
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)


def test_a_command_is_measured_and_stored_as_a_run(tmp_path):
    (tmp_path / "tool.py").write_text(TOOL)
    done = _measure(tmp_path, "--name", "my-tool", "--result", "out.json", "--",
                    sys.executable, "tool.py", "out.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the command" in done.stdout and "J/tot-tok" in done.stdout
    assert "counts from vllm bench serve's result file" in done.stderr
    with sqlite3.connect(tmp_path / "farm.db") as db:
        db.row_factory = sqlite3.Row
        owner = db.execute("SELECT owner FROM sweeps WHERE name = 'my-tool'").fetchone()[0]
        run = db.execute("SELECT * FROM runs").fetchone()
        result = db.execute("SELECT * FROM results").fetchone()
        lp = db.execute("SELECT * FROM load_points").fetchone()
        windows = {r["name"]: r for r in db.execute("SELECT * FROM energy_windows")}
    assert owner == "carol"
    assert (run["engine_kind"], run["status"], run["simulated"]) == ("measure", "succeeded", 1)
    args = json.loads(run["spec_json"])["engine"]["args"]
    assert args["command"].endswith("tool.py out.json") and args["cwd"] == str(tmp_path)
    assert result["valid"] == 1, result["invalid_reasons"]
    checks = {c["name"] for c in json.loads(result["validity_json"])}
    assert {"steady_window", "power_range", "agreement"} <= checks
    assert {"run", "idle", "idle_ctx", "load", "warmup", "steady"} <= set(windows)
    steady = windows["steady"]
    assert steady["duration_s"] >= 1.5 and steady["energy_j"] > 0
    assert steady["timeline_energy_j"] == pytest.approx(steady["energy_j"], rel=0.03)
    # The counts are the tool's; the figures are the window's energy over them.
    assert (lp["num_ok"], lp["num_failed"], lp["input_tokens"], lp["output_tokens"]) == \
        (40, 2, 1200, 800)
    assert lp["steady_output_tokens"] == 800 and lp["ttft_mean_ms"] == 12.5
    assert lp["energy_per_output_token_j"] == pytest.approx(steady["energy_j"] / 800)
    assert lp["energy_per_total_token_j"] == pytest.approx(steady["energy_j"] / 2000)
    idle_w = result["idle_ctx_power_w"]
    net = steady["energy_j"] - idle_w * steady["duration_s"]
    assert lp["energy_per_total_token_net_j"] == pytest.approx(net / 2000)
    notes = json.loads(lp["notes"])
    assert any("out.json (format vllm-bench)" in n for n in notes)
    assert any("simulated GPUs" in n for n in notes)


def test_a_command_without_its_result_file_fails_the_run(tmp_path):
    (tmp_path / "tool.py").write_text(TOOL)
    done = _measure(tmp_path, "--result", "never.json", "--", sys.executable, "tool.py")
    assert done.returncode != 0
    assert "did not write its result file" in done.stdout + done.stderr
