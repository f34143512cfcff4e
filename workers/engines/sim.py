"""The simulated engine: runs the whole lifecycle on simulated GPUs, in real time.

It turns the performance model (`perfmodel`) into what a real engine would
produce: per-request records (TTFT, every inter-token gap, E2E) and a power
level on each `SimGpu` that follows the load point's phases, so the runner's
own meter and sampler measure the energy exactly as on hardware. Modelled time
is real time: a load point the model says lasts 3 s takes 3 s of wall clock
(only model loading is scaled down), and every wait honours the abort event.

Randomness (a few % of jitter, open-loop arrivals) comes from one
`random.Random` per load point, seeded by the workload seed, the repetition
and the load point, so a run's records are reproducible.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field

from farm_contract.engine_args import SimArgs
from farm_contract.records import EngineInfo, RequestRecord
from farm_contract.runspec import BatchLoad, RunSpec, ServerLoad
from workers.engines import perfmodel, register
from workers.engines.base import Engine, LoadPointOutcome, WindowMeter, parse_engine_args
from workers.errors import EngineError, RunAborted
from workers.gpu.base import GpuDevice
from workers.gpu.sim import SimGpu

ENGINE_KIND = "sim"
ENGINE_VERSION = "sim-1"
# Relative spread (standard deviation) of a request's service times, and of
# each inter-token gap around its request's TPOT; clipped at ±3 sd.
REQUEST_JITTER = 0.03
GAP_JITTER = 0.02
# Loading is the one phase not run in real time: a few seconds of modelled
# loading would only slow the farm's own tests down.
LOAD_TIME_SCALE = 0.005
MAX_LOAD_WAIT_S = 0.2


# The sim engine's arguments (named as vLLM's) are the contract's model, which
# `farmctl validate` checks sweeps with.
SimEngineArgs = SimArgs


@dataclass(frozen=True)
class _Phase:
    """A stretch of constant board power (per GPU)."""

    power_w: float
    duration_s: float


@dataclass(frozen=True)
class _Request:
    """A modelled request; times relative to the load point's start."""

    sent_s: float
    ttft_s: float
    itl_s: list[float]

    @property
    def e2e_s(self) -> float:
        return self.ttft_s + sum(self.itl_s)

    @property
    def end_s(self) -> float:
        return self.sent_s + self.e2e_s


@dataclass
class _Plan:
    """A load point: phases before, inside and after the steady window, and its requests."""

    ramp: list[_Phase]
    steady: list[_Phase]
    drain: list[_Phase]
    requests: list[_Request]
    notes: list[str] = field(default_factory=list)
    passes: int | None = None           # batch: passes over the prompts (self-sizing)
    extended_s: float | None = None     # server: sending beyond duration_s (self-sizing)


def _jitter(rng: random.Random, spread: float) -> float:
    return 1.0 + max(-3.0 * spread, min(3.0 * spread, rng.gauss(0.0, spread)))


