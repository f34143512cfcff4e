"""`farmctl import`: a dataset written by `farmctl export` (any format), merged
into this farm's store — a second lab's results next to one's own.

What is merged (docs/dataset.md#import):

- the sweep, by its name and TOML text, unless the store has it already (then
  the store's own TOML is kept); a simulated sweep never merges with a
  measured one of the same name, nor takes a measured run or result (by its
  RunSpec and its result's own word, not only the editable column), nor the
  reverse;
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

Nothing is written before every file is checked against the manifest's SHA-256
and every run is read and re-checked (then read again as it is written, so that
one run's measurements are in memory at a time): a refused import writes
nothing. Results measured at once on one GPU, within the export or against the
store's, are refused: a GPU measures one run at a time, so one of them is
another run's measurement. Importing the same export twice changes nothing; an
import stopped while writing (a database outage) keeps the runs written before
it, and importing again completes it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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
from farm.report.import_overlaps import GpuSpan, gpu_spans, refuse_overlaps
from farm.report.import_rows import (
    first_error,
    is_count,
    json_object,
    request_records,
    run_result,
    shown,
)
from farm.report.recheck import Where, recheck
from farm.simulate import simulated_copy
from farm.spec import SweepSpec
from farm.store import Store
from farm.sweep_file import SpecError, parse_sweep
from farm_contract.records import RunResult
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
        if name in DERIVED_TABLES and name not in tables:   # a 1.0 dataset has none
            continue
        entry = tables.get(name)
        if not isinstance(entry, dict) or not all(k in entry for k in ("file", "rows",
                                                                        "sha256")):
            raise DatasetError(f"{path}: no entry for table {name!r}")
        problem = _entry_problem(entry)
        if problem is not None:
            raise DatasetError(f"{path}: tables.{name}.{problem}")
    return manifest


def _entry_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with a table's manifest entry ("field = value: why"), or None."""
    if not isinstance(entry["file"], str) or not entry["file"]:
        return f"file = {shown(entry['file'])}: not a file name"
    if not isinstance(entry["sha256"], str):
        return f"sha256 = {shown(entry['sha256'])}: not a SHA-256 digest"
    for field in ("rows", "bytes"):
        if field in entry and not is_count(entry[field]):
            return f"{field} = {shown(entry[field])}: not a count"
    return None


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
    Every run is read and re-checked before anything is written: a refused import
    writes nothing.
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
    # Refused before the export is read through: another owner's sweep, or the
    # other kind (simulated, measured) under this name.
    sweep_spec = _sweep_to_record(store, name, sweep["spec_toml"], simulated, identity)
    dataset = _Export(directory, manifest, name, simulated)
    spans, n_requests, without = _check_all(dataset)
    refuse_overlaps(store, spans, {run["run_id"] for run in dataset.runs
                                    if run["result_json"] is not None})

    sweep_recorded = sweep_spec is not None and _record_sweep(
        store, sweep_spec, sweep["spec_toml"], simulated, identity)
    # Provenance of every result this import records: which export, from when.
    origin = (f"export sha256:{sha256(directory / MANIFEST)[:16]} "
              f"(exported {manifest.get('exported_at', '?')})")
    written = _write_all(store, dataset, sweep["id"], origin)
    return ImportSummary(
        sweep=name, fmt=fmt, simulated=simulated, sweep_recorded=sweep_recorded,
        runs_in_export=len(dataset.runs), runs_added=written["added"],
        results_imported=written["imported"], failures_replaced=written["replaced"],
        duplicates=written["duplicates"], runs_without_result=without,
        requests=n_requests, seconds=time.perf_counter() - started)


def _check_all(dataset: _Export) -> tuple[list[GpuSpan], int, int]:
    """Every run read and re-checked, nothing written (DatasetError at the first
    refusal). Returns the results' spans on their GPUs, the request rows read and
    the number of runs without a result."""
    spans: list[GpuSpan] = []
    n_requests = without = 0
    for run in dataset.results():
        n_requests += run.requests
        if run.result is None:
            without += 1
        else:
            spans.extend(gpu_spans(run.result, run.row))
    return spans, n_requests, without


