"""Engine registry: a run's `engine.kind` and scenario kind pick its class.

An engine is one module in this package whose class carries the `register`
decorator:

    @register("sglang", "server")
    class SglangServerEngine(OpenAIServerEngine): ...

`make_engine` imports the package's modules the first time it is asked for an
engine, so the decorators have run; no list of engines is kept anywhere else.
Engine modules keep their heavy imports (vLLM, torch: 10+ seconds, CUDA)
inside the code that runs the engine, so importing them all costs little.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from typing import TypeVar

from farm_contract.runspec import RunSpec
from workers.engines.base import Engine
from workers.errors import EngineError
from workers.gpu.base import GpuDevice

E = TypeVar("E", bound=type[Engine])

# (engine kind, scenario kind) → class; scenario None matches any scenario.
_REGISTRY: dict[tuple[str, str | None], type[Engine]] = {}
_BROKEN: dict[str, str] = {}          # module → why it could not be imported
_discovered = False
_lock = threading.Lock()


def register(kind: str, scenario: str | None = None) -> Callable[[E], E]:
    """Class decorator: the engine for runs of `kind` with a `scenario` scenario
    ("server", "batch", or None for both). Sets the class's `kind`."""
    def add(cls: E) -> E:
        key = (kind, scenario)
        existing = _REGISTRY.get(key)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"engine {kind!r} ({scenario or 'any'} scenario) is registered "
                             f"twice: {existing.__module__}.{existing.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        cls.kind = kind
        _REGISTRY[key] = cls
        return cls
    return add


def _discover() -> None:
    """Import every module of this package once, so their `register` calls have run."""
    global _discovered
    with _lock:
        if _discovered:
            return
        for module in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
            try:
                importlib.import_module(module.name)
            except ImportError as exc:
                _BROKEN[module.name] = f"{type(exc).__name__}: {exc}"
        _discovered = True


def registered() -> dict[tuple[str, str | None], type[Engine]]:
    """Every engine this worker can run: (kind, scenario or None) → class."""
    _discover()
    return dict(_REGISTRY)


def engine_class(run: RunSpec) -> type[Engine]:
    """The class that runs `run`; an EngineError naming the available ones otherwise."""
    engines = registered()
    kind, scenario = run.engine.kind, run.scenario.kind
    cls = engines.get((kind, scenario)) or engines.get((kind, None))
    if cls is None:
        available = sorted(f"{k} ({s or 'any'} scenario)" for k, s in engines)
        broken = "".join(f"; {name} failed to import ({why})" for name, why in _BROKEN.items())
        raise EngineError(f"engine kind {kind!r} with a {scenario} scenario is not "
                          f"available on this worker; available: {', '.join(available)}"
                          + broken)
    return cls


def resident_pids(run: RunSpec) -> set[int]:
    """Processes of `run`'s engine already on its devices before the run (see
    `Engine.resident_pids`); the preflight and the idle windows allow them.

    Never raises: an unknown engine or bad engine arguments give no pids here,
    and fail the run where the engine is made, with the engine's own message.
    """
    try:
        return engine_class(run).resident_pids(run)
    except EngineError:
        return set()


def make_engine(run: RunSpec, gpus: list[GpuDevice], abort: threading.Event) -> Engine:
    """The engine for `run` on `gpus` (not started yet)."""
    return engine_class(run)(run, gpus, abort)
