"""The report's table of every run point: its figures and its verdict.

Every run point of the sweep is a row — valid, invalid, failed or without a
result — so nothing the plots leave out disappears from the report. A null
figure is "—", never 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from farm.report.labels import DASH, fmt
from farm.report.points import RunPoint
from farm_contract.records import result_figures

# The table's figures; each column's header and unit are its record field's label and
# unit (farm_contract.records). The page prints the unit in a header row of its own,
# so the names can wrap in narrow columns.
FIGURES: tuple[str, ...] = (
    "energy_per_request_j", "energy_per_output_token_j", "energy_per_total_token_j",
    "energy_per_request_net_j", "energy_per_output_token_net_j",
    "energy_per_total_token_net_j", "ttft_p90_ms", "tpot_p90_ms", "request_throughput_rps",
    "output_throughput_tps", "goodput_rps", "avg_power_w", "passes",
)


@dataclass(frozen=True)
class PageColumn:
    """A column of the table: its header, its unit ("" for none) and whether it is text
    (left-aligned, may wrap anywhere) or a number (right-aligned, never wraps unless
    `wraps`: a setting followed by its read-back, "1200 (read 1215)")."""

    header: str
    unit: str = ""
    text: bool = True
    wraps: bool = False


COLUMNS: tuple[PageColumn, ...] = (
    PageColumn("model"), PageColumn("GPU"), PageColumn("power limit", "W", False, wraps=True),
    PageColumn("SM clock", "MHz", False, wraps=True), PageColumn("engine"), PageColumn("scenario"),
    PageColumn("load"), PageColumn("input", "tokens", False), PageColumn("output", "tokens", False),
    PageColumn("decoding"), PageColumn("rep", "", False), PageColumn("status"),
    *(PageColumn(result_figures()[f].label, result_figures()[f].shown_unit, False)
      for f in FIGURES), PageColumn("verdict"),
    PageColumn("run"),
)
HEADERS: tuple[str, ...] = tuple(c.header for c in COLUMNS)
# Columns shown only where some point needs them — the GPU tuning of a sweep that
# sets one, passes where a batch took more than one — so the others' table keeps
# to the page's width.
OPTIONAL: dict[str, Callable[[RunPoint], bool]] = {
    "power limit": lambda p: p.power_limit_w is not None,
    "SM clock": lambda p: p.sm_clock_mhz is not None,
    result_figures()["passes"].label: lambda p: (p.get("passes") or 0) > 1,
}


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


def setting_cell(requested: float | str | None, applied: float | None,
                 refused: str | None) -> str:
    """A GPU setting of the run: what it asked for ("300"), with what its GPUs read back
    where that differs ("1200 (read 1215)") or the refusal ("300 (refused)");
    "default (700)" for the GPU's own with what was read back; "—" where it asked
    for none."""
    if requested is None:
        return DASH
    if isinstance(requested, str):
        text = requested if applied is None else f"{requested} ({applied:g})"
        return f"{text} (refused)" if refused else text
    text = f"{requested:g}"
    if refused:
        return f"{text} (refused)"
    if applied is not None and round(applied) != round(requested):
        return f"{text} (read {applied:g})"
    return text


def row(p: RunPoint) -> tuple[list[str], Verdict]:
    """The table row of `p` (figures formatted, null as "—") and its verdict."""
    engine = p.engine + (f" ({p.args_label})" if p.engine_args else "")
    cells = [p.model, p.gpu_label + (" (sim)" if p.simulated else ""),
             setting_cell(p.power_limit_w, p.get("applied_power_limit_w"),
                          p.get("tuning_refused")),
             setting_cell(p.sm_clock_mhz, p.get("applied_sm_clock_mhz"),
                          p.get("tuning_refused")), engine, p.scenario,
             p.load_label, fmt(p.input_tokens), fmt(p.output_tokens), p.decoding,
             str(p.repetition), p.status, *(fmt(p.get(f)) for f in FIGURES)]
    v = verdict(p)
    return [*cells, v.text, p.run_id], v


def rows(points: Sequence[RunPoint]) -> list[tuple[list[str], Verdict]]:
    """The table row and verdict of every point, in the given order."""
    return [row(p) for p in points]


def table(points: Sequence[RunPoint]) -> tuple[list[PageColumn], list[tuple[list[str], Verdict]]]:
    """The columns the table shows for `points` (OPTIONAL ones where a point needs
    them) and each point's cells in those columns with its verdict."""
    keep = [i for i, c in enumerate(COLUMNS)
            if c.header not in OPTIONAL or any(OPTIONAL[c.header](p) for p in points)]
    return ([COLUMNS[i] for i in keep],
            [([cells[i] for i in keep], v) for cells, v in rows(points)])
