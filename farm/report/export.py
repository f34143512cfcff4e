"""`farmctl export`: one sweep as an open, versioned dataset (docs/dataset.md).

Five tables — runs, run_points, requests, timelines, windows — written as one
file each in Parquet, CSV or JSON Lines, then `manifest.json` (schema version,
provenance, row counts, checksums and every column with its unit). The schema
is `farm.report.dataset`; this module only fills it (the runs table's values are
declared there, with its columns: `runs_row`).

Streaming: runs are read and written one at a time, and each table is written
in batches of about `BATCH_ROWS` rows, so a sweep of a million requests never
sits in memory as Python objects at once (one run's requests at most). The
manifest is written last: a directory without one is an unfinished export.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from farm.report.dataset import (
    DATASET_KIND,
    FORMATS,
    MANIFEST,
    POINT_COLUMN_NAMES,
    REQUESTS,
    RUN_POINTS,
    SCHEMA_VERSION,
    TABLES,
    TIMELINES,
    TRACE_SERIES,
    DatasetError,
    RunSource,
    Table,
    arrow_schema,
    file_name,
    json_text,
    pyarrow_module,
    runs_row,
    tuning_columns,
)
from farm.report.points import SweepNotFound
from farm.store import Store
from farm.store.models import unpack_f32
from farm_contract.figures import flat_values
from farm_contract.records import (
    RESULT_SCHEMA_VERSION,
    LoadPointResult,
    PowerTrace,
    load_point_columns,
)
from farm_contract.runspec import RunSpec

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the sweep, format, folder, rows per table and seconds taken."""
    sweep: str
    sweep_id: str
    fmt: str
    out_dir: Path
    simulated: bool
    rows: dict[str, int]
    seconds: float


def default_out_dir(sweep: str, fmt: str) -> Path:
    """The folder an export goes to when none is given: farm-export-SWEEP-FMT."""
    return Path(f"farm-export-{sweep}-{fmt}")


def farm_version() -> str:
    """The installed farm package's version, or "unknown" when it has no metadata."""
    try:
        return metadata.version("farm")
    except metadata.PackageNotFoundError:
        return "unknown"


def export_sweep(store: Store, sweep: str, fmt: str, out_dir: Path | None = None,
                 force: bool = False) -> ExportSummary:
    """Write the sweep (name or id) as a dataset in `out_dir`; returns what was written."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    row = store.find_sweep(sweep)
    if row is None:
        raise SweepNotFound(f"no sweep named or with id {sweep!r} in the store")
    out = Path(out_dir) if out_dir is not None else default_out_dir(row.name, fmt)
    _prepare(out, force, fmt)
    writers = {name: TableWriter(table, out / file_name(name, fmt), fmt)
               for name, table in TABLES.items()}
    try:
        for run in store.runs_of(row.id):
            _export_run(store, row.name, run, writers)
        writers["fits"].add_rows(_fit_rows(store, row.id))
        writers["repetitions"].add_rows(_repetition_rows(store, row.id))
    finally:
        for writer in writers.values():
            writer.close()
    files = {name: {"file": writer.path.name, "rows": writer.rows,
                    "bytes": writer.path.stat().st_size, "sha256": sha256(writer.path)}
             for name, writer in writers.items()}
    manifest = {
        "dataset": DATASET_KIND,
        "dataset_schema_version": SCHEMA_VERSION,
        "farm_version": farm_version(),
        "result_schema_version": RESULT_SCHEMA_VERSION,
        "exported_at": _iso(datetime.now(UTC)),
        "format": fmt,
        "simulated": bool(row.simulated),
        "sweep": {"name": row.name, "id": row.id, "simulated": bool(row.simulated),
                  "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
                  "spec_toml": row.spec_toml},
        "tables": {name: {**files[name], "row": table.row, "description": table.description,
                          "columns": [c.as_manifest() for c in table.columns]}
                   for name, table in TABLES.items()},
    }
    temp = out / (MANIFEST + ".tmp")
    temp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    temp.replace(out / MANIFEST)
    return ExportSummary(sweep=row.name, sweep_id=row.id, fmt=fmt, out_dir=out,
                         simulated=bool(row.simulated),
                         rows={name: writer.rows for name, writer in writers.items()},
                         seconds=time.perf_counter() - started)


def _prepare(out: Path, force: bool, fmt: str) -> None:
    """Make `out` ready: new or empty; with `force`, a previous export's files are
    removed — only those its manifest lists, never a file the farm did not write."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise DatasetError(f"{out} exists and is not empty (--force overwrites an export)")
        ours = _previous_export(out)
        writes = {MANIFEST, MANIFEST + ".tmp", *(file_name(t, fmt) for t in TABLES)}
        in_the_way = sorted(n for n in writes - ours if (out / n).exists())
        if in_the_way:
            raise DatasetError(
                f"{out}: {', '.join(in_the_way)} would be overwritten, and no export "
                "manifest there lists them: --force replaces only the files of a previous "
                "export; move them (or pick another --out) first")
        # The manifest first, so no stale one survives a failure halfway.
        for name in sorted(ours, key=lambda n: n != MANIFEST):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _previous_export(out: Path) -> set[str]:
    """The files the export in `out` wrote, by its manifest (with the manifest): only
    plain names an export can write, so an edited manifest cannot name others."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        listed = {str(entry["file"]) for entry in manifest["tables"].values()}
        if manifest.get("dataset") != DATASET_KIND:
            return set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    possible = {file_name(t, f) for t in TABLES for f in FORMATS}
    return (listed & possible) | {MANIFEST}


def sha256(path: Path) -> str:
    """The hex SHA-256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------ one run


