"""Energy per request against the arrival rate, idle amortised, per GPU, and where
the GPUs cross (crossing.py): Watt Counts' question of which GPU serves a rate
for less. One panel per model and workload bin of the open-loop points (a rate
sweep's, or a `request_rate` list)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from farm.report.crossing import Crossing, crossings, no_crossing_note, served
from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.labels import Variants, tokens_label
from farm.report.selection import Selection, select
from farm.report.series import PER_REQUEST, Series, energy_vs_load

NET = "energy_per_request_net_j"


@dataclass(frozen=True)
class CrossingFigure:
    """One model and workload bin: a line per GPU (and variant), gross and net of idle."""

    model: str
    workload: str
    gross: list[Series]
    net: dict[str, Series]        # label → the same line net of idle (where measured)
    crossings: list[Crossing]
    selection: Selection

    def notes(self) -> list[str]:
        """The selection, then each crossing (or why there is none) and each rate sweep."""
        notes = [self.selection.note(), *(c.note() for c in self.crossings)]
        for a, b in combinations(self.gross, 2):
            if (text := no_crossing_note(a, b)) is not None:
                notes.append(text)
        if not self.crossings and not notes[1:]:
            notes.append("no two lines serve two or more of the same rates: no crossing to "
                         "look for")
        notes += [f"{s.label}: {n}" for s in self.gross if (n := s.rate_sweep_note())]
        return notes


def crossing_figures(inputs: FigureInputs) -> list[CrossingFigure]:
    """Per model and workload bin with two or more lines of two or more served rates."""
    out = []
    bins = sorted({(p.model, p.input_tokens or 0, p.output_tokens, p.decoding)
                   for p in inputs.points if p.load_kind == "request_rate"})
    for model, input_tokens, output_tokens, decoding in bins:
        scope = [p for p in inputs.points if p.load_kind == "request_rate" and (
            p.model, p.input_tokens or 0, p.output_tokens, p.decoding) == (
            model, input_tokens, output_tokens, decoding)]
        selection = select(scope, (PER_REQUEST,), inputs.simulated)
        variants = Variants(selection.points)
        gross = energy_vs_load(selection.points, "request_rate", PER_REQUEST, variants)
        if sum(1 for s in gross if len(served(s)) >= 2) < 2:
            continue
        net = {s.label: s for s in energy_vs_load(
            [p for p in selection.points if p.get(NET) is not None], "request_rate", NET,
            variants)}
        found = sorted((c for a, b in combinations(gross, 2) for c in crossings(a, b)),
                       key=lambda c: c.rate_rps)
        workload = f"{tokens_label(scope[0].input_tokens, output_tokens)}, {decoding}"
        out.append(CrossingFigure(model, workload, gross, net, found, selection))
    return out


def draw_crossing(spec: Any) -> Any:
    """A CrossingFigure: J/request against the rate (log–log), a solid line per GPU
    (gross: idle amortised), dashed the same net of idle, saturated points crossed
    out, each crossing ringed and labelled with its rate and J/request."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    from farm.report.plots import (
        SATURATED_LEGEND,
        _grid,
        _legend,
        _legend_height,
        _plain_formatter,
        colours_for,
        place_labels,
    )

    data: CrossingFigure = spec.data
    colours = colours_for([s.label for s in data.gross])
    ncols = min(3, len(data.gross) + 3)
    fig, axes = _grid(1, 1, 7.0, 4.2, bottom=_legend_height(len(data.gross) + 3, ncols))
    ax = axes[0][0]
    handles: dict[str, Any] = {}
    segments, seg_colours, obstacles = [], [], []
    for s in data.gross:
        colour = colours[s.label]
        handles[s.label], = ax.plot(s.xs, s.means, color=colour, marker="o", markersize=4,
                                    linewidth=1.5)
        obstacles += list(zip(s.xs, s.means, strict=True))
        for p in s.points:
            if p.estimate.low is not None and p.estimate.high is not None:
                segments.append([(p.x, max(p.estimate.low, 1e-9)), (p.x, p.estimate.high)])
                seg_colours.append(colour)
            if p.saturations:
                ax.plot([p.x], [p.estimate.mean], marker="X", markersize=9, color=colour,
                        linewidth=0, zorder=5, gid="saturated")
        if (n := data.net.get(s.label)) is not None:
            ax.plot(n.xs, n.means, color=colour, linestyle="--", linewidth=1, alpha=0.8)
    if segments:
        ax.add_collection(LineCollection(segments, colors=seg_colours, linewidths=1.1,
                                         alpha=0.7), autolim=False)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted({x for s in data.gross for x in s.xs}))
    ax.xaxis.set_major_formatter(_plain_formatter())
    ax.xaxis.set_minor_formatter(NullFormatter())   # the measured rates are the ticks
    ax.grid(True, which="major", alpha=0.3)
    labels = []
    for c in data.crossings:
        ax.plot([c.rate_rps], [c.energy_j], marker="o", markersize=13, markerfacecolor="none",
                markeredgecolor="black", markeredgewidth=1.6, linewidth=0, zorder=6,
                gid="crossing")
        labels.append((c.rate_rps, c.energy_j,
                       f"cross at {c.rate_rps:.3g} req/s, {c.energy_j:.3g} J/request", "black"))
    ax.margins(0.12)
    place_labels(ax, labels, obstacles, fontsize=8)
    ax.set_xlabel("arrival rate (requests/s, open loop)", fontsize=8)
    ax.set_ylabel("energy per request, idle amortised (J)", fontsize=8)
    ax.set_title(f"J/request vs arrival rate · {data.workload}", fontsize=9)
    ax.tick_params(labelsize=7)
    handles["net of idle (dashed): the gap is idle's share"] = Line2D(
        [], [], color="grey", linestyle="--", linewidth=1)
    handles["crossing (interpolated)"] = Line2D([], [], marker="o", markersize=9,
                                                markerfacecolor="none", color="black",
                                                linewidth=0)
    handles[SATURATED_LEGEND] = Line2D([], [], marker="X", markersize=7, color="black",
                                       linewidth=0)
    _legend(fig, list(handles.values()), list(handles.keys()), ncols,
            "solid: gross (idle amortised), mean over repetitions; bars: 95% CI")
    return fig


@figure("rate_crossing", heading="Energy per request vs arrival rate: where GPUs cross",
        order=22, draw=draw_crossing, intro=(
    "For open-loop load points (a rate sweep from near idle to saturation, or a "
    "request_rate list): J per request against the arrival rate, one line per GPU. An "
    "open-loop point's gross J/request is idle amortised at its rate — its window holds "
    "the idle gaps between arrivals — so it is what serving that rate costs per request "
    "(dashed: net of idle; the gap is idle's share). The ring marks where two GPUs' curves "
    "cross, interpolated in log rate – log J/request between the rates both measured, "
    "below the rate where most of a line's runs saturated: below it one GPU serves for "
    "less, above it the other (Watt Counts: low-idle GPUs win serving at low rates). "
    "Always gross, with or without --net."))
def rate_crossing(inputs: FigureInputs) -> Section:
    """One figure per model and workload bin with two or more GPUs' open-loop curves."""
    planned = [Planned(f"rate-crossing-{cf.model}-{cf.workload}",
                       f"{cf.model}, {cf.workload}: J/request (idle amortised) vs arrival "
                       "rate per GPU", cf, cf.notes())
               for cf in crossing_figures(inputs)]
    if planned:
        return Section(planned)
    return Section(notes=["No two GPUs (or configurations) have open-loop points at two or "
                          "more of the same rates: no crossing to show."])
