"""Tables for a person (farm.tables): the results, compare and recommend tables fit
80 and 120 columns without cutting a number, constant setup columns go to a line
above the table, --columns/--wide choose, and files and pipes are never cut."""

from __future__ import annotations

import itertools
import re

import pytest
from click.testing import CliRunner

from farm.cli import ExitCode, main
from farm.errors import InvalidInput
from farm.output import SIM_BANNER, fmt_value, format_results
from farm.report.compare import compare, format_comparison
from farm.report.recommend import recommend
from farm.report.recommend_text import format_recommendation
from farm.store import Store
from farm.tables import Column, choose_columns, render_table
from tests import factories
from tests.paths import ROOT
from tests.unit.farm.report.test_compare import point as cmp_point
from tests.unit.farm.report.test_recommend import point as rec_point

QUICKSTART = ROOT / "examples" / "quickstart.toml"


@pytest.fixture
def quickstart(tmp_path):
    """The quick start's result rows (32: 2 GPUs × 4 load points × 2 bins × 2
    repetitions) as the store gives them, with figures spread like a real run's
    (14,489 tok/s, 0.00537 net J/token…), and the store's URL."""
    url = f"sqlite:///{tmp_path}/farm.db"
    with Store.open(url, upgrade=True) as store:
        spec, toml, runs = factories.sweep(QUICKSTART.read_text())
        sid = store.record_sweep(spec, toml)
        store.add_runs(sid, runs)
        for run in runs:
            store.record_result(factories.result(run))
        rows = store.result_rows(sid)
    for i, row in enumerate(rows):
        scale = (1 + i) / 7.0
        row.update(output_throughput_tps=14489.0 / scale, ttft_p50_ms=18.37 * scale,
                   tpot_p50_ms=3.94 + 0.01 * i, energy_per_output_token_j=0.01388 * scale,
                   energy_per_output_token_net_j=0.005372 * scale,
                   energy_per_request_j=0.8923 * scale)
    return rows, url


def _table_lines(text: str) -> list[str]:
    """The rows of the table (a GPU in them), not the banner or notes."""
    return [line for line in text.splitlines() if "sim:" in line and ": " not in line]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_quickstart_table_fits_the_terminal_without_cutting_a_number(quickstart, width):
    rows, _ = quickstart
    text = format_results(rows, "table", "quickstart-sim", width=width)
    assert "…" not in text
    assert text.startswith(SIM_BANNER) and text.rstrip().endswith(SIM_BANNER)
    assert max(len(line) for line in text.splitlines()) <= width
    table = _table_lines(text)
    assert len(table) == 32                       # one line per row: nothing wraps
    # The study's headline figures are in full in every row, whatever the width.
    for row, line in zip(rows, table):
        for key in ("energy_per_output_token_j", "energy_per_output_token_net_j",
                    "energy_per_request_j"):
            assert f" {fmt_value(row[key])}" in line, (key, line)
    # The setup the same in every row is said once, above the table.
    above = text.split("\n")[2:5]
    assert any("model: llama-3.2-1b" in line for line in above)
    assert any("engine: sim" in line for line in above)
    assert any("decoding: greedy" in line for line in above)
    assert any("output tokens: 64" in line for line in above)   # the run's bin, constant
    assert not any(line.startswith("model") for line in text.splitlines()[2:] if "·" not in line)


def test_narrow_terminal_leaves_columns_out_and_says_which(quickstart):
    rows, _ = quickstart
    narrow = format_results(rows, "table", "q", width=80)
    lines = narrow.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("left out"))
    note = " ".join(lines[at:-1])                  # up to the closing banner
    assert note.startswith("left out to fit 80 columns: ") and "--columns" in note
    assert "good req/s" in note and "SLO %" in note
    wide_enough = format_results(rows, "table", "q", width=200)
    assert "left out" not in wide_enough and "good req/s" in wide_enough


