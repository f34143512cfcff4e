"""Power limit and SM clock lock on a real NVIDIA GPU, through the farm's own path
(docs/measurement.md, "Power limit and SM clock").

One process drives `run_one` with the hf engine (random-weight Llama, no
download) on GPU 0: a run at the GPU's own settings, then runs at lower power
limits and with a locked SM clock, each set by `workers.gpu.tuning` (after the
quiet gate, before the idle baselines), read back, checked during the run
(validity check `tuning`) and restored after it. Then a worker killed with
SIGKILL while a limit is set: its journal is left behind and the next start
(`GpuTuner.restore_leftovers`) puts the defaults back. Where the driver refuses
(not root, no helper), the refusal is recorded in the driver's own words and
the script goes on. Whatever happens (an exception, SIGTERM, Ctrl-C), the GPU's
default power limit is set back and any clock lock undone at the end, and what
that found is recorded. Writes JSON after every step; about 4-5 minutes on an H200.

    python3 benchmarks/gpu_power_limit.py --out power-limit-h200.json
        [--limits 300,450] [--clock-mhz 1200] [--budget-s 300]

Not root? `FARM_GPU_TUNE_HELPER='sudo -n …/farm-gpu-tune'` makes the worker use
the privileged helper; without it the script tries `sudo -n` itself (only where
sudo answers without a password) and otherwise records the refusal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from farm_contract.records import RunResult, WorkerInfo  # noqa: E402
from farm_contract.runspec import RunSpec  # noqa: E402

BATCH = 64          # enough to draw several hundred watts on an H100/H200 (docs/measurement.md)


def run_spec(model_dir: Path, gpu_model: str, index: int, watts: float | None,
             mhz: int | None, num_prompts: int, idle_s: float, steady_s: float) -> RunSpec:
    """One hf batch run at the given settings; `index` keeps the run ids apart."""
    return RunSpec.model_validate({
        "sweep": "power-limit-bench", "repetition": index,
        "model": {"id": "llama-0.67b-random", "source": str(model_dir), "dtype": "bfloat16"},
        "hardware": {"backend": "gpu", "gpu_model": gpu_model, "gpu_count": 1,
                     "power_limit_w": watts, "sm_clock_mhz": mhz},
        "engine": {"kind": "hf", "args": {"attn_implementation": "sdpa", "batch_size": BATCH}},
        "scenario": {"kind": "batch", "name": "batch", "num_prompts": num_prompts,
                     "warmup_prompts": BATCH},
        "workload": {"input_tokens": 128, "output_tokens": 128,
                     "decoding": {"temperature": 0.0}, "dataset": "synthetic", "seed": 0},
        # The quiet gate is off to stay inside the time budget (its own benchmark is
        # gpu_quiet_gate.py); the cool-down likewise.
        "measurement": {"sample_period_s": 0.1, "idle_baseline_s": idle_s,
                        "min_steady_s": steady_s, "cooldown_timeout_s": 0.0,
                        "codecarbon": False, "quiet": {"enabled": False}},
    })


def summary(label: str, result: RunResult, trace_stats: dict[str, Any],
            wall_s: float) -> dict[str, Any]:
    """The figures of one run that say what the settings did."""
    lp = result.load_points[0] if result.load_points else None
    steady = next((w for w in result.windows if w.name == "steady"), None)
    checks = {c.name: c.model_dump() for c in (result.validity.checks if result.validity
                                               else [])}
    return {
        "label": label,
        "status": result.status,
        "error": result.error.message if result.error else None,
        "tuning": [t.model_dump() for t in (result.preflight.tuning if result.preflight else [])],
        "valid": result.validity.valid if result.validity else None,
        "check_tuning": checks.get("tuning"),
        "check_power_range": checks.get("power_range"),
        "idle_power_w": result.idle.idle_power_w if result.idle else None,
        "idle_ctx_power_w": result.idle.idle_ctx_power_w if result.idle else None,
        "steady_s": steady.duration_s if steady else None,
        "steady_energy_j": steady.energy_j if steady else None,
        "steady_avg_power_w": steady.avg_power_w if steady else None,
        "steady_peak_power_w": steady.peak_power_w if steady else None,
        "energy_per_output_token_j": lp.energy_per_output_token_j if lp else None,
        "energy_per_output_token_net_j": lp.energy_per_output_token_net_j if lp else None,
        "output_throughput_tps": lp.output_throughput_tps if lp else None,
        "steady_trace": trace_stats,
        "duration_s": result.duration_s,
        "wall_s": round(wall_s, 1),
    }


def steady_trace_stats(result: RunResult) -> dict[str, Any]:
    """SM clock and throttle reasons over the steady window, from the stored trace."""
    steady = next((w for w in result.windows if w.name == "steady"), None)
    trace = result.trace
    if steady is None or trace is None:
        return {}
    inside = [i for i, t in enumerate(trace.t_s)
              if steady.start_s <= t <= steady.start_s + steady.duration_s]
    clock_series = trace.sm_clock_mhz[0] if trace.sm_clock_mhz else []
    reason_series = trace.throttle_reasons[0] if trace.throttle_reasons else []
    clocks = sorted(clock_series[i] for i in inside
                    if i < len(clock_series) and clock_series[i] is not None)
    reasons = 0
    for i in inside:
        if i < len(reason_series) and reason_series[i] is not None:
            reasons |= int(reason_series[i])
    return {"samples": len(inside),
            "sm_clock_median_mhz": clocks[len(clocks) // 2] if clocks else None,
            "sm_clock_min_mhz": clocks[0] if clocks else None,
            "sm_clock_max_mhz": clocks[-1] if clocks else None,
            "throttle_reasons_or": hex(reasons)}


def probe(gpu) -> dict[str, Any]:
    """Whether this process may set the limit itself: one set to the current value."""
    from workers.gpu.base import TuningRefused

    now = gpu.power_limit_w()
    try:
        gpu.set_power_limit_w(now)
        return {"direct_nvml": "allowed", "power_limit_w": now}
    except TuningRefused as exc:
        return {"direct_nvml": "refused", "driver_words": str(exc),
                "no_permission": exc.no_permission}


def sudo_helper() -> list[str] | None:
    """`sudo -n python -m workers.gpu.tune_helper` where sudo answers without a password."""
    if shutil.which("sudo") is None:
        return None
    try:
        ok = subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None
    return ["sudo", "-n", sys.executable, "-m", "workers.gpu.tune_helper"] if ok == 0 else None


CRASH_CHILD = r"""
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from farm_contract.runspec import RunHardware
from workers.gpu.nvml import NvmlInventory
from workers.gpu.tuning import GpuTuner, Journal, Helper
inventory = NvmlInventory()
gpu = inventory.devices()[0]
helper = {helper!r}
tuner = GpuTuner(Journal(Path({journal!r})), Helper(helper) if helper else None)
session = tuner.session([gpu], RunHardware(backend="gpu", gpu_model=gpu.info.model, gpu_count=1,
                                           power_limit_w={watts!r}), "crash-demo")