def _export_run(store: Store, sweep: str, run: dict[str, Any],
                writers: dict[str, TableWriter]) -> None:
    run_id = run["id"]
    spec = RunSpec.model_validate_json(run["spec_json"])
    result = store.run_result(run_id, requests=False, trace=True)
    flat = store.result_for(run_id) if result is not None else None
    requests = store.request_columns(run_id)
    trace = result.trace if result is not None else None
    n_samples = len(trace.t_s) * len(trace.gpu_uuids) if trace is not None else 0
    row = runs_row(RunSource(sweep=sweep, run=run, spec=spec, result=result,
                             figures=flat or {}, n_requests=len(requests["sent_s"]),
                             n_samples=n_samples))
    writers["runs"].add_rows([row])
    if result is None:
        return
    dims = {c.name: row[c.name] for c in RUN_POINTS.columns if c.name in _POINT_DIMS}
    writers["run_points"].add_rows([_point_row(run_id, dims, lp)
                                    for lp in result.load_points])
    writers["windows"].add_rows([_window_row(run_id, i, w)
                                 for i, w in enumerate(result.windows)])
    if trace is not None and n_samples:
        writers["timelines"].add_columns(_timeline_columns(run_id, trace))
    if requests["sent_s"]:
        writers["requests"].add_columns(_request_columns(run_id, requests))


FIT_FIGURES = {"energy_per_output_token_j": "j", "energy_per_output_token_net_j": "j",
               "avg_power_w": "w", "avg_power_net_w": "w"}


def _repetition_rows(store: Store, sid: str) -> list[dict[str, Any]]:
    """The repetitions rows: each configuration's adaptive decision per load point
    (farm.adaptive.sweep_summary); none for a fixed number of repetitions."""
    from farm import adaptive

    rows, name = [], store.find_sweep(sid).name
    for config in adaptive.sweep_summary(store, sid):
        run, d = config.run, config.decision
        hw, workload = run.hardware, run.workload
        common = {
            "sweep": name, "model_id": run.model.id,
            "backend": hw.backend, "gpu_model": hw.gpu_model, "gpu_count": hw.gpu_count,
            **tuning_columns(hw.power_limit_w, hw.sm_clock_mhz),
            "engine_kind": run.engine.kind, "engine_args_json": json_text(run.engine.args),
            "scenario_name": run.scenario.name, "scenario_kind": run.scenario.kind,
            "input_tokens": workload.input_tokens, "output_tokens": workload.output_tokens,
            "decoding": workload.decoding.label, "first_run_id": run.run_id,
            "figure": d.figure, "runs": d.runs, "usable": d.usable,
            "target_ci_half_width_pct": d.target_pct, "max_runs": d.max_runs,
            "verdict": d.verdict}
        # a configuration without a usable run has no load point to say anything of
        for point in d.points or (None,):
            est = point.estimate if point is not None else None
            rows.append({**common,
                         "load_point": point.index if point else None,
                         "load_kind": point.load_kind if point else None,
                         "load_value": point.load_value if point else None,
                         "n": point.n if point else 0,
                         "figure_mean_j": est.mean if est is not None else None,
                         "ci_half_width_pct": point.half_width_pct if point else None})
    return [{name: row.get(name) for name in TABLES["repetitions"].names} for row in rows]


