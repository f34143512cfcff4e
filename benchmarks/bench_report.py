"""`farmctl report` on a large sweep: 1,024 run points and 1,000,000 per-request records.

Fills a scratch SQLite store directly (no worker, no Redis): a simulated sweep
of --runs runs (default 256 = 2 models × 4 GPU models × closed loop
c = 1/8/32/128 and open loop 1/4/16/64 req/s × 2 input × 2 output lengths ×
4 repetitions, 4 load points each), every run recorded through
Store.record_result with a synthetic RunResult: ~3,900 requests per run
(1,000,000 in all, 8 inter-token gaps each), a 100 ms power trace of the whole
run (~6,000 samples), its energy windows, and plausible figures (energy per
request falling with concurrency to a plateau, latency rising). About 3% of
the runs fail and 5% fail a validity check, so the report has things to leave
out.

Then times
  (a) in process: collect (store reads + figure data), drawing, writing, and
      the whole `write_report`, median of --repeat; every SQL statement the
      report runs is recorded, to check that it never reads the `requests`
      table and reads traces of the timeline runs only;
  (b) `farmctl report SWEEP --out DIR` as a subprocess (interpreter start and
      imports included), median of --repeat.

    .venv/bin/python benchmarks/bench_report.py [--runs 256] [--requests 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import ROOT, machine, scratch_db, table, temp_dir

GOAL_S = 30.0
GPUS = ("H100-80GB", "A100-40GB", "L4", "L40S")
# Relative energy per token and per-GPU idle/limit power of the synthetic figures.
GPU_FACTOR = {"h100-80gb": 1.0, "a100-40gb": 1.35, "l4": 1.9, "l40s": 1.5}
IDLE_W = {"h100-80gb": (70.0, 118.0), "a100-40gb": (55.0, 90.0), "l4": (16.0, 28.0),
          "l40s": (35.0, 60.0)}
MODEL_FACTOR = {"llama-3.1-8b": 1.0, "qwen-2.5-14b": 1.8}


def sweep_text(name: str, repetitions: int) -> str:
    gpus = ", ".join(f'"sim:{g}"' for g in GPUS)
    return f"""
name = "{name}"
repetitions = {repetitions}

[[model]]
id = "llama-3.1-8b"
source = "meta-llama/Llama-3.1-8B-Instruct"

[[model]]
id = "qwen-2.5-14b"
source = "Qwen/Qwen2.5-14B-Instruct"

[hardware]
gpu = [{gpus}]

[engine]
kind = "sim"

[[scenario]]
kind = "server"
concurrency = [1, 8, 32, 128]
duration_s = 120
warmup_s = 20

[[scenario]]
kind = "server"
request_rate = [1, 4, 16, 64]
duration_s = 120
warmup_s = 20

[workload]
input_tokens = [256, 2048]
output_tokens = [64, 256]