def test_pipes_and_files_are_never_cut(quickstart):
    rows, _ = quickstart
    text = format_results(rows, "table", "q", width=None)
    assert "…" not in text and "left out" not in text
    for header in ("GPU", "scenario", "load", "tokens/s", "TTFT p50 ms", "TPOT p50 ms",
                   "good req/s", "SLO %", "J/out-tok", "net J/out-tok", "J/request"):
        assert header in text
    every = format_results(rows, "table", "q", width=None, wide=True)
    assert "…" not in every
    assert "peak power W" in every and "run id" in every       # derived from the figures
    assert rows[0]["run_id"] in every


def test_columns_are_chosen_by_name_and_unknown_ones_refused(quickstart):
    rows, _ = quickstart
    text = format_results(rows, "table", "q", width=80,
                          columns="load,gpu_model,peak_power_w")
    header = next(line for line in text.splitlines() if "GPU" in line)
    assert header.index("load") < header.index("GPU") < header.index("peak power W")
    assert "J/out-tok" not in text
    with pytest.raises(InvalidInput) as err:
        format_results(rows, "table", "q", columns="gpu_model,energy_per_token_j")
    message = str(err.value)
    assert "unknown column 'energy_per_token_j'" in message
    assert "did you mean" in message and "energy_per_output_token_j" in message
    assert "available: model, gpu_model" in message and "peak_power_w" in message
    with pytest.raises(InvalidInput):
        choose_columns([], [], "a", wide=True)


def test_measured_figures_stay_in_the_table_even_when_constant():
    items = [{"gpu": "a", "jpt": "0.5", "model": "m"}, {"gpu": "b", "jpt": "0.5", "model": "m"}]
    columns = [Column("gpu", "GPU", lambda r: r["gpu"], False),
               Column("model", "model", lambda r: r["model"], False),
               Column("jpt", "J/token", lambda r: r["jpt"], hoist=False)]
    text = render_table(columns, items, 80)
    assert text.splitlines()[0] == "model: m"
    assert "J/token" in text.splitlines()[1] and text.count("0.5") == 2
    # One row: nothing is "the same in every row"; it all stays in the table.
    assert "model: m" not in render_table(columns, items[:1], 80)


def test_a_number_wider_than_a_header_word_never_wraps():
    items = [{"v": "12,345,678.9"}, {"v": "1"}]
    columns = [Column("n", "name", lambda r: "x"), Column("v", "a long header", lambda r: r["v"])]
    text = render_table(columns, items, 20)
    assert "12,345,678.9" in text and "…" not in text


def test_cli_refuses_unknown_columns_and_table_options_with_csv(quickstart, tmp_path):
    _, url = quickstart
    runner = CliRunner()
    env = {"FARM_DB_URL": url}
    bad = runner.invoke(main, ["results", "--columns", "gpu,load"], env=env)
    assert bad.exit_code == ExitCode.INVALID_INPUT
    assert "unknown column 'gpu'" in bad.output and "available:" in bad.output
    csv = runner.invoke(main, ["results", "--format", "csv", "--wide"], env=env)
    assert csv.exit_code == ExitCode.INVALID_INPUT and "shapes the table only" in csv.output
    out = tmp_path / "results.txt"
    done = runner.invoke(main, ["results", "--wide", "--out", str(out)], env=env,
                         catch_exceptions=False)
    assert done.exit_code == 0, done.output
    written = out.read_text()
    assert "…" not in written and "left out" not in written and SIM_BANNER in written
    assert max(len(line) for line in written.splitlines()) > 220      # was cut at 220


# ------------------------------------------------------ GPU tuning, passes, rate sweep

ROW = {"model": "m", "gpu_model": "h200", "gpu_count": 1, "engine": "vllm", "scenario": "b",
       "load_kind": "batch", "load_value": 8.0, "status": "succeeded", "valid": True,
       "power_limit_w": None, "sm_clock_mhz": None, "passes": None,
       "energy_per_output_token_j": 0.05}