try:
    session.apply()
    print("applied", session.records[0].applied_power_limit_w, flush=True)
except Exception as exc:
    print("refused", exc, flush=True)
os.kill(os.getpid(), signal.SIGKILL)     # the worker dies: no finally, no restore
"""


def crash_demo(gpu, journal: Path, watts: float, helper: list[str] | None) -> dict[str, Any]:
    """A process that sets a limit and is SIGKILLed; then the next start's restore."""
    from workers.gpu.tuning import GpuTuner, Helper, Journal

    before = gpu.power_limit_w()
    child = subprocess.run(
        [sys.executable, "-c", CRASH_CHILD.format(root=str(ROOT), journal=str(journal),
                                                  watts=watts, helper=helper)],
        capture_output=True, text=True, timeout=120)
    left = Journal(journal).entries()
    after_kill = gpu.power_limit_w()
    lines = GpuTuner(Journal(journal), Helper(helper) if helper else None).restore_leftovers(
        [gpu])
    return {"limit_before_w": before, "child_exit": child.returncode,
            "child_said": child.stdout.strip(), "child_stderr_tail": child.stderr[-2000:],
            "journal_left_after_kill": left, "limit_after_kill_w": after_kill,
            "restore_lines": lines, "limit_after_restore_w": gpu.power_limit_w(),
            "journal_after_restore": Journal(journal).entries()}


