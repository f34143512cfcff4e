"""Replay adaptive repetitions over measured runs: what `farm.adaptive.decide` makes of
an export's repetitions under a policy other than the one they ran with.

    .venv/bin/python benchmarks/adaptive_replay.py EXPORT_DIR \\
        [--min 3] [--max 6] [--ci 2] [--figure gross|net] [--first N]

EXPORT_DIR is a `farmctl export` (runs.parquet, run_points.parquet). `--first N`
keeps each configuration's repetitions 0 … N − 1 only: the state the recorder
decided on after the N-th result. Prints the summary `farmctl results` would print
(farm.adaptive.format_summary) — the same decision code, on stored values, no
GPU. docs/measurement.md uses it on the H200 runs of examples/hf-gpu.toml.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm import adaptive
from farm.spec import Repetitions
from farm.store.repetitions import PointFigures, RepetitionFigures
from farm_contract.runspec import RunSpec


def _none(value) -> float | None:
    return None if pd.isna(value) else float(value)


def configurations(export: Path, first: int | None) -> list[tuple[RunSpec, list]]:
    """Each configuration's repetition-0 RunSpec and its RepetitionFigures."""
    runs = pd.read_parquet(export / "runs.parquet")
    points = pd.read_parquet(export / "run_points.parquet")
    by_run: dict[str, dict[int, PointFigures]] = defaultdict(dict)
    for p in points.itertuples():
        by_run[p.run_id][int(p.load_point)] = PointFigures(
            p.load_kind, float(p.load_value), _none(p.energy_per_output_token_j),
            _none(p.energy_per_output_token_net_j))
    configs: dict[str, tuple[RunSpec, list]] = {}
    for r in runs.itertuples():
        spec = RunSpec.model_validate_json(r.spec_json)
        if first is not None and spec.repetition >= first:
            continue
        rep0 = adaptive.repetition(spec, 0)
        valid = None if pd.isna(r.valid) else bool(r.valid)
        configs.setdefault(rep0.run_id, (rep0, []))[1].append(RepetitionFigures(
            r.run_id, spec.repetition, r.status, valid, by_run.get(r.run_id, {})))
    return list(configs.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path)
    ap.add_argument("--min", type=int, default=3)
    ap.add_argument("--max", type=int, default=6)
    ap.add_argument("--ci", type=float, default=2.0, help="ci_half_width_pct")
    ap.add_argument("--figure", choices=("gross", "net"), default="gross")
    ap.add_argument("--first", type=int, default=None)
    args = ap.parse_args(argv)
    policy = Repetitions(min=args.min, max=args.max, ci_half_width_pct=args.ci,
                         figure=args.figure)
    summary = [adaptive.ConfigurationSummary(run, adaptive.decide(policy, reps))
               for run, reps in configurations(args.export, args.first)]
    sys.stdout.write(adaptive.format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
