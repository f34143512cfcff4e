"""Goal 2: the farm's own overhead per run (dispatch + record) under 50 ms at the median.

A real private Redis, a SQLite store, one real `farmctl recorder` and one real
`farmctl worker --sim` process, and runs whose engine work is as close to zero
as the sim engine allows (batch of 1 prompt, 1 input and 1 output token, no
warm-up, no idle baseline, a 0.1B model): what remains is the farm.

Latency, runs sent one at a time: send the run (sending.send_runs), then
poll the store (Store.run_statuses) every --poll-ms until it is succeeded.
    overhead = (detected − sent) − results.duration_s
duration_s is the worker's own time inside run_one, so the overhead is
everything else: the message to the worker, the task's claim/heartbeat/GPU
hold, the started event and the result through Redis to the recorder, the
store write, and at most one poll interval. All processes share one clock, so
the stored timestamps split it: dispatch (sent → run_one starts), run,
report (run_one ends → the recorder's recorded_at), commit + poll (→ detected).

Throughput: --runs more runs sent at once; runs/s until the last is succeeded.

    .venv/bin/python benchmarks/bench_overhead.py [--runs 200] [--poll-ms 2]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import machine, private_redis, scratch_db, summary, table, temp_dir

GOAL_MS = 50.0
SIM_GPU = "H100-80GB"
TERMINAL = {"succeeded", "failed", "cancelled"}


def sweep_text(name: str, runs: int, sample_period_s: float) -> str:
    """`runs` distinct runs of one near-zero-work combination (repetitions)."""
    return f"""
name = "{name}"
repetitions = {runs}

[[model]]
id = "tiny"
source = "bench/tiny"
params_b = 0.1

[hardware]
gpu = ["sim:{SIM_GPU}"]

[engine]
kind = "sim"

[[scenario]]
kind = "batch"
num_prompts = 1
warmup_prompts = 0

[workload]
input_tokens = 1
output_tokens = 1

[measurement]
sample_period_s = {sample_period_s}
idle_baseline_s = 0
"""


class Processes:
    """The recorder and the sim worker, as `farmctl` subprocesses (as tests/ start them)."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", *args], env=self.env, cwd=self.tmp,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_done(store, run_ids: list[str], poll_s: float, procs: Processes,
              timeout_s: float = 120.0) -> float:
    """Poll until every run is terminal; returns the perf_counter when seen."""
    deadline = time.monotonic() + timeout_s
    checked = time.monotonic()
    while True:
        statuses = store.run_statuses(run_ids)
        now = time.perf_counter()
        if len(statuses) == len(run_ids) and all(s in TERMINAL for s in statuses.values()):
            failed = [rid for rid, s in statuses.items() if s != "succeeded"]
            if failed:
                raise SystemExit(f"run(s) did not succeed: {failed[:5]}")
            return now
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {len(run_ids)} run(s): {statuses}")
        if time.monotonic() - checked > 1.0:
            procs.check()
            checked = time.monotonic()
        time.sleep(poll_s)


def result_times(store, run_ids: list[str]) -> dict[str, dict]:
    from sqlalchemy import select

    from farm.store.repository import results_t

    c = results_t.c
    stmt = select(c.run_id, c.started_at, c.finished_at, c.recorded_at, c.duration_s).where(
        c.run_id.in_(run_ids))
    with store.engine.connect() as conn:
        return {row.run_id: row._asdict() for row in conn.execute(stmt)}


LOG_LINE = re.compile(r"^\[(?P<at>[\d-]+ [\d:,]+): \w+/\w+\] Task (?P<task>[\w.]+)"
                      r"\[(?P<id>[^\]]+)\] (?P<what>received|succeeded in (?P<s>[\d.e-]+)s)")


