"""Self-sizing steady windows (issue 13 item 1) and the rate sweep to saturation
(item 4), through run_one on the simulated GPU and engine, in real time."""

from __future__ import annotations

import textwrap
import threading

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import LoadPointResult, WorkerInfo
from farm_contract.runspec import MeasurementSpec, RateSweep, RunSpec
from workers.gpu.sim import SimInventory
from workers.ratesweep import ACHIEVED, FLAT, TTFT, mark, saturation
from workers.runner import run_one

WORKER = WorkerInfo(name="w@test", host="test", pid=1)
MEASUREMENT = """
[measurement]
sample_period_s = 0.02
idle_baseline_s = 0.1
cooldown_timeout_s = 0
codecarbon = false
"""


def sweep_run(scenario: str, gpu: str, measurement: str, engine: str = "") -> RunSpec:
    text = textwrap.dedent(f"""\
        name = "self-sizing"
        [[model]]
        id = "llama-8b"
        source = "org/llama-8B"
        [hardware]
        gpu = ["{gpu}"]
        [engine]
        kind = "sim"
        {engine}
        [[scenario]]
        {scenario}
        [workload]
        input_tokens = [64]
        output_tokens = [64]
        """) + MEASUREMENT + measurement
    return expand(parse_sweep(text))[0]


def measure(run: RunSpec):
    gpus = SimInventory(f"{run.hardware.gpu_model}x1").devices()
    return run_one(run, gpus, threading.Event(), worker=WORKER, attempt=1)


def test_slow_and_fast_gpus_take_different_passes_and_both_fill_the_window():
    # The same 8 prompts: one pass is far shorter than a 3 s window (3.3 s with the
    # 10% margin) on an H100, about as long on the slower L4.
    scenario = 'kind = "batch"\nnum_prompts = 8\nwarmup_prompts = 0'
    passes = {}
    for gpu in ("sim:H100", "sim:L4"):
        result = measure(sweep_run(scenario, gpu, "min_steady_s = 3"))
        (lp,) = result.load_points
        window = result.window("steady", 0)
        assert window.duration_s >= 3.3 * 0.99
        check = next(c for c in result.validity.checks if c.name == "steady_window")
        assert check.passed, check
        # Counts, energy and J/token cover every pass.
        assert lp.num_requests == 8 * lp.passes == len(result.requests)
        assert lp.output_tokens == 64 * 8 * lp.passes
        assert lp.energy_per_output_token_j == window.energy_j / lp.steady_output_tokens
        assert lp.steady_output_tokens > 64 * 8 * (lp.passes - 1)
        passes[gpu] = lp.passes
    assert passes["sim:H100"] > passes["sim:L4"] >= 1, passes


def test_self_sizing_off_keeps_the_short_window_and_records_no_passes():
    scenario = 'kind = "batch"\nnum_prompts = 8\nwarmup_prompts = 0'
    result = measure(sweep_run(scenario, "sim:H100", "min_steady_s = 3\nself_size = false"))
    assert result.load_points[0].passes is None
    assert result.window("steady", 0).duration_s < 3
    assert not result.validity.valid


def test_max_passes_caps_a_window_that_cannot_fill():
    scenario = 'kind = "batch"\nnum_prompts = 8\nwarmup_prompts = 0'
    result = measure(sweep_run(scenario, "sim:H100", "min_steady_s = 30\nmax_passes = 2"))
    assert result.load_points[0].passes == 2
    assert result.window("steady", 0).duration_s < 30


def test_a_server_load_point_sends_longer_until_its_window_is_long_enough():
    scenario = 'kind = "server"\nconcurrency = [4]\nduration_s = 1\nwarmup_s = 0.05'
    result = measure(sweep_run(scenario, "sim:H100", "min_steady_s = 2"))
    (lp,) = result.load_points
    assert result.window("steady", 0).duration_s >= 2.2 * 0.99
    assert 1.2 < lp.steady_extended_s < 2.2
    assert any("sending extended" in note for note in lp.notes)


