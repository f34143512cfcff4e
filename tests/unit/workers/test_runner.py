"""run_one's lifecycle on the simulated GPU: windows, figures, failures kept as data."""

from __future__ import annotations

import textwrap
import threading

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import WorkerInfo
from workers.engines.base import Engine
from workers.errors import EngineError, GpuError, RunAborted
from workers.gpu.sim import SimInventory
from workers.runner import run_one

WORKER = WorkerInfo(name="w@test", host="test", pid=1)


def one_run(scenario: str):
    text = textwrap.dedent(f"""\
        name = "runner"
        [[model]]
        id = "tiny-1b"
        source = "org/tiny-1B"
        [hardware]
        gpu = ["sim:H100"]
        [engine]
        kind = "sim"
        {scenario}
        [workload]
        input_tokens = [32]
        output_tokens = [16]
        [measurement]
        sample_period_s = 0.02
        idle_baseline_s = 0.1
        min_steady_s = 0.1
        """)
    return expand(parse_sweep(text))[0]


SERVER = '[[scenario]]\nkind = "server"\nconcurrency = [1, 4]\nduration_s = 0.3\nwarmup_s = 0.05'
BATCH = '[[scenario]]\nkind = "batch"\nnum_prompts = 8\nwarmup_prompts = 1'


@pytest.mark.parametrize("scenario,points", [(SERVER, 2), (BATCH, 1)])
def test_a_run_measures_every_window(scenario, points):
    run = one_run(scenario)
    gpus = SimInventory("H100-80GB").devices()
    result = run_one(run, gpus, threading.Event(), worker=WORKER, attempt=1)
    assert result.status == "succeeded", result.error
    assert result.simulated and result.measurement.energy_sensor == "sim.energy_counter"
    names = [(w.name, w.load_point) for w in result.windows]
    for expected in [("idle", None), ("load", None), ("warmup", None), ("run", None)]:
        assert expected in names
    assert [lp for n, lp in names if n == "steady"] == list(range(points))
    assert len(result.load_points) == points
    for lp in result.load_points:
        assert lp.energy_j > 0 and lp.energy_per_output_token_j > 0
        assert lp.steady_output_tokens and lp.steady_output_tokens <= lp.output_tokens
    run_window = result.window("run")
    assert run_window.energy_j >= sum(w.energy_j for w in result.windows if w.name == "steady")
    assert result.trace and len(result.trace.t_s) > 5
    assert {r.load_point for r in result.requests} == set(range(points))
    # Goodput under the scenario's SLO (MLPerf defaults); a batch has none.
    for lp in result.load_points:
        if run.scenario.kind == "server":
            assert (lp.slo_ttft_ms, lp.slo_tpot_ms) == (2000.0, 200.0)
            assert lp.good_requests is not None and 0 < lp.good_requests <= lp.num_ok
            assert lp.slo_attainment == pytest.approx(lp.good_requests / lp.num_requests)
            assert lp.goodput_rps == pytest.approx(lp.good_requests / lp.duration_s, rel=1e-3)
            assert lp.slo_p99_met is not None
        else:
            assert (lp.slo_ttft_ms, lp.good_requests, lp.goodput_rps) == (None, None, None)
        # the sim engine is no load generator: those figures are not measured
        assert (lp.unsent_requests, lp.max_in_flight, lp.lateness.p99_ms) == (None, None, None)


class Broken(Engine):
    kind = "broken"
    stopped = False

    @property
    def info(self):
        from farm_contract.records import EngineInfo

        return EngineInfo(kind="broken", simulated=True)

    def start(self, deadline_s):
        raise EngineError("model path /nope does not exist", log_tail=["line 1", "line 2"])

    def warmup(self):
        raise AssertionError("never reached")

    def run_load_point(self, index, kind, value, meter):
        raise AssertionError("never reached")

    def stop(self):
        Broken.stopped = True


def test_engine_failure_is_a_failed_result_with_the_log_and_gpus_freed():
    run = one_run(BATCH)
    gpus = SimInventory("H100-80GB").devices()
    result = run_one(run, gpus, threading.Event(), worker=WORKER, attempt=2,
                     engine_factory=Broken)
    assert result.status == "failed" and result.attempt == 2
    assert result.error.kind == "engine" and "does not exist" in result.error.message
    assert result.error.log_tail == ["line 1", "line 2"]
    assert Broken.stopped
    assert result.window("idle").energy_j > 0      # what was measured is kept


def test_a_bug_becomes_an_internal_failure_not_a_crash():
    def factory(run, gpus, abort):
        raise ZeroDivisionError("oops")

    result = run_one(one_run(BATCH), SimInventory("L4").devices(), threading.Event(),
                     worker=WORKER, attempt=1, engine_factory=factory)
    assert result.status == "failed" and result.error.kind == "internal"
    assert "ZeroDivisionError" in result.error.message


