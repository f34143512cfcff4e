"""The input × output token-length grid: J/request per token-length bin.

A grid holds the valid measured points of one model, GPU (and engine
variant), scenario and load value; each cell is the mean (95% CI) over every
point whose lengths fall in that cell's bins (`farm.lengthbins`, Fernandez et al.) —
repetitions and, where several lengths share a bin, those lengths too.
Grids of one (model, scenario) make one figure: GPUs as rows, load values as
columns, one colour scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.report.labels import Variants
from farm.report.points import RunPoint
from farm.report.selection import Selection, reason_left_out, select
from farm.report.series import PER_REQUEST
from farm.report.stats import Estimate, estimate, group_by
from farm_contract.lengthbins import bin_key

Bin = tuple[float, str]


@dataclass(frozen=True)
class HeatmapGrid:
    """One panel: the cells of one GPU (and variant), scenario and load value."""

    label: str                   # the GPU (and variant) of this panel
    load_kind: str
    load_value: float
    load_label: str
    inputs: list[Bin]            # columns, ascending
    outputs: list[Bin]           # rows, ascending
    cells: dict[tuple[str, str], Estimate]   # (input bin name, output bin name) → estimate

    def value(self, input_bin: str, output_bin: str) -> float | None:
        """The mean of the cell at these bins (the figure's unit); None if it is empty."""
        cell = self.cells.get((input_bin, output_bin))
        return None if cell is None else cell.mean


def heatmap_grid(points: Sequence[RunPoint], figure: str = PER_REQUEST,
                 label: str = "") -> HeatmapGrid | None:
    """The grid of `points` (one GPU, scenario and load value); None if none is usable."""
    usable = [p for p in points if reason_left_out(p, (figure,)) is None]
    if not usable:
        return None
    by_cell = group_by(usable, lambda p: (bin_key(p.input_tokens, "input"),
                                          bin_key(p.output_tokens, "output")))
    cells = {}
    for (ib, ob), group in by_cell.items():
        est = estimate(p.get(figure) for p in group)
        if est is not None:
            cells[(ib[1], ob[1])] = est
    first = usable[0]
    return HeatmapGrid(label or first.gpu_label, first.load_kind or "", float(first.load_value),
                       first.load_label, sorted({ib for ib, _ in by_cell}),
                       sorted({ob for _, ob in by_cell}), cells)


@dataclass(frozen=True)
class HeatmapFigure:
    """The grids of one model and scenario: GPUs as rows, load values as columns."""

    model: str
    scenario: str
    figure: str
    rows: list[str]                              # panel labels (GPU and variant)
    columns: list[tuple[float, str]]             # (load value, load label)
    grids: dict[tuple[str, float], HeatmapGrid]  # (row label, load value) → grid
    inputs: list[Bin]                            # shared axes over all grids
    outputs: list[Bin]
    selection: Selection

    @property
    def values(self) -> list[float]:
        """The means of every cell of every grid: the range of the shared colour scale."""
        return [e.mean for g in self.grids.values() for e in g.cells.values()]


def heatmap_figures(points: Sequence[RunPoint], figure: str = PER_REQUEST,
                    simulated: bool | None = None) -> list[HeatmapFigure]:
    """One figure per (model, scenario) whose points span more than one cell."""
    variants = Variants(points)
    out = []
    for (model, scenario), scope in sorted(group_by(points, lambda p: (p.model, p.scenario))
                                           .items()):
        selection = select(scope, (figure,), simulated)
        grids: dict[tuple[str, float], HeatmapGrid] = {}
        panels = group_by(selection.points,
                          lambda p: (variants.label(p, scenario=False), float(p.load_value)))
        for (label, value), group in panels.items():
            grid = heatmap_grid(group, figure, label)
            if grid is not None:
                grids[(label, value)] = grid
        if not grids:
            continue
        inputs = sorted({b for g in grids.values() for b in g.inputs})
        outputs = sorted({b for g in grids.values() for b in g.outputs})
        if len(inputs) * len(outputs) < 2:
            continue
        columns = sorted({(g.load_value, g.load_label) for g in grids.values()})
        rows = sorted({label for label, _ in grids})
        out.append(HeatmapFigure(model, scenario, figure, rows, columns, grids, inputs,
                                 outputs, selection))
    return out
