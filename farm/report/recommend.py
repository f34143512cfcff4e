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
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from farm.errors import ExitCode, FarmError
from farm.output import setting_text
from farm.report.points import RunPoint
from farm.report.stats import CI_METHOD, MIN_RANK_N, estimate, group_by, rankable
from farm.report.unmeasured import Unmeasured
from farm_contract.records import result_figures
from farm_contract.rules import DEFAULT_SLO_TPOT_MS, DEFAULT_SLO_TTFT_MS, Slo, goodput_of
from farm_contract.runspec import TUNING_FIELDS

DEFAULT_DRAWS = 2000
DEFAULT_SEED = 0

LATENCY_BASIS = "p90 TTFT and p90 TPOT of each load point, mean over its usable repetitions"

# Why a configuration is not ranked (JSON keys and table wording).
EXCLUDED_SIM_LABEL = "simulated label differs from the sweep's"
EXCLUDED_INVALID = "invalid (every repetition failed a validity check)"
EXCLUDED_NO_FIGURES = "no latency or energy figure"
EXCLUDED_LATENCY = "latency over the limit"
EXCLUDED_NO_GOOD = "no good request (SLO attainment 0)"
EXCLUDED_NO_CAPACITY = "no throughput or power figure to amortise"
EXCLUDED_NO_IDLE = "no idle power to amortise"
EXCLUDED_BATCH = "batch scenario (not a served configuration)"


class RecommendError(FarmError, ValueError):
    """The question cannot be asked of this sweep (unknown model, empty bin, bad
    argument). `not_found`: the data is not there (exit 5), rather than the input
    wrong (exit 2)."""

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message, exit_code=ExitCode.NOT_FOUND if not_found
                         else ExitCode.INVALID_INPUT)
        self.not_found = not_found


# ----------------------------------------------------------------- the model


def amortised_energy_per_request(rate_rps: float, capacity_rps: float, load_power_w: float,
                                 idle_power_w: float) -> tuple[float, int, float]:
    """(J per request, replicas n, utilisation u) of serving `rate_rps` with
    replicas of a configuration that serves `capacity_rps` at `load_power_w`
    and idles at `idle_power_w` (both for all of a replica's GPUs).

    n = ⌈R / C⌉ replicas, each busy u = R / (n·C) of the time, drawing
    u·P_load + (1 − u)·P_idle on average: n·(u·P_load + (1 − u)·P_idle) / R
    joules per request. At u = 1 this is P_load / C, the load point's own
    J/request.
    """
    if rate_rps <= 0 or capacity_rps <= 0:
        raise ValueError("rate and capacity must be > 0")
    # A ratio a rounding error above a whole number does not need one more replica.
    replicas = max(1, math.ceil(rate_rps / capacity_rps - 1e-9))
    utilisation = min(1.0, rate_rps / (replicas * capacity_rps))
    power = utilisation * load_power_w + (1.0 - utilisation) * idle_power_w
    return replicas * power / rate_rps, replicas, utilisation


def attainment_of(records: Sequence[Any], ttft_ms: float, tpot_ms: float) -> float | None:
    """Share of the requests sent that were good under the limits (ms): the
    contract's goodput rule (`farm_contract.rules.goodput_of`), the one the
    workers apply. None without records."""
    return goodput_of(records, 1.0, Slo.from_ms(ttft_ms, tpot_ms)).attainment


# (run point, TTFT limit ms, TPOT limit ms) -> its SLO attainment under those limits
Recount = Callable[[RunPoint, float, float], "float | None"]


