"""`farmctl run` (the whole farm on one machine) and `farmctl flower`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from farm.store import Store
from tests.dbfixtures import free_port

pytestmark = pytest.mark.integration

SMALL = textwrap.dedent("""\
    name = "local-small"
    repetitions = 2

    [[model]]
    id = "tiny-1b"
    source = "org/tiny-1B"

    [hardware]
    gpu = ["sim:H100-80GB", "sim:L4"]
    gpus_per_run = [1, 2]

    [engine]
    kind = "sim"

    [[scenario]]
    kind = "server"
    concurrency = [1, 8]
    duration_s = 0.3
    warmup_s = 0.05

    [workload]
    input_tokens = [32]
    output_tokens = [16]

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.1
    min_steady_s = 0.1
    """)


def farmctl(tmp_path, *args, timeout_s=300):
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/farm.db",
           "FARM_HOME": str(tmp_path / ".farm")}
    env.pop("FARM_BROKER_URL", None)
    return subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout_s)


def test_run_does_everything_locally_and_twice_adds_nothing(tmp_path):
    sweep = tmp_path / "small.toml"
    sweep.write_text(SMALL)
    first = farmctl(tmp_path, "run", str(sweep), "--sim", "H100-80GB", "--sim", "L4")
    assert first.returncode == 0, first.stdout + first.stderr
    # One GPU of each here: the 2-GPU runs are left out, and the user is told.
    assert ("4 run(s) need GPUs this machine lacks (sim.h100-80gb.x2, sim.l4.x2)"
            in first.stderr)
    assert "SIMULATED" in first.stdout
    # 4 runs × 2 load points, all succeeded: the status the same in every row is on
    # the line above the table
    assert "local-small: 8 row(s)" in first.stdout and "status: succeeded" in first.stdout
    with Store.open(f"sqlite:///{tmp_path}/farm.db") as store:
        counts = store.counts()
        assert counts["results"] == 4 and counts["runs"] == 4
        assert counts["requests"] > 0 and counts["power_traces"] == 4
    started = time.monotonic()
    second = farmctl(tmp_path, "run", str(sweep), "--quiet", "--sim", "H100-80GB", "--sim", "L4")
    assert second.returncode == 0, second.stderr
    assert "0 new run(s), 0 sent again, 4 already done" in second.stderr
    assert time.monotonic() - started < 60
    with Store.open(f"sqlite:///{tmp_path}/farm.db") as store:
        assert store.counts()["results"] == 4
    # The store outlives the private broker: the views read it directly.
    results = farmctl(tmp_path, "results", "local-small", "--format", "csv")
    lines = results.stdout.strip().splitlines()
    assert len(lines) == 1 + 8 and "energy_per_output_token_j" in lines[0]


def test_flower_requires_its_credentials(redis_server):
    port = free_port()
    env = {**os.environ, "FARM_BROKER_URL": redis_server.url, "FARM_FLOWER_USER": "lab",
           "FARM_FLOWER_PASSWORD": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "flower", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/workers"
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                status = 200
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                time.sleep(0.3)
                continue
            break
        assert status == 401, "Flower answered without credentials"
        request = urllib.request.Request(url, headers={
            "Authorization": "Basic " + base64.b64encode(b"lab:s3cret").decode()})
        assert urllib.request.urlopen(request, timeout=5).status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_interrupted_run_is_completed_by_the_next_one(tmp_path):
    import signal

    sweep = tmp_path / "slow.toml"
    sweep.write_text(SMALL.replace('"sim:H100-80GB", "sim:L4"', '"sim:L4"')
                     .replace("gpus_per_run = [1, 2]", "gpus_per_run = [1]")
                     .replace("duration_s = 0.3", "duration_s = 1.5"))
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/farm.db",
           "FARM_HOME": str(tmp_path / ".farm")}
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", str(sweep), "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    db_file = tmp_path / "farm.db"

    def running():
        if not db_file.exists():
            return False
        try:
            with Store.open(f"sqlite:///{db_file}") as store:
                return any(s == "running" for s in store.run_statuses(
                    [r["run_id"] for r in store.result_rows()]).values())
        except Exception:
            return False

    deadline = time.monotonic() + 120
    while not running():
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    finish = farmctl(tmp_path, "run", str(sweep), "--quiet")
    assert finish.returncode == 0, finish.stderr
    with Store.open(f"sqlite:///{db_file}") as store:
        assert store.counts()["results"] == 2
        rows = store.result_rows()
        assert {r["status"] for r in rows} == {"succeeded"}


def test_a_cpu_sweep_reaches_the_cpu_worker(tmp_path):
    """The host CPU as a device: `farmctl run` starts a CPU worker for it. The model
    here is a hub id, which a worker does not load by default (FARM_ALLOW_HUB), so
    the run fails there, with the worker's reason (the real runs are in
    tests/engines/test_vllm_farm.py)."""
    sweep = tmp_path / "cpu.toml"
    sweep.write_text(SMALL.replace('gpu = ["sim:H100-80GB", "sim:L4"]\ngpus_per_run = [1, 2]',
                                   'gpu = ["cpu"]').replace('kind = "sim"', 'kind = "vllm"')
                     .replace("repetitions = 2", "repetitions = 1"))
    proc = farmctl(tmp_path, "run", str(sweep), "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr       # ExitCode.RUNS_FAILED
    rows = json.loads(farmctl(tmp_path, "results", "local-small", "--format", "json").stdout)
    row = rows["rows"][0]
    assert row["gpu_model"] == "cpu" and row["backend"] == "cpu" and row["status"] == "failed"
    assert "model source 'org/tiny-1B' is not one this worker" in row["error"]
    assert row["worker"] == "farm-cpu@local"
