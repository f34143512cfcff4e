"""GuideLLM's JSON report (`guidellm benchmark … --outputs json`, benchmarks.json).

The format is GuideLLM's (vllm-project/guidellm, src/guidellm/benchmark/schemas/
generative/metrics.py and report.py): a report holds `benchmarks`, one per
strategy it ran (a sweep runs several); each benchmark's `metrics` has
`request_totals` ({successful, incomplete, errored, total}) and, per quantity, a
status distribution summary — `prompt_token_count`, `output_token_count`,
`time_to_first_token_ms`, `time_per_output_token_ms`, `inter_token_latency_ms`,
`request_latency` (s) — whose `successful` part is a distribution (`mean`,
`median`, `count`, `total_sum`, `percentiles` {`p50`, `p90`, `p99`, …}). Older
reports (GuideLLM 0.2/0.3) keep the request counts in `run_stats.requests_made`
and the length in `duration`; both are read. tests/data/loadtools/ holds a
sample written to that schema (GuideLLM is not installed here).

A measured command's window holds every benchmark of the report, so the counts
are their sums; latency statistics are kept only from a report of one benchmark
(percentiles of several cannot be combined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from farm_contract.records import LatencyStats
from workers.loadtools.report import ToolReport, ToolReportError, count, number

FORMAT = "guidellm"
TOOL = "GuideLLM"


def looks_like(data: Any) -> bool:
    """Whether `data` is a GuideLLM report (a list of benchmarks with metrics)."""
    return (isinstance(data, dict) and isinstance(data.get("benchmarks"), list)
            and all(isinstance(b, dict) and "metrics" in b for b in data["benchmarks"]))


def _totals(bench: dict) -> dict:
    metrics = bench.get("metrics") or {}
    for found in (metrics.get("request_totals"), bench.get("request_totals"),
                  (bench.get("run_stats") or {}).get("requests_made"),
                  (bench.get("scheduler_metrics") or {}).get("requests_made")):
        if isinstance(found, dict):
            return found
    return {}


def _successful(metrics: dict, name: str) -> dict:
    summary = metrics.get(name)
    return (summary.get("successful") or {}) if isinstance(summary, dict) else {}


def _duration_s(bench: dict) -> float | None:
    if number(bench.get("duration")) is not None:
        return number(bench.get("duration"))
    scheduler = bench.get("scheduler_metrics") or bench.get("run_stats") or {}
    start, end = number(scheduler.get("measure_start_time")), \
        number(scheduler.get("measure_end_time"))
    if start is None or end is None:
        start, end = number(scheduler.get("start_time")), number(scheduler.get("end_time"))
    return end - start if start is not None and end is not None and end >= start else None


def _latency(metrics: dict, name: str, scale: float = 1.0) -> LatencyStats:
    dist = _successful(metrics, name)
    pct = dist.get("percentiles") or {}

    def ms(value: Any) -> float | None:
        value = number(value)
        return None if value is None else value * scale
    return LatencyStats(mean_ms=ms(dist.get("mean")), p50_ms=ms(pct.get("p50", dist.get("median"))),
                        p90_ms=ms(pct.get("p90")), p99_ms=ms(pct.get("p99")))


def parse(data: Any, path: str | Path) -> ToolReport:
    """The counts of a GuideLLM report, summed over its benchmarks."""
    if not looks_like(data) or not data["benchmarks"]:
        raise ToolReportError(f"the result file {path} is not a GuideLLM JSON report "
                              "(no benchmarks with metrics)")
    ok = failed = incomplete = out = 0
    inputs: int | None = 0
    durations: list[float | None] = []
    for i, bench in enumerate(data["benchmarks"]):
        metrics, totals = bench["metrics"], _totals(bench)
        if "successful" not in totals:
            raise ToolReportError(f"the result file {path}: benchmark {i} has no request "
                                  "totals (metrics.request_totals)")
        ok += count(totals["successful"], f"benchmark {i}'s successful requests", path)
        failed += count(totals.get("errored", 0), f"benchmark {i}'s errored requests", path)
        incomplete += count(totals.get("incomplete", 0), f"benchmark {i}'s incomplete", path)
        out_sum = _successful(metrics, "output_token_count").get("total_sum")
        if out_sum is None:
            raise ToolReportError(f"the result file {path}: benchmark {i} has no output "
                                  "token count (metrics.output_token_count.successful)")
        out += count(round(out_sum), f"benchmark {i}'s output tokens", path)
        in_sum = _successful(metrics, "prompt_token_count").get("total_sum")
        inputs = None if inputs is None or in_sum is None else \
            inputs + count(round(in_sum), f"benchmark {i}'s prompt tokens", path)
        durations.append(_duration_s(bench))
    one = data["benchmarks"][0]["metrics"] if len(data["benchmarks"]) == 1 else None
    notes = []
    if one is None:
        notes.append(f"{len(data['benchmarks'])} GuideLLM benchmarks summed; their latency "
                     "statistics are not combined")
    if incomplete:
        notes.append(f"{incomplete} incomplete request(s) (cut off at a benchmark's end) "
                     "counted as failed")
    return ToolReport(
        tool=TOOL, format=FORMAT, path=str(path), num_ok=ok, num_failed=failed + incomplete,
        input_tokens=inputs, output_tokens=out,
        duration_s=None if None in durations else sum(durations),  # type: ignore[arg-type]
        ttft=_latency(one, "time_to_first_token_ms") if one else LatencyStats(),
        tpot=_latency(one, "time_per_output_token_ms") if one else LatencyStats(),
        itl=_latency(one, "inter_token_latency_ms") if one else LatencyStats(),
        e2e=_latency(one, "request_latency", 1000.0) if one else LatencyStats(),
        notes=tuple(notes))
