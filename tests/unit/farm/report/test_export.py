"""The open dataset: `farmctl export` / `farmctl import` (docs/dataset.md).

Round trips in every format, on the report fixture (the farm's own simulated
runs) and on hand-made edge cases (missing series and samples, null energy,
failed runs, runs without a result, empty strings); import policy and
idempotency; SQLite and PostgreSQL; the schema's units; docs vs code; bad input.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from farm.cli import ExitCode
from farm.report import dataset, export
from farm.report.dataset import (
    PLAIN_UNITS,
    TABLES,
    UNIT_TOKENS,
    DatasetError,
    markdown_columns,
)
from farm.report.export import export_sweep
from farm.report.importer import import_dataset
from farm.report.recheck import Where, recheck
from farm.store import Store
from farm_contract.records import PowerTrace, RequestRecord, RunResult, load_point_columns
from farm_contract.runspec import RunSpec
from tests import factories
from tests.paths import ROOT

FORMATS = ("parquet", "csv", "jsonl")


def farmctl(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "farm.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


def result_of(run: RunSpec, **kwargs) -> RunResult:
    """factories.result at a time of its own (by its run id): a GPU measures one run at
    a time, and an import refuses two runs measured at once on one GPU."""
    kwargs.setdefault("started_at",
                      factories.T0 + timedelta(minutes=int(run.run_id, 16) % 10**6))
    return factories.result(run, **kwargs)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def expected_rows(store: Store, sweep_id: str) -> dict[str, int]:
    """Rows each table of an export of the sweep must have, counted in the store."""
    rows = {name: 0 for name in TABLES}
    for run in store.runs_of(sweep_id):
        rows["runs"] += 1
        result = store.run_result(run["id"])
        if result is None:
            continue
        rows["run_points"] += len(result.load_points)
        rows["windows"] += len(result.windows)
        rows["requests"] += len(result.requests)
        if result.trace is not None:
            rows["timelines"] += len(result.trace.t_s) * len(result.trace.gpu_uuids)
    # fits: a row per configuration with ≥ 2 batch sizes and figure (farm/report/fits.py)
    from farm.report.export import FIT_FIGURES
    from farm.report.fits import fitted_curves
    from farm.report.points import points_from_rows

    points = points_from_rows(store.result_rows(sweep_id))
    rows["fits"] = sum(len(fitted_curves(points, f)) for f in FIT_FIGURES)
    # repetitions: a row per load point of each adaptive configuration (one without any)
    from farm import adaptive

    rows["repetitions"] = sum(max(1, len(c.decision.points))
                              for c in adaptive.sweep_summary(store, sweep_id))
    return rows


def rederived(result, spec):
    """What an import stores of `result`: its figures and verdict derived again from
    its raw measurements (farm/report/recheck.py)."""
    return recheck(result, spec, Where("runs", 0, "timelines", 0))


# Figures an import derives again rather than copies (and its own provenance column).
DERIVED_KEYS = ({c.name for c in load_point_columns()} - {"kind", "value", "duration_s"}
                | {"valid", "invalid_reasons", "idle_power_w", "idle_ctx_power_w",
                   "imported_from"})


def assert_same_results(src: Store, dst: Store, sweep: str) -> None:
    """Same runs with results, same raw measurements (requests, traces, windows' counter
    energy: exact, float32 series as stored), and per run the RunResult the import
    derives from them."""
    sid = src.find_sweep(sweep).id
    assert dst.find_sweep(sweep) is not None
    with_result = {run["id"] for run in src.runs_of(sid)
                   if src.run_result(run["id"], requests=False, trace=False)}
    assert {run["id"] for run in dst.runs_of(sid)} == with_result
    drop = DERIVED_KEYS | {f"{k}_{p}" for k in ("ttft", "tpot", "itl", "e2e", "lateness")
                           for p in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")}
    dst_rows, src_rows = dst.result_rows(sid), [row for row in src.result_rows(sid)
                                                if row["run_id"] in with_result]
    assert [{k: v for k, v in row.items() if k not in drop} for row in dst_rows] == [
        {k: v for k, v in row.items() if k not in drop} for row in src_rows]
    specs = {run["id"]: RunSpec.model_validate_json(run["spec_json"])
             for run in src.runs_of(sid)}
    for run_id in with_result:
        assert dst.run_result(run_id) == rederived(src.run_result(run_id), specs[run_id]), run_id
        assert dst.requests_for(run_id) == src.requests_for(run_id)
        assert dst.trace_for(run_id) == src.trace_for(run_id)


# ------------------------------------------------------------ report fixture


@pytest.fixture(scope="module")
def exports(report_store, tmp_path_factory):
    """The report fixture's sweep exported in every format: {format: (dir, summary)}."""
    url, name = report_store
    out = {}
    with Store.open(url) as store:
        for fmt in FORMATS:
            target = tmp_path_factory.mktemp("export") / fmt
            out[fmt] = (target, export_sweep(store, name, fmt, target))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_of_the_report_sweep(report_store, exports, tmp_path, fmt):
    url, name = report_store
    directory, summary = exports[fmt]
    assert summary.simulated and summary.sweep == name
    with Store.open(url) as src, Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        sid = src.find_sweep(name).id
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["format"] == fmt and manifest["simulated"] is True
        assert manifest["dataset_schema_version"] == dataset.SCHEMA_VERSION
        assert manifest["sweep"]["spec_toml"] == src.find_sweep(name).spec_toml
        rows = {table: entry["rows"] for table, entry in manifest["tables"].items()}
        assert rows == expected_rows(src, sid) == summary.rows
        assert rows["runs"] == len(src.runs_of(sid)) and rows["requests"] > 0

        first = import_dataset(dst, directory)
        assert (first.sweep_recorded, first.runs_added, first.results_imported,
                first.duplicates) == (True, rows["runs"], rows["runs"], 0)
        assert first.requests == rows["requests"]
        assert_same_results(src, dst, name)
        assert dst.find_sweep(name).spec_toml == src.find_sweep(name).spec_toml
        assert dst.find_sweep(name).simulated
        counts = dst.counts()
        assert counts == src.counts()

        again = import_dataset(dst, directory)          # twice: nothing changes
        assert (again.sweep_recorded, again.runs_added, again.results_imported,
                again.duplicates) == (False, 0, 0, rows["runs"])
        assert dst.counts() == counts
        assert_same_results(src, dst, name)