class StoredAttainment:
    """SLO attainment of a run point recounted under other limits from the run's
    stored per-request records (`Store.requests_for`), cached per run."""

    def __init__(self, store: Any):
        self.store = store
        self._indices: dict[str, list[tuple[str, float, int]]] = {}

    def _index(self, point: RunPoint) -> int | None:
        if point.run_id not in self._indices:
            self._indices[point.run_id] = [
                (lp.kind, lp.value, lp.index) for lp in self.store.load_points_for(point.run_id)]
        for kind, value, index in self._indices[point.run_id]:
            if kind == point.load_kind and point.load_value is not None \
                    and math.isclose(value, point.load_value):
                return index
        return None

    def __call__(self, point: RunPoint, ttft_ms: float, tpot_ms: float) -> float | None:
        """The point's SLO attainment (0–1) under these limits (ms); None without records."""
        index = self._index(point)
        if index is None:
            return None
        return attainment_of(self.store.requests_for(point.run_id, index), ttft_ms, tpot_ms)


# -------------------------------------------------------------------- results


@dataclass(frozen=True)
class Limits:
    """The latency limits to meet, TTFT and TPOT p90 in ms, and where they came from."""

    ttft_ms: float
    tpot_ms: float
    source: str              # where each limit came from, in words


@dataclass
class Ranked:
    """One configuration that meets the limit, with the figures behind its rank."""

    rank: int
    points: list[RunPoint]               # its usable repetitions
    values: list[float]                  # energy per good request of each repetition
    ttft_p90_ms: float
    tpot_p90_ms: float
    capacity_rps: float | None
    slo_attainment: float | None
    attainment_source: str               # stored | recounted | unknown
    load_power_w: float | None
    idle_power_w: float | None
    idle_source: str | None              # context held | no context | None (no rate)
    replicas: tuple[int, ...]            # per repetition (with a rate)
    utilisation: float | None
    energy_per_request_j: float          # before dividing by the attainment
    energy_per_good_request_j: float     # the ranked figure (mean over repetitions)
    ci_low: float | None = None          # 95% CI of the mean (farm.report.stats.estimate)
    ci_high: float | None = None
    p_best: float | None = None          # None below MIN_RANK_N repetitions
    vs_best_pct: float = 0.0
    repetitions_expected: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def head(self) -> RunPoint:
        """The first repetition: the configuration."""
        return self.points[0]

    @property
    def label(self) -> str:
        """GPU (and its tuning), scenario, load and engine arguments of the configuration."""
        return _config_label(self.head)

    def to_json(self) -> dict[str, Any]:
        """The configuration, its figures and its intervals, as JSON-ready data."""
        p = self.head
        return {
            "rank": self.rank, "gpu_model": p.gpu_model, "gpu_count": p.gpu_count,
            "power_limit_w": p.power_limit_w, "sm_clock_mhz": p.sm_clock_mhz,
            "backend": p.backend, "engine": p.engine, "engine_version": p.engine_version,
            "engine_args": dict(p.engine_args), "scenario": p.scenario,
            "load_kind": p.load_kind, "load_value": p.load_value,
            "repetitions": len(self.points), "repetitions_expected": self.repetitions_expected,
            "run_ids": [q.run_id for q in self.points],
            "ttft_p90_ms": self.ttft_p90_ms, "tpot_p90_ms": self.tpot_p90_ms,
            "capacity_rps": self.capacity_rps, "slo_attainment": self.slo_attainment,
            "attainment_source": self.attainment_source,
            "load_power_w": self.load_power_w, "idle_power_w": self.idle_power_w,
            "idle_source": self.idle_source,
            "replicas": list(self.replicas) or None, "utilisation": self.utilisation,
            "energy_per_request_j": self.energy_per_request_j,
            "energy_per_good_request_j": self.energy_per_good_request_j,
            "energy_per_good_request_j_per_repetition": self.values,
            "ci95": _pair(self.ci_low, self.ci_high),
            "p_best": self.p_best, "vs_best_pct": self.vs_best_pct, "notes": self.notes,
        }


@dataclass
class Excluded:
    """A configuration that does not rank, why, and its latencies (ms) when known."""

    label: str
    reason: str
    ttft_p90_ms: float | None = None
    tpot_p90_ms: float | None = None


