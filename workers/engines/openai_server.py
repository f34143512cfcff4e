"""Engines reached over the OpenAI HTTP API and loaded by the farm's load generator.

Two bases:

- `OpenAIEngine`: everything on the client side — the server scenario's
  warm-up and load points through `workers.loadgen` (which opens the
  steady-state window once the batch is full and closes it when sending
  stops), prompts from `workers.workload`, goodput against the scenario's SLO.
  A subclass says where the server is (`base_url`, `served_model`) and how it
  comes and goes (`start`, `stop`).
- `OpenAIServerEngine`: a server the farm launches for the run, in its own
  process group (`workers.engines.process`) on a free loopback port, ready once
  `GET health_path` answers 200 before the start deadline; a server that exits
  first or never gets healthy fails the run with its own last log lines, and
  its whole group is killed. A new OpenAI-compatible server is one module: a
  subclass that declares its command line, health path and distributions
  (for the version), with `workers.engines.register`:

      @register("sglang", "server")
      class SglangServerEngine(OpenAIServerEngine):
          display_name = "SGLang server"
          distributions = ("sglang",)

          def command(self, port: int) -> list[str]:
              return [sys.executable, "-m", "sglang.launch_server", "--host",
                      "127.0.0.1", "--port", str(port), "--model-path",
                      self.run.model.source]

One server serves every load point of a run (concurrency levels or request
rates): it is started once (the runner's "load" window), warmed up, then
loaded point after point.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from abc import abstractmethod
from typing import Any, ClassVar

from farm_contract.records import EngineInfo
from farm_contract.runspec import RunSpec, ServerLoad
from workers.engines.base import (
    REQUESTS_PER_POINT,
    WARMUP_START,
    Engine,
    LoadPointOutcome,
    WindowMeter,
)
from workers.engines.launch import device_backend, engine_env, layout, with_layout
from workers.engines.process import EngineProcess, free_loopback_port, wait_until
from workers.errors import EngineError, RunAborted
from workers.gpu.base import GpuDevice
from workers.loadgen import ClientOptions, LoadgenOutcome, Slo, point_args, run_load_point
from workers.workload import PromptRequest, Workload

HEALTH_TIMEOUT_S = 2.0
# Health checks never go through an http_proxy from the environment (the load
# generator does not either: aiohttp with trust_env=False).
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Distinct prompts per closed-loop load point (cycled beyond that); open loop
# gets one per scheduled arrival up to this.
MAX_PROMPTS_PER_POINT = 4096
MIN_PROMPTS_PER_POINT = 256
DEFAULT_SLO_TTFT_MS = 2000.0
DEFAULT_SLO_TPOT_MS = 200.0


def installed_version(distributions: tuple[str, ...]) -> str | None:
    """The version of the first of `distributions` that is installed, else None."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in distributions:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def http_get(url: str, *, timeout_s: float = HEALTH_TIMEOUT_S,
             headers: dict[str, str] | None = None) -> tuple[int, bytes] | None:
    """(status, body) of `GET url` without any proxy; None when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with NO_PROXY.open(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, ValueError):
        return None


class OpenAIEngine(Engine):
    """An engine whose model answers the OpenAI completions/chat API (server scenarios)."""

    display_name: ClassVar[str] = "OpenAI server"
    # vLLM's server may put several tokens in one streamed chunk; engines that
    # honour `continuous_usage_stats` set it so every token is placed exactly.
    client: ClassVar[ClientOptions] = ClientOptions()

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        if not isinstance(run.scenario, ServerLoad):
            raise EngineError(f"the {self.display_name} engine runs server scenarios")
        self.scenario: ServerLoad = run.scenario
        self._workload: Workload | None = None

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The server's root URL, e.g. http://127.0.0.1:8000 (the API is under /v1)."""

    @property
    @abstractmethod
    def served_model(self) -> str:
        """The `model` field of every request."""

    def options(self) -> ClientOptions:
        """How the load generator sends requests (the class's `client` by default)."""
        return self.client

    def notes(self) -> list[str]:
        """Remarks recorded with every load point (none by default)."""
        return []

    # --------------------------------------------------------------- lifecycle

    def load_workload(self) -> None:
        """Build the run's workload (the model's tokenizer, from local files)."""
        self._workload = Workload.from_run(self.run)

    def warmup(self) -> None:
        """Full-length requests for `warmup_s` at the run's highest load (untimed)."""
        if self.scenario.warmup_s <= 0:
            return
        concurrency = max(self.scenario.concurrency or [self.scenario.max_concurrency or 1])
        prompts = self.workload.prompts(max(concurrency * 4, 16), start=WARMUP_START)
        outcome = self._load(prompts, concurrency=concurrency,
                             duration_s=self.scenario.warmup_s, api=self.scenario.api)
        self.check_alive("warming up")
        if not any(r.ok for r in outcome.requests):
            first = next((r.error for r in outcome.requests if r.error), "no request sent")
            raise self.failure(f"every warm-up request failed: {first}")

    def run_load_point(self, index: int, kind: str, value: float,
                       meter: WindowMeter) -> LoadPointOutcome:
        """One load point under the load generator, which opens the steady window."""
        args = point_args(self.scenario, kind, value)
        prompts = self.workload.prompts(self._prompts_needed(kind, value),
                                        start=index * REQUESTS_PER_POINT)
        measurement = self.run.measurement
        outcome = self._load(
            prompts, meter=meter, load_point_index=index, seed=self.run.workload.seed + index,
            # Self-sizing: send on until the steady window reaches min_steady_s.
            min_steady_s=measurement.steady_target_s,
            max_duration_s=self.scenario.duration_s * measurement.max_passes,
            slo=Slo(ttft_s=self._slo("slo_ttft_ms", DEFAULT_SLO_TTFT_MS) / 1000.0,
                    tpot_s=self._slo("slo_tpot_ms", DEFAULT_SLO_TPOT_MS) / 1000.0),
            **args)
        self.check_alive(f"load point {index} ({kind} {value:g})")
        outcome.notes.extend(self.notes())
        return outcome

    def check_alive(self, doing: str) -> None:
        """Raise when the server is known to be gone (nothing to check by default)."""

    def failure(self, message: str) -> EngineError:
        """An EngineError about the server (with its log lines where the farm has them)."""
        return EngineError(f"{self.display_name}: {message}")

    # ----------------------------------------------------------------- helpers

    @property
    def workload(self) -> Workload:
        """The run's workload; an EngineError before `start`."""
        if self._workload is None:
            raise EngineError(f"the {self.display_name} engine was not started")
        return self._workload

    def _slo(self, name: str, default: float) -> float:
        value = getattr(self.scenario, name, None)
        return float(value) if value is not None else default

    def _prompts_needed(self, kind: str, value: float) -> int:
        if kind == "request_rate":
            sending_s = max(self.scenario.duration_s, self.run.measurement.steady_target_s * 1.5)
            expected = value * sending_s * 1.5 + 16
        else:
            expected = value * 32
        return int(min(MAX_PROMPTS_PER_POINT, max(MIN_PROMPTS_PER_POINT, expected)))

    def _load(self, prompts: list[PromptRequest], **kwargs: Any) -> LoadgenOutcome:
        outcome = asyncio.run(run_load_point(self.base_url, self.served_model, prompts,
                                             abort=self.abort, options=self.options(),
                                             **kwargs))
        if outcome.aborted:
            raise RunAborted("the worker is shutting down: load point aborted")
        return outcome


