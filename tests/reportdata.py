"""A store filled by the farm's own simulated runs, for report/recommend/compare/export
tests: every run goes through `run_one` on simulated GPUs and `Store.record_result`,
as a worker and the recorder would (without Redis in between).

`fill_store(store, toml)` measures every run of the sweep (real time: keep the
load points short) and returns the sweep's name. `REPORT_SWEEP` is a small
grid: two GPU models, a closed-loop server scenario with three concurrencies,
an open-loop one with two rates (smallest bin only), a batch scenario, 2 × 2
token-length bins and two repetitions: 40 runs, about 1.5 minutes.
"""

from __future__ import annotations

import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

from farm.store import Store
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import WorkerInfo
from workers.gpu.sim import SimInventory
from workers.runner import run_one

WORKER = WorkerInfo(name="farm-sim@tests", host="tests", pid=1)

REPORT_SWEEP = textwrap.dedent("""\
    name = "report-grid"
    repetitions = 2

    [[model]]
    id = "llama-3.1-8b"
    source = "meta-llama/Llama-3.1-8B-Instruct"
    dtype = "bfloat16"

    [hardware]
    gpu = ["sim:H100-80GB", "sim:L4"]
    gpus_per_run = [1]

    [engine]
    kind = "sim"
    max_num_seqs = 256

    [[scenario]]
    kind = "server"
    concurrency = [1, 8, 32]
    duration_s = 0.25
    warmup_s = 0.02

    [[scenario]]
    kind = "server"
    request_rate = [2, 8]
    duration_s = 0.25
    warmup_s = 0.02

    [[scenario]]
    kind = "batch"
    num_prompts = 8
    warmup_prompts = 0

    [workload]
    input_tokens = [64, 256]
    output_tokens = [16, 64]

    # the open loop on the smallest bin only (keeps the fixture quick)
    [[exclude]]
    scenario = "server-open"
    input_tokens = 256

    [[exclude]]
    scenario = "server-open"
    output_tokens = 64

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.05
    min_steady_s = 0.05
    cooldown_timeout_s = 0
    codecarbon = false
    """)


def _measure(run):
    # Each run on its own simulated GPUs, as on a farm of many hosts.
    gpus = SimInventory(f"{run.hardware.gpu_model}x{run.hardware.gpu_count}",
                        host=f"host-{run.run_id[:6]}").devices()
    return run_one(run, gpus, threading.Event(), worker=WORKER, attempt=1)


def fill_store(store: Store, toml: str = REPORT_SWEEP, parallel: int = 8) -> str:
    """Measure every run of `toml` (simulated runs mostly wait in real time, so
    `parallel` of them at once) and record the results; returns the sweep name."""
    spec = parse_sweep(toml)
    sweep_id = store.record_sweep(spec, toml)
    runs = store.add_runs(sweep_id, expand(spec))
    with ThreadPoolExecutor(parallel) as pool:
        for result in pool.map(_measure, runs):
            store.record_result(result)
    return spec.name
