"""farm.report.attainment: SLO attainment recounted under other limits by the
contract's goodput rule, from a run's stored per-request records."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from farm.report.attainment import StoredAttainment, attainment_of
from tests.unit.farm.report.test_recommend import point


class _Req:
    def __init__(self, ttft_s, e2e_s, out, ok=True):
        self.ttft_s, self.e2e_s, self.output_tokens, self.ok = ttft_s, e2e_s, out, ok


def test_attainment_rule():
    reqs = [_Req(0.1, 0.1 + 9 * 0.02, 10),      # TTFT 100 ms, TPOT 20 ms
            _Req(0.3, 0.3 + 9 * 0.01, 10),      # TTFT 300 ms
            _Req(0.1, 0.1 + 9 * 0.05, 10),      # TPOT 50 ms
            _Req(0.1, 0.1, 1),                  # one token: no TPOT, TTFT only
            _Req(0.1, 0.2, 10, ok=False)]       # failed: never good, counts as sent
    assert attainment_of(reqs, 200.0, 30.0) == pytest.approx(2 / 5)
    assert attainment_of(reqs, 400.0, 60.0) == pytest.approx(4 / 5)
    assert attainment_of([], 1.0, 1.0) is None


class _Store:
    """The two reads StoredAttainment makes of a Store, counted."""

    def __init__(self, requests):
        self.requests = requests
        self.load_point_reads = 0

    def load_points_for(self, run_id):
        self.load_point_reads += 1
        return [SimpleNamespace(kind="concurrency", value=1.0, index=0),
                SimpleNamespace(kind="concurrency", value=8.0, index=1)]

    def requests_for(self, run_id, index):
        return self.requests[index]


def test_stored_attainment_recounts_the_load_points_own_requests():
    fast, slow = _Req(0.1, 0.1 + 9 * 0.02, 10), _Req(0.5, 0.5 + 9 * 0.02, 10)
    store = _Store({0: [fast, fast], 1: [fast, slow, slow, slow]})
    recount = StoredAttainment(store)
    p = point(load=8.0)
    assert recount(p, 200.0, 30.0) == pytest.approx(1 / 4)
    assert recount(p, 600.0, 30.0) == pytest.approx(1.0)
    assert recount(point(load=1.0), 200.0, 30.0) == pytest.approx(1.0)
    # Cached per run: the second question of the same run reads no load points.
    assert store.load_point_reads == 2
    # A load value the run did not measure: no records, no figure.
    assert recount(point(load=32.0), 200.0, 30.0) is None
