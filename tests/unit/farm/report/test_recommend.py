"""`farmctl recommend`: the limits, the latency filter, the exclusions, the
bootstrap, and the whole command on the simulated report store (the amortisation
model: test_amortise.py; the attainment recount: test_attainment.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from itertools import count

import pytest

from farm.cli import ExitCode
from farm.report.amortise import amortised_energy_per_request
from farm.report.attainment import StoredAttainment
from farm.report.points import RunPoint, load_run_points
from farm.report.recommend import limits_for, recommend
from farm.report.recommend_text import format_recommendation
from farm.report.recommendation import (
    EXCLUDED_BATCH,
    EXCLUDED_INVALID,
    EXCLUDED_LATENCY,
    EXCLUDED_NO_GOOD,
    EXCLUDED_SIM_LABEL,
    RecommendError,
)
from farm.report.stats import bootstrap, estimate
from farm.store import Store
from farm_contract.rules import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS

_ids = count()


def point(gpu: str = "h100", load: float = 8.0, rep: int = 0, *, ttft: float = 100.0,
          tpot: float = 20.0, epr: float = 10.0, attainment: float | None = 1.0,
          rps: float = 10.0, power: float = 100.0, idle_ctx: float | None = 50.0,
          idle: float | None = 30.0, kind: str = "server", valid: bool | None = True,
          status: str = "succeeded", simulated: bool = False, tokens=(64, 16),
          args=(("max_num_seqs", 256),), slo=(2000.0, 200.0), **figures) -> RunPoint:
    measured = status == "succeeded"
    load_kind = ("concurrency" if kind == "server" else "batch") if measured else None
    return RunPoint(
        run_id=f"run-{next(_ids)}", sweep="s", repetition=rep, model="m", backend="nvml",
        gpu_model=gpu, gpu_count=1, engine="vllm", engine_version="1.0", engine_args=args,
        scenario=f"{kind}-x", scenario_kind=kind, load_kind=load_kind,
        load_value=load if measured else None, input_tokens=tokens[0],
        output_tokens=tokens[1], decoding="greedy", status=status, simulated=simulated,
        valid=valid if measured else None, invalid_reasons=None if valid else "power_range",
        error=None if measured else "boom",
        figures={"ttft_p90_ms": ttft, "tpot_p90_ms": tpot, "energy_per_request_j": epr,
                 "slo_attainment": attainment, "request_throughput_rps": rps,
                 "avg_power_w": power, "idle_ctx_power_w": idle_ctx, "idle_power_w": idle,
                 "slo_ttft_ms": slo[0] if kind == "server" else None,
                 "slo_tpot_ms": slo[1] if kind == "server" else None, **figures}
        if measured else {})


# ---------------------------------------------------------------- limits


def test_limits_given_from_the_sweep_or_mlperf():
    pts = [point(slo=(500.0, 50.0)), point(slo=(800.0, 40.0))]
    lim = limits_for(pts, None, None)
    assert (lim.ttft_ms, lim.tpot_ms) == (500.0, 40.0) and "strictest" in lim.source
    lim = limits_for(pts, 100.0, None)
    assert (lim.ttft_ms, lim.tpot_ms) == (100.0, 40.0) and "TTFT given" in lim.source
    lim = limits_for([point(kind="batch")], None, None)
    assert (lim.ttft_ms, lim.tpot_ms) == (DEFAULT_SLO_TTFT_MS, DEFAULT_SLO_TPOT_MS)
    assert "MLPerf" in lim.source
    with pytest.raises(RecommendError):
        limits_for(pts, -1.0, None)


# ---------------------------------------------------------- ranking (pure)


def _two_gpus():
    """h100 at 8 J/request, l4 at 6 J/request (both reps), plus an l4 load point
    over the TTFT limit, an invalid one, a failed run, a batch point."""
    return [
        point("h100", 8, 0, epr=8.0), point("h100", 8, 1, epr=8.2),
        point("l4", 8, 0, epr=6.0, ttft=1800.0), point("l4", 8, 1, epr=6.2, ttft=2100.0),
        point("l4", 32, 0, ttft=2500.0, epr=3.0), point("l4", 32, 1, ttft=2600.0, epr=3.1),
        point("h100", 32, 0, valid=False), point("h100", 32, 1, valid=False),
        point("h100", 64, 0, status="failed"),
        point("h100", 8, 0, kind="batch", epr=1.0),
    ]


def test_ranking_latency_filter_and_exclusions():
    rec = recommend(_two_gpus(), sweep="s", ttft_ms=2000.0, tpot_ms=200.0)
    (w,) = rec.workloads
    assert [r.head.gpu_model for r in w.ranking] == ["l4", "h100"]
    best, second = w.ranking
    assert best.energy_per_good_request_j == pytest.approx(6.1)
    assert best.ttft_p90_ms == pytest.approx(1950.0)       # mean of the repetitions' p90
    assert "rep 1 alone over the limit" in best.notes[0]
    assert second.vs_best_pct == pytest.approx(100 * (8.1 / 6.1 - 1))
    assert w.excluded_counts() == {EXCLUDED_LATENCY: 1, EXCLUDED_INVALID: 1,
                                   EXCLUDED_BATCH: 1}
    assert w.failed_runs == 1
    assert rec.met and w.closest is None
    assert [(r.head.gpu_model, r.rank) for r in w.best_per_gpu()] == [("l4", 1), ("h100", 2)]


def test_energy_per_good_request_divides_by_attainment():
    pts = [point("a", 8, 0, epr=10.0, attainment=0.5), point("b", 8, 0, epr=6.0),
           point("c", 8, 0, epr=1.0, attainment=0.0)]
    (w,) = recommend(pts, sweep="s").workloads
    assert [(r.head.gpu_model, r.energy_per_good_request_j) for r in w.ranking] == [
        ("b", 6.0), ("a", 20.0)]
    assert w.ranking[1].energy_per_request_j == 10.0
    assert w.excluded_counts() == {EXCLUDED_NO_GOOD: 1}


def test_attainment_under_other_limits_is_recounted_or_said_unknown():
    pts = [point("a", 8, 0, epr=10.0, attainment=1.0)]
    # Limits differ from the stored SLO and no recount: per request, and it says so.
    (w,) = recommend(pts, sweep="s", ttft_ms=150.0).workloads
    assert w.ranking[0].attainment_source == "unknown"
    assert "unknown" in w.ranking[0].notes[0]
    assert w.ranking[0].energy_per_good_request_j == 10.0
    seen = []

    def recount(p, ttft_ms, tpot_ms):
        seen.append((ttft_ms, tpot_ms))
        return 0.8

    (w,) = recommend(pts, sweep="s", ttft_ms=150.0, attainment=recount).workloads
    assert seen == [(150.0, 200.0)]
    assert w.ranking[0].attainment_source == "recounted"
    assert w.ranking[0].energy_per_good_request_j == pytest.approx(12.5)
    # Limits equal to the stored SLO: the stored attainment, no recount.
    (w,) = recommend(pts, sweep="s", attainment=recount).workloads
    assert w.ranking[0].attainment_source == "stored" and len(seen) == 1


def test_rate_amortises_idle_and_can_change_the_winner():
    # Big GPU: 100 req/s at 700 W, 120 W idle; small GPU: 10 req/s at 70 W, 20 W idle.
    big = [point("big", 64, r, epr=7.0, rps=100.0, power=700.0, idle_ctx=120.0)
           for r in (0, 1)]
    small = [point("small", 8, r, epr=7.0 + 0.1 * r, rps=10.0, power=70.0, idle_ctx=20.0)
             for r in (0, 1)]
    rec = recommend(big + small, sweep="s", rate_rps=5.0)
    (w,) = rec.workloads
    first = w.ranking[0]
    assert first.head.gpu_model == "small"
    e_small, n, u = amortised_energy_per_request(5.0, 10.0, 70.0, 20.0)
    assert n == 1 and first.energy_per_good_request_j == pytest.approx(e_small)
    assert first.replicas == (1, 1) and first.utilisation == pytest.approx(u)
    assert first.idle_source == "context held"
    e_big, _, _ = amortised_energy_per_request(5.0, 100.0, 700.0, 120.0)
    assert w.ranking[1].energy_per_good_request_j == pytest.approx(e_big)
    # At a high rate the big GPU's replicas are busy: it wins.
    (w,) = recommend(big + small, sweep="s", rate_rps=100.0).workloads
    assert w.ranking[0].head.gpu_model == "big"
    assert w.ranking[1].replicas == (10, 10)


def test_power_limits_rank_as_configurations_of_their_own():
    # One GPU at three caps, the same load: the 450 W cap costs least per request; its
    # repetitions (one failed) are not pooled with the other caps'.
    pts = [replace(point("h200", 8, r, epr=epr + 0.1 * r), power_limit_w=watts)
           for watts, epr in ((300.0, 9.0), (450.0, 8.0), (700.0, 10.0)) for r in (0, 1)]
    pts.append(replace(point("h200", 8, 2, status="failed"), power_limit_w=450.0))
    rec = recommend(pts, sweep="s", draws=200)
    (w,) = rec.workloads
    assert [(r.head.power_limit_w, len(r.points), r.repetitions_expected)
            for r in w.ranking] == [(450.0, 2, 3), (300.0, 2, 2), (700.0, 2, 2)]
    assert w.ranking[0].energy_per_good_request_j == pytest.approx(8.05)
    assert w.ranking[0].label == "h200 (450 W cap) server-x c=8 (max_num_seqs=256)"
    assert rec.to_json()["workloads"][0]["ranking"][1]["power_limit_w"] == 300.0
    text = format_recommendation(rec, width=None)
    header = next(line for line in text.splitlines() if "J/good req" in line)
    assert header.index("#") < header.index("power limit") < header.index("J/good req")
    rows = [line for line in text.splitlines() if line[:1].isdigit() and " W " in line]
    assert [line.split()[:3] for line in rows] == [["1", "450", "W"], ["2", "300", "W"],
                                                   ["3", "700", "W"]]
    assert "SM clock" not in text                        # no configuration locked one
    # Without tuning the table has no such columns, nor a line saying "—" about them.
    plain = format_recommendation(recommend([point("h200", 8, 0)], sweep="s"), width=None)
    assert "power limit" not in plain


def test_best_per_gpu_names_the_cap_of_its_best_configuration():
    pts = [replace(point(gpu, 8, 0, epr=epr), power_limit_w=watts)
           for gpu, watts, epr in (("h200", 300.0, 5.0), ("h200", 700.0, 6.0),
                                   ("l4", 72.0, 7.0))]
    text = format_recommendation(recommend(pts, sweep="s"), width=None)
    assert "best per GPU: h200 (300 W cap) #1 5 J; l4 (72 W cap) #3 7 J (+40%)" in text


def test_idle_without_context_is_the_fallback_and_says_so():
    pts = [point("a", 8, 0, idle_ctx=None, idle=30.0)]
    (w,) = recommend(pts, sweep="s", rate_rps=1.0).workloads
    r = w.ranking[0]
    assert r.idle_power_w == 30.0 and r.idle_source == "no context"
    assert any("without a CUDA context" in n for n in r.notes)


def test_points_with_another_simulated_label_are_excluded():
    pts = [point("a", 8, 0), point("b", 8, 0, simulated=True)]
    (w,) = recommend(pts, sweep="s", simulated=False).workloads
    assert [r.head.gpu_model for r in w.ranking] == ["a"]
    assert w.excluded_counts() == {EXCLUDED_SIM_LABEL: 1}


def test_nothing_meets_the_limit_names_the_closest():
    pts = [point("a", 8, 0, ttft=300.0, tpot=30.0), point("b", 8, 0, ttft=250.0, tpot=90.0)]
    rec = recommend(pts, sweep="s", ttft_ms=100.0, tpot_ms=50.0)
    assert not rec.met
    (w,) = rec.workloads
    # a is 3× over on TTFT; b 2.5× on TTFT and 1.8× on TPOT: b is closer.
    assert w.closest.label.startswith("b ") and w.closest.ttft_p90_ms == 250.0
    msg = rec.nothing_met_message()
    assert "closest is b" in msg and "TTFT p90 250 ms" in msg and "TPOT p90 90 ms" in msg


def test_each_token_bin_is_ranked_on_its_own_unless_one_is_picked():
    pts = [point("a", 8, 0, tokens=(64, 16)), point("a", 8, 0, tokens=(256, 64)),
           point("b", 8, 0, tokens=(256, 64), epr=1.0)]
    rec = recommend(pts, sweep="s")
    assert [(w.input_tokens, w.output_tokens, len(w.ranking)) for w in rec.workloads] == [
        (64, 16, 1), (256, 64, 2)]
    rec = recommend(pts, sweep="s", input_tokens=256)
    assert [(w.input_tokens, w.ranking[0].head.gpu_model) for w in rec.workloads] == [
        (256, "b")]
    with pytest.raises(RecommendError, match="token bins .*64/16, 256/64") as exc:
        recommend(pts, sweep="s", input_tokens=128)
    assert exc.value.not_found


def test_unknown_or_ambiguous_model_and_no_server_scenario():
    with pytest.raises(RecommendError, match="no model 'x'"):
        recommend([point()], sweep="s", model="x")
    other = RunPoint(**{**point().__dict__, "model": "n", "run_id": "r-n"})
    with pytest.raises(RecommendError, match="pick one with --model"):
        recommend([point(), other], sweep="s")
    with pytest.raises(RecommendError, match="no server scenario"):
        recommend([point(kind="batch")], sweep="s")


# ---------------------------------------------------------------- certainty


def test_bootstrap_is_seeded_and_splits_ties():
    values = [[1.0, 1.2, 0.9], [1.1, 1.0, 1.3], [5.0, 5.1]]
    assert bootstrap(values, 500, 3) == bootstrap(values, 500, 3)
    p_best = bootstrap(values, 2000, 0)
    assert sum(p_best) == pytest.approx(1.0)
    assert p_best[2] == 0.0 and p_best[0] > p_best[1] > 0
    # Identical fixed values: every draw is a tie, shared equally.
    assert bootstrap([[2.0], [2.0]], 100, 0) == [0.5, 0.5]


def test_p_best_and_intervals_in_a_ranking():
    pts = [point("a", 8, r, epr=v) for r, v in enumerate((5.0, 5.2, 4.9, 5.0, 5.1))]
    pts += [point("b", 8, r, epr=v) for r, v in enumerate((5.1, 5.0, 5.3, 5.2, 5.0))]
    pts += [point("c", 8, r, epr=v) for r, v in enumerate((9.0, 9.5, 9.2, 9.1, 9.3))]
    (w,) = recommend(pts, sweep="s", draws=1000, seed=1).workloads
    assert w.uncertainty and w.ranked_by_probability
    assert [r.head.gpu_model for r in w.ranking] == ["a", "b", "c"]
    assert sum(r.p_best for r in w.ranking) == pytest.approx(1.0)
    assert 0.5 < w.ranking[0].p_best < 1.0 and w.ranking[2].p_best == 0.0
    for r in w.ranking:     # the farm's one CI: Student's t of the mean
        est = estimate(r.values)
        assert (r.ci_low, r.ci_high) == (est.low, est.high)
    text = format_recommendation(recommend(pts, sweep="s"))
    assert "caution: the 95% CIs of #1 and #2 overlap" in text
    assert "#1 is best in" in text and "Student's t" in text


def test_two_repetitions_are_too_few_to_rank():
    """Issue 22 item 7: at n = 2 recommend said "best in 100%" with a 95% CI that was the
    two values' range, where the report said mean ± t. Now one CI, and no probability."""
    pts = [point("a", 8, r, epr=v) for r, v in enumerate((40.6, 42.0))]
    pts += [point("b", 8, r, epr=v) for r, v in enumerate((50.0, 51.0))]
    rec = recommend(pts, sweep="s")
    (w,) = rec.workloads
    assert w.uncertainty and not w.ranked_by_probability
    top = w.ranking[0]
    assert top.p_best is None
    est = estimate([40.6, 42.0])
    assert (top.ci_low, top.ci_high) == (est.low, est.high)
    assert top.ci_low < 40.6 and top.ci_high > 42.0      # not the two values' range
    text = format_recommendation(rec)
    assert "best in" not in text and "100%" not in text
    assert "too few repetitions to rank (n = 2" in text
    doc = json.loads(format_recommendation(rec, "json"))
    assert doc["workloads"][0]["ranking"][0]["ci95"] == [est.low, est.high]
    assert doc["workloads"][0]["ranking"][0]["p_best"] is None


