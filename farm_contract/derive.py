"""Figures derived from a run's raw measurements: the one rule both sides apply. Pure.

A worker derives each load point's energy figures from its steady window and its
request records (`workers/metrics.py`); an import derives them again from the
exported windows and requests (`farm/report/recheck.py`) instead of taking the
exported numbers. Energy per token is taken over the steady window only: tokens
counted there are those emitted inside it, placed by each request's send time,
TTFT and inter-token gaps. A figure whose input is missing is None, never 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from farm_contract.records import EnergyWindow, LoadPointResult, RequestRecord

J_PER_KWH = 3.6e6
# Decimal places stored: a trace's sample times (0.1 ms), a window's edges (1 µs).
TRACE_DIGITS = 4
WINDOW_DIGITS = 6


def ratio(num: float | None, den: float | None) -> float | None:
    """num ÷ den; None when either is missing or den is not positive."""
    if num is None or den is None or den <= 0:
        return None
    return num / den


def token_times_s(req: RequestRecord) -> list[float]:
    """Emission time of each output token (offsets on the run clock)."""
    if not req.ok or req.ttft_s is None:
        return []
    t = req.sent_s + req.ttft_s
    times = [t]
    for gap in req.itl_s:
        t += gap
        times.append(t)
    return times


def tokens_in(requests: list[RequestRecord], start_s: float, end_s: float) -> int:
    """How many output tokens were emitted between `start_s` and `end_s` (run clock, inclusive)."""
    return sum(1 for r in requests for t in token_times_s(r) if start_s <= t <= end_s)


def counts(requests: list[RequestRecord]) -> dict[str, Any]:
    """A load point's request and token counts from its request records; input tokens
    None when a successful request's are not known (a sum of the others would read low)."""
    ok = [r for r in requests if r.ok]
    inputs = [r.input_tokens for r in ok]
    return {"num_requests": len(requests), "num_ok": len(ok),
            "num_failed": len(requests) - len(ok),
            "input_tokens": None if None in inputs else sum(inputs),  # type: ignore[arg-type]
            "output_tokens": sum(r.output_tokens or 0 for r in ok)}


def steady_figures(requests: list[RequestRecord], steady: EnergyWindow | None,
                   mean_out: float | None) -> dict[str, Any]:
    """Throughput and gross energy figures of a load point over its steady window.

    `mean_out`: mean output tokens per successful request (J/request's multiplier).
    """
    tokens = (tokens_in(requests, steady.start_s, steady.start_s + steady.duration_s)
              if steady else None)
    return window_figures(tokens, steady, mean_out)


def counted_figures(output_tokens: int | None, num_ok: int, steady: EnergyWindow | None
                    ) -> dict[str, Any]:
    """`steady_figures` for a load point whose window holds the whole load: a measured
    command (`farmctl measure`), whose tool counted `output_tokens` over `num_ok`
    successful requests, all of them sent and finished while the window was open."""
    mean_out = ratio(output_tokens, num_ok)
    return window_figures(output_tokens if steady else None, steady, mean_out)


def window_figures(tokens: int | None, steady: EnergyWindow | None,
                   mean_out: float | None) -> dict[str, Any]:
    """Throughput and gross energy figures of `tokens` output tokens emitted inside
    the steady window."""
    tps = ratio(tokens, steady.duration_s if steady else None)
    energy = steady.energy_j if steady else None
    per_token = ratio(energy, tokens)
    return {
        "steady_output_tokens": tokens,
        "request_throughput_rps": ratio(tps, mean_out),
        "output_throughput_tps": tps,
        "energy_j": energy,
        "energy_per_output_token_j": per_token,
        "energy_per_request_j": (per_token * mean_out
                                 if per_token is not None and mean_out else None),
        "output_tokens_per_j": ratio(tokens, energy),
        "avg_power_w": steady.avg_power_w if steady else None,
        "peak_power_w": steady.peak_power_w if steady else None,
    }


def per_total_token(j_per_output_token: float | None, input_tokens: int | None,
                    output_tokens: int | None) -> float | None:
    """J per total token (input + output) from J per output token and the load point's
    token counts: each output token's energy spread over the prompt tokens that came
    with it (InferenceX reports it beside J/output token). None where the input tokens
    are not known, never a figure that counts them as 0."""
    if j_per_output_token is None or input_tokens is None or not output_tokens:
        return None
    return j_per_output_token * output_tokens / (input_tokens + output_tokens)


