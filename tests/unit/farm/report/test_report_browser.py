"""The report as a reader sees it: figure geometry in the PNGs, and the page in a real
headless browser (Debian's `chromium`; `scripts/setup --dev` installs it).

- Every figure's title (with its SIMULATED label), panel titles, legends and
  panel labels lie inside the image; the title overlaps no panel; labels
  (plateau/minimum, Pareto front points) overlap no other label.
- The page fits a 1400 px window: no horizontal overflow (`scrollWidth`
  measured by chromium --dump-dom on a COPY of the page with a test-only
  script; the shipped page has none), and the screenshot's right margin is
  empty.
- The validity bounds the sweep used are on the page next to the defaults.

The browser tests skip, saying why, where chromium is absent.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from farm.report.plots import draw_figure, place_labels
from farm.report.report import collect, write_report
from farm.report.series import PER_REQUEST, find_plateau, find_turn, load_figures
from farm.store import Store
from tests.paths import ROOT

WIDTH = 1400
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; "
                             "scripts/setup --dev installs it as root or with sudo)")


@pytest.fixture(scope="module")
def quickstart_store(tmp_path_factory):
    """examples/quickstart.toml measured on simulated GPUs (its own min_steady_s = 0.2 s
    and cooldown_timeout_s = 0), CodeCarbon off to keep it quick: ~20 s."""
    from tests.reportdata import fill_store

    toml = (ROOT / "examples/quickstart.toml").read_text() + "codecarbon = false\n"
    assert toml.rstrip().splitlines()[-1] == "codecarbon = false"    # in [measurement]
    url = f"sqlite:///{tmp_path_factory.mktemp('quickstart') / 'farm.db'}"
    with Store.open(url, upgrade=True) as store:
        name = fill_store(store, toml)
    return url, name


@pytest.fixture(scope="module")
def quickstart_report(quickstart_store, tmp_path_factory):
    url, name = quickstart_store
    with Store.open(url) as store:
        return write_report(store, name, tmp_path_factory.mktemp("qs-report") / "out")


# ------------------------------------------------------------- figure geometry


def _inside(inner, outer, slack: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - slack and inner.x1 <= outer.x1 + slack
            and inner.y0 >= outer.y0 - slack and inner.y1 <= outer.y1 + slack)


def _check_figure(spec) -> None:
    from matplotlib.text import Text

    fig = draw_figure(spec)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    title = fig._suptitle
    box = title.get_window_extent(renderer)
    assert title.get_text().startswith("SIMULATED — "), spec.slug
    assert _inside(box, frame, 0), (spec.slug, box, frame)
    for ax in fig.axes:
        assert _inside(ax.get_tightbbox(renderer), frame), (spec.slug, ax.get_title())
        assert not box.overlaps(ax.get_tightbbox(renderer)), (spec.slug, ax.get_title())
        # the text boxes alone (an annotation's extent includes its leader line)
        labels = [Text.get_window_extent(t, renderer) for t in ax.texts if t.get_text()]
        for i, a in enumerate(labels):
            assert not any(a.overlaps(b) for b in labels[i + 1:]), (spec.slug, ax.get_title())
    for legend in fig.legends:
        assert _inside(legend.get_window_extent(renderer), frame), spec.slug


def test_every_figure_title_and_label_lies_inside_its_png(report_store):
    """The report-grid fixture: long heat-map titles, plateaus and minima, Pareto labels."""
    url, name = report_store
    with Store.open(url) as store:
        data = collect(store, name)
    assert {s.section for s in data.figures} >= {"energy_load", "pareto", "heatmap"}
    heatmaps = [s for s in data.figures if s.section == "heatmap"]
    assert any(len(s.title) > 90 for s in heatmaps)      # the title that used to be clipped
    for spec in data.figures:
        _check_figure(spec)


def test_labels_at_one_point_are_moved_apart():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    fig = Figure(figsize=(4, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([1, 8, 32], [10, 2, 3])
    ax.set_xlim(0, 40)
    ax.set_ylim(0, 12)
    labels = [(8, 2 + 0.01 * i, f"minimum at 8 ({i})", "black") for i in range(5)]
    notes = place_labels(ax, labels, [(1, 10), (8, 2), (32, 3)])
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    boxes = [Text.get_window_extent(n, renderer) for n in notes]     # text without leader
    assert len(boxes) == 5
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    frame = ax.get_window_extent(renderer)
    assert all(_inside(b, frame) for b in boxes)


def test_a_minimum_is_not_called_a_plateau():
    flat = find_turn([(1, 100.0), (2, 60.0), (4, 40.0), (8, 38.0), (16, 37.0)])
    assert (flat.kind, flat.at, flat.label) == ("plateau", 4, "plateau ≥ 4")
    assert "levels off (plateau) from concurrency 4" in flat.note()
    # Falls to 8, then rises 30% per doubling: a minimum at 8, not a plateau.
    dip = find_turn([(1, 40.0), (8, 8.0), (32, 13.5)])
    assert (dip.kind, dip.at, dip.label) == ("minimum", 8, "minimum at 8")
    assert dip.rise_per_doubling == pytest.approx((13.5 / 8) ** 0.5 - 1)     # 2 doublings
    assert find_plateau([(1, 40.0), (8, 8.0), (32, 13.5)]) is None
    assert "minimum at concurrency 8, then rises again" in dip.note()
    # Flat, then a rise: the minimum is the lowest point of the flat part.
    late = find_turn([(1, 100.0), (2, 10.0), (4, 9.5), (8, 15.0)])
    assert (late.kind, late.at) == ("minimum", 4)
    assert find_turn([(1, 100.0), (8, 20.0), (32, 12.0)]) is None     # still falling


def test_series_name_their_turn(report_store):
    url, name = report_store
    with Store.open(url) as store:
        from farm.report.points import load_run_points

        points = load_run_points(store, name)[1]
    closed = load_figures(points)[0]
    kinds = {s.turn.kind for s in closed.series[PER_REQUEST] if s.turn is not None}
    assert kinds == {"plateau", "minimum"}          # the fixture has both
    for s in closed.series[PER_REQUEST]:
        if s.turn is not None and s.turn.kind == "minimum":
            at = s.xs.index(s.turn.at)
            assert s.means[at] < s.means[at + 1]   # it rises after a minimum
    notes = closed.turn_notes()
    assert any("minimum at concurrency" in n for n in notes)
    assert not any("plateau" in n and "minimum" not in n and "rises" in n for n in notes)


def test_pareto_front_points_are_numbered_with_scenario_and_tokens(report_store):
    url, name = report_store
    with Store.open(url) as store:
        data = collect(store, name)
    # One front per token-length bin (bins are never pooled), each point numbered.
    specs = [s for s in data.figures if s.section == "pareto"]
    assert specs
    for spec in specs:
        fig = draw_figure(spec)
        for ax, panel in zip(fig.axes, spec.data.panels):
            texts = [t.get_text() for t in ax.texts]
            front = panel.front_points
            assert len(texts) == len(front) > 0
            assert len({(p.input_tokens, p.output_tokens) for p in front}) == 1
            for n, (text, p) in enumerate(zip(texts, front), 1):
                assert text.startswith(f"{n} ") and p.load_label in text
                assert f"{p.input_tokens}→{p.output_tokens}" in text


# ------------------------------------------------------------- the page


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--run-all-compositor-stages-before-draw",
         f"--user-data-dir={tmp / 'profile'}", f"--window-size={WIDTH},1000", *args],
        capture_output=True, text=True, timeout=120, check=True)


def _page_widths(report, tmp: Path) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of the report's page in a 1400 px window, read by a
    test-only script in a copy of the page (the shipped page has none)."""
    page = report.index.read_text(encoding="utf-8")
    assert "<script" not in page
    probe = report.out_dir / "probe.html"
    end = page.rfind("</body>")
    probe.write_text(page[:end] + "<script>document.body.dataset.widths = "
                     "document.documentElement.scrollWidth + ' ' + "
                     "document.documentElement.clientWidth;</script>" + page[end:],
                     encoding="utf-8")
    dom = _chromium("--dump-dom", probe.as_uri(), tmp=tmp).stdout
    scroll, client = map(int, re.search(r'data-widths="(\d+) (\d+)"', dom).groups())
    return scroll, client


