"""An imported result re-checked from its raw measurements, never trusted.

An export carries both the raw measurements (energy windows' counter deltas,
the power timeline, every request) and figures derived from them (J/token, net
of idle, the validity verdict). A manifest can be re-hashed after any edit, so
on import the derived figures are thrown away and derived again here, by the
same rules the worker used (`farm_contract.derive`, `farm_contract.validity`,
`farm_contract.stalls`). Values no GPU can produce are refused, naming the file,
row and field: negative or non-finite energy, power or latency, power above
`POWER_CEILING` × the GPU's power limit, a window's timeline energy that the
exported timeline does not integrate to, a request row twice (same load point and
index), or of no load point, and a J/token other than the windows and requests give
(an edited figure, a null one where they give one, or tokens the requests never
emitted). A failed result is checked the same way and keeps no verdict (the worker
judges no failed run).

A long window whose counter the timeline cannot check (the GPUs were read, but not
at two samples inside a window of `INTEGRABLE_PERIODS` sampling periods) disagrees:
a gap in the timeline must not pass the agreement check a whole timeline would fail.

What cannot be derived again is taken as reported and says so in the verdict's
check: pauses between the worker's phases (`stalls`) and the GPU tuning read
back (`tuning`) exist only in the worker's own check.
"""

from __future__ import annotations

import functools
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
    GpuInfo,
    IdleBaseline,
    LatencyStats,
    LoadPointResult,
    PowerTrace,
    RequestRecord,
    RunResult,
    Validity,
    ValidityCheck,
)
from farm_contract.routing import gpu_model
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
# A window this many sampling periods long holds two samples of a timeline read
# throughout it, a late one included: without an integral, samples are missing.
INTEGRABLE_PERIODS = 3
AS_REPORTED = ("tuning",)


@dataclass(frozen=True)
class Where:
    """Where a run's values are in the export, for naming them in a refusal."""

    runs_file: str
    runs_row: int                # 1-based data row of the run in runs_file
    timelines_file: str
    timelines_row: int           # 1-based data row of the run's first timeline sample
    requests_file: str = "requests"
    requests_row: int | None = None  # 1-based data row of the run's first request, if known

    def result(self, run_id: str, field: str) -> str:
        """Where `field` of the run's result_json is: file, row, run and field."""
        return f"{self.runs_file} row {self.runs_row} (run {run_id}), result_json {field}"

    def request(self, run_id: str, number: int, request: RequestRecord, field: str) -> str:
        """Where `field` of the run's `number`th (0-based) request row is."""
        which = f"run {run_id}, load point {request.load_point}, request {request.index}"
        if self.requests_row is None:
            return f"{self.requests_file} ({which}) {field}"
        return f"{self.requests_file} row {self.requests_row + number} ({which}) {field}"


