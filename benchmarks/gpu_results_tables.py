"""The GPU results as Markdown tables, from the committed exports alone.

docs/gpu-results.md quotes figures measured on lent GPUs. This script makes
them from what is committed, so a page can be filled (and checked) without
copying a number by hand: every export under docs/data/*/export (or those
named) is imported into an empty store (`farmctl import` re-checks every
figure from the raw timelines), then each sweep's `farmctl results` rows are
grouped by configuration — GPU, the engine arguments and GPU settings that vary
in the sweep, and the load point — into one table per sweep:

    n valid        runs whose point passed every validity check (the figures
                   are their means); invalid ones are counted apart, with why
    J/out-tok      gross and net of idle, per output token
    J/request      net of idle
    tok/s, TPOT    output tokens per second, TPOT p50 (server points)
    CI95, verdict  the adaptive-repetitions rule's, per configuration

    .venv/bin/python benchmarks/gpu_results_tables.py [EXPORT_DIR ...] [--data docs/data]
        [--sweep NAME ...]

Simulated sweeps are left out (the page is about hardware); a sweep with no
result prints no table.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from _common import ROOT, committed_exports, farmctl

HARDWARE_KEYS = ("power_limit_w", "sm_clock_mhz")


def rows_of(db: Path, sweep: str) -> dict:
    return json.loads(farmctl(db, "results", sweep, "--format", "json"))


def varying_args(rows: list[dict]) -> list[str]:
    """Engine arguments whose value differs between the sweep's rows."""
    seen: dict[str, set] = defaultdict(set)
    for row in rows:
        for key, value in (row.get("engine_args") or {}).items():
            seen[key].add(json.dumps(value, sort_keys=True))
    return sorted(k for k in seen if len(seen[k]) > 1 or
                  any(k not in (r.get("engine_args") or {}) for r in rows))


def configuration(row: dict, args: list[str]) -> str:
    parts = [f"{k}={(row.get('engine_args') or {}).get(k, '—')}" for k in args]
    for key in HARDWARE_KEYS:
        if row.get(key) is not None:
            parts.append(f"{key}={row[key]:g}")
    return " ".join(parts) or row.get("engine") or "—"


def load_label(row: dict) -> str:
    kind, value = row.get("load_kind"), row.get("load_value")
    if value is None:
        return kind or "—"
    names = {"batch": "prompts", "concurrency": "c", "request_rate": "req/s"}
    return f"{names.get(kind, kind)} {value:g}" if kind != "concurrency" else f"c={value:g}"


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def verdicts(results: dict) -> dict[str, dict]:
    """run id of a configuration's first repetition → its repetitions entry."""
    return {entry["run_id_rep0"]: entry for entry in results.get("repetitions") or []}


def sweep_table(results: dict) -> list[str]:
    rows = [r for r in results["rows"] if r.get("status") == "succeeded"]
    if not rows:
        return []
    args = varying_args(rows)
    by_run_rep0 = verdicts(results)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    entry_of: dict[tuple, dict] = {}
    for row in rows:
        key = (row["gpu_model"], configuration(row, args), row.get("load_kind") or "",
               row.get("load_value") if row.get("load_value") is not None else -1.0)
        groups[key].append(row)
        if row["run_id"] in by_run_rep0:
            entry_of[key[:2]] = by_run_rep0[row["run_id"]]
    for key, group in groups.items():
        # A configuration whose first repetition has no result yet: its entry is the
        # one whose label names this GPU and every engine argument of the row.
        if key[:2] not in entry_of:
            tokens = [f"gpu:{key[0]}"] + [f"{k}={v}" for k, v in
                                          (group[0].get("engine_args") or {}).items()]
            found = [e for e in results.get("repetitions") or []
                     if all(_names(e["configuration"], t) for t in tokens)]
            if len(found) == 1:
                entry_of[key[:2]] = found[0]

    def order(key: tuple) -> tuple:
        numbers = [float(t) for t in key[1].replace("=", " ").split() if _is_number(t)]
        return key[0], numbers, key[1], key[2], key[3]

    out = ["| GPU | configuration | load | n valid | J/out-tok gross | net | J/request net | "
           "tok/s | TPOT p50 ms | CI95 of net (target) | verdict |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for key in sorted(groups, key=order):
        group = groups[key]
        valid = [r for r in group if r.get("valid")]
        invalid = [r for r in group if not r.get("valid")]
        entry = entry_of.get(key[:2], {})
        point = next((p for p in entry.get("points") or []
                      if p.get("load_value") == group[0].get("load_value")), {})
        ci = point.get("ci_half_width_pct")
        target = entry.get("target_ci_half_width_pct")
        ci_cell = (f"±{ci:.1f}%" if ci is not None else "—") + (
            f" ({target:g}%)" if target is not None else "")
        n_cell = str(len(valid)) + (
            f" (+{len(invalid)} invalid: "
            f"{'; '.join(sorted({r.get('invalid_reasons') or '?' for r in invalid}))})"
            if invalid else "")
        tpot = mean(valid, "tpot_p50_ms") if group[0].get("load_kind") != "batch" else None
        out.append(
            f"| {key[0]} | {key[1]} | {load_label(group[0])} | {n_cell} | "
            f"{fmt(mean(valid, 'energy_per_output_token_j'))} | "
            f"{fmt(mean(valid, 'energy_per_output_token_net_j'))} | "
            f"{fmt(mean(valid, 'energy_per_request_net_j'))} | "
            f"{fmt(mean(valid, 'output_throughput_tps'), 4)} | {fmt(tpot)} | {ci_cell} | "
            f"{entry.get('verdict', '—')} |")
    return out


def _names(label: str, token: str) -> bool:
    """Whether a configuration label ("model · gpu:h100-80gb · a=1,b=2 · …") has token
    as one of its items."""
    return token in {item for part in label.split(" · ") for item in part.split(",")}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="*", type=Path,
                        help="export folders (default: every docs/data/*/export)")
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "data")
    parser.add_argument("--sweep", action="append", default=[],
                        help="only these sweeps (repeatable)")
    args = parser.parse_args()
    exports = ({p.resolve(): None for p in args.exports} if args.exports
               else committed_exports(args.data.resolve()))
    if not exports:
        raise SystemExit("no export found")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "results.db"
        for export in exports:
            farmctl(db, "import", str(export))
        with sqlite3.connect(db) as con:
            sweeps = con.execute("SELECT name, simulated FROM sweeps ORDER BY name").fetchall()
        for name, simulated in sweeps:
            if simulated or (args.sweep and name not in args.sweep):
                continue
            lines = sweep_table(rows_of(db, name))
            if not lines:
                continue
            sources = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                       for p, n in exports.items() if n in (None, name)]
            print(f"### {name}\n\nfrom {', '.join(sources)}, re-checked by `farmctl import`\n")
            print("\n".join(lines))
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