@dataclass
class BinRanking:
    """The ranking within one token bin and decoding."""

    input_tokens: int | None
    output_tokens: int
    decoding: str
    ranking: list[Ranked]
    excluded: list[Excluded]
    failed_runs: int
    closest: Excluded | None             # nearest to the limit when nothing meets it
    uncertainty: bool                    # False: every configuration has one repetition
    # Runs without figures that did not fail: queued or running, and cancelled.
    unmeasured: Unmeasured = field(default_factory=Unmeasured)
    ranked_by_probability: bool = False  # P(best) given: every configuration has MIN_RANK_N

    @property
    def label(self) -> str:
        """E.g. "in 512 / out 128 tokens, greedy"."""
        return f"in {self.input_tokens} / out {self.output_tokens} tokens, {self.decoding}"

    def excluded_counts(self) -> dict[str, int]:
        """How many configurations were excluded for each reason."""
        return dict(Counter(e.reason for e in self.excluded))

    def best_per_gpu(self) -> list[Ranked]:
        """The best-ranked configuration of each GPU model and count, in rank order."""
        best: dict[tuple[str, int], Ranked] = {}
        for r in self.ranking:
            best.setdefault((r.head.gpu_model, r.head.gpu_count), r)
        return list(best.values())

    def to_json(self) -> dict[str, Any]:
        """The ranking, best per GPU, exclusions and the closest miss, as JSON-ready data."""
        return {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "decoding": self.decoding, "uncertainty": self.uncertainty,
            "ranked_by_probability": self.ranked_by_probability,
            "ranking": [r.to_json() for r in self.ranking],
            "best_per_gpu": [{"gpu_model": r.head.gpu_model, "gpu_count": r.head.gpu_count,
                              "rank": r.rank,
                              "energy_per_good_request_j": r.energy_per_good_request_j,
                              "vs_best_pct": r.vs_best_pct} for r in self.best_per_gpu()],
            "excluded": self.excluded_counts(),
            "excluded_configurations": [
                {"configuration": e.label, "reason": e.reason, "ttft_p90_ms": e.ttft_p90_ms,
                 "tpot_p90_ms": e.tpot_p90_ms} for e in self.excluded],
            "failed_runs": self.failed_runs,
            "runs_not_measured_yet": self.unmeasured.pending,
            "cancelled_runs": self.unmeasured.cancelled,
            "closest": None if self.closest is None else {
                "configuration": self.closest.label, "ttft_p90_ms": self.closest.ttft_p90_ms,
                "tpot_p90_ms": self.closest.tpot_p90_ms},
        }


@dataclass
class Recommendation:
    """The answer of `farmctl recommend`: one ranking per workload of one model."""

    sweep: str
    model: str
    simulated: bool
    limits: Limits
    rate_rps: float | None
    draws: int
    seed: int
    workloads: list[BinRanking]
    notes: list[str]

    @property
    def met(self) -> bool:
        """Some configuration meets the limit in some workload."""
        return any(w.ranking for w in self.workloads)

    def nothing_met_message(self) -> str:
        """Why nothing is recommended: per workload, the configuration closest to the limit."""
        lim = (f"TTFT p90 ≤ {_num(self.limits.ttft_ms)} ms and "
               f"TPOT p90 ≤ {_num(self.limits.tpot_ms)} ms")
        parts = []
        for w in self.workloads:
            if w.closest is not None:
                c = w.closest
                parts.append(f"{w.label}: closest is {c.label} at TTFT p90 "
                             f"{_num(c.ttft_p90_ms)} ms, TPOT p90 {_num(c.tpot_p90_ms)} ms")
            else:
                parts.append(f"{w.label}: no usable configuration with latency figures")
        return (f"no configuration of {self.model} in {self.sweep} meets {lim}; "
                + "; ".join(parts))

    def to_json(self) -> dict[str, Any]:
        """The recommendation as JSON-ready data, the `--format json` output."""
        return {
            "sweep": self.sweep, "simulated": self.simulated, "model": self.model,
            "limits": {"ttft_p90_ms": self.limits.ttft_ms, "tpot_p90_ms": self.limits.tpot_ms,
                       "source": self.limits.source},
            "latency_basis": LATENCY_BASIS,
            "energy_basis": ("energy per good request = J/request ÷ SLO attainment, "
                             + ("idle-amortised at the arrival rate"
                                if self.rate_rps else "at the load point itself")),
            "rate_rps": self.rate_rps,
            "ci_method": CI_METHOD,
            "bootstrap": {"draws": self.draws, "seed": self.seed,
                          "min_repetitions": MIN_RANK_N},
            "met": self.met, "workloads": [w.to_json() for w in self.workloads],
            "notes": self.notes,
        }