def test_every_row_is_labelled_simulated(exports):
    directory, _ = exports["parquet"]
    for table in ("runs", "run_points"):
        values = pq.read_table(directory / f"{table}.parquet", columns=["simulated"])
        assert set(values.column("simulated").to_pylist()) == {True}


def test_files_match_the_schema_and_the_manifest(exports):
    for fmt, (directory, _) in exports.items():
        manifest = json.loads((directory / "manifest.json").read_text())
        for name, table in TABLES.items():
            entry = manifest["tables"][name]
            assert entry["columns"] == [c.as_manifest() for c in table.columns]
            assert entry["sha256"] == export.sha256(directory / entry["file"])
            path = directory / entry["file"]
            if fmt == "parquet":
                assert pq.read_schema(path).names == table.names
                assert pq.read_schema(path) == dataset.arrow_schema(table)
            elif fmt == "csv":
                header = path.read_text().splitlines()[0]
                assert header == ",".join(f'"{n}"' for n in table.names)
            else:       # JSON lines have no header: an empty table is an empty file
                lines = path.read_text().splitlines()
                assert len(lines) == entry["rows"]
                if lines:
                    assert list(json.loads(lines[0])) == table.names


def test_nulls_stay_null_in_every_format(exports):
    """The fixture's runs have no CodeCarbon: host energy and carbon are null, never 0."""
    rows = {}
    directory, _ = exports["parquet"]
    rows["parquet"] = pq.read_table(directory / "run_points.parquet").to_pylist()[0]
    directory, _ = exports["jsonl"]
    rows["jsonl"] = json.loads((directory / "run_points.jsonl").read_text().splitlines()[0])
    for fmt, row in rows.items():
        assert row["gco2e_per_1k_tokens"] is None, fmt
        assert row["energy_j"] > 0, fmt
    directory, _ = exports["csv"]
    with (directory / "runs.csv").open(newline="") as f:
        names, first = list(csv.reader(f))[:2]
    assert first[names.index("cpu_energy_j")] == ""
    line = (directory / "runs.csv").read_text().splitlines()[1]
    assert ",," in line and ',"",' not in line   # null: an empty, unquoted field