@needs_chromium
def test_page_fits_1400_px_without_horizontal_overflow(quickstart_report, tmp_path):
    scroll, client = _page_widths(quickstart_report, tmp_path)
    assert client <= WIDTH and scroll <= client, (scroll, client)
    # The screenshot: every column of its right margin (right of the body's 2rem
    # margin) is page background outside the red banners.
    import numpy as np
    from PIL import Image

    shot = tmp_path / "page.png"
    _chromium(f"--screenshot={shot}", f"--window-size={WIDTH},12000",
              quickstart_report.index.as_uri(), tmp=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[1] == WIDTH
    banner = (pixels[:, 2, 0] > 150) & (pixels[:, 2, 1] < 60)           # #b00020 rows
    margin = pixels[~banner, WIDTH - 24:, :]
    assert margin.min() >= 250, "something is drawn in the page's right margin"


@pytest.fixture(scope="module")
def tuned_report(tmp_path_factory):
    """A power limit × SM clock sweep's report, every optional column of the run table
    shown (power limit, SM clock read back 15 MHz off, 3 passes): factory results, as
    the simulated GPUs refuse the tuning axes."""
    from tests import factories

    out = tmp_path_factory.mktemp("tuned-report")
    spec, toml, runs = factories.sweep()
    tuned = [factories.tuned(run, watts, 1200) for watts in (300.0, 700.0) for run in runs]
    with Store.open(f"sqlite:///{out / 'farm.db'}", upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, toml), tuned)
        for run in tuned:
            result = factories.result(run)
            result = result.model_copy(update={"load_points": [
                lp.model_copy(update={"passes": 3}) for lp in result.load_points]})
            store.record_result(factories.with_tuning(
                result, run, [run.hardware.power_limit_w - 0.2], [1215.0]))
        return write_report(store, spec.name, out / "out")


