"""Do two exports of one sweep hold the same figures? Column by column.

    python benchmarks/same_figures.py BEFORE_DIR AFTER_DIR [--noise NOISE_DIR]

Both directories are `farmctl export SWEEP --format jsonl --out DIR` exports.
For each table it prints whether the column sets are equal (and the columns
only one side has), then per column the largest relative difference between
matched rows (rows matched by the table's key; numbers compared as
|a − b| / max(|a|, |b|), lists item by item, anything else for equality, a
null against a value counted as a mismatch). With `--noise`, a third export
of the same code gives the run-to-run jitter to judge against (the simulated
engine runs in real time, so float figures differ a little between two runs of
the same code): a column (or a table's row count) differing by more than
ten times the noise is flagged. Columns that carry times or ids of one run
(`started_at`, …) are reported but not counted. The exit code is 1 when column
sets differ, a column is null on one side only, or (with --noise) a column or
row count differs by more than its noise allows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

# Row keys per table (after the run_id).
KEYS = {"runs": ("run_id",), "run_points": ("run_id", "load_point"),
        "requests": ("run_id", "load_point", "index"),
        "timelines": ("run_id", "gpu_index", "sample"),
        "windows": ("run_id", "window_index")}
# Per-run instants, paths and free text that differ between any two runs.
VOLATILE = {"started_at", "finished_at", "worker", "host", "result_json", "preflight_json",
            "validity_checks_json", "trace_json", "gpu_uuids", "gpu_uuid", "notes",
            "error", "error_message", "preflight_waited_s"}


def load(directory: Path, table: str) -> tuple[list[str], dict[tuple, dict[str, Any]]]:
    """(column names in file order, rows by key) of one table of an export."""
    path = directory / f"{table}.jsonl"
    names: list[str] = []
    rows: dict[tuple, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if not names:
                names = list(row)
            rows[tuple(row[k] for k in KEYS[table])] = row
    if not names:  # an empty table: the manifest still names its columns
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        names = [c["name"] for c in manifest["tables"][table]["columns"]]
    return names, rows


def rel_diff(a: Any, b: Any) -> float:
    """0 for equal values; the relative difference of numbers; inf for a mismatch."""
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return math.inf
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf
        return max((rel_diff(x, y) for x, y in zip(a, b)), default=0.0)
    numbers = (int, float)
    if (isinstance(a, numbers) and isinstance(b, numbers)
            and not isinstance(a, bool) and not isinstance(b, bool)):
        if a == b:
            return 0.0
        return abs(a - b) / max(abs(a), abs(b))
    return 0.0 if a == b else math.inf


def column_diffs(a: dict[tuple, dict[str, Any]], b: dict[tuple, dict[str, Any]],
                 names: list[str]) -> dict[str, float]:
    """Largest relative difference per column over the rows both sides have."""
    diffs = dict.fromkeys(names, 0.0)
    for key in a.keys() & b.keys():
        for name in names:
            diffs[name] = max(diffs[name], rel_diff(a[key].get(name), b[key].get(name)))
    return diffs


def compare(before: Path, after: Path, noise: Path | None) -> bool:
    """Print the comparison; True when the figures are the same (within the noise)."""
    same = True
    for table in KEYS:
        names_a, rows_a = load(before, table)
        names_b, rows_b = load(after, table)
        only_a = [n for n in names_a if n not in names_b]
        only_b = [n for n in names_b if n not in names_a]
        order = "same order" if names_a == names_b else "DIFFERENT ORDER"
        print(f"## {table}: {len(rows_a)} / {len(rows_b)} rows, {len(names_a)} / "
              f"{len(names_b)} columns, sets {'equal' if not only_a and not only_b else 'DIFFER'}"
              f" ({order})")
        if only_a or only_b:
            same = False
            print(f"   only before: {only_a}\n   only after: {only_b}")
        noise_rows = load(noise, table)[1] if noise else None
        if rows_a.keys() != rows_b.keys():
            unmatched = len(rows_a.keys() ^ rows_b.keys())
            # Timelines are as long as the run: their row count is timing, like the figures.
            jitter_rows = (len(rows_a.keys() ^ noise_rows.keys())
                           if noise_rows is not None else 0)
            same = same and unmatched <= 10 * jitter_rows
            print(f"   row keys differ: {unmatched} unmatched"
                  + (f" (noise: {jitter_rows})" if noise_rows is not None else ""))
        common = [n for n in names_a if n in names_b]
        diffs = column_diffs(rows_a, rows_b, common)
        jitter = column_diffs(rows_a, noise_rows, common) if noise_rows is not None else None
        for name in common:
            d = diffs[name]
            if d == 0.0 and (jitter is None or jitter[name] == 0.0):
                continue
            line = f"   {name:34s} max rel diff {d:.3g}"
            if jitter is not None:
                line += f"   (noise before vs noise run: {jitter[name]:.3g})"
            if name in VOLATILE:
                line += "   [per-run value, not counted]"
            elif jitter is not None and d > max(jitter[name] * 10, 1e-12):
                same = False
                line += "   ABOVE NOISE"
            elif d == math.inf and (jitter is None or jitter[name] != math.inf):
                same = False
                line += "   MISMATCH (null against a value, or unequal text)"
            print(line)
        identical = [n for n in common if diffs[n] == 0.0]
        print(f"   {len(identical)} of {len(common)} columns identical")
    print("SAME FIGURES" if same else "FIGURES DIFFER")
    return same


def main(argv: list[str] | None = None) -> int:
    """Command line: compare two exports, optionally against a noise export."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--noise", type=Path, default=None,
                        help="a second export of the 'before' code: the run-to-run jitter")
    args = parser.parse_args(argv)
    return 0 if compare(args.before, args.after, args.noise) else 1


if __name__ == "__main__":
    sys.exit(main())
