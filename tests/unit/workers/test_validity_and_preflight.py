"""Validity checks with their thresholds; preflight isolation and cool-down."""

from __future__ import annotations

import threading

import pytest

from farm_contract.records import EnergyWindow, IdleBaseline
from farm_contract.runspec import MeasurementSpec
from farm_contract.validity import validate
from workers.preflight import GpuBusy, IdleTemperatures, run_preflight

SPEC = MeasurementSpec(min_steady_s=30.0)


def steady(duration_s=60.0, avg_w=400.0, agreement=1.0, disagrees=False, lp=0):
    return EnergyWindow(name="steady", load_point=lp, start_s=0.0, duration_s=duration_s,
                        energy_j=avg_w * duration_s, avg_power_w=avg_w, agreement=agreement,
                        disagrees=disagrees)


def checks(validity):
    return {c.name: c for c in validity.checks}


def test_a_clean_run_is_valid_and_keeps_its_thresholds():
    v = validate([steady()], IdleBaseline(idle_power_w=77.0, idle_ctx_power_w=124.0), 700.0,
                 [40.0, 55.0], SPEC)
    assert v.valid
    c = checks(v)
    assert c["steady_window"].threshold == ">= 30 s" and c["steady_window"].value == 60.0
    assert c["power_range"].threshold == "77–700 W"
    assert c["temperature"].threshold == "20–95 °C"
    assert "3%" in c["agreement"].threshold


@pytest.mark.parametrize("window,temps,failing", [
    (steady(duration_s=10.0), [40.0], "steady_window"),
    (steady(avg_w=20.0), [40.0], "power_range"),
    (steady(avg_w=900.0), [40.0], "power_range"),
    (steady(), [40.0, 97.0], "temperature"),
    (steady(agreement=1.08, disagrees=True), [40.0], "agreement"),
    # a counter the timeline gave no ratio for (an import's recheck): no agreement
    (steady(agreement=None, disagrees=True), [40.0], "agreement"),
])
def test_each_check_fails_alone(window, temps, failing):
    v = validate([window], IdleBaseline(idle_power_w=77.0), 700.0, temps, SPEC)
    assert not v.valid
    assert [c.name for c in v.checks if not c.passed] == [failing]


def test_nothing_to_judge_is_not_a_failure_and_not_a_number():
    v = validate([steady()], IdleBaseline(), None, [], SPEC)
    c = checks(v)
    assert c["temperature"].passed and c["temperature"].value is None
    assert c["temperature"].detail == "no temperature readings"


def test_no_steady_window_fails():
    v = validate([], IdleBaseline(), 700.0, [], SPEC)
    assert not checks(v)["steady_window"].passed


def test_a_load_point_without_a_steady_window_fails_the_run():
    # Its figures are null: a run that publishes them is not valid unseen (audit,
    # 2026-12-08: two load points, one window, "valid").
    v = validate([steady(lp=0)], IdleBaseline(), 700.0, [40.0], SPEC, load_points=[0, 1])
    check = checks(v)["steady_window"]
    assert not v.valid and not check.passed
    assert check.detail == "no steady window for load point(s) 1"
    assert validate([steady(lp=0), steady(lp=1)], IdleBaseline(), 700.0, [40.0], SPEC,
                    load_points=[0, 1]).valid


class FakeGpu:
    def __init__(self, uuid="GPU-1", temps=(40.0,), pids=()):
        from farm_contract.records import GpuInfo

        self.info = GpuInfo(index=0, uuid=uuid, name="t", model="h100-80gb", backend="gpu",
                            power_limit_w=700.0)
        self._temps = list(temps)
        self._pids = list(pids)

    def temperature_c(self):
        return self._temps.pop(0) if len(self._temps) > 1 else self._temps[0]

    def compute_pids(self):
        return self._pids


def test_foreign_process_makes_the_gpu_busy():
    with pytest.raises(GpuBusy, match="foreign process 4242 on GPU GPU-1") as caught:
        run_preflight([FakeGpu(pids=[4242, 1])], SPEC, {1}, IdleTemperatures(),
                      threading.Event())
    assert caught.value.busy == {"GPU-1": [4242]}   # the tenant watch is told which GPU


def test_waits_for_the_gpu_to_cool_then_records_it():
    temps = IdleTemperatures()
    temps.observe("GPU-1", 35.0)
    gpu = FakeGpu(temps=(60.0, 50.0, 38.0))
    clock = iter(range(100)).__next__
    spec = MeasurementSpec(cooldown_timeout_s=30.0, cooldown_band_c=5.0)
    pre = run_preflight([gpu], spec, set(), temps, threading.Event(), clock=clock)
    assert pre.cooled and pre.gpus[0].idle_temperature_c == 35.0
    assert pre.gpus[0].power_limit_w == 700.0


def test_gives_up_cooling_after_the_timeout_and_says_so():
    temps = IdleTemperatures()
    temps.observe("GPU-1", 35.0)
    clock = iter(range(0, 1000, 10)).__next__
    spec = MeasurementSpec(cooldown_timeout_s=20.0, cooldown_band_c=5.0)
    pre = run_preflight([FakeGpu(temps=(70.0,))], spec, set(), temps, threading.Event(),
                        clock=clock)
    assert not pre.cooled and "70 °C (idle 35 °C)" in pre.note


def test_a_disagreeing_whole_run_window_stays_flagged_but_not_invalid():
    run = EnergyWindow(name="run", start_s=0.0, duration_s=60.0, energy_j=1000.0,
                       agreement=1.05, disagrees=True)
    v = validate([steady(), run], IdleBaseline(idle_power_w=77.0), 700.0, [40.0], SPEC)
    assert v.valid and run.disagrees
