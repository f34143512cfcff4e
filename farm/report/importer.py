"""`farmctl import`: a dataset written by `farmctl export` (any format), merged
into this farm's store — a second lab's results next to one's own.

What is merged (docs/dataset.md#import):

- the sweep, by its name and TOML text, unless the store has it already (then
  the store's own TOML is kept); a simulated sweep never merges with a
  measured one of the same name;
- every run that has a result, by its run id: run ids are hashes of the full
  RunSpec, so the same run measured by another lab *is* the same run. Each
  RunSpec is checked to hash to its id;
- its result, through `Store.record_result` (requests and power timeline
  included), unless the store already has a result for that run that the
  import must not replace: a succeeded one (a measurement is never
  overwritten), or a failed one when the imported result failed too (the
  store's own failure is kept). Both count as duplicates. A stored failure
  gives way to an imported success.

Runs without a result (queued, running or cancelled where they were exported)
are not imported: in this store they would look queued on a broker that never
had them; enqueueing the sweep's file here sends them.

Nothing derived is taken from the export: each result's windows, idle baseline,
load-point figures and validity verdict are derived again from its raw
measurements, and values no GPU produces are refused (`farm.report.recheck`).
Each imported result keeps its provenance (`results.imported_from`).

Importing the same export twice changes nothing. Files are checked against the
manifest's SHA-256 before anything is written; the runs are then imported one
at a time, so an import stopped by an error keeps the runs imported before it
and, once the cause is fixed, importing again completes it.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from farm.ownership import Identity, require_may_change
from farm.report.dataset import (
    DATASET_KIND,
    DERIVED_TABLES,
    FORMATS,
    MANIFEST,
    SCHEMA_VERSION,
    TABLES,
    DatasetError,
    Table,
    arrow_type,
    pyarrow_module,
    schema_major,
)
from farm.report.export import TRACE_SERIES, sha256
from farm.report.recheck import Where, recheck
from farm.simulate import simulated_copy
from farm.store import Store
from farm.sweep_file import SpecError, parse_sweep
from farm_contract.records import PowerTrace, RequestRecord, RunResult
from farm_contract.runspec import RunSpec, sweep_id

READ_BATCH = 65_536
# The columns the import reads; the other tables (run_points, windows) and
# columns are views of result_json, checked through the manifest's checksums.
RUN_COLUMNS = ("run_id", "sweep", "simulated", "status", "num_requests",
               "num_timeline_samples", "spec_json", "result_json", "trace_json")
REQUEST_COLUMNS = ("run_id", "load_point", "index", "scheduled_s", "sent_s", "ttft_s",
                   "e2e_s", "itl_s", "input_tokens", "output_tokens", "ok", "error")
TIMELINE_COLUMNS = ("run_id", "gpu_index", "sample", "t_s", *TRACE_SERIES)


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: the sweep, runs added, results imported or kept, rows read."""
    sweep: str
    fmt: str
    simulated: bool
    sweep_recorded: bool         # False: the store had the sweep already
    runs_in_export: int
    runs_added: int              # runs the store did not know
    results_imported: int        # results recorded (new, or replacing a stored failure)
    failures_replaced: int       # of those, stored failures replaced by a success
    duplicates: int              # results kept as the store had them
    runs_without_result: int     # exported runs with no result: not imported
    requests: int                # request rows read
    seconds: float


def read_manifest(directory: Path) -> dict[str, Any]:
    """The export's manifest, checked for what the import needs; DatasetError otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory} is not a directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{directory} has no {MANIFEST}: not a farm export, or an "
                           "unfinished one (the manifest is written last)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("dataset") != DATASET_KIND:
        raise DatasetError(f"{path}: not a farm sweep export (dataset != {DATASET_KIND!r})")
    version = manifest.get("dataset_schema_version")
    major = schema_major(version)
    if major != schema_major(SCHEMA_VERSION):
        raise DatasetError(
            f"{path}: dataset schema version {version} is not readable by this farm, which "
            f"reads {schema_major(SCHEMA_VERSION)}.x (exported by farm "
            f"{manifest.get('farm_version', '?')}; use a farm of the same major version)")
    fmt = manifest.get("format")
    if fmt not in FORMATS:
        raise DatasetError(f"{path}: unknown format {fmt!r}")
    sweep = manifest.get("sweep")
    tables = manifest.get("tables")
    if (not isinstance(sweep, dict) or not isinstance(tables, dict)
            or not all(isinstance(sweep.get(k), str) for k in ("name", "id", "spec_toml"))):
        raise DatasetError(f"{path}: the manifest lacks its sweep or tables")
    for name in TABLES:
        if name in DERIVED_TABLES:      # not read; a 1.0 dataset has none
            continue
        entry = tables.get(name)
        if not isinstance(entry, dict) or not all(k in entry for k in ("file", "rows",
                                                                        "sha256")):
            raise DatasetError(f"{path}: no entry for table {name!r}")
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Every table file present, with the manifest's size and SHA-256."""
    for name in TABLES:
        if name not in manifest["tables"]:  # a derived table an older export lacks
            continue
        entry = manifest["tables"][name]
        path = Path(directory) / entry["file"]
        if path.parent != Path(directory) or not path.is_file():
            raise DatasetError(f"{path}: missing (the manifest lists it for {name!r})")
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise DatasetError(f"{path}: {path.stat().st_size} bytes, the manifest says "
                               f"{entry['bytes']}: the file is truncated or was changed")
        if sha256(path) != entry["sha256"]:
            raise DatasetError(f"{path}: checksum differs from the manifest's: the file "
                               "is corrupted or was changed")