def test_one_repetition_has_no_uncertainty_estimate():
    pts = [point("a", 8, 0, epr=5.0), point("b", 8, 0, epr=6.0)]
    rec = recommend(pts, sweep="s")
    (w,) = rec.workloads
    assert not w.uncertainty
    assert all(r.p_best is None and r.ci_low is None for r in w.ranking)
    assert "the ranking has no uncertainty estimate" in format_recommendation(rec)
    doc = json.loads(format_recommendation(rec, "json"))
    assert doc["workloads"][0]["ranking"][0]["p_best"] is None
    assert doc["workloads"][0]["ranking"][0]["ci95"] is None


# ------------------------------------------------ on the farm's own sim runs


@pytest.fixture(scope="module")
def report_points(report_store):
    url, name = report_store
    with Store.open(url) as store:
        _, points = load_run_points(store, name)
    return url, name, points


def test_recount_agrees_with_the_workers_goodput_on_stored_runs(report_points):
    url, _, points = report_points
    server = [p for p in points if p.scenario_kind == "server" and p.measured]
    assert server
    with Store.open(url) as store:
        recount = StoredAttainment(store)
        for p in server:
            got = recount(p, p.get("slo_ttft_ms"), p.get("slo_tpot_ms"))
            assert got == pytest.approx(p.get("slo_attainment")), p
            # A stricter limit never counts more requests as good.
            assert recount(p, 20.0, 10.0) <= got


