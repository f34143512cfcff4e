"""run_one(): one run, start to finish, on GPUs the worker already holds.

Lifecycle (DESIGN.md): preflight (no other tenant, cool) → quiet-GPU gate →
the run's power limit / SM clock lock if it asks (`workers.gpu.tuning`,
restored in the `finally`) → idle baselines (no
context, context held) → engine start → warm-up → load points (steady-state
windows opened by the engine) → engine stop → validity checks. The whole run is
a window too, and a sampler thread records the timeline and watches for
foreign processes throughout. The engine is always stopped (`finally`) so the
GPUs are left free whatever happens; a failure becomes a failed RunResult with
the reason and the engine's last log lines.

`RunAborted` (worker shutting down, time limit) and `TransientError` (GPU busy,
contaminated by another tenant, driver hiccup: retry later) escape: a
half-measured or contaminated run is never reported as a result.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from farm_contract.records import (
    EnergyWindow,
    EngineInfo,
    EngineStartup,
    ErrorInfo,
    IdleBaseline,
    LoadPointResult,
    MeasurementInfo,
    Preflight,
    RequestRecord,
    RunResult,
    WorkerInfo,
)
from farm_contract.runspec import RunSpec
from farm_contract.validity import validate
from workers import collector
from workers.baseline import measure_baselines
from workers.energy import EnergySource, configured_sources
from workers.engines import make_engine, resident_pids
from workers.engines.base import Engine
from workers.errors import RunAborted, TransientError, WorkerError
from workers.gpu.base import GpuDevice
from workers.gpu.tuning import GpuTuner, check_tuning
from workers.hostenergy import HostEnergyMeter
from workers.metrics import load_point_result, slo_for, with_idle_and_carbon
from workers.power import AgreementPolicy, Contamination, Meter, PowerSampler
from workers.preflight import IdleTemperatures, run_preflight
from workers.quietgate import IdlePowerReferences, wait_until_quiet
from workers.ratesweep import mark, saturation
from workers.stalls import PhaseClock, check_stalls, sample_gaps
from workers.tinymodel import model_weights

log = logging.getLogger(__name__)

EngineFactory = Callable[[RunSpec, list[GpuDevice], threading.Event], Engine]
# Told (index, number of load points, kind, value) as each load point begins: the
# worker side shows a run's progress with it (tasks/measure.py).
LoadPointCallback = Callable[[int, int, str, float], None]
# Said with every load point of a model whose weights are random (tinymodel's marker).
RANDOM_WEIGHTS_NOTE = ("random weights (the model directory's farm-model.json): real GPU "
                       "work on the model's shape, its text is noise")
# The worker's memory of each GPU's idle temperature, shared by its runs.
IDLE_TEMPERATURES = IdleTemperatures()
# ... and of each GPU's quiet idle power (the quiet-GPU gate's reference).
IDLE_POWERS = IdlePowerReferences()


class Contaminated(TransientError):
    """Another process used the run's GPUs during a measured window: the run is
    handed back (tasks/measure.py), its measurement never reported."""

    kind = "contaminated"

    def __init__(self, message: str, sightings: list[Contamination] | None = None):
        super().__init__(message)
        self.sightings = sightings or []


def _now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """State of one run in progress; kept small so run_one reads as the lifecycle."""

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event,
                 sources: list[EnergySource] | None = None,
                 on_load_point: LoadPointCallback | None = None):
        self.run = run
        self.on_load_point = on_load_point
        self.gpus = gpus
        self.abort = abort
        spec = run.measurement
        # Our own processes may use the GPUs: this one, the context holder, the engine's,
        # and an engine's processes that are there before the run (an endpoint's server).
        self.own_pids: set[int] = {os.getpid()} | resident_pids(run)
        self.engine: Engine | None = None
        # A tenant seen mid-run stops the run at once (abort): it cannot be reported.
        self.sampler = PowerSampler(gpus, spec.sample_period_s, allowed_pids=self.allowed_pids,
                                    on_tenant=lambda found: abort.set())
        self.meter = Meter(gpus, self.sampler, AgreementPolicy(spec.agreement_tolerance,
                                                              spec.agreement_min_window_s),
                           sources=sources)
        self.load_points: list[LoadPointResult] = []
        self.requests: list[RequestRecord] = []
        self.engine_info: EngineInfo | None = None
        self.preflight: Preflight | None = None
        self.idle = IdleBaseline()
        self.phases = PhaseClock()

    def allowed_pids(self) -> set[int]:
        return self.own_pids | (self.engine.pids() if self.engine else set())

    def drive(self, engine: Engine, start_deadline_s: float) -> None:
        self.engine = engine
        self.engine_info = engine.info
        self.meter.begin("load")
        engine.start(start_deadline_s)
        self.meter.end("load")
        # A real engine knows its version and what its start chose once loaded.
        self.engine_info = with_start(engine.info, self.meter.window("load"), self.run)
        collector.settle()      # collect and freeze now, outside every window
        self.meter.begin("warmup")
        engine.warmup()
        self.meter.end("warmup")
        self.phases.pause("between warm-up and load point 0")
        # Goodput under the server scenario's SLO; batch load points have none.
        slo = slo_for(self.run.scenario)
        points = self.run.scenario.load_points
        # A rate sweep's points are the most it may run: it stops at saturation.
        sweep = getattr(self.run.scenario, "rate_sweep", None)
        found = None
        for index, (kind, value) in enumerate(points):
            if self.abort.is_set():
                raise RunAborted("worker shutting down between load points")
            self._tell(index, len(points), kind, value)
            collector.settle()  # the last load point's records: frozen, not walked again
            self.phases.resume()
            outcome = engine.run_load_point(index, kind, value, self.meter)
            if self.engine_info is not None and self.engine_info.model_weights == "random":
                outcome.notes.append(RANDOM_WEIGHTS_NOTE)
            self.phases.pause(f"between load point {index} and {index + 1}")
            self.requests.extend(outcome.requests)
            self.load_points.append(load_point_result(
                index, kind, value, outcome, self.meter.window("steady", index), slo))
            if sweep is not None and (found := saturation(self.load_points, sweep)):
                break
        if sweep is not None:
            self.load_points = mark(self.load_points, found, sweep)

    def _tell(self, index: int, total: int, kind: str, value: float) -> None:
        if self.on_load_point is None:
            return
        try:
            self.on_load_point(index, total, kind, value)
        except Exception:   # progress is for the screen: it must never fail a run
            log.warning("load point progress of %s not reported", self.run.run_id,
                        exc_info=True)

    def check_isolation(self) -> None:
        found = self.sampler.check_tenants()
        contamination: list[Contamination] = self.sampler.contamination + found
        if contamination:
            first = contamination[0]
            raise Contaminated(
                f"foreign process {', '.join(map(str, first.pids))} on GPU {first.gpu_uuid} "
                f"at {first.at_s:.1f} s into the run ({len(contamination)} sighting(s))",
                sightings=contamination)

    def derive(self, carbon_g_per_kwh: float | None) -> None:
        idle_w = self.idle.idle_ctx_power_w or self.idle.idle_power_w
        self.load_points = [
            with_idle_and_carbon(lp, self.meter.window("steady", lp.index), idle_w,
                                 carbon_g_per_kwh)
            for lp in self.load_points]


def run_one(run: RunSpec, gpus: list[GpuDevice], abort: threading.Event, *,
            worker: WorkerInfo, attempt: int, start_deadline_s: float = 900.0,
            engine_factory: EngineFactory = make_engine,
            idle_temperatures: IdleTemperatures = IDLE_TEMPERATURES,
            idle_powers: IdlePowerReferences = IDLE_POWERS,
            energy_sources: list[EnergySource] | None = None,
            on_load_point: LoadPointCallback | None = None,
            tuner: GpuTuner | None = None,
            measured_in: str = "worker thread") -> RunResult:
    """Measure `run` on `gpus`. Returns a succeeded or failed RunResult.

    `energy_sources` are read beside the GPUs at every window edge (default: the
    worker's, `workers.energy.configured_sources`); none for a simulated run, whose
    host did not do the modelled work. `on_load_point` is told each load point as it
    begins (its errors are logged, never raised). `tuner` sets the run's power
    limit / SM clock lock, if it asks for one (default: from FARM_GPU_TUNE_*).
    `measured_in` says where this call runs (workers/runproc.py passes "run process").
    """
    started_at = _now()
    sources = _sources_for(run, gpus, energy_sources)
    state = _Run(run, gpus, abort, sources, on_load_point)
    spec = run.measurement
    state.preflight = run_preflight(gpus, spec, state.own_pids, idle_temperatures, abort)
    # After the cool-down, before the idle baselines: power settles later than heat.
    state.preflight.quiet = wait_until_quiet(gpus, spec.quiet, idle_powers, abort)
    # Power limit / clock lock: after the gate (which judges the GPU at rest under its
    # usual settings), before the idle baselines (idle under the run's own settings).
    tuning = (tuner or GpuTuner.from_environment()).session(gpus, run.hardware, run.run_id)
    # CPU/RAM energy of the host means nothing for a simulated run: the host did
    # not do the modelled work.
    host = HostEnergyMeter(spec.region, [g.info.index for g in gpus if g.info.backend == "gpu"],
                           enabled=spec.codecarbon and not run.simulated)
    error: ErrorInfo | None = None
    host.start()             # before the run window: its first start takes ~1.6 s
    state.sampler.start()
    state.meter.begin("run")
    try:
        tuning.apply()
        state.idle = measure_baselines(state.meter, gpus, spec.idle_baseline_s, abort,
                                       state.own_pids)
        engine = engine_factory(run, gpus, abort)
        try:
            state.drive(engine, start_deadline_s)
        finally:
            engine.stop()
        state.check_isolation()
    except RunAborted:
        if state.sampler.contamination:
            state.check_isolation()   # a tenant cut the run short: say so (Contaminated)
        raise   # hand the run back: a half-measured run is not a result
    except TransientError:
        raise   # retry it / hand it back: a half-measured run is not a result
    except WorkerError as exc:
        error = ErrorInfo(kind=exc.kind, message=str(exc), log_tail=exc.log_tail)
    except Exception as exc:  # a bug: keep the traceback with the failed run
        log.exception("run %s failed unexpectedly", run.run_id)
        error = ErrorInfo(kind="internal", message=f"{type(exc).__name__}: {exc}",
                          log_tail=traceback.format_exc().splitlines()[-20:])
    finally:
        host_energy = host.stop()
        state.meter.end("run")
        state.sampler.stop()
        collector.thaw()
        tuning.restore()         # whatever happened; a crash leaves the journal for the next start
        state.preflight.tuning = tuning.records
    state.derive(host_energy.carbon_intensity_g_per_kwh if host_energy else None)
    finished_at = _now()
    simulated = run.simulated or any(g.info.backend == "sim" for g in gpus)
    tdp_w = sum(g.info.power_limit_w or 0 for g in gpus) or None
    applied_w = [t.applied_power_limit_w for t in tuning.records]
    if applied_w and None not in applied_w:   # steady power is bounded by the run's own limit
        tdp_w = sum(w for w in applied_w if w is not None)
    sensor = _one_sensor(g.power_sensor for g in gpus)
    validity = None if error else validate(
        state.meter.windows, state.idle, tdp_w,
        # The sampler has stopped: every sample it holds lies inside the run.
        state.sampler.values_in("temperature_c", 0.0, float("inf")),
        spec, [lp.index for lp in state.load_points])
    if validity is not None:
        stalls = check_stalls(state.phases.pauses, sample_gaps(
            state.meter.windows, state.sampler.t_s, spec.sample_period_s), spec.sample_period_s)
        validity = validity.model_copy(update={"checks": [*validity.checks, stalls],
                                               "valid": validity.valid and stalls.passed})
    if validity is not None and tuning.requested:
        check = check_tuning(tuning.records, state.meter.windows, state.sampler)
        validity = validity.model_copy(update={"checks": [*validity.checks, check],
                                               "valid": validity.valid and check.passed})
    return RunResult(
        run_id=run.run_id,
        status="failed" if error else "succeeded",
        attempt=attempt,
        worker=worker,
        gpus=[g.info for g in gpus],
        engine=state.engine_info or EngineInfo(kind=run.engine.kind, simulated=simulated),
        measurement=MeasurementInfo(
            energy_sensor=_one_sensor(g.energy_sensor for g in gpus),
            power_sensor=sensor,
            sample_period_s=spec.sample_period_s,
            simulated=simulated,
            energy_sources=[source.info() for source in sources],
            measured_in=measured_in,
        ),
        simulated=simulated,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=(finished_at - started_at).total_seconds(),
        load_points=state.load_points,
        windows=state.meter.windows,
        trace=state.sampler.trace(sensor),
        requests=state.requests,
        error=error,
        preflight=state.preflight,
        idle=state.idle,
        validity=validity,
        host_energy=host_energy,
    )


def with_start(info: EngineInfo, load: EnergyWindow | None, run: RunSpec) -> EngineInfo:
    """`info` with the engine's start time (the "load" window, outside every measured
    one) and whether the model's weights are random (its directory's marker)."""
    startup = info.startup or EngineStartup()
    if load is not None:
        startup = startup.model_copy(update={"engine_start_s": round(load.duration_s, 3)})
    weights = None if info.simulated else model_weights(run.model.source)
    return info.model_copy(update={"startup": startup, "model_weights": weights})


def _sources_for(run: RunSpec, gpus: list[GpuDevice],
                 sources: list[EnergySource] | None) -> list[EnergySource]:
    """The extra sources a run reads: none when simulated, none its devices already are."""
    if run.simulated or any(g.info.backend == "sim" for g in gpus):
        return []
    chosen = configured_sources() if sources is None else sources
    return [source for source in chosen if not source.redundant_with(gpus)]


def _one_sensor(names) -> str:
    return "+".join(sorted(set(names))) or "none"
