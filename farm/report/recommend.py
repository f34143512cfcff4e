"""Which GPU and configuration serve a model within a latency limit for the
least energy per good request (`farmctl recommend`): the GPU-choice question of
Watt Counts, answered from one sweep's measurements.

A *configuration* is one configuration point of a server scenario: GPU model ×
count × power limit × SM clock (the GPU tuning the runs asked for, where the
sweep sets one) × engine (kind, version, arguments) × scenario × load point, for one
workload (input/output token bin and decoding). It **meets the limit** when
the mean over its usable repetitions of its load point's p90 TTFT and p90 TPOT
are within the limits. Configurations that meet it are ranked by **energy per
good request**: J/request ÷ SLO attainment, at the load point itself or, with
an arrival rate R, idle-amortised at R (`amortised_energy_per_request`). How
certain the ranking is: a 95% CI per configuration by the farm's one method
(Student's t, `farm.report.stats`), and P(best) from a bootstrap over the
repetitions only where every configuration has `MIN_RANK_N` of them; below that
the output says n is too small to rank.

docs/analysis.md states the model and its assumptions.

This module ranks. The answer's data classes are `farm.report.recommendation`'s,
the amortisation model `farm.report.amortise`'s, the attainment recount
`farm.report.attainment`'s, the bootstrap `farm.report.stats`' and the tables
`farm.report.recommend_text`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from farm.report.amortise import amortised_energy_per_request
from farm.report.attainment import Recount
from farm.report.points import RunPoint
from farm.report.recommendation import (
    EXCLUDED_BATCH,
    EXCLUDED_INVALID,
    EXCLUDED_LATENCY,
    EXCLUDED_NO_CAPACITY,
    EXCLUDED_NO_FIGURES,
    EXCLUDED_NO_GOOD,
    EXCLUDED_NO_IDLE,
    EXCLUDED_SIM_LABEL,
    LATENCY_BASIS,
    BinRanking,
    Excluded,
    Limits,
    Ranked,
    Recommendation,
    RecommendError,
    config_label,
)
from farm.report.stats import bootstrap, estimate, group_by, rankable
from farm.report.unmeasured import Unmeasured
from farm_contract.rules import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS

DEFAULT_DRAWS = 2000
DEFAULT_SEED = 0


def limits_for(points: Sequence[RunPoint], ttft_ms: float | None,
               tpot_ms: float | None) -> Limits:
    """The limits asked for; where one is not given, the sweep's SLO (the
    strictest of its server scenarios'), else MLPerf's 2000 ms / 200 ms."""
    sources = []
    resolved = []
    for given, figure, default, name in (
            (ttft_ms, "slo_ttft_ms", DEFAULT_SLO_TTFT_MS, "TTFT"),
            (tpot_ms, "slo_tpot_ms", DEFAULT_SLO_TPOT_MS, "TPOT")):
        if given is not None:
            if given <= 0:
                raise RecommendError(f"the {name} limit must be > 0 ms, got {given:g}")
            resolved.append(float(given))
            sources.append(f"{name} given")
            continue
        stored = {p.get(figure) for p in points if p.get(figure) is not None}
        if stored:
            resolved.append(min(stored))
            sources.append(f"{name} the sweep's SLO"
                           + (" (strictest of its scenarios)" if len(stored) > 1 else ""))
        else:
            resolved.append(default)
            sources.append(f"{name} MLPerf's default (the sweep has no SLO)")
    if sources[0][5:] == sources[1][5:]:
        return Limits(resolved[0], resolved[1], f"both {sources[0][5:]}")
    return Limits(resolved[0], resolved[1], "; ".join(sources))


def _mean(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _same(stored: float | None, limit: float) -> bool:
    return stored is not None and math.isclose(stored, limit, rel_tol=1e-9)


def _run_key(p: RunPoint) -> tuple:
    """A run's configuration without its load point and repetition."""
    return (p.model, p.backend, p.gpu_model, p.gpu_count, *p.tuning, p.engine,
            p.engine_args, p.scenario, p.input_tokens, p.output_tokens, p.decoding)