def _by_config(points):
    groups = {}
    for p in points:
        if p.usable:
            groups.setdefault(p.config_key, []).append(p)
    return groups


def test_report_store_ranking_is_the_stored_figures_arithmetic(report_points):
    _, name, points = report_points
    rec = recommend(points, sweep=name, simulated=True)
    assert rec.simulated and rec.met
    assert (rec.limits.ttft_ms, rec.limits.tpot_ms) == (2000.0, 200.0)
    groups = _by_config(points)
    for w in rec.workloads:
        values = [r.energy_per_good_request_j for r in w.ranking]
        assert values == sorted(values)
        configs = {p.config_key for p in points if p.measured
                   and (p.input_tokens, p.output_tokens) == (w.input_tokens, w.output_tokens)}
        assert len(w.ranking) + len(w.excluded) == len(configs)
        for r in w.ranking:
            reps = groups[r.head.config_key]
            expected = sum(p.get("energy_per_request_j") / p.get("slo_attainment")
                           for p in reps) / len(reps)
            assert r.energy_per_good_request_j == pytest.approx(expected)
            assert r.ttft_p90_ms == pytest.approx(
                sum(p.get("ttft_p90_ms") for p in reps) / len(reps))
            assert r.ttft_p90_ms <= 2000.0 and r.tpot_p90_ms <= 200.0
            # two repetitions: a CI, but too few to claim a probability of being best
            assert len(r.points) == 2 and r.p_best is None and r.ci_low is not None


