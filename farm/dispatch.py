"""The dispatcher: feeds the GPU queues from the store, a few messages at a time.

A sweep's runs are recorded as queued in the store at enqueue; only a bounded
number of messages waits on each broker queue (`depth`). Each pass tops every
queue up from the store's undispatched runs, chosen by:

1. the highest sweep priority first;
2. among the owners at that priority, the one with the least GPU time in the
   fair-share window (Σ (finished or now − started) × GPUs of its runs, plus
   its dispatched runs not started yet at their estimate), each pick charged
   an estimate (the owner's mean run duration, else every owner's, else 60 s,
   × the queue's GPUs) so that one pass interleaves owners;
3. within an owner, its oldest sweep first, then its runs oldest first, and of
   runs queued together every configuration's first repetition before any second.

So a 10-run sweep enqueued behind a 5,000-run one waits for at most `depth`
messages, not for 5,000. The depth includes a reserve (farm/reserve.py): enough
runs to keep a queue's workers busy for FARM_QUEUE_RESERVE_S through a store
outage, when no pass can read the backlog.

Exactly once is kept by order and by ids: a run is sent (task id = run id), then
marked dispatched. A crash in between leaves a run that looks undispatched and
whose message exists: the next pass sends a duplicate, which workers (done
markers, claims) and the recorder (idempotent upsert) make harmless. A run is
never marked dispatched without a message. One pass at a time holds a Redis
lease (`BrokerState.acquire_lease`). The recorder runs a pass every second
(tasks/record.py); `farmctl enqueue`, `retry` and `run` run one at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from farm.reserve import RunEstimates, reserves
from farm.sending import send_runs
from farm_contract.runspec import RunSpec

if TYPE_CHECKING:   # annotations only
    from farm.store.dispatching import Backlog, Usage
    from farm.store.repository import Store
    from tasks.broker_state import BrokerState

log = logging.getLogger(__name__)

MIN_DEPTH = 4                 # messages kept waiting per queue with no worker advertised
DEFAULT_ESTIMATE_S = 60.0     # a run's duration before its owner has finished any
LEASE_TTL_S = 30.0            # a pass renews it after each queue's send


def depth_for(queue: str, slots: Mapping[str, int], depth: int | None = None,
              reserve: int = 0) -> int:
    """How many messages to keep waiting on `queue`: `depth` when set (FARM_DISPATCH_DEPTH),
    else the runs its live workers can hold at once plus its `reserve` (farm/reserve.py),
    at least MIN_DEPTH and twice the slots (a finishing run's successor is waiting)."""
    if depth is not None:
        return depth
    n = slots.get(queue, 0)
    return max(MIN_DEPTH, 2 * n, n + reserve)


def gpus_of(queue: str) -> int:
    """The GPUs a run of `queue` holds: N of `{backend}.{slug}.xN` (1 if unreadable)."""
    count = queue.rpartition(".x")[2]
    return int(count) if count.isdigit() and int(count) > 0 else 1


def choose(backlog: Iterable[Backlog], free: Mapping[str, int], usage: Usage,
           default_estimate_s: float = DEFAULT_ESTIMATE_S) -> list[Backlog]:
    """The picks of one pass, one entry per run to send, in sending order per queue.

    Pure: `backlog` is what waits per (queue, sweep), `free` the messages each queue
    takes now, `usage` the owners' GPU time. Charges carry across queues, so an
    owner served on one queue yields on the next.
    """
    def estimate(owner: str) -> float:
        return usage.mean_run_s.get(owner) or usage.all_mean_run_s or default_estimate_s

    # Runs already on the queues count as used at their estimate: otherwise an
    # owner whose messages wait unstarted would look idle to every next pass.
    charged = {owner: usage.gpu_s.get(owner, 0.0) + usage.in_flight_gpus.get(owner, 0)
               * estimate(owner) for owner in {*usage.gpu_s, *usage.in_flight_gpus}}
    by_queue: dict[str, list[Backlog]] = {}
    for entry in backlog:
        by_queue.setdefault(entry.queue, []).append(entry)
    picks: list[Backlog] = []
    for queue in sorted(by_queue):
        left = {id(e): e.waiting for e in by_queue[queue]}
        charge_gpus = gpus_of(queue)
        for _ in range(max(0, free.get(queue, 0))):
            open_ = [e for e in by_queue[queue] if left[id(e)] > 0]
            if not open_:
                break
            top = max(e.priority for e in open_)
            tier = [e for e in open_ if e.priority == top]
            owner = min({e.owner for e in tier}, key=lambda o: (charged.get(o, 0.0), o))
            pick = min((e for e in tier if e.owner == owner),
                       key=lambda e: (e.created_at, e.sweep_id))
            left[id(pick)] -= 1
            charged[owner] = charged.get(owner, 0.0) + estimate(owner) * charge_gpus
            picks.append(pick)
    return picks


SendFn = Callable[[list[RunSpec]], None]


def _no_contest() -> Usage:
    from farm.store.dispatching import Usage

    return Usage({}, {})


def dispatch_once(store: Store, state: BrokerState, *, depth: int | None = None,
                  window_s: float | None = None, sweep_id: str | None = None,
                  reserve_s: float | None = None, estimates: RunEstimates | None = None,
                  wait_s: float = 0.0, send: SendFn = send_runs) -> Counter[str] | None:
    """One pass: top every queue up to its depth from the store; the runs sent per queue.

    None when another pass holds the lease for longer than `wait_s` seconds (it
    does the same work). `depth`, `window_s`, `sweep_id` (dispatch only that
    sweep's runs) and `reserve_s` default to the settings (FARM_DISPATCH_DEPTH,
    FARM_FAIR_SHARE_WINDOW_S, FARM_DISPATCH_SWEEP, FARM_QUEUE_RESERVE_S);
    `estimates` keeps the queues' run durations between passes.
    """
    from farm_contract.settings import load_settings

    settings = load_settings()
    depth = settings.dispatch_depth if depth is None else depth
    reserve_s = settings.queue_reserve_s if reserve_s is None else reserve_s
    window_s = settings.fair_share_window_s if window_s is None else window_s
    sweep_id = settings.dispatch_sweep if sweep_id is None else sweep_id
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while not state.acquire_lease(token, LEASE_TTL_S):
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
    try:
        return _pass(store, state, token, depth, window_s, sweep_id, send,
                     reserve_s, estimates)
    finally:
        state.release_lease(token)


def _pass(store: Store, state: BrokerState, token: str, depth: int | None, window_s: float,
          sweep_id: str | None, send: SendFn, reserve_s: float = 0.0,
          estimates: RunEstimates | None = None) -> Counter[str]:
    sent: Counter[str] = Counter()
    backlog = store.dispatch_backlog(sweep_id)
    if not backlog:
        return sent
    slots = state.queue_slots()
    queues = {e.queue for e in backlog}
    reserve = reserves(store, queues, slots, reserve_s, estimates) if depth is None else {}
    free = {q: depth_for(q, slots, depth, reserve.get(q, 0)) - state.queue_length(q)
            for q in queues}
    if all(n <= 0 for n in free.values()):
        return sent
    # Usage is read only when owners compete for a queue's places: it is the
    # pass's costliest query, and without a contest priority and age decide alone.
    picks = choose(backlog, free, store.owner_usage(window_s) if _contested(backlog, free)
                   else _no_contest())
    for queue in sorted({p.queue for p in picks}):
        runs = _runs_in_pick_order(store, [p for p in picks if p.queue == queue])
        if not runs:
            continue
        send(runs)                                   # first the messages …
        store.mark_dispatched([r.run_id for r in runs])   # … then the mark
        sent[queue] += len(runs)
        if not state.renew_lease(token, LEASE_TTL_S):
            log.warning("dispatch lease lapsed mid-pass; stopping this pass")
            break
    return sent


def _contested(backlog: list[Backlog], free: Mapping[str, int]) -> bool:
    """Whether some queue with free places has more than one owner at its top priority."""
    tops: dict[str, tuple[int, set[str]]] = {}
    for e in backlog:
        if free.get(e.queue, 0) <= 0:
            continue
        top, owners = tops.get(e.queue, (e.priority, set()))
        if e.priority > top:
            top, owners = e.priority, set()
        if e.priority == top:
            owners.add(e.owner)
        tops[e.queue] = (top, owners)
    return any(len(owners) > 1 for _top, owners in tops.values())


def _runs_in_pick_order(store: Store, picks: list[Backlog]) -> list[RunSpec]:
    """The runs of one queue's picks: each sweep's oldest first, sweeps interleaved as picked."""
    wanted = Counter(p.sweep_id for p in picks)
    queue = picks[0].queue
    fetched = {sid: iter(store.undispatched_runs(sid, queue, n)) for sid, n in wanted.items()}
    runs = []
    for pick in picks:
        run = next(fetched[pick.sweep_id], None)
        if run is not None:
            runs.append(run)
    return runs


def serve_forever(store_fn: Callable[[], Store], state: BrokerState, stop, period_s: float = 1.0
                  ) -> None:
    """The recorder's dispatcher thread: a pass every `period_s` until `stop` is set;
    a failed pass is logged and the next one tries again."""
    estimates = RunEstimates()
    while not stop.wait(period_s):
        try:
            sent = dispatch_once(store_fn(), state, estimates=estimates)
            if sent:
                log.info("dispatched %s", dict(sent))
        except Exception:
            log.warning("dispatch pass failed", exc_info=True)
