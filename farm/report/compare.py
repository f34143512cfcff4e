"""Two sweeps side by side (`farmctl compare A B`): the change in J/token at
every configuration point they share, with its confidence.

Points are matched on what defines the workload and the hardware (model,
backend, GPU model and count, scenario kind and name, load kind and value,
token bin, decoding), on the GPU tuning the runs asked for (power limit, SM
clock) and on the engine's kind, version and arguments — except those that
differ between the two sweeps, which are what is being compared: a power limit
or SM clock whose set of settings differs, an engine argument whose set of
values differs (or that one sweep lacks), the engine version, the engine kind,
and any argument named with `ignore_args`. They are reported as "what
differs". So two power-limit sweeps over the same caps match cap for cap, and
a sweep at 300 W compared with one at the default limit is a comparison of
the cap.

Each side of a matched point is its usable repetitions (succeeded and valid).
Δ = mean(B) − mean(A) with a Welch 95% interval on the raw repetitions, shown
relative to A's mean (A's own uncertainty is not propagated into the
denominator). Simulated and measured sweeps are never compared.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from farm.errors import ExitCode, FarmError
from farm.output import setting_text
from farm.report.labels import short_label
from farm.report.points import RunPoint
from farm.report.stats import Estimate, ci_text, estimate, group_by, welch_difference
from farm.report.unmeasured import Unmeasured
from farm_contract.records import result_figures

# Dimensions every match shares.
MATCH_DIMS = ("model", "backend", "gpu_model", "gpu_count", "scenario_kind", "scenario",
              "load_kind", "load_value", "input_tokens", "output_tokens", "decoding")
# Dimensions that are matched on unless they differ between the sweeps: the GPU
# tuning (with their units) and the engine.
TUNING_DIMS = {"power_limit_w": "W", "sm_clock_mhz": "MHz"}
ENGINE_DIMS = ("engine", "engine_version")
# Figures compared (J/token first: the headline); they print as their record fields'
# headers declare (farm_contract.records).
FIGURES = ("energy_per_output_token_j", "ttft_p90_ms", "output_throughput_tps")

LOWER, HIGHER, NO_CLEAR, NO_CI, NO_FIGURE = (
    "lower", "higher", "no clear change", "no CI (n=1)", "no figure")

_ABSENT = "(unset)"


class CompareError(FarmError, ValueError):
    """The two sweeps cannot be compared (simulated vs measured, bad option)."""

    exit_code = ExitCode.INVALID_INPUT


@dataclass(frozen=True)
class Difference:
    """A dimension whose values differ between the sweeps."""

    name: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    forced: bool = False        # named by --ignore-arg, values may not differ

    @property
    def label(self) -> str:
        """E.g. "engine_version 0.6 → 0.7", a set of values in braces."""
        def side(values: tuple[str, ...]) -> str:
            return values[0] if len(values) == 1 else "{" + ", ".join(values) + "}"

        return f"{self.name} {side(self.a)} → {side(self.b)}" + (
            " (ignored)" if self.forced else "")


@dataclass(frozen=True)
class Delta:
    """One figure at one matched point: each side's estimate and B − A."""

    figure: str
    a: Estimate | None
    b: Estimate | None
    diff: Estimate | None       # B − A, absolute

    @property
    def pct(self) -> float | None:
        """B − A as a percentage of A's mean; None without a difference or with A's mean 0."""
        if self.diff is None or not self.a or self.a.mean == 0:
            return None
        return 100.0 * self.diff.mean / self.a.mean

    @property
    def pct_ci(self) -> tuple[float, float] | None:
        """The 95% CI of B − A as percentages of A's mean; None without an interval."""
        if self.diff is None or self.diff.low is None or not self.a or self.a.mean == 0:
            return None
        return (100.0 * self.diff.low / self.a.mean, 100.0 * self.diff.high / self.a.mean)

    @property
    def verdict(self) -> str:
        """lower or higher when the 95% CI excludes 0, else no clear change, no CI or no figure."""
        if self.diff is None:
            return NO_FIGURE
        if self.diff.low is None:
            return NO_CI
        if self.diff.high < 0:
            return LOWER
        if self.diff.low > 0:
            return HIGHER
        return NO_CLEAR

    def to_json(self) -> dict[str, Any]:
        """Both sides, B − A with its 95% CI, absolute and in %, and the verdict."""
        ci = self.pct_ci
        return {
            "a": _est(self.a), "b": _est(self.b),
            "delta": None if self.diff is None else self.diff.mean,
            "delta_ci95": (None if self.diff is None or self.diff.low is None
                           else [self.diff.low, self.diff.high]),
            "delta_pct": self.pct, "delta_pct_ci95": None if ci is None else list(ci),
            "verdict": self.verdict,
        }


