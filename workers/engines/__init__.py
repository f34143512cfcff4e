"""Engine registry: a run's `engine.kind` and scenario kind pick its class.

Imports are lazy so a worker only loads the engine it uses (vLLM imports take
10+ seconds and pull CUDA).
"""

from __future__ import annotations

import importlib
import threading

from farm_contract.runspec import RunSpec
from workers.engines.base import Engine
from workers.errors import EngineError
from workers.gpu.base import GpuDevice

# (engine kind, scenario kind) → "module:Class"; None matches any scenario.
ENGINES: dict[tuple[str, str | None], str] = {
    ("sim", None): "workers.engines.sim:SimEngine",
    ("vllm", "batch"): "workers.engines.vllm_offline:VllmOfflineEngine",
    ("vllm", "server"): "workers.engines.vllm_server:VllmServerEngine",
    ("hf", "batch"): "workers.engines.hf:HfEngine",
}


def make_engine(run: RunSpec, gpus: list[GpuDevice], abort: threading.Event) -> Engine:
    kind, scenario = run.engine.kind, run.scenario.kind
    target = ENGINES.get((kind, scenario)) or ENGINES.get((kind, None))
    if target is None:
        available = sorted(f"{k} ({s or 'any'} scenario)" for k, s in ENGINES)
        raise EngineError(f"engine kind {kind!r} with a {scenario} scenario is not "
                          f"available on this worker; available: {', '.join(available)}")
    module_name, class_name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise EngineError(f"engine {run.engine.kind!r} cannot be loaded: {exc}") from exc
    return cls(run, gpus, abort)
