"""Getting a measured result to the recorder without ever losing it.

A result exists only in the worker's memory until the broker accepts it. If
the broker is down, sending is retried with backoff for as long as the worker
runs; if the worker must stop first, the result goes to a spool directory on
local disk and is sent when the worker starts again. Sending twice is harmless:
the recorder upserts by run id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from farm_contract.settings import load_settings

log = logging.getLogger(__name__)

SendFn = Callable[[str, str], None]          # (payload, task id) → None, raises if not sent


def spool_dir() -> Path:
    return Path(load_settings().spool_dir)


def deliver(send: SendFn, payload: str, task_id: str, stop: threading.Event,
            spool: Path | None = None, max_delay_s: float = 60.0) -> bool:
    """Send until the broker takes it; spool it if `stop` is set first. True if sent."""
    delay_s = 0.5
    while True:
        try:
            send(payload, task_id)
            return True
        except Exception as exc:  # any broker failure: the result must survive it
            if stop.is_set():
                path = write_spool(spool or spool_dir(), task_id, payload)
                log.error("broker unreachable while stopping; result kept in %s (%s)",
                          path, exc)
                return False
            log.warning("broker unreachable, result %s kept in memory; retrying in %.0f s: %s",
                        task_id, delay_s, exc)
            stop.wait(delay_s)
            delay_s = min(max_delay_s, delay_s * 2)


def write_spool(directory: Path, task_id: str, payload: str) -> Path:
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


