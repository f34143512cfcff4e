"""What `farmctl recommend` answers, as data: the limits, each ranked or excluded
configuration with the figures behind it, the ranking per workload, the whole
recommendation, and their JSON form (`--format json`). The ranking that fills them
is `farm.report.recommend`'s; their tables are `farm.report.recommend_text`'s.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from farm.errors import ExitCode, FarmError
from farm.report.points import RunPoint
from farm.report.stats import CI_METHOD, MIN_RANK_N
from farm.report.unmeasured import Unmeasured

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
        return config_label(self.head)

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
        lim = (f"TTFT p90 ≤ {short_number(self.limits.ttft_ms)} ms and "
               f"TPOT p90 ≤ {short_number(self.limits.tpot_ms)} ms")
        parts = []
        for w in self.workloads:
            if w.closest is not None:
                c = w.closest
                parts.append(f"{w.label}: closest is {c.label} at TTFT p90 "
                             f"{short_number(c.ttft_p90_ms)} ms, "
                             f"TPOT p90 {short_number(c.tpot_p90_ms)} ms")
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


def short_number(value: float | None) -> str:
    """A figure as the answer's text shows it: "—" when unknown, whole from 100 up,
    else three significant digits."""
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def tuning_suffix(p: RunPoint) -> str:
    """" (300 W cap)" after a GPU the run tuned; "" for one left as it was."""
    return f" ({p.tuning_label})" if p.tuning_label else ""


def config_label(p: RunPoint) -> str:
    """"h200 (300 W cap) server-closed c=8 (max_num_seqs=256)": GPU and its tuning,
    scenario, load and engine arguments."""
    args = f" ({p.args_label})" if p.engine_args else ""
    return f"{p.gpu_label}{tuning_suffix(p)} {p.scenario} {p.load_label}{args}"
