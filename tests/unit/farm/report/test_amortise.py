"""farm.report.amortise: the idle-amortised J/request of serving an arrival rate
with whole replicas of a configuration (docs/analysis.md)."""

from __future__ import annotations

import pytest

from farm.report.amortise import amortised_energy_per_request


def test_amortised_energy_arithmetic():
    # R = 10 req/s on a configuration serving 4 req/s: 3 replicas, each busy 10/12.
    e, n, u = amortised_energy_per_request(10.0, 4.0, 300.0, 100.0)
    assert (n, u) == (3, pytest.approx(10 / 12))
    assert e == pytest.approx(3 * (10 / 12 * 300 + 2 / 12 * 100) / 10)      # 80 J
    assert e == pytest.approx(80.0)


def test_amortised_energy_at_capacity_is_the_load_points_own():
    e, n, u = amortised_energy_per_request(4.0, 4.0, 300.0, 100.0)
    assert (n, u) == (1, 1.0) and e == pytest.approx(300.0 / 4.0)
    # A rounding error above a whole multiple does not add a replica.
    _, n, u = amortised_energy_per_request(8.0 * (1 + 1e-13), 4.0, 300.0, 100.0)
    assert n == 2 and u == 1.0


def test_one_replica_matches_the_formula_in_measurement_md():
    # docs/measurement.md: gross J/request + P_idle·(1/R − 1/R_max), R ≤ R_max.
    rate, cap, load_w, idle_w = 2.5, 10.0, 400.0, 120.0
    e, n, _ = amortised_energy_per_request(rate, cap, load_w, idle_w)
    assert n == 1
    assert e == pytest.approx(load_w / cap + idle_w * (1 / rate - 1 / cap))


def test_amortised_energy_rejects_nonpositive_rates():
    with pytest.raises(ValueError):
        amortised_energy_per_request(0.0, 4.0, 300.0, 100.0)
    with pytest.raises(ValueError):
        amortised_energy_per_request(1.0, 0.0, 300.0, 100.0)
