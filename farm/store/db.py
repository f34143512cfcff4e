"""Engines, write transactions and schema migrations.

SQLite (a file on one host) and PostgreSQL (by URL) are both supported. The
schema is owned by the Alembic migrations in `migrations/`, run from code
(`upgrade`), never created with `create_all`.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from farm.errors import InvalidInput
from farm.store.errors import UPGRADE_HINT, SchemaError
from farm_contract.settings import redact

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SchemaState = Literal["current", "missing", "outdated"]
# Execution option marking a connection that will write (see _sqlite_begin).
WRITE_OPTION = "farm_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Key of the PostgreSQL advisory lock held while migrating.
_MIGRATION_LOCK_KEY = zlib.crc32(b"farm.store.migrations")




def normalize_url(url: str) -> str:
    """PostgreSQL URLs always go through psycopg 3 (the only driver installed)."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def is_sqlite(url: str) -> bool:
    """Whether `url` names an SQLite database."""
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def make_engine(url: str) -> Engine:
    """An engine for `url`: SQLite with WAL, a busy timeout and foreign keys, else pooled."""
    url = normalize_url(url)
    if is_sqlite(url):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True)


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        _require_folder(Path(database).expanduser(), url)
    engine = create_engine(url, pool_pre_ping=True)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _require_folder(database: Path, url: str) -> None:
    """Refuse a store in a folder that does not exist: a mistyped path would
    otherwise make the folder and a new, empty store beside the user's own."""
    folder = database.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise InvalidInput(
            f"FARM_DB_URL={redact(url)!r} names a store in {folder}, which {what}: fix "
            f"FARM_DB_URL, or create the folder first (mkdir -p {folder}) if a new store "
            "belongs there")


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself: Python's sqlite3 would only begin at the
    # first INSERT/UPDATE, so a read-then-write would not be one transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL: readers never block the writer (one host only: WAL fails on network filesystems).
    _set_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _set_wal(cursor: Any) -> None:
    """Switch to WAL, waiting like busy_timeout would: on a new file the switch
    fails at once (without the busy handler) while another connection holds a lock."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_begin(connection: Connection) -> None:
    # A writer takes the write lock at BEGIN: a deferred transaction that reads
    # and then writes fails with SQLITE_BUSY when another writer got in between.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that may write; committed on success."""
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        yield connection


# --------------------------------------------------------------- migrations


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration revision, or None when there are no migrations."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(url: str) -> None:
    """Bring the schema to the newest revision. Safe to run from several processes at once."""
    engine = make_engine(url)
    try:
        with write_transaction(engine) as connection:
            if connection.dialect.name == "postgresql":
                # Released at commit; a second upgrader then finds the schema current.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
            command.upgrade(_alembic_config(connection), "head")
    finally:
        engine.dispose()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def engine_schema_state(engine: Engine) -> SchemaState:
    """The schema's state: "current", "outdated" (older, or tables but no revision), "missing"."""
    with engine.connect() as connection:
        revision = current_revision(connection)
        if revision is None:
            has_tables = bool(inspect(connection).get_table_names())
            return "outdated" if has_tables else "missing"
    return "current" if revision == head_revision() else "outdated"


def schema_state(url: str) -> SchemaState:
    """The schema state of the database at `url` (see engine_schema_state)."""
    engine = make_engine(url)
    try:
        return engine_schema_state(engine)
    finally:
        engine.dispose()


def require_current(engine: Engine) -> None:
    """Raise SchemaError unless the schema is at the newest revision."""
    state = engine_schema_state(engine)
    if state == "current":
        return
    where = engine.url.render_as_string(hide_password=True)
    if state == "missing":
        raise SchemaError(f"the database {where} has no farm schema: {UPGRADE_HINT}")
    with engine.connect() as connection:
        revision = current_revision(connection)
    raise SchemaError(
        f"the database {where} is at schema revision {revision or 'unknown'}, this farm "
        f"expects {head_revision()}: {UPGRADE_HINT} (with the newest farm if the database "
        "was upgraded by a newer one)"
    )
