"""Energy windows from counters, timeline integrals, and load-point figures."""

import time

import pytest

from farm_contract.records import EnergyWindow, GpuInfo, LatencyStats, RequestRecord
from farm_contract.rules import Slo, goodput_of
from farm_contract.runspec import BatchLoad, ServerLoad
from workers.engines.base import LoadPointOutcome
from workers.gpu.base import GpuDevice
from workers.metrics import load_point_result, slo_for, tokens_in
from workers.power import Meter, PowerSampler


class ScriptedGpu(GpuDevice):
    """Counter and power follow a script: a hardware seam for tests."""

    energy_sensor = "test.counter"
    power_sensor = "test.power"

    def __init__(self, watts=100.0):
        self.info = GpuInfo(index=0, uuid="GPU-test", name="test", model="h100-80gb",
                            backend="sim")
        self.watts = watts
        self.origin = time.monotonic()
        self.offset_mj = 5_000_000.0
        self.counter_ok = True

    def energy_mj(self):
        if not self.counter_ok:
            return None
        return self.offset_mj + (time.monotonic() - self.origin) * self.watts * 1000

    def power_w(self):
        return self.watts

    def temperature_c(self):
        return 40.0

    def compute_pids(self):
        return []


def meter_for(gpu, period_s=0.02):
    sampler = PowerSampler([gpu], period_s)
    sampler.start()
    return Meter([gpu], sampler), sampler


def test_counter_window_and_timeline_agree():
    gpu = ScriptedGpu(200.0)
    meter, sampler = meter_for(gpu)
    meter.begin("steady", 0)
    time.sleep(0.5)
    window = meter.end("steady", 0)
    sampler.stop()
    assert window.energy_j == pytest.approx(200.0 * window.duration_s, rel=0.02)
    assert window.timeline_energy_j == pytest.approx(window.energy_j, rel=0.05)
    assert window.avg_power_w == pytest.approx(200.0, rel=0.02)
    assert window.per_gpu_energy_j == [pytest.approx(window.energy_j)]


def test_counter_reset_makes_energy_null_not_negative():
    gpu = ScriptedGpu()
    meter, sampler = meter_for(gpu)
    meter.begin("load")
    gpu.offset_mj = 0.0          # driver reload: the counter starts over
    time.sleep(0.05)
    window = meter.end("load")
    sampler.stop()
    assert window.energy_j is None
    assert "backwards" in window.null_reason


def test_missing_counter_is_null_with_reason():
    gpu = ScriptedGpu()
    gpu.counter_ok = False
    meter, sampler = meter_for(gpu)
    meter.begin("idle")
    window = meter.end("idle")
    sampler.stop()
    assert window.energy_j is None and window.null_reason == "energy counter unavailable"


def request(i, sent, ttft, gaps, ok=True):
    return RequestRecord(load_point=0, index=i, sent_s=sent, ttft_s=ttft,
                         e2e_s=None if ttft is None else ttft + sum(gaps), itl_s=gaps,
                         input_tokens=10,
                         output_tokens=len(gaps) + 1, ok=ok)


def outcome(reqs, duration_s=1.0, notes=()):
    return LoadPointOutcome(requests=reqs, duration_s=duration_s, notes=list(notes))


def test_tokens_counted_inside_the_steady_window_only():
    reqs = [request(0, 0.0, 0.1, [0.1] * 9)]   # tokens at 0.1, 0.2, … 1.0
    assert tokens_in(reqs, 0.0, 2.0) == 10
    assert tokens_in(reqs, 0.25, 0.55) == 3


def test_load_point_figures_from_steady_window():
    reqs = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(4)]
    steady = EnergyWindow(name="steady", load_point=0, start_s=0.0, duration_s=1.0,
                          energy_j=80.0, avg_power_w=80.0)
    lp = load_point_result(0, "concurrency", 4, outcome(reqs, 1.2), steady)
    assert lp.output_tokens == 40 and lp.num_ok == 4
    assert lp.energy_per_output_token_j == pytest.approx(2.0)
    assert lp.energy_per_request_j == pytest.approx(20.0)
    assert lp.output_throughput_tps == pytest.approx(40.0)
    assert lp.ttft.p50_ms == pytest.approx(100.0)
    assert lp.tpot.mean_ms == pytest.approx(100.0)