def test_text_formats_write_float32_as_its_shortest_decimal(exports):
    directory, _ = exports["jsonl"]
    sample = json.loads((directory / "timelines.jsonl").read_text().splitlines()[0])
    assert len(repr(sample["power_w"])) <= 12         # e.g. 77.75, not 77.75000762939453
    directory, _ = exports["csv"]
    line = (directory / "requests.csv").read_text().splitlines()[1]
    itl = json.loads(re.search(r'"(\[[^\]]*\])"', line).group(1))
    assert itl and all(len(repr(v)) <= 12 for v in itl)


# ------------------------------------------------------------ edge cases


@pytest.fixture
def edge_store(tmp_path):
    """A small sweep with results of every awkward shape, and one run without a result."""
    spec, toml, runs = factories.sweep()
    store = Store.open(sqlite_url(tmp_path / "edge.db"), upgrade=True)
    sid = store.record_sweep(spec, toml)
    store.add_runs(sid, runs)
    two_gpus = result_of(runs[0], n_gpus=2, extra_series=False)
    requests = [r.model_copy(update={"error": ""}) if r.index == 2 else r
                for r in two_gpus.requests]
    store.record_result(two_gpus.model_copy(update={"requests": requests}))
    store.record_result(result_of(runs[1]).model_copy(update={"trace": PowerTrace(
        sensor="nvml.field.power_instant", sample_period_s=0.05,
        gpu_uuids=["GPU-a", "GPU-b"], t_s=[], power_w=[[], []],
        memory_power_w=[[], []], temperature_c=None, sm_clock_mhz=None,
        throttle_reasons=[[], []])}))
    store.record_result(result_of(runs[2]).model_copy(update={"trace": PowerTrace(
        sensor="sim.power", sample_period_s=0.1, gpu_uuids=["GPU-a"], t_s=[0.0, 0.1],
        power_w=[[None, None]], memory_power_w=[[None, None]], temperature_c=None,
        sm_clock_mhz=[[None, 1410.0]], throttle_reasons=[[None, (1 << 64) - 2]])}))
    store.record_result(result_of(runs[3], status="failed", attempt=2))
    store.record_result(result_of(runs[4], steady_energy_j=[None, 120.0],
                                         failing_check="power_range"))
    store.record_result(result_of(runs[5], with_host_energy=False).model_copy(
        update={"trace": None, "requests": [RequestRecord(
            load_point=0, index=0, sent_s=0.5, itl_s=[], ok=False, error="refused")]}))
    store.record_result(result_of(runs[6], per_point=1))
    # runs[7] stays queued: no result.
    yield store, spec.name, runs
    store.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_edge_cases_round_trip(edge_store, tmp_path, fmt):
    src, name, runs = edge_store
    summary = export_sweep(src, name, fmt, tmp_path / "x")
    assert summary.rows["runs"] == 8
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        done = import_dataset(dst, tmp_path / "x")
        assert (done.runs_added, done.results_imported, done.runs_without_result) == (7, 7, 1)
        assert_same_results(src, dst, name)
        assert dst.requests_for(runs[0].run_id)[2].error == ""     # "" is not null
        assert dst.run_statuses([runs[3].run_id, runs[7].run_id]) == {
            runs[3].run_id: "failed"}
        assert import_dataset(dst, tmp_path / "x").duplicates == 7


