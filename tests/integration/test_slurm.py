"""`farmctl slurm` against a real single-node Slurm (Debian's slurmctld, slurmd and
munge, started in a temp dir by tests/slurmcluster.py) whose two GPUs exist in
gres.conf only and are served by the jobs' `--sim` workers.

One run tells the whole story: the loop submits one job for it (and only one,
though it passes many times while the job waits); the job's worker runs it;
`scancel` mid-run hands it back (Slurm's SIGTERM, then SIGKILL after KillWait);
the loop submits a second job, whose worker finishes the run — one result,
attempt 2 — and then leaves on its own once idle, exit status 0.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator

import pytest

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from tests.conftest import unavailable
from tests.integration.farmproc import ROOT, Farm, wait_for
from tests.integration.test_farm import assert_exactly_once, sweep_toml, write
from tests.slurmcluster import SlurmCluster, SlurmUnavailable

pytestmark = pytest.mark.integration

PREFIX = "farm-worker-"
IDLE_EXIT_S = 3


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), gres="gpu:h100:2", kill_wait_s=10)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        unavailable(f"no private Slurm can be started: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'farm.db'}"     # the Slurm side is the same on any store


@pytest.fixture
def farm(tmp_path, broker_url: str, store_url: str, slurm: SlurmCluster) -> Iterator[Farm]:
    from farm.store import Store

    Store.open(store_url, upgrade=True).close()
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    farm = Farm(tmp_path, broker_url, store_url, **slurm.env(),
                PYTHONPATH=str(ROOT),
                FARM_SLURM_BACKENDS="sim",
                FARM_SLURM_PERIOD_S="0.5",
                FARM_SLURM_IDLE_EXIT_S=str(IDLE_EXIT_S),
                FARM_SLURM_WORKER_COMMAND=f"{sys.executable} -m farm.cli worker",
                FARM_SLURM_SBATCH_ARGS=f"--chdir={jobs_dir} --output={jobs_dir}/job-%j.log")
    try:
        yield farm
    finally:
        farm.stop_all()
        slurm.run("scancel", "--me", check=False)


def farm_jobs(slurm: SlurmCluster) -> dict[str, str]:
    """job id → state of farm's jobs squeue lists."""
    out = slurm.run("squeue", "--me", "--noheader", "--format=%i %j %T").stdout
    return {i: state for i, name, state in (line.split() for line in out.splitlines())
            if name.startswith(PREFIX)}


def job_field(slurm: SlurmCluster, job_id: str, name: str) -> str:
    out = slurm.run("scontrol", "show", "job", job_id).stdout
    return re.search(rf"\b{name}=(\S+)", out).group(1)


@pytest.mark.slow
def test_jobs_for_waiting_runs_idle_exit_and_a_cancelled_job_run_finished_once(
        farm, store, slurm):
    text = sweep_toml("slurm", '["sim:H100-80GB"]', duration_s=6, concurrency="[4]")
    runs = expand(parse_sweep(text))
    run_id = runs[0].run_id
    farm.recorder()
    farm.start("slurm", "slurm")
    farm.env["FARM_OWNER"] = "alice"          # the identity a sweep is owned by
    farm.cli("enqueue", str(write(farm, "slurm", text)))

    # One job for the one run, however many passes see it pending or starting.
    seen: set[str] = set()

    def running_in_a_job():
        seen.update(farm_jobs(slurm))
        return store.run_statuses([run_id])[run_id] == "running"
    wait_for(running_in_a_job, 60, "the run to start in a Slurm job")
    assert len(seen) == 1, seen
    first = seen.pop()
    assert job_field(slurm, first, "TresPerNode") == "gres:gpu:h100:1"
    assert job_field(slurm, first, "Comment") == "farm-owner=alice"
    status = farm.cli("status").stdout
    assert "slurm worker jobs: 0 pending, 1 running" in status
    assert re.search(rf"{first}\s+sim\.h100-80gb\.x1\s+alice\s+running", status)

    # Cancelled mid-run: Slurm's SIGTERM reaches the worker, which hands the run back.
    cancelled_at = time.monotonic()
    slurm.run("scancel", first)
    wait_for(lambda: store.run_statuses([run_id])[run_id] == "queued", 15, "the run handed back")
    assert time.monotonic() - cancelled_at < 10          # inside KillWait: not SIGKILLed
    second = wait_for(lambda: next(iter(set(farm_jobs(slurm)) - {first}), None), 20,
                      "a second job for the handed-back run")

    # Finished elsewhere, exactly once.
    wait_for(lambda: store.run_statuses([run_id])[run_id] == "succeeded", 60, "the run to finish")
    assert_exactly_once(store, runs, load_points_per_run=1)
    result = store.result_for(run_id)
    assert result["worker"].startswith(f"{PREFIX}{second}@"), result["worker"]
    assert result["attempt"] == 2

    # The second job's worker leaves once idle: exit 0, its advertisement withdrawn.
    wait_for(lambda: second not in farm_jobs(slurm), 30, "the idle job to end")
    assert job_field(slurm, second, "JobState") == "COMPLETED"
    assert job_field(slurm, second, "ExitCode") == "0:0"
    assert "(--idle-exit-s): stopping" in (farm.tmp / "jobs" / f"job-{second}.log").read_text()
    assert job_field(slurm, first, "JobState") == "CANCELLED"
    from tasks.broker_state import BrokerState, redis_client

    assert BrokerState(redis_client(farm.broker_url)).workers() == []
    # Nothing waits: no further job was submitted.
    time.sleep(1.5)
    assert set(farm_jobs(slurm)) <= {first, second}
    assert "slurm worker jobs" not in farm.cli("status").stdout
