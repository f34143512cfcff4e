"""Run counts per status, read with the database driver alone.

`farmctl status` is run in loops and watch windows. Importing SQLAlchemy,
Alembic and the pydantic models costs ~0.8 s on a small machine, far more
than the query itself (docs/performance.md), so this path talks to sqlite3 or
psycopg directly. The Store runs the very same SQL (`Store.status_counts`),
so both paths always agree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from farm.store.errors import UPGRADE_HINT, SchemaError
from farm_contract.statuses import PENDING_STATUSES, RUN_STATUSES, RunStatus

# The newest migration; a test keeps it equal to Alembic's head.
HEAD_REVISION = "0012"

_BY_SWEEP = ("SELECT s.name, c.status, c.n FROM (SELECT sweep_id, status, COUNT(*) AS n "
             "FROM runs {where} GROUP BY sweep_id, status) c "
             "JOIN sweeps s ON s.id = c.sweep_id")
_BY_QUEUE = "SELECT queue, status, COUNT(*) FROM runs {where} GROUP BY queue, status"

Row = tuple[str, str, int]


def _order(rows: list[Any]) -> list[Row]:
    rank = {status: i for i, status in enumerate(RUN_STATUSES)}
    return sorted(((str(a), str(b), int(n)) for a, b, n in rows),
                  key=lambda r: (r[0], rank.get(r[1], len(rank))))


def _sql_in(statuses: tuple[str, ...]) -> str:
    """Statuses as an SQL list: "('queued', 'running')"."""
    return "(" + ", ".join(f"'{RunStatus(s).value}'" for s in statuses) + ")"


def _placeholder(connection: Any) -> str:
    return "?" if isinstance(connection, sqlite3.Connection) else "%s"


def _query(connection: Any, template: str, sweep_id: str | None) -> list[Row]:
    where = f"WHERE sweep_id = {_placeholder(connection)}" if sweep_id is not None else ""
    cursor = connection.cursor()
    try:
        cursor.execute(template.format(where=where), () if sweep_id is None else (sweep_id,))
        return _order(cursor.fetchall())
    finally:
        cursor.close()


def status_counts(connection: Any, sweep_id: str | None = None) -> list[Row]:
    """(sweep name, status, runs) from any DB-API connection to the store."""
    return _query(connection, _BY_SWEEP, sweep_id)


def queue_counts(connection: Any, sweep_id: str | None = None) -> list[Row]:
    """(queue, status, runs) from any DB-API connection to the store."""
    return _query(connection, _BY_QUEUE, sweep_id)


def failed_runs(connection: Any, sweep_id: str) -> list[tuple[str, str | None]]:
    """(run id, stored error "<kind>: <message>") of the sweep's failed runs."""
    cursor = connection.cursor()
    try:
        cursor.execute(f"SELECT id, error FROM runs WHERE sweep_id = {_placeholder(connection)} "
                       "AND status = 'failed' ORDER BY id", (sweep_id,))
        return [(str(run_id), error) for run_id, error in cursor.fetchall()]
    finally:
        cursor.close()


# -- per owner (fair share, farm/dispatch.py) ----------------------------------
# Runs that hold or held GPUs: their GPU time is charged to the sweep's owner.
_HELD_GPUS = (RunStatus.running, RunStatus.succeeded, RunStatus.failed)
_USAGE = ("SELECT s.owner, r.started_at, r.finished_at, r.gpu_count FROM runs r "
          f"JOIN sweeps s ON s.id = r.sweep_id WHERE r.status IN {_sql_in(_HELD_GPUS)} "
          "AND r.started_at IS NOT NULL AND (r.finished_at IS NULL OR "
          "r.finished_at >= {p})")
_BY_OWNER = ("SELECT s.owner, r.status, CASE WHEN r.dispatched_at IS NULL THEN 1 ELSE 0 END, "
             "COUNT(*) FROM runs r JOIN sweeps s ON s.id = r.sweep_id "
             "GROUP BY s.owner, r.status, CASE WHEN r.dispatched_at IS NULL THEN 1 ELSE 0 END")
_SWEEPS_BY_OWNER = "SELECT owner, COUNT(*) FROM sweeps GROUP BY owner"


def _as_utc(value: Any) -> datetime:
    """A stored time as an aware UTC datetime (SQLite's driver gives its text)."""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _bind_time(connection: Any, when: datetime) -> Any:
    """`when` as the store keeps it: UTC wall-clock text on SQLite, timestamptz elsewhere."""
    when = when.astimezone(UTC)
    if isinstance(connection, sqlite3.Connection):
        return when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return when


