"""The worker's measurement path on a real NVIDIA GPU (skipped where NVML finds none).

Counter vs timeline agreement around a steady bf16 matmul, pulsed loads and
Hugging Face generation; idle with and without a CUDA context; idle windows read
on counter updates (the baselines' edges); the sampler's
own cost; and run_one end to end on NVML (preflight, both idle baselines,
isolation, validity). With FARM_GPU_REPORT=path every figure is also written
as JSON (docs/measurement.md is made from it).

    FARM_GPU_REPORT=gpu-report.json python -m pytest tests/gpu -m gpu -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import EngineInfo, RequestRecord, WorkerInfo
from workers.baseline import cuda_context
from workers.engines.base import Engine, LoadPointOutcome
from workers.power import AgreementPolicy, Meter, PowerSampler

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
REPORT: dict[str, object] = {}
# The target for windows of 6 s or more (FIELD_NOTES measured ±1.5%);
# tests fail only beyond the 3% flag threshold, the report shows the target.
TARGET = 0.015
FLAG = 0.03


@pytest.fixture(scope="module")
def gpu():
    from workers.gpu.nvml import NvmlInventory

    inventory = NvmlInventory()
    device = inventory.devices()[0]
    REPORT["gpu"] = device.info.model_dump()
    REPORT["power_sensor"] = device.power_sensor
    yield device
    inventory.shutdown()
    path = os.environ.get("FARM_GPU_REPORT")
    if path:
        Path(path).write_text(json.dumps(REPORT, indent=2, default=str))


class Load:
    """A child process from tests/gpu/loads.py; windows follow its BEGIN/END lines."""

    def __init__(self, *args: str, meter: Meter | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.gpu.loads", *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
        self.meter = meter
        self.counts: dict[str, int] = {}
        self.info: dict[str, str] = {}
        self.ready = threading.Event()

    def follow(self, timeout_s: float = 300) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        for line in self.proc.stdout:  # type: ignore[union-attr]
            words = line.split()
            if not words:
                continue
            if words[0] == "READY":
                self.ready.set()
            elif words[0] == "BEGIN" and self.meter:
                self.meter.begin(words[1])
            elif words[0] == "END":
                if self.meter:
                    self.meter.end(words[1])
                self.counts[words[1]] = int(words[2])
            else:
                self.info[words[0]] = " ".join(words[1:])
            assert time.monotonic() < deadline, "load took too long"
        assert self.proc.wait(timeout=60) == 0, "the load process failed"
        return self.counts


def measure(gpu, *load_args: str, period_s: float = 0.1):
    sampler = PowerSampler([gpu], period_s)
    sampler.start()
    meter = Meter([gpu], sampler, AgreementPolicy(FLAG, 5.0))
    load = Load(*load_args, meter=meter)
    try:
        load.follow()
    finally:
        sampler.stop()
    return meter, load


def summary(window) -> dict[str, object]:
    return {"duration_s": window.duration_s, "counter_j": window.energy_j,
            "timeline_j": window.timeline_energy_j, "agreement": window.agreement,
            "avg_power_w": window.avg_power_w, "peak_power_w": window.peak_power_w}


def test_idle_without_and_with_a_cuda_context(gpu):
    sampler = PowerSampler([gpu], 0.1)
    sampler.start()
    meter = Meter([gpu], sampler)
    pids: set[int] = set()
    time.sleep(2)
    meter.begin("idle")
    time.sleep(10)
    idle = meter.end("idle")
    with cuda_context([gpu], pids):
        time.sleep(2)   # let the power settle at the context-held level
        meter.begin("idle_ctx")
        time.sleep(10)
        idle_ctx = meter.end("idle_ctx")
    sampler.stop()
    REPORT["idle"] = summary(idle)
    REPORT["idle_ctx"] = summary(idle_ctx)
    assert idle.energy_j and idle_ctx.energy_j
    assert idle_ctx.avg_power_w > idle.avg_power_w + 10, "a CUDA context should raise idle power"
    for window in (idle, idle_ctx):
        assert abs(window.agreement - 1) <= FLAG


def test_idle_windows_on_counter_updates_agree_with_the_timeline(gpu):
    # Read on counter updates (the idle baselines' edges), a 5 s idle window is not
    # off by one update's energy: the H200 gave −0.11…−0.03 W against the timeline
    # (read edges: −1.59…0.00 W), benchmarks/gpu_idle_edges.py.
    sampler = PowerSampler([gpu], 0.1)
    sampler.start()
    meter = Meter([gpu], sampler)
    windows = []
    for i in range(4):
        meter.begin(f"idle-{i}", align=True)
        time.sleep(5)
        windows.append(meter.end(f"idle-{i}", align=True))
    sampler.stop()
    REPORT["idle_tick_edges"] = [summary(w) for w in windows]
    period = gpu.counter_update_s
    for w in windows:
        assert w.edges == "tick" and w.energy_j
        assert abs(w.agreement - 1) <= 0.005, summary(w)
        # Both edges on updates: a whole number of update periods, give or take the
        # period's own jitter (97–103 ms on the H200) over ~50 periods.
        assert abs(w.duration_s / period - round(w.duration_s / period)) < 0.25


def test_steady_matmul_counter_and_timeline_agree(gpu):
    meter, load = measure(gpu, "matmul", "--seconds", "12")
    steady = meter.window("steady")
    REPORT["steady_matmul"] = {**summary(steady), "iterations": load.counts["steady"],
                               "within_target": abs(steady.agreement - 1) <= TARGET}
    assert steady.duration_s >= 11
    assert steady.avg_power_w > 300, "an 8k bf16 matmul loop should draw hundreds of watts"
    assert abs(steady.agreement - 1) <= FLAG


@pytest.mark.parametrize("on_s,off_s", [(1.0, 1.0), (0.2, 0.2)])
def test_pulsed_load_counter_and_timeline_agree(gpu, on_s, off_s):
    meter, _ = measure(gpu, "pulses", "--seconds", "12", "--on", str(on_s),
                       "--off", str(off_s))
    window = meter.window("pulses")
    REPORT[f"pulses_{on_s:g}s"] = {**summary(window),
                                   "within_target": abs(window.agreement - 1) <= TARGET}
    assert abs(window.agreement - 1) <= FLAG


def test_hf_generate_energy_per_token(gpu):
    meter, load = measure(gpu, "generate", "--batches", "1,8,64", "--new-tokens", "256",
                          "--min-window-s", "8")
    figures = {"model_params_b": float(load.info.get("MODEL", "nan"))}
    for batch in (1, 8, 64):
        window = meter.window(f"generate-b{batch}")
        tokens = load.counts[f"generate-b{batch}"]
        figures[f"b{batch}"] = {**summary(window), "tokens": tokens,
                                "j_per_token": window.energy_j / tokens,
                                "within_target": abs(window.agreement - 1) <= TARGET}
        assert window.duration_s >= 8
        assert abs(window.agreement - 1) <= FLAG
    REPORT["hf_generate"] = figures
    # Batching amortises the weights: J/token falls steeply with batch size.
    assert figures["b64"]["j_per_token"] < figures["b1"]["j_per_token"] / 5


def test_sampler_cost_and_effect_on_the_workload(gpu):
    sampler = PowerSampler([gpu], 0.1)
    cpu_before, wall_before = time.process_time(), time.monotonic()
    sampler.start()
    time.sleep(20)
    sampler.stop()
    cpu_share = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
    samples = len(sampler.t_s)
    without = Load("matmul", "--seconds", "8")
    without.follow()
    _, with_sampler = measure(gpu, "matmul", "--seconds", "8", period_s=0.1)
    rate_without = without.counts["steady"] / 8
    rate_with = with_sampler.counts["steady"] / 8
    REPORT["sampler"] = {"period_s": 0.1, "samples_in_20s": samples,
                         "cpu_share_of_one_core": cpu_share,
                         "matmul_per_s_without": rate_without,
                         "matmul_per_s_with": rate_with,
                         "workload_change": rate_with / rate_without - 1}
    assert cpu_share < 0.01, f"sampler uses {cpu_share:.2%} of a core"


class MatmulEngine(Engine):
    """A test engine: each load point is a bf16 matmul child process on the run's GPU."""

    kind = "test-matmul"

    def __init__(self, run, gpus, abort):
        super().__init__(run, gpus, abort)
        self.child: subprocess.Popen | None = None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(kind=self.kind, version="test", simulated=False)

    def start(self, deadline_s: float) -> None:
        pass

    def warmup(self) -> None:
        load = Load("matmul", "--seconds", "2")
        self.child = load.proc       # ours: the isolation watch must not flag it
        load.follow()
        self.child = None

    def pids(self) -> set[int]:
        return {self.child.pid} if self.child else set()

    def run_load_point(self, index, kind, value, meter) -> LoadPointOutcome:
        started = meter.now_s()
        load = Load("matmul", "--seconds", str(self.run.scenario.duration_s))
        self.child = load.proc

        class Steady:      # route the child's BEGIN/END to this load point's steady window
            def begin(self, name):
                meter.begin("steady", index)

            def end(self, name):
                meter.end("steady", index)

        load.meter = Steady()  # type: ignore[assignment]
        load.follow()
        self.child = None
        ended = meter.now_s()
        window = meter.window("steady", index)
        # One "request" of the whole load, so the figures have tokens to divide by.
        iterations = load.counts["steady"]
        request = RequestRecord(load_point=index, index=0, sent_s=window.start_s, ttft_s=0.0,
                                e2e_s=window.duration_s,
                                itl_s=[window.duration_s / iterations] * (iterations - 1),
                                input_tokens=0, output_tokens=iterations)
        return LoadPointOutcome(requests=[request], duration_s=ended - started)

    def stop(self) -> None:
        if self.child and self.child.poll() is None:
            self.child.kill()


