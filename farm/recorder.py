"""The recorder: the only writer of results, and the threads beside it.

Coordinator code: what `farm.record` and `farm.run_event` do with a message
(tasks/record.py binds them to Celery). Results are upserted by run id, so a
redelivered message or a re-run changes nothing already stored. A database
outage only delays recording: a failed write raises, and the task is retried
with backoff until the write commits. A message the recorder cannot read is
parked in Redis (`farm:unreadable`), never dropped.

The recorder process also runs the reaper (tasks.broker_state.reap_orphans),
which hands back runs whose worker died without acknowledging them, and the
dispatcher (farm.dispatch), which tops the GPU queues up from the store's queued
runs by priority and fair share, once a second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError

from farm.store.repository import Store
from farm_contract.records import RunEvent, RunResult
from farm_contract.routing import RECORD_QUEUE
from farm_contract.settings import Settings, load_settings
from tasks import signing
from tasks.broker_state import UNREADABLE, BrokerState, redis_client

log = logging.getLogger(__name__)
T = TypeVar("T", bound=BaseModel)

DISPATCH_PERIOD_S = 1.0

_store: Store | None = None


def store() -> Store:
    """The recorder's store, opened on first use (without a schema upgrade)."""
    global _store
    if _store is None:
        _store = Store.open(load_settings().db_url, upgrade=False)
    return _store


def open_store(settings: Settings) -> Store:
    """Open the recorder's store, upgrading its schema (the recorder's start)."""
    global _store
    _store = Store.open(settings.db_url, upgrade=True)
    return _store


def park(payload: object, error: Exception | str) -> None:
    """Keep a message the recorder cannot use in Redis (farm:unreadable) for a human,
    with the reason."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    BrokerState(redis_client(load_settings().broker_url)).park_unreadable(
        payload, queue=RECORD_QUEUE, reason=reason)
    log.error("unreadable message parked in %s: %s", UNREADABLE, error)


def forget_done(run_id: str, refused: str) -> None:
    """A refused result was not stored: drop the worker's done marker, so that
    `farmctl retry` measures the run again once the host's key is right, and fail
    the run meanwhile (left in flight, the lost-run check would send it again at
    once, to be measured and refused again, round after round)."""
    try:
        BrokerState(redis_client(load_settings().broker_url)).forget_done(run_id)
    except Exception:   # the result is parked either way; only a retry would skip it
        log.warning("done marker of %s not dropped", run_id, exc_info=True)
    try:
        store().mark_refused(run_id, f"its result was refused ({refused}) and parked in "
                                     f"{UNREADABLE}: fix the host's signing key, then "
                                     "`farmctl retry`")
    except Exception:   # the store is away: the lost-run check may send it once more
        log.warning("run %s not marked failed after its refused result", run_id,
                    exc_info=True)


def apply(model: type[T], payload: str, write: Callable[[T], str],
          signature: object = None) -> str:
    """Decode `payload` as `model` and write it to the store; park what cannot be read
    (retrying cannot fix a newer worker's schema) or was not signed by the host it
    names while signatures are required; a failed write raises, and the task
    retries it (tasks.record.STORE_RETRY)."""
    try:
        if not isinstance(payload, str | bytes):
            raise TypeError(f"{model.__name__} argument is a {type(payload).__name__}, "
                            "not a JSON string")
        message = model.model_validate_json(payload)
    except (ValidationError, TypeError) as exc:
        park(payload, exc)
        return "parked"
    refused = signing.refusal(message.worker.host, payload, signature)  # type: ignore[attr-defined]
    if refused:
        park(payload, f"{model.__name__} refused: {refused}")
        if isinstance(message, RunResult):
            forget_done(message.run_id, refused)
        return "parked"
    if NUL_ESCAPE in payload:
        message = without_nul(model, message)
    try:
        return write(message)
    except DataError as exc:
        # The store cannot hold a value of it, now or on any retry: kept, not looped on.
        park(payload, f"{model.__name__} not storable: {exc.orig or exc}")
        return "parked"
    except Exception as exc:
        log.warning("store unavailable, %s kept for a retry: %s", model.__name__, exc)
        raise


NUL_ESCAPE = "\\u0000"
REPLACEMENT = "\ufffd"


def without_nul(model: type[T], message: T) -> T:
    """`message` with every NUL character in its text replaced by U+FFFD: PostgreSQL's
    text and JSON cannot hold one (an engine's log tail or a server's error body
    can), and SQLite can, so the same result was stored by one store and retried
    for ever by the other."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\0", REPLACEMENT)
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return model.model_validate(clean(message.model_dump(mode="json")))


def record_result(result: RunResult) -> str:
    """Store one result (the store's outcome); a result for a run the store does not
    know is parked; adaptive repetitions decide on the configuration after it."""
    outcome = store().record_result(result)
    log.info("result %s attempt %d: %s", result.run_id, result.attempt, outcome)
    if outcome == "unknown_run":
        # Not this store's run (another farm's broker, a deleted sweep): keep it.
        park(result.model_dump_json(), f"result for run {result.run_id}, "
                                       "which this store does not know")
        return outcome
    # Even for a duplicate: the first delivery may have been recorded by a recorder
    # that died before deciding. Adding is idempotent (farm/adaptive.py).
    extend_adaptive(result.run_id)
    return outcome


def extend_adaptive(run_id: str) -> None:
    """Adaptive repetitions: add the configuration's next repetition if its CI is not
    yet within the target (the dispatcher sends it). A failure raises: the task is
    retried, the result then reads as a duplicate and the decision is taken again —
    else the configuration, with nothing left running, would stall."""
    from farm import adaptive

    def cancelled(sweep_id: str) -> bool:    # asked only when a run would be added
        return BrokerState(redis_client(load_settings().broker_url)).is_cancelled(sweep_id)

    for run in adaptive.after_result(store(), run_id, cancelled):
        log.info("adaptive repetitions: added repetition %d after run %s (%s)",
                 run.repetition, run_id, run.run_id)


def apply_event(event: RunEvent) -> str:
    """Mark a run started or requeued: "updated", or "ignored" when it does not apply."""
    write = store().mark_started if event.kind == "started" else store().mark_requeued
    return "updated" if write(event) else "ignored"


def _reaper_loop(settings: Settings, stop: threading.Event) -> None:
    from farm.lost_runs import LostRuns
    state = BrokerState(redis_client(settings.broker_url))
    lost = LostRuns(settings.reaper_grace_s, sweep_id=settings.dispatch_sweep)
    period_s = max(1.0, min(settings.heartbeat_s, settings.reaper_grace_s / 2))
    while not stop.wait(period_s):
        try:
            state.reap_orphans(settings.reaper_grace_s)
            # Then the store's view: a running run the broker no longer holds at all.
            lost.check(store(), state)
        except Exception:
            log.warning("reaper pass failed", exc_info=True)


def start_background(settings: Settings) -> threading.Event:
    """Start the reaper and the dispatcher threads; setting the event returned stops them."""
    from farm.dispatch import serve_forever

    stop = threading.Event()
    threading.Thread(target=_reaper_loop, args=(settings, stop), daemon=True,
                     name="reaper").start()
    threading.Thread(
        target=serve_forever, daemon=True, name="dispatcher",
        args=(store, BrokerState(redis_client(settings.broker_url)), stop, DISPATCH_PERIOD_S),
    ).start()
    return stop