def test_figures_are_null_without_energy():
    reqs = [request(0, 0.0, 0.1, [0.1] * 3), request(1, 0.0, None, [], ok=False)]
    steady = EnergyWindow(name="steady", load_point=0, start_s=0, duration_s=1.0, energy_j=None)
    lp = load_point_result(0, "concurrency", 1, outcome(reqs), steady)
    assert lp.energy_per_output_token_j is None and lp.energy_per_request_j is None
    assert lp.num_failed == 1
    no_window = load_point_result(0, "batch", 8, outcome(reqs), None)
    assert no_window.energy_j is None and no_window.output_throughput_tps is None


def test_window_shorter_than_the_counter_update_is_null_not_zero():
    gpu = ScriptedGpu()
    gpu.counter_update_s = 0.1
    meter, sampler = meter_for(gpu)
    meter.begin("load")
    window = meter.end("load")
    sampler.stop()
    assert window.energy_j is None and "update period" in window.null_reason
    meter.begin("steady", 0)
    time.sleep(0.25)
    assert meter.end("steady", 0).energy_j > 0


def test_net_of_idle_and_emissions_figures():
    from workers.metrics import with_idle_and_carbon

    reqs = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(4)]
    steady = EnergyWindow(name="steady", load_point=0, start_s=0.0, duration_s=1.0,
                          energy_j=300.0, avg_power_w=300.0)
    lp = with_idle_and_carbon(load_point_result(0, "concurrency", 4, outcome(reqs), steady),
                              steady, idle_power_w=100.0, carbon_g_per_kwh=360.0)
    assert lp.energy_net_j == pytest.approx(200.0)
    assert lp.energy_per_output_token_net_j == pytest.approx(5.0)      # 200 J / 40 tokens
    assert lp.energy_per_request_net_j == pytest.approx(50.0)
    assert lp.output_tokens_per_j_net == pytest.approx(0.2)
    assert lp.avg_power_net_w == pytest.approx(200.0)
    # 7.5 J/token × 1000 tokens = 7.5 kJ = 1/480 kWh → 0.75 g at 360 g/kWh
    assert lp.gco2e_per_1k_tokens == pytest.approx(0.75)
    assert lp.gco2e_per_1k_tokens_net == pytest.approx(0.5)
    unknown = with_idle_and_carbon(lp, steady, idle_power_w=None, carbon_g_per_kwh=None)
    assert unknown.energy_net_j is None and unknown.gco2e_per_1k_tokens is None


# ------------------------------------------------------------------ goodput


def test_a_request_over_the_ttft_limit_is_not_good():
    # 10 tokens each: TTFT 0.1 s, TPOT 0.1 s; the last one waited 2.5 s for its first token
    reqs = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(3)] + [request(3, 0.0, 2.5, [0.1] * 9)]
    good = goodput_of(reqs, 2.0, Slo(ttft_s=2.0, tpot_s=0.2))
    assert good.good_requests == 3
    assert good.attainment == pytest.approx(0.75)
    assert good.goodput_rps == pytest.approx(1.5)           # 3 good in 2 s
    assert good.p99_met is False                            # p99 TTFT ≈ 2.5 s > 2 s
    loose = goodput_of(reqs, 2.0, Slo(ttft_s=3.0, tpot_s=0.2))
    assert loose.good_requests == 4 and loose.p99_met is True


def test_a_request_over_the_tpot_limit_is_not_good():
    reqs = [request(0, 0.0, 0.1, [0.1] * 9), request(1, 0.0, 0.1, [0.3] * 9)]
    good = goodput_of(reqs, 1.0, Slo(ttft_s=2.0, tpot_s=0.2))
    assert good.good_requests == 1 and good.p99_met is False
    # one output token: no TPOT, only the TTFT counts
    assert goodput_of([request(0, 0.0, 0.1, [])], 1.0).good_requests == 1


def test_a_failed_request_lowers_attainment():
    reqs = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(4)] + [
        request(4, 0.0, None, [], ok=False)]
    good = goodput_of(reqs, 1.0, Slo())
    assert good.good_requests == 4 and good.attainment == pytest.approx(0.8)
    assert good.p99_met is True                             # the p99s are of the ok requests
    none_ok = goodput_of([request(0, 0.0, None, [], ok=False)], 1.0)
    assert (none_ok.good_requests, none_ok.attainment, none_ok.p99_met) == (0, 0.0, None)
    nothing = goodput_of([], 1.0)
    assert (nothing.attainment, nothing.p99_met) == (None, None)


