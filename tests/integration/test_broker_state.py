"""The reaper and run bookkeeping against a real Redis and real kombu consumers."""

from __future__ import annotations

import pytest
from kombu import Connection

from farm_contract.settings import Settings
from tasks.app import MEASURE_TASK, create_app
from tasks.broker_state import BrokerState, redis_client

pytestmark = pytest.mark.integration
QUEUE = "sim.h100-80gb.x1"


def test_reaper_restores_only_messages_nobody_holds(broker_url):
    app = create_app(Settings(broker_url=broker_url))
    for task_id in ("run-a", "run-b"):
        app.send_task(MEASURE_TASK, args=["{}"], task_id=task_id, queue=QUEUE)
    client = redis_client(broker_url)
    state = BrokerState(client)
    with Connection(broker_url) as conn:
        queue = conn.SimpleQueue(QUEUE)
        taken = [queue.get(timeout=5), queue.get(timeout=5)]   # delivered, never acked
        assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 2
        assert state.claim("run-a", "alive@host", ttl_s=30)
        assert state.reap_orphans(grace_s=60) == []             # too recent
        assert state.reap_orphans(grace_s=0) == ["run-b"]       # run-a is claimed
        assert client.llen(QUEUE) == 1 and client.hlen("unacked") == 1
        assert state.reap_orphans(grace_s=0) == []              # idempotent
        restored = queue.get(timeout=5)
        assert restored.headers["id"] == "run-b"
        assert restored.headers.get("redelivered") is True
        for message in taken + [restored]:
            message.ack()
        queue.close()


def test_reaper_leaves_retries_waiting_for_their_eta(broker_url):
    from datetime import UTC, datetime, timedelta

    app = create_app(Settings(broker_url=broker_url))
    app.send_task(MEASURE_TASK, args=["{}"], task_id="later", queue=QUEUE,
                  eta=datetime.now(UTC) + timedelta(seconds=120))
    state = BrokerState(redis_client(broker_url))
    with Connection(broker_url) as conn:
        queue = conn.SimpleQueue(QUEUE)
        held = queue.get(timeout=5)
        assert state.reap_orphans(grace_s=0) == []       # a live worker waits for the ETA
        held.ack()
        queue.close()


def test_a_lapsed_claim_is_taken_back_by_its_holder(broker_url):
    state = BrokerState(redis_client(broker_url))
    assert state.claim("r2", "w1", ttl_s=0.2)
    state.r.delete("farm:claim:r2")                      # e.g. Redis lost it
    assert state.refresh_claim("r2", "w1", ttl_s=5)
    assert state.is_claimed("r2")
    assert not state.refresh_claim("r2", "w2", ttl_s=5)  # w1 holds it now


def test_claims_are_exclusive_and_expire(broker_url):
    state = BrokerState(redis_client(broker_url))
    assert state.claim("r1", "w1", ttl_s=0.3)
    assert state.claim("r1", "w1", ttl_s=0.3)        # re-entrant for the holder
    assert not state.claim("r1", "w2", ttl_s=0.3)
    state.refresh_claim("r1", "w2", ttl_s=10)        # not w2's: no effect
    import time

    time.sleep(0.5)
    assert not state.is_claimed("r1")
    assert state.claim("r1", "w2", ttl_s=5)
    state.release("r1", "w1")                        # not w1's any more
    assert state.is_claimed("r1")


def test_attempts_done_markers_and_cancellation(broker_url):
    state = BrokerState(redis_client(broker_url))
    assert [state.next_attempt("r") for _ in range(3)] == [1, 2, 3]
    assert not state.is_done("r")
    state.mark_done("r")
    assert state.is_done("r")
    state.cancel_sweep("s1")
    assert state.is_cancelled("s1") and not state.is_cancelled("s2")
    state.uncancel_sweep("s1")
    assert not state.is_cancelled("s1")


def test_a_running_run_the_broker_no_longer_holds_is_handed_back(broker_url, tmp_path):
    """farm.lost_runs: only a run with no claim, no done marker, no message and no
    result on its way goes back to queued, and only once unheld for the grace."""
    from farm.lost_runs import LostRuns
    from farm.store import Store
    from tasks.app import RECORD_TASK
    from tests import factories

    spec, toml, runs = factories.sweep()
    lost, claimed, waiting, recording = (r.run_id for r in runs[:4])
    app = create_app(Settings(broker_url=broker_url))
    state = BrokerState(redis_client(broker_url))
    clock = [1000.0]
    check = LostRuns(grace_s=5, clock=lambda: clock[0])
    with Store.open(f"sqlite:///{tmp_path / 'farm.db'}", upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, toml), runs)
        for run_id in (lost, claimed, waiting, recording):   # started long ago
            store.mark_started(factories.event(run_id))
        state.claim(claimed, "alive@host", ttl_s=60)
        app.send_task(MEASURE_TASK, args=["{}"], task_id=waiting, queue=runs[2].hardware.queue)
        app.send_task(RECORD_TASK, args=["{}"], task_id=f"record-{recording}-1")
        assert check.check(store, state) == []        # first seen unheld: wait the grace
        clock[0] += 4
        assert check.check(store, state) == []
        clock[0] += 1
        assert check.check(store, state) == [lost]
        statuses = store.run_statuses([lost, claimed, waiting, recording])
        assert statuses == {lost: "queued", claimed: "running", waiting: "running",
                            recording: "running"}
        assert store.dispatch_backlog(None)            # the dispatcher sends it again
        clock[0] += 10
        assert check.check(store, state) == []         # queued, undispatched: not in flight


