"""Every query the rest of the farm needs, behind one class: `Store`.

Writes that read before they write (record_result, mark_started) run in one
transaction holding the run's row: `SELECT ... FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite (see db.write_transaction). Recording is
idempotent: a result delivered twice, late or out of order never produces a
second result row, and a measured (succeeded) result is never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar

from sqlalchemy import (
    String,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from farm.spec import SweepSpec
from farm.store import counts, db
from farm.store.models import (
    ALL_TABLES,
    CHILD_TABLES,
    LoadPointRow,
    RequestRow,
    ResultRow,
    RunRow,
    SweepRow,
    TraceRow,
    WindowRow,
    pack_f32,
    pack_f64,
    pack_u64,
    unpack_f32,
    unpack_f64,
    unpack_u64,
    utcnow,
)
from farm_contract.figures import flat_values, nested_values
from farm_contract.records import (
    EnergyWindow,
    EngineInfo,
    ErrorInfo,
    GpuInfo,
    HostEnergy,
    IdleBaseline,
    LoadPointResult,
    MeasurementInfo,
    PowerTrace,
    Preflight,
    RequestRecord,
    RunEvent,
    RunResult,
    Validity,
    ValidityCheck,
    WorkerInfo,
    load_point_columns,
)
from farm_contract.routing import split_backend
from farm_contract.runspec import RunSpec, sweep_id

RecordOutcome = Literal["stored", "replaced", "duplicate", "unknown_run"]

# Ids per IN (...) list: below SQLite's oldest bound-parameter limit (999).
CHUNK = 900
REQUEST_COLUMNS = ("run_id", "load_point", "idx", "scheduled_s", "sent_s", "ttft_s", "e2e_s",
                   "itl_s", "input_tokens", "output_tokens", "ok", "error")
# LoadPointResult's flat figures: load_points columns of the same names (LatencyStats
# as {metric}_{stat}_ms), from the record's own field list (farm_contract.figures).
LOAD_POINT_COLUMNS = load_point_columns()
# What result_rows carries of a load point, as lp_{name} of the query: every figure
# but those under another name (kind → load_kind, value → load_value), those whose
# names the run's own columns take (duration_s, the token counts) and the latency
# statistics outside RESULT_LATENCY_STATS; a new figure is carried without an edit.
RESULT_LATENCY_STATS = {"ttft": ("p50_ms", "p90_ms"), "tpot": ("p50_ms", "p90_ms"),
                        "e2e": ("p50_ms", "p90_ms"), "lateness": ("p50_ms", "p99_ms")}
_RESULT_OMITS = ("kind", "value", "duration_s", "input_tokens", "output_tokens",
                 "steady_output_tokens")
RESULT_POINT_FIGURES = tuple(
    column.name for column in LOAD_POINT_COLUMNS
    if (column.path[1] in RESULT_LATENCY_STATS.get(column.path[0], ())
        if len(column.path) == 2 else column.name not in _RESULT_OMITS))
# PowerTrace's optional series: (field, pack, unpack).
TRACE_SERIES: tuple[tuple[str, Callable[[Any], bytes | None], Callable[[Any], list[Any]]], ...] = (
    ("memory_power_w", pack_f32, lambda blob: unpack_f32(blob, nan_as_none=True)),
    ("temperature_c", pack_f32, lambda blob: unpack_f32(blob, nan_as_none=True)),
    ("sm_clock_mhz", pack_f32, lambda blob: unpack_f32(blob, nan_as_none=True)),
    ("throttle_reasons", pack_u64, unpack_u64),
)
# Result-level columns result_rows carries under their own names.
RESULT_ROW_COLUMNS = ("valid", "invalid_reasons", "cooled", "idle_power_w", "idle_ctx_power_w",
                      "cpu_energy_j", "ram_energy_j", "cpu_method", "ram_method", "emissions_g")
# HostEnergy field → results column.
HOST_COLUMNS = {"tracker": "host_tracker", "duration_s": "host_duration_s",
                "cpu_energy_j": "cpu_energy_j", "cpu_method": "cpu_method",
                "ram_energy_j": "ram_energy_j", "ram_method": "ram_method",
                "gpu_energy_j": "host_gpu_energy_j", "emissions_g": "emissions_g",
                "region": "region",
                "carbon_intensity_g_per_kwh": "carbon_intensity_g_per_kwh",
                "note": "host_note"}

T = TypeVar("T")
runs_t: Table = RunRow.__table__  # type: ignore[assignment]
sweeps_t: Table = SweepRow.__table__  # type: ignore[assignment]
results_t: Table = ResultRow.__table__  # type: ignore[assignment]
load_points_t: Table = LoadPointRow.__table__  # type: ignore[assignment]
windows_t: Table = WindowRow.__table__  # type: ignore[assignment]
requests_t: Table = RequestRow.__table__  # type: ignore[assignment]
traces_t: Table = TraceRow.__table__  # type: ignore[assignment]


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Store:
    """The farm's SQL store. Open with `Store.open(url)`; close when done."""

    def __init__(self, url: str):
        self.url = url
        self.engine = db.make_engine(url)
        self._write_engine = self.engine.execution_options(**{db.WRITE_OPTION: True})

    @classmethod
    def open(cls, url: str, upgrade: bool = False) -> Store:
        """A store on `url`; migrates first if `upgrade`, else raises SchemaError
        unless the schema is current."""
        if upgrade:
            db.upgrade(url)
        store = cls(url)
        try:
            db.require_current(store.engine)
        except Exception:
            store.close()
            raise
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _upsert(self, table: Table) -> Any:
        """INSERT with ON CONFLICT clauses (same API on both dialects)."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    # ------------------------------------------------------------ sweeps

    def record_sweep(self, spec: SweepSpec, toml_text: str) -> str:
        """Insert the sweep, or refresh its file text if the name exists. Returns its id."""
        now = utcnow()
        row = {"id": sweep_id(spec.name), "name": spec.name, "created_at": now,
               "updated_at": now, "spec_toml": toml_text, "simulated": _sweep_simulated(spec)}
        stmt = self._upsert(sweeps_t).values(row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"updated_at": now, "spec_toml": toml_text, "simulated": row["simulated"]},
        )
        with self._write() as session:
            session.execute(stmt)
        return row["id"]

    def find_sweep(self, name_or_id: str) -> SweepRow | None:
        stmt = select(SweepRow).where(
            (SweepRow.name == name_or_id) | (SweepRow.id == name_or_id))
        with self._read() as session:
            return session.scalars(stmt).first()

    def list_sweeps(self) -> list[SweepRow]:
        with self._read() as session:
            return list(session.scalars(select(SweepRow).order_by(SweepRow.created_at,
                                                                  SweepRow.name)))

    # -------------------------------------------------------------- runs

    def add_runs(self, sweep_id: str, runs: Sequence[RunSpec]) -> list[RunSpec]:
        """Insert the runs not stored yet (status queued); returns only those.

        Runs already present, whatever their status, are left untouched. Two
        enqueues of one sweep at once are serialised on the sweep's row, so each
        new run is returned (and sent to a queue) by exactly one of them.
        """
        by_id = {run.run_id: run for run in runs}
        with self._write() as session:
            self._lock_sweep(session, sweep_id)
            existing = self._existing_run_ids(session, list(by_id))
            now = utcnow()
            fresh = [(rid, run) for rid, run in by_id.items() if rid not in existing]
            _insert_many(session, runs_t, [_run_row(sweep_id, rid, run, now)
                                           for rid, run in fresh])
        return [run for _, run in fresh]

    def _lock_sweep(self, session: Session, sweep_id: str) -> None:
        found = session.execute(select(sweeps_t.c.id).where(sweeps_t.c.id == sweep_id)
                                .with_for_update()).first()
        if found is None:
            raise ValueError(f"unknown sweep {sweep_id!r}: record_sweep() it first")

    def _id_filters(self, column: Any, ids: Sequence[str]) -> Iterator[Any]:
        """WHERE clauses covering `ids`: one array parameter on PostgreSQL, else
        chunked IN lists (SQLite limits bound parameters per statement)."""
        if self.dialect == "postgresql":
            yield column == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(String())))
            return
        for part in chunks(ids):
            yield column.in_(part)

    def _existing_run_ids(self, session: Session, run_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for where in self._id_filters(runs_t.c.id, run_ids):
            found.update(session.scalars(select(runs_t.c.id).where(where)))
        return found

    def mark_started(self, event: RunEvent) -> bool:
        """Apply a "started" event; returns whether the run changed.

        Never moves a succeeded or cancelled run; moves a failed one only for a
        start after its failure (a retry), and ignores a start older than the
        one already recorded (a late or duplicate event).
        """
        if event.kind != "started":
            raise ValueError(f"mark_started() got a {event.kind!r} event")
        with self._write() as session:
            run = session.execute(
                select(runs_t.c.status, runs_t.c.attempts, runs_t.c.started_at,
                       runs_t.c.finished_at)
                .where(runs_t.c.id == event.run_id).with_for_update()
            ).first()
            if run is None or not _start_applies(run, event):
                return False
            session.execute(update(runs_t).where(runs_t.c.id == event.run_id).values(
                status="running", attempts=max(run.attempts, event.attempt),
                worker=event.worker.name, gpu_uuids=list(event.gpu_uuids) or None,
                started_at=event.at, finished_at=None, error=None,
            ))
            return True

    def mark_requeued(self, event: RunEvent) -> bool:
        """A worker handed the run back (planned stop): running → queued.

        Only if the run is still running on that worker and attempt; anything
        newer (a start elsewhere, a result) wins.
        """
        if event.kind != "requeued":
            raise ValueError(f"mark_requeued() got a {event.kind!r} event")
        with self._write() as session:
            changed = session.execute(
                update(runs_t)
                .where(runs_t.c.id == event.run_id, runs_t.c.status == "running",
                       runs_t.c.worker == event.worker.name,
                       runs_t.c.attempts == event.attempt)
                .values(status="queued", queued_at=event.at, error=event.detail)
            ).rowcount
        return bool(changed)

    def lost_running_ids(self, sweep_id: str) -> list[str]:
        """Ids of the sweep's runs marked running (the caller checks who really runs them)."""
        with self._read() as session:
            return list(session.scalars(select(runs_t.c.id).where(
                runs_t.c.sweep_id == sweep_id, runs_t.c.status == "running")))

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Status of each known run among `run_ids` (unknown ids are left out)."""
        statuses: dict[str, str] = {}
        if not run_ids:
            return statuses
        with self._read() as session:
            for where in self._id_filters(runs_t.c.id, list(run_ids)):
                rows = session.execute(select(runs_t.c.id, runs_t.c.status).where(where))
                statuses.update({row.id: row.status for row in rows})
        return statuses

    def cancel_queued(self, sweep_id: str) -> list[str]:
        """Queued runs of the sweep → cancelled; returns their ids."""
        stmt = (update(runs_t)
                .where(runs_t.c.sweep_id == sweep_id, runs_t.c.status == "queued")
                .values(status="cancelled", finished_at=utcnow())
                .returning(runs_t.c.id))
        with self._write() as session:
            return sorted(session.scalars(stmt))

    def runs_to_retry(self, sweep_id: str, include_queued: bool = False,
                      include_running: bool = False,
                      queues: Collection[str] | None = None,
                      also_ids: Collection[str] = ()) -> list[RunSpec]:
        """Failed and cancelled (and queued / running if asked) runs → queued; their specs.

        `include_running` is for a broker known to be gone (`farmctl run` after an
        interrupted one): nothing can still be running those runs. `queues` limits
        the retry to runs of those queues; `also_ids` adds runs in any status but
        succeeded (running runs whose worker is known to be gone).
        """
        statuses = (["failed", "cancelled"] + (["queued"] if include_queued else [])
                    + (["running"] if include_running else []))
        stmt = (update(runs_t)
                .where(runs_t.c.sweep_id == sweep_id,
                       or_(runs_t.c.status.in_(statuses),
                           and_(runs_t.c.id.in_(list(also_ids)),
                                runs_t.c.status != "succeeded")),
                       *([runs_t.c.queue.in_(list(queues))] if queues is not None else []))
                .values(status="queued", queued_at=utcnow(), finished_at=None, error=None)
                .returning(runs_t.c.id, runs_t.c.spec_json))
        with self._write() as session:
            rows = sorted(session.execute(stmt).all())
        return [RunSpec.model_validate_json(row.spec_json) for row in rows]

    # ----------------------------------------------------------- results

    def record_result(self, result: RunResult) -> RecordOutcome:
        """Store a run's result with all its measurements, in one transaction.

        "duplicate": a succeeded result exists (or this one is an older failure
        than the stored one) and nothing changed. "replaced": a stored failure
        gave way to this result.
        """
        with self._write() as session:
            run = session.execute(
                select(runs_t.c.status, runs_t.c.attempts, runs_t.c.started_at)
                .where(runs_t.c.id == result.run_id).with_for_update()
            ).first()
            if run is None:
                return "unknown_run"
            previous = session.execute(
                select(results_t.c.status, results_t.c.attempt, results_t.c.finished_at)
                .where(results_t.c.run_id == result.run_id)
            ).first()
            if previous is not None and not _replaces(previous, result):
                return "duplicate"
            if previous is not None:
                _delete_result(session, result.run_id)
            self._insert_result(session, result)
            session.execute(update(runs_t).where(runs_t.c.id == result.run_id)
                            .values(_run_after_result(run, result)))
        return "replaced" if previous is not None else "stored"

    def _insert_result(self, session: Session, result: RunResult) -> None:
        run_id = result.run_id
        session.execute(insert(results_t).values(_result_row(result)))
        _insert_many(session, load_points_t,
                     [_load_point_row(run_id, lp) for lp in result.load_points])
        _insert_many(session, windows_t, [_window_row(run_id, w) for w in result.windows])
        if result.trace is not None:
            _insert_many(session, traces_t, _trace_rows(run_id, result.trace))
        rows = [_request_row(run_id, r) for r in result.requests]
        if self.dialect == "postgresql":
            _copy_requests(session, rows)
        else:
            _insert_many(session, requests_t, rows)

    def requests_for(self, run_id: str, load_point: int | None = None) -> list[RequestRecord]:
        """The run's requests (of one load point if given), ITL arrays unpacked."""
        stmt = select(requests_t).where(requests_t.c.run_id == run_id)
        if load_point is not None:
            stmt = stmt.where(requests_t.c.load_point == load_point)
        stmt = stmt.order_by(requests_t.c.load_point, requests_t.c.idx)
        with self._read() as session:
            return [_request_record(row) for row in session.execute(stmt).mappings()]

    def load_points_for(self, run_id: str) -> list[LoadPointResult]:
        """The run's load points as the worker sent them (empty without a result)."""
        stmt = (select(load_points_t).where(load_points_t.c.run_id == run_id)
                .order_by(load_points_t.c.idx))
        with self._read() as session:
            return [_load_point_record(row) for row in session.execute(stmt).mappings()]

    def trace_for(self, run_id: str) -> PowerTrace | None:
        """The run's power timeline with every series, missing samples as None."""
        stmt = (select(traces_t).where(traces_t.c.run_id == run_id)
                .order_by(traces_t.c.gpu_index))
        with self._read() as session:
            rows = session.execute(stmt).mappings().all()
        if not rows:
            return None
        first = rows[0]
        series: dict[str, Any] = {}
        for name, _, unpack in TRACE_SERIES:
            # NULL on every GPU: the run had no such series (b"" is one without samples).
            if any(row[name] is not None for row in rows):
                series[name] = [unpack(row[name]) for row in rows]
        return PowerTrace(
            sensor=first["sensor"], sample_period_s=first["sample_period_s"],
            gpu_uuids=[row["gpu_uuid"] for row in rows], t_s=unpack_f64(first["t_s"]),
            power_w=[unpack_f32(row["power_w"], nan_as_none=True) for row in rows],
            **series,
        )

    def result_for(self, run_id: str) -> dict[str, Any] | None:
        """The run's result without its per-request and per-sample data, or None.

        The flat columns of `results` under their own names (JSON columns left
        out), plus records parsed back: `gpus` (list[GpuInfo]), `error`
        (ErrorInfo | None), `validity` (Validity | None), `preflight`
        (Preflight | None), `idle` (IdleBaseline | None: None when neither idle
        figure was measured), `host_energy` (HostEnergy | None) and `windows`
        (list[EnergyWindow], in the order the worker sent them).
        """
        windows_stmt = (select(windows_t).where(windows_t.c.run_id == run_id)
                        .order_by(windows_t.c.id))
        with self._read() as session:
            row = session.execute(select(results_t).where(results_t.c.run_id == run_id)
                                  ).mappings().first()
            if row is None:
                return None
            windows = session.execute(windows_stmt).mappings().all()
        return _result_record(row, windows)

    # ------------------------------------------- whole runs (dataset export)

    def run_result(self, run_id: str, requests: bool = True,
                   trace: bool = True) -> RunResult | None:
        """The run's RunResult rebuilt from the store, or None without a result.

        Recording it again (in another store) gives the same rows. What the store
        does not keep reads back as: `worker.pid` 0; `engine.simulated` and
        `measurement.simulated` the result's `simulated`; `schema_version` the
        current one. `requests` / `trace` False leave them empty / None.
        """
        row = self.result_for(run_id)
        if row is None:
            return None
        simulated = bool(row["simulated"])
        return RunResult(
            run_id=run_id, status=row["status"], attempt=row["attempt"],
            worker=WorkerInfo(name=row["worker"], host=row["host"], pid=0),
            gpus=row["gpus"],
            engine=EngineInfo(kind=row["engine_kind"], version=row["engine_version"],
                              simulated=simulated),
            measurement=MeasurementInfo(energy_sensor=row["energy_sensor"],
                                        power_sensor=row["power_sensor"],
                                        sample_period_s=row["sample_period_s"],
                                        simulated=simulated),
            simulated=simulated, started_at=row["started_at"],
            finished_at=row["finished_at"], duration_s=row["duration_s"],
            load_points=self.load_points_for(run_id), windows=row["windows"],
            trace=self.trace_for(run_id) if trace else None,
            requests=self.requests_for(run_id) if requests else [],
            error=row["error"], preflight=row["preflight"], idle=row["idle"],
            validity=row["validity"], host_energy=row["host_energy"],
        )

    def runs_of(self, sweep_id: str) -> list[dict[str, Any]]:
        """Every `runs` row of a sweep (all columns), in `result_rows`' order."""
        r = runs_t.c
        stmt = (select(runs_t).where(r.sweep_id == sweep_id)
                .order_by(r.model_id, r.gpu_model, r.gpu_count, r.engine_kind,
                          r.scenario_name, r.input_tokens, r.output_tokens, r.decoding,
                          r.repetition, r.id))
        with self._read() as session:
            return [dict(row) for row in session.execute(stmt).mappings()]

    def request_columns(self, run_id: str) -> dict[str, list[Any]]:
        """The run's requests column by column (by load point, then index), as stored:
        `itl_s` stays packed (models.pack_f32: float32 little-endian, None = none).
        For bulk readers that would rather not build a RequestRecord per request."""
        names = [name for name in REQUEST_COLUMNS if name != "run_id"]
        stmt = (select(*[requests_t.c[name] for name in names])
                .where(requests_t.c.run_id == run_id)
                .order_by(requests_t.c.load_point, requests_t.c.idx))
        with self._read() as session:
            rows = session.execute(stmt).all()
        columns = list(zip(*rows)) if rows else [()] * len(names)
        return {name: list(values) for name, values in zip(names, columns)}

    def result_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Status of the stored result of each run among `run_ids` that has one."""
        statuses: dict[str, str] = {}
        if not run_ids:
            return statuses
        with self._read() as session:
            for where in self._id_filters(results_t.c.run_id, list(run_ids)):
                rows = session.execute(select(results_t.c.run_id, results_t.c.status)
                                       .where(where))
                statuses.update({row.run_id: row.status for row in rows})
        return statuses

    # ----------------------------------------------------------- reading

    def status_counts(self, sweep_id: str | None = None) -> list[tuple[str, str, int]]:
        """(sweep name, status, number of runs), by sweep name then lifecycle order."""
        with self._raw() as connection:
            return counts.status_counts(connection, sweep_id)

    def queue_counts(self, sweep_id: str | None = None) -> list[tuple[str, str, int]]:
        """(queue, status, number of runs), by queue then lifecycle order."""
        with self._raw() as connection:
            return counts.queue_counts(connection, sweep_id)

    @contextmanager
    def _raw(self) -> Iterator[Any]:
        """The DB-API connection under the pool: the same SQL as `farmctl status`."""
        connection = self.engine.raw_connection()
        try:
            yield connection.driver_connection
        finally:
            connection.close()

    def result_rows(self, sweep_id: str | None = None) -> list[dict[str, Any]]:
        """One dict per (run, load point); a run without a result appears once, figures null."""
        r, s, res, lp = runs_t.c, sweeps_t.c, results_t.c, load_points_t.c
        stmt = (
            select(r.id, s.name.label("sweep"), r.repetition, r.model_id, r.backend, r.gpu_model,
                   r.gpu_count, r.engine_kind, r.scenario_name, r.scenario_kind,
                   r.input_tokens, r.output_tokens, r.decoding, r.status, r.attempts,
                   r.worker, r.gpu_uuids, r.simulated, r.error, r.spec_json,
                   res.run_id.label("result_run_id"), res.worker.label("result_worker"),
                   res.gpus_json, res.simulated.label("result_simulated"), res.energy_sensor,
                   res.engine_version, res.started_at.label("result_started_at"),
                   res.finished_at.label("result_finished_at"),
                   res.duration_s.label("result_duration_s"),
                   *[res[name] for name in RESULT_ROW_COLUMNS],
                   *[c.label(f"lp_{c.name}") for c in load_points_t.c if c.name != "run_id"])
            .join(sweeps_t, s.id == r.sweep_id)
            .outerjoin(results_t, res.run_id == r.id)
            .outerjoin(load_points_t, lp.run_id == r.id)
            .order_by(s.name, r.model_id, r.gpu_model, r.gpu_count, r.engine_kind,
                      r.scenario_name, r.input_tokens, r.output_tokens, r.decoding,
                      r.repetition, r.id, lp.idx)
        )
        if sweep_id is not None:
            stmt = stmt.where(r.sweep_id == sweep_id)
        with self._read() as session:
            return [_result_dict(row) for row in session.execute(stmt).mappings()]

    def counts(self) -> dict[str, int]:
        """Rows per table (tests and diagnostics)."""
        with self._read() as session:
            return {table.__tablename__: session.scalar(
                        select(func.count()).select_from(table.__table__)) or 0
                    for table in ALL_TABLES}


# ---------------------------------------------------------------- decisions


def _sweep_simulated(spec: SweepSpec) -> bool:
    """True when any of its runs is simulated, so the sweep is never shown as all-measured."""
    return spec.engine.kind == "sim" or any(
        split_backend(gpu)[0] == "sim" for gpu in spec.hardware.gpu)




def _utc(value: datetime) -> datetime:
    """Aware UTC (a naive time from a worker is taken as UTC, as the store does)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _start_applies(run: Any, event: RunEvent) -> bool:
    """Whether a "started" event may move the run to running (times from the workers)."""
    at = _utc(event.at)
    if run.status == "queued":
        return True
    if run.status == "running":
        # A start newer than the recorded one (a redelivery), else late or repeated.
        return run.started_at is None or run.started_at < at
    if run.status == "failed":
        # A retry starts after the failure (a retry may count attempts from 1 again).
        return event.attempt > run.attempts or run.finished_at is None or run.finished_at < at


