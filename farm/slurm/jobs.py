"""What one worker job asks Slurm for, and the batch script it runs.

A job serves one queue `{backend}.{slug}.x{N}`: it asks for N GPUs of the
model's gres type (`--gres=gpu:<type>:<N>`, FARM_SLURM_GRES_MAP, default the
slug without its memory suffix: h100-80gb → h100) and, where mapped, a node
feature (`--constraint`, FARM_SLURM_CONSTRAINTS). Its script `exec`s one
`farmctl worker`, so the worker *is* the job's process: the SIGTERM Slurm sends
at scancel, preemption or the time limit reaches it, and it hands its run back
within KillWait (Slurm's default 30 s; the hand-back takes seconds).
"""

from __future__ import annotations

import re
import shlex

from farm.slurm.commands import OWNER_TAG
from farm.slurm.plan import parse_queue
from farm_contract.settings import SlurmSettings

_MEMORY_SUFFIX = re.compile(r"-\d+gb$")


def default_gres_type(slug: str) -> str:
    """The gres type a lab most likely calls a model: h100-80gb → h100, l4 → l4."""
    return _MEMORY_SUFFIX.sub("", slug)


def gres_for(slug: str, count: int, settings: SlurmSettings) -> str:
    """`gpu:<type>:<count>`, or `gpu:<count>` where the map gives the model an empty type."""
    gres_type = settings.gres_types.get(slug, default_gres_type(slug))
    return f"gpu:{gres_type}:{count}" if gres_type else f"gpu:{count}"


def job_name(queue: str, settings: SlurmSettings) -> str:
    """`<FARM_SLURM_JOB_PREFIX><queue>`: how squeue tells farm's jobs and their queue."""
    return settings.job_prefix + queue


def options(queue: str, owner: str, settings: SlurmSettings) -> list[str]:
    """sbatch's options for a worker job of `queue` submitted for `owner`'s runs."""
    parsed = parse_queue(queue)
    if parsed is None:
        raise ValueError(f"{queue!r} is not a GPU queue name")
    _backend, slug, count = parsed
    opts = [f"--job-name={job_name(queue, settings)}", f"--gres={gres_for(slug, count, settings)}",
            "--nodes=1", "--ntasks=1", f"--comment={OWNER_TAG}{owner}"]
    constraint = settings.constraint_map.get(slug)
    if constraint:
        opts.append(f"--constraint={constraint}")
    # The lab's own options last: where they repeat one of ours, sbatch takes theirs.
    return opts + shlex.split(settings.sbatch_args)


def script(queue: str, settings: SlurmSettings) -> str:
    """The batch script: one worker, named after the job, stopping once idle."""
    backend, slug, count = parse_queue(queue)  # type: ignore[misc]
    argv = shlex.split(settings.worker_command) + ["--idle-exit-s", f"{settings.idle_exit_s:g}"]
    if backend == "sim":       # fake GRES GPUs (tests, demos): simulated devices of the model
        argv += ["--sim", f"{slug}x{count}"]
    command = " ".join(shlex.quote(a) for a in argv)
    # Only $SLURM_JOB_ID and $(hostname) are left to the shell; the rest is quoted.
    name = f'"{settings.job_prefix}${{SLURM_JOB_ID}}@$(hostname)"'
    return ("#!/bin/sh\n"
            f"# farm worker for queue {queue}, submitted by `farmctl slurm`.\n"
            "# Celery's process title (\"[celeryd: …]\", spaces in /proc/PID/stat) hides\n"
            "# the worker from proctrack/linuxproc, which would then never signal it.\n"
            "NOSETPS=1\n"
            "export NOSETPS\n"
            "# exec: the worker is the job's process, so Slurm's SIGTERM (scancel,\n"
            "# preemption, time limit) reaches it and it hands its run back.\n"
            f"exec {command} --name {name}\n")
