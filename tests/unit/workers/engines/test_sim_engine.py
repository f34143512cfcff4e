"""The performance model's qualitative facts (DESIGN.md) and the sim engine's lifecycle
in real time, measured by the runner's own Meter and PowerSampler."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import GpuInfo
from farm_contract.runspec import ModelSpec, RunSpec
from workers.engines import perfmodel
from workers.engines.perfmodel import (
    batch_waves,
    closed_loop,
    deployment,
    open_loop,
    params_b_of,
    parse_params_b,
    serve,
)
from workers.engines.sim import SimEngine
from workers.errors import EngineError, OutOfMemoryError, RunAborted
from workers.gpu.base import GpuDevice
from workers.gpu.sim import SimInventory
from workers.power import Meter, PowerSampler

H100_8B = deployment("llama-8b", 8.0, "bfloat16", "h100-80gb")
CONCURRENCY = [1, 2, 4, 8, 16, 32, 64, 100, 128, 256, 512, 1000, 5000]


# ------------------------------------------------------------------ perf model


@pytest.mark.parametrize("text,params_b", [
    ("Llama-3.1-8B", 8.0), ("meta-llama/Llama-3.1-8B-Instruct", 8.0), ("qwen2.5-0.5b", 0.5),
    ("EleutherAI/pythia-6.9b-deduped", 6.9), ("pythia-160m", 0.16), ("gpt2", None),
])
def test_parameter_count_is_read_from_the_name(text, params_b):
    assert parse_params_b(text) == params_b


def test_a_model_of_unknown_size_asks_for_params_b():
    assert params_b_of(ModelSpec(id="mystery", source="org/x", params_b=3.0)) == 3.0
    assert params_b_of(ModelSpec(id="mystery", source="org/llama-13b")) == 13.0
    with pytest.raises(EngineError, match="params_b"):
        params_b_of(ModelSpec(id="mystery", source="org/gpt2"))


def test_energy_per_request_falls_with_concurrency_then_plateaus():
    energy_j = [closed_loop(H100_8B, c, 512, 64).energy_per_request_j for c in CONCURRENCY]
    assert all(later <= earlier * 1.0001 for earlier, later in pairwise(energy_j))
    assert energy_j[0] / energy_j[CONCURRENCY.index(100)] > 8        # steep fall to ~100
    plateau = energy_j[CONCURRENCY.index(100):]
    assert max(plateau) / min(plateau) < 1.02                         # then flat
    assert closed_loop(H100_8B, 5000, 512, 64).saturated
    assert closed_loop(H100_8B, 5000, 512, 64).queue_s > 30           # the rest queues


def test_a_70b_model_in_bf16_does_not_fit_one_l4():
    l4 = deployment("llama-70b", 70.0, "bfloat16", "l4")
    with pytest.raises(OutOfMemoryError, match="CUDA out of memory .*130.4 GiB of weights"):
        perfmodel.plan_memory(l4, 128, 128)
    # Four H100s hold it; the KV cache left caps the batch below max_num_seqs on one.
    assert perfmodel.plan_memory(deployment("m", 70.0, "bfloat16", "h100-80gb", 4),
                                 128, 128).max_batch == 256
    with pytest.raises(OutOfMemoryError):
        perfmodel.plan_memory(deployment("m", 70.0, "bfloat16", "h100-80gb", 1), 128, 128)


def test_a_small_kv_cache_caps_the_batch_and_long_sequences_fail():
    l4 = deployment("llama-8b", 8.0, "bfloat16", "l4")
    assert 30 < perfmodel.plan_memory(l4, 1024, 256).max_batch < 60
    with pytest.raises(OutOfMemoryError, match="larger than the maximum number of tokens"):
        perfmodel.plan_memory(l4, 60_000, 512)


def test_tensor_parallel_is_faster_but_costs_more_energy_per_token():
    tp2 = deployment("llama-8b", 8.0, "bfloat16", "h100-80gb", gpu_count=2)
    for concurrency in (1, 8, 64, 256):
        one = closed_loop(H100_8B, concurrency, 512, 128)
        two = closed_loop(tp2, concurrency, 512, 128)
        assert two.serving.ttft_s < one.serving.ttft_s
        assert two.serving.tpot_s < one.serving.tpot_s
        assert two.energy_per_output_token_j > one.energy_per_output_token_j


def test_a_big_gpu_wins_at_high_load_a_small_low_idle_one_at_low_load():
    h100 = deployment("llama-8b", 8.0, "bfloat16", "h100-80gb")
    l4 = deployment("llama-8b", 8.0, "bfloat16", "l4")
    busy = [closed_loop(d, 256, 256, 512).energy_per_request_j for d in (h100, l4)]
    assert busy[0] < 0.6 * busy[1]
    small_h100 = deployment("qwen-0.5b", 0.5, "auto", "h100-80gb")
    small_l4 = deployment("qwen-0.5b", 0.5, "auto", "l4")
    single = [closed_loop(d, 1, 256, 128).energy_per_request_j for d in (small_h100, small_l4)]
    assert single[1] < single[0]
    trickle = [open_loop(d, 0.1, 256, 128).energy_per_request_j for d in (h100, l4)]
    assert trickle[1] < 0.5 * trickle[0]                              # idle power dominates


def test_open_loop_batch_is_the_littles_law_fixed_point_until_saturation():
    load = open_loop(H100_8B, 20.0, 512, 64)
    assert not load.saturated
    assert load.serving.batch == pytest.approx(20.0 * load.serving.e2e_s, rel=1e-6)
    assert load.throughput_rps == 20.0
    capacity_rps = closed_loop(H100_8B, 256, 512, 64).throughput_rps
    over = open_loop(H100_8B, 2 * capacity_rps, 512, 64)
    assert over.saturated and over.queue_growth == pytest.approx(1.0)
    assert over.throughput_rps == pytest.approx(capacity_rps)
    capped = open_loop(H100_8B, 2 * capacity_rps, 512, 64, max_concurrency=16)
    assert capped.serving.batch == 16


def test_batches_run_in_waves_of_the_largest_batch():
    waves = batch_waves(H100_8B, 600, 128, 64)
    assert [w.size for w in waves] == [256, 256, 88]
    assert waves[0].duration_s(64) > waves[2].duration_s(64)


def test_board_power_stays_between_idle_and_tdp():
    for batch in (1, 16, 256):
        power_w = serve(H100_8B, batch, 512, 64).power_w
        assert H100_8B.idle_w < power_w <= H100_8B.tdp_w
    assert serve(H100_8B, 1, 512, 64).power_w < serve(H100_8B, 256, 512, 64).power_w


# --------------------------------------------------------------------- engine


def sim_run(scenario: str, gpu: str = "sim:H100", engine_args: str = "", seed: int = 0,
            model: str = 'id = "tiny-1b"\nsource = "org/tiny-1B"') -> RunSpec:
    text = f"""
