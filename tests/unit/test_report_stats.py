"""Confidence intervals and Welch differences (farm.report.stats)."""

from __future__ import annotations

import math

import pytest

from farm.report.stats import estimate, group_by, t975, welch_difference


def test_t_quantiles_match_the_table_and_the_expansion():
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.021, abs=0.001)
    assert t975(120) == pytest.approx(1.980, abs=0.001)
    with pytest.raises(ValueError):
        t975(0)


def test_estimate_of_repetitions():
    e = estimate([10.0, 12.0, 11.0, None])
    assert e.n == 3 and e.mean == 11.0 and e.sd == 1.0
    assert e.high - e.mean == pytest.approx(4.303 / math.sqrt(3))
    assert e.low == pytest.approx(2 * 11.0 - e.high)


def test_one_value_has_no_interval_and_none_has_no_estimate():
    single = estimate([5.0])
    assert single.mean == 5.0 and single.low is None and single.half_width is None
    assert estimate([None, float("nan")]) is None


def test_welch_difference_sign_and_interval():
    d = welch_difference([1.0, 1.1, 0.9], [2.0, 2.2, 1.8])
    assert d.mean == pytest.approx(1.0)
    assert d.low > 0                          # clearly higher
    same = welch_difference([1.0, 1.2, 0.8], [1.1, 0.9, 1.0])
    assert same.low < 0 < same.high           # not distinguishable
    assert welch_difference([1.0], [2.0]).low is None


def test_group_by_keeps_first_seen_order():
    assert list(group_by([3, 1, 4, 1, 5], lambda x: x % 2)) == [1, 0]
