"""Draw the report's figure data (series, pareto, heatmap, timeline) as PNG bytes.

Drawing only: every number comes from the pure functions of `series.py`,
`pareto.py`, `heatmap.py` and `timeline.py`. matplotlib is imported inside the
functions (farmctl's other commands never pay for it) and used without pyplot,
through the Agg canvas: no display, no global state. `render` draws a figure
through the draw function its kind registered (farm/report/figures/); the
draw functions here (`draw_load`, `draw_pareto`, `draw_heatmap`,
`draw_timeline`) and the helpers are what kinds of figure use.

A simulated report's figures say so twice: "SIMULATED — " leads the title, and
a watermark crosses the figure. The title is also stored in the PNG's "Title"
text chunk. A title wider than its figure is wrapped, and the figure grows at
the top to hold it, so no title is ever clipped (`finish`). Labels on the
panels (plateaus and minima, the Pareto front's points) are placed where they
overlap no other label and no data point (`place_labels`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.report.figures import kind
from farm.report.heatmap import HeatmapFigure
from farm.report.labels import DASH, LOAD_AXIS, axis_label, fmt, short_label, tokens_label
from farm.report.pareto import ParetoFigure
from farm.report.series import LoadFigure
from farm.report.timeline import WINDOW_KINDS, WINDOW_NAMES, Timeline

DPI = 100
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
LINESTYLES = ("-", "--", ":", "-.")
WINDOW_COLOURS = {"idle": "#bdbdbd", "idle_ctx": "#9ecae1", "load": "#fdd0a2",
                  "warmup": "#fdae6b", "steady": "#a1d99b"}
SCENARIO_MARKERS = {"server": "o", "batch": "s"}
KNEE_LEGEND = "rate sweep knee: the highest rate before saturation"
SATURATED_LEGEND = "rate sweep stopped: saturated here"


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: what to draw and how to name it."""

    slug: str                    # file name under figures/, without ".png"
    section: str                 # the name of its kind of figure (farm/report/figures/)
    title: str                   # the full title ("SIMULATED — " included where simulated)
    data: Any                    # what its kind planned: LoadFigure, ParetoFigure, …
    notes: list[str] = field(default_factory=list)
    simulated: bool = False
    colours: dict[str, str] = field(default_factory=dict)   # GPU label → colour


def colours_for(gpu_labels: Sequence[str]) -> dict[str, str]:
    """One colour per GPU label, the same in every figure."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(gpu_labels)))}


def render(spec: FigureSpec) -> bytes:
    """The figure as PNG bytes, drawn by its kind's draw function, titled and (when
    simulated) watermarked here."""
    return png_bytes(draw_figure(spec), spec)


def draw_figure(spec: FigureSpec) -> Any:
    """The finished matplotlib Figure of `spec`: drawn by its kind, titled, watermarked."""
    return finish(kind(spec.section).draw(spec), spec)


# ------------------------------------------------------------------ common


def _grid(nrows: int, ncols: int, panel_w: float, panel_h: float, *, left: float = 0.85,
          right: float = 0.3, top: float = 0.75, bottom: float = 1.0, hspace: float = 0.8,
          wspace: float = 0.85) -> tuple[Any, Any]:
    """A figure of nrows × ncols panels of a fixed size with fixed margins (inches).

    No layout engine: constrained layout measured every label of every panel
    and took most of the drawing time of the big figures.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = left + right + ncols * panel_w + (ncols - 1) * wspace
    height = top + bottom + nrows * panel_h + (nrows - 1) * hspace
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={
        "left": left / width, "right": 1 - right / width, "top": 1 - top / height,
        "bottom": bottom / height, "hspace": hspace / panel_h, "wspace": wspace / panel_w})
    return fig, axes


def _legend_height(entries: int, ncols: int, title: bool = True) -> float:
    """Inches below the panels for the x label and a legend of `entries` in `ncols`."""
    rows = -(-entries // max(1, ncols)) + (1 if title else 0)
    return 0.55 + 0.2 * rows + 0.15


def _legend(fig: Any, handles: Sequence[Any], labels: Sequence[str], ncols: int,
            title: str | None = None) -> None:
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.005), ncols=ncols,
               fontsize=8, title=title, title_fontsize=8, frameon=False)


