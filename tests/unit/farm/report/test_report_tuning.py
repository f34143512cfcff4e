"""The report with a sweep's GPU tuning axes (power limit, SM clock) and rate sweeps:
each power limit its own configuration and line, the run table's power limit, SM
clock and passes columns, the "energy vs power limit / SM clock" figure, and the
rate sweep's knee marked on energy vs request rate with its stop rule in the caption.

Unit cases build RunPoints directly; `tuned_store` records factory results of
runs that asked for power limits (the simulated GPUs refuse the axis, so no
simulated run can have one) through the store, as the recorder would.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from farm.report.plots import FigureSpec, draw_figure, render
from farm.report.points import RunPoint
from farm.report.report import collect, write_report
from farm.report.series import PER_REQUEST, PER_TOKEN, energy_vs_load, load_figures
from farm.report.table import HEADERS, row
from farm.report.tuning import applied_notes, tuning_figures
from farm.store import Store
from tests import factories

POWER = "avg_power_w"


def pt(run_id: str, *, rep: int = 0, load: float = 8.0, kind: str = "batch",
       watts: float | None = None, mhz: int | None = None, **figures) -> RunPoint:
    """A valid measured run point; `watts`/`mhz`: the tuning it asked for."""
    values = {PER_REQUEST: 10.0, PER_TOKEN: 1.0, POWER: 300.0, **figures}
    return RunPoint(
        run_id=run_id, sweep="unit", repetition=rep, model="m", backend="gpu",
        gpu_model="h200", gpu_count=1, engine="vllm", engine_version="1", engine_args=(),
        scenario=kind, scenario_kind="batch" if kind == "batch" else "server",
        load_kind=kind, load_value=load, input_tokens=64, output_tokens=16,
        decoding="greedy", status="succeeded", simulated=False, valid=True,
        invalid_reasons=None, error=None, power_limit_w=watts, sm_clock_mhz=mhz,
        figures=values)


def cap_sweep() -> list[RunPoint]:
    """Batch 8 and 64 at 300/450/700 W, two repetitions: J/token rises with the cap."""
    return [pt(f"b{b}-{w:g}-{r}", rep=r, load=b, watts=w,
               **{PER_TOKEN: w / 10_000 + r / 1000 + (0.01 if b == 8 else 0), POWER: w * 0.9})
            for b in (8, 64) for w in (300.0, 450.0, 700.0) for r in (0, 1)]


# ------------------------------------------------------------ configurations


def test_each_power_limit_is_a_configuration_and_a_line_of_its_own():
    points = [pt(f"c{c}-{w:g}", load=c, kind="concurrency", watts=w, **{PER_REQUEST: w / c})
              for c in (1, 8) for w in (300.0, 700.0)]
    assert len({p.config_key for p in points}) == 4              # not 2 × 2 repetitions
    series = energy_vs_load(points, "concurrency", PER_REQUEST)
    assert [s.label for s in series] == ["h200 · 300 W cap", "h200 · 700 W cap"]
    assert [s.means for s in series] == [[300.0, 37.5], [700.0, 87.5]]
    assert [p.estimate.n for s in series for p in s.points] == [1, 1, 1, 1]
    clocks = [replace(p, power_limit_w=None, sm_clock_mhz=m)
              for p, m in zip(points, (1200, 1980, 1200, 1980))]
    assert [s.label for s in energy_vs_load(clocks, "concurrency")] == [
        "h200 · SM 1200 MHz", "h200 · SM 1980 MHz"]
    # One cap for the whole sweep: one line, labelled by its GPU alone.
    same = [replace(p, power_limit_w=300.0) for p in points]
    assert [s.label for s in energy_vs_load(same, "concurrency")] == ["h200"]


def test_the_run_table_shows_power_limit_sm_clock_and_passes():
    at = {header: i for i, header in enumerate(HEADERS)}
    assert HEADERS.index("GPU") < at["power limit"] < at["SM clock"] < at["engine"]
    cells, _ = row(pt("a", watts=300.0, mhz=1200, passes=3, applied_power_limit_w=299.8,
                      applied_sm_clock_mhz=1215.0))
    assert (cells[at["power limit"]], cells[at["SM clock"]], cells[at["passes"]]) == (
        "300", "1200 (read 1215)", "3")
    cells, _ = row(pt("b", watts=300.0, tuning_refused="GPU-a: Insufficient Permissions"))
    assert cells[at["power limit"]] == "300 (refused)"
    cells, _ = row(pt("c"))
    assert (cells[at["power limit"]], cells[at["SM clock"]], cells[at["passes"]]) == (
        "—", "—", "—")                                         # null, never 0


# ------------------------------------------------ energy vs power limit figure


def test_energy_vs_power_limit_has_a_line_per_batch_size_over_the_caps():
    (figure,) = tuning_figures(cap_sweep(), (PER_TOKEN, POWER))
    assert (figure.model, figure.load_kind, figure.colour_lines) == ("m", "power_limit_w", True)
    lines = figure.series[PER_TOKEN]
    assert [s.label for s in lines] == ["h200 · 64 prompts", "h200 · 8 prompts"]
    assert all(s.xs == [300.0, 450.0, 700.0] for s in lines)
    batch8 = lines[1]
    assert batch8.means == pytest.approx([0.0405, 0.0555, 0.0805])
    assert [p.estimate.n for p in batch8.points] == [2, 2, 2]
    assert figure.series[POWER][0].means == pytest.approx([270.0, 405.0, 630.0])
    assert figure.selection.note() == "12 run point(s) used; none left out"
    # Drawn on the requested cap, a colour per line, the power in the second column.
    fig = draw_figure(FigureSpec("t", "tuning", "m: vs power limit", figure))
    energy_ax, power_ax = fig.axes[0], fig.axes[1]
    assert energy_ax.get_xlabel() == "power limit requested (W, per GPU)"
    assert power_ax.get_ylabel() == "mean GPU power (W)"
    colours = {line.get_color() for line in energy_ax.get_lines() if len(line.get_xdata()) == 3}
    assert len(colours) == 2


def test_no_tuning_figure_without_a_tuning_axis():
    assert tuning_figures([pt(f"r{b}", load=b) for b in (8, 64)], (PER_TOKEN, POWER)) == []
    one_cap = [pt(f"r{b}", load=b, watts=300.0) for b in (8, 64)]
    assert tuning_figures(one_cap, (PER_TOKEN, POWER)) == []
    clocks = [replace(p, power_limit_w=None, sm_clock_mhz=1200 + 300 * (i % 3))
              for i, p in enumerate(cap_sweep())]
    (figure,) = tuning_figures(clocks, (PER_TOKEN, POWER))
    assert figure.load_kind == "sm_clock_mhz"
    assert figure.series[PER_TOKEN][0].xs == [1200.0, 1500.0, 1800.0]


def test_the_caption_says_what_the_gpus_read_back():
    points = [replace(p, figures={**p.figures, "applied_power_limit_w": p.power_limit_w
                                  - (0.5 if p.repetition else 0)}) for p in cap_sweep()]
    points[0] = replace(points[0], figures={**points[0].figures, "applied_power_limit_w": None,
                                           "tuning_refused": "GPU-a: Not Supported"})
    assert applied_notes(points, "power_limit_w") == [
        "300 W requested: read back 299.5–300 W (3 runs), refused on 1 run",
        "450 W requested: read back 449.5–450 W (4 runs)",
        "700 W requested: read back 699.5–700 W (4 runs)"]


@pytest.fixture(scope="module")
def tuned_store(tmp_path_factory):
    """The small simulated sweep's runs asked for 300 W and 700 W caps: factory
    results (J/token rising with the cap), each GPU reading its cap back."""
    url = f"sqlite:///{tmp_path_factory.mktemp('tuned')}/farm.db"
    spec, toml, runs = factories.sweep()
    tuned = [factories.tuned(run, watts) for watts in (300.0, 700.0) for run in runs]
    with Store.open(url, upgrade=True) as store:
        sid = store.record_sweep(spec, toml)
        store.add_runs(sid, tuned)
        for run in tuned:
            n = len(run.scenario.load_points)
            result = factories.result(run, steady_energy_j=[run.hardware.power_limit_w / 2] * n)
            store.record_result(factories.with_tuning(result, run,
                                                      [run.hardware.power_limit_w]))
    return url, spec.name


def test_a_power_limit_sweep_report_keeps_the_caps_apart(tuned_store, tmp_path):
    url, name = tuned_store
    with Store.open(url) as store:
        data = collect(store, name)
        done = write_report(store, name, tmp_path / "out")
    assert ("power limits asked for (per GPU)", "300 W, 700 W") in data.summary
    assert not [what for what, _ in data.summary if what.startswith("SM clocks")]
    (tuning,) = [s for s in data.figures if s.section == "tuning"]
    assert tuning.title == "SIMULATED — tiny-llama-1B: J/output token and power (gross) vs " \
                           "power limit"
    assert "300 W requested: read back 300 W (8 runs)" in tuning.notes
    lines = tuning.data.series[PER_TOKEN]
    assert {s.label for s in lines} == {
        f"{gpu} · {load}" for gpu in ("h100-80gb", "l4") for load in ("16 prompts", "c=1", "c=8")}
    assert all(s.means == pytest.approx([300 / 2 / 50, 700 / 2 / 50]) for s in lines)
    # Energy vs load: a line per GPU and cap, never the caps averaged together.
    closed = next(s.data for s in data.figures if s.section == "energy_load"
                  and s.data.load_kind == "concurrency")
    assert sorted(s.label for s in closed.series[PER_TOKEN]) == [
        "h100-80gb · 300 W cap", "h100-80gb · 700 W cap", "l4 · 300 W cap", "l4 · 700 W cap"]
    assert all(p.estimate.n == 2 for s in closed.series[PER_TOKEN] for p in s.points)
    page = done.index.read_text(encoding="utf-8")
    assert '<h2 id="tuning">Energy vs power limit / SM clock</h2>' in page
    assert "<th>power limit</th>" in page and "<th>W</th>" in page
    assert render(tuning)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_without_tuning_says_so_in_the_section(tmp_path):
    url = f"sqlite:///{tmp_path}/farm.db"
    spec, toml, runs = factories.sweep()
    with Store.open(url, upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, toml), runs)
        for run in runs:
            store.record_result(factories.result(run))
        data = collect(store, spec.name)
    assert not [s for s in data.figures if s.section == "tuning"]
    assert not [what for what, _ in data.summary if "asked for" in what]
    assert data.section_notes["tuning"][0].startswith(
        "The sweep varies neither the power limit nor the SM clock")


# ------------------------------------------------------------ the rate sweep


def rate_sweep(knees: tuple[float, ...], stops: tuple[tuple[float, str], ...]) -> list[RunPoint]:
    """Two runs of a rate sweep over 1…8 req/s: run r's knee at knees[r], its stop at
    stops[r] (rate, rule); each stops after its stop rate."""
    points = []
    for r, (knee, (stop, rule)) in enumerate(zip(knees, stops, strict=True)):
        for rate in (1.0, 2.0, 4.0, 8.0):
            if rate > stop:
                break
            points.append(pt(f"run{r}", rep=r, load=rate, kind="request_rate",
                             knee=True if rate == knee else None,
                             saturation=rule if rate == stop else None,
                             **{PER_REQUEST: 40.0 / rate + rate}))
    return points


def test_the_knee_is_marked_and_the_stop_rule_named():
    points = rate_sweep((4.0, 4.0), ((8.0, "throughput_flat"), (8.0, "throughput_flat")))
    (figure,) = load_figures(points)
    (line,) = figure.series[PER_REQUEST]
    assert [(p.x, p.knees, p.saturations) for p in line.points] == [
        (1.0, 0, ()), (2.0, 0, ()), (4.0, 2, ()),
        (8.0, 0, ("throughput_flat", "throughput_flat"))]
    assert figure.rate_sweep_notes() == [
        "h200, in 64 / out 16 tokens: rate sweep knee at 4 req/s (2 of 2 runs); stopped at "
        "8 req/s by throughput flat (2 runs)"]
    fig = draw_figure(FigureSpec("r", "energy_load", "rate sweep", figure))
    for ax in fig.axes:                        # J/request and J/output token
        (star,) = [line for line in ax.get_lines() if line.get_gid() == "knee"]
        assert list(star.get_xdata()) == [4.0] and star.get_marker() == "*"
        assert "knee" in [t.get_text() for t in ax.texts]
        (cross,) = [line for line in ax.get_lines() if line.get_gid() == "saturated"]
        assert list(cross.get_xdata()) == [8.0] and cross.get_marker() == "X"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "rate sweep knee: the highest rate before saturation" in legend
    assert "rate sweep stopped: saturated here" in legend


def test_runs_that_disagree_on_the_knee_say_how_many_found_it_where():
    points = rate_sweep((2.0, 4.0), ((4.0, "ttft_growth"), (8.0, "achieved_below_offered")))
    (line,) = energy_vs_load(points, "request_rate")
    assert line.rate_sweep_note() == (
        "rate sweep knee at 2 req/s (1 of 2 runs), 4 req/s (1 of 2 runs); stopped at 4 req/s "
        "by TTFT growth (1 run), 8 req/s by achieved below offered (1 run)")
    fig = draw_figure(FigureSpec("r", "energy_load", "rate sweep", load_figures(points)[0]))
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["knee (1 of 2)",
                                                              "knee (1 of 2)"]
    # Not a rate sweep: no note, no star.
    plain = [pt(f"c{c}", load=c, kind="concurrency") for c in (1, 8)]
    (closed,) = energy_vs_load(plain, "concurrency")
    assert closed.rate_sweep_note() is None
    fig = draw_figure(FigureSpec("c", "energy_load", "closed", load_figures(plain)[0]))
    assert not [line for ax in fig.axes for line in ax.get_lines()
                if line.get_gid() in ("knee", "saturated")]
