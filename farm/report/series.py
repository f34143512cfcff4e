"""Energy vs load: the series behind the "energy vs concurrency / request rate" figures.

One `Series` per configuration without its load (model, GPU and its power
limit / SM clock, engine and its arguments, scenario, token lengths, decoding),
one point per load value: the mean over the repetitions with its 95% confidence
interval (`stats.estimate`); a rate sweep's points say where its runs found their
knee and which stop rule ended them.
Pure data; `plots.py` draws it. The figure kinds "energy_load" and "power_load"
(farm/report/figures/) use it.

Where energy stops falling: energy per request falls as concurrency rises,
then stops falling (the LLM Efficiency Benchmark saw it near 100 simultaneous
requests). `find_turn` finds the first load after which no further step
saves `threshold` (10%) or more per doubling of the load, and names what the
curve does from there: a **plateau** when every later step changes the
energy by less than that (the curve flattens), a **minimum** when some later
step raises it by that much or more (the curve turns back up: the load where
it is lowest from there on is a minimum, not a plateau).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from farm.output import saturation_words
from farm.report.labels import Variants, short_label
from farm.report.points import RunPoint
from farm.report.selection import Selection, reason_left_out, select
from farm.report.stats import Estimate, estimate, group_by

PER_REQUEST = "energy_per_request_j"
PER_TOKEN = "energy_per_output_token_j"
PLATEAU_SAVING = 0.10
LOAD_KINDS = ("concurrency", "request_rate", "batch")


@dataclass(frozen=True)
class SeriesPoint:
    """One load value of a series: the estimate over its repetitions, and their run ids;
    for a rate sweep, how many of them found their knee here and the stop rules met here."""

    x: float
    estimate: Estimate
    run_ids: tuple[str, ...]
    knees: int = 0
    saturations: tuple[str, ...] = ()


def series_points(points: Iterable[RunPoint], x_of: Callable[[RunPoint], float],
                  figure: str) -> tuple[SeriesPoint, ...]:
    """One SeriesPoint per x value of `points` (each has `figure`), ascending: the mean
    and 95% CI over its repetitions, their run ids and the rate sweep's marks."""
    by_x = group_by(points, x_of)
    out = []
    for x in sorted(by_x):
        group = by_x[x]
        est = estimate(p.get(figure) for p in group)
        assert est is not None  # every point has the figure
        out.append(SeriesPoint(x, est, tuple(p.run_id for p in group),
                               knees=sum(1 for p in group if p.get("knee")),
                               saturations=tuple(sorted(p.get("saturation") for p in group
                                                        if p.get("saturation")))))
    return tuple(out)


@dataclass(frozen=True)
class Turn:
    """Where a curve stops falling: a plateau (it flattens from `at` on) or a minimum
    (it falls to `at`, then rises again)."""

    kind: str                    # "plateau" | "minimum"
    at: float
    next: float
    # per doubling of the load, on the step at → next: positive when energy fell
    saving_per_doubling: float
    threshold: float = PLATEAU_SAVING
    # minimum: the largest rise per doubling after `at` (a positive fraction)
    rise_per_doubling: float = 0.0

    @property
    def label(self) -> str:
        """The figure's label at `at`: "plateau ≥ 8" or "minimum at 16"."""
        return f"plateau ≥ {self.at:g}" if self.kind == "plateau" else f"minimum at {self.at:g}"

    def note(self, what: str = "energy per request", unit: str = "concurrency") -> str:
        """The turn in words, for a figure's caption."""
        if self.kind == "plateau":
            return (f"{what} levels off (plateau) from {unit} {self.at:g}: every further "
                    f"doubling changes it by < {self.threshold:.0%} ({self.at:g} → "
                    f"{self.next:g}: {-self.saving_per_doubling:+.1%} per doubling)")
        return (f"{what} falls to a minimum at {unit} {self.at:g}, then rises again (not a "
                f"plateau): by up to {self.rise_per_doubling:.1%} per doubling of the load")


