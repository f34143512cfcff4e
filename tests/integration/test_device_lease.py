"""benchmarks/device_lease.sh's model step: the model is built in the background,
marked while it is built, kept by the next call's copy of the checkout, not built twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = Path(".farm/models/llama-3.1-8b-random")


def _step(tmp: Path, *steps: str) -> str:
    # python3 must be this interpreter (the lent host's has the farm's wheels on PYTHONPATH).
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "python3"     # not a link: a venv's python finds its venv by path
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FARM": str(tmp / "farm"),
           "GPUOUT": str(tmp / "gpuout"), "OUT": str(tmp / "out"), "VP": str(tmp / "vp"),
           "MODEL_ARGS": "--hidden 32 --layers 1 --heads 2 --vocab 512"}
    proc = subprocess.run(["bash", "benchmarks/device_lease.sh", *steps], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout


def test_the_model_is_built_in_the_background_and_kept_by_the_next_copy(tmp_path):
    farm = tmp_path / "farm"
    (farm / "stale.txt").parent.mkdir(parents=True)
    (farm / "stale.txt").write_text("from an earlier copy")
    out = _step(tmp_path, "model")
    assert "building" in out
    marker = farm / f"{MODEL}.building"
    deadline = time.monotonic() + 90
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not marker.exists(), "the background build never ended"
    assert (farm / MODEL / "farm-model.json").is_file()
    assert "random float32 weights" in (tmp_path / "gpuout" / "model.txt").read_text()
    # The checkout was copied in (what an earlier copy left is gone), the vLLM parts not.
    assert (farm / "benchmarks" / "gpu_farm_vllm.sh").is_file()
    assert not (farm / "stale.txt").exists()
    assert not any(farm.glob(".vp-aa*"))
    # A second copy (the next call's) keeps the model, and the step does not build again.
    built = (farm / MODEL / "farm-model.json").stat().st_mtime_ns
    assert "built already" in _step(tmp_path, "model")
    assert (farm / MODEL / "farm-model.json").stat().st_mtime_ns == built