def test_the_run_without_a_result_is_exported_with_nulls(edge_store, tmp_path):
    src, name, runs = edge_store
    export_sweep(src, name, "parquet", tmp_path / "x")
    rows = {r["run_id"]: r for r in pq.read_table(tmp_path / "x" / "runs.parquet").to_pylist()}
    queued = rows[runs[7].run_id]
    assert queued["status"] == "queued" and queued["result_json"] is None
    assert queued["valid"] is None and queued["steady_energy_j"] is None
    assert queued["num_requests"] == 0 and queued["spec_json"]
    failed = rows[runs[3].run_id]
    assert (failed["status"], failed["error_kind"], failed["valid"]) == ("failed", "engine",
                                                                         None)
    assert rows[runs[4].run_id]["invalid_reasons"] == "power_range"
    assert rows[runs[0].run_id]["gpu_uuids"] == ["GPU-sim-0000", "GPU-sim-0001"]
    assert rows[runs[0].run_id]["gpu_power_limits_w"] == [700.0, 700.0]
    # No tuning asked for: null, never 0.
    assert (rows[runs[0].run_id]["power_limit_w"], rows[runs[0].run_id]["sm_clock_mhz"]) == (
        None, None)


def test_an_adaptive_sweeps_verdicts_are_a_table(tmp_path):
    # What `farmctl results` lists under "adaptive repetitions", for a reader of the
    # dataset without the farm: n, mean, CI and verdict per configuration and point.
    from farm import adaptive

    toml = factories.SMALL_SWEEP.replace(
        "repetitions = 2", 'repetitions = { min = 3, max = 4, ci_half_width_pct = 2, '
        'figure = "net" }')
    spec, text, runs = factories.sweep(toml)
    store = Store.open(sqlite_url(tmp_path / "a.db"), upgrade=True)
    sid = store.record_sweep(spec, text)
    store.add_runs(sid, runs)
    first = [r for r in runs if r.repetition == 0]
    tight = [r for r in runs if adaptive.repetition(r, 0).run_id == first[0].run_id]
    wide = [r for r in runs if adaptive.repetition(r, 0).run_id == first[1].run_id]
    for r in tight:
        n = len(r.scenario.load_points)
        store.record_result(result_of(r, steady_energy_j=[100.0] * n))
    for r, e in zip(wide, (100.0, 150.0, 70.0)):
        n = len(r.scenario.load_points)
        store.record_result(result_of(r, steady_energy_j=[e] * n))
    summary = export_sweep(store, spec.name, "parquet", tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "repetitions.parquet").to_pylist()
    assert summary.rows["repetitions"] == len(table) == expected_rows(store, sid)["repetitions"]
    assert list(table[0]) == TABLES["repetitions"].names
    by_config = {}
    for row in table:
        by_config.setdefault(row["first_run_id"], []).append(row)
    met = by_config[tight[0].run_id]
    assert {r["verdict"] for r in met} == {"met"}
    assert [r["load_point"] for r in met] == list(range(len(tight[0].scenario.load_points)))
    assert all(r["n"] == 3 and r["runs"] == 3 and r["ci_half_width_pct"] < 1e-9
               and r["figure"] == "energy_per_output_token_net_j" and r["max_runs"] == 4
               and r["target_ci_half_width_pct"] == 2.0 for r in met)
    assert all(r["figure_mean_j"] == pytest.approx(0.8) for r in met)     # net of idle
    (more,) = {r["verdict"] for r in by_config[wide[0].run_id]}
    assert more == "more" and all(r["ci_half_width_pct"] > 2
                                  for r in by_config[wide[0].run_id])
    # the configurations not run yet: one row each, nothing measured, nothing invented
    untouched = [rows for key, rows in by_config.items()
                 if key not in (tight[0].run_id, wide[0].run_id)]
    assert untouched and all(len(rows) == 1 and rows[0]["verdict"] == "waiting"
                             and rows[0]["n"] == 0 and rows[0]["figure_mean_j"] is None
                             and rows[0]["load_point"] is None for rows in untouched)
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as other:
        import_dataset(other, tmp_path / "out")         # derived: not read, no error
        assert other.counts()["results"] == 6
    store.close()


