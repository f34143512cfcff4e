"""The whole measurement path (run_one) on NVML devices, NVML faked at the vendor
boundary: the code that runs on a real GPU, here on CI.

A live fake H100 integrates a power level over time into its energy counter; a
test engine sets that level as a real workload would draw it.
"""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import EngineInfo, RequestRecord, WorkerInfo
from tests.fake_nvml import FakeNvml, patched
from workers.engines.base import Engine, LoadPointOutcome
from workers.errors import GpuError
from workers.gpu.nvml import NvmlInventory
from workers.preflight import GpuBusy, IdleTemperatures
from workers.runner import Contaminated, run_one

WORKER = WorkerInfo(name="w@test", host="test", pid=1)


class LiveNvml(FakeNvml):
    """Energy counters that integrate each GPU's power level over real time."""

    def __init__(self) -> None:
        super().__init__()
        self.level_w = [75.0, 75.0]
        self.energy = [1_000_000.0, 2_000_000.0]
        self.at = time.monotonic()
        self.lock = threading.Lock()
        self.gpus[0]["pids"] = []
        self.step_s: float | None = None   # the counter moves only this often (H200: 0.1)
        self.ticked = [1_000_000.0, 2_000_000.0]
        self.tick_at = self.at

    def advance(self) -> None:
        with self.lock:
            now = time.monotonic()
            for i, watts in enumerate(self.level_w):
                self.energy[i] += watts * (now - self.at) * 1000.0
                self.gpus[i]["instant_mw"] = int(watts * 1000)
                self.gpus[i]["average_mw"] = int(watts * 1000)
            self.at = now

    def set_level(self, gpu: int, watts: float) -> None:
        self.advance()
        self.level_w[gpu] = watts

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self._check("nvmlDeviceGetTotalEnergyConsumption", handle)
        self.advance()
        if self.step_s is not None:
            # The value at the last update, as the driver's counter reads between them.
            with self.lock:
                if self.at - self.tick_at >= self.step_s:
                    self.ticked = list(self.energy)
                    self.tick_at += self.step_s * ((self.at - self.tick_at) // self.step_s)
                return int(self.ticked[handle])
        return int(self.energy[handle])

    def nvmlDeviceGetFieldValues(self, handle, fieldIds):
        self.advance()
        return super().nvmlDeviceGetFieldValues(handle, fieldIds)


class WattsEngine(Engine):
    """Draws `watts` for each load point's duration; one request of 100 tokens."""

    kind = "test-watts"
    watts = 500.0
    during_steady = None   # a hook: called halfway through each steady window

    def __init__(self, run, gpus, abort):
        super().__init__(run, gpus, abort)
        self.nvml: LiveNvml = LIVE[0]

    @property
    def info(self):
        return EngineInfo(kind=self.kind, version="test", simulated=False)

    def start(self, deadline_s):
        self.nvml.set_level(0, 120.0)

    def warmup(self):
        time.sleep(0.05)

    def run_load_point(self, index, kind, value, meter):
        begin = meter.now_s()
        self.nvml.set_level(0, self.watts)
        meter.begin("steady", index)
        time.sleep(self.run.scenario.duration_s / 2)
        if WattsEngine.during_steady:
            WattsEngine.during_steady(self.nvml)
        time.sleep(self.run.scenario.duration_s / 2)
        meter.end("steady", index)
        self.nvml.set_level(0, 120.0)
        window = meter.window("steady", index)
        request = RequestRecord(load_point=index, index=0, sent_s=window.start_s, ttft_s=0.0,
                                e2e_s=window.duration_s, itl_s=[window.duration_s / 100] * 99,
                                input_tokens=10, output_tokens=100)
        return LoadPointOutcome(requests=[request], duration_s=meter.now_s() - begin)

    def stop(self):
        self.nvml.set_level(0, 75.0)


LIVE: list[LiveNvml] = []


@pytest.fixture
def live():
    fake = LiveNvml()
    LIVE[:] = [fake]
    WattsEngine.during_steady = None
    with patched(fake):
        inventory = NvmlInventory()
        yield fake, inventory.devices()[:1]
        inventory.shutdown()


RUN = expand(parse_sweep("""
name = "nvml-fake"
[[model]]
id = "tiny-1b"
source = "org/tiny-1B"
[hardware]
gpu = ["H100"]
[engine]
kind = "vllm"
[[scenario]]
kind = "server"
concurrency = [1, 4]
duration_s = 0.6
warmup_s = 0
[workload]
input_tokens = [32]
output_tokens = [16]
[measurement]
sample_period_s = 0.02
idle_baseline_s = 0.2
min_steady_s = 0.5
codecarbon = false
quiet = { window_s = 0.5, timeout_s = 5 }
"""))[0]


def measure(gpus):
    return run_one(RUN, gpus, threading.Event(), worker=WORKER, attempt=1,
                   engine_factory=WattsEngine, idle_temperatures=IdleTemperatures())


def test_idle_baselines_on_a_counter_that_moves_every_100_ms(live):
    # The H200's counter moves every ~100 ms: read at arbitrary edges, a 0.5 s idle
    # window is off by up to one update (±20%); read on updates it is not.
    fake, gpus = live
    fake.step_s = 0.1
    run = RUN.model_copy(update={"measurement": RUN.measurement.model_copy(
        update={"idle_baseline_s": 0.5})})
    result = run_one(run, gpus, threading.Event(), worker=WORKER, attempt=1,
                     engine_factory=WattsEngine, idle_temperatures=IdleTemperatures())
    assert result.status == "succeeded", result.error
    idle = result.window("idle")
    assert idle.edges == "tick" and result.idle.idle_power_w == pytest.approx(75.0, rel=0.03)
    assert result.window("steady", 0).edges == "read"


def test_a_run_on_nvml_measures_windows_idle_and_validity(live):
    _, gpus = live
    result = measure(gpus)
    assert result.status == "succeeded", result.error
    assert not result.simulated and result.measurement.energy_sensor.startswith("nvml")
    assert result.measurement.power_sensor == "nvml.field.power_instant"
    steady = result.window("steady", 0)
    assert steady.energy_j == pytest.approx(500.0 * steady.duration_s, rel=0.03)
    assert steady.agreement == pytest.approx(1.0, abs=0.05)
    # No torch in this venv: the context-held idle window is null with its reason.
    assert result.window("idle_ctx").energy_j is None
    assert "CUDA context" in result.window("idle_ctx").null_reason
    assert result.idle.idle_power_w == pytest.approx(75.0, rel=0.05)
    lp = result.load_points[0]
    assert lp.energy_net_j == pytest.approx(lp.energy_j - 75.0 * steady.duration_s, rel=0.05)
    assert result.preflight.gpus[0].power_limit_w == 700.0
    # The quiet-GPU gate read NVML's power and utilisation before the baselines.
    gate = result.preflight.quiet
    assert gate.met is True and gate.waited_s >= 0.5
    assert gate.gpus[0].power_w == pytest.approx(75.0, rel=0.05)
    assert gate.gpus[0].utilization_pct == 0.0
    assert result.trace.memory_power_w and result.trace.sm_clock_mhz
    assert result.validity.valid, result.validity


def test_a_counter_reset_makes_the_window_null_not_negative(live):
    _, gpus = live
    resets = []

    def reset_once(nvml):          # a driver reload during the first steady window only
        if not resets:
            resets.append(True)
            with nvml.lock:        # the sampler thread advances the counter too
                nvml.energy[0] = 0.0

    WattsEngine.during_steady = reset_once
    result = measure(gpus)
    steady = result.window("steady", 0)
    assert steady.energy_j is None and "backwards" in steady.null_reason
    assert result.load_points[0].energy_per_output_token_j is None
    assert result.load_points[0].energy_net_j is None
    assert result.window("steady", 1).energy_j > 0      # the next window is fine


def test_a_lost_gpu_is_retried(live):
    _, gpus = live

    def lose(nvml):
        nvml.failures[("nvmlDeviceGetTotalEnergyConsumption", 0)] = pynvml.NVML_ERROR_GPU_IS_LOST

    WattsEngine.during_steady = lose
    with pytest.raises(GpuError):
        measure(gpus)


def test_a_foreign_process_on_the_gpu(live):
    fake, gpus = live
    fake.gpus[0]["pids"] = [31337]
    with pytest.raises(GpuBusy, match="31337"):
        measure(gpus)
    fake.gpus[0]["pids"] = []
    WattsEngine.during_steady = lambda nvml: nvml.gpus[0]["pids"].append(31338)
    with pytest.raises(Contaminated, match="31338"):
        measure(gpus)