def test_report_store_rate_is_recomputed_from_raw_figures(report_points):
    _, name, points = report_points
    rate = 4.0
    rec = recommend(points, sweep=name, rate_rps=rate, input_tokens=64, output_tokens=16)
    (w,) = rec.workloads
    groups = _by_config(points)
    for r in w.ranking:
        per_rep = []
        for p in groups[r.head.config_key]:
            cap = p.get("request_throughput_rps")
            n = math.ceil(rate / cap - 1e-9)
            u = rate / (n * cap)
            watts = u * p.get("avg_power_w") + (1 - u) * p.get("idle_ctx_power_w")
            per_rep.append(n * watts / rate / p.get("slo_attainment"))
        assert r.values == pytest.approx(per_rep)
        assert r.energy_per_good_request_j == pytest.approx(sum(per_rep) / len(per_rep))


def test_report_store_strict_limits_name_the_closest(report_points):
    _, name, points = report_points
    rec = recommend(points, sweep=name, ttft_ms=1.0, tpot_ms=1.0)
    assert not rec.met
    for w in rec.workloads:
        assert w.closest is not None
        assert w.excluded_counts()[EXCLUDED_LATENCY] >= 1


# ------------------------------------------------------------------- the CLI


def farmctl(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "farm.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "FARM_DB_URL": url})


def test_cli_recommend_table_and_json(report_store):
    url, name = report_store
    proc = farmctl(url, "recommend", name, "--model", "llama-3.1-8b", "--input-tokens", "64",
                   "--output-tokens", "16", "--rate", "4")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("SIMULATED") and out.rstrip().endswith("hardware")
    assert "arrival rate 4 req/s" in out and "P(best)" in out and "best per GPU" in out
    proc = farmctl(url, "recommend", name, "--format", "json", "--input-tokens", "256")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["simulated"] is True and doc["model"] == "llama-3.1-8b"
    assert [(w["input_tokens"], w["output_tokens"]) for w in doc["workloads"]] == [
        (256, 16), (256, 64)]
    assert doc["workloads"][0]["ranking"][0]["rank"] == 1


def test_cli_recommend_errors(report_store):
    url, name = report_store
    proc = farmctl(url, "recommend", name, "--ttft-ms", "1", "--tpot-ms", "1")
    assert proc.returncode == ExitCode.NO_MATCH
    assert "closest is" in proc.stderr and "Traceback" not in proc.stderr
    proc = farmctl(url, "recommend", name, "--model", "nope")
    assert proc.returncode == ExitCode.NOT_FOUND and "llama-3.1-8b" in proc.stderr
    proc = farmctl(url, "recommend", "no-such-sweep")
    assert proc.returncode == ExitCode.NOT_FOUND
    proc = farmctl(url, "recommend", name, "--rate", "0")
    assert proc.returncode == ExitCode.INVALID_INPUT