def test_a_power_limit_sweep_shows_each_cap_and_a_constant_clock_above_the_table():
    rows = [{**ROW, "power_limit_w": w, "sm_clock_mhz": 1200, "applied_power_limit_w": w,
             "applied_sm_clock_mhz": 1215.0, "energy_per_output_token_j": j}
            for w, j in ((300.0, 0.0286), (450.0, 0.0331), (700.0, 0.0426))]
    text = format_results(rows, "table", "t", simulated=False, width=None)
    lines = text.splitlines()
    assert any("SM clock: 1200 MHz" in line for line in lines[1:3])   # the same in every row
    header = next(line for line in lines if "power limit" in line and "J/out-tok" in line)
    assert header.index("power limit") < header.index("J/out-tok")
    for watts, jpt in (("300 W", "0.0286"), ("450 W", "0.0331"), ("700 W", "0.0426")):
        assert any(watts in line and jpt in line for line in lines), watts
    # One cap for the whole sweep: said once, above the table.
    same = format_results([{**r, "power_limit_w": 300.0} for r in rows], "table", "t",
                          simulated=False, width=None)
    assert "power limit: 300 W" in same and "power limit  " not in same
    # A sweep that sets no tuning has neither column nor a line about it.
    plain = format_results([ROW, {**ROW, "load_value": 16.0}], "table", "t", simulated=False,
                           width=None)
    assert "power limit" not in plain and "SM clock" not in plain
    # What was read back is a column of its own (--wide), with its unit.
    wide = format_results(rows, "table", "t", simulated=False, width=None, wide=True)
    assert "applied power limit W" in wide and "applied sm clock MHz" in wide


def test_passes_show_where_a_batch_took_more_than_one():
    rows = [{**ROW, "passes": 3}, {**ROW, "load_value": 64.0, "passes": None}]
    text = format_results(rows, "table", "t", simulated=False, width=None)
    header = next(line for line in text.splitlines() if "passes" in line)
    line = next(line for line in text.splitlines() if "8 prompts" in line)
    cell = line[header.index("passes"):header.index("passes") + len("passes")]
    assert cell.strip() == "3"
    assert next(ln for ln in text.splitlines() if "64 prompts" in ln).count("—") >= 1
    once = format_results([{**r, "passes": 1} for r in rows], "table", "t", simulated=False,
                          width=None)
    assert "passes" not in once


def test_a_rate_sweep_point_says_it_is_the_knee_or_which_rule_stopped_it():
    from farm.output import SATURATION_WORDS
    from workers.ratesweep import ACHIEVED, FLAT, TTFT

    assert set(SATURATION_WORDS) == {ACHIEVED, FLAT, TTFT}     # every rule has its words
    server = {**ROW, "scenario": "rate", "load_kind": "request_rate"}
    rows = [{**server, "load_value": 2.0, "knee": None, "saturation": None},
            {**server, "load_value": 4.0, "knee": True, "saturation": None},
            {**server, "load_value": 8.0, "knee": None, "saturation": FLAT},
            {**server, "load_value": 16.0, "knee": None, "saturation": TTFT}]
    text = format_results(rows, "table", "t", simulated=False, width=None)
    assert "4 req/s (knee)" in text
    assert "8 req/s (saturated: throughput flat)" in text
    assert "16 req/s (saturated: TTFT growth)" in text
    assert re.search(r"\b2 req/s\s", text) and "2 req/s (" not in text


def _comparison():
    a = [cmp_point(c, r, jpt=0.5 + 0.013 * r + 0.001 * c, gpu=g, simulated=True)
         for g in ("h100-80gb", "l4") for c in (1, 8, 32) for r in (0, 1)]
    b = [cmp_point(c, r, jpt=0.4 + 0.021 * r, gpu=g, simulated=True, ttft=120.0,
                   args=(("max_num_seqs", 64),))
         for g in ("h100-80gb", "l4") for c in (1, 8, 32) for r in (0, 1)]
    return compare(a, b, sweep_a="A", sweep_b="B", simulated_a=True, simulated_b=True)


