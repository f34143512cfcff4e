"""`farmctl slurm`: a pass every FARM_SLURM_PERIOD_S seconds that turns waiting runs
into Slurm worker jobs.

A pass reads the queued and running runs per GPU queue and owner from the store
(the driver alone, farm/store/counts.py), the live workers' advertisements from
Redis, and farm's jobs from squeue; `farm.slurm.plan` decides; then it submits
(sbatch) and cancels surplus pending jobs (scancel). It keeps no state of its
own between passes — Slurm and the store are the state — so it can be stopped,
restarted or run as a one-off (`--once`) at any time; run one per farm (two
would each see the other's jobs only once squeue lists them, and could
over-submit by a pass's worth).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from farm.slurm import commands, jobs
from farm.slurm.plan import Caps, Plan, QueueWork, parse_queue, plan, worker_slots
from farm_contract.settings import Settings, SlurmSettings

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did: (job id, queue, owner) submitted, job ids cancelled, caps hit."""

    plan: Plan
    submitted: list[tuple[str, str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def read_work(db_url: str, backends: tuple[str, ...]) -> list[QueueWork]:
    """The store's queued (per owner) and running runs of the queues of `backends`."""
    from farm.store import counts

    queued: dict[str, dict[str, int]] = {}
    running: dict[str, dict[str, int]] = {}
    with counts.connect(db_url) as connection:
        rows = counts.queue_work(connection)
    for queue, owner, status, n in rows:
        parsed = parse_queue(queue)
        if parsed is None or parsed[0] not in backends:
            continue
        by_owner = (queued if status == "queued" else running).setdefault(queue, {})
        by_owner[owner] = by_owner.get(owner, 0) + n
    return [QueueWork(q, queued.get(q, {}), running.get(q, {}))
            for q in sorted({*queued, *running})]


def caps_of(settings: SlurmSettings) -> Caps:
    """The FARM_SLURM_MAX_GPUS_* caps as the planner takes them."""
    per_model, models = settings.model_caps
    return Caps(per_model=per_model, per_owner=settings.max_gpus_per_owner, models=models)


def run_pass(settings: Settings, slurm: SlurmSettings, state, *, dry_run: bool = False
             ) -> PassReport:
    """One pass (see the module's docstring); with `dry_run`, decide and change nothing."""
    work = read_work(settings.db_url, slurm.backend_list)
    ours = [j for j in commands.jobs(slurm.job_prefix)
            if (parsed := parse_queue(j.queue)) and parsed[0] in slurm.backend_list]
    others = worker_slots(state.workers(), skip_prefix=slurm.job_prefix)
    decided = plan(work, ours, others, caps_of(slurm))
    report = PassReport(decided)
    if dry_run:
        return report
    env = commands.job_env()
    for sub in decided.submit:
        job_id = commands.submit(jobs.options(sub.queue, sub.owner, slurm),
                                 jobs.script(sub.queue, slurm), env)
        report.submitted.append((job_id, sub.queue, sub.owner))
        log.info("submitted job %s: a worker for %s (%s's runs)", job_id, sub.queue, sub.owner)
    if decided.cancel:
        commands.cancel(decided.cancel)
        report.cancelled = list(decided.cancel)
        log.info("cancelled pending job(s) no run needs: %s", ", ".join(decided.cancel))
    return report


def serve_forever(settings: Settings, slurm: SlurmSettings, state,
                  stop: threading.Event) -> None:
    """A pass every `slurm.period_s` seconds until `stop` is set. A failed pass (the
    store, Redis or slurmctld away) is logged and the next one tries again."""
    held_before: list[str] = []
    while True:
        try:
            report = run_pass(settings, slurm, state)
            if report.plan.held != held_before:
                for line in report.plan.held:
                    log.warning("held back by a cap: %s", line)
                held_before = report.plan.held
        except Exception as exc:
            log.warning("slurm pass failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        if stop.wait(slurm.period_s):
            return
