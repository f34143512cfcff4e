"""The recorder's tasks (tasks/record.py) over farm/recorder.py: unreadable messages are
parked, a store outage retries."""

from __future__ import annotations

import pytest

import farm.recorder as recorder
import tasks.record as record
from farm_contract.records import RunEvent


def test_an_unreadable_message_is_parked_never_dropped(monkeypatch):
    parked = []
    monkeypatch.setattr(recorder, "park", lambda payload, error: parked.append(payload))
    assert recorder.apply(RunEvent, '{"run_id": 1', lambda e: "x") == "parked"
    assert parked == ['{"run_id": 1']


@pytest.mark.parametrize(("retries", "countdown"), [(0, 1), (3, 8), (5, 32), (6, 60), (20, 60)])
def test_a_store_outage_retries_with_backoff(monkeypatch, retries, countdown):
    """Celery's autoretry (STORE_RETRY): 2 ** retries s, capped at 60 s, no jitter."""
    from celery.exceptions import Retry

    class DownStore:
        def mark_started(self, _event):
            raise ConnectionError("database is down")

    asked = {}

    def retry(exc=None, countdown=None, **_):
        asked.update(exc=exc, countdown=countdown)
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(recorder, "store", DownStore)
    monkeypatch.setattr(record.run_event, "retry", retry)
    payload = ('{"run_id": "r", "kind": "started", "attempt": 1, "at": "2026-11-22T00:00:00Z",'
               ' "worker": {"name": "w", "host": "h", "pid": 1}}')
    record.run_event.push_request(retries=retries)
    try:
        with pytest.raises(Retry):
            record.run_event(payload)
    finally:
        record.run_event.pop_request()
    assert asked["countdown"] == countdown and isinstance(asked["exc"], ConnectionError)
    assert record.run_event.max_retries is None and record.record.max_retries is None
    assert recorder.apply(RunEvent, payload, lambda e: f"wrote {e.run_id}") == "wrote r"


def test_an_argument_that_is_not_a_string_is_parked_with_the_reason(monkeypatch):
    parked = []
    monkeypatch.setattr(recorder, "park", lambda payload, error: parked.append((payload, error)))
    assert recorder.apply(RunEvent, {"run_id": "r"}, lambda e: "x") == "parked"
    (payload, error), = parked
    assert payload == {"run_id": "r"}
    assert "RunEvent argument is a dict, not a JSON string" in str(error)


def test_a_result_for_a_run_the_store_does_not_know_is_parked(monkeypatch):
    parked = []
    monkeypatch.setattr(recorder, "park", lambda payload, error: parked.append((payload, error)))

    class Store:
        def record_result(self, result):
            return "unknown_run"

    monkeypatch.setattr(recorder, "store", Store)
    from tests.factories import result as make_result  # a complete RunResult

    result = make_result("deadbeef")
    assert recorder.record_result(result) == "unknown_run"
    (payload, error), = parked
    assert '"run_id":"deadbeef"' in payload and "does not know" in error
