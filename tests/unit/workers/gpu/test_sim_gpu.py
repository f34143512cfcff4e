"""The simulated GPU: identity, idle levels, an energy counter that integrates power,
and the real measurement code (Meter, PowerSampler) reading it."""

from __future__ import annotations

import time

import pytest

from farm_contract.records import GpuState
from workers.gpu.discovery import open_inventory, summarize
from workers.gpu.sim import (
    IDLE_POWER_W,
    SW_POWER_CAP,
    THERMAL_TIME_CONSTANT_S,
    SimGpu,
    SimInventory,
    idle_power_w,
    parse_sim_spec,
)
from workers.power import Meter, PowerSampler


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.mark.parametrize("text,expected", [
    ("H100-80GB", ("h100-80gb", 1)), ("H100-80GBx2", ("h100-80gb", 2)),
    ("sim:L4x4", ("l4", 4)), ("sim:A100", ("a100-40gb", 1)),
])
def test_sim_specs_parse_to_slug_and_count(text, expected):
    assert parse_sim_spec(text) == expected


@pytest.mark.parametrize("text,message", [
    ("L4x0", "'L4x0'.*at least 1"), ("Voodoo5", "'Voodoo5'.*unknown GPU model"),
    ("", "''"),
])
def test_bad_sim_specs_name_the_text(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sim_spec(text)


def test_mixed_host_inventory_is_labelled_and_indexed_in_spec_order():
    inventory = SimInventory(["H100-80GBx2", "sim:L4"], host="node-a")
    devices = inventory.devices()
    assert inventory.backend == "sim"
    assert [d.info.index for d in devices] == [0, 1, 2]
    assert [d.info.model for d in devices] == ["h100-80gb", "h100-80gb", "l4"]
    info = devices[0].info
    assert info.backend == "sim" and info.driver_version == "sim"
    assert info.name.startswith("Simulated ") and info.uuid.startswith("SIM-h100-80gb-")
    assert info.memory_mib == 80 * 1024 and info.power_limit_w == 700.0
    assert len({d.info.uuid for d in devices}) == 3
    # Same host, same UUIDs: results stay attributable across worker restarts.
    again = SimInventory(["H100-80GBx2", "sim:L4"], host="node-a").devices()
    assert [d.info.uuid for d in again] == [d.info.uuid for d in devices]
    assert SimInventory("L4", host="node-b").devices()[0].info.uuid != devices[2].info.uuid
    assert summarize(inventory) == {"h100-80gb": 2, "l4": 1}


def test_idle_levels_follow_the_cuda_context():
    clock = FakeClock()
    gpu = SimGpu("h100-80gb", 0, host="h", clock=clock)
    assert IDLE_POWER_W["h100-80gb"] == (77.0, 124.0)
    assert gpu.power_w() == pytest.approx(77.0, rel=0.011)
    gpu.set_context(True)
    assert gpu.power_w() == pytest.approx(124.0, rel=0.011)
    gpu.set_power_w(5000.0)                        # clamped by the power cap
    assert gpu.power_w() == pytest.approx(700.0, rel=0.011)
    gpu.set_power_w(None)
    assert gpu.power_w() == pytest.approx(124.0, rel=0.011)
    # Uncatalogued idle levels scale from TDP as the H100's do.
    assert idle_power_w("l40s", context_held=False) == pytest.approx(0.11 * 350)


def test_counter_integrates_piecewise_constant_power_exactly():
    clock = FakeClock()
    gpu = SimGpu("l4", 0, host="h", clock=clock)
    start_mj = gpu.energy_mj()
    gpu.set_power_w(50.0)
    clock.advance(2.0)
    gpu.set_power_w(70.0)
    clock.advance(1.0)
    gpu.set_power_w(None)                          # idle, no context: 16 W
    clock.advance(0.5)
    assert gpu.energy_mj() - start_mj == pytest.approx((100.0 + 70.0 + 8.0) * 1000.0)


def test_power_ripple_is_small_and_deterministic():
    first = SimGpu("h100-80gb", 0, host="h")
    second = SimGpu("h100-80gb", 0, host="h")
    first.set_power_w(400.0)
    second.set_power_w(400.0)
    readings = [first.power_w() for _ in range(200)]
    assert readings == [second.power_w() for _ in range(200)]
    assert all(abs(r - 400.0) <= 4.0 for r in readings)
    assert len(set(readings)) > 100                # samples, not a flat line


def test_temperature_relaxes_towards_a_power_dependent_steady_state():
    clock = FakeClock()
    gpu = SimGpu("h100-80gb", 0, host="h", clock=clock)
    idle_c = gpu.temperature_c()
    gpu.set_power_w(700.0)
    clock.advance(THERMAL_TIME_CONSTANT_S)
    one_tau_c = gpu.temperature_c()
    clock.advance(10 * THERMAL_TIME_CONSTANT_S)
    hot_c = gpu.temperature_c()
    assert idle_c < one_tau_c < hot_c
    assert one_tau_c - idle_c == pytest.approx((hot_c - idle_c) * 0.632, rel=0.01)
    assert hot_c == pytest.approx(64.0, abs=0.5)   # FIELD_NOTES: 64 °C at 700 W


def test_compute_pids_are_the_ones_registered():
    gpu = SimGpu("l4", 0, host="h")
    gpu.add_compute_pid(42)
    gpu.add_compute_pid(7)
    assert gpu.compute_pids() == [7, 42]
    gpu.remove_compute_pid(42)
    gpu.remove_compute_pid(1234)                   # unknown pid: nothing to do
    assert gpu.compute_pids() == [7]


def test_meter_and_sampler_measure_a_constant_load_like_on_nvml():
    gpus = SimInventory("H100-80GBx2", host="h").devices()
    sampler = PowerSampler(gpus, period_s=0.05)
    meter = Meter(gpus, sampler)
    sampler.start()
    try:
        for gpu in gpus:
            gpu.set_power_w(500.0)
        meter.begin("load")
        time.sleep(1.0)
        window = meter.end("load")
    finally:
        sampler.stop()
    expected_j = 2 * 500.0 * window.duration_s
    assert window.energy_j == pytest.approx(expected_j, rel=0.02)
    assert window.per_gpu_energy_j == pytest.approx([expected_j / 2] * 2, rel=0.02)
    assert window.timeline_energy_j == pytest.approx(window.energy_j, rel=0.02)
    assert window.avg_power_w == pytest.approx(1000.0, rel=0.02)
    assert window.null_reason is None


def test_open_inventory_restricts_to_the_requested_indices():
    inventory = open_inventory(["L4x3"], [0, 2])
    assert [d.info.index for d in inventory.devices()] == [0, 2]
    assert inventory.backend == "sim"
    assert summarize(inventory) == {"l4": 2}
    with pytest.raises(ValueError, match="no GPU with index 5 .*found: 0, 1, 2"):
        open_inventory(["L4x3"], [5])
    with pytest.raises(ValueError, match="selects no GPU"):
        open_inventory(["L4x3"], [])


def test_average_power_lags_a_step_change_by_one_second():
    clock = FakeClock()
    gpu = SimGpu("h100-80gb", 0, host="h", clock=clock)
    gpu.set_power_w(100.0)
    clock.advance(5.0)
    assert gpu.power_avg_w() == pytest.approx(100.0)
    gpu.set_power_w(500.0)
    assert gpu.power_w() == pytest.approx(500.0, rel=0.011)       # the instant reading jumps
    assert gpu.power_avg_w() == pytest.approx(100.0)              # the average has not moved
    clock.advance(0.25)
    assert gpu.power_avg_w() == pytest.approx(200.0)
    clock.advance(0.5)
    assert gpu.power_avg_w() == pytest.approx(400.0)
    clock.advance(0.25)
    assert gpu.power_avg_w() == pytest.approx(500.0)              # caught up after 1 s
    clock.advance(3.0)
    assert gpu.power_avg_w() == pytest.approx(500.0)


def test_average_power_of_short_pulses_and_of_the_time_before_the_first_change():
    clock = FakeClock()
    gpu = SimGpu("h100-80gb", 0, host="h", clock=clock)
    assert gpu.power_avg_w() == pytest.approx(77.0)              # idle since ever
    for _ in range(10):                                           # 0.1 s at 700 W, 0.1 s idle
        gpu.set_power_w(700.0)
        clock.advance(0.1)
        gpu.set_power_w(None)
        clock.advance(0.1)
    assert gpu.power_avg_w() == pytest.approx((700.0 + 77.0) / 2)


def test_memory_power_is_a_documented_share_of_the_average_board_power():
    clock = FakeClock()
    gpu = SimGpu("h100-80gb", 0, host="h", clock=clock)
    assert gpu.memory_power_w() == pytest.approx(32.0, abs=0.1)   # FIELD_NOTES: 32–48 W
    gpu.set_power_w(700.0)
    assert gpu.memory_power_w() == pytest.approx(32.0, abs=0.1)   # follows the average, lags
    clock.advance(2.0)
    assert gpu.memory_power_w() == pytest.approx(48.0, abs=0.1)
    small = SimGpu("l4", 0, host="h", clock=clock)
    assert 0 < small.memory_power_w() < small.power_avg_w()


def test_sm_clock_boosts_with_headroom_and_falls_near_the_power_cap():
    gpu = SimGpu("h100-80gb", 0, host="h")
    assert gpu.sm_clock_mhz() == 1980.0                           # idle: boost
    gpu.set_power_w(400.0)
    assert gpu.sm_clock_mhz() == 1980.0                           # headroom: boost
    gpu.set_power_w(600.0)
    mid_mhz = gpu.sm_clock_mhz()
    gpu.set_power_w(700.0)
    assert 1365.0 < mid_mhz < 1980.0
    assert gpu.sm_clock_mhz() == pytest.approx(1365.0)           # FIELD_NOTES at the cap
    assert gpu.memory_clock_mhz() == 2619.0
    l4 = SimGpu("l4", 0, host="h")
    l4.set_power_w(72.0)
    assert l4.sm_clock_mhz() == pytest.approx(2040.0 * 1365.0 / 1980.0)
    assert SimGpu("l40", 0, host="h").sm_clock_mhz() == 1980.0  # uncatalogued clocks: H100's


def test_throttle_bit_is_the_sw_power_cap_only_near_the_limit():
    gpu = SimGpu("h100-80gb", 0, host="h")
    assert SW_POWER_CAP == 0x4
    assert gpu.throttle_reasons() == 0
    gpu.set_power_w(0.96 * 700.0)
    assert gpu.throttle_reasons() == 0
    gpu.set_power_w(0.975 * 700.0)
    assert gpu.throttle_reasons() == SW_POWER_CAP
    gpu.set_power_w(None)
    assert gpu.throttle_reasons() == 0


def test_limits_persistence_and_state():
    clock = FakeClock()
    gpu = SimGpu("h100-80gb", 0, host="h", clock=clock)
    gpu.set_power_w(700.0)
    assert gpu.power_source == "sim" and gpu.energy_wraps_at_mj is None
    state = gpu.state()
    assert state.sm_clock_mhz == pytest.approx(1365.0)
    assert state == GpuState(
        uuid=gpu.info.uuid, temperature_c=gpu.temperature_c(), power_limit_w=700.0,
        default_power_limit_w=700.0, sm_clock_mhz=state.sm_clock_mhz, memory_clock_mhz=2619.0,
        persistence_mode=True, foreign_pids=[])