def _est(e: Estimate | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"mean": e.mean, "n": e.n,
            "ci95": None if e.low is None else [e.low, e.high]}


@dataclass
class Matched:
    """A configuration point of both sweeps: each side's usable repetitions and the deltas."""

    a: list[RunPoint]
    b: list[RunPoint]
    deltas: dict[str, Delta]

    @property
    def head(self) -> RunPoint:
        """A's first repetition: the point's configuration."""
        return self.a[0]

    @property
    def energy(self) -> Delta:
        """The J/token delta, the headline of a comparison."""
        return self.deltas["energy_per_output_token_j"]

    def to_json(self) -> dict[str, Any]:
        """The point's configuration, each side's engine and run ids, and every delta."""
        p, q = self.head, self.b[0]
        return {
            "model": p.model, "gpu_model": p.gpu_model, "gpu_count": p.gpu_count,
            "scenario": p.scenario, "scenario_kind": p.scenario_kind,
            "load_kind": p.load_kind, "load_value": p.load_value,
            "input_tokens": p.input_tokens, "output_tokens": p.output_tokens,
            "decoding": p.decoding,
            "a": _side_json(p, self.a), "b": _side_json(q, self.b),
            **{figure: delta.to_json() for figure, delta in self.deltas.items()},
        }


def _side_json(p: RunPoint, repetitions: Sequence[RunPoint]) -> dict[str, Any]:
    """One side of a matched point: its GPU tuning, engine and run ids."""
    return {"power_limit_w": p.power_limit_w, "sm_clock_mhz": p.sm_clock_mhz,
            "engine": p.engine, "engine_version": p.engine_version,
            "engine_args": dict(p.engine_args), "run_ids": [x.run_id for x in repetitions]}


@dataclass
class Comparison:
    """The result of comparing sweep A with sweep B: matches, and what was left out."""

    sweep_a: str
    sweep_b: str
    simulated: bool
    differences: list[Difference]
    matched: list[Matched]
    only_a: int                 # configuration points with usable repetitions in A only
    only_b: int
    ambiguous: int              # match keys with several configurations on one side
    unusable_a: int             # configuration points without a usable repetition
    unusable_b: int
    failed_runs_a: int          # runs that failed (no figures)
    failed_runs_b: int
    # Runs without figures that did not fail (queued or running, cancelled).
    unmeasured_a: Unmeasured = field(default_factory=Unmeasured)
    unmeasured_b: Unmeasured = field(default_factory=Unmeasured)

    def verdicts(self) -> Counter[str]:
        """How many matched points got each J/token verdict."""
        return Counter(m.energy.verdict for m in self.matched)

    def median_pct(self) -> float | None:
        """The median J/token change over the matched points, in % of A; None if none."""
        pcts = sorted(m.energy.pct for m in self.matched if m.energy.pct is not None)
        if not pcts:
            return None
        mid = len(pcts) // 2
        return pcts[mid] if len(pcts) % 2 else (pcts[mid - 1] + pcts[mid]) / 2

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data, the `--format json` of `farmctl compare`."""
        return {
            "sweep_a": self.sweep_a, "sweep_b": self.sweep_b, "simulated": self.simulated,
            "what_differs": [{"name": d.name, "a": list(d.a), "b": list(d.b),
                              "forced": d.forced} for d in self.differences],
            "delta_basis": ("B − A; 95% CI by Welch on the repetitions' values, "
                            "relative to A's mean"),
            "matched": len(self.matched),
            "unmatched": {"only_in_a": self.only_a, "only_in_b": self.only_b,
                          "ambiguous": self.ambiguous},
            "left_out": {"a": {"unusable_points": self.unusable_a,
                               "failed_runs": self.failed_runs_a,
                               "runs_not_measured_yet": self.unmeasured_a.pending,
                               "cancelled_runs": self.unmeasured_a.cancelled},
                         "b": {"unusable_points": self.unusable_b,
                               "failed_runs": self.failed_runs_b,
                               "runs_not_measured_yet": self.unmeasured_b.pending,
                               "cancelled_runs": self.unmeasured_b.cancelled}},
            "energy_verdicts": dict(self.verdicts()),
            "median_energy_delta_pct": self.median_pct(),
            "points": [m.to_json() for m in self.matched],
        }


# ------------------------------------------------------------------ matching


def _text(value: Any) -> str:
    return _ABSENT if value is None else str(value)


def _settings(points: Sequence[RunPoint], dim: str, unit: str) -> tuple[str, ...]:
    """A tuning dimension's settings over the points, ascending ("300 W"; unset first)."""
    values = sorted({getattr(p, dim) for p in points}, key=lambda v: (v is not None, v or 0))
    return tuple(_ABSENT if v is None else setting_text(v, unit) for v in values)


