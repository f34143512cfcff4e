"""The recorder: the only writer of results. `farm.record` and `farm.run_event`.

Results arrive as messages on the `farm.record` queue and are upserted by run
id, so a redelivered message or a re-run changes nothing already stored. A
database outage only delays recording: the task is retried with backoff (a new
message carrying the same result) until the write commits. A message the
recorder cannot read is parked in Redis (`farm:unreadable`), never dropped.

The recorder process also runs the reaper (tasks.broker_state.reap_orphans),
which hands back runs whose worker died without acknowledging them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from pydantic import ValidationError

from farm.records import RunEvent, RunResult
from farm.settings import Settings, load_settings
from farm.store.repository import Store
from tasks.app import EVENT_TASK, RECORD_TASK, app
from tasks.broker_state import UNREADABLE, BrokerState, redis_client

log = logging.getLogger(__name__)

_store: Store | None = None


def store() -> Store:
    global _store
    if _store is None:
        _store = Store.open(load_settings().db_url, upgrade=False)
    return _store


def _park(payload: str, error: Exception) -> None:
    """Keep a message the recorder cannot read in Redis (farm:unreadable) for a human."""
    BrokerState(redis_client(load_settings().broker_url)).park_unreadable(payload)
    log.error("unreadable message parked in %s: %s", UNREADABLE, error)


def _backoff_s(retries: int) -> float:
    return min(60.0, 2.0 ** retries)


@app.task(name=RECORD_TASK, bind=True, acks_late=True, max_retries=None)
def record(self, result_json: str) -> str:
    try:
        result = RunResult.model_validate_json(result_json)
    except ValidationError as exc:
        # Retrying cannot fix it (e.g. a newer worker's schema): park it, never drop it.
        _park(result_json, exc)
        return "parked"
    try:
        outcome = store().record_result(result)
    except Exception as exc:
        log.warning("store unavailable, result %s kept in the queue: %s", result.run_id, exc)
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries)) from None
    log.info("result %s attempt %d: %s", result.run_id, result.attempt, outcome)
    return outcome


@app.task(name=EVENT_TASK, bind=True, acks_late=True, max_retries=None)
def run_event(self, event_json: str) -> str:
    try:
        event = RunEvent.model_validate_json(event_json)
    except ValidationError as exc:
        _park(event_json, exc)
        return "parked"
    try:
        if event.kind == "started":
            changed = store().mark_started(event)
        else:
            changed = store().mark_requeued(event)
    except Exception as exc:
        raise self.retry(exc=exc, countdown=_backoff_s(self.request.retries)) from None
    return "updated" if changed else "ignored"


def _reaper_loop(settings: Settings, stop: threading.Event) -> None:
    state = BrokerState(redis_client(settings.broker_url))
    period_s = max(1.0, min(settings.heartbeat_s, settings.reaper_grace_s / 2))
    while not stop.wait(period_s):
        try:
            state.reap_orphans(settings.reaper_grace_s)
        except Exception:
            log.warning("reaper pass failed", exc_info=True)


def serve(node_name: str | None = None, loglevel: str = "INFO") -> None:
    """Run the recorder: upgrade the schema, start the reaper, consume `farm.record`."""
    global _store
    settings = load_settings()
    _store = Store.open(settings.db_url, upgrade=True)
    stop = threading.Event()
    reaper = threading.Thread(target=_reaper_loop, args=(settings, stop), daemon=True,
                              name="reaper")
    reaper.start()
    name = node_name or f"farm-recorder-{os.getpid()}@{socket.gethostname()}"
    try:
        app.worker_main([
            "worker", "--pool=solo", "--queues=farm.record", f"--hostname={name}",
            "--task-events", "--without-gossip", "--without-mingle",
            f"--loglevel={loglevel}",
        ])
    finally:
        stop.set()
