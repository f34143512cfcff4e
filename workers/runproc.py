"""One run, one process: `run_one` in a child process of the worker.

A worker serves each of its GPU sets from a thread of one process (Celery's
threads pool). Were the runs measured there, eight runs on an 8-GPU host
would share one interpreter lock: eight load generators' TTFT clocks and
eight 100 ms samplers competing, and a slow report or a garbage collection in
one run's thread showing up as latency in another's. So each run is measured
in a process of its own (optimum-benchmark isolates each benchmark the same
way): its sampler, meter, load generator and, for the sim engine, the engine
itself. A server engine's server was already a process of its own and is now
the run process's child.

The worker thread starts the run process, passes it the run and plain data
describing its GPUs, relays an abort (shutdown, time limit) to it, forwards
its load point progress, and gets back the `RunResult` — or the exception
that ended the run, rebuilt with its kind (`GpuBusy`, `Contaminated`,
`RunAborted`, `TransientError`…), so the task layer decides exactly as
before. Everything crosses the pipe as JSON (pydantic's for the records).

The process comes from a forkserver (a fresh single-threaded server that has
imported the runner once, so a run process starts in milliseconds, without
inheriting the worker's threads or Redis connections), and is not daemonic:
it may start engine processes of its own (FIELD_NOTES: vLLM cannot start in a
daemonic child).

The GPUs are opened again in the run process: a vendor's device by UUID, a
simulated GPU from its state (`SimGpu.handoff`), which comes back to the
worker's device when the run ends (meanwhile the worker's copy of a simulated
GPU stays as it was: its /metrics shows it idle during the run). The worker's
memory of idle temperatures and idle powers travels the same way, for the
run's GPUs only. A forkserver child inherits the environment the worker had
when its first run started.
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import workers.energy as energy_package
import workers.engines as engines_package
import workers.gpu.vendors as vendors_package
from farm_contract.engines import SHIPPED_KINDS
from farm_contract.records import RunResult, WorkerInfo
from farm_contract.runspec import RunSpec
from workers import collector
from workers.energy import EnergySource, configure_sources, configured_sources, parse_source_specs
from workers.engines import engine_class
from workers.engines import process as engine_process
from workers.engines.process import stop_orphaned_group
from workers.errors import RunAborted, TransientError, WorkerError
from workers.gpu.base import GpuDevice
from workers.gpu.sim import SimGpu
from workers.gpu.tuning import GpuTuner
from workers.gpu.vendors import vendor_of
from workers.power import Contamination
from workers.preflight import GpuBusy, IdleTemperatures
from workers.quietgate import IdlePowerReferences
from workers.runner import (
    IDLE_POWERS,
    IDLE_TEMPERATURES,
    Contaminated,
    LoadPointCallback,
    run_one,
)

log = logging.getLogger(__name__)

# Modules the forkserver imports once, so each run process starts with them loaded
# (workers.forkserver_signals first: the server ignores stops sent to the worker's group).
PRELOAD = ["workers.forkserver_signals", "workers.runproc", "workers.runner", "workers.loadgen",
           "workers.workload", "workers.engines.sim", "workers.engines.openai_endpoint",
           "workers.engines.vllm_server"]
# Imported by a run process before its run starts, for engines that tokenize: a
# 5 s import of transformers while the run's sampler runs holds the interpreter
# lock in bursts that starve it (gaps of 0.3–1.1 s measured). Not preloaded: the
# forkserver would take that long to serve its first run, and a worker stopped
# meanwhile could not hand its run back in time.
# The last two are what every model's configuration module imports (video and image
# utilities, PIL: 36 ms), loaded otherwise during the engine's start, under the sampler.
TOKENIZER_MODULES = ("transformers.models.auto.tokenization_auto",
                     "transformers.tokenization_utils_fast",
                     "transformers.utils.type_validators", "transformers.activations")
# The run process's interpreter switch interval. A waiting thread gets the
# interpreter lock only when the running one is made to give it up, every 5 ms by
# default: the sampler's timer fired, then waited up to that long behind the load
# generator's parsing or an import (p99 period error 3.9-6.8 ms at 8 runs on a
# 16-core host, 2026-12-07; a timer beside a thread busy in Python: 5.3 ms late at
# most, 1.4 ms at 1 ms). 1 ms bounds that wait, for microseconds per switch.
SWITCH_INTERVAL_S = 0.001
POLL_S = 0.05
_STOPS = {signal.SIGTERM, signal.SIGINT}
JOIN_S = 30.0
_context_lock = threading.Lock()
_context: Any = None


class RunProcessDied(TransientError):
    """The run's process ended without a result (killed, out of memory, a crash in
    native code): nothing measured can be reported; the run is tried again."""

    kind = "run_process"


def isolatable(gpus: list[GpuDevice]) -> bool:
    """Whether every device can be opened again in a run process (simulated ones
    from their state, a vendor's by UUID); a test's fake device cannot."""
    return all(isinstance(g, SimGpu) or (type(g).__module__.startswith("workers.gpu.")
                                          and g.vendor is not None) for g in gpus)


def why_not_isolated(run: RunSpec, gpus: list[GpuDevice],
                     sources: list[EnergySource]) -> str | None:
    """Why `run` cannot be measured in a process of its own (None: it can).

    A run process starts fresh from the forkserver: it finds the plug-ins shipped
    in the packages (a module file in `workers/engines/`, `workers/gpu/vendors/`,
    `workers/energy/`, an entry in `farm_contract/engines.py`), not one registered
    in the worker at run time, nor a device or energy source made in code. Such a
    run is measured in the worker's thread, and the result says so.
    """
    if not isolatable(gpus):
        return "a device that cannot be opened again in another process"
    if run.engine.kind not in SHIPPED_KINDS:
        return f"engine kind {run.engine.kind!r} was added at run time"
    try:
        engine = engine_class(run)
    except WorkerError:
        return None     # the run fails on its own terms, in either place
    if not _shipped(engine, engines_package):
        return f"engine {engine.__qualname__} is not a module of workers/engines/"
    for gpu in gpus:
        vendor = vendor_of(gpu) if not isinstance(gpu, SimGpu) else None
        if vendor is not None and not _shipped(type(vendor), vendors_package):
            return f"GPU vendor {vendor.name!r} is not a module of workers/gpu/vendors/"
    for source in sources:
        if source.spec is None or not _shipped(type(source), energy_package):
            return f"energy source {source.name!r} was not built from a spec of a shipped kind"
    return None


def _shipped(cls: type, package) -> bool:
    """Whether `cls` is defined at the top of a module in `package`'s own folder."""
    if "<locals>" in cls.__qualname__:
        return False
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    return path is not None and Path(path).parent == Path(package.__path__[0])


def run_in_process(run: RunSpec, gpus: list[GpuDevice], abort: threading.Event, *,
                   worker: WorkerInfo, attempt: int, start_deadline_s: float = 900.0,
                   on_load_point: LoadPointCallback | None = None,
                   idle_temperatures: IdleTemperatures = IDLE_TEMPERATURES,
                   idle_powers: IdlePowerReferences = IDLE_POWERS) -> RunResult:
    """`run_one` with the same arguments and outcome, measured in a process of its own."""
    uuids = [g.info.uuid for g in gpus]
    request = {"run": run.model_dump_json(), "devices": [_describe(g) for g in gpus],
               "worker": worker.model_dump_json(), "attempt": attempt,
               "start_deadline_s": start_deadline_s,
               "idle_temperatures": idle_temperatures.snapshot(uuids),
               "idle_powers": idle_powers.snapshot(uuids),
               # The worker's extra energy sources (FARM_ENERGY_SOURCES or
               # --energy-source), built again in the run process from their specs.
               "energy_sources": [s.spec for s in configured_sources()]}
    ctx = _mp_context()
    to_child_r, to_child_w = ctx.Pipe(duplex=False)
    from_child_r, from_child_w = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(to_child_r, from_child_w),
                          name=f"farm-run-{run.run_id[:12]}", daemon=False)
    try:
        process.start()
    except (EOFError, OSError) as exc:     # the forkserver was stopped under us
        for end in (to_child_r, to_child_w, from_child_r, from_child_w):
            end.close()
        if abort.is_set():
            raise RunAborted(f"the worker is stopping: no process for the run ({exc!r})") \
                from None
        raise RunProcessDied(f"the run's process could not start: {exc!r}") from None
    log.info("run %s measured in its own process, pid %s", run.run_id, process.pid)
    to_child_r.close()
    from_child_w.close()
    engine_groups: list[int] = []
    answer: dict | None = None
    try:
        to_child_w.send_bytes(json.dumps(request).encode())
        answer = _wait(process, from_child_r, to_child_w, abort, on_load_point, engine_groups)
    finally:
        process.join(JOIN_S)
        if process.is_alive():      # it answered, or died: either way it must go
            process.kill()
            process.join()
        to_child_w.close()
        from_child_r.close()
        if answer is None:
            _clear_up_after(run, gpus, engine_groups)
    # The run held these GPUs alone: their state and references are the run's.
    for gpu, state in zip(gpus, answer["devices"]):
        if isinstance(gpu, SimGpu) and state is not None:
            gpu.resume(state)
    idle_temperatures.update(answer["idle_temperatures"])
    idle_powers.update(answer["idle_powers"])
    if "error" in answer:
        raise _rebuilt(answer["error"])
    return RunResult.model_validate_json(answer["result"])


