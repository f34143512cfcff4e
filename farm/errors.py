"""The coordinator's errors: one root, `FarmError`, and the exit codes it carries.

Dependency-free (standard library only), so any module of `farm/` can raise a
`FarmError` and `farmctl` can catch it without importing anything heavy. Each
subclass says which `ExitCode` it ends a command with; `farmctl` prints
`str(exc)` on one line and exits with `exc.exit_code` (farm/cli.py).

`ExitCode` itself is the contract's (`farm_contract.exitcodes`), re-exported
here: the worker process exits with it too. Two error types live outside `farm/`
and cannot derive from this root: the contract's `farm_contract.settings.
SettingsError` and `farm_contract.routing.UnknownGpuError` (the contract imports
nothing of the project) and `tasks.broker_state.BrokerUnavailable` (the worker
side of tasks imports only the contract). They carry their own `exit_code`, an
`ExitCode`, and `farm/cli.py` lists them explicitly.
"""

from __future__ import annotations

from farm_contract.exitcodes import ExitCode

__all__ = [
    "Conflict",
    "ExitCode",
    "FarmError",
    "InvalidInput",
    "NoMatch",
    "NotFound",
    "NotPermitted",
]


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
