"""farm.report.recommendation: the answer of `farmctl recommend` as data — its
labels, its short numbers, and what it says when nothing meets the limit."""

from __future__ import annotations

import json
from dataclasses import replace

from farm.report.recommendation import (
    EXCLUDED_LATENCY,
    BinRanking,
    Excluded,
    Limits,
    Recommendation,
    config_label,
    short_number,
    tuning_suffix,
)
from tests.unit.farm.report.test_recommend import point


def test_short_numbers_are_whole_from_100_and_three_digits_below():
    assert short_number(None) == "—"
    assert short_number(2000.0) == "2,000"
    assert short_number(123.456) == "123"
    assert short_number(0.012345) == "0.0123"


def test_a_configuration_is_labelled_by_gpu_tuning_scenario_load_and_arguments():
    p = point("h200", 8.0)
    assert tuning_suffix(p) == ""
    assert config_label(p) == "h200 server-x c=8 (max_num_seqs=256)"
    capped = replace(p, power_limit_w=300.0, engine_args=())
    assert tuning_suffix(capped) == " (300 W cap)"
    assert config_label(capped) == "h200 (300 W cap) server-x c=8"


def _nothing_met() -> Recommendation:
    closest = Excluded("l4 server-x c=8", EXCLUDED_LATENCY, 2500.0, 40.0)
    workload = BinRanking(64, 16, "greedy", [], [closest], failed_runs=0, closest=closest,
                          uncertainty=False)
    return Recommendation("s", "m", False, Limits(2000.0, 200.0, "given"), None, 2000, 0,
                          [workload], notes=[])


def test_nothing_met_names_the_closest_configuration_per_workload():
    rec = _nothing_met()
    assert not rec.met
    assert rec.nothing_met_message() == (
        "no configuration of m in s meets TTFT p90 ≤ 2,000 ms and TPOT p90 ≤ 200 ms; "
        "in 64 / out 16 tokens, greedy: closest is l4 server-x c=8 at TTFT p90 2,500 ms, "
        "TPOT p90 40 ms")


def test_the_json_form_carries_the_limits_exclusions_and_closest_miss():
    data = json.loads(json.dumps(_nothing_met().to_json()))
    assert data["limits"] == {"ttft_p90_ms": 2000.0, "tpot_p90_ms": 200.0, "source": "given"}
    assert data["met"] is False and data["rate_rps"] is None
    (w,) = data["workloads"]
    assert w["excluded"] == {EXCLUDED_LATENCY: 1}
    assert w["closest"] == {"configuration": "l4 server-x c=8", "ttft_p90_ms": 2500.0,
                            "tpot_p90_ms": 40.0}
    assert w["ranking"] == [] and w["best_per_gpu"] == []
