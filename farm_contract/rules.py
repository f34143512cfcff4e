"""Rules both sides apply to the same numbers: percentiles, SLO limits, goodput.

Part of the contract (standard library only). A worker counts goodput when it
measures a load point; a report recounts it later under other limits from the
stored per-request records. Both call `goodput_of`, so the two can never drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Goodput limits: MLPerf Inference's Llama-2-70B server scenario (v4.0 onwards).
DEFAULT_SLO_TTFT_MS = 2000.0
DEFAULT_SLO_TPOT_MS = 200.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0…100) of already sorted values,
    numpy's default method. Raises ValueError on an empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


class TimedRequest(Protocol):
    """What goodput needs of a request: a `RequestRecord` or a stored row of one."""

    ok: bool
    ttft_s: float | None
    e2e_s: float | None
    output_tokens: int | None


@dataclass(frozen=True)
class Slo:
    """Per-request latency limits for goodput.

    Defaults: MLPerf Inference's Llama-2-70B server scenario (v4.0 onwards),
    TTFT ≤ 2 s and TPOT ≤ 200 ms. MLPerf applies them to the p99 of a run
    (`Goodput.p99_met`); goodput counts the requests that meet both, as
    `vllm bench serve --goodput ttft:2000 tpot:200` does.
    """

    ttft_s: float = DEFAULT_SLO_TTFT_MS / 1000.0
    tpot_s: float = DEFAULT_SLO_TPOT_MS / 1000.0

    @classmethod
    def from_ms(cls, ttft_ms: float, tpot_ms: float) -> Slo:
        """The limits as sweeps and reports give them, in milliseconds."""
        return cls(ttft_s=ttft_ms / 1000.0, tpot_s=tpot_ms / 1000.0)


@dataclass(frozen=True)
class Goodput:
    """The requests of a load point that met the SLO, and what follows from them."""

    ttft_limit_s: float
    tpot_limit_s: float
    good_requests: int
    attainment: float | None        # good / sent
    goodput_rps: float | None       # good / load point duration (vllm bench's definition)
    p99_met: bool | None            # p99 TTFT and p99 TPOT of the ok requests within limits


def tpot_s(r: TimedRequest) -> float | None:
    """Time per output token after the first: (E2E − TTFT) ÷ (output tokens − 1);
    None for a request with fewer than two output tokens or without timings."""
    if r.e2e_s is None or r.ttft_s is None or not r.output_tokens or r.output_tokens < 2:
        return None
    return (r.e2e_s - r.ttft_s) / (r.output_tokens - 1)


def goodput_of(records: Sequence[TimedRequest], duration_s: float,
               slo: Slo = Slo()) -> Goodput:
    """Goodput of a load point under `slo`.

    A request is good when it succeeded, its TTFT is within the limit and so is
    its TPOT (a request with one output token has no TPOT: only TTFT counts).
    A failed request is never good but counts as sent.
    """
    good = 0
    ttfts: list[float] = []
    tpots: list[float] = []
    for r in records:
        if not r.ok or r.ttft_s is None or r.e2e_s is None:
            continue
        ttfts.append(r.ttft_s)
        tpot = tpot_s(r)
        if tpot is not None:
            tpots.append(tpot)
        if r.ttft_s <= slo.ttft_s and (tpot is None or tpot <= slo.tpot_s):
            good += 1
    p99_met = None
    if ttfts:
        p99_met = (percentile(sorted(ttfts), 99) <= slo.ttft_s
                   and (not tpots or percentile(sorted(tpots), 99) <= slo.tpot_s))
    return Goodput(
        ttft_limit_s=slo.ttft_s, tpot_limit_s=slo.tpot_s, good_requests=good,
        attainment=good / len(records) if records else None,
        goodput_rps=good / duration_s if duration_s > 0 else None, p99_met=p99_met)
