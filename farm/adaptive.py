"""Adaptive repetitions: run a configuration again until its J/output token is known.

A sweep with `repetitions = { min, max, ci_half_width_pct }` (farm/spec.py,
`Repetitions`) enqueues repetitions 0 … min − 1 of each configuration (a RunSpec
without its repetition index). After each recorded result the recorder calls
`after_result`, which decides for that result's configuration (`decide`, pure):

- **waiting**: a repetition is still queued or running — decide when it ends;
- **met**: every load point's 95% CI half-width of J/output token (gross, or net
  of idle with `figure = "net"`), over the usable repetitions (succeeded and
  valid), is ≤ ci_half_width_pct % of its mean;
- **max**: the configuration has `max` runs; failed and invalid runs count toward
  it (they took GPU time) but give no value, so `max` bounds the work;
- **no usable run**: every repetition failed or was invalid — a fault to fix
  (`farmctl retry`), not noise to average away, so no more are added;
- **no value**: usable runs, none with the figure bounded (a net target on runs
  without an idle baseline): more runs would not give one either;
- **cancelled**: a repetition was cancelled (the sweep was);
- **more**: add repetition k (one past the highest index stored).

The CI is `farm.report.stats.estimate`, the one the reports print. Adding is
idempotent: the next run's id is the hash of its RunSpec, and `Store.add_runs`
inserts only unknown ids, so two recorders, or a re-delivered result, deciding
on the same state add it once. Each decision reads the store after its own
result was committed, so the last of several concurrent recorders sees them all
and no configuration stalls at "waiting". The dispatcher sends the new run.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from farm.output import tuning_label
from farm.report.stats import Estimate, estimate, half_width_pct
from farm.spec import CI_FIGURES, Repetitions
from farm.store.repetitions import RepetitionFigures
from farm_contract.runspec import RunSpec
from farm_contract.statuses import PENDING_STATUSES

VERDICTS = ("waiting", "met", "max", "no usable run", "no value", "cancelled", "more")


@dataclass(frozen=True)
class PointCi:
    """One load point of a configuration: the estimate of the J/output token the
    policy bounds (Decision.figure)."""

    index: int
    load_kind: str
    load_value: float
    estimate: Estimate | None

    @property
    def half_width_pct(self) -> float | None:
        """The CI half-width as % of the mean (None: n < 2 or no value)."""
        return half_width_pct(self.estimate)

    @property
    def n(self) -> int:
        """Usable repetitions with this point's figure."""
        return 0 if self.estimate is None else self.estimate.n


@dataclass(frozen=True)
class Decision:
    """What adaptive repetitions make of one configuration's runs."""

    verdict: str                 # one of VERDICTS
    runs: int                    # repetitions stored, any status
    usable: int                  # succeeded and valid
    pending: int                 # queued or running
    points: tuple[PointCi, ...]
    next_repetition: int         # the index the next run would take
    target_pct: float
    max_runs: int
    figure: str = "energy_per_output_token_j"   # the figure the CI is on

    @property
    def figure_words(self) -> str:
        """The figure the CI is on, in words."""
        return ("net J/output token (net of idle)" if self.figure == CI_FIGURES["net"]
                else "J/output token")

    @property
    def worst_half_width_pct(self) -> float | None:
        """The widest load point's CI half-width (% of its mean); None if any has none."""
        widths = [p.half_width_pct for p in self.points]
        if not widths or any(w is None for w in widths):
            return None
        return max(w for w in widths if w is not None)

    @property
    def n(self) -> int:
        """The fewest usable values of any load point (the n the CI rests on)."""
        return min((p.n for p in self.points), default=0)


