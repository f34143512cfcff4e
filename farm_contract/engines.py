"""The engine kinds both sides know: one entry per kind, the sweep rules it brings.

Part of the contract (standard library only). A sweep names an engine by
`kind`; the coordinator checks the sweep against the kind's entry before
anything is queued (which scenarios it runs, simulated or real devices), and a
worker runs it with the class registered for that kind in `workers.engines`
(a test checks that every kind here has a registered engine for each of its
scenarios, and that no engine is registered for a kind not listed here).

Each entry names the pydantic model of the kind's arguments
(`farm_contract.engine_args`): the coordinator checks a sweep's `[engine]`
table with it, the worker's engine reads a run's arguments through it.

Adding an engine kind: one entry here (with its arguments' model in
`engine_args.py`), one module in `workers/engines/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from farm_contract.engine_args import EngineArgs, HfArgs, OpenAIArgs, SimArgs, vllm_args_model

ScenarioKind = Literal["server", "batch"]


@dataclass(frozen=True)
class EngineKindInfo:
    """What the sweep side needs to know of an engine kind.

    Attributes:
        kind: the name a sweep's `[engine] kind` gives.
        scenarios: the scenario kinds it runs.
        simulated: True for the simulated engine, which runs on simulated GPUs
            only; every other engine runs on real devices only (a sweep is all
            simulated or all measured, so reports never mix the two).
        summary: one line for errors and docs.
        args_model: returns the model of the kind's engine arguments (a function, so
            vLLM's 245-field model is built only when a sweep needs it).
        max_gpus_per_run: the most GPUs one run of the kind can use, None for any.
    """

    kind: str
    scenarios: tuple[ScenarioKind, ...]
    simulated: bool
    summary: str
    args_model: Callable[[], type[EngineArgs]]
    max_gpus_per_run: int | None = None

    @property
    def args(self) -> type[EngineArgs]:
        """The model of the kind's engine arguments."""
        return self.args_model()


ENGINE_KINDS: dict[str, EngineKindInfo] = {info.kind: info for info in (
    EngineKindInfo("vllm", ("server", "batch"), False,
                   "vLLM: offline batches, or its OpenAI-compatible server under load",
                   vllm_args_model),
    EngineKindInfo("hf", ("batch",), False, "Hugging Face transformers generate(), batched",
                   lambda: HfArgs, max_gpus_per_run=1),
    EngineKindInfo("sim", ("server", "batch"), True,
                   "the simulated engine (performance and power model), SIMULATED",
                   lambda: SimArgs),
    EngineKindInfo("openai", ("server",), False,
                   "an OpenAI-compatible endpoint that is already running, at base_url",
                   lambda: OpenAIArgs),
)}

# The `kind` field's type, from the entries above (pydantic lists them in errors).
EngineKind = Literal[tuple(ENGINE_KINDS)]  # type: ignore[valid-type]


def engine_kind(kind: str) -> EngineKindInfo:
    """The entry of `kind`; a ValueError naming the known kinds otherwise."""
    try:
        return ENGINE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r}; known: "
                         f"{', '.join(ENGINE_KINDS)}") from None
