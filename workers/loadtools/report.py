"""What a load tool reported of its own run: the counts a measured command's
figures are made of (`farmctl measure`), with where they came from.

A count the tool did not report is None, never 0; its latency statistics are
its own (its percentiles, its definition of TPOT), carried as it gave them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm_contract.records import LatencyStats


class ToolReportError(ValueError):
    """A result file a parser cannot read: what is wrong, and in which file."""


@dataclass(frozen=True)
class ToolReport:
    """A load tool's counts over its whole run (every benchmark of the file).

    Attributes:
        tool: the tool, in words ("vllm bench serve").
        format: the parser's name (`--format`: "vllm-bench", "guidellm", "aiperf").
        path: the result file read.
        num_ok: requests that succeeded.
        num_failed: requests that failed (None: the tool does not say).
        input_tokens: prompt tokens of the successful requests (None: not reported).
        output_tokens: output tokens of the successful requests.
        duration_s: the tool's own benchmark duration (None: not reported).
        ttft, tpot, itl, e2e: the tool's latency statistics (ms), where it gives them.
        notes: what the parser had to say (several benchmarks summed, …).
    """

    tool: str
    format: str
    path: str
    num_ok: int
    num_failed: int | None
    input_tokens: int | None
    output_tokens: int
    duration_s: float | None = None
    ttft: LatencyStats = field(default_factory=LatencyStats)
    tpot: LatencyStats = field(default_factory=LatencyStats)
    itl: LatencyStats = field(default_factory=LatencyStats)
    e2e: LatencyStats = field(default_factory=LatencyStats)
    notes: tuple[str, ...] = ()

    @property
    def provenance(self) -> str:
        """Which tool's file the counts are from, and what they are, in one line."""
        failed = "unknown" if self.num_failed is None else str(self.num_failed)
        inputs = "unknown" if self.input_tokens is None else f"{self.input_tokens:,}"
        over = f" over its {self.duration_s:.3g} s" if self.duration_s is not None else ""
        return (f"counts from {self.tool}'s result file {self.path} (format {self.format}): "
                f"{self.num_ok} requests ok, {failed} failed; {inputs} input and "
                f"{self.output_tokens:,} output tokens{over}")


def read_json(path: str | Path) -> Any:
    """The file's JSON; ToolReportError naming the file when it is not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolReportError(f"cannot read the result file {path}: {exc.strerror or exc}"
                              ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ToolReportError(f"the result file {path} is not JSON: {exc}") from None


def count(value: Any, what: str, path: str | Path) -> int:
    """A count the file gives as a number (an integral float too); ToolReportError else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
            or value != int(value):
        raise ToolReportError(f"the result file {path}: {what} is {value!r}, not a count")
    return int(value)


def number(value: Any) -> float | None:
    """A finite number, else None (a statistic the tool left out or wrote as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None
