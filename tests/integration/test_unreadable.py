"""No silent death: entries nobody can read are parked and the processes carry on;
when Celery does stop on an error, the process exits non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import redis

from farm.store import Store
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.settings import Settings
from tasks.app import create_app
from tests.integration.farmproc import ROOT, Farm, wait_for
from tests.integration.test_farm import all_finished, sweep_toml, write

pytestmark = pytest.mark.integration

GARBAGE = ["this is not json", '{"a": 1}', "42"]


def _client(broker_url: str) -> redis.Redis:
    from tasks.broker_state import redis_client

    return redis_client(broker_url)


@pytest.fixture
def sqlite_farm(tmp_path, broker_url):
    url = f"sqlite:///{tmp_path}/farm.db"
    Store.open(url, upgrade=True).close()
    farm = Farm(tmp_path, broker_url, url)
    try:
        yield farm
    finally:
        farm.stop_all()


def test_raw_garbage_on_a_run_queue_is_parked_and_the_worker_carries_on(sqlite_farm):
    farm = sqlite_farm
    r = _client(farm.broker_url)
    worker = farm.worker("w1", "H100")
    wait_for(lambda: "ready" in farm.log("w1"), 60, "the worker to be ready")
    r.lpush("sim.h100-80gb.x1", *GARBAGE)
    parked = wait_for(lambda: r.llen("farm:unreadable") == 3 and r.lrange("farm:unreadable", 0, -1),
                      30, "three parked entries")
    entries = [json.loads(p) for p in parked]
    assert {e["payload"] for e in entries} == set(GARBAGE)
    assert {e["queue"] for e in entries} == {"sim.h100-80gb.x1"}
    reasons = sorted(e["reason"] for e in entries)
    assert reasons[0].startswith("not JSON")
    assert "not a message envelope (a JSON int)" in reasons
    assert worker.poll() is None, farm.log("w1")
    status = farm.cli("status")
    assert "3 unreadable message(s) parked in farm:unreadable" in status.stdout


def test_garbage_on_the_record_queue_is_parked_and_the_recorder_carries_on(sqlite_farm):
    farm = sqlite_farm
    r = _client(farm.broker_url)
    recorder = farm.recorder()
    wait_for(lambda: "ready" in farm.log("recorder"), 60, "the recorder to be ready")
    r.lpush("farm.record", "not json at all")
    wait_for(lambda: r.llen("farm:unreadable") == 1, 30, "the parked entry")
    assert json.loads(r.lindex("farm:unreadable", 0))["queue"] == "farm.record"
    assert recorder.poll() is None, farm.log("recorder")


def test_a_worker_stopped_by_an_unrecoverable_error_exits_non_zero(broker_url):
    # kombu's own Redis transport (no parking) dies on a raw entry: Celery calls it
    # an unrecoverable error. run_worker must hand that status back, not 0.
    redis_client = _client(broker_url)
    redis_client.lpush("plain.queue", "this is not json")
    code = textwrap.dedent(f"""
        import sys
        from farm_contract.settings import load_settings
        from tasks.app import create_app, run_worker
        app = create_app(load_settings())
        app.conf.broker_transport = None       # kombu's plain Redis transport
        app.conf.broker_url = {broker_url!r}
        sys.exit(run_worker(app, hostname="plain@test", queues=["plain.queue"], pool="solo"))
    """)
    env = {"FARM_BROKER_URL": broker_url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Unrecoverable error" in proc.stderr


def test_unregistered_task_names_are_parked_and_the_farm_carries_on(sqlite_farm):
    # Celery logs "Received unregistered task" and acks: the message would be gone.
    farm = sqlite_farm
    r = _client(farm.broker_url)
    worker, recorder = farm.worker("w1", "H100"), farm.recorder()
    wait_for(lambda: "ready" in farm.log("w1") and "ready" in farm.log("recorder"), 60,
             "the worker and the recorder to be ready")
    app = create_app(Settings(broker_url=farm.broker_url))
    app.send_task("farm.measure_v2", args=["{}"], queue="sim.h100-80gb.x1")
    app.send_task("farm.record_v2", args=["{}"], queue="farm.record")
    parked = wait_for(lambda: r.llen("farm:unreadable") == 2 and r.lrange("farm:unreadable", 0, -1),
                      30, "two parked messages")
    entries = {e["task"]: e for e in map(json.loads, parked)}
    assert entries["farm.measure_v2"]["queue"] == "sim.h100-80gb.x1"
    assert entries["farm.record_v2"]["queue"] == "farm.record"
    for name, entry in entries.items():
        assert entry["reason"] == f"unregistered task {name!r}"
        assert json.loads(entry["payload"])["headers"]["task"] == name   # enough to re-send it
    assert "2 unreadable message(s) parked in farm:unreadable" in farm.cli("status").stdout

    # Both carry on: a real run after them is measured and recorded.
    text = sweep_toml("after", '["sim:H100"]')
    farm.cli("enqueue", str(write(farm, "after", text)))
    runs = expand(parse_sweep(text))
    with Store.open(farm.db_url) as store:
        wait_for(lambda: all_finished(store, [r.run_id for r in runs]), 60, "the runs after")
        assert set(store.run_statuses([r.run_id for r in runs]).values()) == {"succeeded"}
    assert worker.poll() is None and recorder.poll() is None
