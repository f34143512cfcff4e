"""`farmctl report`: the data behind every figure, the page and its files, the command.

Most tests read `report_store` (tests/reportdata.py: the farm's own simulated
runs, sim H100 + sim L4, closed loop c = 1/8/32, open loop 2/8 req/s, batch,
input 64/256 × output 16/64, 2 repetitions); unit cases build RunPoints directly.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from statistics import mean

import pytest

from farm.cli import ExitCode
from farm.report.heatmap import heatmap_figures, heatmap_grid
from farm.report.pareto import dominates, pareto_figures, pareto_front
from farm.report.points import RunPoint, load_run_points
from farm.report.report import collect, write_report
from farm.report.selection import select
from farm.report.series import (
    PER_REQUEST,
    PER_TOKEN,
    energy_vs_load,
    find_plateau,
    find_turn,
    load_figures,
)
from farm.report.table import HEADERS, row
from farm.report.timeline import (
    UnknownRun,
    build_timeline,
    representative_runs,
    resolve_runs,
)
from farm.store import Store
from farm_contract import lengthbins

GPUS = {"h100-80gb", "l4"}
PAIRS = {(64, 16), (64, 64), (256, 16), (256, 64)}


# ------------------------------------------------------------------ helpers


def pt(run_id: str = "r0", *, rep: int = 0, load: float | None = 1.0, kind: str = "concurrency",
       gpu: str = "h100-80gb", status: str = "succeeded", valid: bool | None = True,
       reasons: str | None = None, error: str | None = None, simulated: bool = True,
       input_tokens: int = 64, output_tokens: int = 16, **figures: float | None) -> RunPoint:
    """A run point built directly (unit cases)."""
    defaults = {PER_REQUEST: 10.0, PER_TOKEN: 1.0, "ttft_p90_ms": 50.0, "tpot_p90_ms": 10.0}
    return RunPoint(
        run_id=run_id, sweep="unit", repetition=rep, model="m", backend="sim", gpu_model=gpu,
        gpu_count=1, engine="sim", engine_version="1", engine_args=(), scenario="server-closed",
        scenario_kind="server", load_kind=None if load is None else kind, load_value=load,
        input_tokens=input_tokens, output_tokens=output_tokens, decoding="greedy",
        status=status, simulated=simulated, valid=valid, invalid_reasons=reasons, error=error,
        figures={**defaults, **figures})


def png_texts(data: bytes) -> dict[str, str]:
    """The tEXt/iTXt chunks of a PNG (keyword → text)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = {}, 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        i += 12 + n
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            out[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")        # language tag
            _, _, text = rest.partition(b"\0")        # translated keyword
            out[key.decode("latin-1")] = (zlib.decompress(text) if compressed
                                          else text).decode("utf-8")
    return out


@pytest.fixture(scope="module")
def points(report_store) -> list[RunPoint]:
    url, name = report_store
    with Store.open(url) as store:
        return load_run_points(store, name)[1]


@pytest.fixture(scope="module")
def written(report_store, tmp_path_factory):
    """The report of report_store written once, and the SQL it ran."""
    from sqlalchemy import event

    url, name = report_store
    out = tmp_path_factory.mktemp("report") / "out"
    statements: list[str] = []
    with Store.open(url) as store:
        event.listen(store.engine, "before_cursor_execute",
                     lambda *args: statements.append(" ".join(args[2].lower().split())))
        done = write_report(store, name, out)
    return done, statements


def usable_values(points, figure, **dims):
    return [p.get(figure) for p in points if p.usable and p.get(figure) is not None
            and all(getattr(p, k) == v for k, v in dims.items())]


# -------------------------------------------------------- energy vs load


def test_concurrency_series_are_sorted_means_of_the_repetitions_with_a_ci(points):
    for figure in (PER_REQUEST, PER_TOKEN):
        series = energy_vs_load(points, "concurrency", figure)
        assert {(s.gpu_label, s.input_tokens, s.output_tokens) for s in series} == {
            (g, i, o) for g in GPUS for i, o in PAIRS}
        for s in series:
            assert s.xs == [1.0, 8.0, 32.0]
            for sp in s.points:
                values = usable_values(points, figure, gpu_model=s.gpu_label,
                                       load_kind="concurrency", load_value=sp.x,
                                       input_tokens=s.input_tokens,
                                       output_tokens=s.output_tokens)
                assert len(values) == 2 == sp.estimate.n == len(sp.run_ids)
                assert sp.estimate.mean == pytest.approx(mean(values))
                assert sp.estimate.low <= sp.estimate.mean <= sp.estimate.high


def test_request_rate_series_and_which_load_kinds_get_a_figure(points):
    series = energy_vs_load(points, "request_rate")
    assert {s.gpu_label for s in series} == GPUS
    assert all(s.xs == [2.0, 8.0] and (s.input_tokens, s.output_tokens) == (64, 16)
               for s in series)
    figures = load_figures(points, simulated=True)
    # batch has one batch size only: no line to draw
    assert [(f.model, f.load_kind) for f in figures] == [
        ("llama-3.1-8b", "concurrency"), ("llama-3.1-8b", "request_rate")]
    closed = figures[0]
    assert closed.figures == (PER_REQUEST, PER_TOKEN)
    assert set(closed.token_pairs) == PAIRS
    assert closed.selection.n_left_out == 0 and len(closed.selection.points) == 48
    assert closed.selection.note() == "48 run point(s) used; none left out"


def test_plateau_is_the_load_after_which_every_doubling_saves_under_10_percent():
    falling = [(1, 100.0), (2, 60.0), (4, 40.0), (8, 38.0), (16, 37.0)]
    plateau = find_plateau(falling)
    assert plateau.at == 4 and plateau.next == 8
    assert plateau.saving_per_doubling == pytest.approx(0.05)
    # Not between points a factor 8 apart when the saving per doubling is bigger.
    assert find_plateau([(1, 100.0), (8, 20.0), (32, 12.0)]) is None
    # A small rise (< 10% per doubling) after a point is still flat: a plateau; a
    # bigger one makes it a minimum (tests/unit/farm/report/test_report_browser.py); a late dip
    # is not ignored.
    assert find_plateau([(1, 40.0), (8, 8.0), (32, 8.8)]).at == 8
    assert find_plateau([(1, 40.0), (8, 8.0), (32, 13.5)]) is None
    assert find_plateau([(1, 100.0), (2, 99.0), (4, 50.0)]) is None
    assert find_plateau([(1, 10.0)]) is None


def test_plateau_notes_name_the_series(points):
    closed = load_figures(points)[0]
    for s in closed.series[PER_REQUEST]:
        expected = find_turn([(sp.x, sp.estimate.mean) for sp in s.points])
        assert s.turn == expected
    notes = closed.turn_notes()
    assert len(notes) == sum(1 for s in closed.series[PER_REQUEST] if s.turn)
    assert all(("levels off (plateau) from concurrency" in n and "< 10%" in n)
               or "minimum at concurrency" in n for n in notes)


def test_invalid_failed_and_null_points_are_left_out_and_counted():
    good = [pt(f"a{rep}{c}", rep=rep, load=c, **{PER_REQUEST: 10.0 / c + rep})
            for rep in (0, 1) for c in (1, 8)]
    invalid = pt("bad", rep=2, load=8, valid=False, reasons="steady_window",
                 **{PER_REQUEST: 999.0})
    failed = pt("dead", rep=3, load=None, status="failed", valid=None, error="engine died")
    null = pt("null", rep=4, load=1, **{PER_REQUEST: None})
    measured = pt("real", rep=5, load=1, simulated=False)
    scope = [*good, invalid, failed, null, measured]

    (figure,) = load_figures(scope, simulated=True)
    (s,) = figure.series[PER_REQUEST]
    assert [sp.estimate.n for sp in s.points] == [2, 2]
    assert s.points[1].estimate.mean == pytest.approx(mean([10 / 8, 10 / 8 + 1]))
    assert "bad" not in {r for sp in s.points for r in sp.run_ids}
    left = figure.selection.left_out
    assert left == {"invalid (steady_window)": 1, "run failed": 1, "J/request null": 1,
                    "measured run in a simulated report": 1}
    note = figure.selection.note()
    assert note.startswith("4 run point(s) used; 4 left out: ")
    assert "invalid (steady_window) ×1" in note and "run failed ×1" in note
    # With one repetition left, a point has a mean but no interval.
    (single,) = energy_vs_load([good[0]], "concurrency")
    assert single.points[0].estimate.n == 1 and single.points[0].estimate.low is None


def test_a_figure_with_many_token_lengths_is_split_into_parts():
    scope = [pt(f"r{i}-{c}", load=c, input_tokens=32 * 2 ** (i % 5),
                output_tokens=8 * 2 ** (i // 5)) for i in range(10) for c in (1, 8)]
    (whole,) = load_figures(scope)
    parts = whole.split(8)
    assert [len(p.token_pairs) for p in parts] == [8, 2]
    assert [pair for p in parts for pair in p.token_pairs] == whole.token_pairs
    assert all(p.selection is whole.selection for p in parts)
    assert whole.split(10) == [whole]


def test_selection_reasons_for_runs_without_results():
    sel = select([pt("q", load=None, status="queued", valid=None),
                  pt("nv", valid=None), pt("ok")])
    assert sel.left_out == {"no result (queued)": 1, "no validity verdict": 1}
    assert [p.run_id for p in sel.points] == ["ok"]


# ----------------------------------------------------------------- pareto


def test_pareto_front_of_plain_points():
    xy = [(1.0, 5.0), (2.0, 3.0), (3.0, 3.0), (2.0, 4.0), (4.0, 1.0), (5.0, 2.0), (4.0, 1.0)]
    front = pareto_front(xy)
    assert [xy[i] for i in front] == [(1.0, 5.0), (2.0, 3.0), (4.0, 1.0), (4.0, 1.0)]
    assert pareto_front([]) == []
    assert dominates((1, 1), (1, 2)) and not dominates((1, 1), (1, 1))


def test_pareto_fronts_are_non_dominated_and_dominate_the_rest(points):
    figures = pareto_figures(points, simulated=True)
    assert len(figures) == 4                      # one per token bin (2 × 2), never pooled
    assert {f.model for f in figures} == {"llama-3.1-8b"}
    panels = [panel for f in figures for panel in f.panels]
    for panel in panels:
        xy = [p.xy for p in panel.points]
        front = set(panel.front)
        assert front
        for i in front:
            assert not any(dominates(other, xy[i]) for other in xy)
        for i in set(range(len(xy))) - front:
            assert any(dominates(xy[j], xy[i]) for j in front)
        assert {p.gpu_label for p in panel.points} == GPUS
        assert len({(p.input_tokens, p.output_tokens) for p in panel.points}) == 1
        for p in panel.points:
            values = [q.get(panel.energy) for q in points if q.run_id in p.run_ids
                      and q.load_label == p.load_label]
            assert p.energy.mean == pytest.approx(mean(values)) and p.energy.n == 2
    # one point per configuration over the bins: 2 GPUs × (12 closed + 2 open + 4 batch),
    # each energy × latency pair once per bin
    assert sum(len(p.points) for p in panels) == 36 * 4


# ---------------------------------------------------------------- heat map


def test_heat_map_bins_are_the_workers_bins():
    from farm.report import heatmap
    from workers import workload

    # one definition (farm.lengthbins) for the workers' prompts and the report's cells
    assert heatmap.bin_key is lengthbins.bin_key
    assert workload.length_bin is lengthbins.length_bin
    assert workload.bin_name is lengthbins.bin_name
    for kind in ("input", "output"):
        keys = [lengthbins.bin_key(n, kind)[0] for n in range(1, 12000, 7)]
        assert keys == sorted(keys)     # cells sort by length, open-ended ones at the ends
    assert lengthbins.bin_key(None) == (-math.inf, "I?")


def test_heat_map_cells_are_the_mean_of_their_bin(points):
    figures = heatmap_figures(points, simulated=True)
    # the open loop runs on one token-length bin only: no heat map for it
    assert [(f.model, f.scenario) for f in figures] == [("llama-3.1-8b", "batch"),
                                                        ("llama-3.1-8b", "server-closed")]
    closed = figures[1]
    assert closed.rows == ["h100-80gb", "l4"]
    assert [v for v, _ in closed.columns] == [1.0, 8.0, 32.0]
    assert [name for _, name in closed.inputs] == ["I64", "I256"]
    assert [name for _, name in closed.outputs] == ["O16", "O64"]
    for (gpu, load), grid in closed.grids.items():
        for (i, o) in PAIRS:
            values = usable_values(points, PER_REQUEST, gpu_model=gpu, scenario="server-closed",
                                   load_value=load, input_tokens=i, output_tokens=o)
            cell = grid.cells[(f"I{i}", f"O{o}")]
            assert cell.mean == pytest.approx(mean(values)) and cell.n == 2


def test_heat_map_bins_pool_lengths_of_one_bin():
    # 60 and 64 tokens share bin I64 (45.3 < n <= 90.5); 128 is I128.
    grid = heatmap_grid([pt("a", input_tokens=60, **{PER_REQUEST: 1.0}),
                         pt("b", input_tokens=64, **{PER_REQUEST: 3.0}),
                         pt("c", input_tokens=128, **{PER_REQUEST: 7.0}),
                         pt("d", input_tokens=128, valid=False, **{PER_REQUEST: 100.0})])
    assert grid.value("I64", "O16") == pytest.approx(2.0)
    assert grid.value("I128", "O16") == pytest.approx(7.0)
    assert grid.value("I256", "O16") is None


# ---------------------------------------------------------------- timeline


def test_representative_runs_and_run_ids(points):
    chosen = representative_runs(points)
    assert len(chosen) == 2
    for run_id in chosen:
        run = [p for p in points if p.run_id == run_id]
        assert len(run) == 3 and run[0].scenario == "server-closed" and run[0].valid
    assert resolve_runs(points, [chosen[0][:8], chosen[0]], "report-grid") == [chosen[0]]
    with pytest.raises(UnknownRun, match="no run 'zzz' in sweep 'report-grid'"):
        resolve_runs(points, ["zzz"], "report-grid")
    with pytest.raises(UnknownRun, match="matches"):
        resolve_runs(points, [""], "report-grid")


def test_timeline_has_the_trace_and_every_window_as_a_span(report_store, points):
    url, _ = report_store
    run_id = representative_runs(points)[0]
    with Store.open(url) as store:
        trace, result = store.trace_for(run_id), store.result_for(run_id)
    tl = build_timeline([p for p in points if p.run_id == run_id], trace, result)
    assert tl.t_s == trace.t_s and tl.power_w == trace.power_w and tl.sensor == "sim.power"
    assert [s.kind for s in tl.spans] == ["idle", "idle_ctx", "load", "warmup", "steady",
                                          "steady", "steady"]
    assert [s.label for s in tl.spans if s.kind == "steady"] == [
        "steady state, c=1", "steady state, c=8", "steady state, c=32"]
    assert all(s.end_s >= s.start_s for s in tl.spans) and tl.run_window is not None
    assert tl.notes[0].startswith("windows: idle (no CUDA context)") and " J" in tl.notes[0]
    missing = build_timeline([pt("x", status="failed", load=None, error="oom")], None, None)
    assert missing.t_s == [] and missing.notes == ["run failed: oom",
                                                   "no power timeline stored for this run"]


# ------------------------------------------------------------------- table


def test_table_rows_say_dash_for_null_and_give_the_verdict():
    cells, verdict = row(pt("n", **{PER_REQUEST: None, PER_TOKEN: 0.0}))
    at = {header: i for i, header in enumerate(HEADERS)}
    assert cells[at["energy per request"]] == "—" and verdict.text == "valid"
    assert cells[at["energy per output token"]] == "0"
    assert row(pt("i", valid=False, reasons="power_range"))[1].text == "invalid: power_range"
    failed = row(pt("f", load=None, status="failed", valid=None, error="engine died"))
    assert failed[1].kind == "failed" and failed[1].text == "run failed: engine died"
    assert failed[0][at["load"]] == "—"       # no load point
    assert row(pt("q", load=None, status="queued", valid=None))[1].text == "no result (queued)"


# ------------------------------------------------------- the page and files


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.rows = 0
        self.in_body = False

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href"):
                self.refs.append((tag, key, value or ""))
        if tag == "tbody":
            self.in_body = True
        if tag == "tr" and self.in_body:
            self.rows += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False


def test_report_is_self_contained_and_labelled_simulated(written, points):
    done, _ = written
    page = done.index.read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(page)
    parser.close()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = [v for tag, key, v in parser.refs if key == "src"]
    links = [v for tag, key, v in parser.refs if key == "href"]
    assert images and all(v.startswith("data:image/png;base64,") for v in images)
    assert all(v.startswith("#") or v.startswith("figures/") for v in links)
    for link in links:
        if link.startswith("figures/"):
            assert (done.out_dir / link).is_file()
    # the Pareto figure once per token bin (4); the rate crossing of the sim H100 and L4 (1);
    # no fitted-curves figure: nothing in this grid has a fit (those panels are left out)
    assert len(images) == len(done.figures) == 13, sorted(f.name for f in done.figures)
    assert {f.name.split("-")[0] for f in done.figures} == {"energy", "power", "pareto",
                                                             "heatmap", "timeline", "rate"}
    for path in done.figures:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert png_texts(data)["Title"].startswith("SIMULATED — ")
        assert f'figures/{path.name}' in page
    assert page.count("SIMULATED — figures come from the farm") == 2    # banner, top and bottom
    assert "<title>SIMULATED" in page
    assert page.count("<figcaption><b>SIMULATED — ") == len(done.figures)
    assert parser.rows == len(points) == done.points == 72 and done.simulated
    assert "sim.energy_counter" in page and "steady-state window" in page
    assert "gross" in page and "net of idle" in page and "95% confidence" in page


def test_report_reads_no_request_records_and_only_the_chosen_traces(written):
    done, statements = written
    assert not [s for s in statements if "from requests" in s]
    traces = [s for s in statements if "from power_traces" in s]
    assert len(traces) == sum(1 for f in done.figures if f.name.startswith("timeline-")) == 2


def test_net_basis_and_chosen_runs(report_store, points, tmp_path):
    url, name = report_store
    run_id = sorted({p.run_id for p in points if p.scenario == "batch"})[0]
    with Store.open(url) as store:
        data = collect(store, name, [run_id[:10]], net=True)
    assert [s.data.run_id for s in data.figures if s.section == "timeline"] == [run_id]
    energy = [s for s in data.figures if s.section == "energy_load"]
    assert energy[0].data.figures == ("energy_per_request_net_j",
                                      "energy_per_output_token_net_j")
    # the rate crossing is idle amortised, so gross, with or without --net (it says so)
    assert all("(net of idle)" in s.title for s in data.figures
               if s.section not in ("timeline", "rate_crossing"))


# ------------------------------------------------------------------ command


def farmctl(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "farm.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env={**os.environ, **env})


def test_farmctl_report_writes_the_default_directory(report_store, tmp_path):
    url, name = report_store
    proc = farmctl("report", name, env={"FARM_DB_URL": url}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / f"farm-report-{name}"
    drawn = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert (out / "index.html").is_file() and len(drawn) == 13, drawn
    assert proc.stdout.startswith("SIMULATED")
    assert f"written to farm-report-{name}/index.html" in proc.stdout


def test_farmctl_report_errors_name_the_sweep(report_store, tmp_path):
    url, name = report_store
    proc = farmctl("report", "no-such-sweep", env={"FARM_DB_URL": url}, cwd=tmp_path)
    assert proc.returncode == ExitCode.NOT_FOUND
    assert "no-such-sweep" in proc.stderr and "Traceback" not in proc.stderr
    proc = farmctl("report", name, "--runs", "zzz,", "--out", str(tmp_path / "x"),
                   env={"FARM_DB_URL": url}, cwd=tmp_path)
    assert proc.returncode == ExitCode.INVALID_INPUT
    assert f"no run 'zzz' in sweep '{name}'" in proc.stderr

    from tests.factories import sweep

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    spec, text, runs = sweep()
    with Store.open(empty, upgrade=True) as store:
        store.add_runs(store.record_sweep(spec, text), runs)
    proc = farmctl("report", spec.name, env={"FARM_DB_URL": empty}, cwd=tmp_path)
    assert proc.returncode == ExitCode.NOT_FOUND
    assert f"sweep '{spec.name}' has no measured points" in proc.stderr
    assert not list(tmp_path.glob("farm-report-*"))


def test_matplotlib_is_imported_only_when_drawing():
    code = ("import sys, farm.cli, farm.report.report; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_plots_draw_without_a_display(monkeypatch):
    from farm.report.plots import FigureSpec, render

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("MPLBACKEND", "TkAgg")   # ignored: the Agg canvas is used directly
    (figure,) = load_figures([pt(f"r{c}", load=c) for c in (1, 2, 4)])
    png = render(FigureSpec("x", "energy_load", "measured", figure))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png_texts(png)["Title"] == "measured"


# ------------------------------------------------------- figure registry


def test_every_section_is_a_registered_kind_in_page_order():
    from farm.report.figures import NEEDS, kinds

    names = [k.name for k in kinds()]
    assert names == ["energy_load", "fits", "tuning", "clocks", "power_load", "rate_crossing",
                     "pareto", "heatmap", "timeline", "repetitions"]
    assert all(k.needs <= set(NEEDS) and "points" in k.needs for k in kinds())
    assert {k.name for k in kinds() if "traces" in k.needs} == {"clocks", "timeline"}


def test_a_kind_reads_only_what_it_declares():
    from farm.report.figures import Reads

    class FakeStore:
        def result_for(self, run_id):
            return {"run_id": run_id}

        def trace_for(self, run_id):
            raise AssertionError("not declared: never read")

    reads = Reads(FakeStore(), "power_load", frozenset({"points", "results"}), {})
    assert reads.result_for("r1") == {"run_id": "r1"}
    with pytest.raises(RuntimeError, match="'power_load' reads traces but does not declare"):
        reads.trace_for("r1")


def test_a_registered_figure_appears_on_the_page(report_store, tmp_path, monkeypatch):
    """One decorated function is all a new figure takes: it is built, drawn, written
    and labelled SIMULATED like the others."""
    from farm.report import figures
    from farm.report.plots import draw_load

    figures.kinds()                                   # the shipped kinds, loaded
    monkeypatch.setattr(figures, "_KINDS", dict(figures._KINDS))

    @figures.figure("tokens_load", heading="Throughput vs load", intro="Output tokens/s.",
                    draw=draw_load, order=25)
    def tokens_vs_load(inputs):
        return figures.Section([figures.Planned(f"tokens-{lf.model}", f"{lf.model}: tokens/s",
                                                lf, [lf.selection.note()])
                                for lf in load_figures(inputs.points, ("output_throughput_tps",),
                                                       inputs.simulated, plateau=False)][:1])

    url, name = report_store
    with Store.open(url) as store:
        done = write_report(store, name, tmp_path / "out")
    page = done.index.read_text(encoding="utf-8")
    assert (tmp_path / "out" / "figures" / "tokens-llama-3.1-8b.png").is_file()
    assert '<h2 id="tokens_load">Throughput vs load</h2>' in page
    assert "<b>SIMULATED — llama-3.1-8b: tokens/s</b>" in page
    assert page.index('id="power_load"') < page.index('id="tokens_load"') < page.index(
        'id="pareto"')


def test_power_vs_load_is_the_mean_window_power_of_the_repetitions(report_store, points):
    url, name = report_store
    with Store.open(url) as store:
        data = collect(store, name)
    power = [s for s in data.figures if s.section == "power_load"]
    assert {s.data.load_kind for s in power} == {"concurrency", "request_rate"}
    assert all(s.title.startswith("SIMULATED — ") and "GPU power (gross)" in s.title
               for s in power)
    closed = next(s.data for s in power if s.data.load_kind == "concurrency")
    assert closed.figures == ("avg_power_w",)
    series = closed.series["avg_power_w"]
    assert series and all(s.turn is None for s in series)   # power rises: no plateau
    for s in series:
        for sp in s.points:
            values = [p.get("avg_power_w") for p in points if p.run_id in sp.run_ids
                      and p.load_value == sp.x and p.input_tokens == s.input_tokens
                      and p.output_tokens == s.output_tokens]
            assert sp.estimate.mean == pytest.approx(mean(values))
    with Store.open(url) as store:
        net = collect(store, name, net=True)
    assert all(s.data.figures == ("avg_power_net_w",) and "(net of idle)" in s.title
               for s in net.figures if s.section == "power_load")
