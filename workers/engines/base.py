"""One lifecycle contract for every engine.

The runner drives an engine through:

    start(deadline)  load the model on the run's GPUs; must be ready by `deadline_s`
    warmup()         untimed requests so first-call costs stay out of the figures
    run_load_point() one load point; the engine opens and closes the steady-state
                     window on the meter itself, because only it knows when its
                     batch is full and when it starts to drain
    stop()           always called (in `finally`), even after a failed start

Engines raise `workers.errors` types; anything else is a bug and fails the run.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from farm_contract.engine_args import EngineArgs, EngineArgsError, parse_args
from farm_contract.engines import engine_kind
from farm_contract.records import EngineInfo, RequestRecord
from farm_contract.runspec import RunSpec
from workers.errors import EngineError
from workers.gpu.base import GpuDevice

if TYPE_CHECKING:
    from workers.loadtools import ToolReport

ArgsModel = TypeVar("ArgsModel", bound=EngineArgs)

# Which workload requests a real engine sends: request `i` of load point `k` is
# request k·REQUESTS_PER_POINT + i, warm-up requests start at WARMUP_START, so no
# load point profits from a prefix cached by an earlier one. Within a point a
# batch's extra passes follow an emptied prefix cache, and a server point that
# outgrows its prompt list repeats them salted (`ClientOptions.salt_repeats`,
# vLLM) or says so in its notes (another server).
REQUESTS_PER_POINT = 1_000_000
WARMUP_START = 1_000_000_000


def parse_engine_args(model: type[ArgsModel], args: Mapping[str, Any],
                      engine: str) -> ArgsModel:
    """A run's engine arguments through the contract's model of its kind (the one
    `farmctl validate` checked the sweep with); an EngineError naming each bad
    argument otherwise (a RunSpec need not have come from a validated sweep)."""
    try:
        return parse_args(model, args, engine)  # type: ignore[return-value]
    except EngineArgsError as exc:
        raise EngineError(str(exc)) from None


def engine_args(run: RunSpec) -> EngineArgs:
    """`run`'s engine arguments through the model its kind names in the contract."""
    return parse_engine_args(engine_kind(run.engine.kind).args, run.engine.args,
                             run.engine.kind)


class WindowMeter(Protocol):
    """Opens and closes named energy windows (see workers.power.Meter)."""

    def begin(self, name: str, load_point: int | None = None) -> None:
        """Open the energy window `name` (of one load point, if given)."""

    def end(self, name: str, load_point: int | None = None) -> None:
        """Close the energy window `name` (of one load point, if given)."""

    def now_s(self) -> float:
        """Seconds on the meter's clock (time.monotonic on Linux)."""


@dataclass
class LoadPointOutcome:
    """What an engine observed during one load point."""

    requests: list[RequestRecord]
    duration_s: float                       # whole load point, wall clock
    notes: list[str] = field(default_factory=list)
    # Self-sizing (MeasurementSpec.steady_target_s): batch passes over the same
    # prompts; server sending added beyond duration_s. None: not self-sized.
    passes: int | None = None
    extended_s: float | None = None
    # A measured command's counts, from its load tool's own result file (None: the
    # figures come from `requests`; a command without a result file has neither).
    reported: ToolReport | None = None


class Engine(ABC):
    """An engine driven through start → warmup → run_load_point (each) → stop."""

    kind: str

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        self.run = run
        self.gpus = gpus
        self.abort = abort

    @property
    @abstractmethod
    def info(self) -> EngineInfo:
        """Kind, version and whether it is simulated."""

    @abstractmethod
    def start(self, deadline_s: float) -> None:
        """Load the model; raise EngineError if not ready within `deadline_s`."""

    @abstractmethod
    def warmup(self) -> None:
        """Warm-up requests (not part of any load point's figures)."""

    @abstractmethod
    def run_load_point(self, index: int, kind: str, value: float,
                       meter: WindowMeter) -> LoadPointOutcome:
        """Run one load point, calling meter.begin/end("steady", index) around its
        steady state."""

    def pids(self) -> set[int]:
        """Processes of this engine that may use the GPUs (not foreign tenants)."""
        return set()

    @classmethod
    def resident_pids(cls, run: RunSpec) -> set[int]:
        """Processes of this run's engine already on the GPUs before the engine is
        made (an endpoint the farm does not start): allowed from the preflight on.
        None for an engine the farm starts itself."""
        return set()

    @abstractmethod
    def stop(self) -> None:
        """Free the GPUs. Must be safe to call after a failed or partial start."""
