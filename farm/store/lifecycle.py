"""A run's life in the store: sweeps recorded, runs enqueued (queued), started
(running), handed back (queued), cancelled, retried. Events from the workers
are applied only when they are newer than what the store holds."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from farm.spec import SweepSpec
from farm.store.base import StoreBase, insert_many
from farm.store.mapping import (
    as_utc,
    results_t,
    run_row,
    runs_t,
    sweeps_t,
)
from farm.store.models import (
    utcnow,
)
from farm_contract.engines import engine_kind
from farm_contract.records import (
    RunEvent,
)
from farm_contract.routing import split_backend
from farm_contract.runspec import RunSpec, sweep_id
from farm_contract.statuses import RunStatus


class RunLifecycle(StoreBase):
    """Sweeps and the status of their runs: enqueue, start, hand back, cancel, retry."""

    def record_sweep(self, spec: SweepSpec, toml_text: str, owner: str | None = None,
                     priority: int | None = None,
                     admit: Callable[[Any], tuple[str | None, int | None]] | None = None
                     ) -> str:
        """Insert the sweep, or refresh its file text if the name exists. Returns its id.

        `owner` and `priority` (farm/dispatch.py) are set when given: a re-enqueue
        updates them; None keeps what is stored ('' and 0 for a new sweep).
        `admit`, when given, decides instead, in the same transaction: it is called
        with the stored sweep (None for a new name), raises to refuse, and returns
        the owner and priority to store (farm/ownership.py).
        """
        sid = sweep_id(spec.name)
        for _ in range(2):      # a second pass only when a new name was taken meanwhile
            with self._write() as session:
                stored = session.execute(select(sweeps_t).where(sweeps_t.c.id == sid)
                                         .with_for_update()).first()
                if admit is not None:
                    owner, priority = admit(stored)
                if self._store_sweep(session, spec, toml_text, owner, priority, stored):
                    return sid
        raise RuntimeError(f"sweep {spec.name!r} was recorded and removed meanwhile")

    def _store_sweep(self, session: Session, spec: SweepSpec, toml_text: str,
                     owner: str | None, priority: int | None, stored: Any) -> bool:
        """Insert (stored is None) or refresh the sweep; False when an insert lost a
        race to another one (PostgreSQL locks no row that is not there yet)."""
        now = utcnow()
        simulated = _sweep_simulated(spec)
        if stored is not None:
            refresh = {"updated_at": now, "spec_toml": toml_text, "simulated": simulated}
            if owner is not None:
                refresh["owner"] = owner
            if priority is not None:
                refresh["priority"] = priority
            session.execute(update(sweeps_t).where(sweeps_t.c.id == stored.id)
                            .values(refresh))
            return True
        row = {"id": sweep_id(spec.name), "name": spec.name, "created_at": now,
               "updated_at": now, "spec_toml": toml_text, "simulated": simulated,
               "owner": owner or "", "priority": priority or 0}
        stmt = (self._upsert(sweeps_t).values(row)
                .on_conflict_do_nothing(index_elements=["id"]).returning(sweeps_t.c.id))
        return session.execute(stmt).first() is not None

    def add_runs(self, sweep_id: str, runs: Sequence[RunSpec],
                 dispatched: bool = False) -> list[RunSpec]:
        """Insert the runs not stored yet (status queued); returns only those.

        Runs already present, whatever their status, are left untouched. Two
        enqueues of one sweep at once are serialised on the sweep's row, so each
        new run is returned (and sent to a queue) by exactly one of them.
        `dispatched`: the runs need no message (an import brings their results),
        so the dispatcher never sends them.
        """
        by_id = {run.run_id: run for run in runs}
        with self._write() as session:
            self._lock_sweep(session, sweep_id)
            existing = self._existing_run_ids(session, list(by_id))
            now = utcnow()
            fresh = [(rid, run) for rid, run in by_id.items() if rid not in existing]
            insert_many(session, runs_t, [run_row(sweep_id, rid, run, now)
                                           | ({"dispatched_at": now} if dispatched else {})
                                           for rid, run in fresh])
        return [run for _, run in fresh]

    def _lock_sweep(self, session: Session, sweep_id: str) -> None:
        found = session.execute(select(sweeps_t.c.id).where(sweeps_t.c.id == sweep_id)
                                .with_for_update()).first()
        if found is None:
            raise ValueError(f"unknown sweep {sweep_id!r}: record_sweep() it first")

    def _existing_run_ids(self, session: Session, run_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for where in self._id_filters(runs_t.c.id, run_ids):
            found.update(session.scalars(select(runs_t.c.id).where(where)))
        return found

    def mark_started(self, event: RunEvent) -> bool:
        """Apply a "started" event; returns whether the run changed.

        Never moves a succeeded or cancelled run; moves a failed one only for a
        start after its failure (a retry), and ignores a start older than the
        one already recorded (a late or duplicate event).
        """
        if event.kind != "started":
            raise ValueError(f"mark_started() got a {event.kind!r} event")
        with self._write() as session:
            run = session.execute(
                select(runs_t.c.status, runs_t.c.attempts, runs_t.c.started_at,
                       runs_t.c.finished_at)
                .where(runs_t.c.id == event.run_id).with_for_update()
            ).first()
            if run is None or not _start_applies(run, event):
                return False
            session.execute(update(runs_t).where(runs_t.c.id == event.run_id).values(
                status="running", attempts=max(run.attempts, event.attempt),
                worker=event.worker.name, gpu_uuids=list(event.gpu_uuids) or None,
                started_at=event.at, finished_at=None, error=None,
            ))
            return True

    def mark_requeued(self, event: RunEvent) -> bool:
        """A worker handed the run back (planned stop): running → queued.

        Only if the run is still running on that worker and attempt; anything
        newer (a start elsewhere, a result) wins.
        """
        if event.kind != "requeued":
            raise ValueError(f"mark_requeued() got a {event.kind!r} event")
        with self._write() as session:
            changed = session.execute(
                update(runs_t)
                .where(runs_t.c.id == event.run_id, runs_t.c.status == "running",
                       runs_t.c.worker == event.worker.name,
                       runs_t.c.attempts == event.attempt)
                .values(status="queued", queued_at=event.at, error=event.detail)
            ).rowcount
        return bool(changed)

    def in_flight_since(self, cutoff: datetime,
                        sweep_id: str | None = None) -> list[tuple[str, str]]:
        """(run id, queue) of the runs the broker should hold: running since before
        `cutoff`, or queued with a message sent before it; of one sweep's when
        `sweep_id` is given. The lost-run check (farm/lost_runs.py) looks for each
        one's claim or message."""
        stmt = (select(runs_t.c.id, runs_t.c.queue)
                .where(or_(and_(runs_t.c.status == "running", runs_t.c.started_at < cutoff),
                           and_(runs_t.c.status == "queued", runs_t.c.dispatched_at < cutoff)),
                       *([runs_t.c.sweep_id == sweep_id] if sweep_id is not None else []))
                .order_by(runs_t.c.id))
        with self._read() as session:
            return [(row.id, row.queue) for row in session.execute(stmt)]

    def hand_back_lost(self, run_ids: Collection[str], reason: str) -> list[str]:
        """Running or dispatched runs that no worker holds and no message carries →
        queued and undispatched, with `reason`; the dispatcher sends them again.
        Returns the ids changed (a run that moved on meanwhile is left alone)."""
        if not run_ids:
            return []
        stmt = (update(runs_t)
                .where(runs_t.c.id.in_(list(run_ids)),
                       _on_its_way())
                .values(status="queued", queued_at=utcnow(), dispatched_at=None, error=reason)
                .returning(runs_t.c.id))
        with self._write() as session:
            return sorted(session.scalars(stmt))

    def mark_refused(self, run_id: str, reason: str) -> bool:
        """A result for the run was refused (not signed by the host it names): a
        running or dispatched run without a result → failed, with `reason`. Left in
        flight, the lost-run check would hand it back and it would be measured, and
        refused, again and again; failed, it waits for `farmctl retry`."""
        stmt = (update(runs_t)
                .where(runs_t.c.id == run_id,
                       _on_its_way(),
                       ~exists().where(results_t.c.run_id == run_id))
                .values(status="failed", finished_at=utcnow(), error=reason))
        with self._write() as session:
            return bool(session.execute(stmt).rowcount)

    def cancel_queued(self, sweep_id: str) -> list[str]:
        """Queued runs of the sweep → cancelled; returns their ids."""
        stmt = (update(runs_t)
                .where(runs_t.c.sweep_id == sweep_id, runs_t.c.status == "queued")
                .values(status="cancelled", finished_at=utcnow())
                .returning(runs_t.c.id))
        with self._write() as session:
            return sorted(session.scalars(stmt))

    def runs_to_retry(self, sweep_id: str, include_queued: bool = False,
                      include_running: bool = False,
                      queues: Collection[str] | None = None,
                      also_ids: Collection[str] = ()) -> list[RunSpec]:
        """Failed and cancelled (and queued / running if asked) runs → queued and not
        dispatched (the dispatcher sends them, farm/dispatch.py); their specs.

        `include_running` is for a broker known to be gone (`farmctl run` after an
        interrupted one): nothing can still be running those runs. `queues` limits
        the retry to runs of those queues; `also_ids` adds runs in any status but
        succeeded (running runs whose worker is known to be gone).
        """
        statuses = [RunStatus.failed.value, RunStatus.cancelled.value,
                    *([RunStatus.queued.value] if include_queued else []),
                    *([RunStatus.running.value] if include_running else [])]
        stmt = (update(runs_t)
                .where(runs_t.c.sweep_id == sweep_id,
                       or_(runs_t.c.status.in_(statuses),
                           and_(runs_t.c.id.in_(list(also_ids)),
                                runs_t.c.status != "succeeded")),
                       *([runs_t.c.queue.in_(list(queues))] if queues is not None else []))
                .values(status="queued", queued_at=utcnow(), finished_at=None, error=None,
                        dispatched_at=None)
                .returning(runs_t.c.id, runs_t.c.spec_json))
        with self._write() as session:
            rows = sorted(session.execute(stmt).all())
        return [RunSpec.model_validate_json(row.spec_json) for row in rows]


def _on_its_way() -> Any:
    """Running, or queued with its message sent: a run some worker has or will have."""
    return or_(runs_t.c.status == "running",
               and_(runs_t.c.status == "queued", runs_t.c.dispatched_at.is_not(None)))


# ---------------------------------------------------------------- decisions


def _sweep_simulated(spec: SweepSpec) -> bool:
    """True when any of its runs is simulated, so the sweep is never shown as all-measured."""
    return engine_kind(spec.engine.kind).simulated or any(
        split_backend(gpu)[0] == "sim" for gpu in spec.hardware.gpu)


def _start_applies(run: Any, event: RunEvent) -> bool:
    """Whether a "started" event may move the run to running (times from the workers)."""
    at = as_utc(event.at)
    if run.status == "queued":
        return True
    if run.status == "running":
        # A start newer than the recorded one (a redelivery), else late or repeated.
        return run.started_at is None or run.started_at < at
    if run.status == "failed":
        # A retry starts after the failure (a retry may count attempts from 1 again).
        return event.attempt > run.attempts or run.finished_at is None or run.finished_at < at

