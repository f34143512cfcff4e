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

import time

from farm_contract.stalls import Stall, check_stalls, sample_gaps  # noqa: F401  (shared rules)


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
