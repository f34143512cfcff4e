"""Confidence intervals and Welch differences (farm.report.stats)."""

from __future__ import annotations

import math

import pytest

from farm.report.stats import estimate, group_by, t975, welch_difference


def test_t_quantiles_match_the_printed_table():
    # Student's t tables to 3 decimals (scipy.stats.t gives the exact quantiles).
    for df, printed in ((1, 12.706), (2, 4.303), (10, 2.228), (30, 2.042), (40, 2.021),
                        (120, 1.980)):
        assert t975(df) == pytest.approx(printed, abs=0.0005)
    with pytest.raises(ValueError):
        t975(0)


def test_estimate_of_repetitions():
    e = estimate([10.0, 12.0, 11.0, None])
    assert e.n == 3 and e.mean == 11.0 and e.sd == 1.0
    assert e.high - e.mean == pytest.approx(4.303 / math.sqrt(3), abs=0.0005)
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
