"""Energy vs latency: per model, every configuration against TTFT p90 and TPOT p90
with the Pareto fronts (pareto.py), each front also as a table."""

from __future__ import annotations

from html import escape
from typing import Any

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.labels import fmt, short_label, tokens_label, unit_label
from farm.report.pareto import ParetoFigure, pareto_figures
from farm.report.plots import draw_pareto
from farm.report.stats import Estimate


def _estimate(e: Estimate, unit: str) -> str:
    hw = e.half_width
    ci = f" ± {fmt(hw)}" if hw is not None else " (n = 1)"
    return f"{fmt(e.mean)}{ci} {unit}"


def front_tables(spec: Any) -> str:
    """HTML: one table per panel listing the Pareto front's configurations."""
    fig: ParetoFigure = spec.data
    out = []
    for panel in fig.panels:
        if not panel.front:
            continue
        head = ("<tr><th>#</th><th class=\"t\">GPU</th><th class=\"t\">scenario</th>"
                "<th class=\"t\">load</th><th class=\"t\">tokens</th>"
                f"<th>{escape(short_label(panel.latency))}</th>"
                f"<th>{escape(short_label(panel.energy))}</th><th>n</th></tr>")
        body = "".join(
            f"<tr><td>{n}</td><td class=\"t\">{escape(p.label)}</td>"
            f"<td class=\"t\">{escape(p.scenario)}</td>"
            f"<td class=\"t\">{escape(p.load_label)}</td><td class=\"t\">"
            f"{escape(tokens_label(p.input_tokens, p.output_tokens))}</td>"
            f"<td>{escape(_estimate(p.latency, unit_label(panel.latency)))}</td>"
            f"<td>{escape(_estimate(p.energy, unit_label(panel.energy)))}</td>"
            f"<td>{p.energy.n}</td></tr>"
            for n, p in enumerate(panel.front_points, 1))
        out.append(f'<p class="note">{escape(fig.model)}, {escape(fig.workload)}: '
                   "Pareto front of "
                   f"{escape(short_label(panel.energy))} vs {escape(short_label(panel.latency))}"
                   f" ({len(panel.front)} of {len(panel.points)} configurations; # is the "
                   "point's number in the figure; ± is the 95% CI half-width)</p>"
                   f"<table>{head}{body}</table>")
    return "".join(out)


@figure("pareto", heading="Energy vs latency", order=30, draw=draw_pareto,
        html_after=front_tables, intro=(
            "Every configuration of a model (mean over its repetitions), across GPU models, "
            "against TTFT p90 and TPOT p90, one figure per workload bin (input and output "
            "tokens, decoding: a front never pools bins). The black step line is the Pareto front: "
            "configurations that no other is both faster and cheaper than. Its points are "
            "numbered and labelled in the figure with their load (which says the scenario: "
            "c = closed loop, req/s = open loop, batch) and input→output tokens, and listed "
            "under the same numbers below each figure."))
def energy_vs_latency(inputs: FigureInputs) -> Section:
    """One figure per model and workload bin: its configurations and Pareto fronts."""
    planned = [Planned(f"pareto-{pf.model}-{pf.workload}",
                       f"{pf.model}, {pf.workload}: energy ({inputs.basis}) vs latency, "
                       "Pareto fronts across GPU models", pf, pf.notes())
               for pf in pareto_figures(inputs.points, inputs.energies,
                                        simulated=inputs.simulated)]
    if planned:
        return Section(planned)
    return Section(notes=["No valid measured point has both an energy and a latency figure: "
                          "no Pareto front."])
