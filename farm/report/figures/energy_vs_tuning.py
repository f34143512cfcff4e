"""Energy vs power limit / SM clock: per model and GPU tuning axis a sweep varies
(`[hardware] power_limit_w`, `sm_clock_mhz`), J/output token and the GPUs' mean
power against the requested setting, one line per configuration and load
(farm/report/tuning.py), drawn by `plots.draw_load`; the caption says what the
GPUs read back of each setting."""

from __future__ import annotations

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.figures.energy_vs_load import MAX_TOKEN_ROWS
from farm.report.plots import draw_load
from farm.report.tuning import applied_notes, tuning_figures

GROSS = ("energy_per_output_token_j", "avg_power_w")
NET = ("energy_per_output_token_net_j", "avg_power_net_w")
AXIS_TITLES = {"power_limit_w": "power limit", "sm_clock_mhz": "SM clock"}


@figure("tuning", heading="Energy vs power limit / SM clock", order=17, draw=draw_load,
        intro=(
    "For a sweep that sets the GPUs' power limit (`[hardware] power_limit_w`) or locks "
    "their SM clock (`sm_clock_mhz`): J per output token and the mean power of the run's "
    "GPUs (summed over them) against the requested setting, one line per configuration "
    "and load (batch size, concurrency or rate), one row per input/output token length. "
    "Markers are means over repetitions; bars are 95% confidence intervals. The x axis is "
    "what the run asked for; the caption says what the GPUs read back after setting it "
    "(the lowest of a run's GPUs). A lower cap saves energy per token only where the "
    "GPUs ran above it at the default."))
def energy_vs_tuning(inputs: FigureInputs) -> Section:
    """One figure per model and tuning axis the sweep varies (split into parts of at
    most MAX_TOKEN_ROWS token-length pairs); none when it varies neither."""
    figures = NET if inputs.net else GROSS
    planned = []
    for whole in tuning_figures(inputs.points, figures, inputs.simulated):
        axis = whole.load_kind
        scope = [p for p in inputs.points if p.model == whole.model]
        parts = whole.split(MAX_TOKEN_ROWS)
        for n, tf in enumerate(parts, 1):
            part = f" (part {n} of {len(parts)})" if len(parts) > 1 else ""
            planned.append(Planned(
                f"tuning-{axis.replace('_', '-')}-{tf.model}{part and f'-{n}'}",
                f"{tf.model}: J/output token and power ({inputs.basis}) vs "
                f"{AXIS_TITLES[axis]}{part}", tf,
                [tf.selection.note(), *applied_notes(scope, axis)]))
    if planned:
        return Section(planned)
    return Section(notes=["The sweep varies neither the power limit nor the SM clock "
                          "([hardware] power_limit_w, sm_clock_mhz), or no configuration has "
                          "two settings with valid measured points: no figure."])
