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
from typing import Any

from farm.store.errors import UPGRADE_HINT, SchemaError

# The newest migration; a test keeps it equal to Alembic's head.
HEAD_REVISION = "0005"
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

_BY_SWEEP = ("SELECT s.name, c.status, c.n FROM (SELECT sweep_id, status, COUNT(*) AS n "
             "FROM runs {where} GROUP BY sweep_id, status) c "
             "JOIN sweeps s ON s.id = c.sweep_id")
_BY_QUEUE = "SELECT queue, status, COUNT(*) FROM runs {where} GROUP BY queue, status"

Row = tuple[str, str, int]


def _order(rows: list[Any]) -> list[Row]:
    rank = {status: i for i, status in enumerate(RUN_STATUSES)}
    return sorted(((str(a), str(b), int(n)) for a, b, n in rows),
                  key=lambda r: (r[0], rank.get(r[1], len(rank))))


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