def _write_all(store: Store, dataset: _Export, sid: str, origin: str) -> Counter[str]:
    """Add the runs with a result and record the results (read and re-checked again:
    one run's measurements in memory at a time). Counts added, imported, replaced
    and duplicates."""
    written: Counter[str] = Counter()
    with_result = [spec for run, spec in zip(dataset.runs, dataset.specs, strict=True)
                   if run["result_json"] is not None]
    # Marked dispatched: their results come with them, a live dispatcher must not send them.
    written["added"] = len(store.add_runs(sid, with_result, dispatched=True))
    stored = store.result_statuses([spec.run_id for spec in with_result])
    for run in dataset.results():
        result = run.result
        if result is None:
            continue
        local = stored.get(result.run_id)
        if local == "succeeded" or (local == "failed" and result.status == "failed"):
            written["duplicates"] += 1
            continue
        outcome = store.record_result(result, imported_from=origin)
        if outcome in ("stored", "replaced"):
            written["imported"] += 1
            written["replaced"] += outcome == "replaced"
        else:       # "duplicate": recorded meanwhile (a recorder, another import)
            written["duplicates"] += 1
    return written


class _CheckedRun(NamedTuple):
    """One run of the export as the import takes it."""
    row: str                    # where it is: "<runs file> row <n>"
    spec: RunSpec
    result: RunResult | None    # re-checked from its raw measurements; None: no result
    requests: int               # its request rows


class _Export:
    """An export's runs, checked row by row; `results()` reads them through (each
    call again, so that only one run's requests and samples are in memory)."""

    def __init__(self, directory: Path, manifest: dict[str, Any], sweep: str,
                 simulated: bool):
        self.reader = _Reader(directory, manifest)
        self.files = {t: manifest["tables"][t]["file"]
                      for t in ("runs", "requests", "timelines")}
        self.simulated = simulated
        self.runs = list(self.reader.rows("runs", RUN_COLUMNS))
        if len(self.runs) != manifest["tables"]["runs"]["rows"]:
            raise DatasetError(f"runs: {len(self.runs)} rows, the manifest says "
                               f"{manifest['tables']['runs']['rows']}")
        self.specs = [_run_spec(run, self.at(row, run), sweep, simulated)
                      for row, run in enumerate(self.runs, start=1)]
        _refuse_repeated_runs(self.specs, self.files["runs"])

    def at(self, row: int, run: dict[str, Any]) -> str:
        """Where a run is, for naming it in a refusal."""
        return f"{self.files['runs']} row {row} (run {run['run_id']})"

    def row(self, row: int) -> str:
        return f"{self.files['runs']} row {row}"

    def results(self) -> Iterator[_CheckedRun]:
        """Each run with its result rebuilt from its rows and re-checked, in order."""
        requests = _RunGroups(self.reader.rows("requests", REQUEST_COLUMNS), "requests")
        samples = _RunGroups(self.reader.rows("timelines", TIMELINE_COLUMNS), "timelines")
        for row, (run, spec) in enumerate(zip(self.runs, self.specs, strict=True), start=1):
            first_request, first_sample = requests.taken + 1, samples.taken + 1
            request_rows = requests.take(run["run_id"], run["num_requests"])
            sample_rows = samples.take(run["run_id"], run["num_timeline_samples"])
            if run["result_json"] is None:
                yield _CheckedRun(self.row(row), spec, None, len(request_rows))
                continue
            where = Where(self.files["runs"], row, self.files["timelines"], first_sample)
            result = run_result(run, where, request_records(run["run_id"], request_rows,
                                                       self.files["requests"], first_request),
                                 sample_rows)
            _check_simulated(result, self.simulated, self.at(row, run))
            # Derived figures and the verdict again from the raw measurements, never as
            # exported; impossible values refused (farm/report/recheck.py).
            yield _CheckedRun(self.row(row), spec, recheck(result, spec, where), len(request_rows))
        requests.finish()
        samples.finish()


# ------------------------------------------------------------------ checks


