"""The rate sweep's stop rules and knee (`farm_contract.runspec.RateSweep`). Pure.

A rate sweep offers `start` × `factor`^k req/s, open loop, and stops after the
first load point that shows the server saturated. Each rule is named, and the
point that met it records the name (`LoadPointResult.saturation`) and the
numbers in a note:

- `achieved_below_offered`: achieved request throughput (steady tokens ÷ mean
  output tokens ÷ window) below `min_achieved_pct` % of the rate actually
  offered inside the same window (`offered_rps`: the arrivals are random, so
  the nominal rate would read as a shortfall at a few requests per window);
- `throughput_flat`: achieved throughput up less than `min_gain_pct` % over the
  previous point, though the offered rate rose by `factor`;
- `ttft_growth`: median TTFT above `max_ttft_growth` × the first point's (the
  queue grows without bound past capacity; GuideLLM stops latency runs there).

The throughput rules judge a point only when its steady window holds at least
`min_requests` requests (and, for `throughput_flat`, the previous point's too):
near idle a window of 30 s holds one or two requests, and their count is noise.
The knee is the highest rate before the saturated point (`knee = true`); none
when the first point saturated or the sweep ran out of points.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm_contract.records import LoadPointResult
from farm_contract.runspec import RateSweep

ACHIEVED = "achieved_below_offered"
FLAT = "throughput_flat"
TTFT = "ttft_growth"


@dataclass(frozen=True)
class Saturation:
    """A stop rule met at one point: its name and the numbers that met it."""

    rule: str
    detail: str


def _requests_in_window(lp: LoadPointResult) -> float | None:
    window_s = _window_s(lp)
    return lp.offered_rps * window_s if lp.offered_rps is not None and window_s else None


def _window_s(lp: LoadPointResult) -> float | None:
    # steady tokens ÷ tokens/s = the window's length
    if lp.steady_output_tokens is None or not lp.output_throughput_tps:
        return None
    return lp.steady_output_tokens / lp.output_throughput_tps


def _enough(lp: LoadPointResult, sweep: RateSweep) -> bool:
    n = _requests_in_window(lp)
    return n is not None and n >= sweep.min_requests


def saturation(points: list[LoadPointResult], sweep: RateSweep) -> Saturation | None:
    """The stop rule the last of `points` meets (None: the sweep goes on)."""
    lp = points[-1]
    achieved = lp.request_throughput_rps
    if achieved is not None and lp.offered_rps and _enough(lp, sweep):
        share = 100.0 * achieved / lp.offered_rps
        if share < sweep.min_achieved_pct:
            return Saturation(ACHIEVED, f"achieved {achieved:.4g} req/s = {share:.1f}% of the "
                                        f"{lp.offered_rps:.4g} req/s offered "
                                        f"(< {sweep.min_achieved_pct:g}%)")
    if len(points) >= 2:
        before = points[-2]
        if (achieved is not None and before.request_throughput_rps
                and _enough(lp, sweep) and _enough(before, sweep)):
            gain = 100.0 * (achieved / before.request_throughput_rps - 1.0)
            if gain < sweep.min_gain_pct:
                return Saturation(FLAT, f"throughput {before.request_throughput_rps:.4g} → "
                                        f"{achieved:.4g} req/s: {gain:+.1f}% "
                                        f"(< {sweep.min_gain_pct:g}%)")
        first = points[0].ttft.p50_ms
        now = lp.ttft.p50_ms
        if first and now is not None and now > sweep.max_ttft_growth * first:
            return Saturation(TTFT, f"median TTFT {now:.4g} ms = {now / first:.1f}× the first "
                                    f"point's {first:.4g} ms (> {sweep.max_ttft_growth:g}×)")
    return None


def mark(points: list[LoadPointResult], found: Saturation | None,
         sweep: RateSweep) -> list[LoadPointResult]:
    """The points with the stop rule on the last (if met) and the knee on the one
    before it; a note on the last says why the sweep stopped."""
    if not points:
        return points
    marked = list(points)
    last = marked[-1]
    if found is None:
        note = (f"rate sweep: no stop rule met in {len(points)} point(s) "
                f"(max_points {sweep.max_points}): no knee")
        marked[-1] = last.model_copy(update={"notes": [*last.notes, note]})
        return marked
    note = f"rate sweep stopped here ({found.rule}): {found.detail}"
    marked[-1] = last.model_copy(update={"saturation": found.rule,
                                         "notes": [*last.notes, note]})
    if len(marked) >= 2:
        knee = marked[-2]
        marked[-2] = knee.model_copy(update={
            "knee": True,
            "notes": [*knee.notes, f"rate sweep knee: {knee.value:g} req/s, the highest "
                                   "rate before saturation"]})
    return marked
