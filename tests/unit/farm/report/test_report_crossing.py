"""J/request (idle amortised) against the arrival rate per GPU, and where two GPUs
cross (experiment d of issue 19; farm/report/crossing.py, figures/rate_crossing.py).

Two rate sweeps built as run points: a big GPU, idle-heavy but fast
(120/R + 5 J/request), and a low-idle small one (30/R + 20), which cross at
R = 6 req/s, 25 J/request; the small one saturates at 32 req/s.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from farm.report.crossing import crossings, no_crossing_note
from farm.report.figures import FigureInputs
from farm.report.figures.rate_crossing import crossing_figures
from farm.report.plots import FigureSpec, draw_figure
from farm.report.points import RunPoint
from farm.report.series import PER_REQUEST, energy_vs_load
from tests.unit.farm.report.test_report_browser import _check_figure

NET = "energy_per_request_net_j"
RATES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def pt(gpu: str, rate: float, rep: int, joules: float, **figures) -> RunPoint:
    return RunPoint(
        run_id=f"{gpu}-{rep}", sweep="wc", repetition=rep, model="m", backend="sim",
        gpu_model=gpu, gpu_count=1, engine="sim", engine_version="1", engine_args=(),
        scenario="server-open", scenario_kind="server", load_kind="request_rate",
        load_value=rate, input_tokens=512, output_tokens=256, decoding="greedy",
        status="succeeded", simulated=True, valid=True, invalid_reasons=None, error=None,
        figures={PER_REQUEST: joules, NET: joules * 0.5, **figures})


def sweep() -> list[RunPoint]:
    out = []
    for rep in (0, 1):
        jitter = 1 + 0.01 * rep
        out += [pt("h200", r, rep, (120 / r + 5) * jitter) for r in RATES]
        out += [pt("l4", r, rep, (30 / r + 20) * jitter,
                   saturation="achieved_below_offered" if r == 32 else None,
                   knee=True if r == 16 else None) for r in RATES]
    return out


def inputs(points):
    return FigureInputs("wc", points, True, False, (PER_REQUEST, "x"), (), reads=None)


def test_the_crossing_is_interpolated_in_log_log():
    big, small = energy_vs_load(sweep(), "request_rate")
    (c,) = crossings(big, small)
    assert (c.low_first, c.high_first, c.between) == ("l4", "h200", (4.0, 8.0))
    # log-log between (4, 35.35/27.6) and (8, 20.2/24): close to the exact 6 req/s, 25 J
    assert c.rate_rps == pytest.approx(6.0, rel=0.08)
    assert c.energy_j == pytest.approx(25.0, rel=0.08)
    assert c.note().startswith("l4 and h200 cross at ≈ ")
    assert "below it l4 takes less per request, above it h200" in c.note()
    assert no_crossing_note(big, small) is None


def test_points_past_saturation_do_not_make_a_crossing():
    # The small GPU's saturated point (32 req/s) dips under the big one: no crossing there.
    points = [replace(p, figures={**p.figures, PER_REQUEST: 1.0})
              if p.gpu_model == "l4" and p.load_value == 32 else p for p in sweep()]
    big, small = energy_vs_load(points, "request_rate")
    assert [c.between for c in crossings(big, small)] == [(4.0, 8.0)]


def test_one_run_saturating_early_does_not_end_the_curve():
    # Run 0 of the big GPU stops at 4 req/s (a noisy window), run 1 goes on: most of
    # its runs had not saturated, so 4 and 8 req/s still count, and the crossing too.
    points = [p for p in sweep() if not (p.gpu_model == "h200" and p.repetition == 0
                                         and p.load_value > 4)]
    points = [replace(p, figures={**p.figures, "saturation": "throughput_flat"})
              if (p.gpu_model, p.repetition, p.load_value) == ("h200", 0, 4.0) else p
              for p in points]
    big, small = energy_vs_load(points, "request_rate")
    assert [c.between for c in crossings(big, small)] == [(4.0, 8.0)]


def test_lines_that_do_not_cross_say_which_is_cheaper_and_by_how_much():
    points = [p for p in sweep() if p.load_value <= 4]
    big, small = energy_vs_load(points, "request_rate")
    assert crossings(big, small) == []
    note = no_crossing_note(big, small)
    assert note.startswith("l4 and h200 do not cross between 1 and 4 req/s: h200 takes ")
    low, high = (125 / 50 - 1), (35 / 27.5 - 1)
    assert f"{high:.0%}–{low:.0%} more" in note


def test_the_figure_rings_the_crossing_and_draws_net_dashed():
    (cf,) = crossing_figures(inputs(sweep()))
    assert [s.label for s in cf.gross] == ["h200", "l4"] and set(cf.net) == {"h200", "l4"}
    assert cf.notes()[0] == "24 run point(s) used; none left out"
    assert any("cross at ≈ 6" in n for n in cf.notes())
    assert any(n.startswith("l4: rate sweep knee at 16 req/s") for n in cf.notes())
    fig = draw_figure(FigureSpec("x", "rate_crossing", "t", cf, simulated=True))
    ax = fig.axes[0]
    (ring,) = [line for line in ax.get_lines() if line.get_gid() == "crossing"]
    assert math.isclose(ring.get_xdata()[0], cf.crossings[0].rate_rps)
    assert any(t.get_text().startswith("cross at 6") for t in ax.texts)
    assert sum(1 for line in ax.get_lines() if line.get_linestyle() == "--") == 2
    assert ax.get_xscale() == ax.get_yscale() == "log"
    _check_figure(FigureSpec("x", "rate_crossing", "SIMULATED — t", cf, simulated=True))


def test_one_gpu_has_nothing_to_cross():
    assert crossing_figures(inputs([p for p in sweep() if p.gpu_model == "l4"])) == []
