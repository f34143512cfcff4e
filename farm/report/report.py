"""`farmctl report SWEEP`: a self-contained HTML report plus its figures as PNG files.

    collect(store, sweep)     → ReportData: every figure's data, notes and tables (no drawing)
    write_report(store, ...)  → draws the figures (plots.py), writes DIR/figures/*.png and
                                DIR/index.html (html.py), returns a WrittenReport

Reads the sweep's run points (one row per run and load point: no per-request
records), and the power trace and energy windows of the few runs whose
timelines are drawn. Nothing else is loaded.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from farm.errors import ExitCode, FarmError
from farm.report import html
from farm.report.heatmap import heatmap_figures
from farm.report.pareto import ParetoFigure, pareto_figures
from farm.report.plots import FigureSpec, colours_for, render
from farm.report.points import RunPoint, load_run_points
from farm.report.selection import reason_left_out
from farm.report.series import PER_REQUEST, PER_TOKEN, load_figures
from farm.report.stats import group_by
from farm.report.timeline import build_timeline, representative_runs, resolve_runs

GROSS = (PER_REQUEST, PER_TOKEN)
NET = ("energy_per_request_net_j", "energy_per_output_token_net_j")
MAX_TOKEN_ROWS = 8        # token-length pairs per energy-vs-load figure (more: parts)
KIND_TITLES = {"concurrency": "concurrency", "request_rate": "request rate",
               "batch": "batch size"}


class NoMeasuredPoints(FarmError, LookupError):
    """A sweep without a single measured point: nothing to draw (exit 5)."""

    exit_code = ExitCode.NOT_FOUND


@dataclass
class ReportData:
    """Everything the page shows, computed; figures not drawn yet."""

    sweep: str
    simulated: bool
    generated_at: datetime
    points: list[RunPoint]
    figures: list[FigureSpec]
    measurement: list[str]               # how energy was measured, one paragraph each
    summary: list[tuple[str, str]]       # (what, how many)
    pareto: list[ParetoFigure] = field(default_factory=list)
    section_notes: dict[str, list[str]] = field(default_factory=dict)
    net: bool = False


@dataclass(frozen=True)
class WrittenReport:
    sweep: str
    out_dir: Path
    index: Path
    figures: list[Path]
    simulated: bool
    points: int


def default_out_dir(sweep: str) -> Path:
    """farm-report-<sweep>/ in the working directory (gitignored: /farm-report*/)."""
    return Path(f"farm-report-{_slug(sweep)}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


# ------------------------------------------------------------------ collect


def collect(store: Any, sweep: str, runs: Sequence[str] = (), net: bool = False) -> ReportData:
    """The report's data; raises SweepNotFound, NoMeasuredPoints or UnknownRun."""
    sweep_row = store.find_sweep(sweep)
    name, points = load_run_points(store, sweep)
    if not any(p.measured for p in points):
        raise NoMeasuredPoints(f"sweep {name!r} has no measured points yet (no run "
                               "succeeded with a load point): nothing to report")
    simulated = bool(getattr(sweep_row, "simulated", False)) or any(p.simulated for p in points)
    prefix = "SIMULATED — " if simulated else ""
    colours = colours_for([p.gpu_label for p in points])
    energies = NET if net else GROSS
    basis = "net of idle" if net else "gross"
    figures: list[FigureSpec] = []
    notes: dict[str, list[str]] = {}

    def spec(slug: str, section: str, title: str, data: Any, fig_notes: list[str]) -> None:
        slug, taken = _slug(slug), {f.slug for f in figures}
        unique = next(s for n in range(1, len(taken) + 2)
                      if (s := slug if n == 1 else f"{slug}-{n}") not in taken)
        figures.append(FigureSpec(unique, section, prefix + title, data, fig_notes,
                                  simulated, colours))

    for whole in load_figures(points, energies, simulated):
        parts = whole.split(MAX_TOKEN_ROWS)
        for n, lf in enumerate(parts, 1):
            part = f" (part {n} of {len(parts)})" if len(parts) > 1 else ""
            spec(f"energy-vs-{lf.load_kind}-{lf.model}{part and f'-{n}'}", "energy_load",
                 f"{lf.model}: energy ({basis}) vs {KIND_TITLES[lf.load_kind]}{part}", lf,
                 [lf.selection.note(), *lf.plateau_notes()])
    if not any(f.section == "energy_load" for f in figures):
        notes["energy_load"] = ["No configuration has two or more load values with valid "
                                "measured points: no energy-vs-load figure."]

    pareto = pareto_figures(points, energies, simulated=simulated)
    for pf in pareto:
        spec(f"pareto-{pf.model}", "pareto",
             f"{pf.model}: energy ({basis}) vs latency, Pareto fronts across GPU models", pf,
             pf.notes())

    if not pareto:
        notes["pareto"] = ["No valid measured point has both an energy and a latency figure: "
                           "no Pareto front."]

    heatmaps = heatmap_figures(points, energies[0], simulated)
    for hf in heatmaps:
        spec(f"heatmap-{hf.model}-{hf.scenario}", "heatmap",
             f"{hf.model}, {hf.scenario}: energy ({basis}) per request by input × output "
             "token-length bin", hf, [hf.selection.note()])
    covered = {(hf.model, hf.scenario) for hf in heatmaps}
    single = sorted({(p.model, p.scenario) for p in points if p.measured} - covered)
    if single:
        notes["heatmap"] = [f"{m}, {s}: its valid points span one token-length cell only "
                            "(or none): no heat map." for m, s in single]

    timeline_runs = resolve_runs(points, runs, name) if runs else representative_runs(points)
    by_run = group_by(points, lambda p: p.run_id)
    results: dict[str, dict[str, Any] | None] = {}
    for run_id in dict.fromkeys([*timeline_runs, *representative_runs(points)]):
        results[run_id] = store.result_for(run_id)
    for run_id in timeline_runs:
        tl = build_timeline(by_run[run_id], store.trace_for(run_id), results[run_id])
        spec(f"timeline-{run_id[:12]}", "timeline", f"power timeline of run {run_id[:12]}", tl,
             tl.notes)
    if not runs:
        notes["timeline"] = ["Runs shown: per GPU, the succeeded run with the most load points "
                             "(valid runs first). Choose others with --runs RUN_ID."]

    return ReportData(name, simulated, datetime.now(UTC), points, figures,
                      measurement_notes(points, results, net), summary(points), pareto, notes,
                      net)


