"""Names, units and number formatting shared by the report's figures and tables.

Every number the report prints keeps its unit; a missing figure prints as "—",
never 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from farm.output import fmt_value as fmt
from farm.output import power_limit_label, sm_clock_label
from farm.report.points import RunPoint, args_text
from farm_contract.records import result_figures

DASH = "—"

# The x axes of plots.draw_load: the load kinds, and the GPU tuning axes of the
# energy vs power limit / SM clock figure (tuning.py).
LOAD_AXIS = {
    "concurrency": "concurrency (simultaneous requests)",
    "request_rate": "request rate (requests/s, open loop)",
    "batch": "prompts given at once (batch)",
    "power_limit_w": "power limit requested (W, per GPU)",
    "sm_clock_mhz": "SM clock locked (MHz)",
}


def axis_label(figure: str) -> str:
    """The figure's axis label with its unit, e.g. "TTFT p90 (ms)", as its record
    field declares them (farm_contract.records); an unknown name as it is."""
    column = result_figures().get(figure)
    return column.axis if column is not None else figure


def short_label(figure: str) -> str:
    """The figure's short name, e.g. "J/request", "TTFT p90": the header its field
    declares where that says the unit, else its label."""
    column = result_figures().get(figure)
    return (column.short or column.label) if column is not None else figure


def unit_label(figure: str) -> str:
    """The figure's unit as its record field declares it ("ms", "J"); "" for a ratio,
    a count or a name no record declares."""
    column = result_figures().get(figure)
    return column.shown_unit if column is not None else ""


def fmt_unit(value: Any, unit: str, digits: int = 3) -> str:
    """The value formatted with its unit; "—" alone when it is missing."""
    text = fmt(value, digits)
    return text if text == DASH else f"{text} {unit}"


def tokens_label(input_tokens: int | None, output_tokens: int | None) -> str:
    """E.g. "in 512 / out 128 tokens"; a missing length prints as "—"."""
    return f"in {fmt(input_tokens)} / out {fmt(output_tokens)} tokens"


class Variants:
    """Labels for what sets configurations apart beyond model, GPU, load and lengths.

    Only the dimensions that vary within the report are named (power limit, SM
    clock, engine, its arguments, decoding, scenario), so a one-engine sweep
    labels its lines by GPU alone, and a power-limit sweep's lines say their cap
    ("300 W cap").
    """

    def __init__(self, points: Iterable[RunPoint], without: Iterable[str] = (),
                 without_args: Iterable[str] = ()):
        """`without`: dimensions never named (the x axis of a figure drawn against one);
        `without_args`: engine arguments never named (an x axis such as batch_size:
        the line spans its values, so no one value names it)."""
        self._hidden_args = frozenset(without_args)
        seen: dict[str, set[Any]] = {"power_limit": set(), "sm_clock": set(), "engine": set(),
                                     "args": set(), "decoding": set(), "scenario": set()}
        for p in points:
            seen["power_limit"].add(p.power_limit_w)
            seen["sm_clock"].add(p.sm_clock_mhz)
            seen["engine"].add(p.engine)
            seen["args"].add(self._args(p))
            seen["decoding"].add(p.decoding)
            seen["scenario"].add(p.scenario)
        self.varies = {name for name, values in seen.items() if len(values) > 1} - set(without)

    def variant(self, p: RunPoint, scenario: bool = True) -> str:
        """What sets `p` apart among the varying dimensions, joined by " · "; "" if none."""
        parts = []
        if "power_limit" in self.varies:
            parts.append(power_limit_label(p.power_limit_w))
        if "sm_clock" in self.varies:
            parts.append(sm_clock_label(p.sm_clock_mhz))
        if "engine" in self.varies:
            parts.append(p.engine)
        if "args" in self.varies:
            parts.append(args_text(self._args(p)) or "default args")
        if "decoding" in self.varies:
            parts.append(p.decoding)
        if scenario and "scenario" in self.varies:
            parts.append(p.scenario)
        return " · ".join(parts)

    def _args(self, p: RunPoint) -> tuple[tuple[str, Any], ...]:
        return tuple(kv for kv in p.engine_args if kv[0] not in self._hidden_args)

    def label(self, p: RunPoint, scenario: bool = True) -> str:
        """The GPU label of `p`, followed by its variant when there is one."""
        variant = self.variant(p, scenario)
        return f"{p.gpu_label} · {variant}" if variant else p.gpu_label