def prepare() -> None:
    """Start the forkserver now (a worker's start), so the first run does not wait
    for its imports, nor lose its process to a stop that comes meanwhile."""
    if _mp_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _mp_context():
    """The forkserver context, its preloads set once (spawn where there is no forkserver)."""
    global _context
    with _context_lock:
        if _context is None:
            methods = multiprocessing.get_all_start_methods()
            _context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn")
            if _context.get_start_method() == "forkserver":
                _context.set_forkserver_preload(PRELOAD)
        return _context


def _wait(process, inbox: Connection, outbox: Connection, abort: threading.Event,
          on_load_point: LoadPointCallback | None, engine_groups: list[int]) -> dict:
    """Relay the abort and the progress until the run process answers; note the
    process group of each engine it starts in `engine_groups`."""
    told_abort = False
    while True:
        if abort.is_set() and not told_abort:
            told_abort = True
            try:
                outbox.send_bytes(b'{"abort": true}')
            except OSError:     # it is gone already: the next poll says how
                pass
        try:
            ready = inbox.poll(POLL_S)
            message = json.loads(inbox.recv_bytes()) if ready else None
        except (EOFError, OSError):     # every message before the end was read
            process.join(JOIN_S)
            raise RunProcessDied(f"the run's process {process.pid} ended without a result "
                                 f"(exit code {process.exitcode})") from None
        if message is None:
            # Its answer may have come, and the process ended, since the poll: look
            # again before calling it dead (the answer is read on the next turn).
            if not process.is_alive() and not inbox.poll(0):
                raise RunProcessDied(f"the run's process {process.pid} ended without a "
                                     f"result (exit code {process.exitcode})")
            continue
        if "engine_group" in message:
            engine_groups.append(message["engine_group"])
            continue
        if "load_point" in message:
            if on_load_point is not None:
                on_load_point(*message["load_point"])
            continue
        return message


