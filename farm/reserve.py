"""The queue reserve: runs kept on each GPU queue so GPUs outlast a store outage.

The dispatcher (farm/dispatch.py) feeds the queues from the store, so while the
store is down nothing is sent; the GPUs then live on what waits on their queues.
Each queue keeps, beyond the runs its live workers can hold at once, enough runs
to keep those workers busy for `FARM_QUEUE_RESERVE_S` seconds at the queue's
recent run duration: ceil(reserve_s × slots ÷ run_s).

Why in seconds and not in runs: the same count is an hour of 3-minute vLLM runs
and a few seconds of simulated ones. Why bounded: runs on a queue are no longer
reordered, so a higher priority or a fairer owner's run waits behind the reserve
(about reserve_s), and a cancelled sweep's waiting copies are each taken and
skipped by a worker (milliseconds apiece). `MAX_RESERVE_PER_SLOT` caps the count
where a mis-estimate (a queue of runs that last a second) would pile up thousands.

Nothing here can send a run twice: the reserve is only a larger depth; every
message still goes out through the dispatcher's send-then-mark, and during an
outage the dispatcher sends nothing, since it cannot read the backlog.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from farm.store.repository import Store

MAX_RESERVE_PER_SLOT = 50     # runs waiting per slot at most, whatever the estimate
DEFAULT_RUN_S = 60.0          # a queue's run duration before any of its runs succeeded
MIN_RUN_S = 0.1               # an estimate below this is taken as this
ESTIMATE_TTL_S = 30.0         # how long a queue's measured estimate is reused


def reserve_runs(slots: int, reserve_s: float, run_s: float | None) -> int:
    """Runs that keep `slots` workers busy for `reserve_s` seconds at `run_s` per run."""
    if slots <= 0 or reserve_s <= 0:
        return 0
    per_run_s = max(MIN_RUN_S, run_s or DEFAULT_RUN_S)
    return min(math.ceil(reserve_s * slots / per_run_s), MAX_RESERVE_PER_SLOT * slots)


class RunEstimates:
    """Each queue's recent run duration from the store, re-read at most every `ttl_s`:
    it moves slowly, and the dispatcher passes once a second. A queue with no
    history yet is asked again at the next pass."""

    def __init__(self, ttl_s: float = ESTIMATE_TTL_S):
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[float, float]] = {}    # queue → (read at, run_s)

    def run_s(self, store: Store, queues: Iterable[str]) -> dict[str, float | None]:
        """The estimate per queue (None: no run of it succeeded yet)."""
        now = time.monotonic()
        out: dict[str, float | None] = {}
        for queue in queues:
            known = self._known.get(queue)
            if known and now - known[0] < self.ttl_s:
                out[queue] = known[1]
                continue
            out[queue] = store.recent_run_s(queue)
            if out[queue] is not None:
                self._known[queue] = (now, out[queue])
        return out


def reserves(store: Store, queues: Iterable[str], slots: Mapping[str, int], reserve_s: float,
             estimates: RunEstimates | None = None) -> dict[str, int]:
    """The reserve of each queue (runs beyond its slots); the store is read only for
    queues that have live workers."""
    served = [q for q in queues if slots.get(q, 0) > 0]
    if reserve_s <= 0 or not served:
        return {}
    run_s = (estimates or RunEstimates()).run_s(store, served)
    return {q: reserve_runs(slots[q], reserve_s, run_s[q]) for q in served}
