"""The timeline integral is one rule (farm_contract.derive.timeline_integral) that a
worker applies to its samples and an import applies to the stored trace: which
samples are inside a window is decided on the numbers as stored, so the two agree."""

import pytest

from farm_contract.derive import timeline_integral, window_samples
from workers.power import PowerSampler


def test_a_sample_stamped_just_before_the_start_and_stored_on_it_counts_on_both_sides():
    # The first sample at 0.49 ms is stored as 0.5 ms; the window opens at 0.495 ms.
    t_s = [0.00049, 0.0506, 0.1006, 0.1506]
    power_w = [[77.5, 124.0, 600.0, 290.0]]
    stored_t = [round(t, 4) for t in t_s]
    worker = timeline_integral(t_s, power_w, 0.000495, 0.15)
    imported = timeline_integral(stored_t, power_w, 0.000495, 0.15)
    assert worker[0] == pytest.approx(imported[0], rel=1e-3)
    # Decided on the raw time, the idle sample would be left out: another figure.
    raw_inside = timeline_integral(t_s[1:], [power_w[0][1:]], 0.000495, 0.15)
    assert abs(raw_inside[0] / worker[0] - 1) > 0.05


def test_missing_or_too_few_samples_give_none_never_zero():
    assert timeline_integral([0.0, 0.1], [[100.0, None]], 0.0, 0.1) == (None, None, None)
    assert timeline_integral([0.0, 0.5], [[100.0, 100.0]], 0.0, 0.1) == (None, None, None)
    energy, average, peak = timeline_integral([0.0, 0.05, 0.1], [[100.0, 200.0, 100.0],
                                                                 [10.0, 10.0, 10.0]], 0.0, 0.1)
    assert average == pytest.approx(160.0) and energy == pytest.approx(16.0) and peak == 210.0


def test_a_missing_reading_is_a_gap_the_integral_spans():
    """One failed read used to void the window's integral, and with it the check of
    its counter; the trapezoid of its neighbours spans it instead."""
    whole = timeline_integral([0.0, 0.05, 0.1], [[100.0, 100.0, 100.0]], 0.0, 0.1)
    assert timeline_integral([0.0, 0.05, 0.1], [[100.0, None, 100.0]], 0.0, 0.1) == whole
    energy, average, peak = timeline_integral([0.0, 0.05, 0.1], [[100.0, 300.0, 100.0],
                                                                 [10.0, None, 10.0]], 0.0, 0.1)
    assert (energy, average, peak) == (pytest.approx(11.0), pytest.approx(110.0), 110.0)


def test_the_sampler_integrates_with_the_same_rule():
    class Gpu:
        info = type("Info", (), {"uuid": "GPU-x"})()

    sampler = PowerSampler([Gpu()], 0.05)
    sampler.t_s[:] = [0.00049, 0.0506, 0.1006, 0.1506]
    sampler.power_w[0][:] = [77.5, 124.0, 600.0, 290.0]
    on_stored = timeline_integral([round(t, 4) for t in sampler.t_s], sampler.power_w,
                                  0.000495, 0.15)
    assert sampler.integral(0.000495, 0.150495) == pytest.approx(on_stored, rel=1e-3)


def test_a_series_statistic_picks_its_samples_by_the_same_rule_end_left_out():
    class Gpu:
        info = type("Info", (), {"uuid": "GPU-x"})()

    sampler = PowerSampler([Gpu()], 0.05)
    sampler.t_s[:] = [0.00049, 0.0506, 0.1006, 0.15]
    sampler._series.extra["sm_clock_mhz"][0][:] = [345.0, 1980.0, 1980.0, 1410.0]
    # The 0.49 ms sample is stored on the start: inside, as the integral has it.
    assert window_samples(sampler.t_s, 0.000495, 0.149505) == [0, 1, 2, 3]
    # A statistic leaves the end out: the 0.15 s sample belongs to the next window.
    assert window_samples(sampler.t_s, 0.000495, 0.149505, end_included=False) == [0, 1, 2]
    assert sampler.values_in("sm_clock_mhz", 0.000495, 0.149505) == [345.0, 1980.0, 1980.0]
    assert sampler.values_in("sm_clock_mhz", 0.15, 0.1) == [1410.0]
