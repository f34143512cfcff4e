"""`farmctl measure -- vllm bench serve …`: the real load tool (vLLM's CPU build) under
the farm's meter, against the shipped mock server, its own result file read for the
counts. The `vllm` console script does not start on this CPU (docs in
tests/data/loadtools/README.md), so the benchmark's own module is run, with vLLM's
own arguments."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engines.conftest import needs_vllm
from workers.mock_openai import MockConfig, MockOpenAIServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400), needs_vllm]

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tests" / "data" / "loadtools" / "vllm_bench_serve.py"


@pytest.mark.slow
def test_vllm_bench_serve_is_measured_with_its_own_counts(tmp_path, tiny_model):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FARM_OWNER": "dave",
           "FARM_DB_URL": f"sqlite:///{tmp_path / 'farm.db'}",
           "FARM_HOME": str(tmp_path / ".farm")}
    for key in ("FARM_BROKER_URL", "FARM_ENERGY_SOURCES", "FARM_ALLOW_COMMANDS"):
        env.pop(key, None)
    with MockOpenAIServer(MockConfig(ttft_s=0.01, itl_s=0.002, model="tiny")) as mock:
        tool = [sys.executable, str(BENCH), "--backend", "vllm", "--base-url", mock.url,
                "--model", "tiny", "--tokenizer", str(tiny_model), "--dataset-name", "random",
                "--random-input-len", "32", "--random-output-len", "16",
                "--random-range-ratio", "0", "--num-prompts", "24", "--ignore-eos",
                "--temperature", "0", "--seed", "0", "--disable-tqdm",
                "--max-concurrency", "4", "--save-result", "--result-dir", str(tmp_path),
                "--result-filename", "bench.json"]
        done = subprocess.run(
            [sys.executable, "-m", "farm.cli", "measure", "--sim", "H100-80GB",
             "--output-tokens", "16", "--idle-baseline-s", "0.5", "--min-steady-s", "1",
             "--cooldown-timeout-s", "0", "--quiet", "--name", "vllm-bench",
             "--result", str(tmp_path / "bench.json"), "--", *tool],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=360)
        served = mock.stats.completed
    assert done.returncode == 0, done.stdout + done.stderr
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["completed"] == 24 == served
    with sqlite3.connect(tmp_path / "farm.db") as db:
        db.row_factory = sqlite3.Row
        run = db.execute("SELECT * FROM runs").fetchone()
        lp = db.execute("SELECT * FROM load_points").fetchone()
        steady = db.execute("SELECT * FROM energy_windows WHERE name = 'steady'").fetchone()
    assert (run["engine_kind"], run["status"]) == ("measure", "succeeded")
    # The tool's own counts, and the window's energy over them.
    assert lp["num_ok"] == 24 and lp["output_tokens"] == saved["total_output_tokens"] == 24 * 16
    assert lp["input_tokens"] == saved["total_input_tokens"]
    total = saved["total_input_tokens"] + saved["total_output_tokens"]
    assert lp["energy_per_output_token_j"] == pytest.approx(steady["energy_j"] / (24 * 16))
    assert lp["energy_per_total_token_j"] == pytest.approx(steady["energy_j"] / total)
    assert any("vllm-bench" in note for note in json.loads(lp["notes"]))
