"""The coordinator's errors: one root, `FarmError`, and the exit codes it carries.

Dependency-free (standard library only), so any module of `farm/` can raise a
`FarmError` and `farmctl` can catch it without importing anything heavy. Each
subclass says which `ExitCode` it ends a command with; `farmctl` prints
`str(exc)` on one line and exits with `exc.exit_code` (farm/cli.py).

Two error types live outside `farm/` and cannot derive from this root: the
contract's `farm_contract.settings.SettingsError` and `farm_contract.routing.
UnknownGpuError` (the contract imports nothing of the project) and
`tasks.broker_state.BrokerUnavailable` (the worker side of tasks imports only
the contract). They carry their own `exit_code` class attribute with the same
value as the code named here, and `farm/cli.py` lists them explicitly.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of `farmctl` (docs/cli.md#exit-codes)."""

    OK = 0
    RUNS_FAILED = 1          # everything ran, some runs failed
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


class FarmError(Exception):
    """Root of every coordinator error; `exit_code` is what `farmctl` exits with.

    Subclasses set `exit_code` as a class attribute; an instance may be given
    another one (`FarmError("…", exit_code=ExitCode.NOT_FOUND)`).
    """

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, *args: object, exit_code: ExitCode | None = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = ExitCode(exit_code)


class InvalidInput(FarmError):
    """Bad arguments or input files (exit 2)."""

    exit_code = ExitCode.INVALID_INPUT


class NotFound(FarmError):
    """No such sweep, model or bin (exit 5)."""

    exit_code = ExitCode.NOT_FOUND


class NoMatch(FarmError):
    """Nothing meets the limit, or nothing matches (exit 7)."""

    exit_code = ExitCode.NO_MATCH


class Conflict(FarmError):
    """What the command would do clashes with what the store holds or is doing (exit 8)."""

    exit_code = ExitCode.CONFLICT


class NotPermitted(FarmError):
    """Another user's sweep: only its owner or an admin may change it (exit 9)."""

    exit_code = ExitCode.NOT_PERMITTED
