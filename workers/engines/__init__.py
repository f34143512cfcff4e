"""Engine registry: a run's `engine.kind` picks its runner class.

Imports are lazy so a worker only loads the engine it uses (vLLM imports take
10+ seconds and pull CUDA).
"""

from __future__ import annotations

import importlib
import threading

from farm.spec import RunSpec
from workers.engines.base import Engine
from workers.errors import EngineError
from workers.gpu.base import GpuDevice

# kind → "module:Class"; engines not listed here are not available in this build.
ENGINES: dict[str, str] = {
    "sim": "workers.engines.sim:SimEngine",
}


def make_engine(run: RunSpec, gpus: list[GpuDevice], abort: threading.Event) -> Engine:
    target = ENGINES.get(run.engine.kind)
    if target is None:
        raise EngineError(
            f"engine kind {run.engine.kind!r} is not available on this worker; "
            f"available: {', '.join(sorted(ENGINES))}"
        )
    module_name, class_name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise EngineError(f"engine {run.engine.kind!r} cannot be loaded: {exc}") from exc
    return cls(run, gpus, abort)
