"""An imported result re-checked from its raw measurements, never trusted.

An export carries both the raw measurements (energy windows' counter deltas,
the power timeline, every request) and figures derived from them (J/token, net
of idle, the validity verdict). A manifest can be re-hashed after any edit, so
on import the derived figures are thrown away and derived again here, by the
same rules the worker used (`farm_contract.derive`, `farm_contract.validity`,
`farm_contract.stalls`). Values no GPU can produce are refused, naming the file,
row and field: negative energy, power below 0 or above `POWER_CEILING` × the
GPU's power limit, a window's timeline energy that the exported timeline does
not integrate to, and a J/token other than the windows and requests give
(an edited figure, or tokens the requests never emitted).

What cannot be derived again is taken as reported and says so in the verdict's
check: pauses between the worker's phases (`stalls`) and the GPU tuning read
back (`tuning`) exist only in the worker's own check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from farm.report.dataset import DatasetError
from farm_contract.derive import (
    counted_figures,
    counts,
    idle_power_for_net,
    steady_figures,
    timeline_integral,
    with_idle_and_carbon,
)
from farm_contract.engines import engine_kind
from farm_contract.records import (
    EnergyWindow,
    IdleBaseline,
    LatencyStats,
    LoadPointResult,
    PowerTrace,
    RequestRecord,
    RunResult,
    Validity,
    ValidityCheck,
)
from farm_contract.rules import Slo, goodput_of, tpot_s
from farm_contract.runspec import MeasurementSpec, RunSpec
from farm_contract.stalls import check_stalls, sample_gaps
from farm_contract.validity import validate

# Instantaneous power overshoots the limit briefly (H100: ~1.3× for milliseconds);
# twice the limit is no reading of a working GPU.
POWER_CEILING = 2.0
# Timeline energy re-integrated from the exported (rounded, float32) samples agrees
# with the worker's own integral far closer than this.
TIMELINE_TOLERANCE = 0.10
# J/token derived again agrees with the exported one but for a token that crossed
# the window's edge through the float32 of the stored inter-token gaps.
TOKEN_SLACK = 1
# Exported load-point figures that no measurement makes negative (net of idle may be).
NON_NEGATIVE = ("energy_j", "energy_per_output_token_j", "energy_per_request_j",
                "output_tokens_per_j", "avg_power_w", "peak_power_w", "gco2e_per_1k_tokens")
# Checks only the worker could make: kept as it reported them.
AS_REPORTED = ("tuning",)


@dataclass(frozen=True)
class Where:
    """Where a run's values are in the export, for naming them in a refusal."""

    runs_file: str
    runs_row: int                # 1-based data row of the run in runs_file
    timelines_file: str
    timelines_row: int           # 1-based data row of the run's first timeline sample

    def result(self, run_id: str, field: str) -> str:
        """Where `field` of the run's result_json is: file, row, run and field."""
        return f"{self.runs_file} row {self.runs_row} (run {run_id}), result_json {field}"


def recheck(result: RunResult, spec: RunSpec, where: Where) -> RunResult:
    """`result` with its windows' derived values, idle baseline, load-point figures
    and validity derived again from its raw measurements; DatasetError (naming the
    file, row and field) for a value no GPU produces."""
    if result.status != "succeeded":
        return result
    _refuse_impossible(result, where)
    windows = [_window(w, result.trace, spec.measurement, where.result(
        result.run_id, f"windows[{i}] ({_name(w)})")) for i, w in enumerate(result.windows)]
    idle = _idle(windows)
    net_idle_w = idle_power_for_net(idle.idle_power_w, idle.idle_ctx_power_w)
    carbon = result.host_energy.carbon_intensity_g_per_kwh if result.host_energy else None
    by_point: dict[int, list[RequestRecord]] = {}
    for r in result.requests:
        by_point.setdefault(r.load_point, []).append(r)
    points = []
    for i, lp in enumerate(result.load_points):
        steady = next((w for w in windows if w.name == "steady" and w.load_point == lp.index),
                      None)
        again = (_reported_point(lp, steady, net_idle_w, carbon)
                 if engine_kind(spec.engine.kind).reported_counts
                 else _point(lp, steady, by_point.get(lp.index, []), net_idle_w, carbon))
        _same_per_token(lp, again, where.result(result.run_id, f"load_points[{i}]"))
        points.append(again)
    return result.model_copy(update={
        "windows": windows, "idle": idle, "load_points": points,
        "validity": _validity(result, windows, idle, spec.measurement)})


# ------------------------------------------------------------------ refusals