def summary(points: Sequence[RunPoint]) -> list[tuple[str, str]]:
    runs = {p.run_id: p for p in points}
    statuses = Counter(p.status for p in runs.values())
    verdicts = Counter(reason_left_out(p) or "valid measured" for p in points)
    null_energy = sum(1 for p in points if p.usable and p.get(PER_REQUEST) is None)
    out = [("runs", f"{len(runs)} ("
            + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")"),
           ("run points (run × load point)", str(len(points))),
           ("models", ", ".join(sorted({p.model for p in points}))),
           ("GPUs", ", ".join(sorted({p.gpu_label for p in points}))),
           ("scenarios", ", ".join(sorted({f"{p.scenario} ({p.scenario_kind})"
                                           for p in points})))]
    out += [(f"run points: {reason}", str(n)) for reason, n in
            sorted(verdicts.items(), key=lambda kv: (kv[0] != "valid measured", kv[0]))]
    if null_energy:
        out.append(("valid run points with J/request null", str(null_energy)))
    return out


def measurement_notes(points: Sequence[RunPoint], results: dict[str, dict[str, Any] | None],
                      net: bool) -> list[str]:
    """How energy was measured, from the stored results of a few runs per GPU."""
    by_run = {p.run_id: p for p in points}
    sensors: dict[tuple[Any, Any, Any], set[str]] = {}
    idle: dict[str, tuple[Any, Any]] = {}
    for run_id, result in results.items():
        if result is None:
            continue
        gpu = by_run[run_id].gpu_label
        key = (result.get("energy_sensor"), result.get("power_sensor"),
               result.get("sample_period_s"))
        sensors.setdefault(key, set()).add(gpu)
        if result.get("idle_power_w") is not None or result.get("idle_ctx_power_w") is not None:
            idle.setdefault(gpu, (result.get("idle_power_w"), result.get("idle_ctx_power_w")))
    out = []
    for (energy, power, period), gpus in sorted(sensors.items(), key=lambda kv: str(kv[0])):
        period_text = f"every {period:g} s" if period else "at an unrecorded period"
        out.append(f"{', '.join(sorted(gpus))}: energy from the {energy or 'unrecorded'} "
                   f"counter; power timeline from {power or 'no power sensor'}, sampled "
                   f"{period_text}.")
    out.append("Every energy figure is taken over a load point's steady-state window (opened "
               "when the engine's batch is full, closed when it starts to drain): the "
               "energy counter read at the window's two edges, summed over the run's GPUs. "
               "J/output token = window energy ÷ output tokens emitted inside the window; "
               "J/request = J/output token × mean output tokens per request.")
    out.append(("Plots show energy net of idle: the window's energy minus the run's idle "
                "power (CUDA context held, else without context) over the window. "
                if net else
                "Plots show gross energy (the whole boards, idle power included). ")
               + "The table gives both gross and net of idle figures.")
    if idle:
        out.append("Idle baselines (one run per GPU): " + "; ".join(
            f"{gpu}: {_w(a)} without, {_w(b)} with a CUDA context"
            for gpu, (a, b) in sorted(idle.items())) + ".")
    out.append("Means are over repetitions of the same configuration; intervals are 95% "
               "confidence intervals of the mean (Student's t, n − 1 degrees of freedom); a "
               "configuration measured once (n = 1) has no interval.")
    out.append("Plots use valid measured points only: the run succeeded and passed its "
               "validity checks (steady window long enough, power within the idle…limit "
               "range, temperature, counter/timeline agreement). Each figure says how many "
               "points it left out and why; the table lists them all.")
    return out


def _w(value: Any) -> str:
    return "—" if value is None else f"{value:.1f} W"


# ------------------------------------------------------------------- write


def render_all(specs: Sequence[FigureSpec]) -> list[bytes]:
    """PNG bytes of every figure, drawn one after the other in this process.

    (Drawing in a process pool was tried: on 2 cores it saved little next to
    the start of the workers, and spawn-based pools re-import a caller's main
    module.)
    """
    return [render(s) for s in specs]


def write_report(store: Any, sweep: str, out: Path | str | None = None,
                 runs: Sequence[str] = (), net: bool = False) -> WrittenReport:
    """Collect, draw and write the report; returns where it went."""
    data = collect(store, sweep, runs, net)
    out_dir = Path(out) if out is not None else default_out_dir(data.sweep)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    pngs = render_all(data.figures)
    paths = []
    for spec, png in zip(data.figures, pngs):
        path = fig_dir / f"{spec.slug}.png"
        path.write_bytes(png)
        paths.append(path)
    index = out_dir / "index.html"
    index.write_text(html.render_page(data, dict(zip((s.slug for s in data.figures), pngs))),
                     encoding="utf-8")
    return WrittenReport(data.sweep, out_dir, index, paths, data.simulated, len(data.points))


__all__ = ["NoMeasuredPoints", "ReportData", "WrittenReport", "collect",
           "default_out_dir", "render_all", "write_report"]
