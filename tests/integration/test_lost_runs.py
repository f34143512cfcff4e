"""A run is never lost for good, whatever happens to its messages (issue 20, item 1).

The sequence seen on a lab network: a GPU host's broker connection is reset while
Redis stays up; kombu puts the in-flight run back on its queue; a second worker
takes the copy, sees the live claim, skips it and acknowledges it; then the first
worker dies. Real Redis over TCP, real worker processes, a real socket reset
(`ss -K`, root only).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest

from farm.embedded import PrivateRedis
from farm.store import Store
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tests.integration.farmproc import Farm, wait_for
from tests.integration.test_farm import sweep_toml

pytestmark = pytest.mark.integration


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_connections(pid: int, port: int) -> int:
    """Abort every TCP connection of process `pid` to 127.0.0.1:`port` (ss -K); returns
    how many there were."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dport", "=", f":{port}"],
                         capture_output=True, text=True, check=True).stdout
    sports = [line.split()[2].rsplit(":", 1)[1] for line in out.splitlines()
              if re.search(rf"pid={pid},", line)]
    for sport in sports:
        subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}",
                        "sport", "=", f":{sport}"], capture_output=True, check=True)
    return len(sports)


SWEEP = sweep_toml("lost", '["sim:H100-80GB"]', duration_s=6, concurrency="[2]")


@pytest.fixture
def tcp_farm(tmp_path):
    if os.geteuid() != 0 or shutil.which("ss") is None:
        pytest.skip("resetting another process's sockets needs root and ss (iproute2)")
    server = PrivateRedis(port=_free_port()).start()
    db_url = f"sqlite:///{tmp_path / 'farm.db'}"
    Store.open(db_url, upgrade=True).close()
    farm = Farm(tmp_path, server.url, db_url)
    try:
        yield farm, server.port
    finally:
        farm.stop_all()
        server.stop()


@pytest.mark.slow
def test_a_run_whose_copy_was_skipped_and_whose_worker_died_is_run_again(tcp_farm):
    farm, port = tcp_farm
    (run,) = expand(parse_sweep(SWEEP))
    farm.recorder()
    first = farm.worker("first", "H100-80GB")
    path = farm.tmp / "lost.toml"
    path.write_text(SWEEP)
    farm.cli("enqueue", str(path))
    with Store.open(farm.db_url) as store:
        wait_for(lambda: store.run_statuses([run.run_id]).get(run.run_id) == "running", 60,
                 "the run to start on the first worker")
        farm.worker("second", "H100-80GB")
        wait_for(lambda: "ready" in farm.log("second"), 60, "the second worker")
        # The reset: kombu hands the unacked run back, the second worker skips it.
        assert _reset_connections(first.pid, port) > 0
        wait_for(lambda: "skipped: running elsewhere" in farm.log("second"), 30,
                 "the second worker to skip the copy")
        farm.signal("first", signal.SIGKILL)
        # No message, no claim, no result: only the lost-run check can bring it back.
        wait_for(lambda: store.run_statuses([run.run_id]).get(run.run_id) == "succeeded",
                 90, "the lost run to be measured by the second worker")
        assert store.counts()["results"] == 1
    assert "was lost" in farm.log("recorder")