def decide(policy: Repetitions, reps: Iterable[RepetitionFigures]) -> Decision:
    """The verdict on one configuration from its stored repetitions (see the module)."""
    reps = sorted(reps, key=lambda r: r.repetition)
    usable = [r for r in reps if r.status == "succeeded" and r.valid is True]
    indices = sorted({i for r in usable for i in r.points})
    points = []
    for i in indices:
        first = next(r.points[i] for r in usable if i in r.points)
        points.append(PointCi(i, first.kind, first.value, estimate(
            getattr(r.points[i], policy.column) for r in usable if i in r.points)))
    pending = sum(r.status in PENDING_STATUSES for r in reps)
    base = dict(runs=len(reps), usable=len(usable), pending=pending, points=tuple(points),
                next_repetition=max((r.repetition for r in reps), default=-1) + 1,
                target_pct=policy.ci_half_width_pct, max_runs=policy.max,
                figure=policy.column)
    widths = [p.half_width_pct for p in points]
    if pending:
        verdict = "waiting"
    elif any(r.status == "cancelled" for r in reps):
        verdict = "cancelled"
    elif widths and all(w is not None and w <= policy.ci_half_width_pct for w in widths):
        verdict = "met"
    elif len(reps) >= policy.max:
        verdict = "max"
    elif not usable:
        verdict = "no usable run"
    elif all(p.estimate is None for p in points):
        verdict = "no value"
    else:
        verdict = "more"
    return Decision(verdict=verdict, **base)


@lru_cache(maxsize=256)
def _policy_of_text(digest: str, text: str) -> Repetitions | None:
    del digest  # the cache key; the text itself is compared too
    value = tomllib.loads(text).get("repetitions")
    return Repetitions.model_validate(value) if isinstance(value, dict) else None


def policy_of(spec_toml: str | None) -> Repetitions | None:
    """The adaptive policy of a sweep's stored file text (validated at enqueue), or None.

    Only the `repetitions` key is read: the text may be the file a `--simulate`
    copy came from, whose repetitions are the copy's."""
    if not spec_toml:
        return None
    return _policy_of_text(hashlib.sha256(spec_toml.encode()).hexdigest(), spec_toml)


def repetition(run: RunSpec, index: int) -> RunSpec:
    """The same configuration at repetition `index` (its own run id)."""
    return run.model_copy(update={"repetition": index})


def configuration_ids(run: RunSpec, policy: Repetitions) -> list[str]:
    """The run ids repetitions 0 … max − 1 of the run's configuration have (ids are
    deterministic, so the configuration's runs are found by id)."""
    return [repetition(run, i).run_id for i in range(max(policy.max, run.repetition + 1))]


def configuration_decision(store, run: RunSpec, policy: Repetitions) -> Decision:
    """The decision on `run`'s configuration from what the store holds now."""
    return decide(policy, store.repetition_figures(configuration_ids(run, policy)).values())


def after_result(store, run_id: str,
                 is_cancelled: Callable[[str], bool] | None = None) -> list[RunSpec]:
    """After a result of `run_id` was recorded: add its configuration's next repetition
    if the decision is "more" and the sweep is not cancelled. Returns the runs this
    call added (none when another recorder added it first)."""
    found = store.run_spec(run_id)
    if found is None:
        return []
    sweep_id, run, text = found
    policy = policy_of(text)
    if policy is None:
        return []
    decision = configuration_decision(store, run, policy)
    if decision.verdict != "more" or (is_cancelled is not None and is_cancelled(sweep_id)):
        return []
    return store.add_runs(sweep_id, [repetition(run, decision.next_repetition)])


def decisions_in_turn(policy: Repetitions, reps: Iterable[RepetitionFigures]) -> list[Decision]:
    """The decision after each repetition in index order: on repetitions 0 … k for
    every stored k. Repetitions are added one at a time and in order, so this is what
    the recorder saw after each result (its last entry is `decide` on them all)."""
    reps = sorted(reps, key=lambda r: r.repetition)
    return [decide(policy, reps[:k + 1]) for k in range(len(reps))]


@dataclass(frozen=True)
class ConfigurationSummary:
    """One configuration of an adaptive sweep: a run of it (repetition 0 where stored),
    the decision on it, and the decisions after each of its repetitions in turn."""

    run: RunSpec
    decision: Decision
    in_turn: tuple[Decision, ...] = ()


def sweep_summary(store, sweep_id: str, in_turn: bool = False) -> list[ConfigurationSummary]:
    """Every configuration of an adaptive sweep with its decision (empty for a sweep
    with a fixed number of repetitions), in the store's run order; with `in_turn`, also
    the decisions after each repetition (a decide per repetition: for the report's
    figure only, not for the recorder's path)."""
    row = store.find_sweep(sweep_id)
    policy = policy_of(row.spec_toml if row is not None else None)
    if policy is None:
        return []
    configs: dict[str, RunSpec] = {}
    for stored in store.runs_of(row.id):
        run = RunSpec.model_validate_json(stored["spec_json"])
        configs.setdefault(repetition(run, 0).run_id, run)
    out = []
    for run in configs.values():
        reps = list(store.repetition_figures(configuration_ids(run, policy)).values())
        path = tuple(decisions_in_turn(policy, reps)) if in_turn else ()
        # the last decision in turn is the one on every repetition
        out.append(ConfigurationSummary(repetition(run, 0),
                                        path[-1] if path else decide(policy, reps), path))
    return out


