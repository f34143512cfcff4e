"""Enqueue, cancel and retry sweeps: the store first, then the queues.

Order matters for "nothing twice": runs are recorded as queued in the store
before their messages are sent, and only runs the store did not know are sent.
The dispatcher (farm/dispatch.py) sends them (farm/sending.py), a bounded number per queue at a
time, by priority and fair share between owners: an enqueue runs one pass at
once, the recorder's dispatcher feeds the rest as workers take messages. A run
is marked dispatched only after its message went out; workers and the recorder
make a re-sent run harmless (done markers, idempotent upsert).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from farm.sending import ProgressFn
from farm.spec import SweepSpec
from farm.sweep import expand, plan
from farm_contract.runspec import RunSpec, sweep_id

if TYPE_CHECKING:      # annotations only: `farmctl status` reaches broker_state without SQL
    from farm.store.repository import Store


@dataclass
class EnqueueReport:
    """What an enqueue (or a dry run) did: the sweep's runs, and those sent this time."""

    sweep_id: str
    total_runs: int
    new_runs: int
    per_queue: Counter[str]          # all runs of the sweep, by queue
    new_per_queue: Counter[str]      # runs recorded this time, by queue
    owner: str = ""
    priority: int = 0
    # Messages the dispatcher put on queues during the enqueue (any sweep's: the
    # fairest next runs); None when the recorder's dispatcher held the lease.
    dispatched: Counter[str] | None = None


def broker_state():
    """BrokerState on the broker of the farm's settings (`broker_url`)."""
    from farm_contract.settings import load_settings
    from tasks.broker_state import BrokerState, redis_client

    return BrokerState(redis_client(load_settings().broker_url))


def local_run_workers() -> list[tuple[Any, list[dict[str, Any]]]]:
    """Each `farmctl run` in progress on this machine on the farm's store, with the
    workers advertised on its private broker (farm/local_runs.py); a run whose broker
    does not answer (it is stopping) is left out."""
    from farm import local_runs
    from farm_contract.settings import load_settings
    from tasks.broker_state import BrokerState, redis_client

    out = []
    for run in local_runs.live(load_settings().db_url):
        try:
            workers = BrokerState(redis_client(run.broker_url)).workers()
        except Exception:   # a run shutting down: its socket is going away
            continue
        out.append((run, workers))
    return out


def dry_run(spec: SweepSpec) -> EnqueueReport:
    """What `enqueue` would do for `spec`, touching neither store nor broker: all runs new."""
    runs = expand(spec)
    return EnqueueReport(sweep_id(spec.name), len(runs), len(runs), plan(runs), plan(runs))


def default_owner() -> str:
    """The owner of a sweep enqueued without --owner: FARM_OWNER, else the login name."""
    from farm.ownership import current_user

    return current_user()


def enqueue(store: Store, spec: SweepSpec, toml_text: str,
            progress: ProgressFn | None = None, owner: str | None = None,
            priority: int | None = None, amend: bool = False) -> EnqueueReport:
    """Record the sweep (with its owner and priority) and the runs the store did not
    know as queued, then run one dispatch pass.

    A known name is the owner's (farm/ownership.py): another file under it is
    refused with the diff unless the owner or an admin `amend`s it; `owner`
    (someone else) is an admin's; a priority change is the owner's or an admin's.
    `priority` None keeps the stored one (0 for a new sweep).

    The broker is pinged first; the sweep is un-cancelled when it gets new runs.
    The pass sends the first messages at once, even with the recorder down; the
    recorder's dispatcher feeds the rest as workers free up. `progress` is unused
    now (a pass sends at most a queue's depth); kept for callers.
    """
    from farm import ownership
    from farm.dispatch import dispatch_once

    identity = ownership.Identity.configured()
    ownership.check_owner_option(identity, owner)
    runs = expand(spec)
    state = broker_state()
    state.ping()
    sid = store.record_sweep(spec, toml_text, admit=ownership.admission(
        identity, spec.name, toml_text, owner=owner, priority=priority, amend=amend))
    new = store.add_runs(sid, runs)
    if new:
        state.uncancel_sweep(sid)
    # A short wait: the recorder's own pass takes the lease for milliseconds.
    dispatched = dispatch_once(store, state, wait_s=5.0)
    recorded = store.find_sweep(sid)
    return EnqueueReport(sid, len(runs), len(new), plan(runs), plan(new), recorded.owner,
                         recorded.priority, dispatched)


def cancel(store: Store, sid: str) -> list[str]:
    """Cancel the sweep's queued runs (its owner's or an admin's). Running runs
    finish and are recorded."""
    _require_may_change(store, sid, "cancel")
    broker_state().cancel_sweep(sid)
    return store.cancel_queued(sid)


def retry(store: Store, sid: str, include_queued: bool = False) -> list[RunSpec]:
    """Queue failed and cancelled runs again (the owner's or an admin's); with
    `include_queued`, also runs stuck queued and runs marked running that no live
    worker holds. They become undispatched: a dispatch pass sends them now, the
    recorder's the rest."""
    from farm.dispatch import dispatch_once

    _require_may_change(store, sid, "retry")
    state = broker_state()
    state.ping()
    # With --queued (after a broker lost its data), runs marked running that no
    # live worker holds a claim on are lost too.
    lost = ([rid for rid in store.lost_running_ids(sid) if not state.is_claimed(rid)]
            if include_queued else [])
    runs = store.runs_to_retry(sid, include_queued=include_queued, also_ids=lost)
    state.uncancel_sweep(sid)
    # A failed run has no done marker, but a cancelled one may have finished
    # meanwhile: keep markers, the store's status is what we retry from.
    dispatch_once(store, state, wait_s=5.0)
    return runs


def _require_may_change(store: Store, sid: str, action: str) -> None:
    from farm import ownership

    sweep = store.find_sweep(sid)
    if sweep is not None:
        ownership.require_may_change(ownership.Identity.configured(), sweep.name,
                                     sweep.owner, action)