@needs_chromium
def test_a_tuned_sweeps_page_fits_1400_px_too(tuned_report, tmp_path):
    page = tuned_report.index.read_text(encoding="utf-8")
    assert "<th>power limit</th><th>SM clock</th>" in page and "<th>passes</th>" in page
    assert ">1200 (read 1215)</td>" in page
    scroll, client = _page_widths(tuned_report, tmp_path)
    assert client <= WIDTH and scroll <= client, (scroll, client)


@needs_chromium
def test_page_states_the_validity_bounds_it_used(quickstart_report, tmp_path):
    dom = _chromium("--dump-dom", quickstart_report.index.as_uri(), tmp=tmp_path).stdout
    text = html.unescape(re.sub(r"<[^>]+>", " ", dom))
    text = " ".join(text.split())
    assert "Validity bounds and measurement settings used" in text
    assert "min_steady_s = 0.2 s (default 30 s)" in text
    assert "cooldown_timeout_s = 0 s (default 300 s)" in text
    assert "steady_window >= 0.2 s" in text          # the bound the verdicts recorded
    # Each figure's caption says SIMULATED (its PNG's title: the geometry test above).
    assert text.count("SIMULATED — ") >= len(quickstart_report.figures) + 1   # + page title


def test_quickstart_report_lists_the_bounds_without_a_browser(quickstart_report):
    page = quickstart_report.index.read_text(encoding="utf-8")
    assert 'id="validity-bounds"' in page
    assert "min_steady_s = 0.2 s (default 30 s)" in page
    assert '<tr class=changed><td class="t"><code>min_steady_s</code>' in page
