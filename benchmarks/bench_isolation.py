"""One run, one process: does a run measure the same beside 7 others as alone?

A worker serves each GPU set from a thread of one process (Celery's threads
pool). This script is such a worker, without the broker: N threads, each
measuring one run on the CPU device (the `openai` engine runs on real
devices only; each run gets its own `CpuDevice`, whose power the sampler
reads, RAPL permitting), with the `openai` engine loading the shipped mock server (its own process,
optionally pinned with --mock-cpu), whose every token is due at a known time:
TTFT and ITL as configured. Each run is measured either in the thread itself
(`--mode thread`: `run_one`, as before issue 21) or in a process of its own
(`--mode process`: `workers.runproc.run_in_process`, the worker's default).
The sampler's timeline is the measure of its period, whatever it reads.

Per mode and N (1 run alone, then N at once), over every request of every run:

    TTFT error     measured TTFT − the mock's TTFT (ms): p50, p99
    period error   |gap between two power samples − the sampling period| (ms): p50, p99, max,
                   over the whole timeline and over the gaps inside the windows figures
                   are integrated over (idle baselines, steady windows)

    .venv/bin/python benchmarks/bench_isolation.py [--runs 8] [--mode both]
        [--concurrency 4] [--duration 4] [--ttft-ms 30 --itl-ms 5] [--rounds 2]
        [--mock-cpu 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, machine, table

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.records import RunResult, WorkerInfo
from farm_contract.rules import percentile
from workers.gpu.cpu import CpuDevice
from workers.runner import run_one
from workers.runproc import run_in_process

WORKER = WorkerInfo(name="bench@isolation", host="bench", pid=0)
PERIOD_S = 0.1
MEASURED_WINDOWS = ("idle", "idle_ctx", "steady")
TTFT_GOAL_MS, PERIOD_GOAL_MS = 1.0, 5.0


def sweep(model: Path, url: str, concurrency: int, duration_s: float) -> str:
    return f"""