def test_the_gpu_tuning_asked_for_is_a_column_of_runs_run_points_and_fits(tmp_path):
    spec, toml, runs = factories.sweep()
    tuned = [factories.tuned(run, watts, 1200) for watts in (300.0, 700.0) for run in runs]
    cap_of = {run.run_id: run.hardware.power_limit_w for run in tuned}
    with Store.open(sqlite_url(tmp_path / "a.db"), upgrade=True) as src:
        src.add_runs(src.record_sweep(spec, toml), tuned)
        for run in tuned:
            src.record_result(factories.with_tuning(result_of(run), run,
                                                    [run.hardware.power_limit_w]))
        export_sweep(src, spec.name, "parquet", tmp_path / "x")
        with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
            import_dataset(dst, tmp_path / "x")
            assert_same_results(src, dst, spec.name)     # the read-backs come back too
    table = {name: pq.read_table(tmp_path / "x" / f"{name}.parquet").to_pylist()
             for name in ("runs", "run_points", "fits")}
    assert sorted((r["power_limit_w"], r["sm_clock_mhz"]) for r in table["runs"]) == (
        [(300.0, 1200)] * 8 + [(700.0, 1200)] * 8)
    assert all(r["power_limit_w"] == cap_of[r["run_id"]] for r in table["run_points"])
    # The closed loop's curve vs concurrency: one row per GPU, cap and figure.
    keys = [(r["gpu_model"], r["power_limit_w"], r["figure"]) for r in table["fits"]]
    assert len(keys) == len(set(keys)) == 2 * 2 * len(export.FIT_FIGURES)
    assert {r["sm_clock_mhz"] for r in table["fits"]} == {1200}


def test_the_runs_table_is_declared_once_with_its_values(edge_store, tmp_path, monkeypatch):
    """Each runs column says where its value comes from (dataset.RUNS): a column added
    there, and nowhere else, is in the exported file, in its place, and in the manifest."""
    assert all(c.value is not None for c in dataset.RUNS.columns)
    src, name, _runs = edge_store
    extra = dataset.DatasetColumn("gpu_count_twice", "int64", "count", "a test column",
                                  value=lambda r: 2 * r.spec.hardware.gpu_count)
    columns = list(dataset.RUNS.columns)
    columns.insert(columns.index(dataset.RUNS.column("gpu_count")) + 1, extra)
    runs_table = dataclasses.replace(dataset.RUNS, columns=tuple(columns))
    monkeypatch.setattr(dataset, "RUNS", runs_table)
    monkeypatch.setitem(TABLES, "runs", runs_table)
    export_sweep(src, name, "parquet", tmp_path / "x")
    table = pq.read_table(tmp_path / "x" / "runs.parquet")
    assert table.schema.names == runs_table.names
    assert table.schema.names.index("gpu_count_twice") == table.schema.names.index(
        "gpu_count") + 1
    assert all(r["gpu_count_twice"] == 2 * r["gpu_count"] for r in table.to_pylist())
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert extra.as_manifest() in manifest["tables"]["runs"]["columns"]


