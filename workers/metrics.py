"""Per-load-point figures from request records and the steady-state window. Pure.

Energy per token is taken over the steady-state window only (batch full, before
drain), by the rules of `farm_contract.derive`, which an import applies again to
the exported windows and requests. A figure whose input is missing is None, never 0.

Goodput (`farm_contract.rules`) is counted here from the request records, so it
is the same for every engine (simulated included) and can be recounted later
under other limits. A server scenario carries its SLO (`slo_ttft_ms`,
`slo_tpot_ms`; `slo_for`); a batch load point has none and its goodput figures
stay None: all its prompts are submitted at once, so its TTFT is queueing by
construction and a latency limit on it would say nothing about the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from farm_contract.derive import (  # noqa: F401  (token_times_s, tokens_in: shared rules)
    counted_figures,
    counts,
    ratio,
    steady_figures,
    token_times_s,
    tokens_in,
    with_idle_and_carbon,
)
from farm_contract.records import EnergyWindow, LatencyStats, LoadPointResult
from farm_contract.rules import Slo, goodput_of, tpot_s
from farm_contract.runspec import BatchLoad, ServerLoad

if TYPE_CHECKING:
    from workers.engines.base import LoadPointOutcome


def slo_for(scenario: ServerLoad | BatchLoad) -> Slo | None:
    """The limits of a run's scenario: a server scenario's SLO; None for batch."""
    if isinstance(scenario, ServerLoad):
        return Slo.from_ms(scenario.slo_ttft_ms, scenario.slo_tpot_ms)
    return None


def load_point_result(index: int, kind: str, value: float, outcome: LoadPointOutcome,
                      steady: EnergyWindow | None,
                      slo: Slo | None = None) -> LoadPointResult:
    """The figures of one load point from what the engine observed (`outcome`).

    Goodput is counted under `slo` (None: no limits apply, goodput figures None).
    What only the load generator knows (`workers.loadgen.LoadgenOutcome`:
    lateness, unsent arrivals, requests in flight) is copied when the outcome
    has it, else left None.
    """
    reported = getattr(outcome, "reported", None)
    if reported is not None:
        return reported_result(index, kind, value, outcome, steady)
    requests = outcome.requests
    duration_s = outcome.duration_s
    tallies = counts(requests)
    ok = [r for r in requests if r.ok]
    mean_out = tallies["output_tokens"] / len(ok) if ok else None
    tpot = [t for t in map(tpot_s, ok) if t is not None]
    goodput = goodput_of(requests, duration_s, slo) if slo is not None else None
    lateness = getattr(outcome, "lateness", None)
    offered = None
    if kind == "request_rate" and steady is not None:
        # The rate actually offered while the window was open (arrivals are random),
        # the yardstick of a rate sweep's achieved throughput: the schedule's arrivals,
        # for sends follow the server once arrivals wait for a slot (max_concurrency:
        # counted by send, 20 req/s offered read 4.4, the server's own pace).
        arrivals = getattr(outcome, "arrivals_in_steady", None)
        if arrivals is None:
            end_s = steady.start_s + steady.duration_s
            arrivals = sum(1 for r in requests if steady.start_s <= r.sent_s <= end_s)
        offered = ratio(arrivals, steady.duration_s)
    return LoadPointResult(
        index=index, kind=kind, value=value, duration_s=round(duration_s, 4),
        **tallies, **steady_figures(requests, steady, mean_out),
        ttft=LatencyStats.of_seconds([r.ttft_s for r in ok if r.ttft_s is not None]),
        tpot=LatencyStats.of_seconds(tpot),
        itl=LatencyStats.of_seconds([g for r in ok for g in r.itl_s]),
        e2e=LatencyStats.of_seconds([r.e2e_s for r in ok if r.e2e_s is not None]),
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


def reported_result(index: int, kind: str, value: float, outcome: LoadPointOutcome,
                    steady: EnergyWindow | None) -> LoadPointResult:
    """A measured command's load point: its counts and latencies as its load tool
    reported them (`outcome.reported`), its energy over the command's window, which
    holds the tool's whole run (`farm_contract.derive.counted_figures`)."""
    tool = outcome.reported
    assert tool is not None
    failed = tool.num_failed
    return LoadPointResult(
        index=index, kind=kind, value=value, duration_s=round(outcome.duration_s, 4),
        # A tool that does not say how many failed: its successes are what is known.
        num_requests=tool.num_ok + (failed or 0), num_ok=tool.num_ok, num_failed=failed or 0,
        input_tokens=tool.input_tokens, output_tokens=tool.output_tokens,
        **counted_figures(tool.output_tokens, tool.num_ok, steady),
        ttft=tool.ttft, tpot=tool.tpot, itl=tool.itl, e2e=tool.e2e,
        notes=list(outcome.notes))
