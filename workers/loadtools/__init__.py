"""Load tools' result files: the counts of a measured command (`farmctl measure`).

One module per tool, each with `FORMAT`, `looks_like(data)` and `parse(data, path)`
→ `ToolReport`: `vllm_bench` (`vllm bench serve --save-result`), `guidellm`
(GuideLLM's JSON report), `aiperf` (AIPerf's profile_export_aiperf.json).
`read(path, fmt)` reads a file with the named parser, or the one whose format
the file's content matches ("auto").
"""

from __future__ import annotations

from pathlib import Path

from workers.loadtools import aiperf, guidellm, vllm_bench
from workers.loadtools.report import ToolReport, ToolReportError, read_json

__all__ = ["PARSERS", "ToolReport", "ToolReportError", "detect", "read"]

PARSERS = {module.FORMAT: module for module in (vllm_bench, guidellm, aiperf)}


def detect(data: object, path: str | Path) -> str:
    """The format whose parser recognises `data`; ToolReportError naming them else."""
    found = [name for name, module in PARSERS.items() if module.looks_like(data)]
    if len(found) != 1:
        why = "matches none" if not found else f"matches {' and '.join(found)}"
        raise ToolReportError(f"the result file {path} {why} of the known formats "
                              f"({', '.join(PARSERS)}): name it with --format")
    return found[0]


def read(path: str | Path, fmt: str = "auto") -> ToolReport:
    """The counts of the result file at `path`, read as `fmt` ("auto": detected)."""
    data = read_json(path)
    name = detect(data, path) if fmt == "auto" else fmt
    if name not in PARSERS:
        raise ToolReportError(f"unknown result format {fmt!r}; known: {', '.join(PARSERS)}")
    return PARSERS[name].parse(data, path)
