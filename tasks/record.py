"""The recorder: the only writer of results. `farm.record` and `farm.run_event`.

Results arrive as messages on the `farm.record` queue and are upserted by run
id, so a redelivered message or a re-run changes nothing already stored. A
database outage only delays recording: the task is retried with backoff (a new
message carrying the same result) until the write commits (Celery's autoretry,
`STORE_RETRY`). A message the
recorder cannot read is parked in Redis (`farm:unreadable`), never dropped.

The recorder process also runs the reaper (tasks.broker_state.reap_orphans),
which hands back runs whose worker died without acknowledging them, and the
dispatcher (farm.dispatch), which tops the GPU queues up from the store's queued
runs by priority and fair share, once a second.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from farm.exporter import serve_recorder_metrics
from farm.store.repository import Store
from farm_contract.records import RunEvent, RunResult
from farm_contract.routing import RECORD_QUEUE
from farm_contract.settings import Settings, load_settings
from tasks import signing
from tasks.app import EVENT_TASK, RECORD_TASK, app, run_worker
from tasks.broker_state import UNREADABLE, BrokerState, redis_client

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)

_store: Store | None = None


def store() -> Store:
    """The recorder's store, opened on first use (without a schema upgrade)."""
    global _store
    if _store is None:
        _store = Store.open(load_settings().db_url, upgrade=False)
    return _store


def _park(payload: object, error: Exception | str) -> None:
    """Keep a message the recorder cannot use in Redis (farm:unreadable) for a human,
    with the reason."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    BrokerState(redis_client(load_settings().broker_url)).park_unreadable(
        payload, queue=RECORD_QUEUE, reason=reason)
    log.error("unreadable message parked in %s: %s", UNREADABLE, error)


def _forget_done(run_id: str) -> None:
    """A refused result was not stored: drop the worker's done marker, so that
    `farmctl retry` measures the run again once the host's key is right."""
    try:
        BrokerState(redis_client(load_settings().broker_url)).forget_done(run_id)
    except Exception:   # the result is parked either way; only a retry would skip it
        log.warning("done marker of %s not dropped", run_id, exc_info=True)


# A store outage only delays recording: Celery retries the task (a new message with
# the same payload) after 1, 2, 4 … 60 s (autoretry_for + retry_backoff, no jitter)
# for as long as it takes (max_retries=None). What cannot be read is parked, never
# raised, so it is never retried.
STORE_RETRY = {"autoretry_for": (Exception,), "retry_backoff": 1, "retry_backoff_max": 60,
               "retry_jitter": False, "max_retries": None}


def _apply(model: type[T], payload: str, write: Callable[[T], str],
           signature: object = None) -> str:
    """Decode `payload` as `model` and write it to the store; park what cannot be read
    (retrying cannot fix a newer worker's schema) or was not signed by the host it
    names while signatures are required; a failed write raises, and the task
    retries it (STORE_RETRY)."""
    try:
        if not isinstance(payload, str | bytes):
            raise TypeError(f"{model.__name__} argument is a {type(payload).__name__}, "
                            "not a JSON string")
        message = model.model_validate_json(payload)
    except (ValidationError, TypeError) as exc:
        _park(payload, exc)
        return "parked"
    refused = signing.refusal(message.worker.host, payload, signature)  # type: ignore[attr-defined]
    if refused:
        _park(payload, f"{model.__name__} refused: {refused}")
        if isinstance(message, RunResult):
            _forget_done(message.run_id)
        return "parked"
    try:
        return write(message)
    except Exception as exc:
        log.warning("store unavailable, %s kept for a retry: %s", model.__name__, exc)
        raise


def _record_result(result: RunResult) -> str:
    outcome = store().record_result(result)
    log.info("result %s attempt %d: %s", result.run_id, result.attempt, outcome)
    if outcome == "unknown_run":
        # Not this store's run (another farm's broker, a deleted sweep): keep it.
        _park(result.model_dump_json(), f"result for run {result.run_id}, "
                                        "which this store does not know")
        return outcome
    # Even for a duplicate: the first delivery may have been recorded by a recorder
    # that died before deciding. Adding is idempotent (farm/adaptive.py).
    _extend_adaptive(result.run_id)
    return outcome


