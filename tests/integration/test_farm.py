"""The farm end to end: real Redis, real Celery worker subprocesses, the real
recorder, SQLite and PostgreSQL. Workers use simulated GPUs (the hardware seam).
"""

from __future__ import annotations

import json
import signal
import textwrap
import time

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.runspec import sweep_id
from tests.integration.farmproc import wait_for

pytestmark = pytest.mark.integration


def sweep_toml(name: str, gpus: str, gpus_per_run: str = "[1]", duration_s: float = 0.3,
               repetitions: int = 1, concurrency: str = "[1, 4]",
               output_tokens: str = "[16]", warmup_s: float = 0.05,
               idle_baseline_s: float = 0.1) -> str:
    return textwrap.dedent(f"""\
        name = "{name}"
        repetitions = {repetitions}

        [[model]]
        id = "tiny-1b"
        source = "org/tiny-1B"

        [hardware]
        gpu = {gpus}
        gpus_per_run = {gpus_per_run}

        [engine]
        kind = "sim"

        [[scenario]]
        kind = "server"
        concurrency = {concurrency}
        duration_s = {duration_s}
        warmup_s = {warmup_s}

        [workload]
        input_tokens = [32]
        output_tokens = {output_tokens}

        [measurement]
        sample_period_s = 0.05
        idle_baseline_s = {idle_baseline_s}
        min_steady_s = 0.1
        """)


def write(farm, name: str, text: str):
    path = farm.tmp / f"{name}.toml"
    path.write_text(text)
    return path


def all_finished(store, run_ids):
    statuses = store.run_statuses(run_ids)
    return all(statuses.get(r) in ("succeeded", "failed", "cancelled") for r in run_ids)


def results_json(farm, sweep: str) -> list[dict]:
    return json.loads(farm.cli("results", sweep, "--format", "json").stdout)["rows"]


def assert_exactly_once(store, runs, load_points_per_run: int):
    counts = store.counts()
    assert counts["results"] == len(runs)
    assert counts["load_points"] == len(runs) * load_points_per_run
    ids = [r.run_id for r in runs]
    assert set(store.run_statuses(ids).values()) == {"succeeded"}
    # Every request of every run recorded once: sum of the per-load-point counts.
    expected_requests = sum(len(store.requests_for(r)) for r in ids)
    assert counts["requests"] == expected_requests


def test_routing_by_gpu_model_and_count(farm, store):
    text = sweep_toml("routing", '["sim:H100-80GB", "sim:L4"]', gpus_per_run="[1, 2]")
    runs = expand(parse_sweep(text))
    farm.recorder()
    farm.worker("h100", "H100-80GBx2")
    farm.worker("l4", "L4x2")
    farm.cli("enqueue", str(write(farm, "routing", text)))
    wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 120, "all runs")
    rows = results_json(farm, "routing")
    assert {r["run_id"] for r in rows} == {r.run_id for r in runs}
    for row in rows:
        assert row["status"] == "succeeded"
        assert row["simulated"] is True
        assert row["worker"].startswith("h100@" if row["gpu_model"] == "h100-80gb" else "l4@")
        assert len(row["gpu_uuids"]) == row["gpu_count"]
        assert all(row["gpu_model"] in uuid for uuid in row["gpu_uuids"])
        assert row["energy_per_output_token_j"] > 0
    assert_exactly_once(store, runs, load_points_per_run=2)


def test_two_gpu_runs_never_share_a_gpu(farm, store):
    """x1 and x2 runs on a 2-GPU host: GPUs held by one run are never given to another."""
    text = sweep_toml("overlap", '["sim:H100-80GB"]', gpus_per_run="[1, 2]", repetitions=3,
                      duration_s=0.4, concurrency="[2]")
    runs = expand(parse_sweep(text))
    farm.recorder()
    farm.worker("h100", "H100-80GBx2")
    farm.cli("enqueue", str(write(farm, "overlap", text)))
    wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 120, "all runs")
    spans = []
    for row in results_json(farm, "overlap"):
        spans += [(uuid, row["started_at"], row["finished_at"]) for uuid in row["gpu_uuids"]]
    for i, (gpu_a, start_a, end_a) in enumerate(spans):
        for gpu_b, start_b, end_b in spans[i + 1:]:
            if gpu_a == gpu_b:
                assert end_a <= start_b or end_b <= start_a, "a GPU ran two runs at once"