def _run_spec(run: dict[str, Any], at: str, sweep: str, simulated: bool) -> RunSpec:
    run_id = run["run_id"]
    if run["sweep"] != sweep:
        raise DatasetError(f"{at}: of sweep {run['sweep']!r}, not {sweep!r}")
    for field in ("num_requests", "num_timeline_samples"):
        if not is_count(run[field]):
            raise DatasetError(f"{at} {field} = {shown(run[field])}: not a number of rows")
    if run["simulated"] is not None and bool(run["simulated"]) != simulated:
        raise DatasetError(f"{at}: simulated={run['simulated']} in a "
                           f"{_kind(simulated)} sweep")
    try:
        spec = RunSpec.model_validate_json(run["spec_json"] or "")
    except ValidationError as exc:
        raise DatasetError(f"{at}: a RunSpec this farm cannot read: "
                           f"{first_error(exc)}") from None
    if spec.run_id != run_id:
        raise DatasetError(f"{at}: its RunSpec hashes to {spec.run_id}: the spec "
                           "was changed, or comes from a farm with another run-id rule")
    if spec.sweep != sweep:
        raise DatasetError(f"{at}: its RunSpec names sweep {spec.sweep!r}")
    # The column above is editable; the spec is what the run id hashes.
    if spec.simulated != simulated:
        raise DatasetError(f"{at} spec_json: a {_kind(spec.simulated)} run in a "
                           f"{_kind(simulated)} sweep: simulated and measured results never "
                           "share a sweep")
    return spec


def _check_simulated(result: RunResult, simulated: bool, at: str) -> None:
    """A result's own word on being simulated, as the store records it, must match
    its sweep's. A failure carries no figures (one the worker could not read says
    measured whatever the run)."""
    said = result.simulated or result.engine.simulated or result.measurement.simulated
    if result.status == "succeeded" and said != simulated:
        raise DatasetError(f"{at}, result_json simulated: a {_kind(said)} result in a "
                           f"{_kind(simulated)} sweep: simulated and measured results "
                           "never share a sweep")


def _refuse_repeated_runs(specs: list[RunSpec], runs_file: str) -> None:
    first: dict[str, int] = {}
    for row, spec in enumerate(specs, start=1):
        if spec.run_id in first:
            raise DatasetError(f"{runs_file} row {row}: run {spec.run_id} again (row "
                               f"{first[spec.run_id]}): each run is listed once")
        first[spec.run_id] = row


def _kind(simulated: bool) -> str:
    return "simulated" if simulated else "measured"


# ------------------------------------------------------------------ the sweep


class _RecordedMeanwhile(Exception):
    """The sweep was recorded by someone else after the import found none."""


def _sweep_to_record(store: Store, name: str, toml: str, simulated: bool,
                     identity: Identity) -> SweepSpec | None:
    """The sweep to record, None when the store has it (checked: `identity` may add
    to it, and it is of the export's kind)."""
    existing = store.find_sweep(name)
    if existing is not None:
        _check_stored_sweep(existing, name, simulated, identity)
        return None
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
    return spec


def _check_stored_sweep(existing: Any, name: str, simulated: bool,
                        identity: Identity) -> None:
    require_may_change(identity, name, existing.owner, "import results into")
    if bool(existing.simulated) != simulated:
        raise DatasetError(
            f"sweep {name!r} is {_kind(bool(existing.simulated))} in this store and "
            f"{_kind(simulated)} in the export: simulated and measured results never "
            "share a sweep")


def _record_sweep(store: Store, spec: SweepSpec, toml: str, simulated: bool,
                  identity: Identity) -> bool:
    """Record the sweep, owned by `identity`; True when recorded. One recorded since
    `_sweep_to_record` looked (an enqueue, another import) keeps its owner and TOML,
    and is checked as a stored one."""
    def admit(stored: Any) -> tuple[str | None, int | None]:
        if stored is not None:
            raise _RecordedMeanwhile
        return identity.user or None, None

    try:
        store.record_sweep(spec, toml, admit=admit)
    except _RecordedMeanwhile:
        existing = store.find_sweep(spec.name)
        if existing is None:
            raise DatasetError(f"sweep {spec.name!r} was recorded and removed during the "
                               "import: import again") from None
        _check_stored_sweep(existing, spec.name, simulated, identity)
        return False
    return True


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
                row = json_object(line, columns, f"{path}, line {number}")
                yield {c: row[c] for c in columns}