def extend_sweep(store, sweep_id: str) -> list[RunSpec]:
    """Apply the decision to every configuration of the sweep (idempotent, as
    `after_result`); returns the runs added. `farmctl run` calls it before it stops
    waiting, so a decision the recorder has not taken yet is not missed."""
    added: list[RunSpec] = []
    for config in sweep_summary(store, sweep_id):
        if config.decision.verdict == "more":
            added += store.add_runs(sweep_id, [repetition(config.run,
                                                          config.decision.next_repetition)])
    return added


VERDICT_WORDS = {
    "met": "target met",
    "max": "max reached, target not met",
    "waiting": "repetition running or queued",
    "more": "next repetition due",
    "no usable run": "no usable run (farmctl retry)",
    "no value": "no run measured the figure bounded",
    "cancelled": "cancelled",
}


def configuration_label(run: RunSpec) -> str:
    """A configuration in words: model, GPUs and their tuning, engine arguments,
    scenario, tokens, decoding."""
    hw = run.hardware
    gpus = f"{hw.backend}:{hw.gpu_model}" + (f" ×{hw.gpu_count}" if hw.gpu_count > 1 else "")
    args = ",".join(f"{k}={v}" for k, v in sorted(run.engine.args.items()))
    tokens = f"in {run.workload.input_tokens}/out {run.workload.output_tokens}"
    return " · ".join(x for x in (run.model.id, gpus, tuning_label(hw.power_limit_w,
                                                                    hw.sm_clock_mhz),
                                  args, run.scenario.name, tokens,
                                  run.workload.decoding.label) if x)


def summary_json(configs: list[ConfigurationSummary]) -> list[dict]:
    """The summary as JSON objects (`farmctl results --format json`, key "repetitions")."""
    return [{"configuration": configuration_label(c.run), "run_id_rep0": c.run.run_id,
             "runs": c.decision.runs, "usable": c.decision.usable, "n": c.decision.n,
             "ci_level": 0.95, "ci_method": "student_t",
             "worst_ci_half_width_pct": c.decision.worst_half_width_pct,
             "target_ci_half_width_pct": c.decision.target_pct,
             "ci_figure": c.decision.figure,
             "max_runs": c.decision.max_runs, "verdict": c.decision.verdict,
             "points": [{"load_kind": p.load_kind, "load_value": p.load_value, "n": p.n,
                         c.decision.figure: None if p.estimate is None
                         else p.estimate.mean, "ci_half_width_pct": p.half_width_pct}
                        for p in c.decision.points]}
            for c in configs]


def format_summary(configs: list[ConfigurationSummary]) -> str:
    """The lines `farmctl results` prints under an adaptive sweep's table: per
    configuration, runs, usable n, the widest load point's 95% CI and the verdict."""
    if not configs:
        return ""
    d0 = configs[0].decision
    lines = [f"adaptive repetitions: until the 95% CI (Student t) half-width of "
             f"{d0.figure_words} "
             f"is ≤ {d0.target_pct:g}% of the mean at every load point, at most "
             f"{d0.max_runs} runs (failed and invalid ones count)"]
    rows = [(configuration_label(c.run), str(c.decision.runs), str(c.decision.n),
             "—" if c.decision.worst_half_width_pct is None
             else f"±{c.decision.worst_half_width_pct:.2f}%",
             VERDICT_WORDS[c.decision.verdict]) for c in configs]
    head = ("configuration", "runs", "n", "CI95", "verdict")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for r in (head, *rows):
        lines.append("  " + "  ".join(v.ljust(w) if i in (0, 4) else v.rjust(w)
                                      for i, (v, w) in enumerate(zip(r, widths))).rstrip())
    counts = {v: sum(c.decision.verdict == v for c in configs) for v in VERDICTS}
    lines.append("  " + ", ".join(f"{n} {VERDICT_WORDS[v]}" for v, n in counts.items() if n))
    return "\n".join(lines) + "\n"
