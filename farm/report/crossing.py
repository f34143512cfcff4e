"""Where two GPUs' energy-per-request curves cross as the arrival rate grows (Watt
Counts: a low-idle GPU wins serving at low rates, a big one at high rates).

An open-loop load point's gross J/request is already idle-amortised at its rate:
its steady window's energy includes the idle gaps between arrivals, so it is
what serving that rate costs per request (the net figure takes them out; the
difference is the point's `idle_energy_per_request_j`). Between two measured
rates a curve is interpolated linearly in log(rate)–log(J/request), where such
curves are close to straight (J/request ≈ P_idle/R + a constant at low rates);
a crossing is a sign change of log(E_a/E_b) on the rates both curves cover.
Points at or past the rate where most of a line's runs had saturated (their rate
sweeps stopped there) are left out of the search: there the GPU no longer serves
the rate offered, so its J/request is not the cost of serving it. Pure data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from farm.report.series import Series


@dataclass(frozen=True)
class Crossing:
    """Where series `low_first` stops being the cheaper one: below `rate_rps` it takes
    less per request, above it `high_first` does."""

    low_first: str               # the cheaper line below the crossing
    high_first: str              # the cheaper line above it
    rate_rps: float
    energy_j: float
    between: tuple[float, float]  # the measured rates it lies between

    def note(self) -> str:
        """The crossing in words, for a caption."""
        lo, hi = self.between
        where = (f"at the measured {lo:g} req/s" if lo == hi else
                 f"interpolated between the measured {lo:g} and {hi:g} req/s")
        return (f"{self.low_first} and {self.high_first} cross at ≈ {self.rate_rps:.3g} "
                f"req/s, {self.energy_j:.3g} J/request ({where}): below it {self.low_first} "
                f"takes less per request, above it {self.high_first}")


def served(series: Series) -> list[tuple[float, float]]:
    """(rate, mean J/request) of the points below the first rate at or below which most
    of the series' runs had saturated (one noisy run's early stop does not end the
    curve; each run saturates once, at most)."""
    runs, stopped, out = series.n_runs, 0, []
    for p in series.points:
        stopped += len(p.saturations)
        if stopped > runs / 2:
            break
        if p.x > 0 and p.estimate.mean > 0:
            out.append((p.x, p.estimate.mean))
    return out


def _log_at(curve: Sequence[tuple[float, float]], x: float) -> float:
    """log J/request at rate x, linear in log–log between the neighbouring points."""
    for (x0, y0), (x1, y1) in pairwise(curve):
        if x0 <= x <= x1:
            t = 0.0 if x1 == x0 else (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.log(y0) + t * (math.log(y1) - math.log(y0))
    raise ValueError(f"{x} outside the curve")


def crossings(a: Series, b: Series) -> list[Crossing]:
    """Every crossing of two series on the rates both serve, ascending."""
    ca, cb = served(a), served(b)
    if len(ca) < 2 or len(cb) < 2:
        return []
    lo, hi = max(ca[0][0], cb[0][0]), min(ca[-1][0], cb[-1][0])
    xs = sorted({x for x, _ in ca + cb if lo <= x <= hi})
    diff = [_log_at(ca, x) - _log_at(cb, x) for x in xs]   # > 0: b is cheaper
    out: list[Crossing] = []
    for i in range(len(xs) - 1):
        d0, d1 = diff[i], diff[i + 1]
        if d0 == 0 or d0 * d1 >= 0:
            continue
        t = d0 / (d0 - d1)
        x = math.exp(math.log(xs[i]) + t * (math.log(xs[i + 1]) - math.log(xs[i])))
        cheap_first, cheap_then = (a, b) if d0 < 0 else (b, a)
        out.append(Crossing(cheap_first.label, cheap_then.label, x, math.exp(_log_at(ca, x)),
                            (xs[i], xs[i + 1])))
    # a curve touching the other at a measured rate and going on the other side
    for i in range(1, len(xs) - 1):
        if diff[i] == 0 and diff[i - 1] * diff[i + 1] < 0:
            first, then = (a, b) if diff[i - 1] < 0 else (b, a)
            out.append(Crossing(first.label, then.label, xs[i], math.exp(_log_at(ca, xs[i])),
                                (xs[i], xs[i])))
    return sorted(out, key=lambda c: c.rate_rps)


def no_crossing_note(a: Series, b: Series) -> str | None:
    """Which line is cheaper everywhere both serve, and by how much; None without an
    overlap of two rates or where they cross."""
    ca, cb = served(a), served(b)
    if len(ca) < 2 or len(cb) < 2 or crossings(a, b):
        return None
    lo, hi = max(ca[0][0], cb[0][0]), min(ca[-1][0], cb[-1][0])
    if lo >= hi:
        return None
    xs = sorted({x for x, _ in ca + cb if lo <= x <= hi})
    ratios = [math.exp(_log_at(ca, x) - _log_at(cb, x)) for x in xs]
    cheap, dear = (b, a) if ratios[0] > 1 else (a, b)
    more = sorted(max(r, 1 / r) - 1 for r in ratios)
    return (f"{cheap.label} and {dear.label} do not cross between {lo:g} and {hi:g} req/s: "
            f"{dear.label} takes {more[0]:.0%}–{more[-1]:.0%} more per request at every rate "
            "both served")
