"""What the user sees when runs fail, when `farmctl run` is interrupted, and when
no worker serves a queue: real `farmctl` subprocesses, real Redis and workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from farm.store import Store
from tests.integration.farmproc import wait_for
from tests.integration.test_farm import sweep_toml, write
from tests.integration.test_local_run import SMALL, farmctl

pytestmark = pytest.mark.integration

SLOW_L4 = (SMALL.replace('"sim:H100-80GB", "sim:L4"', '"sim:L4"')
           .replace("gpus_per_run = [1, 2]", "gpus_per_run = [1]")
           .replace("repetitions = 2", "repetitions = 3")
           .replace("duration_s = 0.3", "duration_s = 1.5"))


def _statuses(db_file) -> dict[str, str]:
    if not db_file.exists():
        return {}
    try:
        with Store.open(f"sqlite:///{db_file}") as store:
            return store.run_statuses([r["run_id"] for r in store.result_rows()])
    except Exception:       # the schema is still being created
        return {}


def _run_slow_sweep(tmp_path):
    """(sweep file, process) of `farmctl run` of SLOW_L4 into tmp_path/farm.db, in a
    session of its own (its process group is its children's)."""
    sweep = tmp_path / "slow.toml"
    sweep.write_text(SLOW_L4)
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/farm.db",
           "FARM_HOME": str(tmp_path / ".farm")}
    env.pop("FARM_BROKER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", str(sweep), "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return sweep, proc


def _stop(proc: subprocess.Popen, signum: int) -> None:
    """Send `signum` to farmctl run: it must stop as after Ctrl-C (exit 130, said
    in one line, no traceback)."""
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_ctrl_c_leaves_no_run_running_exits_130_and_the_next_run_measures_the_rest(tmp_path):
    sweep, proc = _run_slow_sweep(tmp_path)
    db_file = tmp_path / "farm.db"
    try:
        # One run measured, the next one in progress: Ctrl-C now.
        wait_for(lambda: sorted(_statuses(db_file).values()).count("succeeded") == 1
                 and "running" in _statuses(db_file).values(), 180,
                 "one run succeeded and another running")
        first = {i for i, s in _statuses(db_file).items() if s == "succeeded"}
        with Store.open(f"sqlite:///{db_file}") as store:
            measured_at = {i: store.result_for(i)["finished_at"] for i in first}
        _stop(proc, signal.SIGINT)          # what a terminal's Ctrl-C sends farmctl
    finally:
        if proc.poll() is None:
            proc.kill()
    statuses = _statuses(db_file)
    assert "running" not in statuses.values(), statuses
    assert set(statuses.values()) <= {"succeeded", "queued"}, statuses
    with Store.open(f"sqlite:///{db_file}") as store:
        handed_back = [r for r in store.runs_of(store.find_sweep("local-small").id)
                       if r["status"] == "queued"]
    assert handed_back, "the run in progress was not handed back"

    again = farmctl(tmp_path, "run", str(sweep), "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    done = sum(s == "succeeded" for s in statuses.values())
    assert f"0 new run(s), {3 - done} sent again, {done} already done" in again.stderr, (
        again.stderr)
    with Store.open(f"sqlite:///{db_file}") as store:
        assert store.counts()["results"] == 3
        rows = store.result_rows()
        assert {r["status"] for r in rows} == {"succeeded"}
        # What was measured before Ctrl-C is kept, not measured again.
        for run_id, finished in measured_at.items():
            assert store.result_for(run_id)["finished_at"] == finished


def test_sigterm_stops_farmctl_run_and_everything_it_started_as_ctrl_c_does(tmp_path):
    """A batch job's time limit or `timeout` sends SIGTERM: the runs in progress go
    back to queued and the private Redis, recorder and workers end with farmctl run
    (they outlived it, the worker still measuring)."""
    _, proc = _run_slow_sweep(tmp_path)
    db_file = tmp_path / "farm.db"
    try:
        wait_for(lambda: "running" in _statuses(db_file).values(), 180, "a run in progress")
        _stop(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    statuses = _statuses(db_file)
    assert "running" not in statuses.values() and "queued" in statuses.values(), statuses

    def group_gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_for(group_gone, 15, "farmctl run's children to end")
    finally:
        if not group_gone():
            os.killpg(proc.pid, signal.SIGKILL)


MISSING_MODEL = """\
name = "local-small"
repetitions = 2

[[model]]
id = "tiny-1b"
source = "{path}"

[hardware]
gpu = ["cpu"]

[engine]
kind = "hf"

[[scenario]]
kind = "batch"
num_prompts = 2

[workload]
input_tokens = [8]
output_tokens = [4]

[measurement]
idle_baseline_s = 0.1
cooldown_timeout_s = 0
"""


@pytest.mark.slow
def test_failed_runs_are_shown_grouped_by_reason_with_their_run_ids(tmp_path):
    # The hf engine on the CPU device, with a model directory that is not there: both
    # runs fail alike, and the reason says what to change.
    missing = tmp_path / "models" / "no-such-model"
    sweep = tmp_path / "failing.toml"
    sweep.write_text(MISSING_MODEL.format(path=missing))
    run = farmctl(tmp_path, "run", str(sweep), "--quiet")
    assert run.returncode == 1, run.stdout + run.stderr
    head = "2 run(s) failed (run ids: farmctl results local-small --format json):"
    assert head in run.stdout, run.stdout
    group = [line for line in run.stdout.splitlines() if line.startswith("  2 × engine: ")]
    assert len(group) == 1, run.stdout
    assert f"model source '{missing}' is not one this worker" in group[0], run.stdout

    table = farmctl(tmp_path, "results", "local-small")
    assert head in table.stdout and group[0] in table.stdout, table.stdout

    document = json.loads(farmctl(tmp_path, "results", "local-small", "--format",
                                  "json").stdout)
    failed = sorted({r["run_id"] for r in document["rows"] if r["status"] == "failed"})
    assert len(failed) == 2
    assert [(g["count"], g["kind"], g["run_ids"]) for g in document["failures"]] == [
        (2, "engine", failed)]
    assert document["failures"][0]["message"][:60] in group[0]

    csv = farmctl(tmp_path, "results", "local-small", "--format", "csv")
    assert head in csv.stderr and "×" not in csv.stdout

    status = farmctl(tmp_path, "status", "local-small")
    assert status.returncode == 0, status.stderr
    assert head in status.stdout and group[0] in status.stdout, status.stdout


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_enqueue_and_status_warn_of_a_queue_no_live_worker_serves(farm):
    path = write(farm, "unserved", sweep_toml("unserved", '["sim:L4"]', repetitions=2))
    enqueued = farm.cli("enqueue", str(path))
    warning = "warning: no live worker serves sim.l4.x1 (2 run(s))"
    assert warning in enqueued.stderr, enqueued.stderr
    assert warning in farm.cli("status").stderr
    assert warning in farm.cli("status", "unserved").stderr

    farm.recorder()
    farm.worker("l4", "L4")
    wait_for(lambda: json.loads(farm.cli("workers", "--json").stdout), 60, "the worker")
    served = farm.cli("status", "unserved")
    assert "no live worker" not in served.stderr, served.stderr


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_worker_tells_which_load_point_a_running_run_is_at(farm, monkeypatch):
    from farm.coordinator import broker_state

    monkeypatch.setenv("FARM_BROKER_URL", farm.broker_url)   # broker_state() here
    path = write(farm, "points", sweep_toml("points", '["sim:L4"]', duration_s=2.0,
                                            concurrency="[1, 4, 8]"))
    farm.recorder()
    farm.worker("l4", "L4")
    farm.cli("enqueue", str(path))
    with Store.open(farm.db_url) as store:
        run_id = store.result_rows(store.find_sweep("points").id)[0]["run_id"]
        state = broker_state()
        seen = set()

        def at_the_last_point():
            point = state.progress([run_id]).get(run_id)
            if point:
                seen.add((point["load_point"], point["of"], point["kind"], point["value"]))
            return point and point["load_point"] == 2
        wait_for(at_the_last_point, 120, "the run at its third load point")
        assert {(1, 3, "concurrency", 4.0), (2, 3, "concurrency", 8.0)} <= seen, seen
        wait_for(lambda: store.run_statuses([run_id]).get(run_id) == "succeeded", 120,
                 "the run recorded")
        # The run is over: its progress is gone.
        wait_for(lambda: not state.progress([run_id]), 10, "the progress key removed")


def test_status_from_another_shell_sees_the_local_runs_workers(tmp_path, broker_url):
    # `farmctl run` measures on its private broker; `farmctl status` in another shell
    # reads the farm's broker (here: the session's Redis, which has no worker). It
    # used to warn "no live worker serves" the queue being measured.
    sweep = tmp_path / "slow.toml"
    sweep.write_text(SLOW_L4)
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{tmp_path}/farm.db",
           "FARM_HOME": str(tmp_path / ".farm"), "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    env.pop("FARM_BROKER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "farm.cli", "run", str(sweep), "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    db_file = tmp_path / "farm.db"
    other = {**env, "FARM_BROKER_URL": broker_url}
    registry = tmp_path / "xdg" / f"farm-local-runs-{os.getuid()}"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=tmp_path,
                              env=other, capture_output=True, text=True, timeout=60)
    try:
        wait_for(lambda: "running" in _statuses(db_file).values(), 180, "a run running")
        # its announcement (and the sweep's lock, farm/local_runs.py)
        assert [p.name for p in registry.glob("*.json")] == [f"{proc.pid}.json"]
        assert oct(registry.stat().st_mode & 0o777) == "0o700"
        shown = cli("status", "local-small")
        assert shown.returncode == 0, shown.stderr
        assert "no live worker" not in shown.stderr, shown.stderr
        assert (f"note: `farmctl run` (pid {proc.pid}, sweep local-small) is measuring on "
                "this machine with its own broker: 1 worker(s) serving sim.l4.x1"
                in shown.stderr), shown.stderr
        listed = json.loads(cli("workers", "--json").stdout)
        assert [w["name"] for w in listed] == ["farm-sim@local"]
        # Another store's status is not told about this run.
        elsewhere = subprocess.run(
            [sys.executable, "-m", "farm.cli", "status"], cwd=tmp_path, capture_output=True,
            text=True, timeout=60, env={**other, "FARM_DB_URL": f"sqlite:///{tmp_path}/b.db"})
        assert "is measuring" not in elsewhere.stderr, elsewhere.stderr
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert list(registry.iterdir()) == []            # it left when the run did
    after = cli("status", "local-small")
    assert "is measuring" not in after.stderr
    assert "warning: no live worker serves sim.l4.x1" in after.stderr, after.stderr
