"""The store's read views: sweeps, run statuses, results and their measurements,
whole RunResults rebuilt (dataset export), result rows (farmctl results, reports)
and counts."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    func,
    select,
)

from farm.store import counts
from farm.store.base import StoreBase
from farm.store.mapping import (
    REQUEST_COLUMNS,
    RESULT_ROW_COLUMNS,
    configuration_order,
    load_point_record,
    load_points_t,
    request_record,
    requests_t,
    result_dict,
    result_record,
    results_t,
    runs_t,
    sortable,
    sweeps_t,
    trace_record,
    traces_t,
    windows_t,
)
from farm.store.models import (
    ALL_TABLES,
    SweepRow,
)
from farm_contract.records import (
    EngineInfo,
    LoadPointResult,
    MeasurementInfo,
    PowerTrace,
    RequestRecord,
    RunResult,
    WorkerInfo,
)


class Views(StoreBase):
    """Every read query of the store."""

    def find_sweep(self, name_or_id: str) -> SweepRow | None:
        """The sweep named or with id `name_or_id`, or None when there is none."""
        stmt = select(SweepRow).where(
            (SweepRow.name == name_or_id) | (SweepRow.id == name_or_id))
        with self._read() as session:
            return session.scalars(stmt).first()

    def list_sweeps(self) -> list[SweepRow]:
        """Every sweep, oldest first (then by name)."""
        with self._read() as session:
            return list(session.scalars(select(SweepRow).order_by(SweepRow.created_at,
                                                                  SweepRow.name)))

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

    def requests_for(self, run_id: str, load_point: int | None = None) -> list[RequestRecord]:
        """The run's requests (of one load point if given), ITL arrays unpacked."""
        stmt = select(requests_t).where(requests_t.c.run_id == run_id)
        if load_point is not None:
            stmt = stmt.where(requests_t.c.load_point == load_point)
        stmt = stmt.order_by(requests_t.c.load_point, requests_t.c.idx)
        with self._read() as session:
            return [request_record(row) for row in session.execute(stmt).mappings()]

    def load_points_for(self, run_id: str) -> list[LoadPointResult]:
        """The run's load points as the worker sent them (empty without a result)."""
        stmt = (select(load_points_t).where(load_points_t.c.run_id == run_id)
                .order_by(load_points_t.c.idx))
        with self._read() as session:
            return [load_point_record(row) for row in session.execute(stmt).mappings()]

    def trace_for(self, run_id: str) -> PowerTrace | None:
        """The run's power timeline with every series, missing samples as None."""
        stmt = (select(traces_t).where(traces_t.c.run_id == run_id)
                .order_by(traces_t.c.gpu_index))
        with self._read() as session:
            rows = session.execute(stmt).mappings().all()
        if not rows:
            return None
        return trace_record(rows)

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
        return result_record(row, windows)

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
                              simulated=simulated, model_weights=row["model_weights"],
                              startup=row["engine_startup"]),
            measurement=MeasurementInfo(energy_sensor=row["energy_sensor"],
                                        power_sensor=row["power_sensor"],
                                        sample_period_s=row["sample_period_s"],
                                        measured_in=row["measured_in"],
                                        simulated=simulated,
                                        energy_sources=row["energy_sources"]),
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
        with self._read() as session:
            rows = [dict(row) for row in session.execute(
                select(runs_t).where(runs_t.c.sweep_id == sweep_id)).mappings()]

        def order(row: dict[str, Any]) -> tuple[Any, ...]:
            spec = json.loads(row["spec_json"])
            return (row["model_id"], row["gpu_model"], row["gpu_count"], row["engine_kind"],
                    configuration_order(spec["engine"]["args"],
                                        spec["hardware"].get("power_limit_w"),
                                        spec["hardware"].get("sm_clock_mhz")),
                    row["scenario_name"], sortable(row["input_tokens"]), row["output_tokens"],
                    row["decoding"], row["repetition"], row["id"])
        # in Python: the engine's arguments and the tuning are in spec_json
        return sorted(rows, key=order)

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

    def result_spans(self, start: datetime, end: datetime
                     ) -> list[tuple[str, list[str], datetime, datetime]]:
        """(run id, GPU UUIDs, started, finished) of each stored result whose run held
        its GPUs at some time between `start` and `end` (an import's overlap check)."""
        res = results_t.c
        stmt = (select(res.run_id, res.gpus_json, res.started_at, res.finished_at)
                .where(res.started_at < end, res.finished_at > start))
        with self._read() as session:
            return [(row.run_id, [gpu["uuid"] for gpu in row.gpus_json or []
                                  if isinstance(gpu, dict) and "uuid" in gpu],
                     row.started_at, row.finished_at)
                    for row in session.execute(stmt)]

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
                   res.duration_s.label("result_duration_s"), res.preflight_json,
                   *[res[name] for name in RESULT_ROW_COLUMNS],
                   *[c.label(f"lp_{c.name}") for c in load_points_t.c if c.name != "run_id"])
            .join(sweeps_t, s.id == r.sweep_id)
            .outerjoin(results_t, res.run_id == r.id)
            .outerjoin(load_points_t, lp.run_id == r.id)
        )
        if sweep_id is not None:
            stmt = stmt.where(r.sweep_id == sweep_id)
        with self._read() as session:
            rows = [result_dict(row) for row in session.execute(stmt).mappings()]
        # runs_of's order, by sweep first and then load point
        return sorted(rows, key=lambda row: (
            row["sweep"], row["model"], row["gpu_model"], row["gpu_count"], row["engine"],
            configuration_order(row["engine_args"], row["power_limit_w"], row["sm_clock_mhz"]),
            row["scenario"], sortable(row["input_tokens"]), row["output_tokens"],
            row["decoding"], row["repetition"], row["run_id"], sortable(row["load_point"])))

    def counts(self) -> dict[str, int]:
        """Rows per table (tests and diagnostics)."""
        with self._read() as session:
            return {table.__tablename__: session.scalar(
                        select(func.count()).select_from(table.__table__)) or 0
                    for table in ALL_TABLES}
