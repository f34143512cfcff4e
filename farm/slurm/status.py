"""`farmctl status`'s lines about farm's Slurm worker jobs (pending and running)."""

from __future__ import annotations

from farm.slurm.plan import Job


def job_lines(found: list[Job]) -> list[str]:
    """A small table of the jobs, pending first; no lines when there are none."""
    if not found:
        return []
    rows = [("job", "queue", "owner", "state", "time", "reason / node")]
    for job in sorted(found, key=lambda j: (j.state != "pending", j.queue, j.job_id)):
        rows.append((job.job_id, job.queue, job.owner or "-", job.state, job.elapsed,
                     job.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    pending = sum(j.state == "pending" for j in found)
    head = f"slurm worker jobs: {pending} pending, {len(found) - pending} running"
    return [head, *("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                    for r in rows)]


STATUS_TIMEOUT_S = 5.0      # `status` must stay quick with slurmctld away


def lines_for_status(prefix: str) -> tuple[list[str], str | None]:
    """The table of every user's farm jobs (none where Slurm is not installed here),
    and a note for stderr when Slurm does not answer — never a failed status."""
    from farm.slurm import commands

    if not commands.available():
        return [], None
    try:
        return job_lines(commands.jobs(prefix, mine=False, timeout_s=STATUS_TIMEOUT_S)), None
    except commands.SlurmError as exc:
        if NO_CONFIGURATION in str(exc):    # Slurm's client installed, no cluster here
            return [], None
        return [], f"note: slurm worker jobs unknown: {exc}"


# squeue's words on a host with the client but no slurm.conf (nor SLURM_CONF, nor DNS SRV).
NO_CONFIGURATION = "Could not establish a configuration source"
