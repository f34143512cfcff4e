"""Fair share: does a 10-run sweep wait behind a 5,000-run one?

Owner A enqueues a 5,000-run sweep; shortly after, owner B enqueues 10 runs on
the same GPU queue. N consumer threads stand for the GPU slots: a FAKE GPU
WORKER at the hardware seam (no Celery worker, no engine): each takes a message
from the real Redis queue through kombu (the Celery app's own connection and
transport), marks the run started in the store (Store.mark_started), "runs" for
20–50 ms, records a result (Store.record_result, the recorder's upsert) and acks.
The store is SQLite in a temp dir; Redis is private (farm.embedded.PrivateRedis).

Two modes, same runs and slots:
- dispatcher: `farm.coordinator.enqueue` (one dispatch pass) and the
  dispatcher loop the recorder runs (farm.dispatch.serve_forever), its period
  shortened to --period-s because these runs last milliseconds, not minutes;
- fifo: every run sent at enqueue (`send_runs`, the farm before the dispatcher).

Prints B's 10 runs' completion (from B's enqueue to its last result) as a
percentage of A's total time (from A's enqueue to A's last result), per mode.

    .venv/bin/python benchmarks/fair_share.py [--runs 5000] [--slots 8]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from datetime import UTC, datetime

from _common import machine, private_redis, redis_client, scratch_db, temp_dir

FAKE = "FAKE GPU WORKER (hardware seam: consumer threads, no engine)"


def sweep(name: str, runs: int) -> str:
    """A sim sweep of exactly `runs` runs on sim:H100 (input lengths × repetitions)."""
    inputs = min(runs, 50)
    if runs % inputs:
        raise SystemExit(f"--runs must be a multiple of {inputs}")
    return f"""