def _fit_rows(store: Store, sid: str) -> list[dict[str, Any]]:
    """The fits rows: each configuration's fitted curve of each figure, as the report
    fits it (farm/report/fits.py), from the sweep's run points."""
    from farm.report.fits import MODEL, fitted_curves
    from farm.report.points import points_from_rows

    points = points_from_rows(store.result_rows(sid))
    rows = []
    for figure, token in FIT_FIGURES.items():
        for curve in fitted_curves(points, figure):
            p, fit = curve.first, curve.fit
            args = {k: v for k, v in p.engine_args if f"engine.{k}" != curve.x_axis}
            row: dict[str, Any] = {
                "sweep": p.sweep, "model_id": p.model, "backend": p.backend,
                "gpu_model": p.gpu_model, "gpu_count": p.gpu_count,
                **tuning_columns(p.power_limit_w, p.sm_clock_mhz),
                "engine_kind": p.engine,
                "scenario_name": p.scenario, "scenario_kind": p.scenario_kind,
                "input_tokens": p.input_tokens, "output_tokens": p.output_tokens,
                "decoding": p.decoding, "engine_args_json": json_text(args), "figure": figure,
                "x_axis": curve.x_axis, "model": MODEL, "n_points": fit.n_points,
                "n_batch_sizes": fit.n_batch_sizes, "fitted": fit.ok,
                "no_fit_reason": fit.reason, "r2": fit.r2}
            values = fit.params or {}
            errors = fit.stderr or {}
            row.update({"k": values.get("k"), "k_stderr": errors.get("k"),
                        "x0_log2": values.get("x0"), "x0_stderr_log2": errors.get("x0"),
                        f"l_{token}": values.get("L"), f"l_stderr_{token}": errors.get("L"),
                        f"y0_{token}": values.get("y0"), f"y0_stderr_{token}": errors.get("y0"),
                        f"rmse_{token}": fit.rmse})
            # The other unit's columns are null: J columns on a power row, W on an energy one.
            rows.append({name: row.get(name) for name in TABLES["fits"].names})
    return rows


_POINT_DIMS = ("sweep", "repetition", "model_id", "backend", "gpu_model", "gpu_count",
               "power_limit_w", "sm_clock_mhz", "power_limit_default", "sm_clock_default",
               "engine_kind", "engine_version",
               "engine_args_json", "scenario_name", "scenario_kind", "input_tokens",
               "output_tokens", "decoding", "simulated", "status", "valid", "invalid_reasons")
_POINT_FIGURES = load_point_columns()


def _point_row(run_id: str, dims: dict[str, Any], lp: LoadPointResult) -> dict[str, Any]:
    """The run_points row of a load point: every flat figure of the record (named
    as dataset.POINT_COLUMN_NAMES says), the load split by kind, the notes."""
    figures = {POINT_COLUMN_NAMES.get(name, name): value
               for name, value in flat_values(lp, _POINT_FIGURES).items()}
    return {"run_id": run_id, "load_point": lp.index, **dims, **figures,
            "concurrency": round(lp.value) if lp.kind == "concurrency" else None,
            "request_rate_rps": lp.value if lp.kind == "request_rate" else None,
            "batch_prompts": round(lp.value) if lp.kind == "batch" else None,
            "notes": list(lp.notes) or None}