def test_import_keeps_what_the_store_measured(edge_store, tmp_path):
    """A stored success is never replaced; a stored failure gives way to an imported
    success; an imported failure never replaces the store's own."""
    src, name, runs = edge_store
    export_sweep(src, name, "jsonl", tmp_path / "x")
    spec, toml, _ = factories.sweep()
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        sid = dst.record_sweep(spec, toml)
        dst.add_runs(sid, [runs[0], runs[1], runs[3]])
        mine = result_of(runs[0], worker_name="farm-gpu@lab-b")
        dst.record_result(mine)                                    # success here
        dst.record_result(result_of(runs[1], status="failed"))  # failure here
        dst.record_result(result_of(runs[3], status="failed", attempt=1,
                                           worker_name="farm-gpu@lab-b"))
        done = import_dataset(dst, tmp_path / "x")
        assert not done.sweep_recorded
        assert (done.runs_added, done.results_imported, done.failures_replaced,
                done.duplicates) == (4, 5, 1, 2)
        assert dst.run_result(runs[0].run_id).worker.name == "farm-gpu@lab-b"
        assert dst.run_result(runs[1].run_id) == rederived(src.run_result(runs[1].run_id),
                                                           runs[1])
        assert dst.run_result(runs[3].run_id).worker.name == "farm-gpu@lab-b"


def test_an_imported_sweep_is_the_importers_and_another_owners_is_refused(edge_store,
                                                                            tmp_path):
    """An import records the sweep as its importer's (never anyone's), and adds
    nothing to a sweep another user owns; the owner and an admin may."""
    from farm.errors import NotPermitted
    from farm.ownership import Identity

    src, name, _ = edge_store
    export_sweep(src, name, "jsonl", tmp_path / "x")
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        done = import_dataset(dst, tmp_path / "x", Identity("alice", admin=False))
        assert done.sweep_recorded and dst.find_sweep(name).owner == "alice"
    spec, toml, (run, *_) = factories.sweep()
    with Store.open(sqlite_url(tmp_path / "c.db"), upgrade=True) as dst:
        sid = dst.record_sweep(spec, toml, owner="bob")
        dst.add_runs(sid, [run])
        with pytest.raises(NotPermitted, match="bob's: only bob or an admin"):
            import_dataset(dst, tmp_path / "x", Identity("mallory", admin=False))
        assert [r["id"] for r in dst.runs_of(sid)] == [run.run_id]     # nothing added
        assert import_dataset(dst, tmp_path / "x", Identity("root", admin=True)).runs_added
        assert dst.find_sweep(name).owner == "bob"


def test_small_batches_stream_and_round_trip(edge_store, tmp_path, monkeypatch):
    src, name, _ = edge_store
    monkeypatch.setattr(export, "BATCH_ROWS", 5)
    export_sweep(src, name, "parquet", tmp_path / "x")
    assert pq.ParquetFile(tmp_path / "x" / "requests.parquet").num_row_groups > 3
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        import_dataset(dst, tmp_path / "x")
        assert_same_results(src, dst, name)


def test_postgresql_round_trip(report_store, exports, pg_db_url, tmp_path):
    """Import into PostgreSQL, export from it, import that into SQLite: all the same."""
    url, name = report_store
    with Store.open(url) as src, Store.open(pg_db_url, upgrade=True) as pg:
        done = import_dataset(pg, exports["parquet"][0])
        assert done.results_imported == len(src.runs_of(src.find_sweep(name).id))
        assert_same_results(src, pg, name)
        assert import_dataset(pg, exports["csv"][0]).results_imported == 0
        export_sweep(pg, name, "csv", tmp_path / "from-pg")
        with Store.open(sqlite_url(tmp_path / "c.db"), upgrade=True) as dst:
            import_dataset(dst, tmp_path / "from-pg")
            assert_same_results(src, dst, name)


def test_simulated_and_measured_sweeps_never_merge(edge_store, tmp_path):
    src, name, _ = edge_store
    export_sweep(src, name, "jsonl", tmp_path / "x")
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        measured = factories.SMALL_SWEEP.replace('"sim:H100", "sim:L4"', '"H100", "L4"') \
            .replace('kind = "sim"', 'kind = "vllm"')
        spec, toml, _ = factories.sweep(measured)
        dst.record_sweep(spec, toml)
        with pytest.raises(DatasetError, match="never share a sweep"):
            import_dataset(dst, tmp_path / "x")


