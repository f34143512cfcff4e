"""Which run points a figure may plot, and what it leaves out and why.

A figure plots *valid measured* points only: the run succeeded, the point has
a load point, the run passed its validity checks, and every figure the plot
needs is not null. Everything else in the figure's scope is counted under a
reason, so the report can say "3 points left out: 2 invalid (steady_window),
1 run failed" instead of silently drawing fewer markers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from farm.report.labels import short_label
from farm.report.points import RunPoint


@dataclass(frozen=True)
class Selection:
    """The points a figure plots, and the others of its scope counted by reason."""

    points: list[RunPoint]
    left_out: Counter[str] = field(default_factory=Counter)

    @property
    def n_left_out(self) -> int:
        """How many points of the scope are not plotted."""
        return sum(self.left_out.values())

    def note(self) -> str:
        """E.g. "12 run point(s) used; 3 left out: invalid (steady_window) ×2, run failed ×1"."""
        plotted = f"{len(self.points)} run point(s) used"
        if not self.left_out:
            return f"{plotted}; none left out"
        reasons = ", ".join(f"{reason} ×{count}" for reason, count in
                            sorted(self.left_out.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{plotted}; {self.n_left_out} left out: {reasons}"


def reason_left_out(p: RunPoint, figures: Sequence[str] = (),
                    simulated: bool | None = None) -> str | None:
    """Why `p` cannot be plotted with `figures`; None when it can."""
    if simulated is not None and p.simulated != simulated:
        return ("simulated run in a measured report" if p.simulated
                else "measured run in a simulated report")
    if p.status == "failed":
        return "run failed"
    if p.status != "succeeded":
        return f"no result ({p.status})"
    if p.load_kind is None:
        return "no load point"
    if p.valid is None:
        return "no validity verdict"
    if not p.valid:
        return f"invalid ({p.invalid_reasons or 'unnamed check'})"
    missing = [short_label(f) for f in figures if p.get(f) is None]
    if missing:
        return f"{', '.join(missing)} null"
    return None


def select(points: Iterable[RunPoint], figures: Sequence[str] = (),
           simulated: bool | None = None) -> Selection:
    """The plottable points of a scope, and the others counted by reason."""
    kept: list[RunPoint] = []
    left_out: Counter[str] = Counter()
    for p in points:
        reason = reason_left_out(p, figures, simulated)
        if reason is None:
            kept.append(p)
        else:
            left_out[reason] += 1
    return Selection(kept, left_out)