def test_p99_met_follows_the_99th_percentile_not_the_worst_request():
    fast = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(98)]
    slow = [request(98 + i, 0.0, 5.0, [0.1] * 9) for i in range(2)]
    one_slow = [*fast, fast[0], slow[0]]           # 100 requests, 1 over: p99 ≈ 0.15 s
    good = goodput_of(one_slow, 10.0, Slo())
    assert good.good_requests == 99 and good.p99_met is True
    two_slow = [*fast, *slow]                      # 2 over: p99 ≈ 5 s
    assert goodput_of(two_slow, 10.0, Slo()).p99_met is False


def test_load_point_goodput_under_the_scenario_slo():
    reqs = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(3)] + [
        request(3, 0.0, 0.6, [0.1] * 9), request(4, 0.0, None, [], ok=False)]
    strict = ServerLoad(kind="server", name="s", concurrency=[4], duration_s=1, warmup_s=0,
                        slo_ttft_ms=500, slo_tpot_ms=150)
    slo = slo_for(strict)
    assert slo == Slo(ttft_s=0.5, tpot_s=0.15)
    lp = load_point_result(0, "concurrency", 4, outcome(reqs, 2.0), None, slo)
    assert (lp.slo_ttft_ms, lp.slo_tpot_ms) == (500.0, 150.0)
    assert lp.good_requests == 3 and lp.slo_attainment == pytest.approx(0.6)
    assert lp.goodput_rps == pytest.approx(1.5) and lp.slo_p99_met is False
    default = slo_for(ServerLoad(kind="server", name="s", concurrency=[4], duration_s=1,
                                 warmup_s=0))
    assert default == Slo(ttft_s=2.0, tpot_s=0.2)
    lp = load_point_result(0, "concurrency", 4, outcome(reqs, 2.0), None, default)
    assert (lp.slo_ttft_ms, lp.slo_tpot_ms, lp.good_requests) == (2000.0, 200.0, 4)
    # A batch load point has no SLO: its goodput figures are not measured, not 0.
    assert slo_for(BatchLoad(kind="batch", name="b", num_prompts=8, warmup_prompts=0)) is None
    batch = load_point_result(0, "batch", 8, outcome(reqs), None, None)
    assert (batch.slo_ttft_ms, batch.good_requests, batch.slo_attainment, batch.goodput_rps,
            batch.slo_p99_met) == (None, None, None, None, None)


def test_load_point_result_copies_what_the_load_generator_knows():
    from workers.loadgen import LoadgenOutcome

    reqs = [request(i, 0.0, 0.1, [0.1] * 9) for i in range(4)]
    lateness = LatencyStats(mean_ms=1.5, p50_ms=1.0, p90_ms=3.0, p99_ms=4.0)
    out = LoadgenOutcome(requests=reqs, duration_s=2.0, notes=["3 scheduled arrival(s) ..."],
                         unsent=3, max_in_flight=7, lateness=lateness)
    lp = load_point_result(1, "request_rate", 2.0, out, None, Slo())
    assert lp.lateness == lateness
    assert (lp.unsent_requests, lp.max_in_flight) == (3, 7)
    assert lp.notes == ["3 scheduled arrival(s) ..."]
    assert lp.good_requests == 4 and lp.goodput_rps == pytest.approx(2.0)
    # Any other engine's outcome: those figures are not measured (None), notes kept.
    plain = load_point_result(1, "concurrency", 4, outcome(reqs, notes=["a note"]), None, Slo())
    assert plain.lateness == LatencyStats() and plain.lateness.p99_ms is None
    assert (plain.unsent_requests, plain.max_in_flight) == (None, None)
    assert plain.notes == ["a note"] and plain.good_requests == 4


