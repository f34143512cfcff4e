"""Stalls of the measurement itself, recorded and judged (the `stalls` validity check).

A run is measured as one continuous act: warm-up, then each load point straight
after the last. If the worker pauses between phases (a blocked call, a slow
decision) the engine sits loaded and idle, clocks and temperature drift, and the
next window no longer measures what the sweep asked for. If the power sampler's
thread misses its ticks inside a steady window, the timeline that checks the
counter has a hole. Neither may pass silently: each pause is kept with where it
happened and how long it lasted, and the run is invalid when one exceeds its bound.
"""

from __future__ import annotations

import itertools
import time
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


class PhaseClock:
    """Times the farm's own work between two measured phases (`pause` … `resume`)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._since: tuple[str, float] | None = None
        self.pauses: list[Stall] = []

    def pause(self, where: str) -> None:
        """A phase ended; until `resume`, the engine waits for the farm."""
        self._since = (where, self._clock())

    def resume(self) -> None:
        """The next phase starts: keep how long the farm kept it waiting."""
        if self._since is not None:
            where, at = self._since
            self.pauses.append(Stall(where, at, self._clock() - at))
            self._since = None


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
