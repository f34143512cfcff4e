"""The transformers engine through `run_one` on a real GPU (benchmarks/gpu_hf_engine.py
--quick): the engine child on the run's GPU, its generation window measured by
NVML's counter and the timeline, figures per token, and nothing left on the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]


def test_hf_engine_measured_on_the_gpu(tmp_path):
    out = tmp_path / "hf.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_hf_engine.py"),
                           "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [run] = json.loads(out.read_text())["runs"]
    assert run["status"] == "succeeded", run["error"]
    assert run["engine"]["kind"] == "hf" and run["engine"]["version"].startswith("transformers")
    lp = run["load_point"]
    assert lp["num_ok"] == 16 and lp["output_tokens"] == 16 * 128
    steady = run["steady_window"]
    assert steady["energy_j"] > 0 and steady["null_reason"] is None
    assert steady["agreement"] is None or abs(steady["agreement"] - 1) < 0.03
    assert lp["energy_per_output_token_j"] > 0 and lp["energy_per_output_token_net_j"] > 0
    assert lp["avg_power_w"] > run["idle"]["idle_power_w"]
