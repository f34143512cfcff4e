"""The report's table of every run point: its figures and its verdict.

Every run point of the sweep is a row — valid, invalid, failed or without a
result — so nothing the plots leave out disappears from the report. A null
figure is "—", never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.report.labels import fmt
from farm.report.points import RunPoint

# (header, unit, figure) of the table's figure columns: the page prints the unit in
# a header row of its own, so the names can wrap in narrow columns.
FIGURE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("energy per request", "J", "energy_per_request_j"),
    ("energy per output token", "J", "energy_per_output_token_j"),
    ("net energy per request", "J", "energy_per_request_net_j"),
    ("net energy per output token", "J", "energy_per_output_token_net_j"),
    ("TTFT p90", "ms", "ttft_p90_ms"),
    ("TPOT p90", "ms", "tpot_p90_ms"),
    ("throughput", "req/s", "request_throughput_rps"),
    ("output throughput", "tok/s", "output_throughput_tps"),
    ("goodput", "req/s", "goodput_rps"),
    ("mean power", "W", "avg_power_w"),
)


@dataclass(frozen=True)
class Column:
    """A column of the table: its header, its unit ("" for none) and whether it is text
    (left-aligned, may wrap anywhere) or a number (right-aligned, never wraps)."""

    header: str
    unit: str = ""
    text: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("model"), Column("GPU"), Column("engine"), Column("scenario"), Column("load"),
    Column("input", "tokens", False), Column("output", "tokens", False), Column("decoding"),
    Column("rep", "", False), Column("status"),
    *(Column(h, u, False) for h, u, _ in FIGURE_COLUMNS), Column("verdict"), Column("run"),
)
HEADERS: tuple[str, ...] = tuple(c.header for c in COLUMNS)


@dataclass(frozen=True)
class Verdict:
    """A run point's verdict: its kind (also the row's CSS class) and its text."""

    kind: str                    # valid | invalid | failed | none
    text: str


def verdict(p: RunPoint) -> Verdict:
    """Valid, invalid (naming the failed checks), failed (with its error) or no result."""
    if p.status == "failed":
        return Verdict("failed", f"run failed: {p.error or 'no error recorded'}")
    if p.status != "succeeded":
        return Verdict("none", f"no result ({p.status})")
    if p.valid is None:
        return Verdict("none", "no validity verdict")
    if not p.valid:
        return Verdict("invalid", f"invalid: {p.invalid_reasons or 'unnamed check'}")
    return Verdict("valid", "valid")


def row(p: RunPoint) -> tuple[list[str], Verdict]:
    """The table row of `p` (figures formatted, null as "—") and its verdict."""
    engine = p.engine + (f" ({p.args_label})" if p.engine_args else "")
    cells = [p.model, p.gpu_label + (" (sim)" if p.simulated else ""), engine, p.scenario,
             p.load_label, fmt(p.input_tokens), fmt(p.output_tokens), p.decoding,
             str(p.repetition), p.status, *(fmt(p.get(f)) for _, _, f in FIGURE_COLUMNS)]
    v = verdict(p)
    return [*cells, v.text, p.run_id], v


def rows(points: Sequence[RunPoint]) -> list[tuple[list[str], Verdict]]:
    """The table row and verdict of every point, in the given order."""
    return [row(p) for p in points]