def test_transient_errors_and_aborts_escape():
    def gpu_lost(run, gpus, abort):
        raise GpuError("GPU is lost")

    with pytest.raises(GpuError):
        run_one(one_run(BATCH), SimInventory("L4").devices(), threading.Event(),
                worker=WORKER, attempt=1, engine_factory=gpu_lost)
    abort = threading.Event()
    abort.set()
    with pytest.raises(RunAborted):
        run_one(one_run(SERVER), SimInventory("L4").devices(), abort, worker=WORKER,
                attempt=1)


def test_run_guard_times_out_and_follows_worker_shutdown():
    from tasks.measure import _RunGuard

    worker_abort = threading.Event()
    with _RunGuard(worker_abort, limit_s=0.3) as guard:
        assert guard.abort.wait(2) and guard.timed_out
    with _RunGuard(worker_abort, limit_s=60) as guard:
        worker_abort.set()
        assert guard.abort.wait(2) and not guard.timed_out


def test_both_idle_baselines_preflight_and_validity_are_recorded():
    run = one_run(SERVER)
    result = run_one(run, SimInventory("H100-80GB").devices(), threading.Event(),
                     worker=WORKER, attempt=1)
    assert result.preflight and result.preflight.cooled
    assert result.preflight.gpus[0].power_limit_w == 700.0
    idle, idle_ctx = result.window("idle"), result.window("idle_ctx")
    assert idle.energy_j > 0 and idle_ctx.energy_j > 0
    # The H100's measured idle: ~77 W without a CUDA context, ~124 W with one.
    assert result.idle.idle_power_w == pytest.approx(77, rel=0.1)
    assert result.idle.idle_ctx_power_w == pytest.approx(124, rel=0.1)
    assert result.validity and result.validity.valid, result.validity
    names = {c.name for c in result.validity.checks}
    assert names == {"steady_window", "power_range", "temperature", "agreement", "stalls"}
    lp = result.load_points[0]
    assert lp.energy_net_j < lp.energy_j
    assert lp.energy_per_output_token_net_j < lp.energy_per_output_token_j
    assert lp.output_tokens_per_j == pytest.approx(1 / lp.energy_per_output_token_j)
    trace = result.trace
    assert trace.temperature_c and trace.sm_clock_mhz and trace.memory_power_w


def test_a_foreign_process_during_the_run_contaminates_it():
    from workers.runner import Contaminated

    gpus = SimInventory("L4").devices()
    intruder = threading.Timer(0.3, lambda: gpus[0].add_compute_pid(999_999))
    intruder.start()
    try:
        with pytest.raises(Contaminated, match="999999"):
            run_one(one_run(SERVER), gpus, threading.Event(), worker=WORKER, attempt=1)
    finally:
        intruder.cancel()
        gpus[0].remove_compute_pid(999_999)


def test_a_busy_gpu_is_retried_not_run():
    from workers.preflight import GpuBusy

    gpus = SimInventory("L4").devices()
    gpus[0].add_compute_pid(424_242)
    with pytest.raises(GpuBusy):
        run_one(one_run(BATCH), gpus, threading.Event(), worker=WORKER, attempt=1)


def test_a_pause_between_phases_is_recorded_and_makes_the_run_invalid():
    """A progress report that blocks (a broker partition, before it was made
    asynchronous) left the engine idle between warm-up and the load point."""
    run = one_run(SERVER)
    calls = []

    def slow_report(index, total, kind, value):
        calls.append(index)
        if index == 1:
            threading.Event().wait(2.5)

    result = run_one(run, SimInventory("H100-80GB").devices(), threading.Event(),
                     worker=WORKER, attempt=1, on_load_point=slow_report)
    assert result.status == "succeeded" and calls == [0, 1]
    stalls = next(c for c in result.validity.checks if c.name == "stalls")
    assert not stalls.passed and not result.validity.valid
    assert stalls.value >= 2.5
    assert "between load point 0 and 1" in stalls.detail


def test_stall_checks_judge_timeline_gaps_inside_steady_windows_only():
    from farm_contract.records import EnergyWindow
    from workers.stalls import Stall, check_stalls, sample_gaps

    steady = EnergyWindow(name="steady", load_point=2, start_s=10.0, duration_s=5.0,
                          energy_j=1000.0)
    ticks = [10.0 + 0.1 * i for i in range(11)] + [13.5 + 0.1 * i for i in range(15)]
    gaps = sample_gaps([steady], ticks, period_s=0.1)
    assert [(g.where, round(g.at_s, 1), round(g.duration_s, 1)) for g in gaps] == [
        ("power timeline of steady[2]", 11.0, 2.5)]
    # The same gap outside any steady window is not judged.
    assert sample_gaps([steady.model_copy(update={"name": "warmup"})], ticks, 0.1) == []
    check = check_stalls([Stall("between warm-up and load point 0", 1.0, 0.01)], gaps, 0.1)
    assert not check.passed and check.value == 2.5 and "steady[2]" in check.detail
    assert check_stalls([Stall("x", 0.0, 0.01)], [], 0.1).passed