name = "sim-engine"
[[model]]
{model}
[hardware]
gpu = "{gpu}"
[engine]
kind = "sim"
{engine_args}
[[scenario]]
{scenario}
[workload]
input_tokens = 64
output_tokens = 16
seed = {seed}
[measurement]
# These load points are a fraction of a second on purpose: not self-sized.
self_size = false
"""
    return expand(parse_sweep(text))[0]


SERVER = 'kind = "server"\nconcurrency = [1, 4]\nduration_s = 0.3\nwarmup_s = 0.05'
BATCH = 'kind = "batch"\nnum_prompts = 8\nwarmup_prompts = 2'


class Harness:
    """GPUs, a sampler and a meter around one engine, as the runner sets them up."""

    def __init__(self, run: RunSpec):
        self.run = run
        self.gpus = SimInventory(f"{run.hardware.gpu_model}x{run.hardware.gpu_count}").devices()
        self.sampler = PowerSampler(self.gpus, period_s=0.02)
        self.meter = Meter(self.gpus, self.sampler)
        self.abort = threading.Event()
        self.engine = SimEngine(run, self.gpus, self.abort)

    def outcomes(self):
        self.engine.start(deadline_s=60)
        self.engine.warmup()
        return [self.engine.run_load_point(i, kind, value, self.meter)
                for i, (kind, value) in enumerate(self.run.scenario.load_points)]


@pytest.fixture
def harness() -> Iterator[Callable[[RunSpec], Harness]]:
    made: list[Harness] = []

    def make(run: RunSpec) -> Harness:
        made.append(Harness(run))
        made[-1].sampler.start()
        return made[-1]

    yield make
    for h in made:
        h.engine.stop()
        h.sampler.stop()


def test_server_lifecycle_yields_requests_and_steady_windows(harness):
    h = harness(sim_run(SERVER))
    assert h.engine.info.simulated and h.engine.info.kind == "sim"
    start_s = h.meter.now_s()
    outcomes = h.outcomes()
    for index, (outcome, concurrency) in enumerate(zip(outcomes, (1, 4))):
        assert len(outcome.requests) >= concurrency
        assert outcome.duration_s >= 0.3
        for request in outcome.requests:
            assert request.load_point == index and request.ok
            assert request.input_tokens == 64 and request.output_tokens == 16
            assert len(request.itl_s) == 15
            assert request.e2e_s == pytest.approx(request.ttft_s + sum(request.itl_s), abs=1e-5)
            assert 0 <= request.sent_s - outcome.requests[0].sent_s < 0.3   # sent in duration_s
            assert request.sent_s >= start_s
        window = h.meter.window("steady", index)
        assert window is not None and window.energy_j > 0
        assert 0 < window.duration_s < outcome.duration_s
    # More clients, more requests, more power in the steady state.
    first, second = (h.meter.window("steady", i) for i in (0, 1))
    assert len(outcomes[1].requests) > len(outcomes[0].requests)
    assert second.avg_power_w > first.avg_power_w


def test_batch_lifecycle_runs_every_prompt(harness):
    h = harness(sim_run(BATCH, gpu="sim:L4"))
    (outcome,) = h.outcomes()
    assert len(outcome.requests) == 8
    assert sum(r.output_tokens for r in outcome.requests) == 8 * 16
    assert len({r.sent_s for r in outcome.requests}) == 1       # all sent at once
    window = h.meter.window("steady", 0)
    assert window.energy_j > 0 and window.duration_s > 0
    last_end_s = max(r.sent_s + r.e2e_s for r in outcome.requests)
    assert outcome.duration_s == pytest.approx(last_end_s - outcome.requests[0].sent_s, abs=0.05)


def test_records_are_deterministic_per_seed_and_repetition(harness):
    def shape(seed: int, repetition: int = 0) -> tuple[list[tuple], list[float]]:
        """(latencies, send offsets): offsets shift by the run's clock, latencies do not."""
        scenario = 'kind = "server"\nconcurrency = [2]\nduration_s = 0.2\nwarmup_s = 0'
        run = sim_run(scenario, seed=seed).model_copy(update={"repetition": repetition})
        (outcome,) = harness(run).outcomes()
        origin = outcome.requests[0].sent_s
        return ([(r.ttft_s, tuple(r.itl_s)) for r in outcome.requests],
                [r.sent_s - origin for r in outcome.requests])

    latencies, offsets = shape(seed=3)
    again_latencies, again_offsets = shape(seed=3)
    assert latencies == again_latencies
    assert offsets == pytest.approx(again_offsets, abs=1e-5)
    assert shape(seed=4)[0] != latencies
    assert shape(seed=3, repetition=1)[0] != latencies