def test_sigkill_mid_run_reexecutes_once(farm, store):
    text = sweep_toml("kill", '["sim:H100-80GB"]', duration_s=2.5, repetitions=2,
                      concurrency="[4]")
    runs = expand(parse_sweep(text))
    farm.recorder()
    farm.worker("victim", "H100-80GB")
    farm.cli("enqueue", str(write(farm, "kill", text)))
    wait_for(lambda: "running" in store.run_statuses([r.run_id for r in runs]).values(), 60,
             "a run to start")
    time.sleep(0.5)
    farm.signal("victim", signal.SIGKILL)
    farm.worker("rescuer", "H100-80GB")
    wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 120, "all runs")
    assert_exactly_once(store, runs, load_points_per_run=1)
    rows = results_json(farm, "kill")
    assert {r["worker"].split("@")[0] for r in rows} == {"rescuer"}
    assert max(r["attempts"] for r in rows) >= 2


def test_recorder_killed_and_restarted(farm, store):
    text = sweep_toml("recorder", '["sim:L4"]', duration_s=0.2, repetitions=6,
                      concurrency="[2]")
    runs = expand(parse_sweep(text))
    farm.recorder("rec1")
    farm.worker("l4", "L4")
    farm.cli("enqueue", str(write(farm, "recorder", text)))
    wait_for(lambda: "succeeded" in store.run_statuses([r.run_id for r in runs]).values(), 60,
             "a first result")
    farm.signal("rec1", signal.SIGKILL)
    time.sleep(2.0)   # results keep arriving in Redis while no recorder runs
    farm.recorder("rec2")
    wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 120, "all runs")
    time.sleep(1.0)   # let any redelivered duplicate arrive
    assert_exactly_once(store, runs, load_points_per_run=1)


def test_enqueue_twice_adds_nothing(farm, store):
    text = sweep_toml("twice", '["sim:L4"]', duration_s=0.2, repetitions=2)
    runs = expand(parse_sweep(text))
    path = str(write(farm, "twice", text))
    farm.recorder()
    farm.worker("l4", "L4")
    first = farm.cli("enqueue", path)
    assert "2 run(s) enqueued" in first.stdout
    second = farm.cli("enqueue", path)
    assert "0 run(s) enqueued, 2 already known" in second.stdout
    wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 60, "all runs")
    third = farm.cli("enqueue", path)
    assert "0 run(s) enqueued" in third.stdout
    time.sleep(1.0)
    assert_exactly_once(store, runs, load_points_per_run=2)


def test_sigterm_hands_the_run_back_within_seconds(farm, store):
    text = sweep_toml("term", '["sim:H100-80GB"]', duration_s=30, concurrency="[4]")
    runs = expand(parse_sweep(text))
    run_id = runs[0].run_id
    farm.recorder()
    farm.worker("planned", "H100-80GB")
    farm.cli("enqueue", str(write(farm, "term", text)))
    wait_for(lambda: store.run_statuses([run_id]).get(run_id) == "running", 60, "run start")
    time.sleep(0.5)
    stopped_at = time.monotonic()
    farm.signal("planned", signal.SIGTERM)
    farm.procs["planned"].wait(timeout=20)
    assert time.monotonic() - stopped_at < 10
    # The message is back on its queue at once, not after the visibility timeout.
    from tasks.broker_state import redis_client

    client = redis_client(farm.broker_url)
    wait_for(lambda: client.llen(runs[0].hardware.queue) == 1, 5, "the run back on its queue")
    # The store says so too (the worker's "requeued" event), and nothing was recorded.
    wait_for(lambda: store.run_statuses([run_id])[run_id] == "queued", 10, "status queued")
    assert store.counts()["results"] == 0


