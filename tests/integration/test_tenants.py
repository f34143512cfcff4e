"""A shared GPU pool: another tenant on a worker's GPU (simulated through the sim
GPU's tenant file, `FARM_SIM_TENANTS`), with real Redis, a real Celery worker
subprocess, the real recorder and store."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tasks.broker_state import redis_client
from tests.integration.farmproc import wait_for
from tests.integration.test_farm import sweep_toml, write

pytestmark = pytest.mark.integration

SETTLE_S = 3.0
TENANT = 4_242_424      # a pid no process has: simulated


def _tenant_farm(farm):
    tenants = farm.tmp / "tenants.json"
    farm.env.update({"FARM_SIM_TENANTS": str(tenants), "FARM_GPU_SETTLE_S": str(SETTLE_S)})
    return tenants


def _states(farm) -> dict[str, dict]:
    workers = json.loads(farm.cli("workers", "--json").stdout)
    return {s["uuid"]: s for w in workers for s in w.get("gpu_states", [])}


def _attempts(farm, run_id: str) -> int:
    from tasks.broker_state import ATTEMPTS

    return int(redis_client(farm.broker_url).get(f"{ATTEMPTS}{run_id}") or 0)


def _epoch(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


@pytest.mark.slow
def test_a_tenant_stops_the_queue_without_charging_attempts_and_runs_resume(farm, store):
    tenants = _tenant_farm(farm)
    farm.recorder()
    farm.worker("shared", "L4")
    uuid = wait_for(lambda: next(iter(_states(farm)), None), 60, "the worker's advertisement")
    tenants.write_text(json.dumps({uuid: [TENANT]}))
    wait_for(lambda: _states(farm)[uuid]["state"] == "held", 30, "the GPU seen held")
    assert f"held by pid {TENANT}" in farm.cli("workers").stdout

    text = sweep_toml("shared", '["sim:L4"]', duration_s=0.2, repetitions=2)
    runs = expand(parse_sweep(text))
    ids = [r.run_id for r in runs]
    farm.cli("enqueue", str(write(farm, "shared", text)))
    queue = runs[0].hardware.queue
    client = redis_client(farm.broker_url)
    time.sleep(6)
    # Not consumed: both messages wait on the queue, nothing started, no attempt.
    assert client.llen(queue) == 2
    assert set(store.run_statuses(ids).values()) == {"queued"}
    assert [_attempts(farm, i) for i in ids] == [0, 0]

    left_at = time.time()
    tenants.write_text("{}")
    wait_for(lambda: set(store.run_statuses(ids).values()) == {"succeeded"}, 90, "both runs")
    results = [store.result_for(i) for i in ids]
    first_start = min(_epoch(r["started_at"]) for r in results)
    # Not before the GPU had been free for the settle time.
    assert first_start >= left_at + SETTLE_S - 0.5, (first_start, left_at)
    assert {r["attempt"] for r in results} == {1}
    assert store.counts()["results"] == 2


@pytest.mark.slow
def test_a_tenant_arriving_mid_run_hands_the_run_back_with_the_reason(farm, store):
    tenants = _tenant_farm(farm)
    farm.recorder()
    farm.worker("midrun", "H100-80GB")
    uuid = wait_for(lambda: next(iter(_states(farm)), None), 60, "the worker's advertisement")
    text = sweep_toml("midrun", '["sim:H100-80GB"]', duration_s=20, concurrency="[4]")
    run = expand(parse_sweep(text))[0]
    farm.cli("enqueue", str(write(farm, "midrun", text)))
    wait_for(lambda: store.run_statuses([run.run_id])[run.run_id] == "running", 60, "run start")
    time.sleep(1.0)
    tenants.write_text(json.dumps({uuid: [TENANT]}))
    # Handed back within seconds, the reason in the store, nothing recorded.
    wait_for(lambda: store.run_statuses([run.run_id])[run.run_id] == "queued", 20,
             "the run handed back")
    error = store.runs_of(store.find_sweep("midrun").id)[0]["error"]
    assert f"foreign process {TENANT} on GPU {uuid}" in error, error
    assert store.counts()["results"] == 0
    client = redis_client(farm.broker_url)
    wait_for(lambda: client.llen(run.hardware.queue) == 1, 10, "the message back on its queue")
    time.sleep(3)
    assert client.llen(run.hardware.queue) == 1      # not taken while the tenant is there
    assert store.run_statuses([run.run_id])[run.run_id] == "queued"

    tenants.write_text("{}")
    wait_for(lambda: store.run_statuses([run.run_id])[run.run_id] == "succeeded", 120,
             "the run measured after the tenant left")
    result = store.result_for(run.run_id)
    assert result["attempt"] == 2                     # handed back once, not retried
    assert store.counts()["results"] == 1
    assert "retry in" not in farm.log("midrun")
