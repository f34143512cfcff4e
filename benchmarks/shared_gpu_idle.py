"""Idle GPU time with runs waiting, for one local worker serving three simulated
GPU models (issue 12 item 1): `farmctl run` on a 3-model sweep, then, from the
store, each GPU's gaps between one of its runs finishing and its next run
starting. All runs are sent at once, so every such gap is a GPU idle while runs
for it waited.

    python benchmarks/shared_gpu_idle.py [--tree DIR] [--reps 4] [--prompts "16, 64"]

`--tree` runs another checkout of the farm (e.g. `git archive HEAD` unpacked in
/tmp) with this interpreter, to measure before and after a change.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

SWEEP = textwrap.dedent("""\
    name = "idle-gap"
    repetitions = {reps}

    [[model]]
    id = "tiny-1b"
    source = "org/tiny-1B"

    [hardware]
    gpu = ["sim:H100-80GB", "sim:L4", "sim:A100-80GB"]
    gpus_per_run = [1]

    [engine]
    kind = "sim"

    # Offline batches: their length follows each GPU's modelled speed, so the
    # three models' runs end at different times (an L4 is far slower).
    [[scenario]]
    kind = "batch"
    num_prompts = [{prompts}]
    warmup_prompts = 0

    [workload]
    input_tokens = [128]
    output_tokens = [128]

    [measurement]
    sample_period_s = 0.1
    idle_baseline_s = 0.2
    min_steady_s = 0.1
    """)


def _epoch(text: str) -> float:
    at = datetime.fromisoformat(str(text))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def idle_gaps(db_file: Path) -> dict[str, list[float]]:
    """Each GPU model's gaps (s) between consecutive runs (one GPU per model), read
    with sqlite3 so any checkout's schema revision will do."""
    by_gpu: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with sqlite3.connect(db_file) as db:
        rows = db.execute("SELECT runs.gpu_model, results.started_at, results.finished_at "
                          "FROM results JOIN runs ON runs.id = results.run_id").fetchall()
    for model, started, finished in rows:
        by_gpu[model].append((_epoch(started), _epoch(finished)))
    return {gpu: [b[0] - a[1] for a, b in zip(sorted(spans), sorted(spans)[1:])]
            for gpu, spans in by_gpu.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--prompts", default="16, 64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "idle.toml"
        sweep.write_text(SWEEP.format(reps=args.reps, prompts=args.prompts))
        db_url = f"sqlite:///{tmp}/farm.db"
        env = {**os.environ, "FARM_DB_URL": db_url, "FARM_HOME": f"{tmp}/.farm",
               "PYTHONPATH": str(args.tree.resolve())}
        env.pop("FARM_BROKER_URL", None)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "farm.cli", "run", str(sweep), "--quiet"],
                              cwd=args.tree, env=env, capture_output=True, text=True)
        wall_s = time.monotonic() - started
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        gaps = idle_gaps(Path(tmp) / "farm.db")
    report = {"tree": str(args.tree), "runs": sum(len(g) + 1 for g in gaps.values()),
              "wall_s": round(wall_s, 1),
              "idle_s_total": round(sum(sum(g) for g in gaps.values()), 1),
              "idle_s_by_gpu": {k: round(sum(v), 1) for k, v in sorted(gaps.items())},
              "longest_gap_s": round(max((max(g) for g in gaps.values() if g), default=0), 1)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