name = "{name}"
repetitions = {runs // inputs}
[[model]]
id = "tiny-llama-1B"
source = "local/tiny"
[hardware]
gpu = "sim:H100"
[engine]
kind = "sim"
[[scenario]]
kind = "batch"
num_prompts = 4
[workload]
input_tokens = [{", ".join(str(8 + i) for i in range(inputs))}]
output_tokens = [16]
"""


def consume(app, store, queue: str, stop: threading.Event, finished: dict, lock,
            slot: int) -> None:
    """One GPU slot of the fake worker: take, start, run, record, ack."""
    from farm_contract.records import RunEvent
    from farm_contract.runspec import RunSpec
    from tests import factories

    rng = random.Random(slot)
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue)
        try:
            while not stop.is_set():
                try:
                    message = simple.get(block=True, timeout=0.5)
                except simple.Empty:
                    continue
                run = RunSpec.model_validate_json(message.payload[0][0])
                started = datetime.now(UTC)
                store.mark_started(RunEvent(run_id=run.run_id, kind="started", attempt=1,
                                            worker=factories.worker(f"fake-gpu@{slot}"),
                                            gpu_uuids=[f"GPU-fake-{slot}"], at=started))
                time.sleep(rng.uniform(0.020, 0.050))
                done = datetime.now(UTC)
                result = factories.result(run, started_at=started, per_point=1,
                                          with_host_energy=False, extra_series=False)
                store.record_result(result.model_copy(update={
                    "finished_at": done, "duration_s": (done - started).total_seconds()}))
                message.ack()
                with lock:
                    finished.setdefault(run.run_id, time.monotonic())
        finally:
            simple.close()


def one_mode(mode: str, url: str, runs_a: int, slots: int, period_s: float,
             b_after_s: float) -> dict:
    from farm import coordinator, sending
    from farm.dispatch import serve_forever
    from farm.store.repository import Store
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep
    from farm_contract.settings import load_settings
    from tasks.app import app
    from tasks.broker_state import BrokerState
    from tasks.broker_state import redis_client as client_for

    store = Store.open(url, upgrade=True)
    state = BrokerState(client_for(load_settings().broker_url))
    text_a, text_b = sweep("big-A", runs_a), sweep("small-B", 10)
    spec_a, spec_b = parse_sweep(text_a), parse_sweep(text_b)
    ids_a = {r.run_id for r in expand(spec_a)}
    ids_b = {r.run_id for r in expand(spec_b)}
    queue = expand(spec_b)[0].hardware.queue
    # The fake worker's advertisement: its slots set the dispatcher's depth (2 × slots).
    state.advertise("fake-gpu-worker", {
        "name": "fake-gpu-worker", "queues": [queue],
        "gpus": [{"model": queue.split(".")[1], "index": i} for i in range(slots)]}, 3600)

    def enqueue(spec, text, owner) -> float:
        at = time.monotonic()
        if mode == "dispatcher":
            coordinator.enqueue(store, spec, text, owner=owner)
        else:
            sid = store.record_sweep(spec, text, owner=owner)
            new = store.add_runs(sid, expand(spec))
            sending.send_runs(new)
            store.mark_dispatched([r.run_id for r in new])
        return at

    stop, lock, finished = threading.Event(), threading.Lock(), {}
    threads = [threading.Thread(target=consume, args=(app, store, queue, stop, finished, lock, i),
                                daemon=True) for i in range(slots)]
    if mode == "dispatcher":
        threads.append(threading.Thread(target=serve_forever, daemon=True,
                                        args=(lambda: store, state, stop, period_s)))
    t_a = enqueue(spec_a, text_a, "A")
    for thread in threads:
        thread.start()
    time.sleep(b_after_s)
    t_b = enqueue(spec_b, text_b, "B")
    while True:
        with lock:
            if len(finished) >= len(ids_a) + len(ids_b):
                break
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    counts = store.counts()
    statuses = set(store.run_statuses(list(ids_a | ids_b)).values())
    store.close()
    a_total = max(finished[r] for r in ids_a) - t_a
    b_last = max(finished[r] for r in ids_b)
    # Load-independent too: A's runs that finished between B's enqueue and B's last.
    a_between = sum(1 for r in ids_a if t_b <= finished[r] <= b_last)
    return {"mode": mode, "a_total_s": a_total, "b_done_s": b_last - t_b,
            "b_pct": 100 * (b_last - t_b) / a_total, "a_between": a_between,
            "results": counts["results"],
            "statuses": statuses, "runs": len(ids_a) + len(ids_b)}


def main() -> None:
    """Both modes, one after the other, each on a fresh store and a flushed Redis."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs of A's sweep")
    parser.add_argument("--slots", type=int, default=8, help="GPU slots of the fake worker")
    parser.add_argument("--period-s", type=float, default=0.05,
                        help="dispatcher period (the recorder uses 1 s for minute-long runs)")
    parser.add_argument("--b-after-s", type=float, default=2.0,
                        help="seconds after A's enqueue that B enqueues")
    args = parser.parse_args()
    print(machine())
    print(f"{FAKE}: {args.slots} slots, runs of 20–50 ms; A: {args.runs} runs, B: 10 runs "
          f"enqueued {args.b_after_s:g} s after A; SQLite store")
    rows = []
    with temp_dir() as tmp, private_redis() as redis:
        for mode in ("dispatcher", "fifo"):
            redis_client(redis).flushall()
            with scratch_db("sqlite", tmp) as url:
                row = one_mode(mode, url, args.runs, args.slots, args.period_s, args.b_after_s)
            assert row["results"] == row["runs"] and row["statuses"] == {"succeeded"}, row
            rows.append(row)
            print(f"{mode:>10}: A's total {row['a_total_s']:.1f} s; B's 10 runs done "
                  f"{row['b_done_s']:.2f} s after B's enqueue = {row['b_pct']:.2f} % of A's "
                  f"time ({row['a_between']} of A's runs finished meanwhile); "
                  f"{row['results']} results for {row['runs']} runs, all succeeded",
                  flush=True)


if __name__ == "__main__":
    main()
