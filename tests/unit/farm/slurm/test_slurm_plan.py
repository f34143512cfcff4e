"""`farmctl slurm`'s decision (farm/slurm/plan.py), a job's request and script
(farm/slurm/jobs.py) and the FARM_SLURM_* settings: pure, no Slurm needed."""

from __future__ import annotations

import shlex

import pytest

from farm.slurm import commands, jobs
from farm.slurm.plan import Caps, Job, QueueWork, plan, worker_slots
from farm.slurm.status import job_lines
from farm_contract.settings import SettingsError, SlurmSettings

H1 = "gpu.h100-80gb.x1"
H2 = "gpu.h100-80gb.x2"
L4 = "gpu.l4.x1"
WIDE = Caps(per_model=100, per_owner=100)


def job(job_id: str, queue: str = H1, owner: str = "alice", state: str = "pending") -> Job:
    return Job(job_id, queue, owner, state)


def test_a_queue_gets_one_job_per_waiting_run_and_never_more():
    decided = plan([QueueWork(H1, {"alice": 3})], [], {}, WIDE)
    assert [(s.queue, s.owner) for s in decided.submit] == [(H1, "alice")] * 3
    assert decided.cancel == [] and decided.held == []


def test_jobs_and_other_workers_already_there_count():
    work = [QueueWork(H1, {"alice": 4}, running={"alice": 2})]     # six runs need a slot
    # two pending jobs, one running, two slots of a hand-started worker: one more job
    ours = [job("1"), job("2"), job("3", state="running")]
    assert len(plan(work, ours, {H1: 2}, WIDE).submit) == 1
    # a queue with nothing waiting gets nothing, however many slots it lacks for running runs
    assert plan([QueueWork(H1, {}, running={"alice": 5})], [], {}, WIDE).submit == []


def test_pending_jobs_beyond_the_need_are_cancelled_newest_first_running_ones_never():
    ours = [job("7"), job("12"), job("9", state="running"), job("10")]
    decided = plan([QueueWork(H1, {"alice": 1})], ours, {}, WIDE)
    # need 1, have 4: the three surplus are the pending ones, newest first
    assert decided.cancel == ["12", "10", "7"] and decided.submit == []
    # a queue that ran dry: every pending job of it goes, the running one stays
    assert plan([], ours, {}, WIDE).cancel == ["12", "10", "7"]


def test_the_model_cap_counts_gpus_over_the_models_queues_and_is_shared_in_turn():
    work = [QueueWork(H1, {"alice": 5}), QueueWork(H2, {"bob": 5})]
    decided = plan(work, [job("1", H2, "bob", "running")], {}, Caps(per_model=6, per_owner=99))
    # 2 GPUs already held; 4 left: one x1 job, one x2 job, then one more x1
    assert [s.queue for s in decided.submit] == [H1, H2, H1]
    assert any("cap of 6 GPU(s) for h100-80gb" in line for line in decided.held)
    per_model = Caps(per_model=0, per_owner=99, models={"l4": 2})
    decided = plan([QueueWork(L4, {"alice": 5}), QueueWork(H1, {"alice": 5})], [], {}, per_model)
    assert [s.queue for s in decided.submit] == [L4, L4]


def test_the_owner_cap_and_the_owner_with_the_fewest_gpus_first():
    work = [QueueWork(H1, {"alice": 5, "bob": 5})]
    ours = [job("1", owner="alice", state="running")]
    decided = plan(work, ours, {}, Caps(per_model=99, per_owner=2))
    # bob holds nothing: first; then alice (1 GPU) and bob (1 GPU) level, alice by name …
    assert [s.owner for s in decided.submit] == ["bob", "alice", "bob"]
    assert decided.held == [f"{H1}: 6 more job(s) wanted; the owners waiting there hold "
                            "their cap of 2 GPU(s)"]
    # an owner never gets more jobs than it has runs there
    decided = plan([QueueWork(H1, {"alice": 1, "bob": 4})], [], {}, WIDE)
    assert sorted(s.owner for s in decided.submit) == ["alice"] + ["bob"] * 4
    # … so alice at her cap cannot have her third run carried by a job labelled bob
    work = [QueueWork(H1, {"alice": 3, "bob": 1})]
    ours = [job("1", owner="alice"), job("2", owner="bob"), job("3", owner="alice")]
    decided = plan(work, ours, {}, Caps(per_model=99, per_owner=2))
    assert decided.submit == [] and len(decided.held) == 1
    # bob's run started (running) in his job: still one job for one run
    work = [QueueWork(H1, {"alice": 3}, running={"bob": 1})]
    assert plan(work, ours, {}, Caps(per_model=99, per_owner=2)).submit == []