def with_idle_and_carbon(lp: LoadPointResult, steady: EnergyWindow | None,
                         idle_power_w: float | None,
                         carbon_g_per_kwh: float | None) -> LoadPointResult:
    """Add the figures derived from the gross ones: net of idle, per total token
    (gross and net) and emissions (each None where an input is None).

    Net of idle = gross steady energy minus the idle power (context held, where
    measured) over the same window: the energy the work itself added.
    gCO2e per 1k tokens uses the GPUs' gross steady energy and the grid's
    carbon intensity for the sweep's region.
    """
    net = (lp.energy_j - idle_power_w * steady.duration_s
           if lp.energy_j is not None and idle_power_w is not None and steady else None)
    tokens = lp.steady_output_tokens
    net_per_token = ratio(net, tokens)
    mean_out = lp.output_tokens / lp.num_ok if lp.num_ok else None
    net_per_request = (net_per_token * mean_out
                       if net_per_token is not None and mean_out else None)
    return lp.model_copy(update={
        "energy_per_total_token_j": per_total_token(lp.energy_per_output_token_j,
                                                    lp.input_tokens, lp.output_tokens),
        "energy_net_j": net,
        "energy_per_output_token_net_j": net_per_token,
        "energy_per_total_token_net_j": per_total_token(net_per_token, lp.input_tokens,
                                                        lp.output_tokens),
        "energy_per_request_net_j": net_per_request,
        # Gross = net + this: at an open-loop rate it is the idle time between
        # requests charged to them, large near idle, small at saturation.
        "idle_energy_per_request_j": (lp.energy_per_request_j - net_per_request
                                      if lp.energy_per_request_j is not None
                                      and net_per_request is not None else None),
        "output_tokens_per_j_net": ratio(tokens, net),
        "avg_power_net_w": (lp.avg_power_w - idle_power_w
                            if lp.avg_power_w is not None and idle_power_w is not None else None),
        "gco2e_per_1k_tokens": grams_per_1k(lp.energy_per_output_token_j, carbon_g_per_kwh),
        "gco2e_per_1k_tokens_net": grams_per_1k(net_per_token, carbon_g_per_kwh),
    })


def grams_per_1k(j_per_token: float | None, g_per_kwh: float | None) -> float | None:
    """gCO2e per 1,000 tokens at `j_per_token` J each and `g_per_kwh` of the grid."""
    if j_per_token is None or g_per_kwh is None:
        return None
    return j_per_token * 1000 / J_PER_KWH * g_per_kwh


def idle_power_for_net(idle_power_w: float | None, idle_ctx_power_w: float | None
                       ) -> float | None:
    """The idle power net figures subtract: context held where measured, else none held."""
    return idle_ctx_power_w or idle_power_w


def window_samples(t_s: Sequence[float], start_s: float, duration_s: float, *,
                   end_included: bool = True) -> list[int]:
    """Indices of the samples inside a window: [start, end], or [start, end) with
    `end_included=False`.

    An integral takes both edges (it spans the whole window); a statistic of the
    readings (median clock, memory power share) leaves the end out, so that a
    sample on the edge between two adjacent windows counts in one of them: the
    later one, which its readings describe (a sample is stamped before them).

    Decided on the numbers as stored — sample times to 0.1 ms, the window's start
    and duration to 1 µs — so that an import picks the same samples from the stored
    trace as the worker did from its own (a sample 5 µs before a window's start,
    stored on it, once moved a short window's integral by 10 %). Every figure
    taken over a window's samples (integral, percentiles, clocks) uses this rule.
    """
    low = round(start_s, WINDOW_DIGITS)
    high = low + round(duration_s, WINDOW_DIGITS)
    if end_included:
        return [i for i, t in enumerate(t_s) if low <= round(t, TRACE_DIGITS) <= high]
    return [i for i, t in enumerate(t_s) if low <= round(t, TRACE_DIGITS) < high]


def timeline_integral(t_s: Sequence[float], power_w: Sequence[Sequence[float | None]],
                      start_s: float, duration_s: float
                      ) -> tuple[float | None, float | None, float | None]:
    """(energy J, average W, peak W) of the summed power timeline over a window.

    The trapezoidal integral of the samples inside the window (`window_samples`),
    scaled to the whole window. A sample some GPU's reading is missing from is a gap
    the integral spans (its neighbours' trapezoid): one failed read must not leave a
    window without the timeline that checks its counter. None when fewer than two
    samples with every GPU's reading fall inside.
    """
    totals: list[tuple[float, float]] = []
    for i in window_samples(t_s, start_s, duration_s):
        values = [series[i] for series in power_w]
        if all(v is not None for v in values):
            totals.append((t_s[i], sum(values)))  # type: ignore[arg-type]
    if len(totals) < 2:
        return None, None, None
    energy = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(totals))
    span = totals[-1][0] - totals[0][0]
    if span <= 0:
        return None, None, None
    average = energy / span
    low = round(start_s, WINDOW_DIGITS)
    high = low + round(duration_s, WINDOW_DIGITS)      # the window's edges as stored
    return average * (high - low), average, max(p for _, p in totals)
