"""Two copies of one run's message on one worker with two GPUs: one measures, the
other is dropped. A copy is a known, harmless duplicate (a dispatcher that died
between sending and marking, `retry --queued`); the claim once named the worker,
which every GPU set's thread of it shares, so both copies ran at once on one host
(audit, 2026-12-08). Real Redis, a real worker process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from farm.embedded import PrivateRedis
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tasks.broker_state import BrokerState, redis_client
from tests.integration.farmproc import ROOT, Farm, wait_for
from tests.integration.test_farm import sweep_toml

pytestmark = pytest.mark.integration

SWEEP = sweep_toml("copies", '["sim:H100-80GB"]', duration_s=3, concurrency="[1]")


def test_a_second_copy_taken_by_the_same_worker_is_not_measured_again(tmp_path):
    (run,) = expand(parse_sweep(SWEEP))
    with PrivateRedis() as server:
        farm = Farm(tmp_path, server.url, f"sqlite:///{tmp_path / 'farm.db'}")
        try:
            farm.worker("w", "H100-80GBx2")
            state = BrokerState(redis_client(server.url))
            wait_for(state.workers, 60, "the worker's advert")
            send = textwrap.dedent(f"""
                from farm.sending import send_runs
                from farm.sweep import expand
                from farm.sweep_file import parse_sweep
                (run,) = expand(parse_sweep({SWEEP!r}))
                send_runs([run])
                send_runs([run])
                """)
            subprocess.run([sys.executable, "-c", send], cwd=ROOT, env=farm.env, check=True,
                           timeout=60)
            wait_for(lambda: "skipped: running elsewhere" in farm.log("w"), 60,
                     "the second copy to be dropped")
            wait_for(lambda: state.is_done(run.run_id), 60, "the run to be measured")
            assert state.r.get("farm:attempts:" + run.run_id) == b"1"
            records = [m for m in state.r.lrange("farm.record", 0, -1)
                       if f"record-{run.run_id}-".encode() in m]
            assert len(records) == 1
        finally:
            farm.stop_all()
