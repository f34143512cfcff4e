"""The recorder's Celery binding: the `farm.record` and `farm.run_event` tasks and
the recorder process. What they do with a message is farm.recorder's.

A store outage only delays recording: Celery retries the task (a new message
carrying the same payload) until the write commits (`STORE_RETRY`).
"""

from __future__ import annotations

import logging
import os
import socket

from farm import recorder
from farm.exporter import serve_recorder_metrics
from farm_contract.records import RunEvent, RunResult
from farm_contract.routing import RECORD_QUEUE
from farm_contract.settings import load_settings
from tasks import signing
from tasks.app import EVENT_TASK, RECORD_TASK, app, run_worker

log = logging.getLogger(__name__)

# A store outage only delays recording: Celery retries the task (a new message with
# the same payload) after 1, 2, 4 … 60 s (autoretry_for + retry_backoff, no jitter)
# for as long as it takes (max_retries=None). What cannot be read is parked, never
# raised, so it is never retried.
STORE_RETRY = {"autoretry_for": (Exception,), "retry_backoff": 1, "retry_backoff_max": 60,
               "retry_jitter": False, "max_retries": None}


@app.task(name=RECORD_TASK, acks_late=True, **STORE_RETRY)
def record(result_json: str, host_signature: dict | None = None) -> str:
    """The `farm.record` task: store one `RunResult` (JSON), signed by its worker host
    where signatures are required (tasks/signing.py); returns the store's outcome."""
    return recorder.apply(RunResult, result_json, recorder.record_result, host_signature)


@app.task(name=EVENT_TASK, acks_late=True, **STORE_RETRY)
def run_event(event_json: str, host_signature: dict | None = None) -> str:
    """The `farm.run_event` task: mark a run started or requeued ("updated" or "ignored");
    signed like results."""
    return recorder.apply(RunEvent, event_json, recorder.apply_event, host_signature)


def serve(node_name: str | None = None, loglevel: str = "INFO") -> int:
    """Run the recorder: upgrade the schema, start the reaper and the dispatcher,
    consume `farm.record`. Returns Celery's exit status (non-zero when it stopped
    on an error)."""
    settings = load_settings()
    recorder.open_store(settings)
    serve_recorder_metrics(settings)     # /metrics on FARM_METRICS_PORT, if set
    # A keyring farm cannot read stops the recorder here, not at the first result.
    keys = signing.keyring(settings)
    log.info("results: %s", f"signed by their host required ({len(keys.keys)} host(s) "
             "known)" if keys else "unsigned accepted (FARM_SIGNING_KEYS unset)")
    stop = recorder.start_background(settings)
    name = node_name or f"farm-recorder-{os.getpid()}@{socket.gethostname()}"
    try:
        return run_worker(app, hostname=name, queues=[RECORD_QUEUE], pool="solo",
                          loglevel=loglevel)
    finally:
        stop.set()