def test_export_refuses_a_non_empty_directory_unless_forced(edge_store, tmp_path):
    src, name, _ = edge_store
    export_sweep(src, name, "csv", tmp_path / "x")
    with pytest.raises(DatasetError, match="not empty"):
        export_sweep(src, name, "jsonl", tmp_path / "x")
    export_sweep(src, name, "jsonl", tmp_path / "x", force=True)
    assert not (tmp_path / "x" / "runs.csv").exists()
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["format"] == "jsonl"


# ------------------------------------------------------------ schema and docs


def test_physical_quantities_carry_their_unit_in_the_name():
    for table in TABLES.values():
        for column in table.columns:
            tokens = column.name.split("_")
            where = f"{table.name}.{column.name}"
            if column.unit in UNIT_TOKENS:
                assert UNIT_TOKENS[column.unit] in tokens, where
            elif column.unit is not None:
                assert column.unit in PLAIN_UNITS or column.name == "load_value", where
            # A name ending in a unit declares that unit.
            suffixes = {"s": "s", "ms": "ms", "j": "J", "w": "W", "c": "°C", "mhz": "MHz",
                        "mib": "MiB", "rps": "req/s", "tps": "tokens/s"}
            if len(tokens) > 2 and tokens[-2] == "per" and tokens[-1] in suffixes:
                assert column.unit.endswith("/" + suffixes[tokens[-1]]), where   # tokens/J
            elif tokens[-1] in suffixes:
                assert column.unit == suffixes[tokens[-1]], where
            if column.type == "timestamp":
                assert column.name.endswith("_at") and column.unit == "UTC", where
            if column.type.startswith(("float", "list<float")):
                assert column.unit is not None, f"{where}: a number without a unit"


def test_docs_show_exactly_the_schema():
    doc = (ROOT / "docs" / "dataset.md").read_text()
    for table in TABLES.values():
        assert f"### {table.name}" in doc
        assert markdown_columns(table) in doc, f"docs/dataset.md: table {table.name} differs"
    types = "|".join(re.escape(t) for t in dataset.TYPES)
    documented = set(re.findall(rf"^\| `([a-z0-9_]+)` \| (?:{types}) \|", doc, flags=re.M))
    assert documented == {c.name for t in TABLES.values() for c in t.columns}
    assert dataset.SCHEMA_VERSION in doc


# ------------------------------------------------------------ bad input


@pytest.fixture
def small_export(edge_store, tmp_path):
    src, name, _ = edge_store
    export_sweep(src, name, "parquet", tmp_path / "x")
    return tmp_path / "x"


def rewrite_manifest(directory: Path, **changes) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_missing_manifest(small_export, tmp_path):
    (small_export / "manifest.json").unlink()
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        with pytest.raises(DatasetError, match="no manifest.json"):
            import_dataset(dst, small_export)


def test_unknown_major_version_is_refused(small_export, tmp_path):
    rewrite_manifest(small_export, dataset_schema_version="2.0")
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        with pytest.raises(DatasetError, match=r"version 2\.0 .* reads 1\.x"):
            import_dataset(dst, small_export)
        assert dst.list_sweeps() == []
    rewrite_manifest(small_export, dataset_schema_version="1.9")   # a newer minor: fine
    with Store.open(sqlite_url(tmp_path / "c.db"), upgrade=True) as dst:
        assert import_dataset(dst, small_export).results_imported == 7


def test_corrupted_file_is_refused_before_anything_is_written(small_export, tmp_path):
    path = small_export / "requests.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        with pytest.raises(DatasetError, match="requests.parquet: checksum"):
            import_dataset(dst, small_export)
        assert dst.list_sweeps() == []


def test_unreadable_file_with_a_matching_checksum(small_export, tmp_path):
    """Garbage the manifest vouches for is still caught, as a dataset error."""
    path = small_export / "timelines.parquet"
    path.write_bytes(b"not parquet at all")
    manifest = json.loads((small_export / "manifest.json").read_text())
    manifest["tables"]["timelines"].update(sha256=export.sha256(path),
                                           bytes=path.stat().st_size)
    (small_export / "manifest.json").write_text(json.dumps(manifest))
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        with pytest.raises(DatasetError, match="timelines.parquet: unreadable parquet"):
            import_dataset(dst, small_export)


