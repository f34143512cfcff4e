"""The report states its key finding first: one sentence with its number and CI
(issue 22 item 7), by the farm's one CI method."""

from __future__ import annotations

from datetime import UTC, datetime

from farm.report.finding import key_finding
from farm.report.html import render_page
from farm.report.report import ReportData
from farm.report.stats import estimate
from tests.unit.farm.report.test_compare import point


def _points():
    return ([point(8, r, jpt=v, gpu="l4", simulated=True) for r, v in enumerate((40.6, 42.0))]
            + [point(8, r, jpt=v, gpu="h100", simulated=True)
               for r, v in enumerate((50.0, 52.0))]
            + [point(1, 0, jpt=1.0, gpu="h100", simulated=True, valid=False)])


def test_the_finding_is_one_sentence_with_its_number_and_ci():
    text = key_finding(_points())
    est = estimate([40.6, 42.0])
    assert text.startswith("Lowest energy per output token: sim:l4 vllm")
    assert "in 64 / out 16 tokens" in text
    # Student's t at n = 2 (the report's and recommend's one CI), not the values' range
    assert f"41.3 J/out-tok (95% CI {est.low:.3g}–{est.high:.3g} J/out-tok, n = 2)" in text
    # the invalid h100 point (1.0 J) is left out
    assert "the best on sim:h100 takes 23% more (51 J/out-tok, n = 2)" in text
    assert text.count(". ") == 0 and text.endswith(".")


def test_the_page_states_the_finding_before_anything_else():
    data = ReportData("s", True, datetime.now(UTC), _points(), [], [], [],
                      finding=key_finding(_points()), imported_from=["export sha256:ab (x)"])
    page = render_page(data, {})
    assert page.index('class="finding"') < page.index('class="meta"') < page.index("Summary")
    assert "Imported results (re-checked on import, not measured here): export sha256:ab" \
        in page


def test_one_pareto_front_per_workload_bin():
    """Issue 22 item 7: the front pooled the 128- and 512-token bins, so the short bin's
    points hid the long bin's front. One figure (and front) per bin."""
    from farm.report.pareto import pareto_figures

    short = [point(c, r, jpt=1.0 / c, gpu=g, simulated=True, ttft=10.0 * c)
             for g in ("l4", "h100") for c in (1, 8) for r in (0, 1)]
    long = [p.__class__(**{**p.__dict__, "run_id": p.run_id + "-512", "input_tokens": 512,
                           "figures": {**p.figures, "energy_per_output_token_j":
                                       4 * p.figures["energy_per_output_token_j"],
                                       "ttft_p90_ms": 4 * p.figures["ttft_p90_ms"]}})
            for p in short]
    figures = pareto_figures(short + long, energies=("energy_per_output_token_j",),
                             latencies=("ttft_p90_ms",), simulated=True)
    assert [f.workload for f in figures] == ["in 64 / out 16 tokens, greedy",
                                             "in 512 / out 16 tokens, greedy"]
    for f in figures:
        (panel,) = f.panels
        assert {p.input_tokens for p in panel.points} == ({64} if "64" in f.workload
                                                          else {512})
        assert panel.front          # the long bin has a front of its own
