"""Per-load-point figures from request records and the steady-state window. Pure.

Energy per token is taken over the steady-state window only (batch full, before
drain). Tokens counted there are the tokens actually emitted inside the window,
reconstructed from each request's send time, TTFT and inter-token gaps. A
figure whose input is missing is None, never 0.

Goodput (`farm_contract.rules`) is counted here from the request records, so it
is the same for every engine (simulated included) and can be recounted later
under other limits. A server scenario carries its SLO (`slo_ttft_ms`,
`slo_tpot_ms`; `slo_for`); a batch load point has none and its goodput figures
stay None: all its prompts are submitted at once, so its TTFT is queueing by
construction and a latency limit on it would say nothing about the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from farm_contract.records import EnergyWindow, LatencyStats, LoadPointResult, RequestRecord
from farm_contract.rules import Slo, goodput_of, tpot_s
from farm_contract.runspec import BatchLoad, ServerLoad

if TYPE_CHECKING:
    from workers.engines.base import LoadPointOutcome


def slo_for(scenario: ServerLoad | BatchLoad) -> Slo | None:
    """The limits of a run's scenario: a server scenario's SLO; None for batch."""
    if isinstance(scenario, ServerLoad):
        return Slo.from_ms(scenario.slo_ttft_ms, scenario.slo_tpot_ms)
    return None


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


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def load_point_result(index: int, kind: str, value: float, outcome: LoadPointOutcome,
                      steady: EnergyWindow | None,
                      slo: Slo | None = None) -> LoadPointResult:
    """The figures of one load point from what the engine observed (`outcome`).

    Goodput is counted under `slo` (None: no limits apply, goodput figures None).
    What only the load generator knows (`workers.loadgen.LoadgenOutcome`:
    lateness, unsent arrivals, requests in flight) is copied when the outcome
    has it, else left None.
    """
    requests = outcome.requests
    duration_s = outcome.duration_s
    ok = [r for r in requests if r.ok]
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    in_tokens = sum(r.input_tokens or 0 for r in ok)
    mean_out = out_tokens / len(ok) if ok else None

    tpot = [t for t in map(tpot_s, ok) if t is not None]
    steady_tokens = (tokens_in(requests, steady.start_s, steady.start_s + steady.duration_s)
                     if steady else None)
    tps = _ratio(steady_tokens, steady.duration_s if steady else None)
    j_per_token = _ratio(steady.energy_j if steady else None, steady_tokens)
    goodput = goodput_of(requests, duration_s, slo) if slo is not None else None
    lateness = getattr(outcome, "lateness", None)
    offered = None
    if kind == "request_rate" and steady is not None:
        # The rate actually offered while the window was open (arrivals are random),
        # the yardstick of a rate sweep's achieved throughput.
        end_s = steady.start_s + steady.duration_s
        sent = sum(1 for r in requests if steady.start_s <= r.sent_s <= end_s)
        offered = _ratio(sent, steady.duration_s)
    return LoadPointResult(
        index=index, kind=kind, value=value, duration_s=round(duration_s, 4),
        num_requests=len(requests), num_ok=len(ok), num_failed=len(requests) - len(ok),
        input_tokens=in_tokens, output_tokens=out_tokens, steady_output_tokens=steady_tokens,
        request_throughput_rps=_ratio(tps, mean_out),
        output_throughput_tps=tps,
        ttft=LatencyStats.of_seconds([r.ttft_s for r in ok if r.ttft_s is not None]),
        tpot=LatencyStats.of_seconds(tpot),
        itl=LatencyStats.of_seconds([g for r in ok for g in r.itl_s]),
        e2e=LatencyStats.of_seconds([r.e2e_s for r in ok if r.e2e_s is not None]),
        energy_j=steady.energy_j if steady else None,
        energy_per_output_token_j=j_per_token,
        energy_per_request_j=(j_per_token * mean_out
                              if j_per_token is not None and mean_out else None),
        output_tokens_per_j=_ratio(steady_tokens, steady.energy_j if steady else None),
        avg_power_w=steady.avg_power_w if steady else None,
        peak_power_w=steady.peak_power_w if steady else None,
        slo_ttft_ms=round(slo.ttft_s * 1000.0, 6) if slo is not None else None,
        slo_tpot_ms=round(slo.tpot_s * 1000.0, 6) if slo is not None else None,
        good_requests=goodput.good_requests if goodput else None,
        slo_attainment=goodput.attainment if goodput else None,
        goodput_rps=goodput.goodput_rps if goodput else None,
        slo_p99_met=goodput.p99_met if goodput else None,
        lateness=lateness if isinstance(lateness, LatencyStats) else LatencyStats(),
        unsent_requests=getattr(outcome, "unsent", None),
        max_in_flight=getattr(outcome, "max_in_flight", None),
        passes=getattr(outcome, "passes", None),
        steady_extended_s=(round(outcome.extended_s, 4)
                           if getattr(outcome, "extended_s", None) is not None else None),
        offered_rps=offered,
        notes=list(outcome.notes),
    )


J_PER_KWH = 3.6e6


def with_idle_and_carbon(lp: LoadPointResult, steady: EnergyWindow | None,
                         idle_power_w: float | None,
                         carbon_g_per_kwh: float | None) -> LoadPointResult:
    """Add net-of-idle and emissions figures (each None where an input is None).

    Net of idle = gross steady energy minus the idle power (context held, where
    measured) over the same window: the energy the work itself added.
    gCO2e per 1k tokens uses the GPUs' gross steady energy and the grid's
    carbon intensity for the sweep's region.
    """
    net = (lp.energy_j - idle_power_w * steady.duration_s
           if lp.energy_j is not None and idle_power_w is not None and steady else None)
    tokens = lp.steady_output_tokens
    net_per_token = _ratio(net, tokens)
    mean_out = lp.output_tokens / lp.num_ok if lp.num_ok else None
    net_per_request = (net_per_token * mean_out
                       if net_per_token is not None and mean_out else None)
    return lp.model_copy(update={
        "energy_net_j": net,
        "energy_per_output_token_net_j": net_per_token,
        "energy_per_request_net_j": net_per_request,
        # Gross = net + this: at an open-loop rate it is the idle time between
        # requests charged to them, large near idle, small at saturation.
        "idle_energy_per_request_j": (lp.energy_per_request_j - net_per_request
                                      if lp.energy_per_request_j is not None
                                      and net_per_request is not None else None),
        "output_tokens_per_j_net": _ratio(tokens, net),
        "avg_power_net_w": (lp.avg_power_w - idle_power_w
                            if lp.avg_power_w is not None and idle_power_w is not None else None),
        "gco2e_per_1k_tokens": _grams_per_1k(lp.energy_per_output_token_j, carbon_g_per_kwh),
        "gco2e_per_1k_tokens_net": _grams_per_1k(net_per_token, carbon_g_per_kwh),
    })


def _grams_per_1k(j_per_token: float | None, g_per_kwh: float | None) -> float | None:
    if j_per_token is None or g_per_kwh is None:
        return None
    return j_per_token * 1000 / J_PER_KWH * g_per_kwh