def test_run_one_end_to_end_on_nvml(gpu):
    from workers.runner import run_one

    sweep = parse_sweep(textwrap.dedent("""\
        name = "gpu-e2e"
        [[model]]
        id = "matmul"
        source = "none"
        [hardware]
        gpu = ["H100"]
        [engine]
        kind = "vllm"
        [[scenario]]
        kind = "server"
        concurrency = [1, 2]
        duration_s = 10
        warmup_s = 0
        [workload]
        input_tokens = [1]
        output_tokens = [1]
        [measurement]
        sample_period_s = 0.1
        idle_baseline_s = 6
        min_steady_s = 8
        cooldown_timeout_s = 60
        codecarbon = false
        """))
    run = expand(sweep)[0]
    result = run_one(run, [gpu], threading.Event(), worker=WorkerInfo(
        name="gpu-test", host="device", pid=os.getpid()), attempt=1,
        engine_factory=MatmulEngine)
    REPORT["run_one"] = {
        "status": result.status, "error": result.error and result.error.message,
        "preflight": result.preflight and result.preflight.model_dump(),
        "idle": result.idle and result.idle.model_dump(),
        "validity": result.validity and result.validity.model_dump(),
        "windows": [w.model_dump() for w in result.windows],
        "load_points": [lp.model_dump() for lp in result.load_points],
        "trace_samples": len(result.trace.t_s) if result.trace else 0,
    }
    assert result.status == "succeeded", result.error
    assert result.idle.idle_ctx_power_w > result.idle.idle_power_w
    assert result.validity.valid, result.validity
    assert [lp.energy_j > 0 for lp in result.load_points] == [True, True]
    assert result.trace.temperature_c and result.trace.sm_clock_mhz
