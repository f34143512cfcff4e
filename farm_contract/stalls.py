"""Stalls of the measurement, judged (the `stalls` validity check). Pure.

A worker records each pause between its phases and finds the gaps of the power
timeline inside steady windows (`workers/stalls.py`); an import re-finds the gaps
from the exported timeline (`farm/report/recheck.py`). Both judge them here, so a
run passes or fails the same way on either side.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from farm_contract.records import EnergyWindow, ValidityCheck

# The farm's own work between two phases is bookkeeping (milliseconds); two seconds
# already lets an H100's clocks and power fall back towards idle.
PHASE_PAUSE_LIMIT_S = 2.0
# A timeline gap of ten sampling periods (at least 1 s) inside a steady window.
SAMPLE_GAP_PERIODS = 10
MIN_SAMPLE_GAP_S = 1.0


@dataclass(frozen=True)
class Stall:
    """A pause of the measurement: where, when (s on the run's clock) and how long."""

    where: str
    at_s: float
    duration_s: float


def sample_gaps(windows: list[EnergyWindow], t_s: list[float],
                period_s: float) -> list[Stall]:
    """Gaps in the power timeline inside steady windows longer than the bound."""
    bound = max(MIN_SAMPLE_GAP_S, SAMPLE_GAP_PERIODS * period_s)
    gaps = []
    for window in windows:
        if window.name != "steady":
            continue
        end = window.start_s + window.duration_s
        inside = [window.start_s, *(t for t in t_s if window.start_s < t < end), end]
        for before, after in itertools.pairwise(inside):
            if after - before > bound:
                gaps.append(Stall(f"power timeline of steady[{window.load_point}]",
                                  before, after - before))
    return gaps


def check_stalls(pauses: list[Stall], gaps: list[Stall], period_s: float) -> ValidityCheck:
    """Pass when no pause between phases exceeds PHASE_PAUSE_LIMIT_S and no timeline
    gap inside a steady window exceeds its bound; the value is the longest of either."""
    gap_bound = max(MIN_SAMPLE_GAP_S, SAMPLE_GAP_PERIODS * period_s)
    threshold = (f"pauses between phases <= {PHASE_PAUSE_LIMIT_S:g} s; power timeline gaps "
                 f"in steady windows <= {gap_bound:g} s")
    bad = ([p for p in pauses if p.duration_s > PHASE_PAUSE_LIMIT_S]
           + [g for g in gaps if g.duration_s > gap_bound])
    longest = max((s.duration_s for s in [*pauses, *gaps]), default=None)
    return ValidityCheck(
        name="stalls", passed=not bad,
        value=None if longest is None else round(longest, 3), threshold=threshold,
        detail="; ".join(f"{s.duration_s:.1f} s {s.where}" for s in bad) or None)