def test_self_sizing_settings_at_their_defaults_keep_old_run_ids():
    # Run ids stored before self-sizing and rate sweeps existed (see test_quietgate).
    scenario = 'kind = "batch"\nnum_prompts = 8\nwarmup_prompts = 0'
    run = sweep_run(scenario, "sim:H100", "min_steady_s = 3")
    data = run.model_dump(mode="json")
    for key in ("self_size", "steady_margin_pct", "max_passes"):
        del data["measurement"][key]
    assert run.run_id == RunSpec.model_validate(data).run_id
    assert "self_size" not in run.canonical_json()
    assert "rate_sweep" not in run.canonical_json()
    other = sweep_run(scenario, "sim:H100", "min_steady_s = 3\nmax_passes = 3")
    assert other.run_id != run.run_id
    assert MeasurementSpec().steady_target_s == 33.0


# ------------------------------------------------------------------ rate sweep

RATE_SWEEP = ('kind = "server"\nrate_sweep = { start = 1, factor = 2, max_points = 10, '
              'min_requests = 5 }\nduration_s = 2\nwarmup_s = 0.05')


@pytest.mark.slow
def test_a_rate_sweep_stops_at_saturation_with_its_knee_and_figures():
    # Four sequences at most: the 8B model's H100 capacity is ~7 req/s.
    run = sweep_run(RATE_SWEEP, "sim:H100", "min_steady_s = 3", "max_num_seqs = 4")
    result = measure(run)
    points = result.load_points
    rates = [lp.value for lp in points]
    assert rates[:3] == [1.0, 2.0, 4.0]
    assert 3 <= len(points) < 10, rates                       # stopped by itself
    last = points[-1]
    assert last.saturation in (ACHIEVED, FLAT, TTFT)
    assert any(last.saturation in note for note in last.notes)
    (knee,) = [lp for lp in points if lp.knee]
    assert knee is points[-2] and rates[0] < knee.value < rates[-1]
    for lp in points:
        assert lp.kind == "request_rate"
        assert lp.energy_per_request_j and lp.energy_per_request_net_j
        assert lp.idle_energy_per_request_j > 0
        assert lp.energy_per_request_j == pytest.approx(
            lp.energy_per_request_net_j + lp.idle_energy_per_request_j, rel=1e-12)
        assert lp.offered_rps > 0
        assert result.window("steady", lp.index).duration_s >= 3.3 * 0.99
    # Idle's share per request falls as the rate rises.
    assert points[0].idle_energy_per_request_j > 3 * points[-2].idle_energy_per_request_j
    assert result.validity.valid


def lp(index: int, rate: float, achieved: float, ttft_ms: float = 10.0,
       offered: float | None = None, tokens: int = 6400) -> LoadPointResult:
    # a 10 s window of 64-token requests
    return LoadPointResult.model_validate({
        "index": index, "kind": "request_rate", "value": rate, "duration_s": 10.0,
        "num_requests": 1, "num_ok": 1, "num_failed": 0, "input_tokens": 1,
        "output_tokens": 64, "steady_output_tokens": tokens,
        "request_throughput_rps": achieved, "output_throughput_tps": tokens / 10.0,
        "offered_rps": rate if offered is None else offered,
        "ttft": {"p50_ms": ttft_ms}})


def test_each_stop_rule_is_named_and_judged_on_enough_requests():
    sweep = RateSweep(min_requests=20)
    assert saturation([lp(0, 4, 4.0)], sweep) is None
    assert saturation([lp(0, 4, 4.0), lp(1, 8, 6.0, offered=8.2)], sweep).rule == ACHIEVED
    assert saturation([lp(0, 4, 4.0), lp(1, 8, 4.1, offered=4.2)], sweep).rule == FLAT
    assert saturation([lp(0, 4, 4.0), lp(1, 8, 8.0, ttft_ms=120)], sweep).rule == TTFT
    # Two requests in the window: their count says nothing about throughput.
    assert saturation([lp(0, 0.2, 0.1, offered=0.2, tokens=128)], sweep) is None
    points = mark([lp(0, 4, 4.0), lp(1, 8, 4.1, offered=4.2)],
                  saturation([lp(0, 4, 4.0), lp(1, 8, 4.1, offered=4.2)], sweep), sweep)
    assert points[0].knee and points[1].saturation == FLAT and points[1].knee is None
    (unsaturated,) = mark([lp(0, 4, 4.0)], None, sweep)
    assert unsaturated.saturation is None and "no knee" in unsaturated.notes[-1]