def _window_row(run_id: str, index: int, window: Any) -> dict[str, Any]:
    # The extra energy sources' figures (EnergyWindow.sources) travel in the run's
    # result_json; the windows table has no column for them yet.
    return {"run_id": run_id, "window_index": index, **window.model_dump(exclude={"sources"}),
            "per_gpu_energy_j": list(window.per_gpu_energy_j) or None}


def _timeline_columns(run_id: str, trace: PowerTrace) -> dict[str, Any]:
    n = len(trace.t_s)
    columns: dict[str, list[Any]] = {name: [] for name in TIMELINES.names}
    for index, uuid in enumerate(trace.gpu_uuids):
        columns["run_id"] += [run_id] * n
        columns["gpu_index"] += [index] * n
        columns["gpu_uuid"] += [uuid] * n
        columns["sample"] += range(n)
        columns["t_s"] += trace.t_s
        for name in TRACE_SERIES:
            series = getattr(trace, name)
            values = series[index] if series is not None else []
            # A series shorter than the timeline (or none at all): the rest is missing.
            columns[name] += list(values[:n]) + [None] * (n - len(values[:n]))
    return columns


def _request_columns(run_id: str, stored: dict[str, list[Any]]) -> dict[str, Any]:
    n = len(stored["sent_s"])
    columns = {name: stored[name] for name in REQUESTS.names
               if name in stored and name != "itl_s"}
    columns.update(run_id=[run_id] * n, index=stored["idx"], itl_s=_itl_array(stored["itl_s"]))
    return columns


