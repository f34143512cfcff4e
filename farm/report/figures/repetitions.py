"""Repetitions and confidence: per configuration point, the n its J/output token
rests on and the 95% CI half-width it reached (the interval adaptive repetitions,
farm/adaptive.py, stop on). Notes only, no figure."""

from __future__ import annotations

import statistics

from farm.report.figures import FigureInputs, Section, figure
from farm.report.selection import select
from farm.report.stats import estimate, group_by, half_width_pct

SHOWN = 10          # widest intervals listed


def _no_draw(spec):  # pragma: no cover - this kind plans no figure
    raise RuntimeError("the repetitions section has no figure")


@figure("repetitions", heading="Repetitions and confidence", order=90, draw=_no_draw, intro=(
    "How many usable repetitions (succeeded and valid) each configuration point's J per "
    "output token rests on, and the 95% CI half-width (Student's t) it reached, as a "
    "percentage of the mean. A sweep with adaptive repetitions (repetitions = { min, "
    "max, ci_half_width_pct }) ran each configuration until that width was within its "
    "target or max was reached; `farmctl results SWEEP` lists each verdict."))
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
    return Section(notes=notes)
