"""Power timelines: board power of chosen runs against time, with the energy
windows shaded (timeline.py). Reads the power trace of those runs only."""

from __future__ import annotations

from farm.report.figures import FigureInputs, Planned, Section, figure
from farm.report.plots import draw_timeline
from farm.report.stats import group_by
from farm.report.timeline import build_timeline, representative_runs, resolve_runs


@figure("timeline", heading="Power timelines", order=50, draw=draw_timeline,
        needs=("results", "traces"), intro=(
            "Board power of chosen runs over time, with the energy windows shaded: idle "
            "without and with a CUDA context, engine load, warm-up, and each load point's "
            "steady state (the window every energy figure is taken over). Dashed lines: the "
            "run window."))
def power_timeline(inputs: FigureInputs) -> Section:
    """One timeline per run of --runs (default: per GPU, the run with the most load
    points, valid runs first)."""
    points = inputs.points
    chosen = (resolve_runs(points, inputs.runs, inputs.sweep) if inputs.runs
              else representative_runs(points))
    by_run = group_by(points, lambda p: p.run_id)
    planned = []
    for run_id in chosen:
        tl = build_timeline(by_run[run_id], inputs.reads.trace_for(run_id),
                            inputs.reads.result_for(run_id))
        planned.append(Planned(f"timeline-{run_id[:12]}", f"power timeline of run {run_id[:12]}",
                               tl, tl.notes))
    notes = [] if inputs.runs else [
        "Runs shown: per GPU, the succeeded run with the most load points (valid runs "
        "first). Choose others with --runs RUN_ID."]
    return Section(planned, notes)
