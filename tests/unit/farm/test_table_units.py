"""Units and labels reach every table from the records' field metadata (issue 21):
a figure's header, unit and label are declared once, on its field (`figure()` in
farm_contract/records.py), and every table reads them there."""

from __future__ import annotations

import re

from farm.output import result_columns
from farm.report.compare import comparison_columns
from farm.report.recommend_text import recommendation_columns
from farm.report.table import COLUMNS as PAGE_COLUMNS
from farm.report.table import FIGURES as PAGE_FIGURES
from farm_contract.records import result_figures

FIGURES = result_figures()
UNITS = {c.unit for c in FIGURES.values() if c.shown_unit}
# The page's columns that hold a run's settings, not a record's figure: their units
# are those of the sweep file's keys (`power_limit_w`, `sm_clock_mhz`, token bins).
# Columns the store derives from the tuning records (lowest GPU's read-back), described
# in farm/output.py's _APPLIED_METADATA: the one hand table left (see docs/architecture.md).
STORE_COLUMNS = ("applied_power_limit_w", "applied_sm_clock_mhz")
# The ranking's own figures, each made of a record figure whose unit it says.
MADE_OF = {"load_power_w": "avg_power_w", "capacity_rps": "request_throughput_rps"}
PAGE_SETTINGS = {"power limit": "W", "SM clock": "MHz", "input": "tokens", "output": "tokens"}


def _hand_units(header: str) -> set[str]:
    """Units a header names that no figure's declared header accounts for."""
    rest = header
    for column in FIGURES.values():
        rest = re.sub(rf"(^|\s){re.escape(column.header)}($|\s)", " ", rest)
    return {unit for unit in UNITS | {"tok/s", "J/token"}
            if re.search(rf"(^|\s){re.escape(unit)}($|\s)", rest)}


def _terminal_tables():
    yield "results", result_columns([])
    yield "compare", comparison_columns()
    yield "recommend", recommendation_columns()
    yield "recommend --rate", recommendation_columns(rated=True)


def test_every_terminal_column_reads_its_figure_from_the_field():
    for table, columns in _terminal_tables():
        for column in columns:
            figure = FIGURES.get(column.name)
            # a setup column of a figure's name is the run's (its token bins), not it
            if figure is not None and not column.hoist:
                assert column.header == figure.header, (table, column.name)
            if column.name in STORE_COLUMNS:
                continue
            if column.name in MADE_OF:     # says the unit of the figure it is made of
                assert column.header.endswith(FIGURES[MADE_OF[column.name]].unit)
                continue
            assert not _hand_units(column.header), (table, column.header)


def test_every_page_column_has_its_unit_from_the_field():
    figures = [c for c in PAGE_COLUMNS if c.header not in PAGE_SETTINGS and c.unit]
    assert [(c.header, c.unit) for c in figures] == [
        (FIGURES[f].label, FIGURES[f].shown_unit) for f in PAGE_FIGURES if FIGURES[f].shown_unit]
    for column in PAGE_COLUMNS:
        if column.header in PAGE_SETTINGS:
            assert column.unit == PAGE_SETTINGS[column.header]


def test_one_spelling_of_a_unit():
    """"tokens/s" on the record, so "tokens/s" in every table (never "tok/s")."""
    headers = [c.header for _, columns in _terminal_tables() for c in columns]
    assert not [h for h in headers if "tok/s" in h]
    assert FIGURES["output_throughput_tps"].unit == "tokens/s"
    assert "tokens/s" in headers and "J/out-tok" in headers


def test_a_latency_is_labelled_from_both_records():
    ttft = FIGURES["ttft_p90_ms"]
    assert (ttft.label, ttft.header, ttft.axis) == ("TTFT p90", "TTFT p90 ms", "TTFT p90 (ms)")
    assert FIGURES["peak_power_w"].header == "peak power W"     # no label: from the name


def test_the_report_pages_figure_tables_say_the_fields_units():
    """The HTML tables under the energy vs latency and SM clock figures: each header
    and cell says the unit its field declares, once ("J/out-tok (J)" was one)."""
    from types import SimpleNamespace as NS

    from farm.report.figures.clock_pareto import LATENCIES, driver_table
    from farm.report.figures.energy_vs_latency import front_tables
    from farm.report.pareto import ENERGIES
    from farm.report.pareto import LATENCIES as PARETO_LATENCIES

    energy = "energy_per_output_token_j"
    html = driver_table(NS(data=NS(energy=energy, points=[], fronts={}, model="m",
                                   gpu_label="g", workload="w")))
    for name in (energy, *LATENCIES):
        assert f"<th>{FIGURES[name].axis}</th>" in html
    assert "(J)" not in html.replace(FIGURES[energy].axis, "")

    estimate = NS(mean=1.5, half_width=0.25, n=3)
    for latency in PARETO_LATENCIES:
        for energy in ENERGIES:
            point = NS(label="H100", scenario="s", load_label="c=8", input_tokens=512,
                       output_tokens=128, latency=estimate, energy=estimate)
            panel = NS(front=[0], front_points=[point], points=[point], latency=latency,
                       energy=energy)
            html = front_tables(NS(data=NS(panels=[panel], model="m", workload="w")))
            assert f"<td>1.5 ± 0.25 {FIGURES[latency].shown_unit}</td>" in html
            assert f"<td>1.5 ± 0.25 {FIGURES[energy].shown_unit}</td>" in html