def celery_log(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(task name, task id) → {"received": t, "start": t, "end": t} from a worker's log.

    Celery logs "received" when the consumer gets the message, and "succeeded in
    X s" when the task returns (X from the moment the pool started it). Log
    times are local wall clock with millisecond resolution.
    """
    tasks: dict[tuple[str, str], dict[str, float]] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        entry = tasks.setdefault((match["task"], match["id"]), {})
        if match["what"] == "received":
            entry["received"] = at
        else:
            entry["end"] = at
            entry["start"] = at - float(match["s"])
    return tasks


def ms(seconds: float) -> float:
    return 1000.0 * seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5, help="runs not counted (default 5)")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--sample-period-s", type=float, default=0.1)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--keep-logs", action="store_true",
                        help="copy the worker and recorder logs to ./bench-overhead-logs")
    args = parser.parse_args()
    poll_s = args.poll_ms / 1000.0

    from farm import sending
    from farm.store.repository import Store
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep

    print(f"bench_overhead: {args.runs} runs, {args.db}, poll {args.poll_ms:g} ms — {machine()}")
    with temp_dir() as tmp, private_redis() as redis, scratch_db(args.db, tmp) as db_url:
        store = Store.open(db_url, upgrade=True)
        env = {**os.environ, "FARM_BROKER_URL": redis.url, "FARM_DB_URL": db_url,
               "FARM_HOME": str(tmp / ".farm"), "PYTHONUNBUFFERED": "1"}
        procs = Processes(tmp, env)
        try:
            procs.start("recorder", "recorder", "--name", "bench-recorder@local")
            procs.start("worker", "worker", "--sim", SIM_GPU, "--name", "bench-sim@local")

            def sweep(name: str, count: int):
                text = sweep_text(name, count, args.sample_period_s)
                spec = parse_sweep(text)
                runs = expand(spec)
                sid = store.record_sweep(spec, text)
                return store.add_runs(sid, runs)

            # Warm-up: both processes up, imports and first-run paths warm.
            warm = sweep("bench-warmup", args.warmup)
            start = time.perf_counter()
            for run in warm:
                sending.send_runs([run])
                wait_done(store, [run.run_id], 0.05, procs, timeout_s=180)
            print(f"farm up and warm after {time.perf_counter() - start:.1f} s")

            # --- latency: one run at a time
            rows = []
            for run in sweep("bench-latency", args.runs):
                sent_at = datetime.now(UTC)
                sent = time.perf_counter()
                sending.send_runs([run])
                send_done = time.perf_counter()
                seen = wait_done(store, [run.run_id], poll_s, procs)
                seen_at = sent_at.timestamp() + (seen - sent)
                rows.append((run.run_id, sent_at.timestamp(), send_done - sent, seen - sent,
                             seen_at))
            times = result_times(store, [r[0] for r in rows])
            overhead, e2e, duration, send, dispatch, report, commit = ([] for _ in range(7))
            for run_id, sent_ts, send_s, latency_s, seen_ts in rows:
                t = times[run_id]
                overhead.append(ms(latency_s - t["duration_s"]))
                e2e.append(ms(latency_s))
                duration.append(ms(t["duration_s"]))
                send.append(ms(send_s))
                dispatch.append(ms(t["started_at"].timestamp() - sent_ts))
                report.append(ms(t["recorded_at"].timestamp() - t["finished_at"].timestamp()))
                commit.append(ms(seen_ts - t["recorded_at"].timestamp()))

            def line(label, values):
                s = summary(values)
                return (label, s["median"], s["p90"], s["min"], s["max"])

            worker_log = celery_log(procs.tmp / "worker.log")
            recorder_log = celery_log(procs.tmp / "recorder.log")
            detail: dict[str, list[float]] = {}
            for run_id, sent_ts, _, _, seen_ts in rows:
                t = times[run_id]
                task = worker_log.get(("farm.measure", run_id), {})
                record = recorder_log.get(("farm.record", f"record-{run_id}-1"), {})
                if not (len(task) == 3 and len(record) == 3):
                    continue
                steps = {
                    "sent → worker received the message": task["received"] - sent_ts,
                    "received → task started (thread pool)": task["start"] - task["received"],
                    "task start → run_one start (claim, GPU hold, event)":
                        t["started_at"].timestamp() - task["start"],
                    "run_one end → recorder received the result":
                        record["received"] - t["finished_at"].timestamp(),
                    "recorder: received → record task started":
                        record["start"] - record["received"],
                    "recorder: record task (store write + commit)": record["end"] - record["start"],
                    "recorder done → seen by the poller": seen_ts - record["end"],
                    "(beside the path) run_one end → measure task end":
                        task["end"] - t["finished_at"].timestamp(),
                }
                for label, value in steps.items():
                    detail.setdefault(label, []).append(ms(value))

            print()
            print(table(f"one run at a time, {args.runs} runs (ms)",
                        ("", "median", "p90", "min", "max"),
                        [line("OVERHEAD = latency − duration_s", overhead),
                         line("end-to-end latency (sent → seen)", e2e),
                         line("run duration_s (inside run_one)", duration),
                         line("  send_runs() call", send),
                         line("  dispatch: sent → run_one start", dispatch),
                         line("  report: run_one end → recorded_at", report),
                         line("  commit + poll: recorded_at → seen", commit)]))
            if detail:
                print()
                print(table("the overhead step by step, from the Celery logs (ms; log times "
                            "have 1 ms resolution)", ("", "median", "p90", "min", "max"),
                            [line(label, values) for label, values in detail.items()]))

            # --- throughput: all at once
            batch = sweep("bench-throughput", args.runs)
            start = time.perf_counter()
            sending.send_runs(batch)
            done = wait_done(store, [r.run_id for r in batch], max(poll_s, 0.01), procs,
                             timeout_s=600)
            wall = done - start
            times = result_times(store, [r.run_id for r in batch])
            busy = sum(t["duration_s"] for t in times.values())
            print()
            print(table(f"{args.runs} runs sent at once",
                        ("", "value"),
                        [("wall s (send → last seen)", wall),
                         ("runs/s", args.runs / wall),
                         ("sum of run duration_s, s", busy),
                         ("overhead per run, ms ((wall − Σ duration) / runs)",
                          ms((wall - busy) / args.runs))]))
            med = statistics.median(overhead)
            print(f"\ngoal: median overhead < {GOAL_MS:g} ms — "
                  f"{'meets' if med < GOAL_MS else 'MISSES'} ({med:.1f} ms)")
        finally:
            procs.stop()
            store.close()
            if args.keep_logs:
                out = Path.cwd() / "bench-overhead-logs"
                out.mkdir(exist_ok=True)
                for name in procs.procs:
                    (out / f"{name}.log").write_bytes((tmp / f"{name}.log").read_bytes())


if __name__ == "__main__":
    main()
