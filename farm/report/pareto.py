"""Energy vs latency: every configuration of a model as one point (means over its
repetitions), across GPU models, and the Pareto front of those points.

Both axes are "lower is better". A point *dominates* another when it is no
worse on both axes and better on one; the front is the set of points no other
point dominates: for each front point, nothing is both faster and cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.report.labels import Variants, short_label
from farm.report.points import RunPoint
from farm.report.selection import Selection, select
from farm.report.series import PER_REQUEST, PER_TOKEN
from farm.report.stats import Estimate, estimate, group_by

LATENCIES = ("ttft_p90_ms", "tpot_p90_ms")
ENERGIES = (PER_REQUEST, PER_TOKEN)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether `a` is no worse than `b` on both axes and better on one (lower is better)."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def pareto_front(xy: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (minimising both), by ascending x.

    O(n log n): sweep by x then y, keep a point if its y beats every y before
    it (points equal to a front point are on the front too).
    """
    order = sorted(range(len(xy)), key=lambda i: (xy[i][0], xy[i][1]))
    front: list[int] = []
    best_y = float("inf")
    for i in order:
        x, y = xy[i]
        if y < best_y:
            front.append(i)
            best_y = y
        elif front and xy[front[-1]] == (x, y):
            front.append(i)
    return front


@dataclass(frozen=True)
class ConfigPoint:
    """One configuration (all repetitions) of a model: latency and energy means."""

    latency: Estimate
    energy: Estimate
    label: str
    gpu_label: str
    scenario: str
    scenario_kind: str
    load_label: str
    input_tokens: int | None
    output_tokens: int
    run_ids: tuple[str, ...]

    @property
    def xy(self) -> tuple[float, float]:
        """(latency mean, energy mean): the point's place in the plot."""
        return (self.latency.mean, self.energy.mean)


@dataclass(frozen=True)
class ParetoPanel:
    """One (energy, latency) pair: the configurations and their Pareto front."""

    latency: str
    energy: str
    points: list[ConfigPoint]
    front: list[int]             # indices into points, by ascending latency
    selection: Selection

    @property
    def front_points(self) -> list[ConfigPoint]:
        """The front's configurations, by ascending latency."""
        return [self.points[i] for i in self.front]


@dataclass(frozen=True)
class ParetoFigure:
    """The Pareto panels of one model and workload bin."""

    model: str
    panels: list[ParetoPanel]    # rows: energies, columns: latencies
    # "in 128 / out 64 tokens, greedy": a front never pools token bins, whose
    # energies per request or token are not the same quantity
    workload: str = ""

    def notes(self) -> list[str]:
        """What the panels used and left out: one note if all agree, else one per panel."""
        notes = {p.selection.note() for p in self.panels}
        if len(notes) == 1:
            return list(notes)
        return [f"{short_label(p.energy)} vs {short_label(p.latency)}: {p.selection.note()}"
                for p in self.panels]


def config_points(points: Sequence[RunPoint], latency: str, energy: str,
                  variants: Variants) -> list[ConfigPoint]:
    """Selected points averaged over repetitions, one ConfigPoint per configuration."""
    out = []
    for group in group_by(points, lambda p: p.config_key).values():
        first = group[0]
        lat = estimate(p.get(latency) for p in group)
        en = estimate(p.get(energy) for p in group)
        if lat is None or en is None:
            continue
        out.append(ConfigPoint(lat, en, variants.label(first, scenario=False), first.gpu_label,
                               first.scenario, first.scenario_kind, first.load_label,
                               first.input_tokens, first.output_tokens,
                               tuple(p.run_id for p in group)))
    return out


def pareto_panel(scope: Sequence[RunPoint], latency: str, energy: str,
                 variants: Variants | None = None, simulated: bool | None = None) -> ParetoPanel:
    """The configurations of `scope` with both figures, and their Pareto front."""
    selection = select(scope, (energy, latency), simulated)
    pts = config_points(selection.points, latency, energy, variants or Variants(scope))
    return ParetoPanel(latency, energy, pts, pareto_front([p.xy for p in pts]), selection)


def pareto_figures(points: Sequence[RunPoint], energies: Sequence[str] = ENERGIES,
                   latencies: Sequence[str] = LATENCIES,
                   simulated: bool | None = None) -> list[ParetoFigure]:
    """Per model and workload bin (input and output tokens, decoding): one panel per
    (energy, latency) pair over the configurations of that bin. A 512-token request
    costs more than a 128-token one on any GPU: one front over both would only say so."""
    variants = Variants(points)
    out = []
    bins = sorted({(p.model, p.input_tokens or 0, p.output_tokens, p.decoding) for p in points})
    for model, input_tokens, output_tokens, decoding in bins:
        scope = [p for p in points if (p.model, p.input_tokens or 0, p.output_tokens,
                                       p.decoding) == (model, input_tokens, output_tokens,
                                                       decoding)]
        panels = [pareto_panel(scope, lat, en, variants, simulated)
                  for en in energies for lat in latencies]
        if any(panel.points for panel in panels):
            first_in = scope[0].input_tokens
            workload = (f"in {first_in if first_in is not None else 'dataset'} / out "
                        f"{output_tokens} tokens, {decoding}")
            out.append(ParetoFigure(model, panels, workload))
    return out
