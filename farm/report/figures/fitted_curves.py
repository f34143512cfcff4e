"""Fitted curves: J/output token and GPU power against batch size, each configuration's
points with the 4-parameter logistic in log2 batch size fitted through them
(farm/report/fits.py), R² in the legend and the parameters with their standard
errors in the caption."""

from __future__ import annotations

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.fits import MODEL, fit_figures, only_fitted
from farm.report.plots import draw_fits
from farm.report.selection import select

GROSS = ("energy_per_output_token_j", "avg_power_w")
NET = ("energy_per_output_token_net_j", "avg_power_net_w")


@figure("fits", heading="Fitted curves vs batch size", order=15, draw=draw_fits, intro=(
    f"J per output token and GPU power against batch size, with the fit {MODEL} "
    "(L, k, x0, y0; b the batch size) through every usable repetition: markers are means "
    "with 95% CIs, lines the fitted curves, R² in the legend. The batch axis is the "
    "closed loop's concurrency, or for a batch scenario the engine's batch_size / "
    "max_num_seqs where the sweep sets it, else the prompts per batch. With fewer than 4 "
    "batch sizes there is no fit: such panels are not drawn, and one line names them."))
def fitted_curves(inputs: FigureInputs) -> Section:
    """One figure per model and batch axis with a curve of two or more batch sizes."""
    figures = NET if inputs.net else GROSS
    selection = select(inputs.points, figures, inputs.simulated)
    drawn, left_out = only_fitted(fit_figures(selection.points, figures))
    planned = [Planned(f"fits-{ff.x_axis.replace('.', '-')}-{ff.model}",
                       f"{ff.model}: J/output token and power ({inputs.basis}) vs "
                       f"{ff.x_axis}, fitted", ff, [selection.note(), *ff.notes()])
               for ff in drawn]
    notes = [left_out] if left_out else []
    if planned or notes:
        return Section(planned, notes)
    return Section(notes=["No configuration has two or more batch sizes with valid measured "
                          "points: no fitted curve."])
