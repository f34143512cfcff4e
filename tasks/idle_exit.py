"""`farmctl worker --idle-exit-s N`: the worker stops once it has held no run for N s.

Made for workers that a batch scheduler starts (farm/slurm): a job whose queue
ran dry gives its GPUs back instead of holding them until its time limit. The
stop is the worker's own SIGTERM, so it takes exactly the path of a planned
stop — the advertisement withdrawn, Celery's warm shutdown, exit status 0 —
and a run taken in the very moment of the stop is handed back, never lost.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def celery_busy() -> bool:
    """Whether this Celery worker has a task received or in progress (a run being
    claimed, measured or delivered, or a message reserved behind it)."""
    from celery.worker import state

    return bool(state.active_requests or state.reserved_requests)


class IdleExit:
    """Calls `stop` once `busy()` has been false for `idle_s` seconds in a row."""

    def __init__(self, idle_s: float, busy: Callable[[], bool],
                 stop: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.idle_s = idle_s
        self.busy = busy
        self.stop = stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.clock = clock
        self.idle_since = clock()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="idle-exit")

    def check(self) -> bool:
        """One look: True when the worker has been idle long enough (and `stop` was called)."""
        now = self.clock()
        if self.busy():
            self.idle_since = now
            return False
        if now - self.idle_since < self.idle_s:
            return False
        log.info("no run for %.0f s (--idle-exit-s): stopping", now - self.idle_since)
        self.stop()
        return True

    def _loop(self) -> None:
        period_s = max(0.1, min(1.0, self.idle_s / 4))
        while not self._halt.wait(period_s):
            try:
                if self.check():
                    return
            except Exception:   # a failed look must not end the watch
                log.warning("idle check failed", exc_info=True)

    def start(self) -> IdleExit:
        """Watch from now on, in a daemon thread."""
        self.idle_since = self.clock()
        self._thread.start()
        return self

    def halt(self) -> None:
        """Stop watching (the worker stops anyway)."""
        self._halt.set()