def restore_defaults(gpu, helper: list[str] | None) -> dict[str, Any]:
    """Default power limit and no clock lock, whatever the runs left; what it found."""
    import pynvml

    found: dict[str, Any] = {"limit_before_reset_w": gpu.power_limit_w(),
                             "default_limit_w": gpu.default_power_limit_w()}
    for name, call in (("power_limit", lambda: pynvml.nvmlDeviceSetPowerManagementLimit(
                            gpu.handle, pynvml.nvmlDeviceGetPowerManagementDefaultLimit(
                                gpu.handle))),
                       ("clocks", lambda: pynvml.nvmlDeviceResetGpuLockedClocks(gpu.handle))):
        try:
            call()
            found[name] = "reset through NVML"
        except pynvml.NVMLError as exc:
            found[name] = f"NVML: {exc}"
    if helper and any(str(v).startswith("NVML") for v in found.values()):
        done = subprocess.run([*helper, "reset", gpu.info.uuid], capture_output=True,
                              text=True, timeout=60)
        found["helper_reset"] = {"exit": done.returncode, "out": done.stdout.strip(),
                                 "err": done.stderr.strip()}
    found["limit_after_reset_w"] = gpu.power_limit_w()
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/farm-hf-model"))
    parser.add_argument("--limits", default="300,450",
                        help="power limits (W) below the default, comma-separated")
    parser.add_argument("--clock-mhz", type=int, default=1200)
    parser.add_argument("--num-prompts", type=int, default=BATCH)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--steady-s", type=float, default=8.0)
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="no new run starts after this many seconds")
    args = parser.parse_args(argv)
    started = time.monotonic()
    # SIGTERM (a time limit) must still reach the finally that restores the GPU.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from benchmarks.gpu_hf_engine import build_model
    from workers.gpu.nvml import NvmlInventory
    from workers.gpu.tuning import GpuTuner, Helper, Journal
    from workers.runner import run_one

    journal_dir = Path(tempfile.mkdtemp(prefix="farm-gpu-tuning-"))
    os.environ["FARM_GPU_TUNE_JOURNAL_DIR"] = str(journal_dir)
    out: dict[str, Any] = {"euid": os.geteuid(), "runs": [], "errors": []}

    def save() -> None:
        out["elapsed_s"] = round(time.monotonic() - started, 1)
        args.out.write_text(json.dumps(out, indent=1, default=str))

    inventory = NvmlInventory()
    gpu = inventory.devices()[0]
    helper_argv: list[str] | None = None
    try:
        out["gpu"] = gpu.info.model_dump()
        out["driver_range_w"] = gpu.power_limit_range_w()
        out["default_limit_w"] = gpu.default_power_limit_w()
        out["limit_at_start_w"] = gpu.power_limit_w()
        out["max_sm_clock_mhz"] = gpu.max_sm_clock_mhz()
        out["probe"] = probe(gpu)
        env_helper = Helper.from_environment(os.environ)
        helper_argv = env_helper.argv if env_helper else (
            sudo_helper() if out["probe"].get("no_permission") else None)
        out["helper"] = helper_argv
        save()
        print(f"{gpu.info.name}: limit {out['limit_at_start_w']} W (range "
              f"{out['driver_range_w']}), euid {out['euid']}, probe {out['probe']}", flush=True)
        model_dir = build_model(args.model_dir)
        tuner = GpuTuner(Journal(journal_dir), Helper(helper_argv) if helper_argv else None)
        low, high = out["driver_range_w"] or (0.0, float("inf"))
        limits = [min(max(float(w), low), high) for w in args.limits.split(",") if w.strip()]
        plan: list[tuple[str, float | None, int | None]] = [("default", None, None)]
        plan += [(f"limit-{w:g}W", w, None) for w in limits]
        plan += [(f"clock-{args.clock_mhz}MHz", None, args.clock_mhz)]
        worker = WorkerInfo(name="power-limit@bench", host="bench", pid=os.getpid())
        for index, (label, watts, mhz) in enumerate(plan):
            if time.monotonic() - started > args.budget_s:
                out["errors"].append(f"{label}: skipped, past the {args.budget_s:g} s budget")
                continue
            spec = run_spec(model_dir, gpu.info.model, index, watts, mhz, args.num_prompts,
                            args.idle_s, args.steady_s)
            t0 = time.monotonic()
            try:
                result = run_one(spec, [gpu], threading.Event(), worker=worker, attempt=1,
                                 tuner=tuner)
            except Exception as exc:     # a transient error escapes run_one: keep going
                out["errors"].append(f"{label}: {type(exc).__name__}: {exc}")
                save()
                continue
            row = summary(label, result, steady_trace_stats(result), time.monotonic() - t0)
            row["limit_after_run_w"] = gpu.power_limit_w()   # restored?
            out["runs"].append(row)
            save()
            print(f"{label:16s} {row['status']:9s} {row['steady_avg_power_w']} W avg, "
                  f"{row['energy_per_output_token_j']} J/token, clock "
                  f"{row['steady_trace'].get('sm_clock_median_mhz')} MHz, tuning check "
                  f"{(row['check_tuning'] or {}).get('passed')}, refused "
                  f"{[t['refused'] for t in row['tuning']]}; limit after "
                  f"{row['limit_after_run_w']} W", flush=True)
        if time.monotonic() - started < args.budget_s + 30:
            out["crash_demo"] = crash_demo(gpu, journal_dir / "crash",
                                           limits[0] if limits else low, helper_argv)
            print(f"SIGKILL demo: {out['crash_demo']['restore_lines']} → limit "
                  f"{out['crash_demo']['limit_after_restore_w']} W", flush=True)
    except BaseException as exc:  # recorded, then the GPU is still restored below
        out["errors"].append("".join(traceback.format_exception(exc))[-4000:])
    finally:
        try:
            out["final_restore"] = restore_defaults(gpu, helper_argv)
        except Exception as exc:
            out["final_restore"] = f"{type(exc).__name__}: {exc}"
        save()
        inventory.shutdown()
        print(f"final: {out['final_restore']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