class OpenAIServerEngine(OpenAIEngine):
    """An OpenAI-compatible server the farm starts for the run and stops after it.

    A subclass declares `command(port)`, and where they differ from the
    defaults `health_path`, `distributions` (version lookup), `display_name`,
    `client` and `environment()`.
    """

    health_path: ClassVar[str] = "/health"
    distributions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        self.port: int | None = None
        self.process: EngineProcess | None = None

    @abstractmethod
    def command(self, port: int) -> list[str]:
        """The server's command line, listening on 127.0.0.1:`port`."""

    def environment(self) -> dict[str, str]:
        """The server's environment: pinned to the run's GPUs (none on the CPU device)."""
        return engine_env(self.gpus)

    @property
    def info(self) -> EngineInfo:
        """Kind, the installed version of the server's distribution, not simulated."""
        return EngineInfo(kind=self.kind, version=installed_version(self.distributions),
                          simulated=False)

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT of the server started for this run."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def served_model(self) -> str:
        """The name the server is told to serve the model under: the sweep's model id."""
        return self.run.model.id

    @property
    def on_cpu(self) -> bool:
        """Whether the run's device is the host CPU."""
        return device_backend(self.gpus) == "cpu"

    def start(self, deadline_s: float) -> None:
        """Launch the server in its own process group; wait until it is healthy."""
        from workers.engines.ready import require_ready

        require_ready(self.run)     # a missing package or model path, said plainly
        self.port = free_loopback_port()
        # The kind's GPU layout on the command line: the meter sums every GPU of the run.
        argv = with_layout(self.command(self.port), layout(self.run, self.gpus))
        self.process = EngineProcess(argv, env=self.environment(),
                                     name=self.display_name)
        self.process.start()
        wait_until(self.healthy, deadline_s=deadline_s, process=self.process,
                   abort=self.abort, what="healthy")
        self.load_workload()

    def healthy(self) -> bool:
        """`GET health_path` answers 200."""
        answer = http_get(self.base_url + self.health_path)
        return answer is not None and answer[0] == 200

    def pids(self) -> set[int]:
        """The server's process group: the run's own on the GPUs."""
        return self.process.pids() if self.process else set()

    def stop(self) -> None:
        """Stop the server's whole process group (safe after a failed start)."""
        if self.process is not None:
            self.process.stop()
            self.process.remove_log()

    def check_alive(self, doing: str) -> None:
        """Fail the run, with the server's exit and last log lines, if it is gone."""
        if self.process is None:
            raise EngineError(f"the {self.display_name} engine was not started")
        if not self.process.running():
            raise self.process.exited_error(f"while {doing}")

    def failure(self, message: str) -> EngineError:
        """An EngineError carrying the server's last log lines."""
        if self.process is None:
            return super().failure(message)
        return self.process.failure(f"{self.display_name}: {message}")
