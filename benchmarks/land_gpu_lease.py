"""Land what a GPU lease measured in docs/data: exports, re-checked, with reports.

A lease's `collect` (benchmarks/device_lease.sh) returns `gpu.tgz`: a copy of the
lease's SQLite store, what the sweep script printed and the farm's logs. This
script turns it into committed data, for every sweep the lease measured a run of
(results it imported from an earlier export, `RESUME`, do not count, and a
simulated sweep is named and left out):

1. `farmctl export SWEEP --format parquet` from the lease's store, into a staging
   folder;
2. `farmctl import` of that export into an empty store: every figure re-checked
   from the raw timelines, as any reader of the data will;
3. `farmctl report` and `farmctl results` (table and JSON) from that import;
4. only then into docs/data/FOLDER/ (`export/`, `report/`, `results.txt`,
   `results.json`), FOLDER being the sweep's name without `-gpu` and `-8b`
   (`vllm-gpu-batch-8b` → `vllm-batch`) or what `--folder SWEEP=FOLDER` names.

Nothing measured is lost: before the export, every committed export of the
sweep (any docs/data/*/export whose manifest names it) is imported into the
lease's store (what the store has is kept), so a lease that did not start from
them (`RESUME`) still lands beside them; a sweep whose committed runs are still
not all in the store after that is refused. The printed output goes to
docs/data/gpu-leases/LEASE/ (LEASE: the day its last run finished measuring and
the GPU model, e.g. 2026-12-08-h200-141gb), with each log cut to its last 200 KB.
A returned `vllm-cache.tgz` beside gpu.tgz goes to .vllm-cache/ (ignored), where
the next lease's third call carries it from.

    .venv/bin/python benchmarks/land_gpu_lease.py FILES_AT_OR_GPU_TGZ
        [--data docs/data] [--folder SWEEP=FOLDER ...] [--cache-dir .vllm-cache]

Exit 0 when every sweep landed, 1 when one was refused, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from _common import ROOT, committed_exports, farmctl

LOG_TAIL_BYTES = 200_000
PRINTED = ("*.txt", "*.json", "*.csv", "DONE", "script.log")


class Refused(Exception):
    """A sweep that cannot land without losing something."""


def measured_here(db: Path, simulated: bool = False) -> dict[str, int]:
    """Sweep name → how many of its runs this store measured itself (not imported),
    of its measured sweeps (or of its simulated ones)."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT s.name, COUNT(DISTINCT r.id) FROM sweeps s JOIN runs r ON r.sweep_id = s.id"
            " JOIN results x ON x.run_id = r.id WHERE x.imported_from IS NULL"
            " AND s.simulated = ? GROUP BY s.name", (simulated,)).fetchall()
    return dict(rows)


def with_results(db: Path, sweep: str) -> set[str]:
    """Run ids of `sweep` that have a result in the store."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT DISTINCT r.id FROM runs r JOIN sweeps s ON r.sweep_id = s.id"
            " JOIN results x ON x.run_id = r.id WHERE s.name = ?", (sweep,)).fetchall()
    return {row[0] for row in rows}


def export_runs_with_results(export: Path) -> set[str]:
    """Run ids with a result in an export's runs table."""
    table = pq.read_table(export / "runs.parquet", columns=["run_id", "result_json"])
    return {run for run, result in zip(table.column("run_id").to_pylist(),
                                       table.column("result_json").to_pylist(), strict=True)
            if result}


def owner_of(db: Path, sweep: str) -> str:
    """The sweep's owner in the store: its committed exports are imported as them."""
    with sqlite3.connect(db) as con:
        (owner,) = con.execute("SELECT owner FROM sweeps WHERE name = ?", (sweep,)).fetchone()
    return owner


def merge_committed(db: Path, exports: list[Path], sweep: str) -> int:
    """Import the committed `exports` of `sweep` into the lease's store, then refuse
    when one of their results is still missing; the number of committed results."""
    committed = 0
    for export in exports:
        farmctl(db, "import", str(export), owner=owner_of(db, sweep))
        theirs = export_runs_with_results(export)
        missing = sorted(theirs - with_results(db, sweep))
        if missing:
            raise Refused(
                f"{sweep}: {len(missing)} run(s) with a result in {export} are not in the "
                f"lease's store even after importing it ({', '.join(missing[:3])}"
                f"{' …' if len(missing) > 3 else ''}); landing it would drop them")
        committed += len(theirs)
    return committed


def folder_for(sweep: str, overrides: dict[str, str]) -> str:
    """docs/data's folder for a sweep: `--folder`'s, else its name less -gpu and -8b."""
    if sweep in overrides:
        return overrides[sweep]
    name = sweep.replace("-gpu-", "-")
    return name.removesuffix("-8b")


def land_sweep(db: Path, sweep: str, target: Path, stage: Path) -> str:
    """Export, re-check by import, report; then replace target's data. A summary line."""
    stage.mkdir(parents=True)
    farmctl(db, "export", sweep, "--format", "parquet", "--out", str(stage / "export"))
    check = stage / "check.db"
    imported = farmctl(check, "import", str(stage / "export")).strip().splitlines()[-1]
    farmctl(check, "report", sweep, "--out", str(stage / "report"))
    farmctl(check, "results", sweep, out=stage / "results.txt")
    farmctl(check, "results", sweep, "--format", "json", "--out", str(stage / "results.json"))
    target.mkdir(parents=True, exist_ok=True)
    for name in ("export", "report"):
        shutil.rmtree(target / name, ignore_errors=True)
        shutil.move(stage / name, target / name)
    for name in ("results.txt", "results.json"):
        shutil.move(stage / name, target / name)
    return imported


