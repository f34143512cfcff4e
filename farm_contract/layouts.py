"""How an engine kind lays out a run's GPUs: the parallel degrees the farm sets.

Part of the contract (standard library only). The meter sums every GPU the
worker hands a run, so an engine must use all of them: a server told nothing
would run tensor-parallel 1 on the first of two pinned GPUs while the second
idles into the figures. Every engine kind therefore names its layout (a
required field of `farm_contract.engines.EngineKind`), and the one rule is
applied on both sides: `farmctl validate` refuses a sweep whose degrees do not
divide `gpus_per_run`, the worker sets the degrees on the engine's command
line or arguments (`workers.engines.launch.with_layout`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class LayoutError(ValueError):
    """A run whose GPUs the engine cannot use all of, with the argument at fault."""

    def __init__(self, message: str, argument: str | None = None):
        super().__init__(message)
        self.argument = argument


class GpuLayout(ABC):
    """How an engine spreads one run over its `gpu_count` devices.

    Attributes:
        max_gpus: the most GPUs one run can use, None for any.
    """

    max_gpus: int | None = None

    @abstractmethod
    def degrees(self, args: Mapping[str, Any], gpu_count: int, backend: str) -> dict[str, int]:
        """The parallel arguments the farm sets for a run on `gpu_count` devices of
        `backend` ("gpu", "sim", "cpu"), given the sweep's engine `args`; named as
        the engine names them. LayoutError when the run's GPUs cannot all be used."""


@dataclass(frozen=True)
class TensorParallel(GpuLayout):
    """Tensor parallelism over whatever the sweep's other degrees leave:
    `argument` = GPUs ÷ (product of `others`).

    Attributes:
        argument: the engine's tensor-parallel argument (`tensor_parallel_size`,
            SGLang's `tp_size`); on the command line `--` + its dashed name.
        others: the degrees a sweep may set itself (pipeline, data parallel).
        spelled: how errors name `others` ("pipeline × data parallel").
        engine: how errors name the engine ("vLLM").
    """

    argument: str = "tensor_parallel_size"
    others: tuple[str, ...] = ()
    spelled: str = ""
    engine: str = "the engine"

    def degrees(self, args: Mapping[str, Any], gpu_count: int, backend: str) -> dict[str, int]:
        """{argument: GPUs ÷ others}; none on the CPU device, which is one device."""
        given = {k: args[k] for k in self.others if k in args}
        product = 1
        for value in given.values():
            product *= int(value)
        if product < 1:
            raise LayoutError("parallel degrees must be positive", next(iter(given)))
        if given and ((backend == "cpu" and product != 1) or gpu_count % product):
            named = " × ".join(f"{k} = {v}" for k, v in given.items())
            raise LayoutError(
                f"{named} does not divide the run's {gpu_count} GPU(s) (gpus_per_run = "
                f"{gpu_count}): the farm runs {self.engine} with {self.argument} = GPUs ÷ "
                f"({self.spelled or ' × '.join(self.others)})", next(iter(given)))
        if backend == "cpu":
            return {}
        return {self.argument: gpu_count // product}


@dataclass(frozen=True)
class OneGpu(GpuLayout):
    """An engine that runs on one GPU (transformers' `generate`): nothing to set,
    and a run of more GPUs is refused rather than metered idle."""

    max_gpus: int | None = 1

    def degrees(self, args: Mapping[str, Any], gpu_count: int, backend: str) -> dict[str, int]:
        """None; LayoutError for more than one GPU."""
        if gpu_count > 1:
            raise LayoutError(f"the engine runs on 1 GPU per run, not {gpu_count}")
        return {}


@dataclass(frozen=True)
class EndpointOwn(GpuLayout):
    """An endpoint the farm does not start: its parallelism is its own. The farm
    meters the devices the worker hands the run, which the sweep matches to the
    endpoint's (docs/engines.md, "Isolation with a process the farm did not start")."""

    def degrees(self, args: Mapping[str, Any], gpu_count: int, backend: str) -> dict[str, int]:
        """None: nothing the farm starts takes a degree."""
        return {}


@dataclass(frozen=True)
class CommandOwn(GpuLayout):
    """A command the farm runs under its meter (`farmctl measure`): it sees exactly the
    run's GPUs (CUDA_VISIBLE_DEVICES), and how it spreads over them is its own."""

    def degrees(self, args: Mapping[str, Any], gpu_count: int, backend: str) -> dict[str, int]:
        """None: the farm sets no degree on a command it does not know."""
        return {}
