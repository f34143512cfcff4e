"""Means with confidence intervals over repetitions (numpy and scipy.stats): the
one CI method of the farm — `recommend`, `compare`, the report, `results`'
adaptive summary and the recorder's adaptive repetitions all call `estimate`.

The 95% interval of a mean of n ≥ 2 values is mean ± t(0.975, n−1)·s/√n
(Student's t; s the sample standard deviation). It is the method for every n:
at small n it is wide, as it should be, where a percentile bootstrap of n
values is only their range. With one value there is no interval: `low`/`high`
are None, and reports say "n = 1" instead of pretending to know the spread.

Ranking — "configuration X is best with probability p" — resamples the
repetitions (`bootstrap`), and that only means something with enough of them: below
`MIN_RANK_N` usable repetitions per configuration no probability is claimed
(`rankable`), and the outputs say n is too small to rank.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

import numpy as np
from scipy import stats as scipy_stats

T = TypeVar("T")

CI_METHOD = "95% CI: Student's t, n − 1 degrees of freedom"
# Repetitions each configuration needs before a resampled P(best) is claimed: with
# n values a bootstrap has only C(2n−1, n) distinct means (3 at n = 2, 126 at n = 5).
MIN_RANK_N = 5


@cache
def t975(df: int) -> float:
    """Student's t quantile 0.975 for `df` degrees of freedom (df ≥ 1):
    the two-sided 95% critical value, from scipy.stats.t."""
    if df < 1:
        raise ValueError("df must be >= 1")
    return float(scipy_stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class Estimate:
    """A mean over repetitions; `low`/`high` the 95% CI (None with n < 2)."""

    mean: float
    n: int
    sd: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        """high − mean: the interval's half width (None without an interval)."""
        return None if self.high is None else self.high - self.mean


def estimate(values: Iterable[float | None]) -> Estimate | None:
    """Mean and 95% CI of the values that are not None; None if there are none."""
    xs = np.array([float(v) for v in values if v is not None], dtype=float)
    xs = xs[~np.isnan(xs)]
    if xs.size == 0:
        return None
    n = int(xs.size)
    mean = float(xs.mean())
    if n == 1:
        return Estimate(mean, 1, None, None, None)
    sd = float(xs.std(ddof=1))
    hw = t975(n - 1) * sd / math.sqrt(n)
    return Estimate(mean, n, sd, mean - hw, mean + hw)


def rankable(ns: Iterable[int]) -> bool:
    """Whether configurations with these usable repetition counts may be ranked with a
    probability: every one has at least MIN_RANK_N."""
    ns = list(ns)
    return bool(ns) and min(ns) >= MIN_RANK_N


def ci_text(est: Estimate | None, fmt: Callable[[float], str], unit: str = "",
            show_n: bool = True) -> str:
    """"41.3 J (95% CI 32.4–50.2 J, n = 2)"; "41.3 J (n = 1, no interval)": one wording
    of a mean and its interval for every output. `show_n` False leaves n out where a
    table already shows it (compare's `n` column or its header line)."""
    if est is None:
        return "—"
    u = f" {unit}" if unit else ""
    n = f", n = {est.n}" if show_n else ""
    if est.low is None or est.high is None:
        return f"{fmt(est.mean)}{u} (n = {est.n}, no interval)" if show_n \
            else f"{fmt(est.mean)}{u} (no interval)"
    return f"{fmt(est.mean)}{u} (95% CI {fmt(est.low)}–{fmt(est.high)}{u}{n})"


def half_width_pct(est: Estimate | None) -> float | None:
    """The 95% CI half-width as a percentage of |mean|: the figure adaptive repetitions
    (farm/adaptive.py) stop on and reports show; None without an interval or at mean 0."""
    if est is None or est.half_width is None or est.mean == 0:
        return None
    return 100.0 * est.half_width / abs(est.mean)


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Estimate | None:
    """mean(b) − mean(a) with a Welch 95% CI (None when either side has < 1 value;
    no interval unless both have ≥ 2)."""
    ea, eb = estimate(a), estimate(b)
    if ea is None or eb is None:
        return None
    diff = eb.mean - ea.mean
    if ea.sd is None or eb.sd is None:
        return Estimate(diff, min(ea.n, eb.n), None, None, None)
    va, vb = ea.sd**2 / ea.n, eb.sd**2 / eb.n
    se = math.sqrt(va + vb)
    if se == 0:
        return Estimate(diff, min(ea.n, eb.n), 0.0, diff, diff)
    # Welch–Satterthwaite degrees of freedom, rounded down (the conservative side).
    df = (va + vb) ** 2 / (va**2 / (ea.n - 1) + vb**2 / (eb.n - 1))
    hw = t975(max(1, math.floor(df))) * se
    return Estimate(diff, min(ea.n, eb.n), se, diff - hw, diff + hw)


def group_by(items: Iterable[T], key: Callable[[T], Hashable]) -> dict[Hashable, list[T]]:
    """Items grouped by key, groups in first-seen order."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


def bootstrap(values: Sequence[Sequence[float]], draws: int, seed: int) -> list[float]:
    """P(best) of each configuration, by resampling each configuration's repetitions
    with replacement `draws` times and taking the lowest mean as best (ties share
    the win). Seeded: the same values, draws and seed give the same answer. Its
    intervals are not the farm's CI (a percentile interval of 2 values is their
    range): `estimate` gives that."""
    if not values:
        return []
    rng = np.random.default_rng(seed)
    means = np.empty((len(values), draws))
    for i, xs in enumerate(values):
        sample = np.asarray(xs, dtype=float)
        if sample.size == 1:
            means[i] = sample[0]
        else:
            picks = rng.integers(0, sample.size, size=(draws, sample.size))
            means[i] = sample[picks].mean(axis=1)
    winners = means == means.min(axis=0)            # per draw, every configuration at the min
    wins = (winners / winners.sum(axis=0)).sum(axis=1)
    return [float(w) / draws for w in wins]
