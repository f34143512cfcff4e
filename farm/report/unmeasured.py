"""A sweep's runs without figures, told apart: failed, or not measured yet.

`recommend` and `compare` counted every run without figures as "failed", so a
sweep still queued read as a sweep whose runs had all failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from farm_contract.statuses import PENDING_STATUSES


@dataclass(frozen=True)
class Unmeasured:
    """Runs without figures: failed (or succeeded without a load point), queued or
    running (not measured yet), cancelled."""

    failed: int = 0
    pending: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, points: Iterable[Any]) -> Unmeasured:
        """Counted over the runs of `points` (RunPoints) that are not measured."""
        status = {p.run_id: p.status for p in points if not p.measured}
        values = list(status.values())
        pending = sum(s in PENDING_STATUSES for s in values)
        cancelled = values.count("cancelled")
        return cls(len(values) - pending - cancelled, pending, cancelled)

    def phrases(self) -> list[str]:
        """One phrase per kind there is, e.g. "3 run(s) not measured yet (queued or running)"."""
        out = []
        if self.failed:
            out.append(f"{self.failed} failed run(s) (no figures)")
        if self.pending:
            out.append(f"{self.pending} run(s) not measured yet (queued or running)")
        if self.cancelled:
            out.append(f"{self.cancelled} cancelled run(s)")
        return out