def _replaces(previous: Any, result: RunResult) -> bool:
    """Whether `result` takes the place of the stored one."""
    if previous.status == "succeeded":
        return False  # measured already: never lost, never recorded twice
    if result.status == "succeeded":
        return True
    # Two failures: keep the later one, by attempt or, when a retry counted
    # attempts from 1 again, by time.
    return (result.attempt >= previous.attempt
            or _utc(result.finished_at) > previous.finished_at)


def _run_after_result(run: Any, result: RunResult) -> dict[str, Any]:
    """Columns of `runs` to set once `result` is stored."""
    values: dict[str, Any] = {"attempts": max(run.attempts, result.attempt)}
    stale_failure = (result.status == "failed" and run.status == "running"
                     and run.started_at is not None
                     and run.started_at > _utc(result.finished_at))
    if stale_failure:
        return values  # another attempt started after this one failed: it decides
    values.update(
        status=result.status, worker=result.worker.name,
        gpu_uuids=[gpu.uuid for gpu in result.gpus] or None,
        started_at=result.started_at, finished_at=result.finished_at,
        error=f"{result.error.kind}: {result.error.message}" if result.error else None,
    )
    if result.status == "failed" and result.error is None:
        values["error"] = "failed (no error reported)"
    return values


# ------------------------------------------------------------------ writing