def usage_rows(connection: Any, since: datetime) -> list[tuple[str, datetime, datetime | None,
                                                                int]]:
    """(owner, started_at, finished_at, GPUs) of the runs holding or having held GPUs
    since `since` (running, or finished after it)."""
    cursor = connection.cursor()
    try:
        cursor.execute(_USAGE.format(p=_placeholder(connection)),
                       (_bind_time(connection, since),))
        return [(str(owner), _as_utc(start), None if end is None else _as_utc(end), int(n))
                for owner, start, end, n in cursor.fetchall()]
    finally:
        cursor.close()


def gpu_seconds(rows: list[tuple[str, datetime, datetime | None, int]], since: datetime,
                now: datetime) -> dict[str, float]:
    """GPU-seconds per owner within [since, now]: Σ (end or now − start) × GPUs, each
    run clipped to the window."""
    used: dict[str, float] = {}
    for owner, start, end, gpus in rows:
        seconds = ((end or now) - max(start, since)).total_seconds()
        used[owner] = used.get(owner, 0.0) + max(0.0, seconds) * gpus
    return used


def owner_counts(connection: Any, window_s: float, now: datetime | None = None
                 ) -> list[dict[str, Any]]:
    """Per owner: sweeps, runs per status, queued runs not yet on a broker queue
    (`waiting`) and GPU-hours in the last `window_s` seconds; by owner name."""
    now = now or datetime.now(UTC)
    table: dict[str, dict[str, Any]] = {}

    def row(owner: str) -> dict[str, Any]:
        return table.setdefault(owner, {"owner": owner, "sweeps": 0, "waiting": 0,
                                        **dict.fromkeys(RUN_STATUSES, 0), "gpu_hours": 0.0})
    cursor = connection.cursor()
    try:
        cursor.execute(_SWEEPS_BY_OWNER)
        for owner, n in cursor.fetchall():
            row(str(owner))["sweeps"] = int(n)
        cursor.execute(_BY_OWNER)
        for owner, status, waiting, n in cursor.fetchall():
            entry = row(str(owner))
            entry[str(status)] = entry.get(str(status), 0) + int(n)
            if status == "queued" and int(waiting):
                entry["waiting"] += int(n)
    finally:
        cursor.close()
    since = now - timedelta(seconds=window_s)
    for owner, seconds in gpu_seconds(usage_rows(connection, since), since, now).items():
        row(owner)["gpu_hours"] = seconds / 3600
    return [table[owner] for owner in sorted(table)]


def find_sweep_id(connection: Any, name_or_id: str) -> str | None:
    """The id of the sweep named or with id `name_or_id`, or None when there is none."""
    p = _placeholder(connection)
    cursor = connection.cursor()
    try:
        cursor.execute(f"SELECT id FROM sweeps WHERE name = {p} OR id = {p}",
                       (name_or_id, name_or_id))
        row = cursor.fetchone()
        return row[0] if row else None
    finally:
        cursor.close()


def _sqlite_path(url: str) -> str | None:
    for prefix in ("sqlite+pysqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return url[len(prefix):].split("?", 1)[0]
    return None


@contextmanager
def connect(url: str) -> Iterator[Any]:
    """A read-only DB-API connection to the store at `url`, schema checked."""
    path = _sqlite_path(url)
    if path is not None:
        try:
            connection: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        except sqlite3.OperationalError as exc:
            raise SchemaError(f"no store at {path} ({exc}): {UPGRADE_HINT}") from None
    else:
        import psycopg

        pg_url = "postgresql://" + url.split("://", 1)[1]
        connection = psycopg.connect(pg_url, connect_timeout=10, autocommit=True)
    try:
        _check_schema(connection)
        yield connection
    finally:
        connection.close()


def _check_schema(connection: Any) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute("SELECT version_num FROM alembic_version")
        revision = (cursor.fetchone() or [None])[0]
    except Exception:
        raise SchemaError(f"the store has no farm schema: {UPGRADE_HINT}") from None
    finally:
        cursor.close()
    if revision != HEAD_REVISION:
        raise SchemaError(f"the store is at schema revision {revision or 'unknown'}, this farm "
                          f"expects {HEAD_REVISION}: {UPGRADE_HINT}")


# -- what `farmctl slurm` (farm/slurm) submits worker jobs for ------------------
_WORK = ("SELECT r.queue, s.owner, r.status, COUNT(*) FROM runs r "
         f"JOIN sweeps s ON s.id = r.sweep_id WHERE r.status IN {_sql_in(PENDING_STATUSES)} "
         "GROUP BY r.queue, s.owner, r.status")


def queue_work(connection: Any) -> list[tuple[str, str, str, int]]:
    """(queue, owner, status, runs) of the queued and running runs: what needs a worker."""
    cursor = connection.cursor()
    try:
        cursor.execute(_WORK)
        return [(str(q), str(o), str(s), int(n)) for q, o, s, n in cursor.fetchall()]
    finally:
        cursor.close()
