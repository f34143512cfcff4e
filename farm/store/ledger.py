"""The energy ledger: GPU-seconds and joules per owner, from the stored results.

What a lab can bill by. Every stored result counts, succeeded or failed (the
GPUs were held either way); a run handed back before it produced a result
counts nothing. GPU-seconds are the result's duration × the run's GPUs; joules
are the run's whole-run energy window (`run`: from before the idle baselines to
after the engine stopped, every GPU of the run, counter deltas), gross of idle.
A run whose window has no energy (a GPU without a counter, a counter reset) adds
its GPU-seconds but no joules, and is counted as unmetered: never 0 J.

Read with the DB-API driver alone, like farm/store/counts.py, so the recorder's
metrics cost no ORM work per scrape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# One row per (owner, GPU model, simulated): results, GPU-seconds, joules (NULL when
# no run of the group was metered) and metered runs. One `run` window per result.
_LEDGER = ("SELECT s.owner, r.gpu_model, r.simulated, COUNT(*), "
           "SUM(res.duration_s * r.gpu_count), SUM(w.energy_j), COUNT(w.energy_j) "
           "FROM results res JOIN runs r ON r.id = res.run_id "
           "JOIN sweeps s ON s.id = r.sweep_id "
           "LEFT JOIN energy_windows w ON w.run_id = res.run_id AND w.name = 'run' "
           "GROUP BY s.owner, r.gpu_model, r.simulated")


@dataclass(frozen=True)
class LedgerRow:
    """One owner's use of one GPU model (simulated runs apart: never billed together)."""

    owner: str
    gpu_model: str
    simulated: bool
    results: int
    gpu_seconds: float
    energy_j: float | None     # None: no result of the group had a measured run window
    metered: int               # results whose run window has energy

    @property
    def unmetered(self) -> int:
        """Results that add GPU-seconds but no joules."""
        return self.results - self.metered


def energy_ledger(connection: Any) -> list[LedgerRow]:
    """The ledger from any DB-API connection to the store, by owner, model, simulated."""
    cursor = connection.cursor()
    try:
        cursor.execute(_LEDGER)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return sorted((LedgerRow(owner=str(owner), gpu_model=str(model), simulated=bool(sim),
                             results=int(n), gpu_seconds=float(seconds or 0.0),
                             energy_j=None if joules is None else float(joules),
                             metered=int(metered))
                   for owner, model, sim, n, seconds, joules, metered in rows),
                  key=lambda row: (row.owner, row.gpu_model, row.simulated))