def _refuse_impossible(result: RunResult, where: Where) -> None:
    limits = [g.power_limit_w for g in result.gpus]
    total_limit = sum(limits) if limits and None not in limits else None  # type: ignore[arg-type]
    for i, w in enumerate(result.windows):
        at = where.result(result.run_id, f"windows[{i}] ({_name(w)})")
        for field, value in (("energy_j", w.energy_j), ("timeline_energy_j", w.timeline_energy_j),
                             *((f"per_gpu_energy_j[{g}]", e)
                               for g, e in enumerate(w.per_gpu_energy_j))):
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise DatasetError(f"{at} {field} = {value:g} J: negative energy")
        if w.duration_s < 0:
            raise DatasetError(f"{at} duration_s = {w.duration_s:g} s: negative")
        if (w.energy_j is not None and w.duration_s > 0 and total_limit
                and w.energy_j / w.duration_s > POWER_CEILING * total_limit):
            raise DatasetError(
                f"{at} energy_j = {w.energy_j:g} J over {w.duration_s:g} s: "
                f"{w.energy_j / w.duration_s:.0f} W, above {POWER_CEILING:g} × the GPUs' "
                f"power limit ({total_limit:g} W)")
    if result.idle is not None:
        for field in ("idle_power_w", "idle_ctx_power_w"):
            value = getattr(result.idle, field)
            if value is not None and value < 0:
                raise DatasetError(f"{where.result(result.run_id, 'idle.' + field)} = "
                                   f"{value:g} W: negative power")
    for i, lp in enumerate(result.load_points):
        for field in NON_NEGATIVE:
            value = getattr(lp, field)
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise DatasetError(f"{where.result(result.run_id, f'load_points[{i}]')}."
                                   f"{field} = {value:g}: negative (no measurement gives it)")
    if result.trace is not None:
        _refuse_power(result.trace, limits, result.run_id, where)


def _refuse_power(trace: PowerTrace, limits: list[float | None], run_id: str,
                  where: Where) -> None:
    n = len(trace.t_s)
    for g, series in enumerate(trace.power_w):
        limit = limits[g] if g < len(limits) else None
        for s, watts in enumerate(series):
            if watts is None:
                continue
            if watts < 0 or (limit and watts > POWER_CEILING * limit):
                bound = ("below 0" if watts < 0 else
                         f"above {POWER_CEILING:g} × the GPU's power limit ({limit:g} W)")
                raise DatasetError(
                    f"{where.timelines_file} row {where.timelines_row + g * n + s} (run "
                    f"{run_id}, GPU {g}, sample {s}) power_w = {watts:g} W: {bound}")


def _same_per_token(exported: LoadPointResult, again: LoadPointResult, at: str) -> None:
    """Refuse an exported J/token the windows and requests do not give."""
    old, new = exported.energy_per_output_token_j, again.energy_per_output_token_j
    energy, tokens = again.energy_j, again.steady_output_tokens
    if old is None or new is None or energy is None or not tokens:
        return
    low = energy / (tokens + TOKEN_SLACK) * (1 - 1e-6)
    high = energy / max(tokens - TOKEN_SLACK, 1) * (1 + 1e-6) if tokens > TOKEN_SLACK else None
    if old < low or (high is not None and old > high):
        side = "below" if old < new else "above"
        raise DatasetError(
            f"{at}.energy_per_output_token_j = {old:.6g} J: {side} what its steady window's "
            f"energy and the requests' tokens give ({new:.6g} J = "
            f"{again.energy_j:g} J ÷ {again.steady_output_tokens} tokens)")


# ------------------------------------------------------------------ derived again


def _name(w: EnergyWindow) -> str:
    return w.name + (f"[{w.load_point}]" if w.load_point is not None else "")


def _window(w: EnergyWindow, trace: PowerTrace | None, spec: MeasurementSpec,
            at: str) -> EnergyWindow:
    # The worker's rule on the exported samples (farm_contract.derive).
    timeline_j, avg_w, peak_w = ((None, None, None) if trace is None else
                                 timeline_integral(trace.t_s, trace.power_w, w.start_s,
                                                   w.duration_s))
    if (timeline_j is not None and w.timeline_energy_j is not None and timeline_j > 0
            and abs(w.timeline_energy_j / timeline_j - 1.0) > TIMELINE_TOLERANCE):
        raise DatasetError(
            f"{at} timeline_energy_j = {w.timeline_energy_j:g} J, but the exported power "
            f"timeline integrates to {timeline_j:.6g} J over the window: the timeline and "
            "the windows do not belong together")
    energy = w.energy_j
    agreement = timeline_j / energy if timeline_j is not None and energy else None
    return w.model_copy(update={
        "timeline_energy_j": timeline_j,
        "avg_power_w": (energy / w.duration_s if energy is not None and w.duration_s > 0
                        else avg_w),
        "peak_power_w": peak_w, "agreement": agreement,
        "disagrees": (agreement is not None and w.duration_s >= spec.agreement_min_window_s
                      and abs(agreement - 1.0) > spec.agreement_tolerance)})