def _args_values(points: Iterable[RunPoint]) -> dict[str, set[str]]:
    """Every engine argument's set of values over the points (absent = "(unset)")."""
    points = list(points)
    names = {k for p in points for k, _ in p.engine_args}
    values: dict[str, set[str]] = {name: set() for name in names}
    for p in points:
        args = dict(p.engine_args)
        for name in names:
            values[name].add(_text(args.get(name)))
    return values


def differences(points_a: Sequence[RunPoint], points_b: Sequence[RunPoint],
                ignore_args: Iterable[str] = ()) -> list[Difference]:
    """The engine dimensions and arguments whose values differ between the sweeps
    (over their measured points), plus the arguments forced by `ignore_args`."""
    a = [p for p in points_a if p.measured]
    b = [p for p in points_b if p.measured]
    out = []
    for dim, unit in TUNING_DIMS.items():
        va, vb = _settings(a, dim, unit), _settings(b, dim, unit)
        if va and vb and va != vb:
            out.append(Difference(dim, va, vb))
    for dim in ENGINE_DIMS:
        va = {_text(getattr(p, dim)) for p in a}
        vb = {_text(getattr(p, dim)) for p in b}
        if va and vb and va != vb:
            out.append(Difference(dim, tuple(sorted(va)), tuple(sorted(vb))))
    args_a, args_b = _args_values(a), _args_values(b)
    ignore = set(ignore_args)
    known = set(args_a) | set(args_b)
    unknown = ignore - known
    if unknown:
        raise CompareError(f"--ignore-arg {', '.join(sorted(unknown))}: no such engine "
                           f"argument in either sweep (they have: "
                           f"{', '.join(sorted(known)) or 'none'})")
    for name in sorted(known):
        va = args_a.get(name, {_ABSENT} if a else set())
        vb = args_b.get(name, {_ABSENT} if b else set())
        if va != vb or name in ignore:
            out.append(Difference(name, tuple(sorted(va)), tuple(sorted(vb)),
                                  forced=name in ignore and va == vb))
    return out


def _match_key(p: RunPoint, differing: set[str]) -> tuple:
    engine = tuple((dim, getattr(p, dim)) for dim in (*TUNING_DIMS, *ENGINE_DIMS)
                   if dim not in differing)
    args = tuple((k, v) for k, v in p.engine_args if k not in differing)
    return tuple(getattr(p, dim) for dim in MATCH_DIMS) + engine + (args,)


def _config(p: RunPoint) -> tuple:
    """A configuration point as it stands in its sweep (engine version included)."""
    return p.config_key + (p.engine_version,)


def _delta(figure: str, a: list[RunPoint], b: list[RunPoint]) -> Delta:
    va = [p.get(figure) for p in a if p.get(figure) is not None]
    vb = [p.get(figure) for p in b if p.get(figure) is not None]
    return Delta(figure, estimate(va), estimate(vb),
                 welch_difference(va, vb) if va and vb else None)


