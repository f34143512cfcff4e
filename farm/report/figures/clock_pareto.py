"""Clocks and power caps under an SLO: per model, GPU and workload bin of a sweep
that varies `[hardware] sm_clock_mhz` / `power_limit_w`, every (setting, load)
configuration's J/output token against TPOT p90 and TTFT p90, the Pareto front
of each, and every point labelled with what drove it (drivers.py: achieved SM
clock, throttle reasons, host-, memory- or compute-bound) from its runs' stored
timelines. The table under each figure lists every point with those figures and
the numbers behind its bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from farm.output import tuning_label
from farm.report.drivers import HOST_BOUND_SHARE, MEMORY_BOUND_SHARE, Driver, combine, driver
from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.labels import axis_label, fmt, short_label, tokens_label
from farm.report.pareto import pareto_front
from farm.report.points import RunPoint
from farm.report.selection import Selection, select
from farm.report.stats import Estimate, estimate, group_by
from farm.report.tuning import varied_axes

LATENCIES = ("tpot_p90_ms", "ttft_p90_ms")


@dataclass(frozen=True)
class TunedPoint:
    """One (setting, load) configuration: its means over repetitions and its driver."""

    number: int                  # the same in every panel and the table
    setting: str                 # "SM 1200 MHz · default power limit"
    load_label: str
    energy: Estimate
    latency: dict[str, Estimate]
    driver: Driver
    run_ids: tuple[str, ...]


@dataclass(frozen=True)
class ClockFigure:
    """One model × GPU × workload bin: its tuned configurations and both fronts."""

    model: str
    gpu_label: str
    workload: str
    energy: str                  # the J/output token figure (gross or net)
    points: list[TunedPoint]
    fronts: dict[str, list[int]]  # latency → numbers on its front, by ascending latency
    selection: Selection


def _load_indices(points: Sequence[RunPoint]) -> dict[tuple[str, Any, Any], int]:
    """(run id, load kind, load value) → the load point's index in its run (the store
    gives a run's points in load point order)."""
    out: dict[tuple[str, Any, Any], int] = {}
    for run_id, group in group_by([p for p in points if p.load_kind is not None],
                                  lambda p: p.run_id).items():
        for i, p in enumerate(group):
            out[(run_id, p.load_kind, p.load_value)] = i
    return out


def clock_figures(inputs: FigureInputs) -> list[ClockFigure]:
    """The figures of a tuned sweep (none when it varies neither axis)."""
    if not varied_axes(inputs.points):
        return []
    energy = inputs.energies[1]
    index = _load_indices(inputs.points)
    out = []
    keys = sorted({(p.model, p.gpu_label, p.input_tokens or 0, p.output_tokens, p.decoding)
                   for p in inputs.points if p.scenario_kind == "server"})
    for model, gpu, input_tokens, output_tokens, decoding in keys:
        scope = [p for p in inputs.points if p.scenario_kind == "server" and (
            p.model, p.gpu_label, p.input_tokens or 0, p.output_tokens, p.decoding) == (
            model, gpu, input_tokens, output_tokens, decoding)]
        selection = select(scope, (energy, *LATENCIES), inputs.simulated)
        configs = sorted(group_by(selection.points, lambda p: p.config_key).values(),
                         key=lambda g: (str(g[0].power_limit_w), str(g[0].sm_clock_mhz),
                                        g[0].load_kind or "", g[0].load_value or 0))
        tuned = []
        for number, group in enumerate(configs, 1):
            first = group[0]
            drivers = [driver(p, index[(p.run_id, p.load_kind, p.load_value)],
                              inputs.reads.trace_for(p.run_id), inputs.reads.result_for(p.run_id))
                       for p in group]
            tuned.append(TunedPoint(
                number, tuning_label(first.power_limit_w, first.sm_clock_mhz) or "untuned",
                first.load_label, estimate(p.get(energy) for p in group),  # type: ignore[arg-type]
                {lat: estimate(p.get(lat) for p in group) for lat in LATENCIES},  # type: ignore[misc]
                combine(drivers), tuple(p.run_id for p in group)))
        if not tuned:
            continue
        fronts = {lat: [tuned[i].number for i in pareto_front(
            [(t.latency[lat].mean, t.energy.mean) for t in tuned])] for lat in LATENCIES}
        workload = f"{tokens_label(scope[0].input_tokens, output_tokens)}, {decoding}"
        out.append(ClockFigure(model, gpu, workload, energy, tuned, fronts, selection))
    return out


def _estimate(e: Estimate) -> str:
    return fmt(e.mean) + (f" ± {fmt(e.half_width)}" if e.half_width is not None else
                          " (n = 1)")


