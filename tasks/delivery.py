"""Getting a measured result to the recorder without ever losing it.

A result exists only in the worker's memory until the broker accepts it. If
the broker is down, sending is retried with backoff for as long as the worker
runs; if the worker must stop first, the result goes to a spool directory on
local disk and is sent when the worker starts again. Sending twice is harmless:
the recorder upserts by run id.

Two layers of retry: each send (`app.send_task`) already retries a dropped
connection by Celery's publish retry policy (kombu's `retry_policy`: a few
tries within about a second). `deliver` retries around it, for an outage of
any length, with kombu's `retry_over_time`: exponential backoff (0.5 s, 1 s,
2 s … `max_delay_s`), forever, but cut short by the worker's stop event, which
kombu's own policies cannot observe — the result then goes to the spool.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from kombu.utils.functional import retry_over_time

from farm_contract.settings import load_settings

log = logging.getLogger(__name__)

SendFn = Callable[[str, str], None]          # (payload, task id) → None, raises if not sent
FIRST_DELAY_S = 0.5


class _Stopping(Exception):
    """The worker is stopping: give up sending, spool the result."""

    def __init__(self, cause: BaseException | None):
        super().__init__(str(cause))
        self.cause = cause


def spool_dir() -> Path:
    """Where this worker spools results it could not send (FARM_SPOOL_DIR)."""
    return Path(load_settings().spool_dir)


def deliver(send: SendFn, payload: str, task_id: str, stop: threading.Event,
            spool: Path | None = None, max_delay_s: float = 60.0) -> bool:
    """Send until the broker takes it; spool it if `stop` is set first. True if sent.

    Any exception of `send` counts as a broker failure: the result must survive
    it. While retrying, `stop` is looked at before each wait and every second
    of it (kombu's retry_over_time calls back once a second).
    """
    def wait_or_stop(exc: Exception, _intervals: Iterator[float], retries: int) -> float:
        if stop.is_set():
            raise _Stopping(exc)
        delay_s = min(max_delay_s, FIRST_DELAY_S * 2 ** retries)
        log.warning("broker unreachable, result %s kept in memory; retrying in %.1f s: %s",
                    task_id, delay_s, exc)
        return delay_s

    def stopping() -> None:
        # Called while kombu handles the send's failure: exc_info is that failure.
        if stop.is_set():
            raise _Stopping(sys.exc_info()[1])

    try:
        retry_over_time(send, Exception, args=(payload, task_id), errback=wait_or_stop,
                        max_retries=None, interval_max=max_delay_s, callback=stopping)
        return True
    except _Stopping as stopped:
        path = write_spool(spool or spool_dir(), task_id, payload)
        log.error("broker unreachable while stopping; result kept in %s (%s)",
                  path, stopped.cause)
        return False


def write_spool(directory: Path, task_id: str, payload: str) -> Path:
    """Write `payload` as DIRECTORY/TASK_ID.json, atomically; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{task_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(payload)
    tmp.replace(path)           # atomic: a half-written file is never sent
    return path


def drain_spool(send: SendFn, directory: Path | None = None) -> int:
    """Send every spooled result (at worker start). Returns how many were sent."""
    directory = directory or spool_dir()
    if not directory.is_dir():
        return 0
    sent = 0
    for path in sorted(directory.glob("*.json")):
        try:
            send(path.read_text(), path.stem)
        except Exception as exc:  # broker still down: keep the files for next start
            log.warning("spooled results stay in %s: %s", directory, exc)
            break
        path.unlink()
        sent += 1
    if sent:
        log.info("sent %d spooled result(s) from %s", sent, directory)
    return sent


