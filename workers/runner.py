"""run_one(): one run, start to finish, on GPUs the worker already holds.

Lifecycle (DESIGN.md): idle baseline → engine start → warm-up → load points
(steady-state windows opened by the engine) → engine stop. The whole run is a
window too. The engine is always stopped (`finally`) so the GPUs are left free
whatever happens; a failure becomes a failed RunResult with the reason and the
engine's last log lines, never an exception that loses what was measured.
`RunAborted` (worker shutting down, time limit) and `TransientError` (retry
later) escape: a half-measured run is never reported as a result.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from farm.records import (
    EngineInfo,
    ErrorInfo,
    LoadPointResult,
    MeasurementInfo,
    RequestRecord,
    RunResult,
    WorkerInfo,
)
from farm.spec import RunSpec
from workers.engines import make_engine
from workers.engines.base import Engine
from workers.errors import FarmError, RunAborted, TransientError
from workers.gpu.base import GpuDevice
from workers.metrics import load_point_result
from workers.power import Meter, PowerSampler

log = logging.getLogger(__name__)

EngineFactory = Callable[[RunSpec, list[GpuDevice], threading.Event], Engine]


def _now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """State of one run in progress; kept small so run_one reads as the lifecycle."""

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        self.run = run
        self.gpus = gpus
        self.abort = abort
        self.sampler = PowerSampler(gpus, run.measurement.sample_period_s)
        self.meter = Meter(gpus, self.sampler)
        self.load_points: list[LoadPointResult] = []
        self.requests: list[RequestRecord] = []
        self.engine_info: EngineInfo | None = None

    def idle_baseline(self) -> None:
        seconds = self.run.measurement.idle_baseline_s
        if seconds <= 0:
            return
        self.meter.begin("idle")
        if self.abort.wait(seconds):
            raise RunAborted("worker shutting down during the idle baseline")
        self.meter.end("idle")

    def drive(self, engine: Engine, start_deadline_s: float) -> None:
        self.engine_info = engine.info
        self.meter.begin("load")
        engine.start(start_deadline_s)
        self.meter.end("load")
        self.meter.begin("warmup")
        engine.warmup()
        self.meter.end("warmup")
        for index, (kind, value) in enumerate(self.run.scenario.load_points):
            if self.abort.is_set():
                raise RunAborted("worker shutting down between load points")
            outcome = engine.run_load_point(index, kind, value, self.meter)
            self.requests.extend(outcome.requests)
            self.load_points.append(load_point_result(
                index, kind, value, outcome.duration_s, outcome.requests,
                self.meter.window("steady", index)))


def run_one(run: RunSpec, gpus: list[GpuDevice], abort: threading.Event, *,
            worker: WorkerInfo, attempt: int, start_deadline_s: float = 900.0,
            engine_factory: EngineFactory = make_engine) -> RunResult:
    """Measure `run` on `gpus`. Returns a succeeded or failed RunResult."""
    started_at = _now()
    state = _Run(run, gpus, abort)
    error: ErrorInfo | None = None
    state.sampler.start()
    state.meter.begin("run")
    try:
        state.idle_baseline()
        engine = engine_factory(run, gpus, abort)
        try:
            state.drive(engine, start_deadline_s)
        finally:
            engine.stop()
    except (RunAborted, TransientError):
        raise   # hand the run back / retry it: a half-measured run is not a result
    except FarmError as exc:
        error = ErrorInfo(kind=exc.kind, message=str(exc), log_tail=exc.log_tail)
    except Exception as exc:  # a bug: keep the traceback with the failed run
        log.exception("run %s failed unexpectedly", run.run_id)
        error = ErrorInfo(kind="internal", message=f"{type(exc).__name__}: {exc}",
                          log_tail=traceback.format_exc().splitlines()[-20:])
    finally:
        state.meter.end("run")
        state.sampler.stop()
    finished_at = _now()
    simulated = run.simulated or any(g.info.backend == "sim" for g in gpus)
    return RunResult(
        run_id=run.run_id,
        status="failed" if error else "succeeded",
        attempt=attempt,
        worker=worker,
        gpus=[g.info for g in gpus],
        engine=state.engine_info or EngineInfo(kind=run.engine.kind, simulated=simulated),
        measurement=MeasurementInfo(
            energy_sensor=_one_sensor(g.energy_sensor for g in gpus),
            power_sensor=_one_sensor(g.power_sensor for g in gpus),
            sample_period_s=run.measurement.sample_period_s,
            simulated=simulated,
        ),
        simulated=simulated,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=(finished_at - started_at).total_seconds(),
        load_points=state.load_points,
        windows=state.meter.windows,
        trace=state.sampler.trace(_one_sensor(g.power_sensor for g in gpus)),
        requests=state.requests,
        error=error,
    )


def _one_sensor(names) -> str:
    return "+".join(sorted(set(names))) or "none"

