"""A command run under the meter: `farmctl measure -- COMMAND …` (engine kind `measure`).

The farm does not know the load; the user's own tool (`vllm bench serve`,
GuideLLM, AIPerf, a script) makes it. The run goes through the runner's whole
lifecycle — preflight, quiet gate, idle baselines, counter windows with the
timeline cross-check, isolation watch, validity — and its one load point is the
command: the steady window opens just before the command starts and closes when
it has exited, so everything the tool did lies inside it, warm-up included (a
tool's own warm-up requests cost energy its counts leave out; the docs say so).

- The command is an argument list, never given to a shell; it runs in `cwd`,
  in a session of its own (`EngineProcess`): its whole process tree is the run's
  own for the isolation watch, and is killed as a group when the run stops.
- It sees exactly the run's GPUs (CUDA_VISIBLE_DEVICES); on simulated GPUs it
  sees none (it must not touch a real one), and the simulated GPUs draw a
  constant modelled power while it runs (labelled simulated, as every sim run).
- Its counts come from the tool's result file (`workers.loadtools`), read
  after it exits; the file must have been written by this run. Without one, the
  run has energy figures only: its per-token figures are null.
- A worker runs a command only where its host allows it (FARM_ALLOW_COMMANDS):
  `farmctl measure` allows it for its own private worker; a shared farm's
  workers refuse such a run, since a sweep's author is not the host's admin.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import threading
import time

from farm_contract.engine_args import MeasureArgs
from farm_contract.records import EngineInfo
from farm_contract.runspec import RunSpec
from farm_contract.settings import load_settings
from workers.engines import register
from workers.engines.base import Engine, LoadPointOutcome, WindowMeter, parse_engine_args
from workers.engines.launch import engine_env, without_farm_settings
from workers.engines.process import EngineProcess
from workers.errors import EngineError, RunAborted
from workers.gpu.base import GpuDevice
from workers.gpu.sim import SimGpu
from workers.loadtools import ToolReportError, read

POLL_S = 0.25
# A simulated GPU has no model of an unknown command's work: it draws this share of
# its power limit while the command runs, so the path is exercised end to end.
SIM_LOAD_FRACTION = 0.5


def _stamp(path: str | None) -> tuple[int, int] | None:
    """(mtime ns, size) of `path`, None when it does not exist."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


@register("measure", "batch")
class MeasureEngine(Engine):
    """The user's command as the run's one load point."""

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        self.args: MeasureArgs = parse_engine_args(MeasureArgs, run.engine.args, "measure")
        self.argv = self.args.argv()
        self.cwd = self.args.cwd or os.getcwd()
        self.result = (os.path.join(self.cwd, self.args.result) if self.args.result
                       else None)
        self.simulated = [g for g in gpus if isinstance(g, SimGpu)]
        self.process: EngineProcess | None = None

    @property
    def info(self) -> EngineInfo:
        """Kind `measure`: the tool's version is the tool's business, not known here."""
        return EngineInfo(kind="measure", version=None, simulated=bool(self.simulated))

    def start(self, deadline_s: float) -> None:
        """Check that this host runs commands and that the command can be found."""
        if not load_settings().allow_commands:
            raise EngineError(f"this worker ({socket.gethostname()}) does not run the "
                              "commands of `measure` runs (FARM_ALLOW_COMMANDS is off): "
                              "measure a command with `farmctl measure` on the GPU host")
        program = self.argv[0]
        where = os.path.join(self.cwd, program) if os.sep in program else None
        found = (where if where and os.access(where, os.X_OK)
                 else shutil.which(program) if not where else None)
        if not found:
            raise EngineError(f"the command {program!r} is not an executable "
                              f"{'file' if where else 'on the PATH'} of this worker "
                              f"({socket.gethostname()}, in {self.cwd})")
        if not os.path.isdir(self.cwd):
            raise EngineError(f"the command's folder {self.cwd} does not exist here")

    def warmup(self) -> None:
        """Nothing: the tool warms up (or not) inside its own run."""

    def _environment(self) -> dict[str, str]:
        if self.simulated:
            # Simulated GPUs: the command must not reach a real one.
            return {**without_farm_settings(os.environ), "CUDA_VISIBLE_DEVICES": "",
                    "PYTHONUNBUFFERED": "1"}
        return engine_env(self.gpus)

    def run_load_point(self, index: int, kind: str, value: float,
                       meter: WindowMeter) -> LoadPointOutcome:
        """Run the command inside the steady window, then read its result file."""
        before = _stamp(self.result)
        self.process = EngineProcess(self.argv, env=self._environment(), name="measured "
                                     "command", cwd=self.cwd)
        meter.begin("steady", index)
        started = time.monotonic()
        self.process.start()
        self._simulate(True)
        try:
            while self.process.running():
                if self.abort.wait(POLL_S):
                    self.process.stop()
                    raise RunAborted("the worker is shutting down while the command ran")
        finally:
            self._simulate(False)
            meter.end("steady", index)
        elapsed = time.monotonic() - started
        code = self.process.exit_code()
        if code != 0:
            raise self.process.exited_error("while it was measured")
        notes = [f"the command: {shlex.join(self.argv)} (in {self.cwd}); exited 0 after "
                 f"{elapsed:.3g} s, all of it inside the steady window"]
        if self.simulated:
            notes.append(f"simulated GPUs: {SIM_LOAD_FRACTION:.0%} of the power limit while "
                         "the command ran (no model of its work); it saw no real GPU")
        return LoadPointOutcome(requests=[], duration_s=elapsed, notes=notes,
                                reported=self._report(before, notes))

    def _report(self, before: tuple[int, int] | None, notes: list[str]):
        if self.result is None:
            notes.append("no result file (--result): energy figures only, the per-token "
                         "figures are null")
            return None
        after = _stamp(self.result)
        if after is None or after == before:
            raise EngineError(f"the command exited 0 but did not write its result file "
                              f"{self.result} (--result): nothing to count tokens with",
                              log_tail=self.process.tail() if self.process else [])
        try:
            report = read(self.result, self.args.format)
        except ToolReportError as exc:
            raise EngineError(str(exc)) from None
        notes.append(report.provenance)
        if report.num_failed is None:
            notes.append(f"{report.tool} does not say how many requests failed: counted 0")
        notes.extend(report.notes)
        return report

    def _simulate(self, running: bool) -> None:
        """The simulated GPUs' side of the command: a context, a modelled power level,
        and the command among their compute processes (the isolation watch sees it)."""
        pid = self.process.pid if self.process else None
        for gpu in self.simulated:
            gpu.set_context(running)
            gpu.set_power_w(SIM_LOAD_FRACTION * (gpu.info.power_limit_w or 0.0)
                            if running else None)
            if pid is not None:
                (gpu.add_compute_pid if running else gpu.remove_compute_pid)(pid)

    def pids(self) -> set[int]:
        """The command's process tree: the run's own, not a tenant."""
        return self.process.pids() if self.process else set()

    def stop(self) -> None:
        """Stop whatever is left of the command's process group."""
        if self.process is not None:
            self.process.stop()
            self._simulate(False)
