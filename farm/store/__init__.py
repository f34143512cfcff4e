"""The farm's SQL store: the only package that imports sqlmodel/sqlalchemy.

    store = Store.open(url)              # raises SchemaError if not migrated
    store = Store.open(url, upgrade=True)

Names are loaded on first use, so `farm.store.counts` (the driver-only path
behind `farmctl status`) does not pay for SQLAlchemy and Alembic imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SchemaError": "farm.store.errors",
    "make_engine": "farm.store.db",
    "schema_state": "farm.store.db",
    "upgrade": "farm.store.db",
    "SweepRow": "farm.store.models",
    "RecordOutcome": "farm.store.repository",
    "Store": "farm.store.repository",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'farm.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
