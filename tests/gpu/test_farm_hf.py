"""The whole farm on a real GPU: `farmctl run` of a short hf sweep (private Redis,
the NVML worker routed by this GPU's model, the recorder, a SQLite store), and the
measured figures read back from the store with `farmctl results`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def _farmctl(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_sweep_runs_through_the_farm_on_this_gpu(tmp_path):
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path / 'farm.db'}",
           "FARM_HOME": str(tmp_path / "home")}
    probe = _farmctl("worker", "--probe", env=env, timeout=120)
    assert probe.returncode == 0, probe.stderr
    gpu = json.loads(probe.stdout)["gpus"][0]
    model = tmp_path / "model"
    subprocess.run([sys.executable, "-m", "workers.tinymodel", str(model)], check=True,
                   cwd=ROOT, timeout=300)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f"""
name = "gpu-farm-smoke"
[[model]]
id = "tiny"
source = "{model}"
dtype = "bfloat16"
[hardware]
gpu = ["{gpu['name']}"]
[engine]
kind = "hf"
batch_size = 8
[[scenario]]
kind = "batch"
num_prompts = 16
warmup_prompts = 0
[workload]
input_tokens = 64
output_tokens = 64
[measurement]
idle_baseline_s = 2
min_steady_s = 0.5
cooldown_timeout_s = 0
codecarbon = false
""")
    run = _farmctl("run", "--quiet", str(sweep), env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = _farmctl("results", "gpu-farm-smoke", "--format", "json", env=env, timeout=120)
    [row] = json.loads(results.stdout)["rows"]
    assert row["status"] == "succeeded" and row["backend"] == "gpu" and not row["simulated"]
    assert row["gpu_uuids"] == [gpu["uuid"]] and row["engine"] == "hf"
    assert row["num_ok"] == 16 and row["energy_sensor"].startswith("nvml")
    assert row["energy_j"] > 0 and row["energy_per_output_token_j"] > 0
    assert row["idle_power_w"] > 0 and row["avg_power_w"] > 0