def _idle(windows: list[EnergyWindow]) -> IdleBaseline:
    """The idle baseline from the idle windows, as workers/baseline.py takes it."""
    def power(name: str) -> float | None:
        w = next((w for w in windows if w.name == name), None)
        return w.avg_power_w if w is not None else None
    return IdleBaseline(idle_power_w=power("idle"), idle_ctx_power_w=power("idle_ctx"))


def _point(lp: LoadPointResult, steady: EnergyWindow | None, requests: list[RequestRecord],
           idle_w: float | None, carbon: float | None) -> LoadPointResult:
    """A load point's figures from its requests and steady window (workers/metrics.py's
    rules); what only the engine or load generator knew is kept as exported."""
    tallies = counts(requests)
    ok = [r for r in requests if r.ok]
    mean_out = tallies["output_tokens"] / len(ok) if ok else None
    slo = (Slo.from_ms(lp.slo_ttft_ms, lp.slo_tpot_ms)
           if lp.slo_ttft_ms is not None and lp.slo_tpot_ms is not None else None)
    goodput = goodput_of(requests, lp.duration_s, slo) if slo is not None else None
    again = lp.model_copy(update={
        **tallies, **steady_figures(requests, steady, mean_out),
        "ttft": LatencyStats.of_seconds([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot": LatencyStats.of_seconds([t for t in map(tpot_s, ok) if t is not None]),
        "itl": LatencyStats.of_seconds([g for r in ok for g in r.itl_s]),
        "e2e": LatencyStats.of_seconds([r.e2e_s for r in ok if r.e2e_s is not None]),
        "good_requests": goodput.good_requests if goodput else None,
        "slo_attainment": goodput.attainment if goodput else None,
        "goodput_rps": goodput.goodput_rps if goodput else None,
        "slo_p99_met": goodput.p99_met if goodput else None,
    })
    return with_idle_and_carbon(again, steady, idle_w, carbon)


def _reported_point(lp: LoadPointResult, steady: EnergyWindow | None, idle_w: float | None,
                    carbon: float | None) -> LoadPointResult:
    """A measured command's load point: its counts are its load tool's (kept as
    exported, there are no requests to count again), its figures derived again from
    them and its steady window (workers/metrics.py's `reported_result`)."""
    again = lp.model_copy(update=counted_figures(lp.output_tokens, lp.num_ok, steady))
    return with_idle_and_carbon(again, steady, idle_w, carbon)


def _validity(result: RunResult, windows: list[EnergyWindow], idle: IdleBaseline,
              spec: MeasurementSpec) -> Validity:
    """The verdict by the worker's rules on the exported measurements; the checks
    only the worker could make (phase pauses, tuning) as it reported them."""
    limits = [g.power_limit_w for g in result.gpus]
    tdp_w = sum(w for w in limits if w is not None) or None
    tuning = result.preflight.tuning if result.preflight is not None else []
    applied = [t.applied_power_limit_w for t in tuning]
    if applied and None not in applied:   # steady power is bounded by the run's own limit
        tdp_w = sum(w for w in applied if w is not None)
    trace = result.trace
    temperatures = ([v for series in trace.temperature_c or [] for v in series if v is not None]
                    if trace is not None else [])
    checks = list(validate(windows, idle, tdp_w, temperatures, spec).checks)
    reported = {c.name: c for c in (result.validity.checks if result.validity else [])}
    gaps = check_stalls([], sample_gaps(windows, trace.t_s if trace else [],
                                        spec.sample_period_s), spec.sample_period_s)
    pauses = reported.get("stalls")
    if pauses is not None and not pauses.passed and gaps.passed:
        gaps = _as_reported(pauses)      # a pause between phases only the worker saw
    checks.append(gaps)
    derived = {c.name for c in checks}
    checks += [_as_reported(c) for name, c in reported.items()
               if name in AS_REPORTED or name not in derived]
    return Validity(valid=all(c.passed for c in checks), checks=checks)


def _as_reported(check: ValidityCheck) -> ValidityCheck:
    note = "as the worker reported it (not derivable from the export)"
    return check.model_copy(update={"detail": f"{check.detail}; {note}" if check.detail
                                    else note})