class SteppedGpu(ScriptedGpu):
    """A counter that moves only every `counter_update_s`, to the energy at that
    update (NVML's ~100 ms): read between updates it is stale."""

    def __init__(self, watts=100.0, period_s=0.1, phase_s=0.0):
        super().__init__(watts)
        self.counter_update_s = period_s
        self.origin -= phase_s

    def energy_mj(self):
        if not self.counter_ok:
            return None
        elapsed = time.monotonic() - self.origin
        ticks = elapsed // self.counter_update_s
        return self.offset_mj + ticks * self.counter_update_s * self.watts * 1000

    def until_tick(self, offset_s):
        """Sleep until `offset_s` after the next update (negative: before it)."""
        elapsed = time.monotonic() - self.origin
        next_tick = (elapsed // self.counter_update_s + 1) * self.counter_update_s
        if offset_s < 0 and next_tick + offset_s < elapsed + 0.005:
            next_tick += self.counter_update_s
        time.sleep(next_tick + offset_s - elapsed)


def test_edges_read_between_updates_count_a_stale_update_and_tick_edges_do_not():
    gpu = SteppedGpu(100.0, period_s=0.1)
    meter, sampler = meter_for(gpu)
    # Opened 20 ms before an update (the counter is 80 ms stale), closed 20 ms after
    # one (20 ms stale): 60 ms more energy than time, +14% on a 0.44 s window.
    gpu.until_tick(-0.02)
    meter.begin("read")
    gpu.until_tick(0.02)
    time.sleep(0.3)
    gpu.until_tick(0.02)
    read = meter.end("read")
    gpu.until_tick(-0.02)
    meter.begin("tick", align=True)
    time.sleep(0.35)
    gpu.until_tick(0.02)
    tick = meter.end("tick", align=True)
    sampler.stop()
    assert read.edges == "read" and read.avg_power_w > 108.0
    assert tick.edges == "tick" and tick.avg_power_w == pytest.approx(100.0, rel=0.03)
    # The aligned window sits on two updates: a whole number of periods long.
    assert tick.duration_s / 0.1 == pytest.approx(round(tick.duration_s / 0.1), abs=0.05)


def test_tick_edges_scale_each_gpu_by_its_own_span():
    # Two GPUs whose counters move at different instants (phases 0 and 40 ms).
    a, b = SteppedGpu(100.0, 0.1, 0.0), SteppedGpu(300.0, 0.1, 0.04)
    b.info = b.info.model_copy(update={"index": 1, "uuid": "GPU-b"})
    sampler = PowerSampler([a, b], 0.02)
    sampler.start()
    meter = Meter([a, b], sampler)
    meter.begin("idle", align=True)
    time.sleep(0.43)
    window = meter.end("idle", align=True)
    sampler.stop()
    assert window.edges == "tick"
    assert window.per_gpu_energy_j[0] / window.duration_s == pytest.approx(100.0, rel=0.04)
    assert window.per_gpu_energy_j[1] / window.duration_s == pytest.approx(300.0, rel=0.04)


def test_a_counter_that_does_not_move_is_read_as_it_is():
    gpu = SteppedGpu(100.0, period_s=0.1)
    gpu.watts = 0.0                                   # never moves
    meter, sampler = meter_for(gpu)
    started = time.monotonic()
    meter.begin("idle", align=True)
    assert time.monotonic() - started < 0.35          # waited ≤ 2.5 updates, then read
    time.sleep(0.25)
    window = meter.end("idle", align=True)
    sampler.stop()
    assert window.edges == "read" and window.energy_j == 0.0
    # No update period (the sim GPU's continuous counter): nothing to align on.
    plain = ScriptedGpu(50.0)
    meter, sampler = meter_for(plain)
    meter.begin("idle", align=True)
    time.sleep(0.2)
    window = meter.end("idle", align=True)
    sampler.stop()
    assert window.edges == "read" and window.avg_power_w == pytest.approx(50.0, rel=0.05)


def test_idle_baselines_are_read_on_counter_updates():
    import threading

    from workers.baseline import measure_baselines

    gpu = SteppedGpu(80.0, period_s=0.05)
    gpu.set_context = lambda held: setattr(gpu, "watts", 120.0 if held else 80.0)
    meter, sampler = meter_for(gpu)
    baseline = measure_baselines(meter, [gpu], 0.3, threading.Event(), set())
    sampler.stop()
    assert meter.window("idle").edges == meter.window("idle_ctx").edges == "tick"
    assert baseline.idle_power_w == pytest.approx(80.0, rel=0.04)
    assert baseline.idle_ctx_power_w == pytest.approx(120.0, rel=0.04)