@register(ENGINE_KIND)
class SimEngine(Engine):
    """A labelled simulated engine (kind "sim") over `SimGpu`s."""

    kind = ENGINE_KIND

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        self._sim_gpus: list[SimGpu] = []
        self._deployment: perfmodel.Deployment | None = None

    @property
    def info(self) -> EngineInfo:
        """The sim engine's kind and version, labelled simulated."""
        return EngineInfo(kind=ENGINE_KIND, version=ENGINE_VERSION, simulated=True)

    # ------------------------------------------------------------- lifecycle

    def start(self, deadline_s: float) -> None:
        """Check the model fits, then "load" it: context-held idle on every GPU.

        `deadline_s` is read as the seconds the load may take.
        """
        gpus = self._checked_gpus()
        deployment = self._build_deployment(gpus[0].info.model, len(gpus))
        perfmodel.plan_memory(deployment, self._input_tokens, self._output_tokens)
        self._sim_gpus, self._deployment = gpus, deployment
        pid = os.getpid()
        for gpu in gpus:
            gpu.set_context(True)
            gpu.add_compute_pid(pid)
        load_wait_s = min(MAX_LOAD_WAIT_S, deployment.load_s * LOAD_TIME_SCALE)
        if load_wait_s > deadline_s:
            self._wait(deadline_s)
            raise EngineError(f"the simulated model did not load within {deadline_s:g} s")
        self._wait(load_wait_s)

    def warmup(self) -> None:
        """A short modelled warm-up: the server's warmup_s at batch 1, or warmup_prompts."""
        d = self._started()
        scenario = self.run.scenario
        if isinstance(scenario, ServerLoad):
            single = perfmodel.serve(d, 1.0, self._input_tokens, self._output_tokens)
            phases = [_Phase(single.power_w, scenario.warmup_s)]
        elif scenario.warmup_prompts > 0:
            phases, _ = self._batch_phases(scenario.warmup_prompts, random.Random(0))
        else:
            phases = []
        self._hold(phases)
        self._set_power(None)

    def run_load_point(self, index: int, kind: str, value: float,
                       meter: WindowMeter) -> LoadPointOutcome:
        """Simulate one load point holding its modelled power and window."""
        plan = self._plan(index, kind, value)
        start_s = meter.now_s()
        self._hold(plan.ramp)
        meter.begin("steady", index)
        self._hold(plan.steady)
        meter.end("steady", index)
        self._hold(plan.drain)
        self._set_power(None)
        return LoadPointOutcome(
            requests=[self._record(index, i, r, start_s) for i, r in enumerate(plan.requests)],
            duration_s=meter.now_s() - start_s, notes=plan.notes,
            passes=plan.passes, extended_s=plan.extended_s,
        )

    def stop(self) -> None:
        """Back to idle without a context; safe after a failed or partial start."""
        pid = os.getpid()
        for gpu in self.gpus:
            if isinstance(gpu, SimGpu):
                gpu.set_power_w(None)
                gpu.set_context(False)
                gpu.remove_compute_pid(pid)
        self._deployment = None

    # --------------------------------------------------------------- set-up

    def _checked_gpus(self) -> list[SimGpu]:
        if not self.gpus:
            raise EngineError("the sim engine was given no GPU")
        gpus = [gpu for gpu in self.gpus if isinstance(gpu, SimGpu)]
        if len(gpus) != len(self.gpus):
            raise EngineError("the sim engine runs on simulated GPUs only")
        models = {gpu.info.model for gpu in gpus}
        if len(models) > 1:
            raise EngineError(f"a run needs GPUs of one model, got {', '.join(sorted(models))}")
        return gpus

    def _build_deployment(self, slug: str, gpu_count: int) -> perfmodel.Deployment:
        args = parse_engine_args(SimEngineArgs, self.run.engine.args, "sim")
        model = self.run.model
        return perfmodel.deployment(
            model.id, perfmodel.params_b_of(model), model.dtype, slug, gpu_count,
            max_num_seqs=args.max_num_seqs, gpu_memory_utilization=args.gpu_memory_utilization,
            sampling=self.run.workload.decoding.temperature > 0,
        )

    @property
    def _input_tokens(self) -> int:
        tokens = self.run.workload.input_tokens
        if tokens is None:
            raise EngineError(f"the sim engine needs `input_tokens`: it cannot read dataset "
                              f"{self.run.workload.dataset!r}")
        return tokens

    @property
    def _output_tokens(self) -> int:
        return self.run.workload.output_tokens

    def _started(self) -> perfmodel.Deployment:
        if self._deployment is None:
            raise EngineError("the sim engine was not started")
        return self._deployment

    # ------------------------------------------------------------- planning

    def _plan(self, index: int, kind: str, value: float) -> _Plan:
        self._started()
        scenario = self.run.scenario
        rng = random.Random(f"{self.run.workload.seed}:{self.run.repetition}:{index}")
        if kind == "batch" and isinstance(scenario, BatchLoad):
            return self._batch_plan(int(value), rng)
        if kind == "concurrency" and isinstance(scenario, ServerLoad):
            return self._closed_loop_plan(int(value), scenario, rng)
        if kind == "request_rate" and isinstance(scenario, ServerLoad):
            return self._open_loop_plan(value, scenario, rng)
        raise EngineError(f"load point kind {kind!r} does not fit a {scenario.kind} scenario")

    def _batch_plan(self, num_prompts: int, rng: random.Random) -> _Plan:
        """The prompts' waves, repeated (same prompts, same order) while the steady
        window — everything after the first prefill — is shorter than the target."""
        phases, requests = self._batch_phases(num_prompts, rng)
        target_s = self.run.measurement.steady_target_s
        if target_s <= 0:
            return _Plan(phases[:1], phases[1:], [], requests)
        pass_s = sum(p.duration_s for p in phases)
        steady_s = pass_s - phases[0].duration_s
        passes = 1
        while steady_s < target_s and passes < self.run.measurement.max_passes:
            passes += 1
            steady_s += pass_s
        # Each pass sends its prompts when it starts, as the engine child does.
        every = [_Request(k * pass_s + r.sent_s, r.ttft_s, r.itl_s)
                 for k in range(passes) for r in requests]
        notes = [f"simulated ({ENGINE_VERSION}): {num_prompts} prompts × {passes} pass(es) "
                 f"of {pass_s:.2f} s for a steady window ≥ {target_s:g} s"]
        return _Plan(phases[:1], phases[1:] + phases * (passes - 1), [], every, notes,
                     passes=passes)

    def _sending_s(self, scenario: ServerLoad, load: perfmodel.LoadPrediction) -> float:
        """How long to send: duration_s, longer where the steady window (from the
        end of the ramp) would be shorter than the self-sizing target."""
        ramp_s = min(load.ramp_s, scenario.duration_s / 2.0)
        target_s = self.run.measurement.steady_target_s
        cap_s = scenario.duration_s * self.run.measurement.max_passes
        return min(cap_s, max(scenario.duration_s, ramp_s + target_s))

    def _closed_loop_plan(self, concurrency: int, scenario: ServerLoad,
                          rng: random.Random) -> _Plan:
        """Each client sends its next request when the previous one completes.

        At the start all clients send at once: the first batch's prompts are
        prefilled together (the ramp), the clients beyond the batch wait whole
        generations; afterwards each request waits the steady queueing delay.
        """
        d = self._started()
        load = perfmodel.closed_loop(d, concurrency, self._input_tokens, self._output_tokens)
        serving = load.serving
        batch = max(1, round(serving.batch))
        sending_s = self._sending_s(scenario, load)
        requests: list[_Request] = []
        for client in range(concurrency):
            generation, position = divmod(client, batch)
            if generation == 0:
                wait_s, service_s = 0.0, (position + 1) / batch * load.ramp_s
            else:
                wait_s, service_s = generation * serving.e2e_s, serving.ttft_s
            sent_s = 0.0
            while sent_s < sending_s:
                request = self._request(rng, sent_s, wait_s, service_s, serving.tpot_s)
                requests.append(request)
                sent_s = request.end_s
                wait_s, service_s = load.queue_s, serving.ttft_s
        ramp_power_w = perfmodel.prefill_wave(d, batch, self._input_tokens).power_w
        return self._server_plan(load, ramp_power_w, scenario, requests, sending_s)

    def _open_loop_plan(self, rate_rps: float, scenario: ServerLoad,
                        rng: random.Random) -> _Plan:
        """Gamma arrivals (shape = burstiness); above capacity the queue grows."""
        d = self._started()
        load = perfmodel.open_loop(d, rate_rps, self._input_tokens, self._output_tokens,
                                   scenario.max_concurrency)
        shape = scenario.burstiness or 1.0
        sending_s = self._sending_s(scenario, load)
        requests: list[_Request] = []
        sent_s = 0.0
        while sent_s < sending_s:
            requests.append(self._request(rng, sent_s, load.queue_growth * sent_s,
                                          load.serving.ttft_s, load.serving.tpot_s))
            sent_s += rng.gammavariate(shape, 1.0 / (rate_rps * shape))
        return self._server_plan(load, load.power_w, scenario, requests, sending_s)

    def _server_plan(self, load: perfmodel.LoadPrediction, ramp_power_w: float,
                     scenario: ServerLoad, requests: list[_Request], duration_s: float) -> _Plan:
        """Ramp until the batch is full, steady until sending stops (`duration_s`,
        self-sized), then drain."""
        ramp_s = min(load.ramp_s, scenario.duration_s / 2.0)
        notes = [f"simulated ({ENGINE_VERSION}): running batch {load.serving.batch:.1f}, "
                 f"{load.throughput_rps:.3g} req/s, {load.power_w:.0f} W per GPU"
                 + (", saturated" if load.saturated else "")]
        if ramp_s < load.ramp_s:
            notes.append(f"ramp-up ({load.ramp_s:.2f} s) exceeds half the duration: the steady "
                         f"window opens at {ramp_s:.2f} s")
        drain_s = max(0.0, max(r.end_s for r in requests) - duration_s)
        half = perfmodel.serve(self._started(), max(1.0, load.serving.batch / 2.0),
                               self._input_tokens, self._output_tokens)
        requests.sort(key=lambda r: r.sent_s)
        extended_s = duration_s - scenario.duration_s
        if extended_s > 0:
            notes.append(f"sending extended by {extended_s:.2f} s for a steady window of "
                         f"{duration_s - ramp_s:.2f} s")
        return _Plan(ramp=[_Phase(ramp_power_w, ramp_s)],
                     steady=[_Phase(load.power_w, duration_s - ramp_s)],
                     drain=[_Phase(half.power_w, drain_s)], requests=requests, notes=notes,
                     extended_s=(extended_s if self.run.measurement.self_size else None))

    def _batch_phases(self, num_prompts: int,
                      rng: random.Random) -> tuple[list[_Phase], list[_Request]]:
        """All prompts sent at once, run in waves: each a prefill phase, then a decode phase."""
        waves = perfmodel.batch_waves(self._started(), num_prompts, self._input_tokens,
                                      self._output_tokens)
        phases: list[_Phase] = []
        requests: list[_Request] = []
        start_s = 0.0
        for wave in waves:
            prefill_s = wave.prefill.duration_s
            batch = [self._request(rng, 0.0, start_s, (i + 1) / wave.size * prefill_s,
                                   wave.step.duration_s) for i in range(wave.size)]
            end_s = max(r.end_s for r in batch)
            phases += [_Phase(wave.prefill.power_w, prefill_s),
                       _Phase(wave.step.power_w, end_s - start_s - prefill_s)]
            requests += batch
            start_s = end_s
        return phases, requests

    def _request(self, rng: random.Random, sent_s: float, wait_s: float, service_ttft_s: float,
                 tpot_s: float) -> _Request:
        factor = _jitter(rng, REQUEST_JITTER)
        gaps = [tpot_s * factor * _jitter(rng, GAP_JITTER)
                for _ in range(self._output_tokens - 1)]
        return _Request(sent_s, wait_s + service_ttft_s * factor, gaps)

    def _record(self, index: int, number: int, request: _Request,
                start_s: float) -> RequestRecord:
        sent_s = round(start_s + request.sent_s, 6)
        return RequestRecord(
            load_point=index, index=number, scheduled_s=sent_s, sent_s=sent_s,
            ttft_s=round(request.ttft_s, 6), e2e_s=round(request.e2e_s, 6),
            itl_s=[round(gap, 6) for gap in request.itl_s],
            input_tokens=self._input_tokens, output_tokens=self._output_tokens,
        )

    # ------------------------------------------------------------ real time

    def _hold(self, phases: list[_Phase]) -> None:
        for phase in phases:
            self._set_power(phase.power_w)
            self._wait(phase.duration_s)

    def _set_power(self, power_w: float | None) -> None:
        for gpu in self._sim_gpus:
            gpu.set_power_w(power_w)

    def _wait(self, duration_s: float) -> None:
        """Sleep in real time; a set abort event ends the wait at once."""
        if self.abort.wait(max(0.0, duration_s)):
            raise RunAborted("the worker is shutting down: simulated run aborted")