def _insert_many(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(table), rows)


def _copy_requests(session: Session, rows: list[dict[str, Any]]) -> None:
    """COPY into requests over the session's own connection (same transaction)."""
    if not rows:
        return
    dbapi_connection = session.connection().connection.driver_connection
    statement = f"COPY requests ({', '.join(REQUEST_COLUMNS)}) FROM STDIN"
    with dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[column] for column in REQUEST_COLUMNS])


def _delete_result(session: Session, run_id: str) -> None:
    for table in (*CHILD_TABLES, ResultRow):
        t: Table = table.__table__  # type: ignore[assignment]
        session.execute(delete(t).where(t.c.run_id == run_id))


def _run_row(sweep: str, run_id: str, run: RunSpec, now: datetime) -> dict[str, Any]:
    return {
        "id": run_id, "sweep_id": sweep, "repetition": run.repetition, "model_id": run.model.id,
        "backend": run.hardware.backend, "gpu_model": run.hardware.gpu_model,
        "gpu_count": run.hardware.gpu_count, "engine_kind": run.engine.kind,
        "scenario_name": run.scenario.name, "scenario_kind": run.scenario.kind,
        "input_tokens": run.workload.input_tokens, "output_tokens": run.workload.output_tokens,
        "decoding": run.workload.decoding.label, "queue": run.hardware.queue,
        "spec_json": run.to_json(), "status": "queued", "attempts": 0, "worker": None,
        "gpu_uuids": None, "created_at": now, "queued_at": now, "started_at": None,
        "finished_at": None, "error": None, "simulated": run.simulated,
    }