def _pair(low: float | None, high: float | None) -> list[float] | None:
    return None if low is None or high is None else [low, high]


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


# ------------------------------------------------------------------- ranking


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


def bootstrap(values: Sequence[Sequence[float]], draws: int, seed: int) -> list[float]:
    """P(best) of each configuration, by resampling each configuration's repetitions
    with replacement `draws` times and taking the lowest mean as best (ties share
    the win). Seeded: the same values, draws and seed give the same answer. Its
    intervals are not the farm's CI (a percentile interval of 2 values is their
    range): `estimate` gives that."""
    if not values:
        return []
    rng = np.random.default_rng(seed)
    means = np.empty((len(values), draws))
    for i, xs in enumerate(values):
        sample = np.asarray(xs, dtype=float)
        if sample.size == 1:
            means[i] = sample[0]
        else:
            picks = rng.integers(0, sample.size, size=(draws, sample.size))
            means[i] = sample[picks].mean(axis=1)
    winners = means == means.min(axis=0)            # per draw, every configuration at the min
    wins = (winners / winners.sum(axis=0)).sum(axis=1)
    return [float(w) / draws for w in wins]


def _run_key(p: RunPoint) -> tuple:
    """A run's configuration without its load point and repetition."""
    return (p.model, p.backend, p.gpu_model, p.gpu_count, *p.tuning, p.engine,
            p.engine_args, p.scenario, p.input_tokens, p.output_tokens, p.decoding)


def _tuning_suffix(p: RunPoint) -> str:
    """" (300 W cap)" after a GPU the run tuned; "" for one left as it was."""
    return f" ({p.tuning_label})" if p.tuning_label else ""


def _config_label(p: RunPoint) -> str:
    """"h200 (300 W cap) server-closed c=8 (max_num_seqs=256)": GPU and its tuning,
    scenario, load and engine arguments."""
    args = f" ({p.args_label})" if p.engine_args else ""
    return f"{p.gpu_label}{_tuning_suffix(p)} {p.scenario} {p.load_label}{args}"


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
        label = _config_label(group[0])
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
    label = _config_label(usable[0])
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


# ------------------------------------------------------------------- output


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
    lines = [f"{rec.sweep}: {rec.model}, TTFT p90 ≤ {_num(rec.limits.ttft_ms)} ms, "
             f"TPOT p90 ≤ {_num(rec.limits.tpot_ms)} ms ({rec.limits.source})"
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
                f"{r.head.gpu_label}{_tuning_suffix(r.head)} #{r.rank} "
                f"{_num(r.energy_per_good_request_j)} J"
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
                     f"{_num(c.ttft_p90_ms)} ms, TPOT p90 {_num(c.tpot_p90_ms)} ms")
    else:
        lines.append("nothing meets the limit and no usable configuration has latency figures")
    counts = w.excluded_counts()
    parts = [f"{reason}: {n}" for reason, n in counts.items()]
    parts += w.unmeasured.phrases()
    lines.append("excluded: " + ("; ".join(parts) if parts else "none"))
    return "\n".join(lines) + "\n"
