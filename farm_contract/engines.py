"""The engine kinds both sides know: one entry per kind, the sweep rules it brings.

Part of the contract (standard library only). A sweep names an engine by
`kind`; the coordinator checks the sweep against the kind's entry before
anything is queued (which scenarios it runs, simulated or real devices), and a
worker runs it with the class registered for that kind in `workers.engines`
(a test checks that every kind here has a registered engine for each of its
scenarios, and that no engine is registered for a kind not listed here).

Adding an engine kind: one entry here, one module in `workers/engines/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    """

    kind: str
    scenarios: tuple[ScenarioKind, ...]
    simulated: bool
    summary: str


ENGINE_KINDS: dict[str, EngineKindInfo] = {info.kind: info for info in (
    EngineKindInfo("vllm", ("server", "batch"), False,
                   "vLLM: offline batches, or its OpenAI-compatible server under load"),
    EngineKindInfo("hf", ("batch",), False, "Hugging Face transformers generate(), batched"),
    EngineKindInfo("sim", ("server", "batch"), True,
                   "the simulated engine (performance and power model), SIMULATED"),
    EngineKindInfo("openai", ("server",), False,
                   "an OpenAI-compatible endpoint that is already running, at base_url"),
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