def steady_energy_j(windows: Iterable[EnergyWindow]) -> float | None:
    """Sum of the steady windows' energy; None if there is none or any is unmeasured."""
    values = [w.energy_j for w in windows if w.name == "steady"]
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))  # type: ignore[arg-type]


def _result_row(result: RunResult) -> dict[str, Any]:
    energy_j = steady_energy_j(result.windows)
    output_tokens = (sum(lp.output_tokens for lp in result.load_points)
                     if result.load_points else None)
    # J/token over the same interval as the energy: tokens emitted in the steady windows.
    steady = [lp.steady_output_tokens for lp in result.load_points]
    steady_tokens = sum(steady) if steady and None not in steady else None  # type: ignore[arg-type]
    per_token = (energy_j / steady_tokens
                 if energy_j is not None and steady_tokens else None)
    error = result.error
    return {
        "run_id": result.run_id, "recorded_at": utcnow(), "attempt": result.attempt,
        "status": result.status, "worker": result.worker.name, "host": result.worker.host,
        "gpus_json": [gpu.model_dump(mode="json") for gpu in result.gpus],
        "engine_kind": result.engine.kind, "engine_version": result.engine.version,
        "simulated": result.simulated or result.engine.simulated or result.measurement.simulated,
        "energy_sensor": result.measurement.energy_sensor,
        "power_sensor": result.measurement.power_sensor,
        "sample_period_s": result.measurement.sample_period_s,
        "started_at": result.started_at, "finished_at": result.finished_at,
        "duration_s": result.duration_s, "energy_j": energy_j, "output_tokens": output_tokens,
        "steady_output_tokens": steady_tokens, "energy_per_output_token_j": per_token,
        "error_kind": error.kind if error else None,
        "error_message": error.message if error else None,
        "log_tail": list(error.log_tail) if error and error.log_tail else None,
        **_validity_columns(result.validity),
        "preflight_json": (result.preflight.model_dump(mode="json")
                           if result.preflight is not None else None),
        "cooled": result.preflight.cooled if result.preflight is not None else None,
        "idle_power_w": result.idle.idle_power_w if result.idle is not None else None,
        "idle_ctx_power_w": result.idle.idle_ctx_power_w if result.idle is not None else None,
        **_host_columns(result.host_energy),
    }