@dataclass(frozen=True)
class Series:
    """One line of an "energy vs load" figure: one configuration, its load values ascending."""

    model: str
    load_kind: str
    figure: str
    label: str                   # GPU, plus what else sets it apart (Variants)
    gpu_label: str
    input_tokens: int | None
    output_tokens: int
    points: tuple[SeriesPoint, ...]
    turn: Turn | None = None     # where it stops falling (concurrency only)

    @property
    def xs(self) -> list[float]:
        """The load values."""
        return [p.x for p in self.points]

    @property
    def means(self) -> list[float]:
        """The figure's mean at each load value (the figure's unit)."""
        return [p.estimate.mean for p in self.points]

    @property
    def n_runs(self) -> int:
        """The runs behind the series (each load value's repetitions, once per run)."""
        return len({run_id for p in self.points for run_id in p.run_ids})

    def knee_label(self, point: SeriesPoint) -> str:
        """The figure's label at a knee: "knee", or "knee (1 of 2)" where only some of the
        series' runs found it there."""
        runs = self.n_runs
        return "knee" if point.knees == runs else f"knee ({point.knees} of {runs})"

    def rate_sweep_note(self) -> str | None:
        """Where a rate sweep's runs found their knee and which stop rule ended them, e.g.
        "knee at 4 req/s (2 of 2 runs); stopped at 8 req/s by throughput flat (2 runs)";
        None when no point is marked (not a rate sweep, or marks left out)."""
        runs = self.n_runs
        knees = [f"{p.x:g} req/s ({p.knees} of {runs} run{'s' * (runs != 1)})"
                 for p in self.points if p.knees]
        stops = [f"{p.x:g} req/s by {saturation_words(rule)} ({n} run{'s' * (n != 1)})"
                 for p in self.points for rule, n in Counter(p.saturations).items()]
        if not knees and not stops:
            return None
        parts = [f"rate sweep knee at {', '.join(knees)}" if knees else "rate sweep: no knee"]
        parts.append(f"stopped at {', '.join(stops)}" if stops
                     else "no plotted point met a stop rule")
        return "; ".join(parts)


def saving_per_doubling(x0: float, y0: float, x1: float, y1: float) -> float:
    """Fraction of y saved per doubling of x from (x0, y0) to (x1, y1), x1 > x0 > 0."""
    doublings = math.log2(x1 / x0)
    if y0 <= 0 or doublings <= 0:
        return 0.0
    return 1.0 - (y1 / y0) ** (1.0 / doublings) if y1 > 0 else 1.0


def find_turn(xy: Sequence[tuple[float, float]],
              threshold: float = PLATEAU_SAVING) -> Turn | None:
    """Where the curve stops falling: from the first x after which every step saves
    < threshold per doubling, a plateau if no later step rises by threshold or more,
    else the minimum (the lowest point from there on). None if it still falls that
    fast at the last step (or there are < 2 points)."""
    pts = sorted((x, y) for x, y in xy if x > 0)
    savings = [saving_per_doubling(*pts[i], *pts[i + 1]) for i in range(len(pts) - 1)]
    for i in range(len(savings)):
        if not all(s < threshold for s in savings[i:]):
            continue
        rise = max(0.0, -min(savings[i:]))
        if rise < threshold:
            return Turn("plateau", pts[i][0], pts[i + 1][0], savings[i], threshold)
        # It turns back up: the lowest point from i on (never the last one: a later
        # step rises by >= threshold).
        low = min(range(i, len(pts) - 1), key=lambda j: (pts[j][1], j))
        return Turn("minimum", pts[low][0], pts[low + 1][0], savings[low], threshold, rise)
    return None


def find_plateau(xy: Sequence[tuple[float, float]],
                 threshold: float = PLATEAU_SAVING) -> Turn | None:
    """The plateau of the curve: `find_turn` when the curve flattens, None when it
    still falls or has a minimum instead."""
    turn = find_turn(xy, threshold)
    return turn if turn is not None and turn.kind == "plateau" else None


def series_key(p: RunPoint) -> tuple:
    """A configuration without its load value: what one line of the figure joins."""
    return (p.model, p.load_kind, p.gpu_model, p.gpu_count, *p.tuning, p.engine,
            p.engine_args, p.scenario, p.input_tokens, p.output_tokens, p.decoding)