def test_cancel_and_retry(farm, store):
    text = sweep_toml("cancel", '["sim:L4"]', duration_s=0.2, repetitions=3)
    runs = expand(parse_sweep(text))
    ids = [r.run_id for r in runs]
    farm.recorder()
    farm.cli("enqueue", str(write(farm, "cancel", text)))   # no worker yet: all stay queued
    out = farm.cli("cancel", "cancel").stdout
    assert "3 queued run(s) cancelled" in out
    farm.worker("l4", "L4")
    time.sleep(3)
    assert set(store.run_statuses(ids).values()) == {"cancelled"}
    assert store.counts()["results"] == 0
    farm.cli("retry", "cancel")
    wait_for(lambda: set(store.run_statuses(ids).values()) == {"succeeded"}, 60, "retried runs")
    assert store.counts()["results"] == 3


def test_status_and_workers_views(farm, store):
    text = sweep_toml("views", '["sim:L4"]', duration_s=0.2)
    farm.recorder()
    farm.worker("l4", "L4x2")
    farm.cli("enqueue", str(write(farm, "views", text)))
    workers = wait_for(lambda: json.loads(farm.cli("workers", "--json").stdout), 30, "workers")
    assert workers[0]["name"] == "l4@test"
    assert workers[0]["queues"] == ["sim.l4.x1", "sim.l4.x2"]
    assert len(workers[0]["gpus"]) == 2
    runs = expand(parse_sweep(text))
    wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 60, "all runs")
    status = farm.cli("status", "views").stdout
    assert "sim.l4.x1" in status and "100%" in status
    overall = farm.cli("status").stdout
    assert "views" in overall
    assert sweep_id("views") in farm.cli("sweeps").stdout


def test_a_run_the_worker_cannot_read_fails_with_the_reason(farm, store):
    from farm_contract.settings import Settings
    from tasks.app import MEASURE_TASK, create_app
    from tasks.broker_state import redis_client

    text = sweep_toml("unreadable", '["sim:L4"]', duration_s=0.2)
    run = expand(parse_sweep(text))[0]
    farm.recorder()
    farm.cli("enqueue", str(write(farm, "unreadable", text)))   # no worker yet
    redis_client(farm.broker_url).delete(run.hardware.queue)    # as if a newer coordinator
    newer = json.loads(run.canonical_json()) | {"schema_version": 2, "new_field": True}
    create_app(Settings(broker_url=farm.broker_url)).send_task(
        MEASURE_TASK, args=[json.dumps(newer)], task_id=run.run_id, queue=run.hardware.queue)
    farm.worker("l4", "L4")
    wait_for(lambda: store.run_statuses([run.run_id])[run.run_id] == "failed", 60, "failure")
    row = results_json(farm, "unreadable")[0]
    assert "cannot read the run" in row["error"]


def test_a_run_handed_back_at_sigterm_keeps_its_turn(farm, store):
    # Two runs for one GPU: the worker takes the first, the second waits. Handed
    # back at SIGTERM, the first goes to the head of the queue (the end the next
    # BRPOP takes), as the reaper puts runs back, not behind the waiting one.
    text = sweep_toml("turn", '["sim:H100-80GB"]', duration_s=30, concurrency="[4]",
                      repetitions=2)
    runs = expand(parse_sweep(text))
    farm.recorder()
    farm.worker("turn", "H100-80GB")
    farm.cli("enqueue", str(write(farm, "turn", text)))
    ids = [r.run_id for r in runs]
    running = wait_for(lambda: [i for i, s in store.run_statuses(ids).items() if s == "running"],
                       60, "a run start")
    time.sleep(0.5)
    farm.signal("turn", signal.SIGTERM)
    farm.procs["turn"].wait(timeout=20)
    from tasks.broker_state import redis_client

    client = redis_client(farm.broker_url)
    queue = runs[0].hardware.queue
    wait_for(lambda: client.llen(queue) == 2, 5, "both runs on the queue")
    next_up = json.loads(client.lindex(queue, -1))["headers"]["id"]
    assert next_up == running[0]