TITLE_TOP = 0.12        # inches above the figure's title
TITLE_SIDE = 0.2        # inches kept free left and right of it
TITLE_GAP = 0.43        # inches from the title's bottom to the top of the panels


def finish(fig: Any, spec: FigureSpec) -> Any:
    """Title `fig` (wrapped to its width; the figure grows at the top when the title
    needs more room than the panels leave) and watermark it when simulated."""
    title = fig.suptitle(spec.title, x=0.5, y=1.0, va="top", ha="center", fontsize=11,
                         fontweight="bold", color="#b00020" if spec.simulated else "black")
    renderer = fig.canvas.get_renderer()
    _wrap(title, spec.title, fig.get_figwidth() * DPI - 2 * TITLE_SIDE * DPI, renderer)
    title_h = title.get_window_extent(renderer).height / DPI
    height = fig.get_figheight()
    panels_top = max((ax.get_position().y1 for ax in fig.axes), default=1 - 0.75 / height)
    grow = TITLE_TOP + title_h + TITLE_GAP - (1 - panels_top) * height
    if grow > 0:
        _grow_top(fig, grow)
    title.set_y(1 - TITLE_TOP / fig.get_figheight())
    if spec.simulated:
        fig.text(0.5, 0.5, "SIMULATED", fontsize=64, color="#b00020", alpha=0.10,
                 ha="center", va="center", rotation=30, zorder=100)
    return fig


def _wrap(text: Any, full: str, width_px: float, renderer: Any) -> None:
    """Break `text` (a matplotlib Text holding `full`) into lines no wider than width_px."""
    import textwrap

    measured = text.get_window_extent(renderer).width
    if measured <= width_px:
        return
    chars = max(10, int(len(full) * width_px / measured))
    while chars > 10:
        text.set_text("\n".join(textwrap.wrap(full, chars, break_on_hyphens=False)))
        if text.get_window_extent(renderer).width <= width_px:
            return
        chars -= 3


def _grow_top(fig: Any, inches: float) -> None:
    """Add `inches` at the top of `fig`, every axes keeping its size and its place
    from the bottom (positions are figure fractions: scale them)."""
    old = fig.get_figheight()
    new = old + inches
    fig.set_figheight(new)
    for ax in fig.axes:
        pos = ax.get_position()
        ax.set_position((pos.x0, pos.y0 * old / new, pos.width, pos.height * old / new))


def png_bytes(fig: Any, spec: FigureSpec) -> bytes:
    """The finished figure as PNG bytes, its title in the PNG's Title chunk."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI,
                metadata={"Title": spec.title, "Software": "farm report"})
    return buffer.getvalue()


def _log_scale(values: Sequence[float], ratio: float = 8.0) -> bool:
    positive = [v for v in values if v is not None and v > 0]
    return (bool(positive) and len(positive) == len(values)
            and max(positive) / min(positive) >= ratio)


def place_labels(ax: Any, labels: Sequence[tuple[float, float, str, str]],
                 obstacles: Sequence[tuple[float, float]] = (), fontsize: float = 7) -> list[Any]:
    """Annotate `ax` with each (x, y, text, colour) label near its data point, where it
    overlaps no label placed before, no point of `obstacles` (data coordinates) and
    stays inside the axes: the first free place of a ring of offsets around the point,
    further out ring after ring (a leader line back to the point once away from it).
    In a panel too crowded for that, a label may cover points but still no label.
    Call it once the axes' scales and limits are set."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    points = [_point_box(ax, x, y) for x, y in obstacles]
    taken: list[Any] = []                    # the labels placed so far
    placed = []
    for x, y, text, colour in labels:
        probe = ax.annotate(text, (x, y), xytext=(0, 0), textcoords="offset points",
                            fontsize=fontsize, bbox=_LABEL_BOX)
        found = None
        for avoid in (taken + points, taken):
            for i, (dx, dy) in enumerate(_OFFSETS):
                probe.set_position((dx, dy))
                probe.set_ha("left" if dx >= 0 else "right")
                probe.set_va("bottom" if dy >= 0 else "top")
                box = probe.get_window_extent(renderer)
                if (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                        and box.y1 <= frame.y1 and not any(box.overlaps(t) for t in avoid)):
                    found = (i, dx, dy, box)
                    break
            if found is not None:
                break
        probe.remove()
        i, dx, dy, box = found if found is not None else (0, *_OFFSETS[0], None)
        leader = ({"arrowstyle": "-", "color": colour, "linewidth": 0.5, "shrinkA": 0,
                   "shrinkB": 3} if i >= 4 else None)
        note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                           ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top",
                           fontsize=fontsize, color=colour, zorder=6, bbox=_LABEL_BOX,
                           arrowprops=leader)
        if box is None:
            box = _text_box(note, renderer)
        taken.append(box.expanded(1.0, 1.0).padded(1.5))
        placed.append(note)
    return placed