def lease_name(db: Path) -> str:
    """DATE-GPU of the lease: the day its last run finished measuring and the GPU
    models it measured. (finished_at is the measurement's own time; recorded_at is
    when a store took the result, which an import resets.)"""
    with sqlite3.connect(db) as con:
        (last,) = con.execute(
            "SELECT MAX(finished_at) FROM results WHERE imported_from IS NULL").fetchone()
        gpus = sorted(row[0] for row in con.execute(
            "SELECT DISTINCT r.gpu_model FROM runs r JOIN results x ON x.run_id = r.id"
            " WHERE x.imported_from IS NULL AND NOT r.simulated"))
    return f"{str(last or 'undated')[:10]}-{'-'.join(gpus) or 'gpu'}"


def keep_printed(source: Path, leases: Path, name: str) -> Path:
    """Copy what the lease printed and its logs (each cut to its tail) under leases/."""
    target = leases / name
    suffix = 2
    while target.exists():
        target = leases / f"{name}-{suffix}"
        suffix += 1
    target.mkdir(parents=True)
    for pattern in PRINTED:
        for path in sorted(source.glob(pattern)):
            if path.is_file():
                shutil.copy2(path, target / path.name)
    logs = source / "logs"
    for path in sorted(logs.rglob("*")) if logs.is_dir() else []:
        if not path.is_file():
            continue
        copy = target / "logs" / path.relative_to(logs)
        copy.parent.mkdir(parents=True, exist_ok=True)
        size = path.stat().st_size
        with path.open("rb") as src, copy.open("wb") as dst:
            if size > LOG_TAIL_BYTES:
                src.seek(size - LOG_TAIL_BYTES)
                dst.write(f"[the first {size - LOG_TAIL_BYTES} bytes are cut]\n".encode())
            shutil.copyfileobj(src, dst)
    return target


def unpack(source: Path, into: Path) -> tuple[Path, Path | None]:
    """The folder gpu.tgz unpacks to, and a vllm-cache.tgz beside it (or None)."""
    tgz = source / "gpu.tgz" if source.is_dir() else source
    if not tgz.is_file():
        raise SystemExit(f"{tgz}: no such file (a collect's gpu.tgz, or the folder holding it)")
    with tarfile.open(tgz) as tar:
        tar.extractall(into, filter="data")
    if not (into / "farm-gpu.db").is_file():
        raise SystemExit(f"{tgz} holds no farm-gpu.db: the collect copied no store")
    cache = tgz.parent / "vllm-cache.tgz"
    return into, cache if cache.is_file() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="gpu.tgz, or the folder holding it")
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "data")
    parser.add_argument("--folder", action="append", default=[], metavar="SWEEP=FOLDER")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".vllm-cache")
    args = parser.parse_args()
    # farmctl runs from the repository root: every path it is given is absolute.
    args.data, args.source = args.data.resolve(), args.source.resolve()
    overrides = {}
    for item in args.folder:
        sweep, sep, folder = item.partition("=")
        if not sep or not sweep or not folder or "/" in folder:
            parser.error(f"--folder {item!r}: expected SWEEP=FOLDER (a folder name)")
        overrides[sweep] = folder
    refused = 0
    with tempfile.TemporaryDirectory() as tmp:
        lease, cache = unpack(args.source, Path(tmp) / "lease")
        db = lease / "farm-gpu.db"
        sweeps = measured_here(db)
        for name, runs in sorted(measured_here(db, simulated=True).items()):
            print(f"{name}: {runs} SIMULATED run(s), not landed (docs/data holds what GPUs "
                  "measured)")
        if not sweeps:
            print("the lease measured no run on hardware: nothing to land")
        for sweep, measured in sorted(sweeps.items()):
            target = args.data / folder_for(sweep, overrides)
            # Every committed export of the sweep, bare folders too: landing keeps
            # every run any of them holds.
            exports = committed_exports(args.data, bare=True)
            holder = exports.get(target / "export")
            own = [export for export, name in exports.items() if name == sweep]
            if holder not in (None, sweep):
                print(f"refused: {sweep}: {target} holds the export of sweep {holder!r}; "
                      f"name another folder with --folder {sweep}=FOLDER")
                refused += 1
                continue
            try:
                committed = merge_committed(db, own, sweep)
            except Refused as exc:
                print(f"refused: {exc}")
                refused += 1
                continue
            imported = land_sweep(db, sweep, target, Path(tmp) / "stage" / sweep)
            print(f"{sweep}: {measured} run(s) measured by this lease, "
                  f"{len(with_results(db, sweep))} with a result in all "
                  f"(committed before: {committed}, all kept) → {target}\n  re-check: "
                  f"{imported}")
            for other in own:
                home = other.parent if other.name == "export" else other
                if home != target:
                    print(f"  {home} holds a part of it (every run is in {target} "
                          "now): remove it once no page cites it")
        if sweeps:
            kept = keep_printed(lease, args.data / "gpu-leases", lease_name(db))
            print(f"printed output and logs → {kept}")
        if cache is not None:
            args.cache_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cache, args.cache_dir / "vllm-cache.tgz")
            print(f"vLLM compile cache → {args.cache_dir / 'vllm-cache.tgz'} (the next "
                  "lease's third call carries it)")
    return 1 if refused else 0


if __name__ == "__main__":
    raise SystemExit(main())
