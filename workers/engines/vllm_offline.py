"""vLLM batch scenario: offline generation of `num_prompts` prompts.

`vllm.LLM` is loaded in the engine child (`workers.engines.child`) and driven
step by step, so every token of every request gets its own time. The sweep's
`[engine]` arguments are vLLM's own engine arguments (`max_num_seqs`,
`gpu_memory_utilization`, `enforce_eager`, `kv_cache_memory_bytes`, …) and go
to `LLM(...)` unchanged; see `workers.engines.launch.vllm_settings`.
"""

from __future__ import annotations

from typing import Any

from farm_contract.records import EngineStartup
from workers.engines import register, vllm_startup
from workers.engines.base import engine_args
from workers.engines.launch import device_backend, vllm_settings
from workers.engines.offline import OfflineEngine


@register("vllm", "batch")
class VllmOfflineEngine(OfflineEngine):
    """vLLM's batch scenario: `vllm.LLM` in an engine child process, driven step by step."""
    backend = "vllm"
    display_name = "vLLM"

    def engine_settings(self) -> dict[str, Any]:
        """The `vllm.LLM` settings: the model's, the run's GPUs and the sweep's arguments;
        a config given as a JSON string (`compilation_config = '{"mode": 0}'`) is decoded,
        as vLLM's server decodes its flag."""
        settings = vllm_settings(self.run, self.gpus)
        configs = engine_args(self.run)
        settings.update(configs.json_configs())  # type: ignore[attr-defined]
        return settings

    def read_startup(self, ready: dict[str, Any]) -> EngineStartup | None:
        """The KV cache the child read from vLLM's config, and what vLLM's log says of its
        start (model load, compile, graph capture, KV cache size)."""
        logged = vllm_startup.from_log(vllm_startup.log_lines(self.process.log_path)
                                       if self.process else [])
        return vllm_startup.startup(ready.get("startup") or {}, logged)

    @property
    def in_process_engine(self) -> bool:
        """On the CPU, vLLM's engine core stays in the child process (see launch.engine_env)."""
        # On the CPU, vLLM's engine core stays in the child (see launch.engine_env).
        return device_backend(self.gpus) == "cpu"
