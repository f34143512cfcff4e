"""Store errors, importable without SQLAlchemy."""

from farm.errors import ExitCode, FarmError

UPGRADE_HINT = "run `farmctl db upgrade`"


class SchemaError(FarmError, RuntimeError):
    """The database has no schema, or an older one than this code expects."""

    exit_code = ExitCode.STORE_ERROR
