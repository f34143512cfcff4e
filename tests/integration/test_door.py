"""Issue 22 with real services: a sweep's owner against another user enqueueing
under its name (item 2), two `farmctl run`s of one sweep (item 3), and a Redis
that needs a password (item 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from farm.cli import ExitCode, main
from farm.store import Store
from tests import factories
from tests.integration.farmproc import wait_for

pytestmark = pytest.mark.integration


def farmctl(*args: str, **env: str):
    return CliRunner().invoke(main, list(args), env=env)


def test_a_sweep_is_its_owners(tmp_path, broker_url):
    path = tmp_path / "s.toml"
    path.write_text(factories.SMALL_SWEEP)
    base = {"FARM_BROKER_URL": broker_url, "FARM_DB_URL": f"sqlite:///{tmp_path}/f.db"}
    first = farmctl("enqueue", str(path), **base, FARM_OWNER="alice")
    assert first.exit_code == 0, first.output
    path.write_text(factories.SMALL_SWEEP.replace("[64]", "[65]"))

    # What issue 22 did: another file, another owner, a higher priority.
    changed = farmctl("enqueue", str(path), "--owner", "mallory", "--priority", "100", **base,
                      FARM_OWNER="mallory")
    assert changed.exit_code == ExitCode.CONFLICT, changed.output
    assert "+output_tokens = [65]" in changed.output and "--amend" in changed.output
    taken = farmctl("enqueue", str(path), "--owner", "bob", **base, FARM_OWNER="mallory")
    assert taken.exit_code == ExitCode.NOT_PERMITTED and "only an admin" in taken.output
    amended = farmctl("enqueue", "--amend", str(path), **base, FARM_OWNER="mallory")
    assert amended.exit_code == ExitCode.NOT_PERMITTED
    cancel = farmctl("cancel", "small-sim", **base, FARM_OWNER="mallory")
    assert cancel.exit_code == ExitCode.NOT_PERMITTED
    assert "Traceback" not in taken.output + changed.output + amended.output + cancel.output
    with Store.open(base["FARM_DB_URL"]) as store:
        row = store.find_sweep("small-sim")
        assert (row.owner, row.priority) == ("alice", 0) and "[64]" in row.spec_toml
        assert {r["status"] for r in store.runs_of(row.id)} == {"queued"}

    # The owner amends; an admin re-prioritises (and the owner stays).
    assert farmctl("enqueue", "--amend", str(path), **base, FARM_OWNER="alice").exit_code == 0
    admin = farmctl("enqueue", "--priority", "5", str(path), **base, FARM_OWNER="root",
                    FARM_ADMINS="root")
    assert admin.exit_code == 0 and "owner alice, priority 5" in admin.output


def test_a_broker_that_needs_a_password_says_so(tmp_path):
    sock = tmp_path / "r.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock),
                               "--requirepass", "sekrit", "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 10, "redis-server's socket")
        for url in (f"redis+socket://{sock}", f"redis+socket://:wrong@{sock}"):
            result = farmctl("workers", FARM_BROKER_URL=url)
            assert result.exit_code == ExitCode.BROKER_ERROR
            assert "needs a password" in result.output and "FARM_BROKER_URL" in result.output
            assert "HELLO" not in result.output and "NOAUTH" not in result.output
        good = farmctl("workers", FARM_BROKER_URL=f"redis+socket://:sekrit@{sock}")
        assert good.exit_code == 0, good.output
    finally:
        server.terminate()
        server.wait()


def test_a_worker_and_a_recorder_turned_away_by_the_broker_say_why_and_stop(tmp_path):
    """Not a traceback repeated forever in the log: one line naming FARM_BROKER_URL."""
    sock = tmp_path / "r.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock),
                               "--requirepass", "sekrit", "--save", "", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path / 'farm.db'}",
           "FARM_BROKER_URL": f"redis+socket://:wrong@{sock}"}
    try:
        wait_for(sock.exists, 10, "redis-server's socket")
        for command in (["worker", "--sim", "H100-80GB", "--name", "w@t"], ["recorder"]):
            done = subprocess.run([sys.executable, "-m", "farm.cli", *command], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert done.returncode == ExitCode.BROKER_ERROR, done.stderr
            assert "FARM_BROKER_URL" in done.stderr and "Traceback" not in done.stderr
    finally:
        server.terminate()
        server.wait()


TWICE = textwrap.dedent("""\
    name = "twice"
    repetitions = 2

    [[model]]
    id = "tiny-1b"
    source = "org/tiny-1B"

    [hardware]
    gpu = ["sim:L4"]

    [engine]
    kind = "sim"

    [[scenario]]
    kind = "server"
    concurrency = [1, 2]
    duration_s = 0.6
    warmup_s = 0.05

    [workload]
    input_tokens = [32]
    output_tokens = [16, 24, 32, 40]

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.1
    min_steady_s = 0.1
    """)


@pytest.mark.slow
def test_two_runs_of_one_sweep_measure_each_run_once(tmp_path):
    """Two `farmctl run` of the same sweep in one directory: the second is refused
    while the first measures, and every run is measured once (issue 22 item 3: on
    main each of the 8 runs was measured by both)."""
    (tmp_path / "twice.toml").write_text(TWICE)
    runtime = tmp_path / "runtime"          # the local-run announcements, this test's own
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/farm.db",
           "XDG_RUNTIME_DIR": str(runtime), "PYTHONUNBUFFERED": "1"}
    env.pop("FARM_BROKER_URL", None)
    env.pop("FARM_HOME", None)
    cmd = [sys.executable, "-m", "farm.cli", "run", "twice.toml", "--quiet"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Announced once its broker is up, with the sweep's lock held.
        wait_for(lambda: list(runtime.glob("farm-local-runs-*/*.json")), 60,
                 "the first run's announcement")
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out + err
    assert second.returncode == ExitCode.CONFLICT, second.stdout + second.stderr
    assert (f"sweep 'twice' is being measured by another `farmctl run` on this machine "
            f"(pid {first.pid}") in second.stderr
    assert "Traceback" not in second.stderr

    received = sum(log.read_text().count("] received")
                   for log in Path(tmp_path, ".farm", "logs").glob("*/sim-worker.log"))
    with Store.open(env["FARM_DB_URL"]) as store:
        runs = store.runs_of(store.find_sweep("twice").id)
        assert len(runs) == 8 and store.counts()["results"] == 8
        assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in runs)
    assert received == 8          # one measurement per run, by one worker
    assert len(list(Path(tmp_path, ".farm", "logs").iterdir())) == 1   # the second made none

    # Once the first has ended, the same command runs again (and adds nothing).
    started = time.monotonic()
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "0 new run(s), 0 sent again, 8 already done" in again.stderr
    assert time.monotonic() - started < 60
