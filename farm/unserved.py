"""Queues that have runs waiting and no live worker serving them.

A run waits on its queue until a worker subscribed to that queue is up; nothing
else would tell the user that none is. The live workers are those advertised in
Redis (`BrokerState.workers()`, what `farmctl workers` lists): each
advertisement names the queues its worker consumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from farm_contract.statuses import PENDING_STATUSES


def waiting_per_queue(queue_counts: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """Runs queued or running per queue, from (queue, status, runs) counts."""
    waiting: dict[str, int] = {}
    for queue, status, count in queue_counts:
        if status in PENDING_STATUSES and count:
            waiting[queue] = waiting.get(queue, 0) + count
    return waiting


def unserved(waiting: Mapping[str, int], workers: Iterable[Mapping[str, Any]]
             ) -> dict[str, int]:
    """The queues of `waiting` that no live worker's advertisement names."""
    served = {queue for worker in workers for queue in worker.get("queues") or ()}
    return {queue: n for queue, n in sorted(waiting.items()) if queue not in served}


def warning(queues: Mapping[str, int]) -> str | None:
    """One line for stderr naming the unserved queues, or None when every queue is served."""
    if not queues:
        return None
    listed = ", ".join(f"{queue} ({n} run(s))" for queue, n in queues.items())
    return (f"warning: no live worker serves {listed}: those runs wait until one does "
            "(start `farmctl worker` on a host with those GPUs, or run the sweep's "
            "`farmctl run` again if it was a local one; `farmctl workers` lists the live ones)")


def check(queue_counts: Iterable[tuple[str, str, int]], state,
          extra_workers: Iterable[Mapping[str, Any]] = ()) -> str | None:
    """The warning for these counts against the workers advertised in `state`'s Redis
    and `extra_workers` (those of `farmctl run`s on their private brokers)."""
    waiting = waiting_per_queue(queue_counts)
    if not waiting:
        return None
    return warning(unserved(waiting, [*state.workers(), *extra_workers]))