def _validity_columns(validity: Validity | None) -> dict[str, Any]:
    if validity is None:
        return {"valid": None, "validity_json": None, "invalid_reasons": None}
    failed = [check.name for check in validity.checks if not check.passed]
    return {
        "valid": validity.valid,
        "validity_json": [check.model_dump(mode="json") for check in validity.checks],
        # Null when valid; an invalid run names its failed checks ("" if it names none).
        "invalid_reasons": None if validity.valid else ",".join(failed),
    }


def _host_columns(host: HostEnergy | None) -> dict[str, Any]:
    return {column: getattr(host, field) if host is not None else None
            for field, column in HOST_COLUMNS.items()}


def _load_point_row(run_id: str, lp: LoadPointResult) -> dict[str, Any]:
    return {"run_id": run_id, "idx": lp.index, **flat_values(lp, LOAD_POINT_COLUMNS),
            "notes": list(lp.notes) or None}


def _window_row(run_id: str, window: EnergyWindow) -> dict[str, Any]:
    return {"run_id": run_id, **window.model_dump()}


def _trace_rows(run_id: str, trace: PowerTrace) -> list[dict[str, Any]]:
    if len(trace.power_w) != len(trace.gpu_uuids):
        raise ValueError(f"run {run_id}: power trace has {len(trace.power_w)} series for "
                         f"{len(trace.gpu_uuids)} GPUs")
    t_s = pack_f64(trace.t_s)
    rows = [{"run_id": run_id, "gpu_index": index, "gpu_uuid": uuid, "sensor": trace.sensor,
             "sample_period_s": trace.sample_period_s, "n_samples": len(trace.t_s),
             "t_s": t_s, "power_w": pack_f32(series)}
            for index, (uuid, series) in enumerate(zip(trace.gpu_uuids, trace.power_w))]
    for name, pack, _ in TRACE_SERIES:
        per_gpu = getattr(trace, name)
        if per_gpu is not None and len(per_gpu) != len(rows):
            raise ValueError(f"run {run_id}: power trace has {len(per_gpu)} {name} series "
                             f"for {len(rows)} GPUs")
        for index, row in enumerate(rows):
            # b"" keeps a series without samples apart from no series at all (NULL).
            row[name] = None if per_gpu is None else pack(per_gpu[index]) or b""
    return rows