def driver_table(spec: Any) -> str:
    """HTML: every configuration of the figure, its front membership and its driver."""
    fig: ClockFigure = spec.data
    head = "".join(f"<th>{escape(h)}</th>" for h in (
        "#", "setting", "load", axis_label(fig.energy),
        *(axis_label(lat) for lat in LATENCIES), "front", "n",
        "SM clock (MHz, median)", "throttle reasons", "bound", "why"))
    rows = []
    for t in fig.points:
        on = [short_label(lat) for lat in LATENCIES if t.number in fig.fronts[lat]]
        cells = [str(t.number), t.setting, t.load_label, _estimate(t.energy),
                 *(_estimate(t.latency[lat]) for lat in LATENCIES), ", ".join(on) or "—",
                 str(t.energy.n), fmt(t.driver.sm_clock_mhz),
                 ", ".join(t.driver.throttles) or "none", t.driver.bound, t.driver.why]
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return (f'<p class="note">{escape(fig.model)} on {escape(fig.gpu_label)}, '
            f"{escape(fig.workload)}: every setting and load (# as in the figure; ± is the 95% "
            "CI half-width)</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>")


def draw_clock_pareto(spec: Any) -> Any:
    """A ClockFigure: J/output token against TPOT p90 and TTFT p90, a colour per
    setting, the front as a step line, each point numbered with its driver."""
    from farm.report.plots import PALETTE, _grid, _legend, _legend_height, place_labels

    data: ClockFigure = spec.data
    settings = list(dict.fromkeys(t.setting for t in data.points))
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(settings)}
    ncols = min(3, len(settings) + 1)
    fig, axes = _grid(1, len(LATENCIES), 5.6, 3.8,
                      bottom=_legend_height(len(settings) + 1, ncols))
    handles: dict[str, Any] = {}
    for ax, lat in zip(axes[0], LATENCIES, strict=True):
        xy = {t.number: (t.latency[lat].mean, t.energy.mean) for t in data.points}
        for s in settings:
            pts = [xy[t.number] for t in data.points if t.setting == s]
            handles[s] = ax.scatter([x for x, _ in pts], [y for _, y in pts], color=colour[s],
                                    s=26, zorder=4)
        front = [xy[n] for n in data.fronts[lat]]
        line, = ax.plot([x for x, _ in front], [y for _, y in front], color="black",
                        linewidth=1.2, drawstyle="steps-post", zorder=3, marker="o",
                        markersize=9, markerfacecolor="none")
        handles["Pareto front"] = line
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(axis_label(lat), fontsize=8)
        ax.set_ylabel(axis_label(data.energy), fontsize=8)
        ax.set_title(f"{short_label(data.energy)} vs {short_label(lat)}: "
                     f"{len(data.points)} configurations, {len(front)} on the front", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.margins(0.25)
        place_labels(ax, [(*xy[t.number], f"{t.number} {t.load_label}: {t.driver.label}",
                           colour[t.setting]) for t in data.points], list(xy.values()),
                     fontsize=6)
    _legend(fig, list(handles.values()), list(handles.keys()), ncols,
            "colour: the setting asked for; label: # load: median SM clock · throttle "
            "reasons · bound")
    return fig


@figure("clocks", heading="Clocks and power caps: energy vs latency and what drove each point",
        order=18, draw=draw_clock_pareto, needs=("results", "traces"), html_after=driver_table,
        intro=(
    "For a sweep that locks the SM clock or caps the power (`[hardware] sm_clock_mhz`, "
    "`power_limit_w`, the GPU's default among the values): per model, GPU and workload "
    "bin, every setting and load of its server scenarios as one point (mean over its "
    "repetitions), J per output token against TPOT p90 and TTFT p90, and the Pareto front "
    "of each (lower left is better). Each point says what drove it, from its runs' stored "
    "power timelines over its steady window: the median SM clock achieved, the throttle "
    "reasons seen, and whether it was host-bound (dynamic power under "
    f"{HOST_BOUND_SHARE:.0%} of the headroom between the context-held idle and the power "
    "limit, no throttling), memory-bound (memory power ≥ "
    f"{MEMORY_BOUND_SHARE:.0%} of the dynamic power) or compute-bound; 'unknown' where "
    "the stored data cannot tell. The thresholds are first choices, to be checked "
    "against measured timelines (docs/report.md)."))
def clock_pareto(inputs: FigureInputs) -> Section:
    """One figure per model, GPU and workload bin of a tuned sweep's server points."""
    planned = [Planned(f"clocks-{cf.model}-{cf.gpu_label}-{cf.workload}",
                       f"{cf.model} on {cf.gpu_label}, {cf.workload}: J/output token "
                       f"({inputs.basis}) vs latency over SM clocks and power caps", cf,
                       [cf.selection.note()])
               for cf in clock_figures(inputs)]
    if planned:
        return Section(planned)
    return Section(notes=["The sweep varies neither the SM clock nor the power limit, or "
                          "none of its server points is valid with energy and latency "
                          "figures: no figure."])
