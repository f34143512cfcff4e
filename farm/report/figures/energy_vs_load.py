"""Energy vs load: per model and load kind, J/request and J/output token against
concurrency, request rate or batch size, with 95% CIs, plateaus and minima, and a rate
sweep's knee and stop rule (series.py)."""

from __future__ import annotations

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.plots import draw_load
from farm.report.series import load_figures

MAX_TOKEN_ROWS = 8        # token-length pairs per figure (more: parts)
KIND_TITLES = {"concurrency": "concurrency", "request_rate": "request rate",
               "batch": "batch size"}


@figure("energy_load", heading="Energy vs load", order=10, draw=draw_load, intro=(
    "Energy per request and per output token against concurrency (closed loop), request "
    "rate (open loop) or batch size, one line per GPU (and engine variant) and one row per "
    "input/output token length. Markers are means over repetitions; bars are 95% "
    "confidence intervals. A dotted vertical line marks where a line stops falling: a "
    "plateau (\"plateau ≥ c\": from c on, every further doubling of the load changes the "
    "energy by less than 10%) or a minimum (\"minimum at c\", ringed: the energy falls to c, "
    "then rises again by 10% or more per doubling). A rate sweep (`rate_sweep`) marks its "
    "knee with a star — the highest rate before the point where it stopped — and that "
    "point, where it saturated, with a cross; the caption names the stop rule it met: "
    "achieved below offered (achieved throughput under min_achieved_pct % of the rate "
    "offered), throughput flat (up less than min_gain_pct % on the previous rate) or TTFT "
    "growth (median TTFT above max_ttft_growth × the first point's)."))
def energy_vs_load(inputs: FigureInputs) -> Section:
    """One figure per model and load kind with two or more load values (split into
    parts of at most MAX_TOKEN_ROWS token-length pairs)."""
    planned = []
    for whole in load_figures(inputs.points, inputs.energies, inputs.simulated):
        parts = whole.split(MAX_TOKEN_ROWS)
        for n, lf in enumerate(parts, 1):
            part = f" (part {n} of {len(parts)})" if len(parts) > 1 else ""
            planned.append(Planned(
                f"energy-vs-{lf.load_kind}-{lf.model}{part and f'-{n}'}",
                f"{lf.model}: energy ({inputs.basis}) vs {KIND_TITLES[lf.load_kind]}{part}", lf,
                [lf.selection.note(), *lf.turn_notes(), *lf.rate_sweep_notes()]))
    if planned:
        return Section(planned)
    return Section(notes=["No configuration has two or more load values with valid measured "
                          "points: no energy-vs-load figure."])