@pytest.mark.parametrize("width", [80, 120])
def test_compare_table_fits_without_cutting(width):
    cmp = _comparison()
    text = format_comparison(cmp, width=width)
    assert "…" not in text
    assert text.startswith(SIM_BANNER) and text.rstrip().endswith(SIM_BANNER)
    table = _table_lines(text)
    assert len(table) == 6 and max(len(line) for line in table) <= width
    assert any(line.startswith("model: m · scenario: server-closed") for line in
               text.splitlines())
    for m, line in zip(cmp.matched, table):
        assert f"{m.energy.pct:+.1f}%" in line and m.energy.verdict in line
    if width == 80:
        assert "left out to fit 80 columns:" in text
    assert "…" not in format_comparison(cmp, width=None)


@pytest.mark.parametrize("width", [80, 120])
def test_recommend_table_fits_without_cutting(width):
    pts = [rec_point(g, c, r, epr=v * (1 + c / 64), simulated=True)
           for g in ("h100-80gb", "l4") for c in (1, 8, 32)
           for r, v in enumerate((5.0, 5.2, 4.9))]
    rec = recommend(pts, sweep="s", draws=200, seed=1, rate_rps=4.0, simulated=True)
    text = format_recommendation(rec, width=width)
    assert "…" not in text
    assert text.startswith(SIM_BANNER) and text.rstrip().endswith(SIM_BANNER)
    table = _table_lines(text)
    assert len(table) == 6 and max(len(line) for line in table) <= width
    assert "engine: vllm 1.0 · args: max_num_seqs=256" in text
    for r, line in zip(rec.workloads[0].ranking, table):
        assert re.match(rf"{r.rank}\s+sim:", line)
        assert fmt_value(r.energy_per_good_request_j) in line
    assert ("left out to fit" in text) == (width == 80 or width == 120)
    narrow = format_recommendation(rec, width=width, columns="rank,gpu,load,replicas")
    assert "replicas" in narrow and "J/good req" not in narrow


def _header_of(text: str, word: str) -> str:
    return next(line for line in text.splitlines() if word in line.split())


@pytest.mark.parametrize("width", [60, 80])
def test_results_never_drop_what_tells_rows_apart(quickstart, width):
    """Issue 22 item 8: at 80 columns the input-token column was left out, and rows of
    the 128- and 512-token bins read the same. Configuration columns that differ stay;
    repetition, status and other figures go first. J/token says it is per output token."""
    rows, _ = quickstart
    text = format_results(rows, "table", "q", width=width)
    assert "in" in _header_of(text, "GPU").split()
    keys = [(r["gpu_model"], r["scenario"], r["load_value"], r["input_tokens"],
             r["repetition"]) for r in rows]
    table = _table_lines(text)
    # Rows of different configurations never read the same in their setup columns.
    setup = [" | ".join(re.split(r"\s{2,}", line.strip())[:4]) for line in table]
    for (k1, s1), (k2, s2) in itertools.combinations(zip(keys, setup), 2):
        if k1[:4] != k2[:4]:
            assert s1 != s2, (k1, k2, s1)
    assert "J/out-tok" in text and "J/token" not in text


def test_compare_keeps_the_token_bins_that_tell_points_apart():
    """`compare` at 120 columns dropped `in`: `sim:l4 server-closed c=64 +53.0%` twice."""
    a = [cmp_point(c, r, jpt=0.5 + 0.01 * r + 0.001 * c, gpu=g, simulated=True)
         for g in ("h100-80gb", "l4") for c in (1, 64) for r in (0, 1)]
    a += [p.__class__(**{**p.__dict__, "run_id": p.run_id + "-512", "input_tokens": 512})
          for p in a]
    b = [p.__class__(**{**p.__dict__, "run_id": p.run_id + "-b",
                        "figures": {**p.figures, "energy_per_output_token_j":
                                    p.figures["energy_per_output_token_j"] * 1.5}})
         for p in a]
    cmp = compare(a, b, sweep_a="A", sweep_b="B", simulated_a=True, simulated_b=True)
    assert len(cmp.matched) == 8
    for width in (80, 120):
        text = format_comparison(cmp, width=width)
        assert "in" in _header_of(text, "GPU").split(), text
        lines = _table_lines(text)
        assert len(set(lines)) == len(lines) == 8
        assert "J/out-tok A" in text or "J/out-tok" in text
