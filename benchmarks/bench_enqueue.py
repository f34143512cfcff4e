"""Goal 1: expand, store and enqueue a 10,000-run sweep in under 10 s.

End to end, as `farmctl enqueue` does it: parse the TOML → expand into
RunSpecs → Store.record_sweep + add_runs → send one Celery message per run to
a real (private) Redis. Each phase is timed in process on a fresh store and an
empty Redis, `--repeat` times; then `farmctl enqueue` itself runs as a
subprocess for the wall time a user sees (interpreter start and imports
included), on a fresh store, and once more on the same store (nothing new).

    .venv/bin/python benchmarks/bench_enqueue.py [--db sqlite|postgresql] [--runs 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    DB_KINDS,
    machine,
    private_redis,
    redis_client,
    scratch_db,
    sweep_toml,
    table,
    temp_dir,
)

GOAL_S = 10.0


def queued_messages(redis, queues: set[str]) -> int:
    client = redis_client(redis)
    return sum(client.llen(queue) for queue in queues)


def in_process(db_url: str, sweep_path: Path, redis) -> dict[str, float]:
    """One enqueue, phase by phase (the same calls as farm.coordinator.enqueue)."""
    from farm import coordinator, sending
    from farm.store.repository import Store
    from farm.sweep import expand
    from farm.sweep_file import load_sweep

    t = {}
    cpu = time.process_time()
    start = time.perf_counter()
    store = Store.open(db_url, upgrade=True)
    t["open store (migrate empty db)"] = time.perf_counter() - start

    start, cpu = time.perf_counter(), time.process_time()
    spec, text = load_sweep(sweep_path)
    t["parse + validate TOML"] = time.perf_counter() - start

    mark = time.perf_counter()
    runs = expand(spec)
    t["expand"] = time.perf_counter() - mark

    mark = time.perf_counter()
    sid = store.record_sweep(spec, text)
    new = store.add_runs(sid, runs)
    t["store (record_sweep + add_runs)"] = time.perf_counter() - mark

    mark = time.perf_counter()
    coordinator.broker_state().uncancel_sweep(sid)
    sending.send_runs(new)
    t["send (Celery → Redis)"] = time.perf_counter() - mark
    t["total (parse → sent)"] = time.perf_counter() - start
    t["  of which CPU time of this process"] = time.process_time() - cpu

    sent = queued_messages(redis, {r.hardware.queue for r in runs})
    store.close()
    if len(new) != len(runs) or sent != len(runs):
        raise SystemExit(f"expected {len(runs)} new runs and messages, got {len(new)} new "
                         f"and {sent} messages")
    t["_runs"] = len(runs)
    return t


def farmctl_enqueue(db_url: str, sweep_path: Path, redis, cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "FARM_DB_URL": db_url, "FARM_BROKER_URL": redis.url}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "farm.cli", "enqueue", str(sweep_path)],
                          env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"farmctl enqueue exited {proc.returncode}:\n{proc.stderr}")
    return wall, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=DB_KINDS, default="sqlite")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="in-process repetitions, each on a fresh store (default 3)")
    parser.add_argument("--unbatched", action="store_true",
                        help="send one Redis round trip per message, as before kombu "
                             "publish batches were used (in-process phases only)")
    args = parser.parse_args()
    if args.unbatched:
        import contextlib

        from farm import sending

        sending._batched = lambda producer: contextlib.nullcontext()

    print(f"bench_enqueue: {args.db}, ~{args.runs} runs"
          f"{', unbatched sends' if args.unbatched else ''} — {machine()}")
    with temp_dir() as tmp, private_redis() as redis:
        text, count = sweep_toml("bench-enqueue", args.runs)
        sweep_path = tmp / "sweep.toml"
        sweep_path.write_text(text)
        client = redis_client(redis)

        samples: list[dict[str, float]] = []
        for _ in range(args.repeat):
            client.flushall()
            with scratch_db(args.db, tmp) as url:
                samples.append(in_process(url, sweep_path, redis))
        phases = [k for k in samples[0] if not k.startswith("_")]
        rows = [(phase, statistics.median(s[phase] for s in samples),
                 min(s[phase] for s in samples), max(s[phase] for s in samples))
                for phase in phases]
        print()
        print(table(f"in process, {count} runs, {args.db}, median of {args.repeat} "
                    "(fresh store and empty Redis each time)",
                    ("phase", "median s", "min s", "max s"), rows))

        if args.unbatched:
            return
        walls_fresh, walls_again = [], []
        for _ in range(args.repeat):
            client.flushall()
            with scratch_db(args.db, tmp) as url:
                wall, _ = farmctl_enqueue(url, sweep_path, redis, tmp)
                walls_fresh.append(wall)
                wall, out = farmctl_enqueue(url, sweep_path, redis, tmp)
                walls_again.append(wall)
                if "0 run(s) enqueued" not in out:
                    raise SystemExit(f"re-enqueue sent runs again:\n{out}")
        print()
        print(table(f"`farmctl enqueue` subprocess wall time, {count} runs, {args.db}",
                    ("case", "median s", "min s", "max s"),
                    [("fresh store (migrates, stores, sends all)",
                      statistics.median(walls_fresh), min(walls_fresh), max(walls_fresh)),
                     ("same sweep again (nothing new)",
                      statistics.median(walls_again), min(walls_again), max(walls_again))]))
        worst = max(statistics.median(walls_fresh),
                    statistics.median(s["total (parse → sent)"] for s in samples))
        verdict = "meets" if worst < GOAL_S else "MISSES"
        print(f"\ngoal: < {GOAL_S:g} s end to end — {verdict} ({worst:.2f} s)")


if __name__ == "__main__":
    main()
