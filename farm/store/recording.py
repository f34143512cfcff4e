"""Recording a run's result: one transaction holding the run's row, idempotent.

A result delivered twice, late or out of order never produces a second result
row, and a measured (succeeded) result is never overwritten."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import (
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from farm.store.base import StoreBase, insert_many
from farm.store.mapping import (
    REQUEST_COLUMNS,
    as_utc,
    load_point_row,
    load_points_t,
    request_row,
    requests_t,
    result_row,
    results_t,
    runs_t,
    trace_rows,
    traces_t,
    window_row,
    windows_t,
)
from farm.store.models import (
    CHILD_TABLES,
    ResultRow,
)
from farm_contract.records import (
    RunResult,
)

RecordOutcome = Literal["stored", "replaced", "duplicate", "unknown_run"]


class Recording(StoreBase):
    """The recorder's write: a RunResult with all its measurements."""

    def record_result(self, result: RunResult,
                      imported_from: str | None = None) -> RecordOutcome:
        """Store a run's result with all its measurements, in one transaction.

        "duplicate": a succeeded result exists (or this one is an older failure
        than the stored one) and nothing changed. "replaced": a stored failure
        gave way to this result. `imported_from`: the export an imported result
        came from (its provenance, shown by results, report and export).
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
            self._insert_result(session, result, imported_from)
            session.execute(update(runs_t).where(runs_t.c.id == result.run_id)
                            .values(_run_after_result(run, result)))
        return "replaced" if previous is not None else "stored"

    def _insert_result(self, session: Session, result: RunResult,
                       imported_from: str | None = None) -> None:
        run_id = result.run_id
        session.execute(insert(results_t).values(result_row(result, imported_from)))
        insert_many(session, load_points_t,
                     [load_point_row(run_id, lp) for lp in result.load_points])
        insert_many(session, windows_t, [window_row(run_id, w) for w in result.windows])
        if result.trace is not None:
            insert_many(session, traces_t, trace_rows(run_id, result.trace))
        rows = [request_row(run_id, r) for r in result.requests]
        if self.dialect == "postgresql":
            _copy_requests(session, rows)
        else:
            insert_many(session, requests_t, rows)


# ---------------------------------------------------------------- decisions


def _replaces(previous: Any, result: RunResult) -> bool:
    """Whether `result` takes the place of the stored one."""
    if previous.status == "succeeded":
        return False  # measured already: never lost, never recorded twice
    if result.status == "succeeded":
        return True
    # Two failures: keep the later one, by attempt or, when a retry counted
    # attempts from 1 again, by time.
    return (result.attempt >= previous.attempt
            or as_utc(result.finished_at) > previous.finished_at)


def _run_after_result(run: Any, result: RunResult) -> dict[str, Any]:
    """Columns of `runs` to set once `result` is stored."""
    values: dict[str, Any] = {"attempts": max(run.attempts, result.attempt)}
    stale_failure = (result.status == "failed" and run.status == "running"
                     and run.started_at is not None
                     and run.started_at > as_utc(result.finished_at))
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

