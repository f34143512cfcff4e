"""Energy vs the GPU tuning: the data of the "energy vs power limit / SM clock" figure.

A sweep with `[hardware] power_limit_w = [...]` or `sm_clock_mhz = [...]` runs
every configuration at each setting. Per model and tuning axis the sweep varies,
one `Series` (series.py) per configuration without that axis — its load
included, so one line per batch size or load —, one point per requested setting:
the mean (and 95% CI) over the repetitions of J/output token and of the GPUs'
mean power. `plots.draw_load` draws it, the requested setting on the x axis.
Pure data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from farm.report.labels import Variants
from farm.report.points import RunPoint
from farm.report.selection import select
from farm.report.series import LoadFigure, Series, series_points
from farm.report.stats import group_by

# tuning axis → (RunPoint attribute of what was applied, unit, Variants dimension)
AXES = {"power_limit_w": ("applied_power_limit_w", "W", "power_limit"),
        "sm_clock_mhz": ("applied_sm_clock_mhz", "MHz", "sm_clock")}


def line_key(p: RunPoint, axis: str) -> tuple:
    """The configuration without the tuning axis: what one line joins."""
    return replace(p, **{axis: None}).config_key


def varied_axes(points: Sequence[RunPoint]) -> list[str]:
    """The tuning axes that take two or more settings among the points."""
    return [axis for axis in AXES
            if len({getattr(p, axis) for p in points if getattr(p, axis) is not None}) > 1]


def setting_x(p: RunPoint, axis: str) -> float | None:
    """Where a run sits on a tuning axis: its setting, or for "default" (the GPU's own)
    what was applied (the default power limit read back); None where that is not
    known (an unlocked clock has no one value)."""
    value = getattr(p, axis)
    if isinstance(value, str):
        applied = p.get(AXES[axis][0])
        return float(applied) if applied is not None else None
    return None if value is None else float(value)


def tuning_series(points: Sequence[RunPoint], axis: str, figure: str,
                  variants: Variants) -> list[Series]:
    """One series per configuration (load included) with a requested `axis` setting:
    settings ascending, each the mean and 95% CI of `figure` over its repetitions.
    `points`: the plottable ones (selection.select)."""
    tuned = [p for p in points if setting_x(p, axis) is not None and p.get(figure) is not None]
    # The load says its scenario's kind ("c=8", "batch 16"); the scenario's name only
    # where two scenarios share a kind of load.
    named = len({p.scenario for p in tuned}) > len({p.load_kind for p in tuned})
    out = []
    for group in group_by(tuned, lambda p: line_key(p, axis)).values():
        first = group[0]
        label = f"{variants.label(first, scenario=named)} · {first.load_label}"
        out.append(Series(model=first.model, load_kind=axis, figure=figure, label=label,
                          gpu_label=first.gpu_label, input_tokens=first.input_tokens,
                          output_tokens=first.output_tokens,
                          points=series_points(group, lambda p: setting_x(p, axis) or 0.0,
                                               figure)))
    out.sort(key=lambda s: (s.input_tokens or 0, s.output_tokens, s.gpu_label, s.label))
    return out


def tuning_figures(points: Sequence[RunPoint], figures: tuple[str, ...],
                   simulated: bool | None = None) -> list[LoadFigure]:
    """One figure per model and tuning axis the model's points vary, where some line has
    two or more settings; its scope is the model's points (failed and invalid ones
    counted as left out)."""
    out = []
    for model in sorted({p.model for p in points}):
        scope = [p for p in points if p.model == model]
        selection = select(scope, figures, simulated)
        for axis in varied_axes(scope):
            variants = Variants(selection.points, without=(AXES[axis][2],))
            series = {f: tuning_series(selection.points, axis, f, variants) for f in figures}
            if any(len(s.points) >= 2 for s in series[figures[0]]):
                out.append(LoadFigure(model, axis, figures, series, selection,
                                      colour_lines=True))
    return out


def applied_notes(points: Sequence[RunPoint], axis: str) -> list[str]:
    """Per requested setting, what the runs' GPUs read back (lowest GPU of each run) and
    how many refused it, e.g. "300 W requested: read back 299–300 W (4 runs)"."""
    applied, unit, _ = AXES[axis]
    runs = {p.run_id: p for p in points if getattr(p, axis) is not None}
    notes = []
    # "default" (the GPU's own, asked for) after the numbers: a str never compares with them
    by_setting = group_by(runs.values(), lambda p: getattr(p, axis))
    for setting, group in sorted(by_setting.items(), key=lambda kv: (
            isinstance(kv[0], str), 0.0 if isinstance(kv[0], str) else kv[0])):
        read = sorted(v for p in group if (v := p.get(applied)) is not None)
        refused = sum(1 for p in group if p.get("tuning_refused"))
        parts = []
        if read:
            span = f"{read[0]:g}" if read[0] == read[-1] else f"{read[0]:g}–{read[-1]:g}"
            parts.append(f"read back {span} {unit} ({len(read)} run{'s' * (len(read) != 1)})")
        if refused:
            parts.append(f"refused on {refused} run{'s' * (refused != 1)}")
        if len(read) + refused < len(group):
            parts.append(f"{len(group) - len(read) - refused} without a read-back")
        asked = "the default" if isinstance(setting, str) else f"{setting:g} {unit}"
        notes.append(f"{asked} requested: " + ", ".join(parts))
    return notes