def _request_row(run_id: str, request: RequestRecord) -> dict[str, Any]:
    return {
        "run_id": run_id, "load_point": request.load_point, "idx": request.index,
        "scheduled_s": request.scheduled_s, "sent_s": request.sent_s, "ttft_s": request.ttft_s,
        "e2e_s": request.e2e_s, "itl_s": pack_f32(request.itl_s),
        "input_tokens": request.input_tokens, "output_tokens": request.output_tokens,
        "ok": request.ok, "error": request.error,
    }


# ------------------------------------------------------------------ reading


def _request_record(row: Any) -> RequestRecord:
    return RequestRecord(
        load_point=row["load_point"], index=row["idx"], scheduled_s=row["scheduled_s"],
        sent_s=row["sent_s"], ttft_s=row["ttft_s"], e2e_s=row["e2e_s"],
        itl_s=unpack_f32(row["itl_s"]), input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"], ok=row["ok"], error=row["error"],
    )


def _load_point_record(row: Any) -> LoadPointResult:
    """A `load_points` row back into the LoadPointResult it was made from."""
    return LoadPointResult(index=row["idx"], **nested_values(row, LOAD_POINT_COLUMNS),
                           notes=row["notes"] or [])


def _result_record(row: Any, windows: Sequence[Any]) -> dict[str, Any]:
    """result_for's dict from a `results` row and the run's `energy_windows` rows."""
    out = {key: value for key, value in row.items()
           if key not in ("gpus_json", "validity_json", "preflight_json", "log_tail")}
    out["gpus"] = [GpuInfo.model_validate(gpu) for gpu in row["gpus_json"] or []]
    out["error"] = (ErrorInfo(kind=row["error_kind"], message=row["error_message"] or "",
                              log_tail=row["log_tail"] or [])
                    if row["error_kind"] is not None else None)
    out["validity"] = (Validity(valid=row["valid"], checks=[
                           ValidityCheck.model_validate(check)
                           for check in row["validity_json"] or []])
                       if row["valid"] is not None else None)
    out["preflight"] = (Preflight.model_validate(row["preflight_json"])
                        if row["preflight_json"] is not None else None)
    idle = (row["idle_power_w"], row["idle_ctx_power_w"])
    out["idle"] = (IdleBaseline(idle_power_w=idle[0], idle_ctx_power_w=idle[1])
                   if idle != (None, None) else None)
    out["host_energy"] = (HostEnergy(**{field: row[column]
                                        for field, column in HOST_COLUMNS.items()})
                          if row["host_tracker"] is not None else None)
    out["windows"] = [EnergyWindow.model_validate(
                          {k: v for k, v in window.items() if k not in ("id", "run_id")})
                      for window in windows]
    return out