def compare(points_a: Sequence[RunPoint], points_b: Sequence[RunPoint], *,
            sweep_a: str, sweep_b: str, simulated_a: bool | None = None,
            simulated_b: bool | None = None,
            ignore_args: Iterable[str] = ()) -> Comparison:
    """Match the configuration points of two sweeps and compare their figures.

    `simulated_a`/`_b` are the sweeps' labels (default: whether any point is
    simulated); a simulated sweep is never compared with a measured one."""
    sim_a = any(p.simulated for p in points_a) if simulated_a is None else simulated_a
    sim_b = any(p.simulated for p in points_b) if simulated_b is None else simulated_b
    if sim_a != sim_b:
        sim, real = (sweep_a, sweep_b) if sim_a else (sweep_b, sweep_a)
        raise CompareError(
            f"refusing to compare {sim} (SIMULATED) with {real} (measured): simulated "
            "figures come from a performance model and never share a comparison with "
            "measurements")
    diffs = differences(points_a, points_b, ignore_args)
    differing = {d.name for d in diffs}

    def side(points: Sequence[RunPoint]
             ) -> tuple[dict[tuple, list[RunPoint]], Unmeasured, int, set]:
        measured = [p for p in points if p.measured and p.simulated == sim_a]
        failed = Unmeasured.of(points)
        usable_by_config = group_by((p for p in measured if p.usable), _config)
        unusable = len({_config(p) for p in measured} - set(usable_by_config))
        by_key: dict[tuple, list[RunPoint]] = {}
        configs_of: dict[tuple, set] = {}
        for config, group in usable_by_config.items():
            key = _match_key(group[0], differing)
            by_key.setdefault(key, []).extend(group)
            configs_of.setdefault(key, set()).add(config)
        ambiguous = {k for k, configs in configs_of.items() if len(configs) > 1}
        return by_key, failed, unusable, ambiguous

    a, failed_a, unusable_a, amb_a = side(points_a)
    b, failed_b, unusable_b, amb_b = side(points_b)
    ambiguous = (amb_a | amb_b) & (set(a) | set(b))
    matched = []
    for key in set(a) & set(b) - ambiguous:
        ra = sorted(a[key], key=lambda p: p.repetition)
        rb = sorted(b[key], key=lambda p: p.repetition)
        matched.append(Matched(ra, rb, {f: _delta(f, ra, rb) for f in FIGURES}))
    matched.sort(key=lambda m: _order(m.head))
    return Comparison(
        sweep_a=sweep_a, sweep_b=sweep_b, simulated=sim_a, differences=diffs, matched=matched,
        only_a=len(set(a) - set(b) - ambiguous), only_b=len(set(b) - set(a) - ambiguous),
        ambiguous=len(ambiguous), unusable_a=unusable_a, unusable_b=unusable_b,
        failed_runs_a=failed_a.failed, failed_runs_b=failed_b.failed,
        unmeasured_a=failed_a, unmeasured_b=failed_b)


def _setting_key(value: float | str | None) -> tuple[int, float]:
    """A GPU setting's place: none set, then "default" (the GPU's own), then by value."""
    if value is None:
        return (0, 0.0)
    return (1, 0.0) if isinstance(value, str) else (2, float(value))


def _order(p: RunPoint) -> tuple:
    return (p.model, p.gpu_model, p.gpu_count, _setting_key(p.power_limit_w),
            _setting_key(p.sm_clock_mhz),
            p.engine_args, p.scenario, p.load_kind or "",
            p.load_value or 0.0, p.input_tokens or 0, p.output_tokens, p.decoding)


# -------------------------------------------------------------------- output


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}%"


def comparison_columns() -> list[Any]:
    """The comparison table's columns (farm.tables.Column), in display order;
    rank: lower is kept longer on a narrow terminal."""
    from farm.output import fmt_value as fmt
    from farm.tables import Column

    def energy(m: Matched) -> Delta:
        return m.energy

    def ci(m: Matched) -> str:
        pct = m.energy.pct_ci
        # "to", not "…": an ellipsis in a table reads as a cut cell
        return "—" if pct is None else f"{pct[0]:+.1f} to {pct[1]:+.1f}%"

    setup = [
        Column("model", "model", lambda m: m.head.model, False, 14),
        Column("gpu", "GPU", lambda m: _gpu(m.head), False, 1),
        Column("scenario", "scenario", lambda m: m.head.scenario, False, 5),
        Column("power_limit_w", "power limit", lambda m: _tuning_cell(m, "power_limit_w"),
               False, 2),
        Column("sm_clock_mhz", "SM clock", lambda m: _tuning_cell(m, "sm_clock_mhz"), False,
               2),
        Column("load", "load", lambda m: m.head.load_label, False, 2),
        Column("input_tokens", "in", lambda m: fmt(m.head.input_tokens), True, 9,
               "input tokens"),
        Column("output_tokens", "out", lambda m: fmt(m.head.output_tokens), True, 10,
               "output tokens"),
        Column("decoding", "decoding", lambda m: m.head.decoding, False, 15),
        Column("n", "n A/B", lambda m: f"{len(m.a)}/{len(m.b)}", True, 11,
               "repetitions A/B", identifies=False),
    ]
    # The figures stay in the table even where they are the same in every row. A
    # delta is in percent: its header is the figure's short name without a unit.
    jpt = result_figures()["energy_per_output_token_j"].header
    figures = [
        Column("j_per_token_a", f"{jpt} A", lambda m: _mean_ci(energy(m).a, fmt), True, 6),
        Column("j_per_token_b", f"{jpt} B", lambda m: _mean_ci(energy(m).b, fmt), True, 7),
        Column("delta_j_per_token", f"Δ {jpt}", lambda m: _pct(energy(m).pct), True, 3),
        Column("ci95", "95% CI", ci, True, 8),
        Column("verdict", "verdict", lambda m: energy(m).verdict, False, 4),
        Column("delta_ttft_p90", f"Δ {short_label('ttft_p90_ms')}",
               lambda m: _pct(m.deltas["ttft_p90_ms"].pct), True, 12),
        Column("delta_tok_s", f"Δ {short_label('output_throughput_tps')}",
               lambda m: _pct(m.deltas["output_throughput_tps"].pct), True, 13),
    ]
    return setup + [replace(c, hoist=False) for c in figures]


