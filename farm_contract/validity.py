"""Validity checks of a measured run, with their thresholds stored beside the verdict.

In the spirit of the ML.ENERGY benchmark's validator: a run that fails a check
is kept, with its reasons, and marked invalid (`farmctl results --valid-only`
leaves it out). A check that
has nothing to judge (no temperature sensor, say) passes with a note; it never
invents a number.
"""

from __future__ import annotations

from collections.abc import Sequence

from farm_contract.records import EnergyWindow, IdleBaseline, Validity, ValidityCheck
from farm_contract.runspec import MeasurementSpec

TEMPERATURE_RANGE_C = (20.0, 95.0)
# Steady power may dip a little below the idle baseline measured minutes
# earlier (sensor noise, clocks settling): allow this margin before failing.
IDLE_MARGIN = 0.95
TDP_MARGIN = 1.02


def _steady(windows: list[EnergyWindow]) -> list[EnergyWindow]:
    return [w for w in windows if w.name == "steady"]


def check_steady_length(windows: list[EnergyWindow], min_s: float,
                        load_points: Sequence[int] = ()) -> ValidityCheck:
    """Pass if the shortest steady-state window lasts at least `min_s` seconds; fail if
    none, or if one of `load_points` (the indices measured) has none: its figures are
    null, and a run that publishes them cannot be valid unseen."""
    steady = _steady(windows)
    if not steady:
        return ValidityCheck(name="steady_window", passed=False, value=None,
                             threshold=f">= {min_s:g} s", detail="no steady-state window")
    without = sorted(set(load_points) - {w.load_point for w in steady})
    if without:
        return ValidityCheck(name="steady_window", passed=False,
                             value=round(min(w.duration_s for w in steady), 3),
                             threshold=f">= {min_s:g} s",
                             detail="no steady window for load point(s) "
                                    + ", ".join(map(str, without)))
    shortest = min(w.duration_s for w in steady)
    return ValidityCheck(name="steady_window", passed=shortest >= min_s,
                         value=round(shortest, 3), threshold=f">= {min_s:g} s",
                         detail=None if shortest >= min_s else
                         "shortest steady window too short to trust its energy")


def check_power_range(windows: list[EnergyWindow], idle: IdleBaseline,
                      tdp_w: float | None) -> ValidityCheck:
    """Pass if every steady window's average power lies between idle and TDP (in W).

    The margins `IDLE_MARGIN` and `TDP_MARGIN` apply; an unknown bound is not
    checked. The value is the steady power farthest from idle.
    """
    powers = [w.avg_power_w for w in _steady(windows) if w.avg_power_w is not None]
    low = idle.idle_power_w
    threshold = f"{_w(low)}–{_w(tdp_w)} W"
    if not powers:
        return ValidityCheck(name="power_range", passed=True, value=None, threshold=threshold,
                             detail="no steady power measured")
    outside = [p for p in powers if (low is not None and p < low * IDLE_MARGIN)
               or (tdp_w is not None and p > tdp_w * TDP_MARGIN)]
    worst = max(outside or powers, key=lambda p: abs(p - (low or 0)))
    return ValidityCheck(name="power_range", passed=not outside, value=round(worst, 2),
                         threshold=threshold,
                         detail="steady power outside idle…TDP" if outside else None)


def _w(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def check_temperature(temperatures_c: list[float]) -> ValidityCheck:
    """Pass if every GPU temperature reading (°C) lies within `TEMPERATURE_RANGE_C`."""
    low, high = TEMPERATURE_RANGE_C
    threshold = f"{low:g}–{high:g} °C"
    if not temperatures_c:
        return ValidityCheck(name="temperature", passed=True, value=None, threshold=threshold,
                             detail="no temperature readings")
    hottest, coolest = max(temperatures_c), min(temperatures_c)
    passed = low <= coolest and hottest <= high
    return ValidityCheck(name="temperature", passed=passed,
                         value=hottest if hottest > high or passed else coolest,
                         threshold=threshold, detail=None if passed else "outside range")


# Windows whose energy the reported figures are made of (J/token, net of idle).
# Others (load, warm-up, the whole run) keep their own `disagrees` flag but do not
# invalidate the run: a short run full of load steps aliases 100 ms sampling there.
FIGURE_WINDOWS = ("steady", "idle", "idle_ctx")


def check_agreement(windows: list[EnergyWindow], spec: MeasurementSpec) -> ValidityCheck:
    """Pass unless timeline and counter energy disagree on a steady or idle window.

    Only windows at least `agreement_min_window_s` long are judged. The value is
    the agreement (timeline ÷ counter) farthest from 1. A window that disagrees
    without a ratio (an import found its counter unchecked by a read timeline,
    farm/report/recheck.py) fails too: a missing ratio is no agreement.
    """
    threshold = (f"|timeline/counter − 1| <= {spec.agreement_tolerance:.0%} "
                 f"on steady and idle windows >= {spec.agreement_min_window_s:g} s")
    judged = [w for w in windows if w.name in FIGURE_WINDOWS
              and (w.agreement is not None or w.disagrees)
              and w.duration_s >= spec.agreement_min_window_s]
    if not judged:
        return ValidityCheck(name="agreement", passed=True, value=None, threshold=threshold,
                             detail="no window long enough to compare")
    ratios = [w.agreement for w in judged if w.agreement is not None]
    worst = max(ratios, key=lambda a: abs(a - 1.0), default=None)
    bad = [w for w in judged if w.disagrees]
    return ValidityCheck(
        name="agreement", passed=not bad, value=None if worst is None else round(worst, 4),
        threshold=threshold,
        detail=("disagree: " + ", ".join(
            w.name + (f"[{w.load_point}]" if w.load_point is not None else "")
            + (" (no timeline ratio)" if w.agreement is None else "") for w in bad))
        if bad else None)


def validate(windows: list[EnergyWindow], idle: IdleBaseline, tdp_w: float | None,
             temperatures_c: list[float], spec: MeasurementSpec,
             load_points: Sequence[int] = ()) -> Validity:
    """The run's verdict: every check with its threshold; valid only if all pass
    (`load_points`: the indices of the load points measured)."""
    checks = [
        check_steady_length(windows, spec.min_steady_s, load_points),
        check_power_range(windows, idle, tdp_w),
        check_temperature(temperatures_c),
        check_agreement(windows, spec),
    ]
    return Validity(valid=all(c.passed for c in checks), checks=checks)