def _result_dict(row: Any) -> dict[str, Any]:
    has_result = row["result_run_id"] is not None
    gpus = row["gpus_json"] or []
    return {
        "run_id": row["id"], "sweep": row["sweep"], "repetition": row["repetition"],
        "model": row["model_id"], "backend": row["backend"], "gpu_model": row["gpu_model"],
        "gpu_count": row["gpu_count"], "engine": row["engine_kind"],
        "engine_version": row["engine_version"],
        # the engine's own arguments (batch_size, max_num_seqs...): what tells apart
        # runs that differ only there
        "engine_args": json.loads(row["spec_json"])["engine"]["args"],
        "scenario": row["scenario_name"],
        "scenario_kind": row["scenario_kind"], "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"], "decoding": row["decoding"],
        "status": row["status"], "attempts": row["attempts"],
        "worker": row["result_worker"] if has_result else row["worker"],
        "gpu_names": [gpu["name"] for gpu in gpus] or None,
        "gpu_uuids": [gpu["uuid"] for gpu in gpus] if gpus else row["gpu_uuids"],
        "simulated": bool(row["simulated"] or row["result_simulated"]),
        "load_point": row["lp_idx"], "load_kind": row["lp_kind"],
        "load_value": row["lp_value"],
        **{figure: row[f"lp_{figure}"] for figure in RESULT_POINT_FIGURES},
        "notes": row["lp_notes"],
        "energy_sensor": row["energy_sensor"],
        "started_at": row["result_started_at"], "finished_at": row["result_finished_at"],
        "duration_s": row["result_duration_s"], "error": row["error"],
        **{name: row[name] for name in RESULT_ROW_COLUMNS},
    }
