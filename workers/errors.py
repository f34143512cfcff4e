"""The worker's own errors. Vendor errors (NVML, engines) are translated into
these once, at the boundary, so the task layer only decides: retry or fail."""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""

    kind = "internal"

    def __init__(self, message: str, log_tail: list[str] | None = None):
        super().__init__(message)
        self.log_tail = log_tail or []


class TransientError(WorkerError):
    """Try the run again later (GPU busy, driver hiccup): not the run's fault."""

    kind = "transient"


class PermanentError(WorkerError):
    """The run cannot succeed as specified (model missing, out of memory)."""

    kind = "permanent"


class EngineError(PermanentError):
    """The engine could not start or serve the run (bad arguments, crash); carries its log tail."""

    kind = "engine"


class OutOfMemoryError(PermanentError):
    """The model, or its KV cache, does not fit in the run's GPU memory."""

    kind = "oom"


class GpuError(TransientError):
    """A GPU reading or driver call failed (e.g. an NVML error): retry the run later."""

    kind = "gpu"


class RunAborted(WorkerError):
    """The worker is shutting down: hand the run back, record nothing."""

    kind = "aborted"


class TenantHeld(RunAborted):
    """The run's GPUs are held by another tenant, or not settled since one left:
    hand the run back without charging it an attempt (workers/tenants.py)."""

    kind = "tenant"


class RunTimeout(PermanentError):
    """The run took longer than the worker's time limit (`FARM_RUN_TIMEOUT_S`)."""

    kind = "timeout"
