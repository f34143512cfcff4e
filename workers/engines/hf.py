"""Hugging Face transformers `generate`: the batch scenario, for framework comparisons.

Same workloads as vLLM (exact input lengths, fixed output length with EOS
ignored through `min_new_tokens`, the same decoding settings). Engine
arguments:

- `batch_size` (default: all `num_prompts` at once): prompts per `generate`
  call; later batches wait for earlier ones, and that wait counts in their
  TTFT as it does in vLLM's batch;
- `attn_implementation` (e.g. "sdpa", "eager"): passed to `from_pretrained`.

Warm-up is one full-length `generate` per batch shape the load points use: the
first call of a shape is 3–5× slower (kernel selection, allocator growth).
transformers seeds one generator per batch, not per request: sampled runs are
repeatable per batch.
"""

from __future__ import annotations

from typing import Any

from farm_contract.engine_args import HfArgs
from workers.engines import register
from workers.engines.base import parse_engine_args
from workers.engines.launch import device_backend, model_settings
from workers.engines.offline import OfflineEngine
from workers.errors import EngineError

# The hf engine's arguments: the contract's model, which `farmctl validate` checks
# sweeps with (unknown names and the keys the farm sets are refused there and here).
HfEngineArgs = HfArgs


@register("hf", "batch")
class HfEngine(OfflineEngine):
    """Hugging Face transformers `model.generate` in an engine child process (batch scenario)."""
    backend = "hf"
    display_name = "transformers"

    def engine_settings(self) -> dict[str, Any]:
        """The child's settings: model plus validated arguments; one GPU only."""
        args = parse_engine_args(HfEngineArgs, self.run.engine.args, "hf")
        if len(self.gpus) != 1:
            raise EngineError(f"the hf engine runs on one GPU, this run has {len(self.gpus)}")
        settings = model_settings(self.run)
        settings["device"] = "cuda" if device_backend(self.gpus) == "gpu" else "cpu"
        settings.update(args.model_dump(exclude_none=True))
        return settings

    def batch_size(self) -> int | None:
        """Prompts per `generate` call; None means all of a load point's prompts at once."""
        return self.settings.get("batch_size")

    def warmup_batches(self) -> list[int]:
        """Prompt counts to warm up with: one per batch shape the load points use, largest first."""
        n = self.scenario.num_prompts
        size = self.batch_size() or n
        shapes = {min(size, n)}
        if n % size:
            shapes.add(n % size)
        return sorted(shapes, reverse=True)

    @property
    def in_process_engine(self) -> bool:
        """False: transformers runs in the engine child itself, never a further process."""
        return False
