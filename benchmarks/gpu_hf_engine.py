"""The transformers engine measured for real on an NVIDIA GPU (docs/engines.md).

Builds a random-weight Llama (~0.67B parameters, no download) and runs the
farm's own `run_one` — preflight, idle baselines, the engine child, warm-up,
the generation window, isolation, validity — on NVML, for batch sizes 1, 8
and 64 (one run each, every generation window ≥ 30 s so the runs are valid
by the farm's own rules). Writes every figure as JSON.

    python benchmarks/gpu_hf_engine.py --out hf-h100.json [--quick]

`--quick` runs one short batch-8 run (for tests/gpu: the path, not the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm.sweep import expand  # noqa: E402
from farm.sweep_file import parse_sweep  # noqa: E402
from farm_contract.records import RunResult, WorkerInfo  # noqa: E402

# (batch_size, num_prompts): each generation window lasts well over 30 s on an H100.
FULL = [(1, 32), (8, 256), (64, 1024)]
QUICK = [(8, 16)]


def sweep_text(model_dir: Path, gpu_model: str, shapes: list[tuple[int, int]],
               quick: bool) -> str:
    sizes = sorted({b for b, _ in shapes})
    prompts = sorted({n for _, n in shapes})
    # keep the diagonal: batch size b with its own prompt count
    excludes = "\n".join(
        f'[[exclude]]\nnum_prompts = {n}\n"engine.batch_size" = {b}'
        for b in sizes for n in prompts if (b, n) not in shapes)
    return f"""
name = "hf-{gpu_model}"
[[model]]
id = "llama-0.67b-random"
source = "{model_dir}"
dtype = "bfloat16"
[hardware]
gpu = ["{gpu_model}"]
[engine]
kind = "hf"
batch_size = {sizes}
attn_implementation = "sdpa"
[[scenario]]
kind = "batch"
num_prompts = {prompts}
warmup_prompts = 0
[workload]
input_tokens = 128
output_tokens = 128
[measurement]
sample_period_s = 0.1
idle_baseline_s = {3 if quick else 10}
min_steady_s = {1 if quick else 30}
cooldown_timeout_s = {0 if quick else 90}
codecarbon = false
{excludes}
"""


def build_model(directory: Path) -> Path:
    from workers.tinymodel import build_tiny_llama

    if not (directory / "model.safetensors").exists() and not any(
            directory.glob("model-*.safetensors")):
        started = time.monotonic()
        build_tiny_llama(directory, hidden=2048, layers=16, heads=16)
        print(f"built {directory} in {time.monotonic() - started:.0f} s", flush=True)
    return directory


def summarize(result: RunResult, batch_size: int) -> dict[str, Any]:
    [lp] = result.load_points or [None]
    windows = {w.name: w.model_dump(exclude={"per_gpu_energy_j"}) for w in result.windows
               if w.name != "steady"}
    steady = next((w for w in result.windows if w.name == "steady"), None)
    return {
        "batch_size": batch_size,
        "status": result.status,
        "error": result.error.model_dump() if result.error else None,
        "engine": result.engine.model_dump(),
        "gpu": result.gpus[0].model_dump(),
        "measurement": result.measurement.model_dump(),
        "idle": result.idle.model_dump() if result.idle else None,
        "valid": result.validity.valid if result.validity else None,
        "checks": [c.model_dump() for c in result.validity.checks] if result.validity else [],
        "load_point": lp.model_dump(exclude={"notes"}) if lp else None,
        "steady_window": steady.model_dump() if steady else None,
        "windows": windows,
        "duration_s": result.duration_s,
        "trace_samples": len(result.trace.t_s) if result.trace else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/farm-hf-model"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    from workers.gpu.nvml import NvmlInventory
    from workers.runner import run_one

    model_dir = build_model(args.model_dir)
    # The worker loads models only from its roots (workers/model_policy.py).
    os.environ.setdefault("FARM_MODEL_ROOTS", str(model_dir.resolve().parent))
    inventory = NvmlInventory()
    gpu = inventory.devices()[0]
    shapes = QUICK if args.quick else FULL
    runs = expand(parse_sweep(sweep_text(model_dir, gpu.info.model, shapes, args.quick)))
    report: dict[str, Any] = {"gpu": gpu.info.model_dump(), "runs": []}
    try:
        for run in sorted(runs, key=lambda r: int(r.engine.args["batch_size"])):
            batch_size = int(run.engine.args["batch_size"])
            print(f"run batch_size={batch_size} num_prompts={run.scenario.num_prompts}",
                  flush=True)
            result = run_one(run, [gpu], threading.Event(),
                             worker=WorkerInfo(name="bench@device", host="device", pid=0),
                             attempt=1)
            summary = summarize(result, batch_size)
            report["runs"].append(summary)
            lp = summary["load_point"] or {}
            print(json.dumps({k: summary[k] for k in ("batch_size", "status", "valid")}
                             | {k: lp.get(k) for k in (
                                 "output_throughput_tps", "energy_per_output_token_j",
                                 "energy_per_output_token_net_j", "avg_power_w")}),
                  flush=True)
            args.out.write_text(json.dumps(report, indent=2, default=str))
    finally:
        inventory.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
