"""AIPerf's aggregated statistics (`aiperf profile`, profile_export_aiperf.json).

The format is AIPerf's (ai-dynamo/aiperf, docs/tutorials/working-with-profile-
exports.md, "Aggregated Statistics (JSON)"): one object whose metrics each
carry a `unit` and statistics (`avg`, `p50`, `p90`, `p99`, …):
`request_count` (valid requests), `error_request_count` (null without errors),
`total_isl` and `total_osl` (tokens, as `avg`), `benchmark_duration` (s),
`time_to_first_token`, `inter_token_latency` (per request: (latency − TTFT) ÷
(output tokens − 1), vLLM's TPOT) and `request_latency` (ms). Some versions
nest the metrics under `records`; both are read. tests/data/loadtools/ holds a
sample written to that schema (AIPerf is not installed here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from farm_contract.records import LatencyStats
from workers.loadtools.report import ToolReport, ToolReportError, count, number

FORMAT = "aiperf"
TOOL = "AIPerf"


def _metrics(data: Any) -> dict:
    if not isinstance(data, dict):
        return {}
    records = data.get("records")
    return records if isinstance(records, dict) and "request_count" in records else data


def looks_like(data: Any) -> bool:
    """Whether `data` is AIPerf's aggregate (a `total_osl` or `request_count` metric)."""
    metrics = _metrics(data)
    return any(isinstance(metrics.get(k), dict) and "avg" in metrics[k]
               for k in ("total_osl", "request_count"))


def _value(metrics: dict, name: str) -> Any:
    metric = metrics.get(name)
    return metric.get("avg") if isinstance(metric, dict) else None


def _latency(metrics: dict, name: str) -> LatencyStats:
    metric = metrics.get(name)
    if not isinstance(metric, dict) or metric.get("unit", "ms") != "ms":
        return LatencyStats()
    return LatencyStats(mean_ms=number(metric.get("avg")), p50_ms=number(metric.get("p50")),
                        p90_ms=number(metric.get("p90")), p99_ms=number(metric.get("p99")))


def parse(data: Any, path: str | Path) -> ToolReport:
    """The counts of an AIPerf aggregate."""
    if not looks_like(data):
        raise ToolReportError(f"the result file {path} is not AIPerf's "
                              "profile_export_aiperf.json (no request_count / total_osl)")
    metrics = _metrics(data)
    ok, out = _value(metrics, "request_count"), _value(metrics, "total_osl")
    if ok is None or out is None:
        raise ToolReportError(f"the result file {path}: AIPerf's request_count and total_osl "
                              "are needed")
    errors, inputs = _value(metrics, "error_request_count"), _value(metrics, "total_isl")
    # error_request_count is null when no request failed (AIPerf's documentation).
    failed = 0 if metrics.get("error_request_count", None) is None else errors
    return ToolReport(
        tool=TOOL, format=FORMAT, path=str(path),
        num_ok=count(ok, "request_count", path),
        num_failed=None if failed is None else count(failed, "error_request_count", path),
        input_tokens=None if inputs is None else count(round(inputs), "total_isl", path),
        output_tokens=count(round(out), "total_osl", path),
        duration_s=number(_value(metrics, "benchmark_duration")),
        ttft=_latency(metrics, "time_to_first_token"),
        tpot=_latency(metrics, "inter_token_latency"),
        e2e=_latency(metrics, "request_latency"),
        notes=("AIPerf was cancelled before the end (was_cancelled)",)
        if data.get("was_cancelled") else ())
