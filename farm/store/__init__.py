"""The farm's SQL store: the only package that imports sqlmodel/sqlalchemy.

    store = Store.open(url)              # raises SchemaError if not migrated
    store = Store.open(url, upgrade=True)
"""

from farm.store.db import SchemaError, make_engine, schema_state, upgrade
from farm.store.models import SweepRow
from farm.store.repository import RecordOutcome, Store

__all__ = ["RecordOutcome", "SchemaError", "Store", "SweepRow", "make_engine", "schema_state",
           "upgrade"]