def energy_vs_load(points: Iterable[RunPoint], load_kind: str, figure: str = PER_REQUEST,
                   variants: Variants | None = None, plateau: bool = True) -> list[Series]:
    """One series per configuration of `load_kind`: load values ascending, each the mean
    (and 95% CI) of `figure` over the repetitions. Uses valid measured points only.
    `plateau`: look for the concurrency where the figure stops falling, a plateau or
    a minimum (energy figures; not for figures that rise with the load, such as power)."""
    usable = [p for p in points
              if p.load_kind == load_kind and reason_left_out(p, (figure,)) is None]
    variants = variants or Variants(usable)
    out = []
    for group in group_by(usable, series_key).values():
        first = group[0]
        spoints = series_points(group, lambda p: float(p.load_value), figure)
        found = (find_turn([(sp.x, sp.estimate.mean) for sp in spoints])
                 if plateau and load_kind == "concurrency" else None)
        out.append(Series(model=first.model, load_kind=load_kind, figure=figure,
                          label=variants.label(first), gpu_label=first.gpu_label,
                          input_tokens=first.input_tokens, output_tokens=first.output_tokens,
                          points=spoints, turn=found))
    out.sort(key=lambda s: (s.input_tokens or 0, s.output_tokens, s.gpu_label, s.label))
    return out


@dataclass(frozen=True)
class LoadFigure:
    """The data of one "energy vs load" figure: a model and a load kind; rows are the
    token-length pairs, columns the figures (J/request, J/output token)."""

    model: str
    load_kind: str               # the x axis: a load kind, or a tuning axis (tuning.py)
    figures: tuple[str, ...]
    series: dict[str, list[Series]]
    selection: Selection
    colour_lines: bool = False   # a colour per line, not per GPU (lines of one GPU)

    @property
    def token_pairs(self) -> list[tuple[int | None, int]]:
        """The (input, output) token lengths of the series: the figure's rows, ascending."""
        pairs = {(s.input_tokens, s.output_tokens) for ss in self.series.values() for s in ss}
        return sorted(pairs, key=lambda t: (t[0] or 0, t[1]))

    def split(self, max_rows: int) -> list[LoadFigure]:
        """The figure as parts of at most `max_rows` token-length pairs each (one
        selection: the note counts the whole figure's scope)."""
        pairs = self.token_pairs
        if len(pairs) <= max_rows:
            return [self]
        parts = []
        for start in range(0, len(pairs), max_rows):
            chunk = set(pairs[start:start + max_rows])
            parts.append(replace(self, series={
                f: [s for s in ss if (s.input_tokens, s.output_tokens) in chunk]
                for f, ss in self.series.items()}))
        return parts

    def turn_notes(self) -> list[str]:
        """One line per series of the first figure with a plateau or a minimum."""
        notes = []
        for s in self.series.get(self.figures[0], []):
            if s.turn is not None:
                notes.append(f"{s.label}, in {s.input_tokens} / out {s.output_tokens} tokens: "
                             + s.turn.note(short_label(s.figure)))
        return notes

    def rate_sweep_notes(self) -> list[str]:
        """One line per series of the first figure whose rate sweep marked a knee or a
        stop rule (Series.rate_sweep_note)."""
        return [f"{s.label}, in {s.input_tokens} / out {s.output_tokens} tokens: {note}"
                for s in self.series.get(self.figures[0], [])
                if (note := s.rate_sweep_note()) is not None]


def load_figures(points: Sequence[RunPoint], figures: tuple[str, ...] = (PER_REQUEST, PER_TOKEN),
                 simulated: bool | None = None, plateau: bool = True) -> list[LoadFigure]:
    """One LoadFigure per (model, load kind) where some configuration has ≥ 2 load values.

    A figure's scope is the model's points in the scenarios of that load kind,
    including their failed and invalid runs, which its selection counts as left out.
    `plateau`: as for `energy_vs_load`.
    """
    kinds_of_scenario = {p.scenario: p.load_kind for p in points if p.load_kind is not None}
    out = []
    for model in sorted({p.model for p in points}):
        for kind in LOAD_KINDS:
            scenarios = {s for s, k in kinds_of_scenario.items() if k == kind}
            scope = [p for p in points if p.model == model and p.scenario in scenarios]
            selection = select(scope, figures, simulated)
            variants = Variants(selection.points)
            series = {f: energy_vs_load(selection.points, kind, f, variants, plateau)
                      for f in figures}
            if not any(len(s.points) >= 2 for s in series[figures[0]]):
                continue
            out.append(LoadFigure(model, kind, figures, series, selection))
    return out
