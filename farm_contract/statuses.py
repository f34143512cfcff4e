"""Where a run stands: the one list of run statuses, and the groups the farm asks about.

Standard library only, so the DB-API fast path of `farmctl status`
(farm/store/counts.py) reads it without loading the records. The groups are
tuples of plain strings: they go into SQL (the `runs.status` CHECK constraint
is written from `RUN_STATUSES`), so their text must stay the values, not
`RunStatus.queued`.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands: queued, running, or one of the terminal statuses.
    Declaration order is display order (status tables, counts)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the run is over: succeeded, failed or cancelled."""
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


# Every status, in display order.
RUN_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)
# Over: nothing will run it again unless someone retries it.
TERMINAL_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus if s.terminal)
# Waiting for a worker or on one now.
PENDING_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus if not s.terminal)
# The statuses a worker's result can carry (RunResult.status).
RESULT_STATUSES: tuple[str, ...] = (RunStatus.succeeded.value, RunStatus.failed.value)