def _tuning_cell(m: Matched, dim: str) -> str:
    """A matched point's power limit or SM clock: "300 W", or "default → 300 W" where
    that is what differs; "—" where neither side set one."""
    a, b = (getattr(side[0], dim) for side in (m.a, m.b))
    if a == b:
        return setting_text(a, TUNING_DIMS[dim])
    a_text, b_text = ("default" if v is None else setting_text(v, TUNING_DIMS[dim])
                      for v in (a, b))
    return f"{a_text} → {b_text}"


def _gpu(p: RunPoint) -> str:
    """"sim:l4", "2× sim:l4": a simulated GPU as a sweep names it."""
    if not p.simulated:
        return p.gpu_label
    return f"sim:{p.gpu_model}" if p.gpu_count == 1 else f"{p.gpu_count}× sim:{p.gpu_model}"


def format_comparison(cmp: Comparison, fmt: str = "table", *, columns: str | None = None,
                      width: int | str | None = "auto") -> str:
    """The comparison as text: JSON, or a header, one table row per matched point
    (`columns`: comma-separated names, default all; fitted to `width` — "auto":
    the terminal's when stdout is one, None: as wide as it needs) and a summary."""
    if fmt == "json":
        return json.dumps(cmp.to_json(), indent=2) + "\n"
    from farm.output import SIM_BANNER
    from farm.tables import choose_columns, render_table, terminal_width

    catalogue = comparison_columns()
    # The tuning columns only where a run set one: "power limit: —" says nothing.
    tuned = {dim for m in cmp.matched for p in (m.a[0], m.b[0]) for dim in TUNING_DIMS
             if getattr(p, dim) is not None}
    defaults = [c.name for c in catalogue if c.name not in TUNING_DIMS or c.name in tuned]
    chosen = choose_columns(catalogue, defaults, columns)
    what = ("; ".join(d.label for d in cmp.differences) if cmp.differences else
            "nothing in the run specs (a difference outside them: driver, host, a power "
            "limit set outside the farm…)")
    head = [f"A = {cmp.sweep_a}, B = {cmp.sweep_b}; what differs: {what}",
            f"{len(cmp.matched)} matched point(s); unmatched: {cmp.only_a} only in A, "
            f"{cmp.only_b} only in B"
            + (f", {cmp.ambiguous} ambiguous (several configurations on one side)"
               if cmp.ambiguous else "")]
    left = []
    for name, unusable, runs in (("A", cmp.unusable_a, cmp.unmeasured_a),
                                 ("B", cmp.unusable_b, cmp.unmeasured_b)):
        if unusable or runs.phrases():
            left.append(f"{name}: " + ", ".join(
                [f"{unusable} point(s) without a valid repetition"] + runs.phrases()))
    if left:
        head.append("left out: " + "; ".join(left))
    verdicts = cmp.verdicts()
    median = cmp.median_pct()
    tail = []
    if cmp.matched:
        tail.append(f"J/out-tok, B vs A: {verdicts.get(LOWER, 0)} lower, "
                    f"{verdicts.get(HIGHER, 0)} higher, {verdicts.get(NO_CLEAR, 0)} no clear "
                    f"change, {verdicts.get(NO_CI, 0)} without a CI (n=1)"
                    + (f"; median Δ {median:+.1f}%" if median is not None else ""))
    tail.append("Δ = (B − A) ÷ mean A; 95% CI: Welch on the repetitions, relative to A's "
                "mean; verdict 'no clear change' when the CI includes 0")
    body = ""
    if cmp.matched:
        body = render_table(chosen, cmp.matched,
                            terminal_width() if width == "auto" else width,
                            hint="--columns or a pipe shows them")
    banner = f"{SIM_BANNER}\n" if cmp.simulated else ""
    return (banner + "\n".join(head) + "\n" + body + "\n".join(tail) + "\n"
            + banner)


def _mean_ci(e: Estimate | None, fmt) -> str:
    # The one wording of a mean and its interval (farm.report.stats.ci_text), as in
    # `recommend` and the report; n is the table's own column (or its header line).
    return ci_text(e, fmt, show_n=False)
