"""`farmctl recommend`'s output: a `Recommendation` as JSON, or as one table per
workload (`farm.tables`) with its caption — the best per GPU, how certain the
ranking is, what was excluded — and the notes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from farm.output import setting_text
from farm.report.recommendation import (
    BinRanking,
    Ranked,
    Recommendation,
    short_number,
    tuning_suffix,
)
from farm.report.stats import CI_METHOD, MIN_RANK_N
from farm_contract.records import result_figures
from farm_contract.runspec import TUNING_FIELDS


def format_recommendation(rec: Recommendation, fmt: str = "table", *,
                          columns: str | None = None,
                          width: int | str | None = "auto") -> str:
    """The recommendation as text: JSON, or a table per workload (`columns`:
    comma-separated names, default all; fitted to `width` — "auto": the
    terminal's when stdout is one, None: as wide as it needs), its caption and
    the notes."""
    if fmt == "json":
        return json.dumps(rec.to_json(), indent=2) + "\n"
    from farm.output import SIM_BANNER
    from farm.tables import choose_columns, render_table, terminal_width

    rated = rec.rate_rps is not None
    catalogue = recommendation_columns(rated)
    # The tuning columns only where a configuration set one: "power limit: —" says nothing.
    tuned = {name for w in rec.workloads for r in w.ranking for name in _TUNING_COLUMNS
             if getattr(r.head, name) is not None}
    defaults = [c.name for c in catalogue if (rated or c.name not in _RATED_COLUMNS)
                and (c.name not in _TUNING_COLUMNS or c.name in tuned)]
    chosen = choose_columns(catalogue, defaults, columns)
    fitted = terminal_width() if width == "auto" else width
    lines = [f"{rec.sweep}: {rec.model}, TTFT p90 ≤ {short_number(rec.limits.ttft_ms)} ms, "
             f"TPOT p90 ≤ {short_number(rec.limits.tpot_ms)} ms ({rec.limits.source})"
             + (f", arrival rate {rec.rate_rps:g} req/s" if rated else "")]
    body = []
    for w in rec.workloads:
        if w.ranking:
            body.append(render_table(
                chosen, w.ranking, fitted,
                title=f"{w.label}: {len(w.ranking)} configuration(s) meet the limit",
                hint="--columns or a pipe shows them"))
        else:
            body.append(f"{w.label}: no configuration meets the limit\n")
        body.append(_workload_caption(w, rec))
    notes = "".join(f"• {n}\n" for n in rec.notes)
    banner = f"{SIM_BANNER}\n" if rec.simulated else ""
    return banner + "\n".join(lines) + "\n" + "".join(body) + notes + banner


# Shown only with an arrival rate (--rate).
_RATED_COLUMNS = ("replicas", "busy_pct", "load_power_w", "idle_power_w")
# Shown only where a configuration set them.
_TUNING_COLUMNS = TUNING_FIELDS


def recommendation_columns(rated: bool = False) -> list[Any]:
    """A ranking table's columns (farm.tables.Column), in display order; rank:
    lower is kept longer on a narrow terminal (`rated`: with an arrival rate).
    The configuration (GPU, engine, arguments, scenario, load, repetitions)
    goes to the line above the table where it is the same in every row; the
    figures stay."""
    from farm.output import fmt_value as fmt
    from farm.tables import Column

    def gpu(r: Ranked) -> str:
        p = r.head
        if not p.simulated:
            return p.gpu_label
        return (f"sim:{p.gpu_model}" if p.gpu_count == 1
                else f"{p.gpu_count}× sim:{p.gpu_model}")

    def replicas(r: Ranked) -> str:
        reps = sorted(set(r.replicas))
        if not reps:
            return "—"
        return "–".join(map(str, [reps[0], reps[-1]] if len(reps) > 1 else reps))

    setup = [
        Column("gpu", "GPU", gpu, False, 2),
        Column("power_limit_w", "power limit",
               lambda r: setting_text(r.head.power_limit_w, "W"), False, 2),
        Column("sm_clock_mhz", "SM clock",
               lambda r: setting_text(r.head.sm_clock_mhz, "MHz"), False, 2),
        Column("engine", "engine",
               lambda r: f"{r.head.engine} {r.head.engine_version or ''}".strip(), False, 13),
        Column("args", "args", lambda r: r.head.args_label or "—", False, 14),
        Column("scenario", "scenario", lambda r: r.head.scenario, False, 5),
        Column("load", "load", lambda r: r.head.load_label, False, 4),
        Column("reps", "reps", lambda r: f"{len(r.points)}/{r.repetitions_expected}", True,
               15, "repetitions", identifies=False),
    ]
    # A record's figure prints under the header its field declares; a figure of the
    # ranking's own takes its unit from the record figure it is made of.
    head = {name: c.header for name, c in result_figures().items()}
    figures = [
        Column("ttft_p90_ms", head["ttft_p90_ms"], lambda r: fmt(r.ttft_p90_ms), True, 8),
        Column("tpot_p90_ms", head["tpot_p90_ms"], lambda r: fmt(r.tpot_p90_ms), True, 9),
        Column("capacity_rps", f"cap. {result_figures()['request_throughput_rps'].unit}",
               lambda r: fmt(r.capacity_rps), True, 16),
        Column("slo_attainment", head["slo_attainment"], lambda r: "—" if r.slo_attainment is None
               else _percent(r.slo_attainment), True, 10),
        Column("replicas", "replicas", replicas, True, 17),
        Column("busy_pct", "busy %", lambda r: "—" if r.utilisation is None
               else f"{100 * r.utilisation:.0f}", True, 18),
        Column("load_power_w", f"load power {result_figures()['avg_power_w'].unit}",
               lambda r: fmt(r.load_power_w), True, 19),
        Column("idle_power_w", head["idle_power_w"], lambda r: fmt(r.idle_power_w), True, 20),
        Column("energy_per_request_j", head["energy_per_request_j"],
               lambda r: fmt(r.energy_per_request_j), True, 11),
        Column("energy_per_good_request_j", "J/good req",
               lambda r: fmt(r.energy_per_good_request_j), True, 3),
        Column("ci95", "95% CI", lambda r: "—" if r.ci_low is None
               else f"{fmt(r.ci_low)}–{fmt(r.ci_high)}", True, 7),
        Column("vs_best", "vs #1", lambda r: "best" if r.rank == 1
               else f"+{r.vs_best_pct:.0f}%", True, 6),
        Column("p_best", "P(best)", lambda r: "—" if r.p_best is None
               else f"{r.p_best:.2f}", True, 12),
    ]
    if rated:
        # Asked for an arrival rate: the replicas and power behind the ranking come
        # before the latencies it already meets.
        moved = {"replicas": 8, "busy_pct": 9, "load_power_w": 10, "idle_power_w": 11,
                 "ttft_p90_ms": 16, "tpot_p90_ms": 17, "slo_attainment": 18,
                 "energy_per_request_j": 19}
        figures = [replace(c, rank=moved.get(c.name, c.rank)) for c in figures]
    rank = Column("rank", "#", lambda r: str(r.rank), True, 1, hoist=False)
    # Free text; without any it leaves the table (an empty value says nothing above it).
    notes = Column("notes", "notes", lambda r: "; ".join(r.notes), False, 21, wrap=True)
    return [rank, *setup, *(replace(c, hoist=False) for c in figures), notes]


def _overlap(a: Ranked, b: Ranked) -> bool:
    if None in (a.ci_low, a.ci_high, b.ci_low, b.ci_high):
        return False
    return a.ci_high >= b.ci_low and b.ci_high >= a.ci_low  # type: ignore[operator]


def _percent(fraction: float) -> str:
    text = f"{100.0 * fraction:.1f}"
    return "99.9" if text == "100.0" and fraction < 1 else text


def _workload_caption(w: BinRanking, rec: Recommendation) -> str:
    lines = []
    if w.ranking:
        best = w.best_per_gpu()
        if len(best) > 1:
            lines.append("best per GPU: " + "; ".join(
                f"{r.head.gpu_label}{tuning_suffix(r.head)} #{r.rank} "
                f"{short_number(r.energy_per_good_request_j)} J"
                + ("" if r.rank == 1 else f" (+{r.vs_best_pct:.0f}%)") for r in best))
        if w.ranked_by_probability:
            top = w.ranking[0]
            lines.append(f"certainty: #1 is best in {100 * (top.p_best or 0):.0f}% of "
                         f"{rec.draws:,} bootstrap resamples of the repetitions (seed "
                         f"{rec.seed}); {CI_METHOD}")
        elif w.uncertainty:
            fewest = min(len(r.values) for r in w.ranking)
            lines.append(f"certainty: too few repetitions to rank (n = {fewest}; a "
                         f"probability of being best needs >= {MIN_RANK_N} per "
                         "configuration): #1 has the lowest mean, not a proven lead; "
                         f"{CI_METHOD}")
        else:
            lines.append("certainty: one repetition per configuration — the ranking has no "
                         "uncertainty estimate")
        if len(w.ranking) > 1 and _overlap(w.ranking[0], w.ranking[1]):
            lines.append("caution: the 95% CIs of #1 and #2 overlap — more "
                         "repetitions would tell them apart")
    elif w.closest is not None:
        c = w.closest
        lines.append(f"nothing meets the limit; closest: {c.label} at TTFT p90 "
                     f"{short_number(c.ttft_p90_ms)} ms, TPOT p90 {short_number(c.tpot_p90_ms)} ms")
    else:
        lines.append("nothing meets the limit and no usable configuration has latency figures")
    counts = w.excluded_counts()
    parts = [f"{reason}: {n}" for reason, n in counts.items()]
    parts += w.unmeasured.phrases()
    lines.append("excluded: " + ("; ".join(parts) if parts else "none"))
    return "\n".join(lines) + "\n"
