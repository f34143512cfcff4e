"""Issue 22 item 7: the fitted-curves section draws only panels with a fit, names the
others in one line with the reason, and its legends are legible."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from farm.report.fits import fit_figures, only_fitted
from farm.report.plots import FIT_LEGEND_PT, FigureSpec, draw_fits
from tests.unit.farm.report.test_fits import point, synthetic


def _fitted_and_not() -> list:
    b, y = synthetic()
    fitted = [point(bi, i % 3, yi) for i, (bi, yi) in enumerate(zip(b, y))]
    # The same model at another input length with 3 batch sizes: no fit possible.
    short = [replace(point(bi, r, 1.0 / bi + 0.01 * r), run_id=f"s{bi}-{r}", input_tokens=512)
             for bi in (1, 2, 4) for r in range(2)]
    return fitted + short


def test_a_row_without_a_fit_is_not_drawn_and_one_line_says_why():
    (ff,) = fit_figures(_fitted_and_not())
    assert len(ff.token_pairs) == 2
    (kept,), line = only_fitted([ff])
    assert kept.token_pairs == [(64, 16)]
    assert line == ("Not drawn, no fit: m vs concurrency, in 512 / out 16 tokens "
                    "(3 batch size(s), fewer than the 4 parameters).")
    fig = draw_fits(FigureSpec("fits", "fits", "t", kept))
    assert len(fig.axes) == 2                          # one row: J/token and W
    assert all(any(ln.get_gid() == "fit" for ln in ax.get_lines()) for ax in fig.axes)


def test_no_fit_anywhere_draws_nothing():
    points = [point(bi, r, 1.0 / bi + 0.01 * r) for bi in (1, 2, 4) for r in range(2)]
    kept, line = only_fitted(fit_figures(points))
    assert kept == [] and line.startswith("Not drawn, no fit: m vs concurrency, in 64 / out 16")


def test_the_legends_are_legible():
    b, y = synthetic()
    (ff,) = fit_figures([point(bi, i % 3, yi) for i, (bi, yi) in enumerate(zip(b, y))])
    fig = draw_fits(FigureSpec("fits", "fits", "t", ff))
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert sizes and min(sizes) >= FIT_LEGEND_PT >= 8
    assert np.isfinite(sizes).all()


def test_compare_words_each_side_as_every_other_output_does():
    # Was "1 ± 0.25": now the one CI wording (farm.report.stats.ci_text).
    from farm.report.compare import compare, format_comparison
    from tests.unit.farm.report.test_compare import point as cpoint

    a = [cpoint(8, r, jpt=v) for r, v in enumerate((1.0, 1.1, 0.9))]
    b = [cpoint(8, r, jpt=v, version="2") for r, v in enumerate((0.8, 0.85, 0.75))]
    text = format_comparison(compare(a, b, sweep_a="A", sweep_b="B"), columns=None,
                             width=200)
    assert "1 (95% CI 0.752–1.25)" in text and " 3/3 " in text      # n: its own column
    assert "±" not in text.split("Δ = (B − A)")[0]