def recheck(result: RunResult, spec: RunSpec, where: Where) -> RunResult:
    """`result` with its windows' derived values, idle baseline, load-point figures
    and validity derived again from its raw measurements; DatasetError (naming the
    file, row and field) for a value no GPU produces. A failed result is checked
    alike (its figures are shown too) and has no verdict, as the worker gives it."""
    _refuse_impossible(result, where)
    _refuse_requests(result, where)
    read = _timeline_read(result.trace)
    windows = [_window(w, result.trace, read, spec.measurement, where.result(
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
    validity = (_validity(result, windows, idle, spec.measurement)
                if result.status == "succeeded" else None)
    return result.model_copy(update={
        "windows": windows, "idle": idle, "load_points": points, "validity": validity})


# ------------------------------------------------------------------ refusals


def _ceiling_limit_w(gpu: GpuInfo) -> float | None:
    """The power limit the ceilings are judged against: the exported one, else the
    catalogue's TDP for the GPU's model (a null limit must not lift every ceiling)."""
    if gpu.power_limit_w is not None:
        return gpu.power_limit_w
    model = gpu_model(gpu.model)
    return float(model.tdp_w) if model is not None and model.tdp_w > 0 else None


def _refuse_impossible(result: RunResult, where: Where) -> None:
    limits = [_ceiling_limit_w(g) for g in result.gpus]
    total_limit = sum(limits) if limits and None not in limits else None  # type: ignore[arg-type]
    for i, w in enumerate(result.windows):
        at = where.result(result.run_id, f"windows[{i}] ({_name(w)})")
        for field, value in (("energy_j", w.energy_j), ("timeline_energy_j", w.timeline_energy_j),
                             *((f"per_gpu_energy_j[{g}]", e)
                               for g, e in enumerate(w.per_gpu_energy_j))):
            if value is not None and not math.isfinite(value):
                raise DatasetError(f"{at} {field} = {value:g} J: not a finite number")
            if value is not None and value < 0:
                raise DatasetError(f"{at} {field} = {value:g} J: negative energy")
        for field, value in (("start_s", w.start_s), ("duration_s", w.duration_s)):
            if not math.isfinite(value):
                raise DatasetError(f"{at} {field} = {value:g} s: not a finite number")
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
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise DatasetError(f"{where.result(result.run_id, 'idle.' + field)} = "
                                   f"{value:g} W: {_not_a_reading(value)} power")
    for i, lp in enumerate(result.load_points):
        for field in NON_NEGATIVE:
            value = getattr(lp, field)
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise DatasetError(f"{where.result(result.run_id, f'load_points[{i}]')}."
                                   f"{field} = {value:g}: {_not_a_reading(value)} "
                                   "(no measurement gives it)")
    if result.trace is not None:
        _refuse_trace(result.trace, limits, result.run_id, where)


def _not_a_reading(value: float) -> str:
    return "negative" if math.isfinite(value) else "not a finite number"


def _refuse_trace(trace: PowerTrace, limits: list[float | None], run_id: str,
                  where: Where) -> None:
    """Refuse a sample no sensor reads: NaN or infinite in any series (it would pass
    every bound and void the integral), and power outside 0 … POWER_CEILING × limit."""
    n = len(trace.t_s)

    def at(g: int, s: int, field: str) -> str:
        return (f"{where.timelines_file} row {where.timelines_row + g * n + s} (run "
                f"{run_id}, GPU {g}, sample {s}) {field}")

    for s, t in enumerate(trace.t_s):
        if not math.isfinite(t):
            raise DatasetError(f"{at(0, s, 't_s')} = {t:g} s: not a finite number")
    for name in ("power_w", "memory_power_w", "temperature_c", "sm_clock_mhz"):
        for g, series in enumerate(getattr(trace, name) or []):
            for s, value in enumerate(series):
                if value is not None and not math.isfinite(value):
                    raise DatasetError(f"{at(g, s, name)} = {value:g}: not a finite number")
    for g, series in enumerate(trace.power_w):
        limit = limits[g] if g < len(limits) else None
        for s, watts in enumerate(series):
            if watts is None:
                continue
            if watts < 0 or (limit and watts > POWER_CEILING * limit):
                bound = ("below 0" if watts < 0 else
                         f"above {POWER_CEILING:g} × the GPU's power limit ({limit:g} W)")
                raise DatasetError(f"{at(g, s, 'power_w')} = {watts:g} W: {bound}")


def _refuse_requests(result: RunResult, where: Where) -> None:
    """Refuse request rows that would miscount a load point: a row twice (its tokens
    counted twice halve J/token), a row of no load point, a negative token count, a
    latency that is not a number."""
    points = {lp.index for lp in result.load_points}
    seen: set[tuple[int, int]] = set()
    for number, r in enumerate(result.requests):
        at = functools.partial(where.request, result.run_id, number, r)
        if r.load_point not in points:
            raise DatasetError(f"{at('load_point')} = {r.load_point}: the result has no such "
                               f"load point (it has {sorted(points)})")
        if (r.load_point, r.index) in seen:
            raise DatasetError(f"{at('index')} = {r.index}: a second row for this load point "
                               "and index (its tokens would count twice)")
        seen.add((r.load_point, r.index))
        for field in ("input_tokens", "output_tokens"):
            tokens = getattr(r, field)
            if tokens is not None and tokens < 0:
                raise DatasetError(f"{at(field)} = {tokens}: negative token count")
        for field in ("scheduled_s", "sent_s", "ttft_s", "e2e_s"):
            seconds = getattr(r, field)
            if seconds is not None and not math.isfinite(seconds):
                raise DatasetError(f"{at(field)} = {seconds:g} s: not a finite number")
        if not all(map(math.isfinite, r.itl_s)):
            j = next(j for j, gap in enumerate(r.itl_s) if not math.isfinite(gap))
            raise DatasetError(f"{at(f'itl_s[{j}]')} = {r.itl_s[j]:g} s: not a finite number")


def _same_per_token(exported: LoadPointResult, again: LoadPointResult, at: str) -> None:
    """Refuse an exported J/token the windows and requests do not give, a null one
    included (the store would show the one derived here, unchecked)."""
    old, new = exported.energy_per_output_token_j, again.energy_per_output_token_j
    energy, tokens = again.energy_j, again.steady_output_tokens
    if new is None or energy is None or not tokens:
        return
    if old is None:
        raise DatasetError(
            f"{at}.energy_per_output_token_j = null, but its steady window's energy and the "
            f"requests' tokens give {new:.6g} J (= {energy:g} J ÷ {tokens} tokens)")
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


def _timeline_read(trace: PowerTrace | None) -> bool:
    """Whether the timeline has any sample with every GPU's power (one that can check a
    counter); a run without a power sensor has none, and no agreement to judge."""
    if trace is None or not trace.power_w:
        return False
    return any(all(v is not None for v in values) for values in zip(*trace.power_w))


def _window(w: EnergyWindow, trace: PowerTrace | None, read: bool, spec: MeasurementSpec,
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
    judged = w.duration_s >= spec.agreement_min_window_s
    # A counter the read timeline gives no ratio for (no integral where one was due,
    # or 0 J against a positive integral) is unchecked: it disagrees, not passes unseen.
    due = read and w.duration_s >= INTEGRABLE_PERIODS * spec.sample_period_s
    unchecked = (due and energy is not None and agreement is None
                 and (timeline_j is None or timeline_j > 0))
    return w.model_copy(update={
        "timeline_energy_j": timeline_j,
        "avg_power_w": (energy / w.duration_s if energy is not None and w.duration_s > 0
                        else avg_w),
        "peak_power_w": peak_w, "agreement": agreement,
        "disagrees": judged and (unchecked or (
            agreement is not None and abs(agreement - 1.0) > spec.agreement_tolerance))})


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
    checks = list(validate(windows, idle, tdp_w, temperatures, spec,
                           [lp.index for lp in result.load_points]).checks)
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
