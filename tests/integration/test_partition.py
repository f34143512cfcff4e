"""A silent partition between a GPU host and the broker does not stall the measurement
(issue 20, item 2). The worker runs in its own network namespace and reaches a real
Redis over a veth; the link is blackholed (`tc qdisc … blackhole`) while the run is
between its warm-up and its measured load point, where a progress report is sent."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from sqlalchemy import select

from farm.embedded import find_redis_server
from farm.store import Store
from farm.store.mapping import results_t
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tests.integration.farmproc import Farm, wait_for
from tests.integration.netns import Host, skip_unless_netns
from tests.integration.test_farm import sweep_toml

pytestmark = pytest.mark.integration

PARTITION_S = 8.0
SWEEP = sweep_toml("partition", '["sim:H100-80GB"]', duration_s=2, concurrency="[2]",
                   warmup_s=1, idle_baseline_s=1.5)


@pytest.fixture
def partitioned_host(tmp_path):
    skip_unless_netns()
    host = Host(index=7).create()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", f"127.0.0.1 {host.gateway}",
         "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "redis")
        yield host, port
    finally:
        redis.terminate()
        redis.wait(10)
        host.delete()


@pytest.mark.slow
def test_a_partition_between_warm_up_and_load_point_does_not_hold_the_run(
        partitioned_host, tmp_path):
    host, port = partitioned_host
    db_url = f"sqlite:///{tmp_path / 'farm.db'}"
    Store.open(db_url, upgrade=True).close()
    # Heartbeats far apart: the claim outlives the partition, so no one else steps in.
    farm = Farm(tmp_path, f"redis://127.0.0.1:{port}/0", db_url,
                FARM_HEARTBEAT_S="5", FARM_REAPER_GRACE_S="120")
    (run,) = expand(parse_sweep(SWEEP))
    try:
        farm.recorder()
        farm.worker("gpu-host", "H100-80GB", prefix=host.prefix,
                    env={"FARM_BROKER_URL": f"redis://{host.gateway}:{port}/0"})
        (tmp_path / "partition.toml").write_text(SWEEP)
        farm.cli("enqueue", str(tmp_path / "partition.toml"))
        with Store.open(db_url) as store:
            wait_for(lambda: store.run_statuses([run.run_id]).get(run.run_id) == "running",
                     60, "the run to start")
            # Idle baselines (1.5 s) and warm-up (1 s) are still ahead: the progress
            # report of load point 0 falls inside the partition.
            host.partition()
            time.sleep(PARTITION_S)
            host.heal()
            wait_for(lambda: store.run_statuses([run.run_id]).get(run.run_id) == "succeeded",
                     60, "the result once the link is back")
            with store.engine.connect() as conn:
                duration_s, checks = conn.execute(
                    select(results_t.c.duration_s, results_t.c.validity_json)).one()
    finally:
        farm.stop_all()
    # Measured straight through: the run did not wait for the link to come back.
    assert duration_s < PARTITION_S, duration_s
    stalls = next(c for c in checks if c["name"] == "stalls")
    assert stalls["passed"] and stalls["value"] < 1.0, stalls