name = "isolation"
[[model]]
id = "tiny"
source = "{model}"
dtype = "float32"
[hardware]
gpu = ["cpu"]
[engine]
kind = "openai"
base_url = "{url}"
[[scenario]]
kind = "server"
concurrency = [{concurrency}]
duration_s = {duration_s}
warmup_s = 0.5
[workload]
input_tokens = 32
output_tokens = 32
[measurement]
sample_period_s = {PERIOD_S}
idle_baseline_s = 0.3
min_steady_s = 0.5
codecarbon = false
"""


class Mock:
    """python -m workers.mock_openai with a fixed TTFT/ITL, serving `model`."""

    def __init__(self, model: Path, ttft_s: float, itl_s: float, cpus: str):
        pin = ["taskset", "-c", cpus] if cpus else []
        self.proc = subprocess.Popen(
            [*pin, sys.executable, "-m", "workers.mock_openai", "--port", "0", "--ttft-s",
             str(ttft_s), "--itl-s", str(itl_s), "--model", str(model)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("mock_openai listening on "):
            self.proc.kill()
            raise RuntimeError(f"the mock did not start: {line!r}")
        self.url = line.split()[-1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def measure(mode: str, runs: int, spec, ttft_s: float) -> dict:
    """`runs` runs at once, one per simulated GPU, each from its own thread."""
    gpus = [CpuDevice() for _ in range(runs)]
    results: list[RunResult | BaseException] = [RuntimeError("not run")] * runs
    measure_one = run_in_process if mode == "process" else run_one

    def one(i: int) -> None:
        try:
            results[i] = measure_one(spec, [gpus[i]], threading.Event(), worker=WORKER,
                                     attempt=1)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(runs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    failed = [r for r in results if not isinstance(r, RunResult) or r.status != "succeeded"]
    if failed:
        first = failed[0]
        why = first.error if isinstance(first, RunResult) else repr(first)
        raise RuntimeError(f"{len(failed)} run(s) failed: {why}")
    ttft_ms = sorted((r.ttft_s - ttft_s) * 1e3 for res in results for r in res.requests
                     if r.ok and r.ttft_s is not None)
    gaps_ms = sorted(abs(b - a - PERIOD_S) * 1e3 for res in results
                     for a, b in itertools.pairwise(res.trace.t_s))
    # The gaps that figures are integrated over: inside the idle baselines and the
    # steady windows (the engine's start, which loads the tokenizer, is in none).
    measured_ms = sorted(abs(b - a - PERIOD_S) * 1e3 for res in results
                         for a, b in itertools.pairwise(res.trace.t_s)
                         if any(w.start_s <= a and b <= w.start_s + w.duration_s
                                for w in res.windows if w.name in MEASURED_WINDOWS))
    return {"mode": mode, "runs": runs, "wall_s": wall, "requests": len(ttft_ms),
            "ttft_err_p50_ms": percentile(ttft_ms, 50), "ttft_err_p99_ms": percentile(ttft_ms, 99),
            "period_err_p50_ms": statistics.median(gaps_ms),
            "period_err_p99_ms": percentile(gaps_ms, 99), "period_err_max_ms": max(gaps_ms),
            "measured_period_err_p99_ms": percentile(measured_ms, 99),
            "measured_period_err_max_ms": max(measured_ms)}


def verdicts(rows: list[dict], runs: int) -> list[str]:
    """Issue 21's goal per round and mode: N runs at once measure as 1 alone, i.e.
    TTFT error p99 within 1 ms of the single run's and sampling period error p99
    within 5 ms (inside the measured windows, and over the whole timeline)."""
    lines = [f"goal at {runs} runs: TTFT err p99 within {TTFT_GOAL_MS:g} ms of 1 alone; "
             f"period err p99 within {PERIOD_GOAL_MS:g} ms"]
    alone = {(r["round"], r["mode"]): r for r in rows if r["runs"] == 1}
    for row in rows:
        single = alone.get((row["round"], row["mode"]))
        if row["runs"] == 1 or single is None:
            continue
        ttft = row["ttft_err_p99_ms"] - single["ttft_err_p99_ms"]
        inside, whole = row["measured_period_err_p99_ms"], row["period_err_p99_ms"]
        lines.append(
            f"  round {row['round']} {row['mode']}: TTFT {ttft:+.2f} ms "
            f"({'met' if abs(ttft) <= TTFT_GOAL_MS else 'NOT met'}); period in windows "
            f"{inside:.2f} ms ({'met' if inside <= PERIOD_GOAL_MS else 'NOT met'}), whole "
            f"timeline {whole:.2f} ms ({'met' if whole <= PERIOD_GOAL_MS else 'NOT met'})")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--mode", choices=("thread", "process", "both"), default="both")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--ttft-ms", type=float, default=30.0)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mock-cpu", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from workers.tinymodel import build_tiny_llama

    print(machine())
    modes = ("thread", "process") if args.mode == "both" else (args.mode,)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(Path(tmp) / "tiny")
        # The openai engine's tokenizer passes the host's model policy: its folder is a root.
        os.environ.setdefault("FARM_MODEL_ROOTS", tmp)
        mock = Mock(model, args.ttft_ms / 1e3, args.itl_ms / 1e3, args.mock_cpu)
        try:
            spec = expand(parse_sweep(sweep(model, mock.url, args.concurrency,
                                            args.duration)))[0]
            for round_ in range(args.rounds):
                for mode in modes:
                    for runs in (1, args.runs):
                        row = measure(mode, runs, spec, args.ttft_ms / 1e3) | {
                            "round": round_ + 1}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            mock.stop()
    print(table(f"TTFT error vs the mock's {args.ttft_ms:g} ms and sampling period error "
                f"({PERIOD_S * 1e3:g} ms), concurrency {args.concurrency} per run",
                ["round", "mode", "runs", "requests", "TTFT err p50", "p99", "period err p50",
                 "p99", "max", "in windows p99", "max"],
                [[r["round"], r["mode"], r["runs"], r["requests"],
                  f"{r['ttft_err_p50_ms']:.2f}", f"{r['ttft_err_p99_ms']:.2f}",
                  f"{r['period_err_p50_ms']:.2f}", f"{r['period_err_p99_ms']:.2f}",
                  f"{r['period_err_max_ms']:.1f}", f"{r['measured_period_err_p99_ms']:.2f}",
                  f"{r['measured_period_err_max_ms']:.1f}"] for r in rows]))
    for line in verdicts(rows, args.runs):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": vars(args) | {
            "json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
