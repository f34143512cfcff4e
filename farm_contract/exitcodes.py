"""The exit codes of every farm process (`farmctl`, `farmctl worker`, the tools).

In the contract because both sides exit with them: `farmctl` (farm/cli.py) and
the worker process it execs (tasks/worker_main.py), which imports nothing of
`farm/`. Errors that cannot derive from `farm.errors.FarmError` (the contract's
`SettingsError`, `tasks.broker_state.BrokerUnavailable`) name theirs from here.
docs/cli.md#exit-codes lists them for a person.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of `farmctl` and the processes it starts."""

    OK = 0
    RUNS_FAILED = 1          # everything ran, some runs failed; a --check found a difference
    INVALID_INPUT = 2        # bad sweep file or arguments (click uses 2 too)
    STORE_ERROR = 3          # database unreachable or schema missing
    BROKER_ERROR = 4         # Redis unreachable
    NOT_FOUND = 5            # no such sweep
    NO_HARDWARE = 6          # no GPU (and no --sim) for a worker
    NO_MATCH = 7             # recommend: nothing meets the limit; compare: no point matches
    CONFLICT = 8             # the sweep name holds another file; the sweep is being run already
    NOT_PERMITTED = 9        # another user's sweep: only its owner or an admin may change it
    INTERNAL = 70            # a bug or an environment failure (EX_SOFTWARE)
    INTERRUPTED = 130        # `farmctl run` stopped by Ctrl-C (128 + SIGINT, as shells say)