def import_dataset(store: Store, directory: Path,
                   identity: Identity | None = None) -> ImportSummary:
    """Import an exported dataset (checked against its manifest) into `store`.

    The sweep and runs the store lacks are added; results are recorded unless the
    store has them already (a stored failure is replaced by an exported success).
    `identity` (default: this process's user) owns a sweep the import records, and
    may add to a stored sweep only where it may change it (farm/ownership.py): an
    import must not make a sweep anyone's, nor add runs to another owner's.
    """
    identity = identity or Identity.configured()
    started = time.perf_counter()
    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_files(directory, manifest)
    fmt, sweep = manifest["format"], manifest["sweep"]
    name = sweep["name"]
    simulated = bool(manifest.get("simulated", sweep.get("simulated")))
    if sweep_id(name) != sweep["id"]:
        raise DatasetError(f"sweep {name!r}: its id {sweep['id']!r} is not the hash of its name")

    reader = _Reader(directory, manifest)
    runs = list(reader.rows("runs", RUN_COLUMNS))
    if len(runs) != manifest["tables"]["runs"]["rows"]:
        raise DatasetError(f"runs: {len(runs)} rows, the manifest says "
                           f"{manifest['tables']['runs']['rows']}")
    specs = [_run_spec(run, name, simulated) for run in runs]
    # Provenance of every result this import records: which export, from when.
    origin = (f"export sha256:{sha256(directory / MANIFEST)[:16]} "
              f"(exported {manifest.get('exported_at', '?')})")
    files = {t: manifest["tables"][t]["file"] for t in ("runs", "timelines")}

    sweep_recorded = _record_sweep(store, name, sweep["spec_toml"], simulated, identity)
    sid = sweep["id"]
    with_result = [spec for run, spec in zip(runs, specs) if run["result_json"] is not None]
    # Marked dispatched: their results come with them, a live dispatcher must not send them.
    added = store.add_runs(sid, with_result, dispatched=True)
    stored = store.result_statuses([spec.run_id for spec in with_result])

    requests = _RunGroups(reader.rows("requests", REQUEST_COLUMNS), "requests")
    samples = _RunGroups(reader.rows("timelines", TIMELINE_COLUMNS), "timelines")
    imported = replaced = duplicates = without = n_requests = 0
    for row, (run, spec) in enumerate(zip(runs, specs, strict=True), start=1):
        run_id = run["run_id"]
        request_rows = requests.take(run_id, run["num_requests"])
        first_sample = samples.taken + 1
        sample_rows = samples.take(run_id, run["num_timeline_samples"])
        n_requests += len(request_rows)
        if run["result_json"] is None:
            without += 1
            continue
        # Derived figures and the verdict again from the raw measurements, never as
        # exported; impossible values refused (farm/report/recheck.py).
        result = recheck(_run_result(run, request_rows, sample_rows), spec,
                         Where(files["runs"], row, files["timelines"], first_sample))
        local = stored.get(run_id)
        if local == "succeeded" or (local == "failed" and result.status == "failed"):
            duplicates += 1
            continue
        outcome = store.record_result(result, imported_from=origin)
        if outcome in ("stored", "replaced"):
            imported += 1
            replaced += outcome == "replaced"
        else:       # "duplicate": recorded meanwhile (a recorder, another import)
            duplicates += 1
    requests.finish()
    samples.finish()
    return ImportSummary(
        sweep=name, fmt=fmt, simulated=simulated, sweep_recorded=sweep_recorded,
        runs_in_export=len(runs), runs_added=len(added), results_imported=imported,
        failures_replaced=replaced, duplicates=duplicates, runs_without_result=without,
        requests=n_requests, seconds=time.perf_counter() - started)


