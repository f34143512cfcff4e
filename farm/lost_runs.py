"""The lost-run check: a run the store thinks is on its way that nothing in the
broker carries any more is handed back to the dispatcher.

The store says a run is `running` (a worker sent "started") or queued with a
message sent. Normally the broker holds it in one of three ways: a worker's live
claim (`farm:claim:<run_id>`, heart-beaten), its message (waiting on its queue or
taken and unacknowledged), or its result on the way to the recorder (a
`record-<run_id>-…` message, or the done marker). When none of these exists the
run is lost, whatever happened to its messages. For example: a broker connection
reset puts a running run's message back on its queue, a second worker sees the
live claim, skips the copy and acknowledges it, then the first worker dies — no
message, no claim, no result, and the unacked-message reaper
(`BrokerState.reap_orphans`) has nothing to restore.

Invariant kept here: **a run that is running in the store and that the broker no
longer holds goes back to queued**, and the dispatcher sends it again. To stay
clear of the moments when a message is between two places (popped, not yet in
`unacked`; a worker's claim re-taken after a Redis restart), a run is handed back
only when it has been seen unheld for `grace_s` on passes at least that far apart.
Should a copy still exist somewhere after all, the workers' done markers and
claims and the recorder's upsert by run id make the second execution harmless.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from farm_contract.routing import RECORD_QUEUE

if TYPE_CHECKING:   # annotations only
    from farm.store.repository import Store
    from tasks.broker_state import BrokerState

log = logging.getLogger(__name__)

REASON = ("handed back: no worker held it and no message carried it "
          "(its worker died after its message was lost)")


class LostRuns:
    """Finds lost runs across passes and hands them back (one per recorder)."""

    def __init__(self, grace_s: float, clock=time.monotonic, sweep_id: str | None = None):
        self.grace_s = grace_s
        self._clock = clock
        # `farmctl run`'s recorder looks after its sweep alone: its private broker holds
        # nothing of the other sweeps in a shared store, which are not lost for that.
        self.sweep_id = sweep_id
        self._unheld_since: dict[str, float] = {}

    def check(self, store: Store, state: BrokerState) -> list[str]:
        """One pass; returns the ids handed back now."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.grace_s)
        in_flight = dict(store.in_flight_since(cutoff, self.sweep_id))
        unheld = state.unheld(sorted(in_flight))
        if unheld:
            # Only now the costlier look: every message on those queues and unacked.
            queues = sorted({in_flight[run_id] for run_id in unheld} | {RECORD_QUEUE})
            carried = state.message_task_ids(queues)
            # A result on its way is sent as record-<run_id>-<attempt>.
            recording = {task_id[len("record-"):].rsplit("-", 1)[0] for task_id in carried
                         if task_id.startswith("record-")}
            unheld = [run_id for run_id in unheld
                      if run_id not in carried and run_id not in recording]
        now = self._clock()
        self._unheld_since = {run_id: self._unheld_since.get(run_id, now) for run_id in unheld}
        due = [run_id for run_id, since in self._unheld_since.items()
               if now - since >= self.grace_s]
        if not due:
            return []
        handed_back = store.hand_back_lost(due, REASON)
        for run_id in handed_back:
            self._unheld_since.pop(run_id, None)
            log.warning("run %s was lost (running, no claim, no message): queued again", run_id)
        return handed_back