def test_other_queues_and_names_are_left_alone():
    decided = plan([QueueWork("farm.record", {"x": 3})], [job("1", "not-a-queue")], {}, WIDE)
    assert decided.submit == [] and decided.cancel == []


def test_worker_slots_leave_out_farms_own_jobs():
    advertised = [
        {"name": "farm-gpu-1@a", "queues": [H1, H2], "gpus": [{"model": "h100-80gb"}] * 2},
        {"name": "farm-worker-42@n1", "queues": [H1], "gpus": [{"model": "h100-80gb"}]},
    ]
    assert worker_slots(advertised, skip_prefix="farm-worker-") == {H1: 2, H2: 1}
    assert worker_slots(advertised) == {H1: 3, H2: 1}


def test_a_jobs_request_and_script():
    settings = SlurmSettings(gres_map="l4=,a100-40gb=a100_40", constraints="h100-80gb=sxm&ib",
                             sbatch_args="--partition=gpu --time=04:00:00",
                             worker_command="/opt/farm/.venv/bin/farmctl worker",
                             idle_exit_s=120)
    assert jobs.options(H2, "alice", settings) == [
        f"--job-name=farm-worker-{H2}", "--gres=gpu:h100:2", "--nodes=1", "--ntasks=1",
        "--comment=farm-owner=alice", "--constraint=sxm&ib", "--partition=gpu",
        "--time=04:00:00"]
    assert "--gres=gpu:1" in jobs.options(L4, "bob", settings)
    assert "--gres=gpu:a100_40:1" in jobs.options("gpu.a100-40gb.x1", "bob", settings)
    assert jobs.default_gres_type("h200-141gb") == "h200"
    assert jobs.default_gres_type("rtx-4090") == "rtx-4090"
    script = jobs.script(H1, settings)
    assert script.startswith("#!/bin/sh\n")
    last = script.splitlines()[-1]
    assert last.startswith("exec /opt/farm/.venv/bin/farmctl worker --idle-exit-s 120 --name ")
    assert '"farm-worker-${SLURM_JOB_ID}@$(hostname)"' in last
    assert "--sim" not in last
    assert "\nNOSETPS=1\nexport NOSETPS\n" in script     # Slurm's linuxproc finds the worker
    sim = jobs.script("sim.h100-80gb.x2", SlurmSettings(worker_command="python -m farm.cli "
                                                                       "worker"))
    assert shlex.split(sim.splitlines()[-1])[:9] == [
        "exec", "python", "-m", "farm.cli", "worker", "--idle-exit-s", "300", "--sim",
        "h100-80gbx2"]


def test_the_job_environment_holds_no_coordinator_secret():
    env = commands.job_env({"FARM_BROKER_URL": "redis://:pw@h/0", "FARM_DB_URL": "postgresql://x",
                            "FARM_FLOWER_PASSWORD": "p", "PATH": "/usr/bin"})
    assert env == {"FARM_BROKER_URL": "redis://:pw@h/0", "PATH": "/usr/bin"}


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("FARM_SLURM_MAX_GPUS_PER_MODEL", "h100-80gb=4", "needs a number for every model"),
    ("FARM_SLURM_GRES_MAP", "h100-80gb", "not KEY=VALUE"),
    ("FARM_SLURM_BACKENDS", "cpu", "known: gpu, sim"),
    ("FARM_SLURM_SBATCH_ARGS", '--comment="x', "No closing quotation"),
    ("FARM_SLURM_JOB_PREFIX", "farm worker", "FARM_SLURM_JOB_PREFIX"),
])
def test_bad_settings_name_their_variable(monkeypatch, variable, value, words):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable) as caught:
        SlurmSettings()
    assert words in str(caught.value)


def test_settings_defaults_and_caps(monkeypatch):
    monkeypatch.setenv("FARM_SLURM_MAX_GPUS_PER_MODEL", "8, h100-80gb=4")
    settings = SlurmSettings()
    assert settings.model_caps == (8, {"h100-80gb": 4})
    assert settings.backend_list == ("gpu",) and settings.idle_exit_s == 300
    assert settings.gres_types == {} and settings.job_prefix == "farm-worker-"


def test_status_lines():
    assert job_lines([]) == []
    lines = job_lines([Job("5", H1, "alice", "running", "n1", "1:02"),
                       Job("6", H1, "bob", "pending", "(Resources)", "0:00")])
    assert lines[0] == "slurm worker jobs: 1 pending, 1 running"
    assert lines[2].split()[:4] == ["6", H1, "bob", "pending"]