def _text_box(note: Any, renderer: Any) -> Any:
    """A label's text box alone (an annotation's extent includes its leader line)."""
    from matplotlib.text import Text

    note.update_positions(renderer)
    return Text.get_window_extent(note, renderer)


# A label stays legible over grid, lines and the plateau's dotted line.
_LABEL_BOX = {"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none",
              "alpha": 0.85}
# Offsets (points) tried around a label's data point: right/left, above/below, then
# further up and down and sideways, ring after ring.
_OFFSETS = [(dx, dy) for ring in range(14) for dx in ((5, -5) if ring == 0 else (5, -5, 40, -40))
            for dy in (6 + 11 * ring, -6 - 11 * ring)]


def _point_box(ax: Any, x: float, y: float) -> Any:
    """A marker's box (display coordinates) around the data point (x, y)."""
    from matplotlib.transforms import Bbox

    px, py = ax.transData.transform((x, y))
    return Bbox.from_extents(px - 4, py - 4, px + 4, py + 4)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------ energy vs load


def draw_load(spec: FigureSpec) -> Any:
    """A LoadFigure: a panel per token-length pair (rows) and figure (columns), one
    line per series with its CIs, where it stops falling (plateau or minimum), a
    rate sweep's knee (a star) and the rate it saturated at (a cross)."""
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    data: LoadFigure = spec.data
    pairs = data.token_pairs
    labels = list(dict.fromkeys(s.label for ss in data.series.values() for s in ss))
    line_colours = colours_for(labels) if data.colour_lines else {}
    knees = any(p.knees for ss in data.series.values() for s in ss for p in s.points)
    stops = any(p.saturations for ss in data.series.values() for s in ss for p in s.points)
    extra = knees + stops
    ncols_legend = min(4, max(1, len(labels) + extra))
    fig, axes = _grid(len(pairs), len(data.figures), 4.6, 2.5,
                      bottom=_legend_height(len(labels) + extra, ncols_legend))
    styles: dict[str, tuple[str, str]] = {}
    handles: dict[str, Any] = {}
    for col, figure in enumerate(data.figures):
        for row, pair in enumerate(pairs):
            ax = axes[row][col]
            series = [s for s in data.series[figure] if (s.input_tokens, s.output_tokens) == pair]
            if not series:
                _empty(ax, f"no valid points ({DASH})")
                continue
            xs = [x for s in series for x in s.xs]
            means = [m for s in series for m in s.means]
            segments, seg_colours = [], []
            turns: list[tuple[float, float, str, str]] = []
            for s in series:
                colour = line_colours.get(s.label) or spec.colours.get(s.gpu_label, "black")
                if s.label not in styles:
                    same_gpu = sum(1 for st in styles.values() if st[0] == colour)
                    styles[s.label] = (colour, LINESTYLES[same_gpu % len(LINESTYLES)])
                colour, style = styles[s.label]
                line, = ax.plot(s.xs, s.means, color=colour, linestyle=style, marker="o",
                                markersize=4, linewidth=1.4)
                handles.setdefault(s.label, line)
                for p in s.points:
                    if p.estimate.low is not None and p.estimate.high is not None:
                        segments.append([(p.x, max(p.estimate.low, 0.0)),
                                         (p.x, p.estimate.high)])
                        seg_colours.append(colour)
                for p in s.points:
                    if p.knees:
                        ax.plot([p.x], [p.estimate.mean], marker="*", markersize=12,
                                color=colour, linewidth=0, zorder=5, gid="knee")
                        turns.append((p.x, p.estimate.mean, s.knee_label(p), colour))
                    if p.saturations:
                        ax.plot([p.x], [p.estimate.mean], marker="X", markersize=9,
                                color=colour, linewidth=0, zorder=5, gid="saturated")
                if s.turn is not None:
                    y = s.means[s.xs.index(s.turn.at)]
                    ax.axvline(s.turn.at, color=colour, linestyle=":", linewidth=1)
                    if s.turn.kind == "minimum":
                        ax.plot([s.turn.at], [y], marker="o", markersize=9, color=colour,
                                markerfacecolor="none", linewidth=0)
                    turns.append((s.turn.at, y, s.turn.label, colour))
            if segments:
                # One collection for every interval of the panel: 95% CI of the mean.
                ax.add_collection(LineCollection(segments, colors=seg_colours, linewidths=1.1,
                                                 alpha=0.7), autolim=False)
            if _log_scale(xs, 4):
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(_plain_formatter())
            ax.set_xticks(sorted(set(xs)))
            _energy_axis(ax, means, series)
            if turns:
                place_labels(ax, turns, list(zip(xs, means)))
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{short_label(figure)} · {tokens_label(*pair)}", fontsize=9)
            ax.set_xlabel(LOAD_AXIS.get(data.load_kind, data.load_kind), fontsize=8)
            ax.set_ylabel(axis_label(figure), fontsize=8)
            ax.tick_params(labelsize=7)
    if knees:
        handles[KNEE_LEGEND] = Line2D([], [], marker="*", markersize=9, color="black",
                                      linewidth=0)
    if stops:
        handles[SATURATED_LEGEND] = Line2D([], [], marker="X", markersize=7, color="black",
                                           linewidth=0)
    _legend(fig, list(handles.values()), list(handles.keys()), ncols_legend,
            "lines: mean over repetitions; bars: 95% CI (none with n = 1)")
    return fig


