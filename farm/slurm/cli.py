"""`farmctl slurm`'s body: settings, logging, one pass or the loop until SIGTERM/Ctrl-C."""

from __future__ import annotations

import logging
import signal
import threading

import click


def main(once: bool, dry_run: bool, loglevel: str) -> None:
    """One pass (`once`, `dry_run`: decide and print only), or passes until stopped."""
    from farm.coordinator import broker_state
    from farm.slurm import commands
    from farm.slurm.loop import run_pass, serve_forever
    from farm_contract.settings import load_settings, load_slurm_settings

    settings, slurm = load_settings(), load_slurm_settings()
    logging.basicConfig(level=loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = broker_state()
    state.ping()
    if once or dry_run:
        report = run_pass(settings, slurm, state, dry_run=dry_run)
        verb = "would submit" if dry_run else "submitted"
        for sub in report.plan.submit:
            click.echo(f"{verb}: a worker job for {sub.queue} ({sub.owner}'s runs)")
        for job_id in report.plan.cancel:
            click.echo(f"{'would cancel' if dry_run else 'cancelled'}: pending job {job_id}")
        for line in report.plan.held:
            click.echo(f"held back: {line}")
        return
    if not commands.available():
        raise commands.SlurmError("sbatch/squeue not found: install Slurm's client commands "
                                  "(Debian: slurm-client) on this host")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.getLogger(__name__).info(
        "submitting worker jobs for %s queues every %g s (job names %s<queue>)",
        "/".join(slurm.backend_list), slurm.period_s, slurm.job_prefix)
    try:
        serve_forever(settings, slurm, state, stop)
    except KeyboardInterrupt:
        pass
