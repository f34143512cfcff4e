"""benchmarks/gpu_results_tables.py: the GPU pages' tables from committed exports alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"


def _row(out: str, *cells: str) -> str:
    """The one table row holding every cell given."""
    rows = [line for line in out.splitlines()
            if line.startswith("|") and all(f"| {c} |" in line for c in cells)]
    assert len(rows) == 1, (cells, out)
    return rows[0]


def test_the_tables_carry_the_measured_figures_and_the_repetition_verdicts():
    exports = [DATA / "vllm-quick-server-h100" / "export",
               DATA / "vllm-batch-h100-partial" / "export",
               DATA / "hf-adaptive-h200" / "export"]
    proc = subprocess.run([sys.executable, "benchmarks/gpu_results_tables.py",
                           *map(str, exports)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "### vllm-gpu-quick-server-8b" in out and "re-checked by `farmctl import`" in out
    # The H100's server points (docs/gpu-results.md, b): J/request net, tok/s, TPOT p50.
    assert _row(out, "h100-80gb", "c=1", "534", "159.5", "6.21")
    assert _row(out, "h100-80gb", "c=128", "19.6", "7,407", "13.4")
    # Batch: gross and net J/token; the verdict of a configuration whose first
    # repetition has no result yet (64's second was measured first) is still found.
    assert _row(out, "max_num_seqs=16", "prompts 256", "0.233", "0.178", "more")
    assert _row(out, "max_num_seqs=64", "prompts 256", "0.103", "0.0838", "more")
    # The adaptive rule's CI and target per configuration, and n of the valid runs.
    assert _row(out, "batch_size=1", "6", "±2.1% (2%)", "max")
    assert _row(out, "batch_size=64", "4", "±1.1% (2%)", "met")