def _energy_axis(ax: Any, means: Sequence[float], series: Sequence[Any]) -> None:
    """Log scale where the means span 10× or more; the axis fits the means and their
    intervals, cut at zero (an interval of two repetitions can reach below it)."""
    highs = [p.estimate.high for s in series for p in s.points if p.estimate.high is not None]
    top = max([*means, *highs])
    if _log_scale(means, 10):
        lows = [p.estimate.low for s in series for p in s.points
                if p.estimate.low is not None and p.estimate.low > 0]
        ax.set_yscale("log")
        ax.set_ylim(min([*means, *lows]) / 1.3, top * 1.3)
    else:
        ax.set_ylim(0, top * 1.08 if top > 0 else 1)


def _plain_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:g}")


# ---------------------------------------------------------------- pareto


def draw_pareto(spec: FigureSpec) -> Any:
    """A ParetoFigure: a panel per energy × latency pair, points per GPU and
    scenario kind, the front as a step line, each front point numbered and labelled
    with its scenario, load and token lengths (the numbers of the front tables)."""
    data: ParetoFigure = spec.data
    energies = list(dict.fromkeys(p.energy for p in data.panels))
    latencies = list(dict.fromkeys(p.latency for p in data.panels))
    kinds = {(p.gpu_label, p.scenario_kind) for panel in data.panels for p in panel.points}
    ncols_legend = min(4, len(kinds) + 1)
    fig, axes = _grid(len(energies), len(latencies), 4.8, 3.0,
                      bottom=_legend_height(len(kinds) + 1, ncols_legend))
    handles: dict[str, Any] = {}
    for panel in data.panels:
        ax = axes[energies.index(panel.energy)][latencies.index(panel.latency)]
        if not panel.points:
            _empty(ax, "no valid points")
            continue
        groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for point in panel.points:
            groups.setdefault((point.gpu_label, point.scenario_kind), []).append(point.xy)
        for (gpu_label, scenario_kind), xy in sorted(groups.items()):
            handle = ax.scatter([x for x, _ in xy], [y for _, y in xy],
                                color=spec.colours.get(gpu_label, "black"),
                                marker=SCENARIO_MARKERS.get(scenario_kind, "D"), s=22,
                                alpha=0.75, linewidths=0)
            handles.setdefault(f"{gpu_label} · {scenario_kind}", handle)
        front = panel.front_points
        fx = [p.xy[0] for p in front]
        fy = [p.xy[1] for p in front]
        line, = ax.plot(fx, fy, color="black", linewidth=1.2, drawstyle="steps-post", zorder=3,
                        marker="o", markersize=8, markerfacecolor="none")
        handles.setdefault("Pareto front", line)
        xs = [p.xy[0] for p in panel.points]
        ys = [p.xy[1] for p in panel.points]
        if _log_scale(xs, 10):
            ax.set_xscale("log")
        if _log_scale(ys, 10):
            ax.set_yscale("log")
        with_scenario = _names_scenarios(panel.points)
        place_labels(ax, [(*p.xy, f"{n} {front_label(p, with_scenario)}",
                           spec.colours.get(p.gpu_label, "black"))
                          for n, p in enumerate(front, 1)],
                     [p.xy for p in panel.points])
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel(axis_label(panel.latency), fontsize=8)
        ax.set_ylabel(axis_label(panel.energy), fontsize=8)
        ax.set_title(f"{short_label(panel.energy)} vs {short_label(panel.latency)}: "
                     f"{len(panel.points)} configurations, {len(front)} on the front",
                     fontsize=9)
        ax.tick_params(labelsize=7)
    _legend(fig, list(handles.values()), list(handles.keys()), ncols_legend,
            "one point per configuration (mean over repetitions); lower left is better; "
            "front points numbered: load · input→output tokens")
    return fig


