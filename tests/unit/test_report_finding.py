"""The report states its key finding first: one sentence with its number and CI
(issue 22 item 7), by the farm's one CI method."""

from __future__ import annotations

from datetime import UTC, datetime

from farm.report.finding import key_finding
from farm.report.html import render_page
from farm.report.report import ReportData
from farm.report.stats import estimate
from tests.unit.test_compare import point


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
