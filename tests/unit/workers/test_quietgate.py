"""The quiet-GPU gate (workers.quietgate) on scripted power traces, time scripted too;
and its place in a run: recorded in the preflight, run ids unchanged by default."""

from __future__ import annotations

import math
import threading

import pytest

from farm_contract.records import GpuInfo
from farm_contract.runspec import MeasurementSpec, QuietGateSpec
from workers.errors import RunAborted
from workers.quietgate import IdlePowerReferences, wait_until_quiet

SPEC = QuietGateSpec(window_s=10.0, power_band_pct=2.0, power_band_w=1.0,
                     max_utilization_pct=1.0, timeout_s=120.0)


class Clock:
    """Scripted time: `wait` advances it instead of sleeping."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def wait(self, seconds: float) -> bool:
        self.t += seconds
        return False


class TraceGpu:
    """A real-GPU device whose power and utilisation are functions of the clock."""

    def __init__(self, clock, power, util=lambda t: 0.0, uuid="GPU-1", backend="gpu"):
        self.info = GpuInfo(index=0, uuid=uuid, name="t", model="h200-141gb",
                            backend=backend, power_limit_w=700.0)
        self._clock, self._power, self._util = clock, power, util

    def power_w(self):
        return self._power(self._clock())

    def utilization_pct(self):
        return self._util(self._clock())


def settling(start_w: float, idle_w: float, tau_s: float):
    """Power decaying from start_w to idle_w with time constant tau_s, plus a ±0.5 W ripple."""
    return lambda t: idle_w + (start_w - idle_w) * math.exp(-t / tau_s) + 0.5 * math.sin(7 * t)


def gate(gpus, clock, refs=None, spec=SPEC):
    return wait_until_quiet(gpus, spec, refs or IdlePowerReferences(), threading.Event(),
                            clock=clock, wait=clock.wait)


def test_a_gpu_at_rest_passes_after_one_window_and_becomes_the_reference():
    clock, refs = Clock(), IdlePowerReferences()
    result = gate([TraceGpu(clock, lambda t: 76.9 + 0.4 * math.sin(5 * t))], clock, refs)
    assert result.met is True
    assert result.waited_s == pytest.approx(10.0, abs=0.3)
    (gpu,) = result.gpus
    assert gpu.quiet and gpu.power_w == pytest.approx(76.9, abs=0.2)
    assert gpu.band_w == pytest.approx(1.54, abs=0.01)        # 2% of ~77 W, above the 1 W floor
    assert refs.get("GPU-1") == pytest.approx(76.9, abs=0.2)


def test_a_settling_gpu_waits_until_its_power_is_back_at_the_reference():
    # The H200 case: the reference is a clean 76.9 W; the GPU comes back at 82.6 W
    # and settles with a 20 s time constant. A 2% band admits <= 78.4 W.
    clock, refs = Clock(), IdlePowerReferences()
    refs.observe("GPU-1", 76.9)
    result = gate([TraceGpu(clock, settling(82.6, 76.9, 20.0))], clock, refs)
    assert result.met is True
    (gpu,) = result.gpus
    assert gpu.power_w <= 76.9 + gpu.band_w
    # e^(-t/20)·5.7 W must fall below ~1.5 W, window-averaged: well past 30 s
    assert 30.0 < result.waited_s < 60.0
    assert refs.get("GPU-1") == pytest.approx(76.9, abs=0.3)   # a quiet window never raises it


def test_without_a_reference_a_falling_power_is_not_quiet():
    # First run of a worker: no reference; the trend rule alone must catch the decay.
    clock = Clock()
    result = gate([TraceGpu(clock, settling(110.0, 77.0, 8.0))], clock)
    assert result.met is True and result.waited_s > 15.0
    early = Clock()
    early_result = gate([TraceGpu(early, settling(110.0, 77.0, 8.0))], early,
                        spec=SPEC.model_copy(update={"timeout_s": 10.0}))
    assert early_result.met is False
    assert "power still falling" in early_result.gpus[0].reason
    assert "not quiet after 10 s" in early_result.note


def test_a_busy_gpu_times_out_and_says_why_and_the_run_goes_on():
    clock = Clock()
    result = gate([TraceGpu(clock, lambda t: 77.0, util=lambda t: 35.0)], clock,
                  spec=SPEC.model_copy(update={"timeout_s": 30.0}))
    assert result.met is False
    assert result.waited_s == pytest.approx(30.0, abs=0.3)
    assert result.gpus[0].utilization_pct == 35.0
    assert "utilisation 35%" in result.note


def test_a_moved_idle_level_rebases_the_reference_after_the_timeout():
    clock, refs = Clock(), IdlePowerReferences()
    refs.observe("GPU-1", 70.0)
    result = gate([TraceGpu(clock, lambda t: 80.0)], clock, refs,
                  spec=SPEC.model_copy(update={"timeout_s": 20.0}))
    assert result.met is False and "above the idle reference 70.0 W" in result.gpus[0].reason
    assert "idle reference moved to 80.0 W" in result.note
    assert refs.get("GPU-1") == 80.0
    again = Clock()
    assert gate([TraceGpu(again, lambda t: 80.0)], again, refs).met is True


def test_every_gpu_of_the_run_must_be_quiet():
    clock, refs = Clock(), IdlePowerReferences()
    quiet = TraceGpu(clock, lambda t: 77.0, uuid="GPU-a")
    busy = TraceGpu(clock, lambda t: 77.0, util=lambda t: 0.0 if t > 25 else 90.0, uuid="GPU-b")
    result = gate([quiet, busy], clock, refs)
    assert result.met is True and result.waited_s > 25.0
    assert {g.uuid for g in result.gpus} == {"GPU-a", "GPU-b"}


def test_missing_readings_are_not_quiet_and_not_zero():
    clock = Clock()
    result = gate([TraceGpu(clock, lambda t: None)], clock,
                  spec=SPEC.model_copy(update={"timeout_s": 10.0}))
    assert result.met is False
    assert result.gpus[0].power_w is None and result.gpus[0].reason == "no power readings"


def test_simulated_and_cpu_devices_are_not_gated_and_say_so():
    clock = Clock()
    result = gate([TraceGpu(clock, lambda t: 77.0, backend="sim")], clock)
    assert result.met is None and result.waited_s == 0.0 and "sim" in result.note
    off = gate([TraceGpu(clock, lambda t: 77.0)], clock,
               spec=SPEC.model_copy(update={"enabled": False}))
    assert off.met is None and "off" in off.note


def test_shutdown_while_settling_aborts_the_run():
    clock = Clock()
    abort = threading.Event()
    abort.set()
    with pytest.raises(RunAborted, match="settled"):
        wait_until_quiet([TraceGpu(clock, lambda t: 77.0)], SPEC, IdlePowerReferences(), abort,
                         clock=clock)


def test_the_gate_is_left_out_of_run_ids_at_its_defaults_only():
    from tests.factories import sweep

    base = sweep()[2][0]
    assert base.run_id == "eeba4a95d3d21f7d7119e6ae"       # its id before the gate existed
    same = base.model_copy(update={"measurement": MeasurementSpec(
        **{**base.measurement.model_dump(), "quiet": QuietGateSpec()})})
    assert same.run_id == base.run_id
    assert '"quiet"' not in base.canonical_json() and '"quiet"' in base.to_json()
    other = base.model_copy(update={"measurement": base.measurement.model_copy(
        update={"quiet": QuietGateSpec(window_s=5.0)})})
    assert other.run_id != base.run_id
