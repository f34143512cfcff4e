"""The worker's own errors. Vendor errors (NVML, engines) are translated into
these once, at the boundary, so the task layer only decides: retry or fail."""

from __future__ import annotations


class FarmError(Exception):
    """Base of every error the worker raises on purpose."""

    kind = "internal"

    def __init__(self, message: str, log_tail: list[str] | None = None):
        super().__init__(message)
        self.log_tail = log_tail or []


class TransientError(FarmError):
    """Try the run again later (GPU busy, driver hiccup): not the run's fault."""

    kind = "transient"


class PermanentError(FarmError):
    """The run cannot succeed as specified (model missing, out of memory)."""

    kind = "permanent"


class EngineError(PermanentError):
    kind = "engine"


class OutOfMemoryError(PermanentError):
    kind = "oom"


class GpuError(TransientError):
    kind = "gpu"


class RunAborted(FarmError):
    """The worker is shutting down: hand the run back, record nothing."""

    kind = "aborted"


class RunTimeout(PermanentError):
    kind = "timeout"
