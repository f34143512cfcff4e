"""Means with confidence intervals over repetitions, without numpy or scipy.

The 95% interval of a mean of n ≥ 2 values is mean ± t(0.975, n−1)·s/√n
(Student's t; s the sample standard deviation). With one value there is no
interval: `low`/`high` are None, and reports say "n = 1" instead of
pretending to know the spread.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Two-sided 95% critical values of Student's t, df = 1…30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """Student's t quantile 0.975 for `df` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish-Fisher expansion around the normal quantile: < 0.001 off for df > 30.
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


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
        return None if self.high is None else self.high - self.mean

    @property
    def relative_half_width(self) -> float | None:
        hw = self.half_width
        return None if hw is None or self.mean == 0 else abs(hw / self.mean)


def estimate(values: Iterable[float | None]) -> Estimate | None:
    """Mean and 95% CI of the values that are not None; None if there are none."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return None
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return Estimate(mean, 1, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    hw = t975(n - 1) * sd / math.sqrt(n)
    return Estimate(mean, n, sd, mean - hw, mean + hw)


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
    df = (va + vb) ** 2 / (va**2 / (ea.n - 1) + vb**2 / (eb.n - 1))
    hw = t975(max(1, math.floor(df))) * se
    return Estimate(diff, min(ea.n, eb.n), se, diff - hw, diff + hw)


def group_by(items: Iterable[T], key: Callable[[T], Hashable]) -> dict[Hashable, list[T]]:
    """Items grouped by key, groups in first-seen order."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)