def front_label(p: Any, with_scenario: bool = False) -> str:
    """A Pareto point's label: "c=16 · 128→64" (its load says the scenario's kind),
    led by the scenario's name where two scenarios share a kind of load."""
    label = f"{p.load_label} · {fmt(p.input_tokens)}→{fmt(p.output_tokens)}"
    return f"{p.scenario} {label}" if with_scenario else label


def _names_scenarios(points: Sequence[Any]) -> bool:
    """Whether a load label alone leaves the scenario ambiguous (two scenarios whose
    loads read alike, e.g. two closed loops)."""
    forms: dict[str, set[str]] = {}
    for p in points:
        # "c=8", "2 req/s", "batch 16": the label's words other than its number
        form = " ".join(w for w in p.load_label.replace("=", "= ").split()
                        if not w[0].isdigit())
        forms.setdefault(form, set()).add(p.scenario)
    return any(len(names) > 1 for names in forms.values())


# ---------------------------------------------------------------- heat map


def draw_heatmap(spec: FigureSpec) -> Any:
    """A HeatmapFigure: a grid per row and load value on one colour scale."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    data: HeatmapFigure = spec.data
    nrows, ncols = len(data.rows), len(data.columns)
    ni, no = len(data.inputs), len(data.outputs)
    fig, axes = _grid(nrows, ncols, max(1.8, 0.5 * ni + 0.3), max(1.3, 0.36 * no + 0.3),
                      left=0.8, right=1.3, bottom=0.6, hspace=0.5, wspace=0.55)
    values = data.values
    norm = (LogNorm(min(values), max(values)) if _log_scale(values, 4)
            else Normalize(min(values), max(values)))
    cmap = colormaps["viridis"].with_extremes(bad="#eeeeee")
    image = None
    for r, row in enumerate(data.rows):
        for c, (value, load_label) in enumerate(data.columns):
            ax = axes[r][c]
            grid = data.grids.get((row, value))
            matrix = np.full((no, ni), np.nan)
            if grid is not None:
                for oi, (_, oname) in enumerate(data.outputs):
                    for ii, (_, iname) in enumerate(data.inputs):
                        v = grid.value(iname, oname)
                        if v is not None:
                            matrix[oi, ii] = v
            image = ax.imshow(matrix, origin="lower", cmap=cmap, norm=norm, aspect="auto")
            for oi in range(no):
                for ii in range(ni):
                    v = matrix[oi, ii]
                    text = DASH if math.isnan(v) else fmt(float(v))
                    light = not math.isnan(v) and norm(v) < 0.6
                    ax.text(ii, oi, text, ha="center", va="center", fontsize=7,
                            color="white" if light else "black")
            ax.set_xticks(range(ni), [name for _, name in data.inputs], fontsize=7)
            ax.set_yticks(range(no), [name for _, name in data.outputs], fontsize=7)
            ax.set_title(f"{row} · {load_label}", fontsize=8)
            if r == nrows - 1:
                ax.set_xlabel("input tokens (bin)", fontsize=8)
            if c == 0:
                ax.set_ylabel("output tokens (bin)", fontsize=8)
    if image is not None:
        width, height = fig.get_figwidth(), fig.get_figheight()
        cax = fig.add_axes((1 - 1.0 / width, 0.6 / height, 0.15 / width,
                            1 - 1.35 / height))
        fig.colorbar(image, cax=cax).set_label(f"{axis_label(data.figure)}, mean", fontsize=8)
    return fig


# ---------------------------------------------------------------- timeline


def draw_timeline(spec: FigureSpec) -> Any:
    """A Timeline: power per GPU (and their sum) against time, windows shaded."""
    from matplotlib.patches import Patch

    tl: Timeline = spec.data
    fig, axes = _grid(1, 1, 10.5, 2.8, bottom=_legend_height(9, 5, title=False))
    ax = axes[0][0]
    ax.set_title(tl.title, fontsize=9)
    kinds_seen = []
    for span in tl.spans:
        ax.axvspan(span.start_s, span.end_s, color=WINDOW_COLOURS[span.kind], alpha=0.55,
                   linewidth=0, zorder=0)
        if span.kind not in kinds_seen:
            kinds_seen.append(span.kind)
        if span.kind == "steady":
            ax.text((span.start_s + span.end_s) / 2, 0.98, span.label.split(", ", 1)[-1],
                    transform=ax.get_xaxis_transform(), rotation=90, ha="center", va="top",
                    fontsize=7, color="#225522")
    if tl.run_window is not None:
        for edge in tl.run_window:
            ax.axvline(edge, color="#555555", linestyle="--", linewidth=0.8, zorder=1)
    handles: list[Any] = []
    if tl.t_s:
        for i, series in enumerate(tl.power_w):
            ys = [math.nan if v is None else v for v in series]
            line, = ax.plot(tl.t_s, ys, linewidth=1.0, color=PALETTE[i % len(PALETTE)],
                            label=tl.gpu_labels[i] if i < len(tl.gpu_labels) else f"GPU {i}")
            handles.append(line)
        total = tl.total_w
        if total is not None:
            line, = ax.plot(tl.t_s, [math.nan if v is None else v for v in total],
                            color="black", linewidth=1.2, label="all GPUs")
            handles.append(line)
        ax.set_ylim(bottom=0)
    else:
        _empty(ax, "no power timeline stored for this run")
    period = f", every {tl.sample_period_s:g} s" if tl.sample_period_s else ""
    ax.set_xlabel("time since the run started (s)", fontsize=8)
    ax.set_ylabel(f"board power (W){' — ' + tl.sensor if tl.sensor else ''}{period}",
                  fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)
    handles += [Patch(color=WINDOW_COLOURS[k], alpha=0.55, label=WINDOW_NAMES[k])
                for k in WINDOW_KINDS if k in kinds_seen]
    if tl.run_window is not None:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="#555555", linestyle="--", label="run window"))
    _legend(fig, handles, [h.get_label() for h in handles], 5)
    return fig


STILL_RUNNING = ("more", "waiting")     # adaptive verdicts of a configuration not done
FIT_LEGEND_ROW = 0.2    # inches per legend entry under a fitted-curves panel
FIT_LEGEND_PT = 8       # legible at the page's width (6 pt was not)


def draw_fits(spec: FigureSpec) -> Any:
    """A FitFigure (farm/report/fits.py): per token-length pair (rows) and figure
    (columns), each curve's means with their 95% CIs and its fitted logistic, R² in
    the legend (or why it has no fit)."""
    from farm.report.fits import X_AXIS_LABELS, FitFigure

    data: FitFigure = spec.data
    pairs = data.token_pairs
    # Each panel's legend goes under it (inside, it covered the points it names).
    entries = max((sum(1 for c in data.curves.get(f, [])
                       if (c.input_tokens, c.output_tokens) == pair)
                   for f in data.figures for pair in pairs), default=1)
    legend_h = FIT_LEGEND_ROW * entries
    fig, axes = _grid(len(pairs), len(data.figures), 4.6, 2.6, bottom=0.6 + legend_h,
                      hspace=0.8 + legend_h)
    for col, figure in enumerate(data.figures):
        for row, pair in enumerate(pairs):
            ax = axes[row][col]
            curves = [c for c in data.curves.get(figure, [])
                      if (c.input_tokens, c.output_tokens) == pair]
            if not curves:
                _empty(ax, f"no valid points ({DASH})")
                continue
            xs_all = []
            for c in curves:
                colour = spec.colours.get(c.gpu_label, "black")
                xs = [b for b, _ in c.points]
                means = [e.mean for _, e in c.points]
                xs_all += xs
                low = [e.mean - e.low if e.low is not None else 0.0 for _, e in c.points]
                high = [e.high - e.mean if e.high is not None else 0.0 for _, e in c.points]
                ax.errorbar(xs, means, yerr=[low, high], fmt="o", color=colour, markersize=4,
                            capsize=2, linewidth=1)
                if c.fit.ok:
                    grid = [2 ** (math.log2(min(xs)) + i * (math.log2(max(xs) / min(xs))) / 100)
                            for i in range(101)]
                    ax.plot(grid, c.fit.predict(grid), color=colour, linewidth=1.4,
                            label=f"{c.label}: {c.fit.label}", gid="fit")
                else:
                    ax.plot([], [], color=colour, linestyle="none", marker="o",
                            label=f"{c.label}: {c.fit.label}")
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(_plain_formatter())
            ax.set_xticks(sorted(set(xs_all)))
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=FIT_LEGEND_PT, frameon=False, loc="upper left",
                      bbox_to_anchor=(0.0, -0.2), borderaxespad=0.0)
            ax.set_title(f"{short_label(figure)} · {tokens_label(*pair)}", fontsize=9)
            ax.set_xlabel(X_AXIS_LABELS.get(data.x_axis, data.x_axis), fontsize=8)
            ax.set_ylabel(axis_label(figure), fontsize=8)
            ax.tick_params(labelsize=7)
    return fig


# ------------------------------------------------------------ repetitions


def draw_ci_paths(spec: Any) -> Any:
    """A CiPaths (farm/report/figures/repetitions.py), one panel: half-width against
    runs, a line per configuration, the target dashed, each line's last point marked
    by its verdict (filled: met)."""
    from matplotlib.ticker import MaxNLocator

    from farm.adaptive import VERDICT_WORDS  # farm.adaptive imports farm.report.stats

    data = spec.data
    ncols = 1
    fig, axes = _grid(1, 1, 6.4, 3.2, bottom=_legend_height(len(data.paths) + 1, ncols))
    ax = axes[0][0]
    handles = [ax.axhline(data.target_pct, color="black", linestyle="--", linewidth=1,
                          gid="target")]
    labels = [f"target ±{data.target_pct:g}%"]
    widths_all = [w for p in data.paths for _, w in p.widths if w is not None]
    for i, path in enumerate(data.paths):
        colour = PALETTE[i % len(PALETTE)]
        xs = [n for n, w in path.widths if w is not None]
        ys = [w for _, w in path.widths if w is not None]
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, color=colour, linewidth=1.2,
                          gid=f"path-{i}")
        if xs and path.verdict not in STILL_RUNNING:     # a line still growing has no end
            met = path.verdict == "met"
            ax.plot(xs[-1:], ys[-1:], marker="o" if met else "X", markersize=8,
                    color=colour, markerfacecolor=colour if met else "white",
                    linestyle="none", gid=f"end-{i}")
        handles.append(line)
        labels.append(f"{path.label}: {VERDICT_WORDS[path.verdict]}")
    if widths_all and _log_scale([*widths_all, data.target_pct]):
        ax.set_yscale("log")
    ax.set_xlim(0.5, data.max_runs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))    # max may be 1000
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("repetitions run (any status)", fontsize=8)
    ax.set_ylabel(f"95% CI half-width, % of mean\n{data.figure_words}", fontsize=8)
    ax.tick_params(labelsize=7)
    _legend(fig, handles, labels, ncols)
    return fig