[measurement]
sample_period_s = 0.1
"""


# ------------------------------------------------------------------ results


def synthetic_result(run, requests_per_run: int, rng: random.Random, failed: bool = False):
    """A plausible RunResult of `run` (figures, windows, trace, requests)."""
    from farm_contract.records import (
        EnergyWindow,
        EngineInfo,
        ErrorInfo,
        GpuInfo,
        IdleBaseline,
        LatencyStats,
        LoadPointResult,
        MeasurementInfo,
        PowerTrace,
        RequestRecord,
        RunResult,
    )
    from tests.factories import validity, worker

    gpu_model = run.hardware.gpu_model
    idle_w, idle_ctx_w = IDLE_W[gpu_model]
    factor = GPU_FACTOR[gpu_model] * MODEL_FACTOR[run.model.id]
    n_in, n_out = run.workload.input_tokens, run.workload.output_tokens
    gpu = GpuInfo(index=0, uuid=f"SIM-{gpu_model}-{run.run_id[:8]}-0",
                  name=f"Simulated {gpu_model}", model=gpu_model, backend="sim",
                  power_limit_w=700.0)
    invalid = not failed and rng.random() < 0.05
    points = run.scenario.load_points
    per_point = max(1, requests_per_run // len(points))
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    windows = [EnergyWindow(name="idle", start_s=0.0, duration_s=10.0, energy_j=idle_w * 10),
               EnergyWindow(name="idle_ctx", start_s=10.0, duration_s=10.0,
                            energy_j=idle_ctx_w * 10),
               EnergyWindow(name="load", start_s=20.0, duration_s=30.0, energy_j=200.0 * 30),
               EnergyWindow(name="warmup", start_s=50.0, duration_s=20.0, energy_j=300.0 * 20)]
    load_points, requests = [], []
    t = 70.0
    steady_power = []
    for index, (kind, value) in enumerate(points):
        # Energy per request falls with load towards a plateau; latency rises with it.
        load = value if kind == "concurrency" else value / 2
        j_token = 0.02 * factor * (1 + 12 / load ** 1.3) * (1 + n_in / 4096) * rng.gauss(1, 0.04)
        power = min(680.0, idle_ctx_w + 60 * factor * math.log2(2 + load))
        steady_s = 110.0
        tokens = int(power * steady_s / j_token)
        energy = power * steady_s
        ttft = 20 * factor * (1 + n_in / 512) * (1 + load / 16) * rng.gauss(1, 0.05)
        tpot = 8 * factor * (1 + load / 64) * rng.gauss(1, 0.05)
        net = energy - idle_ctx_w * steady_s
        load_points.append(LoadPointResult(
            index=index, kind=kind, value=value, duration_s=120.0, num_requests=per_point,
            num_ok=per_point, num_failed=0, input_tokens=n_in * per_point,
            output_tokens=n_out * per_point, steady_output_tokens=tokens,
            request_throughput_rps=tokens / n_out / steady_s,
            output_throughput_tps=tokens / steady_s,
            ttft=LatencyStats(mean_ms=ttft * 0.8, p50_ms=ttft * 0.7, p90_ms=ttft,
                              p99_ms=ttft * 1.4),
            tpot=LatencyStats(mean_ms=tpot * 0.9, p50_ms=tpot * 0.9, p90_ms=tpot,
                              p99_ms=tpot * 1.2),
            e2e=LatencyStats(p50_ms=ttft + tpot * n_out, p90_ms=1.2 * (ttft + tpot * n_out)),
            energy_j=energy, energy_per_output_token_j=j_token,
            energy_per_request_j=j_token * n_out,
            output_tokens_per_j=1 / j_token, avg_power_w=power, peak_power_w=power * 1.15,
            energy_net_j=net, energy_per_output_token_net_j=net / tokens,
            energy_per_request_net_j=net / tokens * n_out, output_tokens_per_j_net=tokens / net,
            avg_power_net_w=power - idle_ctx_w))
        windows.append(EnergyWindow(name="steady", load_point=index, start_s=t + 5,
                                    duration_s=steady_s, energy_j=energy, avg_power_w=power))
        steady_power.append((t, t + 120.0, power))
        for i in range(per_point):
            sent = t + 120.0 * i / per_point
            requests.append(RequestRecord.model_construct(
                load_point=index, index=i, scheduled_s=None, sent_s=sent, ttft_s=ttft / 1000,
                e2e_s=(ttft + tpot * 8) / 1000, itl_s=[tpot / 1000] * 8, input_tokens=n_in,
                output_tokens=9, ok=True, error=None))
        t += 120.0
    windows.append(EnergyWindow(name="run", start_s=0.0, duration_s=t + 5, energy_j=None))
    period = 0.1
    t_s = [round(k * period, 4) for k in range(int((t + 5) / period))]
    power_w = []
    for ts in t_s:
        p = (idle_w if ts < 10 else idle_ctx_w if ts < 20 else 200.0 if ts < 50 else
             300.0 if ts < 70 else next((w for a, b, w in steady_power if a <= ts < b), idle_ctx_w))
        power_w.append(p * rng.gauss(1, 0.02))
    return RunResult(
        run_id=run.run_id, status="failed" if failed else "succeeded", attempt=1,
        worker=worker("farm-sim@bench"), gpus=[gpu],
        engine=EngineInfo(kind="sim", version="sim-1", simulated=True),
        measurement=MeasurementInfo(energy_sensor="sim.energy_counter", power_sensor="sim.power",
                                    sample_period_s=period, simulated=True),
        simulated=True, started_at=t0, finished_at=t0 + timedelta(seconds=t + 5),
        duration_s=t + 5, load_points=[] if failed else load_points, windows=windows,
        trace=PowerTrace(sensor="sim.power", sample_period_s=period, gpu_uuids=[gpu.uuid],
                         t_s=t_s, power_w=[power_w]),
        requests=[] if failed else requests,
        error=ErrorInfo(kind="engine", message="engine died (synthetic)") if failed else None,
        idle=IdleBaseline(idle_power_w=idle_w, idle_ctx_power_w=idle_ctx_w),
        validity=None if failed else validity("steady_window" if invalid else None))


def fill(url: str, runs: int, requests: int) -> tuple[str, dict[str, int], float]:
    from farm.store import Store
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep

    start = time.perf_counter()
    name = "bench-report"
    # per repetition: GPU models × 2 models × 2 scenarios × 2 input × 2 output lengths
    repetitions = max(1, round(runs / (len(GPUS) * 2 * 2 * 2 * 2)))
    text = sweep_text(name, repetitions)
    spec = parse_sweep(text)
    rng = random.Random(20261122)
    with Store.open(url, upgrade=True) as store:
        sid = store.record_sweep(spec, text)
        specs = store.add_runs(sid, expand(spec))
        failed = [rng.random() < 0.03 for _ in specs]
        per_run = math.ceil(requests / (len(specs) - sum(failed)))
        for run, fails in zip(specs, failed):
            store.record_result(synthetic_result(run, per_run, rng, fails))
        counts = store.counts()
    return name, counts, time.perf_counter() - start


# ------------------------------------------------------------------- timing


def time_in_process(url: str, sweep: str, out: Path, repeat: int) -> dict[str, list[float]]:
    """Phases of one report (collect, draw, write), then write_report as a whole."""
    from sqlalchemy import event

    from farm.report import html, report
    from farm.store import Store

    times: dict[str, list[float]] = {"collect (store reads + figure data)": [],
                                     "draw (matplotlib, PNG)": [],
                                     "write (HTML + files)": [],
                                     "write_report, whole": []}
    phases = list(times.values())
    statements: list[str] = []
    for _ in range(repeat):
        with Store.open(url) as store:
            t0 = time.perf_counter()
            data = report.collect(store, sweep)
            t1 = time.perf_counter()
            pngs = report.render_all(data.figures)
            t2 = time.perf_counter()
            (out / "phases" / "figures").mkdir(parents=True, exist_ok=True)
            for spec, png in zip(data.figures, pngs):
                (out / "phases" / "figures" / f"{spec.slug}.png").write_bytes(png)
            (out / "phases" / "index.html").write_text(
                html.render_page(data, {s.slug: p for s, p in zip(data.figures, pngs)}))
            t3 = time.perf_counter()
            event.listen(store.engine, "before_cursor_execute",
                         lambda *args: statements.append(args[2]))
            written = report.write_report(store, sweep, out)
            t4 = time.perf_counter()
        for phase, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phase.append(seconds)
    flat = [" ".join(s.lower().split()) for s in statements]
    requests_reads = [s for s in flat if "from requests" in s]
    trace_reads = [s for s in flat if "from power_traces" in s]
    timelines = sum(1 for f in written.figures if f.name.startswith("timeline-"))
    print(f"report: {len(written.figures)} figures ({timelines} timelines), "
          f"{written.index.stat().st_size / 1e6:.1f} MB index.html, {written.points} run points")
    print(f"SQL statements per report: {len(statements) // repeat}; reading `requests`: "
          f"{len(requests_reads)}; reading `power_traces`: {len(trace_reads) // repeat} "
          f"(timelines: {timelines})")
    assert not requests_reads, "the report must never read per-request records"
    assert len(trace_reads) // repeat == timelines, "traces of the timeline runs only"
    return times


def time_subprocess(url: str, sweep: str, out: Path, repeat: int) -> list[float]:
    farmctl = Path(sys.executable).parent / "farmctl"
    env = {**os.environ, "FARM_DB_URL": url}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([str(farmctl), "report", sweep, "--out", str(out)], env=env,
                              capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"farmctl report failed ({proc.returncode}): {proc.stderr}")
    print("farmctl said:", proc.stdout.strip().replace("\n", " | "))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    with temp_dir() as tmp, scratch_db("sqlite", tmp) as url:
        sweep, counts, fill_s = fill(url, args.runs, args.requests)
        print(f"filled in {fill_s:.1f} s: {counts['runs']} runs, {counts['load_points']} load "
              f"points, {counts['requests']:,} requests, {counts['power_traces']} traces")
        inproc = time_in_process(url, sweep, tmp / "report-a", args.repeat)
        sub = time_subprocess(url, sweep, tmp / "report-b", args.repeat)
    rows = [(phase, statistics.median(v), min(v), max(v)) for phase, v in inproc.items()]
    rows.append(("farmctl report (subprocess)", statistics.median(sub), min(sub), max(sub)))
    print(table(f"seconds, median of {args.repeat}", ("phase", "median", "min", "max"), rows))
    worst = max(statistics.median(inproc["write_report, whole"]), statistics.median(sub))
    print(f"goal < {GOAL_S:.0f} s: {'met' if worst < GOAL_S else 'MISSED'} ({worst:.1f} s)")


if __name__ == "__main__":
    main()
