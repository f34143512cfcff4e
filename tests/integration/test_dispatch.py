"""The dispatcher against real Redis and real farmctl processes: an enqueue puts
only a queue's depth of messages on it, the recorder's dispatcher tops the queue
up as messages are taken, no run is sent twice in normal operation, and a
dispatcher killed between send and mark loses nothing (the re-send is harmless)."""

from __future__ import annotations

import time

import pytest

from farm.dispatch import MIN_DEPTH, dispatch_once
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.settings import Settings
from tasks.app import MEASURE_TASK, create_app
from tasks.broker_state import BrokerState, redis_client
from tests.integration.farmproc import wait_for
from tests.integration.test_farm import assert_exactly_once, sweep_toml, write

pytestmark = pytest.mark.integration


def take(conn, queue: str, timeout_s: float):
    """One message off `queue` through kombu (as a worker takes it), acked; its task id."""
    simple = conn.SimpleQueue(queue)
    try:
        message = simple.get(block=True, timeout=timeout_s)
        message.ack()
        return message.headers["id"]
    finally:
        simple.close()


@pytest.mark.slow
def test_enqueue_sends_a_queues_depth_and_the_recorder_feeds_the_rest(farm, store):
    text = sweep_toml("feed", '["sim:L4"]', output_tokens="[16, 17]", repetitions=25)
    runs = expand(parse_sweep(text))
    assert len(runs) == 50
    queue = runs[0].hardware.queue
    client = redis_client(farm.broker_url)
    farm.env["FARM_OWNER"] = "alice"      # the configured identity: the sweep is alice's
    out = farm.cli("enqueue", str(write(farm, "feed", text))).stdout
    # No worker advertised: the depth is MIN_DEPTH; the rest wait in the store.
    assert f"{MIN_DEPTH} message(s) put on GPU queues now" in out
    assert "owner alice, priority 0" in out
    assert client.llen(queue) == MIN_DEPTH
    assert len(store.undispatched_ids()) == 50 - MIN_DEPTH
    time.sleep(2)                       # no recorder yet: nobody sends more
    assert client.llen(queue) == MIN_DEPTH

    # This test's consumer acks runs without running them: after the grace the
    # lost-run check would rightly send them again (farm/lost_runs.py).
    farm.env["FARM_REAPER_GRACE_S"] = "600"
    farm.recorder()
    taken: list[str] = []
    with create_app(Settings(broker_url=farm.broker_url)).connection_for_read() as conn:
        while len(taken) < 50:
            taken.append(take(conn, queue, timeout_s=15))
            assert client.llen(queue) <= MIN_DEPTH      # never more than the depth
        time.sleep(3)                    # the dispatcher has nothing left to send
        assert client.llen(queue) == 0
    assert sorted(taken) == sorted(r.run_id for r in runs)     # each run sent once
    assert store.undispatched_ids() == []
    owners = farm.cli("status").stdout
    assert "alice" in owners and "owners" in owners


def test_a_dispatcher_killed_between_send_and_mark_loses_nothing(farm, store):
    text = sweep_toml("crash", '["sim:L4"]', duration_s=0.2, repetitions=3)
    spec = parse_sweep(text)
    runs = expand(spec)
    sid = store.record_sweep(spec, text, owner="bob")
    store.add_runs(sid, runs)
    app = create_app(Settings(broker_url=farm.broker_url))

    def send_then_die(batch):
        for run in batch:
            app.send_task(MEASURE_TASK, args=[run.to_json()], task_id=run.run_id,
                          queue=run.hardware.queue)
        raise RuntimeError("killed after the send, before the mark")

    state = BrokerState(redis_client(farm.broker_url))
    with pytest.raises(RuntimeError, match="before the mark"):
        dispatch_once(store, state, send=send_then_die)
    queue = runs[0].hardware.queue
    assert state.queue_length(queue) == 3
    assert len(store.undispatched_ids(sid)) == 3          # still to send, never lost
    assert state.acquire_lease("someone-else", 5)           # the lease was let go
    state.release_lease("someone-else")

    # The recorder's dispatcher counts the three messages as waiting (depth 4: it
    # sends one duplicate now) and sends the other two as the worker takes them.
    farm.recorder()
    wait_for(lambda: len(store.undispatched_ids(sid)) == 2, 15, "one re-send")
    assert state.queue_length(queue) == MIN_DEPTH
    farm.worker("l4", "L4")
    wait_for(lambda: set(store.run_statuses([r.run_id for r in runs]).values())
             == {"succeeded"}, 90, "every run")
    wait_for(lambda: store.undispatched_ids(sid) == [], 15, "every re-send")
    wait_for(lambda: state.queue_length(queue) == 0, 30, "the duplicates taken")
    time.sleep(1.0)
    assert_exactly_once(store, runs, load_points_per_run=2)
