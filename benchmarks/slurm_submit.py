"""How soon `farmctl slurm` submits a worker job once runs become due (issue 23:
"within 10 s").

A private single-node Slurm (tests/slurmcluster.py: Debian's slurmctld, slurmd
and munge, two fake H100 GRES GPUs), a private Redis, a SQLite store, a recorder
and `farmctl slurm` at its default period (FARM_SLURM_PERIOD_S=2) on the `sim`
backend. Each trial enqueues a one-run sweep and times, from the moment the run
was committed to the store as queued (`runs.queued_at`: due), by the wall clock:

- submitted: the job is in squeue (sbatch returned);
- job running: Slurm started it;
- run started: the job's worker holds the run (the store says `running`).

The job's worker finishes the run and leaves once idle (2 s) before the next trial.

    python benchmarks/slurm_submit.py [--trials 6] [--period-s 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import ROOT, private_redis, summary, temp_dir


def queued_at(db_url: str, run_id: str) -> float:
    """When the run was committed as queued (UTC text in SQLite), as a Unix time."""
    import sqlite3
    from datetime import UTC, datetime

    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as connection:
        (text,) = connection.execute("SELECT queued_at FROM runs WHERE id = ?",
                                     (run_id,)).fetchone()
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def one_trial(farm, store, tmp, db_url: str, jobs, trial: int) -> dict[str, float]:
    """Enqueue a one-run sweep; seconds from due to submitted, job running, run started."""
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep
    from tests.integration.farmproc import wait_for
    from tests.integration.test_farm import sweep_toml

    text = sweep_toml(f"due-{trial}", '["sim:H100-80GB"]', duration_s=0.3, concurrency="[1]")
    run_id = expand(parse_sweep(text))[0].run_id
    (tmp / "due.toml").write_text(text)
    before = set(jobs())
    enqueue = farm.start(f"enqueue-{trial}", "enqueue", str(tmp / "due.toml"))
    job = wait_for(lambda: next(iter(set(jobs()) - before), None), 30, "a job",
                   interval_s=0.02)
    submitted = time.time()
    wait_for(lambda: jobs().get(job) == "RUNNING", 30, "the job to run", interval_s=0.02)
    running = time.time()
    wait_for(lambda: store.run_statuses([run_id])[run_id] != "queued", 60, "the run to start",
             interval_s=0.05)
    started = time.time()
    enqueue.wait(timeout=30)
    due = queued_at(db_url, run_id)
    wait_for(lambda: job not in jobs(), 60, "the job to end (idle exit)")
    return {"submitted": submitted - due, "job running": running - due,
            "run started": started - due}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--period-s", type=float, default=2.0)
    args = parser.parse_args()

    from farm.store import Store
    from tests.integration.farmproc import Farm
    from tests.slurmcluster import SlurmCluster

    with private_redis() as redis, temp_dir() as tmp, \
            SlurmCluster(tmp / "slurm", gres="gpu:h100:2") as slurm:
        db_url = f"sqlite:///{tmp / 'farm.db'}"
        Store.open(db_url, upgrade=True).close()
        farm = Farm(tmp, redis.url, db_url, **slurm.env(), PYTHONPATH=str(ROOT),
                    FARM_SLURM_BACKENDS="sim", FARM_SLURM_PERIOD_S=str(args.period_s),
                    FARM_SLURM_IDLE_EXIT_S="2",
                    FARM_SLURM_WORKER_COMMAND=f"{sys.executable} -m farm.cli worker",
                    FARM_SLURM_SBATCH_ARGS=f"--chdir={tmp} --output={tmp}/job-%j.log")

        def jobs() -> dict[str, str]:
            out = subprocess.run(["squeue", "--noheader", "--format=%i %T"], env=farm.env,
                                 capture_output=True, text=True, check=True).stdout
            return dict(line.split() for line in out.splitlines())

        rows: dict[str, list[float]] = {"submitted": [], "job running": [], "run started": []}
        try:
            farm.recorder()
            farm.start("slurm", "slurm")
            time.sleep(3)                           # both up before the first trial
            with Store.open(db_url) as store:
                for trial in range(args.trials):
                    for name, value in one_trial(farm, store, tmp, db_url, jobs, trial).items():
                        rows[name].append(value)
                    print(f"trial {trial}: " + ", ".join(f"{name} {values[-1]:.2f} s"
                                                         for name, values in rows.items())
                          + " after due", flush=True)
        finally:
            farm.stop_all()
    print(f"\n{args.trials} trials, FARM_SLURM_PERIOD_S={args.period_s:g}, seconds after due:")
    for name, values in rows.items():
        s = summary(values)
        print(f"  {name:12s} median {s['median']:.2f}  max {s['max']:.2f}")


if __name__ == "__main__":
    main()
