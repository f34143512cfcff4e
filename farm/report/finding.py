"""The report's key finding: one sentence, first on the page, with its number and CI.

The lowest mean energy per output token among the configurations with usable
(valid, measured) repetitions, with its 95% CI by the farm's one method
(`farm.report.stats`) and, where there is another GPU, how far the best of the
others is. One sentence a reader can quote: what was best, by how much, how sure.
"""

from __future__ import annotations

from collections.abc import Sequence

from farm.output import fmt_value
from farm.report.points import RunPoint
from farm.report.stats import Estimate, ci_text, estimate, group_by

GROSS = "energy_per_output_token_j"
NET = "energy_per_output_token_net_j"


def _label(p: RunPoint) -> str:
    gpu = f"sim:{p.gpu_label}" if p.simulated else p.gpu_label
    tuning = f" ({p.tuning_label})" if p.tuning_label else ""
    args = f" ({p.args_label})" if p.engine_args else ""
    bins = f"in {p.input_tokens if p.input_tokens is not None else 'dataset'} / out " \
           f"{p.output_tokens} tokens"
    return f"{gpu}{tuning} {p.engine}{args} {p.scenario} {p.load_label}, {bins}"


def key_finding(points: Sequence[RunPoint], net: bool = False) -> str | None:
    """The sentence; None when no usable point has the figure."""
    figure = NET if net else GROSS
    usable = [p for p in points if p.usable and p.get(figure) is not None]
    if not usable:
        return None
    best: list[tuple[Estimate, RunPoint]] = []
    for group in group_by(usable, lambda p: p.config_key).values():
        est = estimate(p.get(figure) for p in group)
        if est is not None:
            best.append((est, group[0]))
    best.sort(key=lambda e: e[0].mean)
    est, head = best[0]
    kind = "net-of-idle energy" if net else "energy"
    sentence = (f"Lowest {kind} per output token: {_label(head)} at "
                f"{ci_text(est, fmt_value, 'J/out-tok')}")
    others = [(e, p) for e, p in best if (p.gpu_model, p.gpu_count) != (head.gpu_model,
                                                                          head.gpu_count)]
    if others and est.mean > 0:
        e2, p2 = others[0]
        gpu = f"sim:{p2.gpu_label}" if p2.simulated else p2.gpu_label
        sentence += (f"; the best on {gpu} takes {100 * (e2.mean / est.mean - 1):.0f}% more "
                     f"({fmt_value(e2.mean)} J/out-tok, n = {e2.n})")
    return sentence + "."