# ------------------------------------------------------------------ the run process


def _child(inbox: Connection, outbox: Connection) -> None:
    """The run process: rebuild, run, answer; the worker relays aborts meanwhile."""
    # The worker decides when a run stops: a SIGTERM or Ctrl-C sent to its whole
    # process group must reach the run as the worker's relayed abort (the run is
    # handed back), not kill it (a lost process, retried). A handler, not the
    # forkserver's SIG_IGN: engine servers started from here get the default back
    # at exec.
    for stop in _STOPS:
        signal.signal(stop, _ignored)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    collector.dedicate()        # no full collection inside a window (workers/collector.py)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    request = json.loads(inbox.recv_bytes())
    abort = threading.Event()

    def listen() -> None:
        try:
            while True:
                if json.loads(inbox.recv_bytes()).get("abort"):
                    abort.set()
        except (EOFError, OSError):     # the worker is gone (or has its answer): stop
            abort.set()

    threading.Thread(target=listen, name="run-abort", daemon=True).start()
    lock = threading.Lock()         # progress and the answer share the pipe

    def send(message: dict) -> None:
        with lock:
            outbox.send_bytes(json.dumps(message).encode())

    def progress(index: int, total: int, kind: str, value: float) -> None:
        send({"load_point": [index, total, kind, value]})

    def engine_started(pgid: int) -> None:
        try:
            send({"engine_group": pgid})
        except OSError:     # the worker is gone: the run is being stopped anyway
            pass

    engine_process.on_engine_started(engine_started)

    temperatures, powers = IdleTemperatures(), IdlePowerReferences()
    temperatures.update(request["idle_temperatures"])
    powers.update(request["idle_powers"])
    answer: dict[str, Any] = {}
    gpus: list[GpuDevice] = []
    close: Callable[[], None] = lambda: None
    try:
        gpus, close = _opened(request["devices"])
        configure_sources(parse_source_specs(request["energy_sources"]))
        run = RunSpec.model_validate_json(request["run"])
        if run.engine.kind != "sim":
            _import_quietly(TOKENIZER_MODULES)
        collector.settle(full=True)     # the modules' objects frozen before the sampler starts
        result = run_one(run, gpus, abort,
                         worker=WorkerInfo.model_validate_json(request["worker"]),
                         attempt=request["attempt"],
                         start_deadline_s=request["start_deadline_s"],
                         on_load_point=progress, idle_temperatures=temperatures,
                         idle_powers=powers, measured_in="run process")
        answer["result"] = result.model_dump_json()
    except BaseException as exc:    # every way out is told to the worker
        answer["error"] = _described(exc)
    uuids = [g.info.uuid for g in gpus]
    answer.update(devices=([g.handoff() if isinstance(g, SimGpu) else None for g in gpus]
                           or [None] * len(request["devices"])),
                  idle_temperatures=temperatures.snapshot(uuids),
                  idle_powers=powers.snapshot(uuids))
    send(answer)
    close()
    configure_sources([])       # stops what the sources run in the background


