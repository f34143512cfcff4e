"""Every FARM_* setting, read from the environment in one place.

Credentials (broker password, database password, Flower auth) come from the
environment only, never from sweep files or the command line history.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DB_URL = "sqlite:///farm.db"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


class SettingsError(ValueError):
    """A FARM_* variable with a value farm cannot use."""

    # farmctl's INVALID_INPUT (farm.errors.ExitCode): the contract imports nothing
    # of the project, so the code is set here and farm/cli.py maps the class.
    exit_code = 2


@dataclass(frozen=True)
class Settings:
    broker_url: str = DEFAULT_BROKER_URL
    db_url: str = DEFAULT_DB_URL
    # Redis hands an unacked run to another worker after this long (FIELD_NOTES):
    # it must exceed the longest run plus retry delays.
    visibility_timeout_s: float = 6 * 3600.0
    # A run taking longer than this is stopped and failed.
    run_timeout_s: float = 4 * 3600.0
    # How often a busy worker refreshes the heartbeat of the run it holds, and how
    # long after a missed heartbeat the reaper hands the run back to the queue.
    heartbeat_s: float = 5.0
    reaper_grace_s: float = 60.0
    # Where a worker keeps results it could not send before stopping (sent at restart).
    spool_dir: str = str(Path.home() / ".farm" / "spool")
    flower_user: str | None = None
    flower_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.run_timeout_s >= self.visibility_timeout_s:
            raise SettingsError(
                f"FARM_RUN_TIMEOUT_S ({self.run_timeout_s:g}) must be below "
                f"FARM_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s:g}): otherwise "
                "Redis hands a run still in progress to a second worker"
            )


def load_settings() -> Settings:
    env = os.environ
    return Settings(
        broker_url=env.get("FARM_BROKER_URL") or DEFAULT_BROKER_URL,
        db_url=env.get("FARM_DB_URL") or DEFAULT_DB_URL,
        visibility_timeout_s=_float("FARM_VISIBILITY_TIMEOUT_S", 6 * 3600.0),
        run_timeout_s=_float("FARM_RUN_TIMEOUT_S", 4 * 3600.0),
        heartbeat_s=_float("FARM_HEARTBEAT_S", 5.0),
        reaper_grace_s=_float("FARM_REAPER_GRACE_S", 60.0),
        spool_dir=env.get("FARM_SPOOL_DIR") or str(Path.home() / ".farm" / "spool"),
        flower_user=env.get("FARM_FLOWER_USER") or None,
        flower_password=env.get("FARM_FLOWER_PASSWORD") or None,
    )


def redact(url: str) -> str:
    """A URL fit for logs: the password replaced by ***."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"
