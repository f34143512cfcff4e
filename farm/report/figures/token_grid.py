"""Token-length grid: per model and scenario, J/request as a heat map over input ×
output token-length bins (heatmap.py)."""

from __future__ import annotations

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.heatmap import heatmap_figures
from farm.report.plots import draw_heatmap


@figure("heatmap", heading="Token-length grid", order=40, draw=draw_heatmap, intro=(
    "J/request by input × output token-length bin (Fernandez et al.: bins centred on powers "
    "of two, a bin b holds lengths in (b/√2, b·√2]), per GPU and load value, on one colour "
    "scale per figure. Each cell is the mean over the valid points in that bin; \"—\" marks "
    "an empty cell."))
def token_grid(inputs: FigureInputs) -> Section:
    """One heat map per model and scenario whose valid points span two cells or more."""
    heatmaps = heatmap_figures(inputs.points, inputs.energies[0], inputs.simulated)
    planned = [Planned(f"heatmap-{hf.model}-{hf.scenario}",
                       f"{hf.model}, {hf.scenario}: energy ({inputs.basis}) per request by "
                       "input × output token-length bin", hf, [hf.selection.note()])
               for hf in heatmaps]
    covered = {(hf.model, hf.scenario) for hf in heatmaps}
    single = sorted({(p.model, p.scenario) for p in inputs.points if p.measured} - covered)
    return Section(planned, [f"{m}, {s}: its valid points span one token-length cell only "
                             "(or none): no heat map." for m, s in single])