def _itl_array(blobs: list[bytes | None]) -> Any:
    """list<float32> straight from the stored float32 blobs (no Python float per token)."""
    pa = pyarrow_module()
    if sys.byteorder != "little":
        return pa.array([unpack_f32(b) for b in blobs], pa.list_(pa.float32()))
    offsets = [0]
    for blob in blobs:
        offsets.append(offsets[-1] + (len(blob) // 4 if blob else 0))
    if offsets[-1] >= 2**31:
        raise DatasetError("a run with 2**31 inter-token gaps or more cannot be exported")
    values = pa.Array.from_buffers(pa.float32(), offsets[-1],
                                   [None, pa.py_buffer(b"".join(b for b in blobs if b))])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


# ------------------------------------------------------------------ writing


class TableWriter:
    """One table's file: rows come in per run, go out in batches of ~BATCH_ROWS."""

    def __init__(self, table: Table, path: Path, fmt: str):
        self.pa = pyarrow_module()
        self.table, self.path, self.fmt = table, path, fmt
        self.schema = arrow_schema(table)
        self.rows = 0
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._sink: Any = None
        self._names = set(table.names)

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        """Add rows (dicts with exactly the table's columns); RuntimeError if they differ."""
        if not rows:
            return
        for row in rows:
            if row.keys() != self._names:
                raise RuntimeError(f"{self.table.name}: row columns differ from the schema: "
                                   f"{sorted(row.keys() ^ self._names)}")
        self._add(self.pa.RecordBatch.from_pylist(rows, schema=self.schema))

    def add_columns(self, columns: dict[str, Any]) -> None:
        """Add a batch given as whole columns (lists or Arrow arrays), exactly the table's."""
        if columns.keys() != self._names:
            raise RuntimeError(f"{self.table.name}: columns differ from the schema: "
                               f"{sorted(columns.keys() ^ self._names)}")
        arrays = [columns[f.name] if isinstance(columns[f.name], self.pa.Array)
                  else self.pa.array(columns[f.name], type=f.type) for f in self.schema]
        self._add(self.pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _add(self, batch: Any) -> None:
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        table = self.pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending, self._pending_rows = [], 0
        self._write(table)

    def close(self) -> None:
        """Write what is pending and close the file; an empty table still gets its file."""
        if self._pending or self._sink is None:
            self._flush()       # an empty table still gets its file (and header)
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _write(self, table: Any) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._sink is None:
                self._sink = pq.ParquetWriter(self.path, self.schema, compression="zstd")
            self._sink.write_table(table)   # one row group per batch
        elif self.fmt == "csv":
            import pyarrow.csv as pcsv

            text = csv_table(self.table, table)
            if self._sink is None:
                self._sink = pcsv.CSVWriter(self.path, text.schema)
            self._sink.write_table(text)
        else:
            if self._sink is None:
                self._sink = self.path.open("w", encoding="utf-8", newline="\n")
            write_jsonl(self._sink, self.table, table)


# ------------------------------------------------------------- text formats
# CSV and JSON Lines: float32 values are written as the shortest decimal that
# reads back as the same float32; timestamps as ISO 8601 UTC ("…Z"); in CSV a
# list is a JSON array in one field, and null is an empty unquoted field.


def _text_column(type_: str, array: Any, pa: Any) -> Any:
    if type_ == "float32":
        return array.cast(pa.string()).cast(pa.float64())
    if type_ == "timestamp":
        return pa.array([_iso(v) for v in array.to_pylist()], pa.string())
    return array


def _text_table(table: Table, data: Any) -> dict[str, Any]:
    pa = pyarrow_module()
    return {c.name: _text_column(c.type, data.column(c.name).combine_chunks(), pa)
            for c in table.columns}


def _json_list_text(type_: str, array: Any) -> list[str | None]:
    """Each list as the text of a JSON array (None for null). Lists of finite numbers
    with no null item are formatted by Arrow (shortest round-trip decimals), not per
    value in Python: a million requests' inter-token gaps take seconds, not minutes."""
    pa = pyarrow_module()
    import pyarrow.compute as pc

    values = array.values
    if type_ != "list<string>" and values.null_count == 0 and (
            type_ == "list<int64>" or pc.all(pc.is_finite(values)).as_py() is not False):
        strings = values.cast(pa.string())
        joined = pc.binary_join(
            pa.ListArray.from_arrays(array.offsets, strings, mask=array.is_null()), ",")
        return pc.binary_join_element_wise("[", joined, "]", "").to_pylist()
    if type_ == "list<float32>":        # the shortest decimal of each float32
        values = array.values.cast(pa.string()).cast(pa.float64())
        array = pa.ListArray.from_arrays(array.offsets, values, mask=array.is_null())
    return [None if v is None else json.dumps(v, separators=(",", ":"), ensure_ascii=False)
            for v in array.to_pylist()]


def csv_table(table: Table, data: Any) -> Any:
    """`data` as CSV text columns: float32 as shortest decimals, lists as JSON arrays."""
    pa = pyarrow_module()
    columns = _text_table(table, data)
    for c in table.columns:
        if c.type.startswith("list<"):
            columns[c.name] = pa.array(_json_list_text(c.type, columns[c.name]), pa.string())
    return pa.table(columns)


def write_jsonl(sink: Any, table: Table, data: Any) -> None:
    """One JSON object per row; list columns are spliced in as ready JSON text."""
    pa = pyarrow_module()
    columns = _text_table(table, data)
    lists = {c.name: _json_list_text(c.type, columns[c.name])
             for c in table.columns if c.type.startswith("list<")}
    rows = pa.table({n: a for n, a in columns.items() if n not in lists}).to_pylist()
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    # A placeholder per list column, replaced by the list's text; a row where a
    # placeholder is not found exactly once (a value equal to one) is encoded whole.
    marks = {name: f"\x00farm-list-{i}\x00" for i, name in enumerate(lists)}
    encoded = {name: encode(mark) for name, mark in marks.items()}
    names = table.names
    out = []
    for i, row in enumerate(rows):
        line = encode({n: marks[n] if n in lists else row[n] for n in names})
        if all(line.count(encoded[name]) == 1 for name in lists):
            for name, texts in lists.items():
                line = line.replace(encoded[name], texts[i] or "null", 1)
        else:
            line = encode({n: json.loads(lists[n][i] or "null") if n in lists else row[n]
                           for n in names})
        out.append(line + "\n")
    sink.writelines(out)
