"""The recorder's Prometheus collector: runs, queues, the energy ledger and worker liveness.

From the store (DB-API reads: farm/store/counts.py and farm/store/ledger.py, the
same SQL as `farmctl status`) and from Redis (queue lengths, worker
advertisements, parked messages). A scrape reads them at most once per
`read_every_s` and serves that snapshot in between: several Prometheus servers,
or a short scrape interval, must not turn into a query loop on the store.

A source that cannot be read leaves its metrics out of the snapshot (and
`farm_store_up` / `farm_broker_up` say 0): no 0 stands in for an unread count.

Worker liveness: each worker whose advertisement (renewed every heartbeat,
expiring after three) is in Redis is up (1); one seen earlier by this recorder
whose advertisement has expired is down (0) for an hour, then forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from farm.store import counts, ledger
from farm_contract.settings import Settings
from farm_contract.statuses import PENDING_STATUSES, RUN_STATUSES
from tasks.broker_state import BrokerState, redis_client
from tasks.metrics_http import serve_metrics

log = logging.getLogger(__name__)

READ_EVERY_S = 5.0
FORGET_WORKER_AFTER_S = 3600.0
WORKER_LABELS = ["worker", "Hostname", "backend"]
LEDGER_LABELS = ["owner", "gpu_model", "simulated"]


class RecorderCollector(Collector):
    """Farm-wide metrics for a prometheus_client registry, read from store and broker."""

    def __init__(self, db_url: str, state: BrokerState, *, fair_share_window_s: float,
                 read_every_s: float = READ_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.db_url, self.state = db_url, state
        self.window_s, self.read_every_s, self._clock = fair_share_window_s, read_every_s, clock
        self._lock = threading.Lock()
        self._snapshot: list[Metric] = []
        self._read_at: float | None = None
        # worker name → (label values, last time its advertisement was seen)
        self._workers: dict[str, tuple[list[str], float]] = {}
        # Queues with queued or running runs at the last store read: their depth is
        # read even when no live worker advertises them (runs nobody serves).
        self._queues: set[str] = set()

    def describe(self) -> list[Metric]:
        """Nothing: registering must not read the store (collect is called per scrape)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The snapshot, read again when older than `read_every_s`."""
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self.read_every_s:
                self._snapshot = [*self._read_store(), *self._read_broker(now)]
                self._read_at = now
            yield from self._snapshot

    # ----------------------------------------------------------------- store

    def _read_store(self) -> list[Metric]:
        up = GaugeMetricFamily("farm_store_up", "1 when the recorder's last read of the "
                               "store succeeded, else 0.")
        try:
            with counts.connect(self.db_url) as connection:
                owners = counts.owner_counts(connection, self.window_s)
                queues = counts.queue_counts(connection)
                rows = ledger.energy_ledger(connection)
        except Exception as exc:
            log.warning("metrics: the store cannot be read (%s)", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        self._queues = {queue for queue, status, n in queues
                        if status in PENDING_STATUSES and n}
        return [up, *_owner_families(owners, self.window_s), _queue_runs(queues),
                *_ledger_families(rows)]

    # ---------------------------------------------------------------- broker

    def _read_broker(self, now: float) -> list[Metric]:
        up = GaugeMetricFamily("farm_broker_up", "1 when the recorder's last read of Redis "
                               "succeeded, else 0.")
        try:
            adverts = self.state.workers()
            queues = self._queues | {
                q for advert in adverts for q in advert.get("queues") or ()}
            lengths = {queue: self.state.queue_length(queue) for queue in sorted(queues)}
            unreadable = self.state.unreadable_count()
        except Exception as exc:
            log.warning("metrics: Redis cannot be read (%s)", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        depth = GaugeMetricFamily("farm_queue_messages", "Messages waiting on the GPU queue "
                                  "in Redis (the dispatcher keeps the rest in the store).",
                                  labels=["queue"])
        for queue, length in lengths.items():
            depth.add_metric([queue], length)
        parked = GaugeMetricFamily("farm_unreadable_messages", "Messages parked in "
                                   "farm:unreadable (`farmctl status` names them).")
        parked.add_metric([], unreadable)
        return [up, depth, parked, *self._worker_families(adverts, now)]

    def _worker_families(self, adverts: list[dict[str, Any]], now: float) -> list[Metric]:
        alive = GaugeMetricFamily("farm_worker_up", "1 while the worker's advertisement is "
                                  "in Redis; 0 once it expired (kept an hour).",
                                  labels=WORKER_LABELS)
        gpus = GaugeMetricFamily("farm_worker_gpus", "GPUs the worker advertises, by model "
                                 "and state (free, settling, running, held).",
                                 labels=[*WORKER_LABELS, "model", "state"])
        live = set()
        for advert in adverts:
            name = str(advert.get("name"))
            labels = [name, str(advert.get("host", "")), str(advert.get("backend", ""))]
            self._workers[name] = (labels, now)
            live.add(name)
            for (model, state), n in sorted(_gpu_states(advert).items()):
                gpus.add_metric([*labels, model, state], n)
        for name, (labels, seen) in list(self._workers.items()):
            if name not in live and now - seen > FORGET_WORKER_AFTER_S:
                del self._workers[name]
                continue
            alive.add_metric(labels, 1 if name in live else 0)
        return [alive, gpus]


def _gpu_states(advert: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(model, state) → GPUs of one advertisement; state "unknown" where it says none."""
    states = {s.get("uuid"): s for s in advert.get("gpu_states") or ()}
    out: dict[tuple[str, str], int] = {}
    for gpu in advert.get("gpus") or ():
        seen = states.get(gpu.get("uuid"))
        state = "unknown" if seen is None else str(seen.get("state"))
        if state == "free" and seen is not None and not seen.get("settled", True):
            state = "settling"
        key = (str(gpu.get("model")), state)
        out[key] = out.get(key, 0) + 1
    return out