def test_rows_out_of_order_are_caught(edge_store, tmp_path):
    src, name, _ = edge_store
    export_sweep(src, name, "jsonl", tmp_path / "x")
    path = tmp_path / "x" / "requests.jsonl"
    path.write_text("".join(reversed(path.read_text().splitlines(keepends=True))))
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    manifest["tables"]["requests"]["sha256"] = export.sha256(path)
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(manifest))
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        with pytest.raises(DatasetError, match="not in the runs table's order"):
            import_dataset(dst, tmp_path / "x")


def test_a_changed_run_spec_does_not_hash_to_its_id(edge_store, tmp_path):
    src, name, _ = edge_store
    export_sweep(src, name, "jsonl", tmp_path / "x")
    path = tmp_path / "x" / "runs.jsonl"
    path.write_text(path.read_text().replace('\\"seed\\":0', '\\"seed\\":1', 1))
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    manifest["tables"]["runs"].update(sha256=export.sha256(path), bytes=path.stat().st_size)
    (tmp_path / "x" / "manifest.json").write_text(json.dumps(manifest))
    with Store.open(sqlite_url(tmp_path / "b.db"), upgrade=True) as dst:
        with pytest.raises(DatasetError, match="hashes to"):
            import_dataset(dst, tmp_path / "x")


# ------------------------------------------------------------ the CLI


def test_cli_export_and_import(report_store, tmp_path):
    url, name = report_store
    proc = farmctl("export", name, "--format", "jsonl", cwd=tmp_path,
                   env={"FARM_DB_URL": url})
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATED" in proc.stdout and f"farm-export-{name}-jsonl/" in proc.stdout
    directory = tmp_path / f"farm-export-{name}-jsonl"
    assert (directory / "manifest.json").exists()

    again = farmctl("export", name, "--format", "jsonl", cwd=tmp_path,
                    env={"FARM_DB_URL": url})
    assert again.returncode == ExitCode.INVALID_INPUT and "--force" in again.stderr

    db = {"FARM_DB_URL": sqlite_url(tmp_path / "lab-b.db")}
    first = farmctl("import", str(directory), env=db)
    assert first.returncode == 0, first.stderr
    with Store.open(url) as src:
        n = len(src.runs_of(src.find_sweep(name).id))
    assert "SIMULATED" in first.stdout and "sweep recorded" in first.stdout
    assert f"{n} run(s) added, {n} result(s) imported, 0 duplicate(s)" in first.stdout
    second = farmctl("import", str(directory), env=db)
    assert second.returncode == 0, second.stderr
    assert f"0 run(s) added, 0 result(s) imported, {n} duplicate(s) skipped" in second.stdout
    results = farmctl("results", name, "--format", "json", env=db)
    assert results.returncode == 0 and len(json.loads(results.stdout)["rows"]) > n


def test_cli_errors_are_one_line_with_an_exit_code(report_store, tmp_path):
    url, name = report_store
    db = {"FARM_DB_URL": sqlite_url(tmp_path / "b.db")}
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (farmctl("import", str(empty), env=db), ExitCode.INVALID_INPUT, "no manifest.json"),
        (farmctl("export", "no-such-sweep", env={"FARM_DB_URL": url}), ExitCode.NOT_FOUND,
         "no sweep"),
    ]
    bad = tmp_path / "bad"
    assert farmctl("export", name, "--out", str(bad), env={"FARM_DB_URL": url}).returncode == 0
    rewrite_manifest(bad, dataset_schema_version="9.0")
    cases.append((farmctl("import", str(bad), env=db), ExitCode.INVALID_INPUT,
                  "schema version 9.0"))
    for proc, code, message in cases:
        assert proc.returncode == code, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "b.db").exists()          # a bad directory never opens the store