def test_a_local_runs_lost_run_check_leaves_other_sweeps_alone(broker_url, tmp_path):
    """`farmctl run` on a shared store: its recorder's private broker holds nothing of
    the farm's sweeps, whose running runs are not lost for that (audit, 2026-12-08)."""
    from farm.lost_runs import LostRuns
    from farm.store import Store
    from farm_contract.runspec import sweep_id
    from tests import factories

    farms, local = factories.sweep(), factories.sweep(factories.SMALL_SWEEP.replace(
        'name = "', 'name = "local-', 1))
    state = BrokerState(redis_client(broker_url))
    clock = [1000.0]
    check = LostRuns(grace_s=5, clock=lambda: clock[0], sweep_id=sweep_id(local[0].name))
    with Store.open(f"sqlite:///{tmp_path / 'farm.db'}", upgrade=True) as store:
        for spec, toml, runs in (farms, local):
            store.add_runs(store.record_sweep(spec, toml), runs[:1])
            store.mark_started(factories.event(runs[0].run_id))
        assert check.check(store, state) == []
        clock[0] += 10
        assert check.check(store, state) == [local[2][0].run_id]      # its own, only
        assert store.run_statuses([farms[2][0].run_id]) == {farms[2][0].run_id: "running"}


def test_a_run_whose_result_was_refused_is_failed_not_handed_back(broker_url, tmp_path):
    """A result refused for its signature is parked and the done marker dropped; the
    run is failed meanwhile, or the lost-run check sends it to be measured (and
    refused) again, round after round (audit, 2026-12-08)."""
    from farm import recorder
    from farm.lost_runs import LostRuns
    from farm.store import Store
    from tests import factories

    spec, toml, runs = factories.sweep()
    refused, measured = runs[0].run_id, runs[1].run_id
    state = BrokerState(redis_client(broker_url))
    clock = [1000.0]
    check = LostRuns(grace_s=5, clock=lambda: clock[0])
    url = f"sqlite:///{tmp_path / 'farm.db'}"
    with Store.open(url, upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, toml), runs)
        for run_id in (refused, measured):
            store.mark_started(factories.event(run_id))
        store.record_result(factories.result(runs[1]))
        env = {"FARM_BROKER_URL": broker_url, "FARM_DB_URL": url}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            patch.setattr(recorder, "_store", None, raising=False)
            state.mark_done(refused)
            recorder.forget_done(refused, "unsigned")
            recorder.forget_done(measured, "unsigned")     # a late forgery: a result is kept
        assert not state.is_done(refused)
        statuses = store.run_statuses([refused, measured])
        assert statuses == {refused: "failed", measured: "succeeded"}
        clock[0] += 10
        assert check.check(store, state) == [] and check.check(store, state) == []
    import sqlite3

    with sqlite3.connect(tmp_path / "farm.db") as con:
        (error,) = con.execute("SELECT error FROM runs WHERE id = ?", (refused,)).fetchone()
    assert "refused (unsigned)" in error and "farmctl retry" in error


def test_credentials_are_refused_only_by_a_broker_that_refuses_them(broker_url, tmp_path):
    import subprocess

    from tasks.broker_state import credentials_refused
    from tests.integration.farmproc import wait_for

    assert credentials_refused(broker_url) is None                 # open: nothing to say
    assert credentials_refused("redis://127.0.0.1:1/0") is None     # unreachable: Celery waits
    sock = tmp_path / "auth.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock),
                               "--requirepass", "sekrit", "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 10, "redis-server's socket")
        assert "FARM_BROKER_URL" in credentials_refused(f"redis+socket://{sock}")
        assert credentials_refused(f"redis+socket://:sekrit@{sock}") is None
    finally:
        server.terminate()
        server.wait()


def test_a_result_only_spooled_leaves_the_run_not_done(broker_url, tmp_path, monkeypatch):
    """The worker stopping while the broker refuses the result: it goes to the host's
    spool, and the run gets no done marker, or it would count as held for good (and
    every retry skip it) should the host never come back to send it."""
    import threading

    import tasks.measure as measure
    from farm_contract.settings import load_settings
    from tests import factories

    monkeypatch.setenv("FARM_BROKER_URL", broker_url)
    monkeypatch.setenv("FARM_SPOOL_DIR", str(tmp_path / "spool"))
    _, _, runs = factories.sweep()
    run = runs[0]
    state = BrokerState(redis_client(broker_url))
    ctx = measure.WorkerContext(inventory=None, allocator=None, state=state,
                                settings=load_settings(), node_name="w@h",
                                abort=threading.Event())
    monkeypatch.setattr(measure, "_ctx", ctx)

    def measured_as_the_worker_stops(task, ctx_, run_, attempt, guard):
        ctx_.abort.set()
        return factories.result(run_, attempt=attempt)

    def broker_refuses(payload, task_id):
        raise ConnectionError("publish failed")

    monkeypatch.setattr(measure, "_measure", measured_as_the_worker_stops)
    monkeypatch.setattr(measure, "_send_record", broker_refuses)
    measure.measure.push_request(id=run.run_id, delivery_info={"routing_key": run.hardware.queue})
    try:
        assert measure.measure.run(run.to_json()) == "succeeded"
    finally:
        measure.measure.pop_request()
    assert list((tmp_path / "spool").iterdir())         # kept on the host
    assert not state.is_done(run.run_id)
    assert state.unheld([run.run_id]) == [run.run_id]   # the lost-run check can act