def _rank_workload(points: list[RunPoint], limits: Limits, rate: float | None,
                   simulated: bool, attainment: Recount | None,
                   draws: int, seed: int) -> BinRanking:
    head = points[0]
    excluded: list[Excluded] = []
    # Repetitions a configuration should have: its run's repetitions, failed ones included.
    expected = {key: len({p.repetition for p in group})
                for key, group in group_by(points, _run_key).items()}
    unmeasured = Unmeasured.of(points)
    candidates: list[Ranked] = []
    latency_misses: list[Excluded] = []
    measured = [p for p in points if p.measured]
    for _, group in group_by(measured, lambda p: p.config_key).items():
        label = config_label(group[0])
        if group[0].scenario_kind != "server":
            excluded.append(Excluded(label, EXCLUDED_BATCH))
            continue
        if all(p.simulated != simulated for p in group):
            excluded.append(Excluded(label, EXCLUDED_SIM_LABEL))
            continue
        usable = sorted((p for p in group if p.usable and p.simulated == simulated),
                        key=lambda p: p.repetition)
        if not usable:
            excluded.append(Excluded(label, EXCLUDED_INVALID))
            continue
        ranked = _candidate(usable, limits, rate, attainment)
        if isinstance(ranked, Excluded):
            excluded.append(ranked)
            if ranked.reason == EXCLUDED_LATENCY:
                latency_misses.append(ranked)
            continue
        ranked.repetitions_expected = expected[_run_key(usable[0])]
        dropped = ranked.repetitions_expected - len(usable)
        if dropped:
            ranked.notes.append(f"{dropped} of {ranked.repetitions_expected} repetitions "
                                "left out (failed or invalid)")
        candidates.append(ranked)

    candidates.sort(key=lambda r: (r.energy_per_good_request_j, r.label))
    uncertainty = any(len(r.values) > 1 for r in candidates)
    # A probability of being best only where every configuration has enough repetitions.
    by_probability = rankable(len(r.values) for r in candidates)
    if by_probability:
        for r, p in zip(candidates, bootstrap([r.values for r in candidates], draws, seed),
                        strict=True):
            r.p_best = p
    best = candidates[0].energy_per_good_request_j if candidates else None
    for i, r in enumerate(candidates, start=1):
        r.rank = i
        est = estimate(r.values)
        if est is not None:
            r.ci_low, r.ci_high = est.low, est.high
        if best:
            r.vs_best_pct = 100.0 * (r.energy_per_good_request_j / best - 1.0)
    closest = None
    if not candidates and latency_misses:
        closest = min(latency_misses, key=lambda e: max(e.ttft_p90_ms / limits.ttft_ms,
                                                        e.tpot_p90_ms / limits.tpot_ms))
    return BinRanking(head.input_tokens, head.output_tokens, head.decoding, candidates,
                    excluded, unmeasured.failed, closest, uncertainty, unmeasured,
                    by_probability)


def _candidate(usable: list[RunPoint], limits: Limits, rate: float | None,
               attainment: Recount | None) -> Ranked | Excluded:
    """The ranked figures of a configuration from its usable repetitions, or why
    it is not ranked."""
    label = config_label(usable[0])
    ttft = _mean([p.get("ttft_p90_ms") for p in usable])
    tpot = _mean([p.get("tpot_p90_ms") for p in usable])
    if ttft is None or tpot is None \
            or any(p.get("energy_per_request_j") is None for p in usable):
        return Excluded(label, EXCLUDED_NO_FIGURES, ttft, tpot)
    if ttft > limits.ttft_ms or tpot > limits.tpot_ms:
        return Excluded(label, EXCLUDED_LATENCY, ttft, tpot)
    notes: list[str] = []
    over = [p.repetition for p in usable
            if (p.get("ttft_p90_ms") or 0) > limits.ttft_ms
            or (p.get("tpot_p90_ms") or 0) > limits.tpot_ms]
    if over:
        notes.append(f"rep {', '.join(map(str, over))} alone over the limit")

    # SLO attainment of each repetition under the limits asked for.
    attainments: list[float | None] = []
    sources = set()
    for p in usable:
        if _same(p.get("slo_ttft_ms"), limits.ttft_ms) \
                and _same(p.get("slo_tpot_ms"), limits.tpot_ms) \
                and p.get("slo_attainment") is not None:
            attainments.append(p.get("slo_attainment"))
            sources.add("stored")
        elif attainment is not None \
                and (a := attainment(p, limits.ttft_ms, limits.tpot_ms)) is not None:
            attainments.append(a)
            sources.add("recounted")
        else:
            attainments.append(None)
            sources.add("unknown")
    if any(a == 0 for a in attainments):
        return Excluded(label, EXCLUDED_NO_GOOD, ttft, tpot)
    if "unknown" in sources:
        notes.append("SLO attainment under these limits unknown: energy per request, "
                     "not per good request")
    source = "unknown" if "unknown" in sources else \
        ("recounted" if "recounted" in sources else "stored")

    values: list[float] = []
    per_request: list[float] = []
    replicas: list[int] = []
    utilisations: list[float] = []
    idles: list[float] = []
    idle_sources = set()
    for p, a in zip(usable, attainments, strict=True):
        if rate is None:
            e = p.get("energy_per_request_j")
        else:
            capacity, load_w = p.get("request_throughput_rps"), p.get("avg_power_w")
            if not capacity or load_w is None:
                return Excluded(label, EXCLUDED_NO_CAPACITY, ttft, tpot)
            idle_w = p.get("idle_ctx_power_w")
            if idle_w is not None:
                idle_sources.add("context held")
            else:
                idle_w = p.get("idle_power_w")
                if idle_w is None:
                    return Excluded(label, EXCLUDED_NO_IDLE, ttft, tpot)
                idle_sources.add("no context")
            e, n, u = amortised_energy_per_request(rate, capacity, load_w, idle_w)
            replicas.append(n)
            utilisations.append(u)
            idles.append(idle_w)
        per_request.append(e)
        values.append(e / a if a is not None else e)
    if "no context" in idle_sources:
        notes.append("idle power without a CUDA context (no context-held idle measured)")
    return Ranked(
        rank=0, points=usable, values=values, ttft_p90_ms=ttft, tpot_p90_ms=tpot,
        capacity_rps=_mean([p.get("request_throughput_rps") for p in usable]),
        slo_attainment=_mean(attainments), attainment_source=source,
        load_power_w=_mean([p.get("avg_power_w") for p in usable]),
        idle_power_w=_mean(idles) if idles else None,
        idle_source=(" and ".join(sorted(idle_sources)) if idle_sources else None),
        replicas=tuple(replicas), utilisation=_mean(utilisations) if utilisations else None,
        energy_per_request_j=sum(per_request) / len(per_request),
        energy_per_good_request_j=sum(values) / len(values), notes=notes)


