"""GPU power vs load: per model and load kind, the mean board power of the run's
GPUs over each load point's steady window, against the load, one line per GPU
model (and engine variant). How close each GPU runs to its power limit as load
grows, and where the extra energy of a busier engine goes.

The whole kind of figure is this file: the data come from `series.load_figures`
(means over repetitions with 95% CIs of `avg_power_w`, or `avg_power_net_w`
with --net) and are drawn by `plots.draw_load`, the energy-vs-load drawing.
"""

from __future__ import annotations

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.figures.energy_vs_load import KIND_TITLES, MAX_TOKEN_ROWS
from farm.report.plots import draw_load
from farm.report.series import load_figures

GROSS_POWER = "avg_power_w"
NET_POWER = "avg_power_net_w"


@figure("power_load", heading="GPU power vs load", order=20, draw=draw_load, intro=(
    "Mean power of the run's GPUs (summed over its GPUs) over each load point's "
    "steady-state window — the window's energy ÷ its length — against concurrency, request "
    "rate or batch size, one line per GPU (and engine variant), one row per input/output "
    "token length. Markers are means over repetitions; bars are 95% confidence intervals. "
    "Net of idle (--net): minus the idle power with a CUDA context held."))
def power_vs_load(inputs: FigureInputs) -> Section:
    """One figure per model and load kind with two or more load values."""
    power = NET_POWER if inputs.net else GROSS_POWER
    planned = []
    for whole in load_figures(inputs.points, (power,), inputs.simulated, plateau=False):
        parts = whole.split(MAX_TOKEN_ROWS)
        for n, lf in enumerate(parts, 1):
            part = f" (part {n} of {len(parts)})" if len(parts) > 1 else ""
            planned.append(Planned(
                f"power-vs-{lf.load_kind}-{lf.model}{part and f'-{n}'}",
                f"{lf.model}: GPU power ({inputs.basis}) vs {KIND_TITLES[lf.load_kind]}{part}",
                lf, [lf.selection.note()]))
    if planned:
        return Section(planned)
    return Section(notes=["No configuration has two or more load values with a valid "
                          "measured power: no power-vs-load figure."])
