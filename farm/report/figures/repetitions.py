"""Repetitions and confidence: per configuration point, the n its J/output token
rests on and the 95% CI half-width it reached (the interval adaptive repetitions,
farm/adaptive.py, stop on). For an adaptive sweep, one figure: the half-width each
configuration had after each of its repetitions, against the target, so a reader
sees where the repetitions stopped and why."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.plots import draw_ci_paths
from farm.report.selection import select
from farm.report.stats import estimate, group_by, half_width_pct
from farm.spec import CI_FIGURES

SHOWN = 10          # widest intervals listed; configurations drawn


@dataclass(frozen=True)
class CiPath:
    """One configuration's CI half-width (% of the mean; None: no interval yet) after
    each of its repetitions, and the verdict it ended on."""

    label: str
    widths: tuple[tuple[int, float | None], ...]     # (runs so far, half-width %)
    verdict: str                                     # farm.adaptive.VERDICTS


@dataclass(frozen=True)
class CiPaths:
    """The figure's data: the paths, and the policy they were judged by."""

    paths: tuple[CiPath, ...]
    target_pct: float
    max_runs: int
    figure_words: str
    left_out: int                                     # configurations not drawn


@figure("repetitions", heading="Repetitions and confidence", order=90, draw=draw_ci_paths,
        needs=("points", "adaptive"), intro=(
    "How many usable repetitions (succeeded and valid) each configuration point's J per "
    "output token rests on, and the 95% CI half-width (Student's t) it reached, as a "
    "percentage of the mean. A sweep with adaptive repetitions (repetitions = { min, "
    "max, ci_half_width_pct }) ran each configuration until that width was within its "
    "target or max was reached; its verdicts are listed here and by `farmctl results "
    "SWEEP`."))
def repetitions(inputs: FigureInputs) -> Section:
    """The spread of n and of CI half-widths, and the widest intervals."""
    figure_name = inputs.energies[1]
    chosen = select(inputs.points, (figure_name,), inputs.simulated).points
    rows = []
    for group in group_by(chosen, lambda p: p.config_key).values():
        est = estimate(p.get(figure_name) for p in group)
        rows.append((half_width_pct(est), est.n, group[0]))
    if not rows:
        return Section(notes=["No valid measured point: nothing to count."])
    ns = sorted(n for _, n, _ in rows)
    widths = sorted(w for w, _, _ in rows if w is not None)
    notes = [f"{len(rows)} configuration point(s); usable repetitions n = {ns[0]}–{ns[-1]} "
             f"(median {statistics.median(ns):g}); "
             f"{sum(n < 2 for n in ns)} with n < 2 have no interval."]
    if widths:
        notes.append(f"95% CI half-width of {figure_name}: median ±{statistics.median(widths):.2f}%"
                     f", widest ±{widths[-1]:.2f}% of the mean.")
    widest = sorted((r for r in rows if r[0] is not None), key=lambda r: -r[0])[:SHOWN]
    for w, n, p in widest:
        tuning = f" ({p.tuning_label})" if p.tuning_label else ""
        notes.append(f"±{w:.2f}% (n = {n}): {p.model} · {p.gpu_label}{tuning} · {p.engine}"
                     f"{' ' + p.args_label if p.args_label else ''} · {p.scenario} "
                     f"{p.load_label} · in {p.input_tokens}/out {p.output_tokens}")
    return Section(_ci_paths_figure(inputs), notes + _adaptive_notes(inputs))


def _ci_paths_figure(inputs: FigureInputs) -> list[Planned]:
    """The half-width after each repetition, for an adaptive sweep (none otherwise)."""
    configs = inputs.reads.adaptive_summary(inputs.sweep) if inputs.reads is not None else []
    paths = [CiPath(_short_label(c.run), tuple((d.runs, d.worst_half_width_pct)
                                                for d in c.in_turn),
                    c.decision.verdict)
             for c in configs]
    # a configuration without an interval yet (under two usable runs) has no line
    paths = [p for p in paths if any(w is not None for _, w in p.widths)]
    if not paths:
        return []
    d0 = configs[0].decision
    data = CiPaths(tuple(paths[:SHOWN]), d0.target_pct, d0.max_runs, d0.figure_words,
                   max(0, len(paths) - SHOWN))
    notes = [f"The 95% CI half-width of {d0.figure_words} (at the widest load point) after "
             "each repetition, from the stored runs in repetition order: the interval the "
             "recorder decided on after each result (the first min runs were queued at "
             "once). A line starts at the second usable run (one has no interval); its "
             "last point is marked where the repetitions stopped (filled: target met; a "
             "cross: stopped without meeting it) and unmarked while more are due."]
    if data.left_out:
        notes.append(f"{data.left_out} more configuration(s) not drawn (listed below).")
    return [Planned(f"repetitions-ci-{inputs.sweep}", f"{inputs.sweep}: CI half-width of "
                    f"{d0.figure_words} as repetitions accrued", data, notes)]


def _short_label(run: Any) -> str:
    """What tells configurations of one sweep apart, most of the time: the GPU and
    its tuning, the engine's arguments, the scenario and the tokens."""
    from farm import adaptive  # farm.adaptive imports farm.report.stats

    return adaptive.configuration_label(run).split(" · ", 1)[-1]


def _adaptive_notes(inputs: FigureInputs) -> list[str]:
    """What the sweep's adaptive repetitions decided, per configuration, and whether
    the interval they stopped on is the one this report shows."""
    configs = inputs.reads.adaptive_summary(inputs.sweep) if inputs.reads is not None else []
    if not configs:
        return []
    from farm import adaptive  # farm.adaptive imports farm.report.stats

    d0 = configs[0].decision
    bounded = d0.figure_words
    counts = Counter(adaptive.VERDICT_WORDS[c.decision.verdict] for c in configs)
    notes = [f"Adaptive repetitions: until the 95% CI half-width of {bounded} was ≤ "
             f"{d0.target_pct:g}% of the mean at every load point, at most {d0.max_runs} "
             f"runs — " + ", ".join(f"{n} {words}" for words, n in counts.items()) + "."]
    if d0.figure != inputs.energies[1]:
        other = "--net" if d0.figure == CI_FIGURES["net"] else "without --net"
        notes.append(f"The target was on {bounded}; the intervals above are of "
                     f"{inputs.energies[1]}, not the ones the sweep stopped on (the report "
                     f"{other} shows those).")
    for c in configs[:SHOWN]:
        width = c.decision.worst_half_width_pct
        ci = "no interval" if width is None else f"±{width:.2f}%"
        notes.append(f"{ci} (n = {c.decision.n}, {c.decision.runs} run(s)), "
                     f"{adaptive.VERDICT_WORDS[c.decision.verdict]}: "
                     f"{adaptive.configuration_label(c.run)}")
    return notes
