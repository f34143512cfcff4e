"""The quiet-GPU gate on a real NVIDIA GPU: idle baselines of back-to-back runs
against a cold start (docs/measurement.md, "The quiet-GPU gate").

One worker process, the farm's own `run_one` on NVML with the hf engine
(random-weight Llama, no download): a first run on a GPU that has sat idle
(the cold start), then runs back to back with the gate off, then back to back
with the gate on (default settings). The cool-down on temperature is off in
every run, so only the gate stands between one run's engine exit and the next
run's idle window. Writes every run's idle baselines and what the gate saw, as
JSON, after each run (a cut-short call still leaves the runs done).

    python benchmarks/gpu_quiet_gate.py --out quiet-gate-h200.json [--off 2] [--on 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm_contract.records import RunResult, WorkerInfo  # noqa: E402
from farm_contract.runspec import RunSpec  # noqa: E402


def run_spec(model_dir: Path, gpu_model: str, index: int, gate_on: bool,
             num_prompts: int, idle_s: float) -> RunSpec:
    """One hf batch run; `index` keeps the run ids apart."""
    return RunSpec.model_validate({
        "sweep": "quiet-gate-" + ("on" if gate_on else "off"), "repetition": index,
        "model": {"id": "llama-0.67b-random", "source": str(model_dir), "dtype": "bfloat16"},
        "hardware": {"backend": "gpu", "gpu_model": gpu_model, "gpu_count": 1},
        "engine": {"kind": "hf", "args": {"attn_implementation": "sdpa", "batch_size": 8}},
        "scenario": {"kind": "batch", "name": "batch", "num_prompts": num_prompts,
                     "warmup_prompts": 0},
        "workload": {"input_tokens": 128, "output_tokens": 128,
                     "decoding": {"temperature": 0.0}, "dataset": "synthetic", "seed": 0},
        "measurement": {"sample_period_s": 0.1, "idle_baseline_s": idle_s,
                        "min_steady_s": 1.0, "cooldown_timeout_s": 0.0,
                        "codecarbon": False, "quiet": {"enabled": gate_on}},
    })


def summary(label: str, result: RunResult, wall_s: float) -> dict[str, Any]:
    gate = result.preflight.quiet if result.preflight else None
    return {
        "label": label,
        "status": result.status,
        "error": result.error.message if result.error else None,
        "idle_power_w": result.idle.idle_power_w if result.idle else None,
        "idle_ctx_power_w": result.idle.idle_ctx_power_w if result.idle else None,
        "gate": gate.model_dump() if gate else None,
        "temperature_c": result.preflight.gpus[0].temperature_c if result.preflight else None,
        "duration_s": result.duration_s,
        "wall_s": round(wall_s, 1),
        "energy_per_output_token_j": (result.load_points[0].energy_per_output_token_j
                                      if result.load_points else None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/farm-hf-model"))
    parser.add_argument("--off", type=int, default=2, help="back-to-back runs, gate off")
    parser.add_argument("--on", type=int, default=3, help="back-to-back runs, gate on")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--idle-s", type=float, default=8.0)
    args = parser.parse_args(argv)

    from benchmarks.gpu_hf_engine import build_model
    from workers.gpu.nvml import NvmlInventory
    from workers.runner import run_one

    model_dir = build_model(args.model_dir)
    inventory = NvmlInventory()
    gpu = inventory.devices()[0]
    worker = WorkerInfo(name="quiet-gate@bench", host="bench", pid=0)
    plan = ([("cold", False)] + [(f"off-{i + 1}", False) for i in range(args.off)]
            + [(f"on-{i + 1}", True) for i in range(args.on)])
    rows: list[dict[str, Any]] = []
    for index, (label, gate_on) in enumerate(plan):
        spec = run_spec(model_dir, gpu.info.model, index, gate_on, args.num_prompts, args.idle_s)
        started = time.monotonic()
        result = run_one(spec, [gpu], threading.Event(), worker=worker, attempt=1)
        rows.append(summary(label, result, time.monotonic() - started))
        row = rows[-1]
        print(f"{label:6s} {row['status']:9s} idle {row['idle_power_w']} W  "
              f"ctx {row['idle_ctx_power_w']} W  gate "
              f"{(row['gate'] or {}).get('met')} after {(row['gate'] or {}).get('waited_s')} s",
              flush=True)
        cold = rows[0]["idle_power_w"]
        for r in rows:
            r["idle_vs_cold_pct"] = (None if cold is None or r["idle_power_w"] is None
                                     else round(100.0 * (r["idle_power_w"] / cold - 1.0), 2))
        args.out.write_text(json.dumps({"gpu": gpu.info.model_dump(), "runs": rows}, indent=1))
    inventory.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
