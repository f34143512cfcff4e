"""Store errors, importable without SQLAlchemy."""

UPGRADE_HINT = "run `farmctl db upgrade`"


class SchemaError(RuntimeError):
    """The database has no schema, or an older one than this code expects."""
