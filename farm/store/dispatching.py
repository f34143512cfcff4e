"""What the dispatcher (farm/dispatch.py) reads and writes: the queued runs not
yet on a broker queue, grouped by queue and sweep; the runs to send next; the
mark that they were sent; and each owner's GPU time for fair share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from farm.store import counts
from farm.store.base import StoreBase
from farm.store.mapping import as_utc, runs_t, sweeps_t
from farm.store.models import utcnow
from farm_contract.runspec import RunSpec


@dataclass(frozen=True)
class Backlog:
    """Queued runs of one sweep on one queue that no message carries yet."""

    queue: str
    sweep_id: str
    owner: str
    priority: int
    created_at: datetime    # the sweep's: oldest sweep first within an owner
    waiting: int


@dataclass(frozen=True)
class Usage:
    """Each owner's GPU-seconds in the fair-share window, mean run duration (s), and
    GPUs its dispatched runs not started yet will hold (`in_flight_gpus`)."""

    gpu_s: dict[str, float]
    mean_run_s: dict[str, float]
    in_flight_gpus: dict[str, int] = field(default_factory=dict)
    all_mean_run_s: float | None = None     # every owner's runs: a new owner's estimate


class Dispatching(StoreBase):
    """The store's side of dispatching: backlog, next runs, mark sent, usage."""

    def dispatch_backlog(self, sweep_id: str | None = None) -> list[Backlog]:
        """Every (queue, sweep) with queued runs not yet dispatched, and how many
        (of one sweep only, when given)."""
        r, s = runs_t.c, sweeps_t.c
        stmt = (select(r.queue, r.sweep_id, s.owner, s.priority, s.created_at,
                       func.count().label("n"))
                .join(sweeps_t, s.id == r.sweep_id)
                .where(r.status == "queued", r.dispatched_at.is_(None),
                       *([r.sweep_id == sweep_id] if sweep_id else []))
                .group_by(r.queue, r.sweep_id, s.owner, s.priority, s.created_at))
        with self._read() as session:
            return [Backlog(row.queue, row.sweep_id, row.owner, row.priority,
                            as_utc(row.created_at), row.n)
                    for row in session.execute(stmt)]

    def undispatched_runs(self, sweep_id: str, queue: str, limit: int) -> list[RunSpec]:
        """The sweep's next `limit` undispatched queued runs on `queue`: oldest first,
        and of runs queued together, each configuration's first repetition before any
        second. A sweep cut short (a GPU lease ends, the sweep is cancelled) then has
        measured every configuration once before it repeats any; within a repetition
        the order is the run ids', a fixed shuffle of the configurations."""
        r = runs_t.c
        stmt = (select(r.spec_json)
                .where(r.sweep_id == sweep_id, r.queue == queue, r.status == "queued",
                       r.dispatched_at.is_(None))
                .order_by(r.queued_at, r.repetition, r.created_at, r.id).limit(limit))
        with self._read() as session:
            return [RunSpec.model_validate_json(spec) for spec in session.scalars(stmt)]

    def mark_dispatched(self, run_ids: Sequence[str]) -> int:
        """Record that the runs' messages are on their queues; returns rows changed.

        Called after the send: a crash in between leaves a message whose run still
        looks undispatched, and the next pass sends a harmless duplicate (task id =
        run id; done markers, claims and the idempotent upsert) — never a run marked
        as sent that no message carries."""
        now = utcnow()
        changed = 0
        with self._write() as session:
            for where in self._id_filters(runs_t.c.id, list(run_ids)):
                changed += session.execute(
                    update(runs_t).where(where, runs_t.c.dispatched_at.is_(None))
                    .values(dispatched_at=now)).rowcount
        return changed

    def recent_run_s(self, queue: str, last: int = 20) -> float | None:
        """Mean duration (s) of the queue's `last` runs to succeed, None before any:
        how fast a queue's reserve drains (farm/reserve.py)."""
        r = runs_t.c
        stmt = (select(r.started_at, r.finished_at)
                .where(r.queue == queue, r.status == "succeeded",
                       r.started_at.is_not(None), r.finished_at.is_not(None))
                .order_by(r.finished_at.desc()).limit(last))
        with self._read() as session:
            durations = [(as_utc(end) - as_utc(start)).total_seconds()
                         for start, end in session.execute(stmt)]
        return sum(durations) / len(durations) if durations else None

    def undispatched_ids(self, sweep_id: str | None = None) -> list[str]:
        """Ids of queued runs no message carries yet (of one sweep, or all)."""
        r = runs_t.c
        stmt = select(r.id).where(r.status == "queued", r.dispatched_at.is_(None),
                                  *([r.sweep_id == sweep_id] if sweep_id else []))
        with self._read() as session:
            return sorted(session.scalars(stmt))

    def owner_usage(self, window_s: float, now: datetime | None = None) -> Usage:
        """GPU-seconds per owner over the last `window_s` seconds (running runs count
        up to now), and each owner's mean duration of its runs finished in it."""
        now = now or utcnow()
        since = now - timedelta(seconds=window_s)
        connection = self.engine.raw_connection()
        try:
            rows = counts.usage_rows(connection.driver_connection, since)
        finally:
            connection.close()
        durations: dict[str, list[float]] = {}
        for owner, start, end, _gpus in rows:
            if end is not None:
                durations.setdefault(owner, []).append((end - start).total_seconds())
        every = [d for owner_durations in durations.values() for d in owner_durations]
        r, s = runs_t.c, sweeps_t.c
        in_flight = (select(s.owner, func.sum(r.gpu_count).label("gpus"))
                     .join(sweeps_t, s.id == r.sweep_id)
                     .where(r.status == "queued", r.dispatched_at.is_not(None))
                     .group_by(s.owner))
        with self._read() as session:
            gpus = {row.owner: int(row.gpus) for row in session.execute(in_flight)}
        return Usage(counts.gpu_seconds(rows, since, now),
                     {owner: sum(d) / len(d) for owner, d in durations.items()},
                     gpus, sum(every) / len(every) if every else None)

    def owner_counts(self, window_s: float, now: datetime | None = None) -> list[dict]:
        """`farmctl status`'s per-owner table (the same SQL, farm.store.counts)."""
        connection = self.engine.raw_connection()
        try:
            return counts.owner_counts(connection.driver_connection, window_s, now)
        finally:
            connection.close()