# ------------------------------------------------------------------ checks


def _run_spec(run: dict[str, Any], sweep: str, simulated: bool) -> RunSpec:
    run_id = run["run_id"]
    if run["sweep"] != sweep:
        raise DatasetError(f"run {run_id}: of sweep {run['sweep']!r}, not {sweep!r}")
    if run["simulated"] is not None and bool(run["simulated"]) != simulated:
        raise DatasetError(f"run {run_id}: simulated={run['simulated']} in a "
                           f"{'simulated' if simulated else 'measured'} sweep")
    try:
        spec = RunSpec.model_validate_json(run["spec_json"] or "")
    except ValidationError as exc:
        raise DatasetError(f"run {run_id}: a RunSpec this farm cannot read: "
                           f"{_first_error(exc)}") from None
    if spec.run_id != run_id:
        raise DatasetError(f"run {run_id}: its RunSpec hashes to {spec.run_id}: the spec "
                           "was changed, or comes from a farm with another run-id rule")
    if spec.sweep != sweep:
        raise DatasetError(f"run {run_id}: its RunSpec names sweep {spec.sweep!r}")
    return spec


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"


def _record_sweep(store: Store, name: str, toml: str, simulated: bool,
                  identity: Identity) -> bool:
    """Record the sweep, owned by `identity`, unless the store has it; True when recorded."""
    existing = store.find_sweep(name)
    if existing is not None:
        require_may_change(identity, name, existing.owner, "import results into")
        if bool(existing.simulated) != simulated:
            raise DatasetError(
                f"sweep {name!r} is {'simulated' if existing.simulated else 'measured'} in "
                f"this store and {'simulated' if simulated else 'measured'} in the export: "
                "simulated and measured results never share a sweep")
        return False
    try:
        spec = parse_sweep(toml, f"{name} (manifest.json)")
    except SpecError as exc:
        raise DatasetError(f"the export's sweep file does not parse here:\n{exc.render()}"
                           ) from None
    if spec.name != name:
        # `enqueue --simulate` records the file as written, under "<name>-sim".
        copy = simulated_copy(spec)
        if copy.name != name:
            raise DatasetError(f"the export's sweep file names sweep {spec.name!r}, "
                               f"the manifest {name!r}")
        spec = copy
    store.record_sweep(spec, toml, owner=identity.user or None)
    return True


def _run_result(run: dict[str, Any], request_rows: list[dict[str, Any]],
                sample_rows: list[dict[str, Any]]) -> RunResult:
    run_id = run["run_id"]
    try:
        result = RunResult.model_validate_json(run["result_json"])
        if result.run_id != run_id:
            raise DatasetError(f"run {run_id}: its result is for run {result.run_id}")
        requests = [RequestRecord(load_point=r["load_point"], index=r["index"],
                                  scheduled_s=r["scheduled_s"], sent_s=r["sent_s"],
                                  ttft_s=r["ttft_s"], e2e_s=r["e2e_s"],
                                  itl_s=_as_stored(r["itl_s"] or []),
                                  input_tokens=r["input_tokens"],
                                  output_tokens=r["output_tokens"], ok=r["ok"],
                                  error=r["error"])
                    for r in request_rows]
        trace = _trace(run_id, run["trace_json"], sample_rows)
    except ValidationError as exc:
        raise DatasetError(f"run {run_id}: {_first_error(exc)}") from None
    return result.model_copy(update={"requests": requests, "trace": trace})


def _as_stored(itl_s: list[float]) -> list[float]:
    """Inter-token gaps as the store keeps them (float32), so the figures derived on
    import are those the stored gaps give (the text formats write float32's shortest
    decimal, which reads back as a different double)."""
    return array("f", itl_s).tolist()