def _clear_up_after(run: RunSpec, gpus: list[GpuDevice], engine_groups: list[int]) -> None:
    """After a run process that ended without answering: what it left on the GPUs.

    Its engines run in sessions of their own and outlive it, holding the GPUs (the
    next run there would find a foreign tenant); a power limit or clock lock it set
    would stay for the runs after it. Both go now, not at the worker's next start.
    """
    for pgid in engine_groups:
        left = stop_orphaned_group(pgid)
        if left:
            log.warning("run %s: its process ended and left engine process group %d "
                        "running (pids %s): stopped", run.run_id, pgid, sorted(left))
    uuids = tuple(g.info.uuid for g in gpus)
    for line in GpuTuner.from_environment().restore_leftovers(gpus):
        if line.startswith(uuids):
            log.warning("run %s: GPU settings its process left: %s", run.run_id, line)


def _import_quietly(modules: tuple[str, ...]) -> None:
    """Import `modules` now, before the run's sampler starts; skip what is absent."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def _ignored(signum: int, frame: Any) -> None:
    """A stop signal in the run process: the worker relays the abort instead."""


def _describe(gpu: GpuDevice) -> dict:
    """How the run process opens `gpu` again."""
    if isinstance(gpu, SimGpu):
        return {"sim": gpu.handoff()}
    return {"vendor": gpu.vendor, "uuid": gpu.info.uuid}


def _opened(devices: list[dict]) -> tuple[list[GpuDevice], Callable[[], None]]:
    """The run's devices in this process, and what releases them."""
    inventories: dict[str, Any] = {}
    gpus: list[GpuDevice] = []
    for device in devices:
        if "sim" in device:
            gpus.append(SimGpu.resumed(device["sim"]))
            continue
        from workers.gpu.vendors import open_vendor_inventory

        vendor = device["vendor"]
        if vendor not in inventories:
            inventories[vendor] = open_vendor_inventory(vendor)
        found = [g for g in inventories[vendor].devices() if g.info.uuid == device["uuid"]]
        if not found:
            raise RunProcessDied(f"GPU {device['uuid']} is not visible to the run's process")
        gpus.append(found[0])

    def close() -> None:
        for inventory in inventories.values():
            inventory.shutdown()
    return gpus, close


def _described(exc: BaseException) -> dict:
    """An exception as plain data (its class, message and the fields the task reads)."""
    return {"module": type(exc).__module__, "name": type(exc).__qualname__,
            "message": str(exc), "log_tail": list(getattr(exc, "log_tail", []) or []),
            "busy": getattr(exc, "busy", None),
            "sightings": [s.__dict__ for s in getattr(exc, "sightings", []) or []],
            "traceback": traceback.format_exception(exc)}


def _rebuilt(error: dict) -> BaseException:
    """The run process's exception, as the worker's own class where it is a farm error."""
    cls = None
    if error["module"].startswith("workers."):
        try:
            cls = getattr(importlib.import_module(error["module"]), error["name"])
        except (ImportError, AttributeError):
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, WorkerError)):
        log.error("the run's process failed:\n%s", "".join(error["traceback"]))
        return RuntimeError(f"{error['name']} in the run's process: {error['message']}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, error["message"])
    exc.log_tail = error["log_tail"]
    if issubclass(cls, GpuBusy):
        exc.busy = error["busy"] or {}      # uuid → foreign pids
    if issubclass(cls, Contaminated):
        exc.sightings = [Contamination(**s) for s in error["sightings"]]
    return exc