def _owner_families(owners: list[dict[str, Any]], window_s: float) -> list[Metric]:
    runs = GaugeMetricFamily("farm_runs", "Runs in the store by owner and status.",
                             labels=["owner", "status"])
    waiting = GaugeMetricFamily("farm_runs_waiting", "Queued runs not yet on a broker "
                                "queue (the dispatcher sends them by priority and fair "
                                "share).", labels=["owner"])
    share = GaugeMetricFamily("farm_owner_fair_share_gpu_seconds", "GPU-seconds the owner "
                              f"used in the fair-share window (last {window_s:g} s).",
                              labels=["owner"])
    for row in owners:
        for status in RUN_STATUSES:
            runs.add_metric([row["owner"], status], row[status])
        waiting.add_metric([row["owner"]], row["waiting"])
        share.add_metric([row["owner"]], row["gpu_hours"] * 3600)
    return [runs, waiting, share]


def _queue_runs(queues: list[tuple[str, str, int]]) -> Metric:
    family = GaugeMetricFamily("farm_queue_runs", "Runs in the store by GPU queue and status.",
                               labels=["queue", "status"])
    for queue, status, n in queues:
        family.add_metric([queue, status], n)
    return family


def _ledger_families(rows: list[ledger.LedgerRow]) -> list[Metric]:
    results = CounterMetricFamily("farm_owner_results", "Stored results (succeeded or "
                                  "failed) by owner, GPU model and simulated.",
                                  labels=LEDGER_LABELS)
    seconds = CounterMetricFamily("farm_owner_gpu_seconds", "GPU-seconds of the stored "
                                  "results: duration × GPUs.", labels=LEDGER_LABELS)
    joules = CounterMetricFamily("farm_owner_energy_joules", "GPU energy of the stored "
                                 "results' whole-run windows (gross of idle); absent "
                                 "where no result was metered.", labels=LEDGER_LABELS)
    unmetered = CounterMetricFamily("farm_owner_unmetered_results", "Results whose "
                                    "whole-run window has no energy (their GPU-seconds "
                                    "count, their joules are unknown).", labels=LEDGER_LABELS)
    for row in rows:
        labels = [row.owner, row.gpu_model, "true" if row.simulated else "false"]
        results.add_metric(labels, row.results)
        seconds.add_metric(labels, row.gpu_seconds)
        unmetered.add_metric(labels, row.unmetered)
        if row.energy_j is not None:
            joules.add_metric(labels, row.energy_j)
    return [results, seconds, joules, unmetered]


def serve_recorder_metrics(settings: Settings) -> Any | None:
    """Start the recorder's /metrics (FARM_METRICS_PORT; None when off): its HTTP server."""
    state = BrokerState(redis_client(settings.broker_url, settings))
    collector = RecorderCollector(settings.db_url, state,
                                  fair_share_window_s=settings.fair_share_window_s)
    return serve_metrics(settings, collector, "recorder")