def recommend(points: Sequence[RunPoint], *, sweep: str, model: str | None = None,
              ttft_ms: float | None = None, tpot_ms: float | None = None,
              rate_rps: float | None = None, input_tokens: int | None = None,
              output_tokens: int | None = None, simulated: bool | None = None,
              attainment: Recount | None = None,
              draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED) -> Recommendation:
    """Rank a model's server configurations of one sweep that meet the latency
    limits, per workload (token bin and decoding) unless filtered to one.

    `simulated` is the sweep's label (default: whether any point is simulated);
    `attainment` recounts a point's SLO attainment under the limits where they
    differ from the SLO it was measured under (`StoredAttainment`); without it
    such points count energy per request and say so.
    """
    if rate_rps is not None and rate_rps <= 0:
        raise RecommendError(f"--rate must be > 0 requests/s, got {rate_rps:g}")
    if draws < 1:
        raise RecommendError("the bootstrap needs at least one draw")
    models = sorted({p.model for p in points})
    if model is None:
        if len(models) != 1:
            raise RecommendError(f"{sweep} has {len(models)} models; pick one with --model: "
                                 + ", ".join(models), not_found=not models)
        model = models[0]
    if model not in models:
        raise RecommendError(f"no model {model!r} in {sweep}; its models: "
                             + (", ".join(models) or "none"), not_found=True)
    mine = [p for p in points if p.model == model]
    if simulated is None:
        simulated = any(p.simulated for p in mine)
    server = [p for p in mine if p.scenario_kind == "server"]
    if not server:
        raise RecommendError(f"{model} has no server scenario in {sweep}: recommend ranks "
                             "served configurations (batch runs have no latency limit)",
                             not_found=True)
    bins = sorted({(p.input_tokens, p.output_tokens) for p in server},
                  key=lambda b: (b[0] or 0, b[1]))
    chosen = [p for p in mine
              if (input_tokens is None or p.input_tokens == input_tokens)
              and (output_tokens is None or p.output_tokens == output_tokens)]
    if not any(p.scenario_kind == "server" for p in chosen):
        wanted = " and ".join(f"{name}={value}" for name, value in (
            ("input_tokens", input_tokens), ("output_tokens", output_tokens))
            if value is not None)
        raise RecommendError(
            f"no server load point of {model} in {sweep} with {wanted}; its token bins "
            "(input/output): "
            + ", ".join(f"{i}/{o}" for i, o in bins), not_found=True)
    limits = limits_for([p for p in chosen if p.scenario_kind == "server"], ttft_ms, tpot_ms)
    workloads = []
    for _, group in sorted(group_by(chosen, lambda p: (p.input_tokens, p.output_tokens,
                                                        p.decoding)).items(),
                           key=lambda kv: (kv[0][0] or 0, kv[0][1], kv[0][2])):
        if not any(p.scenario_kind == "server" for p in group):
            continue
        workloads.append(_rank_workload(group, limits, rate_rps, simulated, attainment,
                                        draws, seed))
    notes = [f"latency: {LATENCY_BASIS}"]
    if len(workloads) > 1:
        notes.append(f"{len(workloads)} workloads, each ranked on its own "
                     "(--input-tokens/--output-tokens pick one)")
    if rate_rps is not None:
        notes.append(f"idle-amortised at {rate_rps:g} req/s: n = ⌈R/C⌉ replicas, each "
                     "busy u = R/(n·C), n·(u·P_load + (1−u)·P_idle)/R J per request "
                     "(P_idle: idle with a CUDA context held)")
    else:
        notes.append("energy per good request at each load point itself (no arrival rate "
                     "given: --rate R amortises idle time)")
    if simulated:
        notes.append("SIMULATED: figures come from the farm's performance model")
    return Recommendation(sweep, model, simulated, limits, rate_rps, draws, seed,
                          workloads, notes)