def _trace(run_id: str, header_json: str | None,
           rows: list[dict[str, Any]]) -> PowerTrace | None:
    if header_json is None:
        if rows:
            raise DatasetError(f"run {run_id}: timeline samples but no trace_json")
        return None
    try:
        header = json.loads(header_json)
        uuids, n, present = header["gpu_uuids"], header["n_samples"], header["series"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"run {run_id}: unreadable trace_json: {exc}") from None
    if len(rows) != n * len(uuids):
        raise DatasetError(f"run {run_id}: {len(rows)} timeline samples, trace_json says "
                           f"{n} × {len(uuids)} GPUs")
    rows = sorted(rows, key=lambda r: (r["gpu_index"], r["sample"]))
    per_gpu = [rows[i * n:(i + 1) * n] for i in range(len(uuids))]
    for index, samples in enumerate(per_gpu):
        if [(r["gpu_index"], r["sample"]) for r in samples] != [(index, s) for s in range(n)]:
            raise DatasetError(f"run {run_id}: timeline samples of GPU {index} are not "
                               f"0 … {n - 1}")
    # float32 series as the store keeps them (JSON Lines gives the shortest decimal back)
    series = {name: [[r[name] if name == "throttle_reasons" or r[name] is None
                      else _as_stored([r[name]])[0] for r in samples] for samples in per_gpu]
              for name in TRACE_SERIES if name in present}
    series.setdefault("power_w", [[None] * n for _ in uuids])
    return PowerTrace(sensor=header["sensor"], sample_period_s=header["sample_period_s"],
                      gpu_uuids=uuids, t_s=[r["t_s"] for r in per_gpu[0]] if uuids else [],
                      **series)


class _RunGroups:
    """A table's rows, consumed run by run in the runs table's order (as exported).

    A run's rows must be contiguous; `take` checks it gets as many as the runs
    table says, so rows out of order are caught before that run is written.
    """

    def __init__(self, rows: Iterator[dict[str, Any]], table: str):
        self._rows, self._table = rows, table
        self._next: dict[str, Any] | None = next(self._rows, None)
        self.taken = 0          # rows taken so far: the next run's rows start after them

    def take(self, run_id: str, expected: int) -> list[dict[str, Any]]:
        taken = []
        while self._next is not None and self._next["run_id"] == run_id:
            taken.append(self._next)
            self._next = next(self._rows, None)
        self.taken += len(taken)
        if len(taken) != expected:
            raise DatasetError(
                f"{self._table}: {len(taken)} rows for run {run_id} where the runs table "
                f"says {expected}: rows missing, or not in the runs table's order")
        return taken

    def finish(self) -> None:
        if self._next is not None:
            raise DatasetError(f"{self._table}: rows of run {self._next['run_id']} after "
                               "the last run's (not in the runs table's order, or of no run)")


# ------------------------------------------------------------------ reading


class _Reader:
    """Rows of a table as dicts of typed values, streamed in batches."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.pa = pyarrow_module()
        self.directory, self.fmt = directory, manifest["format"]
        self.manifest = manifest

    def rows(self, name: str, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        table = TABLES[name]
        path = self.directory / self.manifest["tables"][name]["file"]
        read = {"parquet": self._parquet, "csv": self._csv, "jsonl": self._jsonl}[self.fmt]
        try:
            yield from read(path, table, columns)
        except DatasetError:
            raise
        except (OSError, ValueError, TypeError, KeyError, self.pa.ArrowException) as exc:
            raise DatasetError(f"{path}: unreadable {self.fmt}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                               ) from None

    def _parquet(self, path: Path, table: Table,
                 columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        source = pq.ParquetFile(path)
        missing = set(columns) - set(source.schema_arrow.names)
        if missing:
            raise DatasetError(f"{path}: no column(s) {', '.join(sorted(missing))}")
        for batch in source.iter_batches(batch_size=READ_BATCH, columns=list(columns)):
            yield from batch.to_pylist()

    def _csv(self, path: Path, table: Table,
             columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        import pyarrow.csv as pcsv

        # Lists are JSON arrays in one field: read as text, decoded below.
        types = {c: (self.pa.string() if table.column(c).type.startswith("list<")
                     else arrow_type(table.column(c).type)) for c in columns}
        lists = [c for c in columns if table.column(c).type.startswith("list<")]
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=1 << 24),
            convert_options=pcsv.ConvertOptions(
                column_types=types, include_columns=list(columns), null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=False,
                true_values=["true"], false_values=["false"]))
        for batch in reader:
            for row in batch.to_pylist():
                for c in lists:
                    if row[c] is not None:
                        row[c] = json.loads(row[c])
                yield row

    def _jsonl(self, path: Path, table: Table,
               columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}, line {number}: not JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path}, line {number}: not a JSON object")
                missing = [c for c in columns if c not in row]
                if missing:
                    raise DatasetError(f"{path}, line {number}: no {', '.join(missing)}")
                yield {c: row[c] for c in columns}
