"""Where each running run is, published to Redis off the measurement path.

The runner tells its load points as they begin (for `farmctl run`'s progress
display, `farm:progress:<run_id>`). A Redis write can block for the socket
timeout (30 s) when the link to the broker is partitioned: done inline, it held a
loaded engine idle between warm-up and the measured load point. So `tell` and
`forget` only hand the update to one publishing thread and return at once; the
thread writes the newest update of each run, in order, and drops what a later
one replaces. Progress is for the screen: a lost update costs nothing measured.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SetFn = Callable[[str, dict[str, Any]], None]   # (run id, info) → None
ClearFn = Callable[[str], None]                 # (run id) → None


class ProgressPublisher:
    """Writes the newest progress of each run from a daemon thread, never blocking callers."""

    def __init__(self, set_progress: SetFn, clear_progress: ClearFn):
        self._set, self._clear = set_progress, clear_progress
        self._pending: dict[str, dict[str, Any] | None] = {}   # None: clear it
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def tell(self, run_id: str, info: dict[str, Any]) -> None:
        """Publish `info` as the run's progress, soon; returns at once."""
        self._put(run_id, info)

    def forget(self, run_id: str) -> None:
        """Remove the run's progress, soon (after any update told before); returns at once."""
        self._put(run_id, None)

    def _put(self, run_id: str, info: dict[str, Any] | None) -> None:
        with self._wake:
            self._pending.pop(run_id, None)     # re-insert: keeps the order of arrival
            self._pending[run_id] = info
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="progress")
                self._thread.start()
            self._wake.notify()

    def idle(self, timeout_s: float) -> bool:
        """Wait until everything told has been written (for tests and shutdown)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._pending, timeout_s)

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending)
                run_id, info = next(iter(self._pending.items()))
            try:
                if info is None:
                    self._clear(run_id)
                else:
                    self._set(run_id, info)
            except Exception:   # it expires on its own; the next update tries again
                log.warning("progress of %s not published", run_id, exc_info=True)
            with self._wake:
                # Done, unless a newer update for this run arrived while writing.
                if self._pending.get(run_id, ...) is info:
                    del self._pending[run_id]
                self._wake.notify_all()