def test_gpus_follow_the_lifecycle(harness):
    h = harness(sim_run(BATCH))
    gpu = h.gpus[0]
    h.engine.start(deadline_s=60)
    assert gpu.power_w() == pytest.approx(124.0, rel=0.011)           # context held
    assert gpu.compute_pids() != []
    h.engine.stop()
    assert gpu.power_w() == pytest.approx(77.0, rel=0.011)
    assert gpu.compute_pids() == []


def test_abort_stops_a_long_load_point_promptly(harness):
    h = harness(sim_run('kind = "server"\nconcurrency = [4]\nduration_s = 60\nwarmup_s = 0'))
    h.engine.start(deadline_s=60)
    h.engine.warmup()
    timer = threading.Timer(0.3, h.abort.set)
    timer.start()
    began_s = time.monotonic()
    with pytest.raises(RunAborted):
        h.engine.run_load_point(0, "concurrency", 4.0, h.meter)
    assert time.monotonic() - began_s < 0.3 + 0.5


def test_out_of_memory_fails_the_start(harness):
    # `validate` refuses this sweep (tests/unit/farm/test_spec_refusals.py); a RunSpec
    # that comes another way still fails on the worker, as vLLM would.
    run = sim_run(BATCH, gpu="sim:L4")
    run = run.model_copy(update={"model": run.model.model_copy(
        update={"id": "big-70b", "source": "org/Llama-3-70B"})})
    with pytest.raises(OutOfMemoryError):
        harness(run).engine.start(deadline_s=60)


def test_bad_engine_arguments_are_named(harness):
    run = sim_run(BATCH)    # as above: the worker checks what `validate` checked
    run = run.model_copy(update={"engine": run.engine.model_copy(
        update={"args": {"max_num_sqs": 8}})})
    with pytest.raises(EngineError, match="max_num_sqs.*known: max_num_seqs"):
        harness(run).engine.start(deadline_s=60)


class NvmlLikeGpu(GpuDevice):
    """A device that is not a SimGpu, as an NVML GPU would be."""

    energy_sensor = "nvml.total_energy_counter"
    power_sensor = "nvml.field.power_instant"

    def __init__(self, info: GpuInfo):
        self.info = info

    def energy_mj(self) -> float | None:
        return None

    def power_w(self) -> float | None:
        return None

    def temperature_c(self) -> float | None:
        return None

    def compute_pids(self) -> list[int]:
        return []


def test_engine_refuses_real_gpus():
    info = SimInventory("H100").devices()[0].info.model_copy(update={"backend": "gpu"})
    engine = SimEngine(sim_run(BATCH), [NvmlLikeGpu(info)], threading.Event())
    with pytest.raises(EngineError, match="simulated GPUs only"):
        engine.start(deadline_s=60)
    engine.stop()
