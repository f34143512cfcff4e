"""Slurm's client commands — sbatch, squeue, scancel — run as argument lists.

The one place farm talks to Slurm: every command goes through `_run` (never a
shell), and every failure of it becomes a `SlurmError` with the command's own
words. Jobs are farm's when their name starts with the job prefix; the owner
they were submitted for rides in the job's comment (`farm-owner=NAME`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from farm.errors import ExitCode, FarmError
from farm.slurm.plan import Job
from farm_contract.settings import COORDINATOR_ONLY_VARIABLES

OWNER_TAG = "farm-owner="
# squeue's fields, separated by a character no field can hold.
_SEP = "\x1f"
_FORMAT = _SEP.join(("%i", "%j", "%T", "%k", "%M", "%R"))
# squeue states → farm's two: a job that waits, and one that holds (or is getting) GPUs.
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
            "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}
TIMEOUT_S = 30.0


class SlurmError(FarmError):
    """A Slurm command is missing or failed (the controller down, a refused option)."""

    exit_code = ExitCode.INTERNAL


def available() -> bool:
    """Whether Slurm's client commands are installed here."""
    return shutil.which("squeue") is not None and shutil.which("sbatch") is not None


def _run(argv: Sequence[str], stdin: str | None = None,
         env: Mapping[str, str] | None = None, timeout_s: float = TIMEOUT_S) -> str:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout_s, env=None if env is None else dict(env))
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} not found: install Slurm's client commands "
                         "(Debian: slurm-client) and set SLURM_CONF if needed") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer in {timeout_s:g} s (is slurmctld up?)"
                         ) from None
    if done.returncode != 0:
        words = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmError(f"{argv[0]} exited {done.returncode}: "
                         f"{words[-1] if words else 'no message'}")
    return done.stdout


def submit(options: Sequence[str], script: str, env: Mapping[str, str]) -> str:
    """Submit a batch `script` (on sbatch's stdin) with `options`; the new job's id.
    The job is started with `env` (sbatch's --export=ALL, the default)."""
    out = _run(["sbatch", "--parsable", *options], stdin=script, env=env).strip()
    job_id = out.split(";")[0]          # "ID" or "ID;cluster"
    if not job_id:
        raise SlurmError("sbatch answered no job id")
    return job_id


def jobs(prefix: str, mine: bool = True, timeout_s: float = TIMEOUT_S) -> list[Job]:
    """farm's jobs (name `prefix<queue>`) that wait or run: this user's, or everyone's."""
    argv = ["squeue", "--noheader", f"--format={_FORMAT}"]
    if mine:
        argv.append("--me")
    found = []
    for line in _run(argv, timeout_s=timeout_s).splitlines():
        fields = line.split(_SEP)
        if len(fields) != 6 or not fields[1].startswith(prefix):
            continue
        job_id, name, state, comment, elapsed, reason = (f.strip() for f in fields)
        kind = "pending" if state in _PENDING else "running" if state in _RUNNING else None
        if kind is None:            # completing, cancelled, …: holds nothing for long
            continue
        owner = comment[len(OWNER_TAG):] if comment.startswith(OWNER_TAG) else ""
        found.append(Job(job_id, name[len(prefix):], owner, kind, reason, elapsed))
    return found


def cancel(job_ids: Sequence[str]) -> None:
    """scancel the jobs (Slurm sends SIGTERM, then SIGKILL after KillWait)."""
    if job_ids:
        _run(["scancel", *job_ids])


def job_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a worker job starts with: this process's, without what only the
    coordinator may hold (the store's URL and password, Flower's login, the signing
    keyring): a GPU worker needs the broker alone."""
    base = os.environ if base is None else base
    return {k: v for k, v in base.items() if k not in COORDINATOR_ONLY_VARIABLES}


