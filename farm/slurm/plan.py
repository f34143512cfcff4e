"""The decision of one `farmctl slurm` pass: which worker jobs to submit, which to cancel.

Pure: from the runs waiting per queue and owner, farm's Slurm jobs (pending or
running), the slots of the other live workers and the caps, it returns the jobs
to submit (one worker each, for one queue, on behalf of one owner) and the
pending jobs no run needs any more.

A queue needs a slot for each of its queued and running runs. Slots come from
the live workers that are not farm's jobs (their advertisements) and from
farm's jobs, pending or running, one slot each (a job asks for the queue's N
GPUs). So a pass submits min(queued, needed − slots) jobs — never more than the
queue has waiting runs — and cancels pending jobs beyond the need (a job
already running is never cancelled: its worker leaves by itself once idle).

Caps are in GPUs (a job of `….x2` holds two): per GPU model over all its
queues, and per owner over the jobs submitted for that owner's runs. Jobs are
handed out one per queue in turn, so queues of one model share its cap; each
job goes to the owner with waiting runs on that queue who holds the fewest GPUs
in farm's jobs, and an owner never has more jobs on a queue than runs there (so
one owner's jobs cannot carry another's runs past that one's cap). The owner
labels the job and counts against its cap; its worker takes whatever run the
dispatcher puts on its queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def parse_queue(queue: str) -> tuple[str, str, int] | None:
    """`{backend}.{slug}.x{N}` → (backend, slug, N); None for any other name."""
    backend, _, rest = queue.partition(".")
    slug, _, count = rest.rpartition(".x")
    if not backend or not slug or not count.isdigit() or int(count) < 1:
        return None
    return backend, slug, int(count)


@dataclass(frozen=True)
class QueueWork:
    """A GPU queue's runs in the store: queued and running, per owner."""

    queue: str
    queued: Mapping[str, int]
    running: Mapping[str, int] = field(default_factory=dict)

    @property
    def queued_total(self) -> int:
        """Queued runs of every owner."""
        return sum(self.queued.values())

    def runs_of(self, owner: str) -> int:
        """The owner's queued and running runs: at most this many jobs for it."""
        return self.queued.get(owner, 0) + self.running.get(owner, 0)


@dataclass(frozen=True)
class Job:
    """One of farm's worker jobs as squeue shows it."""

    job_id: str
    queue: str
    owner: str
    state: str              # "pending" or "running" (configuring, suspended …)
    reason: str = ""        # squeue's reason (pending) or node list (running)
    elapsed: str = ""


@dataclass(frozen=True)
class Caps:
    """GPUs farm's jobs may hold at once: per model (`models` overrides), per owner."""

    per_model: int
    per_owner: int
    models: Mapping[str, int] = field(default_factory=dict)

    def model(self, slug: str) -> int:
        """The cap of GPU model `slug`."""
        return self.models.get(slug, self.per_model)


@dataclass(frozen=True)
class Submission:
    """One job to submit: a worker for `queue`, on behalf of `owner`'s runs."""

    queue: str
    owner: str


@dataclass(frozen=True)
class Plan:
    """A pass's decision."""

    submit: list[Submission]
    cancel: list[str]                   # job ids
    held: list[str]                     # why a queue got fewer jobs than it needs


def worker_slots(workers: Iterable[Mapping], skip_prefix: str | None = None) -> dict[str, int]:
    """Runs the advertised workers can hold at once per queue (as
    BrokerState.queue_slots counts them), leaving out workers named `skip_prefix…`
    (farm's own jobs, counted from squeue instead)."""
    slots: dict[str, int] = {}
    for worker in workers:
        if skip_prefix and str(worker.get("name", "")).startswith(skip_prefix):
            continue
        models = [g.get("model") for g in worker.get("gpus") or ()]
        for queue in worker.get("queues") or ():
            parsed = parse_queue(queue)
            if parsed:
                slots[queue] = slots.get(queue, 0) + models.count(parsed[1]) // parsed[2]
    return slots


def plan(work: Iterable[QueueWork], jobs: Iterable[Job], other_slots: Mapping[str, int],
         caps: Caps) -> Plan:
    """The jobs to submit and to cancel this pass (see the module's docstring)."""
    work_by_queue = {w.queue: w for w in work if parse_queue(w.queue)}
    jobs = [j for j in jobs if parse_queue(j.queue)]
    model_gpus: dict[str, int] = {}
    owner_gpus: dict[str, int] = {}
    for job in jobs:
        _, slug, n = parse_queue(job.queue)  # type: ignore[misc]
        model_gpus[slug] = model_gpus.get(slug, 0) + n
        owner_gpus[job.owner] = owner_gpus.get(job.owner, 0) + n

    wanted: dict[str, int] = {}
    cancel: list[str] = []
    for queue in sorted({*work_by_queue, *(j.queue for j in jobs)}):
        w = work_by_queue.get(queue, QueueWork(queue, {}))
        ours = [j for j in jobs if j.queue == queue]
        need = (w.queued_total + sum(w.running.values()) - other_slots.get(queue, 0)
                - len(ours))
        if need > 0:
            wanted[queue] = min(need, w.queued_total)
        elif need < 0:
            # Newest pending first: the oldest is likeliest to start next.
            pending = sorted((j for j in ours if j.state == "pending"),
                             key=lambda j: _job_order(j.job_id), reverse=True)
            cancel += [j.job_id for j in pending[:-need]]

    submit: list[Submission] = []
    given: dict[tuple[str, str], int] = {}      # (queue, owner) → farm's jobs, this pass's too
    for job in jobs:
        given[(job.queue, job.owner)] = given.get((job.queue, job.owner), 0) + 1
    held: dict[str, str] = {}
    while True:
        progressed = False
        for queue in sorted(q for q, n in wanted.items() if n > 0):
            _, slug, n = parse_queue(queue)  # type: ignore[misc]
            if model_gpus.get(slug, 0) + n > caps.model(slug):
                held[queue] = (f"{queue}: {wanted[queue]} more job(s) wanted; the cap of "
                               f"{caps.model(slug)} GPU(s) for {slug} is reached")
                wanted[queue] = 0
                continue
            w = work_by_queue[queue]
            # Never more jobs for an owner than its runs there: a job labelled with one
            # owner would otherwise carry another's runs past that one's cap.
            owners = [o for o, k in w.queued.items()
                      if k and w.runs_of(o) > given.get((queue, o), 0)]
            fits = [o for o in owners if owner_gpus.get(o, 0) + n <= caps.per_owner]
            if not fits:
                held[queue] = (f"{queue}: {wanted[queue]} more job(s) wanted; the owners "
                               f"waiting there hold their cap of {caps.per_owner} GPU(s)")
                wanted[queue] = 0
                continue
            owner = min(fits, key=lambda o: (owner_gpus.get(o, 0), o))
            submit.append(Submission(queue, owner))
            given[(queue, owner)] = given.get((queue, owner), 0) + 1
            model_gpus[slug] = model_gpus.get(slug, 0) + n
            owner_gpus[owner] = owner_gpus.get(owner, 0) + n
            wanted[queue] -= 1
            progressed = True
        if not progressed:
            break
    return Plan(submit, cancel, [held[q] for q in sorted(held)])


def _job_order(job_id: str) -> tuple[int, str]:
    head = job_id.split("_")[0]     # array jobs: 12_3
    return (int(head) if head.isdigit() else -1, job_id)