def _extend_adaptive(run_id: str) -> None:
    """Adaptive repetitions: add the configuration's next repetition if its CI is not
    yet within the target (the dispatcher sends it). A failure raises: the task is
    retried (STORE_RETRY), the result then reads as a duplicate and the decision is
    taken again — else the configuration, with nothing left running, would stall."""
    from farm import adaptive

    def cancelled(sweep_id: str) -> bool:    # asked only when a run would be added
        return BrokerState(redis_client(load_settings().broker_url)).is_cancelled(sweep_id)

    for run in adaptive.after_result(store(), run_id, cancelled):
        log.info("adaptive repetitions: added repetition %d after run %s (%s)",
                 run.repetition, run_id, run.run_id)


def _apply_event(event: RunEvent) -> str:
    write = store().mark_started if event.kind == "started" else store().mark_requeued
    return "updated" if write(event) else "ignored"


@app.task(name=RECORD_TASK, acks_late=True, **STORE_RETRY)
def record(result_json: str, host_signature: dict | None = None) -> str:
    """The `farm.record` task: store one `RunResult` (JSON), signed by its worker host
    where signatures are required (tasks/signing.py); returns the store's outcome."""
    return _apply(RunResult, result_json, _record_result, host_signature)


@app.task(name=EVENT_TASK, acks_late=True, **STORE_RETRY)
def run_event(event_json: str, host_signature: dict | None = None) -> str:
    """The `farm.run_event` task: mark a run started or requeued ("updated" or "ignored");
    signed like results."""
    return _apply(RunEvent, event_json, _apply_event, host_signature)


def _reaper_loop(settings: Settings, stop: threading.Event) -> None:
    from farm.lost_runs import LostRuns
    state = BrokerState(redis_client(settings.broker_url))
    lost = LostRuns(settings.reaper_grace_s)
    period_s = max(1.0, min(settings.heartbeat_s, settings.reaper_grace_s / 2))
    while not stop.wait(period_s):
        try:
            state.reap_orphans(settings.reaper_grace_s)
            # Then the store's view: a running run the broker no longer holds at all.
            lost.check(store(), state)
        except Exception:
            log.warning("reaper pass failed", exc_info=True)


DISPATCH_PERIOD_S = 1.0


def serve(node_name: str | None = None, loglevel: str = "INFO") -> int:
    """Run the recorder: upgrade the schema, start the reaper and the dispatcher,
    consume `farm.record`. Returns Celery's exit status (non-zero when it stopped
    on an error)."""
    from farm.dispatch import serve_forever

    global _store
    settings = load_settings()
    _store = Store.open(settings.db_url, upgrade=True)
    serve_recorder_metrics(settings)     # /metrics on FARM_METRICS_PORT, if set
    # A keyring farm cannot read stops the recorder here, not at the first result.
    keys = signing.keyring(settings)
    log.info("results: %s", f"signed by their host required ({len(keys.keys)} host(s) "
             "known)" if keys else "unsigned accepted (FARM_SIGNING_KEYS unset)")
    stop = threading.Event()
    reaper = threading.Thread(target=_reaper_loop, args=(settings, stop), daemon=True,
                              name="reaper")
    reaper.start()
    dispatcher = threading.Thread(
        target=serve_forever, daemon=True, name="dispatcher",
        args=(store, BrokerState(redis_client(settings.broker_url)), stop, DISPATCH_PERIOD_S))
    dispatcher.start()
    name = node_name or f"farm-recorder-{os.getpid()}@{socket.gethostname()}"
    try:
        return run_worker(app, hostname=name, queues=[RECORD_QUEUE], pool="solo",
                          loglevel=loglevel)
    finally:
        stop.set()
