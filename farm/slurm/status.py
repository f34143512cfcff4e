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


def lines_for_status(prefix: str) -> list[str]:
    """The table for every user's farm jobs, or nothing where Slurm is not installed
    here; a Slurm that does not answer is one line, never a failed status."""
    from farm.slurm import commands

    if not commands.available():
        return []
    try:
        return job_lines(commands.jobs(prefix, mine=False))
    except commands.SlurmError as exc:
        return [f"note: slurm worker jobs unknown: {exc}"]
