"""Batch scenario engines (vLLM offline, transformers): the worker's side.

The model runs in `workers.engines.child`, a process of its own (see
`workers.engines.process` for why). This side builds the prompts (exact
token lengths, `workers.workload`), sends them, opens the steady window when
the child is about to generate, tells it to go, and closes the window when
the last token is out: the child holds its first request until the window is
open, so the batch scenario's energy window covers all of generation and
nothing else; loading and warm-up are measured in their own windows by the
runner.

Request `i` of load point `k` is workload request `k * REQUESTS_PER_POINT + i`
and warm-up requests come from their own range: no prompt is sent twice in
a run, so no load point profits from a prefix cached by an earlier one.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any

from farm_contract.records import EngineInfo, EngineStartup, RequestRecord
from farm_contract.runspec import BatchLoad, RunSpec
from workers.engines.base import (
    REQUESTS_PER_POINT,
    WARMUP_START,
    Engine,
    LoadPointOutcome,
    WindowMeter,
)
from workers.engines.launch import engine_env
from workers.engines.process import EngineProcess
from workers.errors import EngineError, OutOfMemoryError, RunAborted
from workers.gpu.base import GpuDevice
from workers.workload import PromptRequest, Workload

# A generate command may take long (a big batch on a slow device); the run's own
# time limit (tasks.measure) bounds it. This only stops a wait on a dead pipe.
POLL_S = 0.2


class OfflineEngine(Engine):
    """An engine answering `generate` commands from a child process."""

    backend: str            # workers.engines.child.BACKENDS key
    display_name: str

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        if not isinstance(run.scenario, BatchLoad):
            raise EngineError(f"the {self.display_name} engine runs batch scenarios; "
                              f"this run's scenario is {run.scenario.kind!r}")
        self.scenario: BatchLoad = run.scenario
        self.process: EngineProcess | None = None
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._version: str | None = None
        self._startup: EngineStartup | None = None
        self._workload: Workload | None = None
        self.settings = self.engine_settings()

    # ------------------------------------------------------------- per engine

    def engine_settings(self) -> dict[str, Any]:
        """What the child loads the model with (stored as the engine's settings)."""
        raise NotImplementedError

    def batch_size(self) -> int | None:
        """Prompts per generate call inside the child (None: all at once)."""
        return None

    def warmup_batches(self) -> list[int]:
        """Batch sizes of the warm-up generate calls."""
        n = self.scenario.warmup_prompts
        return [n] if n else []

    @property
    def in_process_engine(self) -> bool:
        """Whether the engine runs its model in the child's own process (see launch.engine_env)."""
        return True

    # --------------------------------------------------------------- lifecycle

    @property
    def info(self) -> EngineInfo:
        """The engine's kind and version (reported by the child once ready); never simulated."""
        return EngineInfo(kind=self.run.engine.kind, version=self._version, simulated=False,
                          startup=self._startup)

    def read_startup(self, ready: dict[str, Any]) -> EngineStartup | None:
        """What the engine's start cost and chose, from its `ready` message (none by default)."""
        return None

    def start(self, deadline_s: float) -> None:
        """Launch the engine child and wait for ready (model loaded) until deadline_s."""
        from workers.engines.ready import require_ready

        require_ready(self.run)     # a missing package or model path, said plainly
        config = {"backend": self.backend, "settings": self.settings}
        self.process = EngineProcess(
            [sys.executable, "-m", "workers.engines.child", json.dumps(config)],
            env=engine_env(self.gpus, in_process_engine=self.in_process_engine),
            name=self.display_name, stdin_pipe=True, stdout_pipe=True)
        self.process.start()
        threading.Thread(target=self._read, name=f"{self.backend}-engine-reader",
                         daemon=True).start()
        ready = self._expect("ready", deadline_s, "ready")
        self._version = ready.get("version")
        self._startup = self.read_startup(ready)
        # The tokenizer only once the engine has loaded: a missing model then
        # fails with the engine's own message.
        self._workload = Workload.from_run(self.run)

    def warmup(self) -> None:
        """Untimed generation of full-length prompts, one call per warm-up batch shape."""
        start = WARMUP_START
        for size in self.warmup_batches():
            self._generate(self.workload.prompts(size, start=start), None, None)
            start += size

    def run_load_point(self, index: int, kind: str, value: float,
                       meter: WindowMeter) -> LoadPointOutcome:
        """Generate one batch load point; the steady window is the generation itself."""
        if kind != "batch":
            raise EngineError(f"the {self.display_name} engine cannot run a {kind!r} load point")
        prompts = self.workload.prompts(int(value), start=index * REQUESTS_PER_POINT)
        t0 = meter.now_s()
        results, offset, passes = self._generate(prompts, meter, index)
        duration_s = meter.now_s() - t0
        # Pass p's request i is results[p * len(prompts) + i]: the same prompt again.
        notes = [f"{self.run.engine.kind} engine ({self._version}): {len(prompts)} prompts, "
                 f"batch size {self.batch_size() or len(prompts)}; steady window = generation"]
        if passes > 1:
            notes.append(f"{passes} passes over the prompts for a steady window ≥ "
                         f"{self.run.measurement.steady_target_s:g} s")
        return LoadPointOutcome(
            requests=[self._record(index, i, r, prompts[i % len(prompts)], offset)
                      for i, r in enumerate(results)],
            duration_s=duration_s, notes=notes,
            passes=passes if self.run.measurement.self_size else None)

    def pids(self) -> set[int]:
        """The engine child's process group, for the isolation watch; empty before start."""
        return self.process.pids() if self.process else set()

    def stop(self) -> None:
        """Ask the child to stop, then stop its group, remove its log; safe unstarted."""
        if self.process is None:
            return
        if self.process.running() and self.process.proc and self.process.proc.stdin:
            try:
                self.process.proc.stdin.write(b'{"op":"stop"}\n')
                self.process.proc.stdin.flush()
                self.process.proc.wait(10)
            except Exception:  # a dead pipe or a slow exit: the group stop below handles it
                pass
        self.process.stop()
        self.process.remove_log()

    # --------------------------------------------------------------- protocol

    @property
    def workload(self) -> Workload:
        """The run's workload (prompts, tokenizer); an EngineError before start."""
        if self._workload is None:
            raise EngineError(f"the {self.display_name} engine was not started")
        return self._workload

    def _read(self) -> None:
        proc = self.process.proc if self.process else None
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            try:
                self._messages.put(json.loads(line))
            except ValueError:
                continue
        self._messages.put(None)        # end of stream: the child exited

    def _expect(self, event: str, timeout_s: float | None, what: str) -> dict[str, Any]:
        """The next message, which must be `event`; the engine's error otherwise."""
        assert self.process is not None
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self.abort.is_set():
                self.process.stop()
                raise RunAborted(f"the worker is shutting down ({self.display_name} "
                                 f"engine stopped while {what})")
            try:
                message = self._messages.get(timeout=POLL_S)
            except queue.Empty:
                if end is not None and time.monotonic() > end:
                    error = self.process.failure(f"the {self.display_name} engine was not "
                                                 f"{what} within {timeout_s:g} s")
                    self.process.stop()
                    raise error from None
                continue
            if message is None:
                if self.process.proc is not None:
                    self.process.proc.wait(10)
                raise self.process.exited_error(f"while {what}")
            if message.get("event") == "error":
                cls = OutOfMemoryError if message.get("kind") == "oom" else EngineError
                raise cls(f"{self.display_name} engine: {message.get('message')}",
                          log_tail=self.process.tail())
            if message.get("event") == event:
                return message
            raise self.process.failure(f"the {self.display_name} engine sent "
                                       f"{message.get('event')!r}, expected {event!r}")

    def _send(self, command: dict[str, Any]) -> None:
        proc = self.process.proc if self.process else None
        if proc is None or proc.stdin is None:
            raise EngineError(f"the {self.display_name} engine was not started")
        try:
            proc.stdin.write((json.dumps(command) + "\n").encode())
            proc.stdin.flush()
        except OSError:
            assert self.process is not None
            raise self.process.exited_error("before a command could be sent") from None

    def _generate(self, prompts: list[PromptRequest], meter: WindowMeter | None,
                  index: int | None) -> tuple[list[dict[str, Any]], float, int]:
        """Run one generate; returns the child's results, (child clock → run
        clock) offset and passes. With a meter, the steady window spans generation
        and is self-sized (passes over the same prompts up to the target)."""
        measurement = self.run.measurement
        self._send({"op": "generate", "batch_size": self.batch_size(),
                    "requests": [_request_json(p) for p in prompts],
                    "min_window_s": measurement.steady_target_s if meter is not None else 0.0,
                    "max_passes": measurement.max_passes if meter is not None else 1})
        self._expect("armed", None, "preparing to generate")
        if meter is not None:
            meter.begin("steady", index)
        self._send({"op": "go"})    # the child holds its first request until the window is open
        finished = self._expect("finished", None, "generating")
        if meter is not None:
            meter.end("steady", index)
        result = self._expect("result", None, "sending its results")
        # Both clocks are CLOCK_MONOTONIC; the meter's has its own origin.
        offset = (meter.now_s() - time.monotonic()) if meter is not None else 0.0
        return result["requests"], offset, int(finished.get("passes") or 1)

    def _record(self, index: int, number: int, r: dict[str, Any], prompt: PromptRequest,
                offset: float) -> RequestRecord:
        sent = r["sent"] + offset
        first = r.get("first")
        gaps = r.get("gaps") or []
        ok = first is not None
        return RequestRecord(
            load_point=index, index=number, sent_s=round(sent, 6),
            ttft_s=round(first + offset - sent, 6) if ok else None,
            e2e_s=round(first + offset - sent + sum(gaps), 6) if ok else None,
            itl_s=gaps, input_tokens=r.get("input_tokens") or prompt.input_tokens,
            output_tokens=r.get("output_tokens"), ok=ok,
            error=None if ok else "the engine returned no token")


def _request_json(p: PromptRequest) -> dict[str, Any]:
    return {"prompt": p.prompt, "max_tokens": p.max_tokens, "min_tokens": p.min_tokens,
            "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k,
            "seed": p.seed, "ignore_eos": p.ignore_eos}
