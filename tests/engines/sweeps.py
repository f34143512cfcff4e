"""Sweep texts for the engine tests: the tiny model on the CPU device."""

from __future__ import annotations

from pathlib import Path

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import WorkerInfo
from farm_contract.runspec import RunSpec

# vLLM on this CPU needs an explicit KV cache and eager mode (../shared/VLLM_CPU.md).
VLLM_CPU_ARGS = """enforce_eager = true
kv_cache_memory_bytes = 268435456
max_num_seqs = 16
"""
# One pass over the prompts, as these tests count them: a self-sized window would
# repeat them a machine-dependent number of times (tests/engines/
# test_self_sizing_engines.py turns it on).
MEASUREMENT = """[measurement]
idle_baseline_s = 0.5
min_steady_s = 0.5
codecarbon = false
cooldown_timeout_s = 0
self_size = false
"""
WORKER = WorkerInfo(name="farm-cpu@test", host="test", pid=1)


def sweep_text(model: Path | str, scenario: str, *, engine: str = "vllm",
               engine_args: str = VLLM_CPU_ARGS, input_tokens: int = 16,
               output_tokens: int = 16, decoding: str = "") -> str:
    return f"""
name = "engine-test"
[[model]]
id = "tiny"
source = "{model}"
dtype = "float32"
[hardware]
gpu = ["cpu"]
[engine]
kind = "{engine}"
{engine_args}
{scenario}
[workload]
input_tokens = {input_tokens}
output_tokens = {output_tokens}
{decoding}
{MEASUREMENT}"""


def runs(model: Path | str, scenario: str, **kwargs) -> list[RunSpec]:
    return expand(parse_sweep(sweep_text(model, scenario, **kwargs)))


BATCH = """[[scenario]]
kind = "batch"
num_prompts = 12
warmup_prompts = 2
"""
SERVER_CLOSED = """[[scenario]]
kind = "server"
concurrency = [1, 4]
duration_s = 2
warmup_s = 1
"""
SERVER_OPEN = """[[scenario]]
kind = "server"
request_rate = 20
max_concurrency = 8
duration_s = 2
warmup_s = 1
"""
