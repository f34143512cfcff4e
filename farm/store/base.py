"""The store's connection: engines, read and write sessions, dialect helpers.

Writes run in one transaction (`_write`; db.write_transaction takes the run's
row: `SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite). The
Store's jobs (farm.store.lifecycle, .recording, .views) are mixins on this base."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self, TypeVar

from sqlalchemy import (
    String,
    Table,
    any_,
    bindparam,
    insert,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from farm.store import db

# Ids per IN (...) list: below SQLite's oldest bound-parameter limit (999).
CHUNK = 900

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def insert_many(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """One executemany INSERT of `rows` (nothing for none)."""
    if rows:
        session.execute(insert(table), rows)


class StoreBase:
    """The farm's SQL store's connection. Open with `Store.open(url)`; close when done."""

    def __init__(self, url: str):
        self.url = url
        self.engine = db.make_engine(url)
        self._write_engine = self.engine.execution_options(**{db.WRITE_OPTION: True})

    @classmethod
    def open(cls, url: str, upgrade: bool = False) -> Self:
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
        """Dispose of the engine's connections."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """The database's dialect name: "sqlite" or "postgresql"."""
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

    def _id_filters(self, column: Any, ids: Sequence[str]) -> Iterator[Any]:
        """WHERE clauses covering `ids`: one array parameter on PostgreSQL, else
        chunked IN lists (SQLite limits bound parameters per statement)."""
        if self.dialect == "postgresql":
            yield column == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(String())))
            return
        for part in chunks(ids):
            yield column.in_(part)
