"""`farmctl report SWEEP`: a self-contained HTML report plus its figures as PNG files.

    collect(store, sweep)     → ReportData: every figure's data, notes and tables (no drawing):
                                each registered kind of figure (farm/report/figures/) in
                                page order
    write_report(store, ...)  → draws the figures (plots.py), writes DIR/figures/*.png and
                                DIR/index.html (html.py), returns a WrittenReport

Reads the sweep's run points (one row per run and load point: no per-request
records), the runs' specs (for the measurement settings and validity bounds
they used: bounds.py), and the power trace and energy windows of the few runs
whose timelines are drawn. Nothing else is loaded.
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
from farm.output import setting_text
from farm.report import html
from farm.report.bounds import Setting, measurement_settings, recorded_bounds
from farm.report.figures import FigureInputs, Reads, kinds
from farm.report.finding import key_finding
from farm.report.plots import FigureSpec, colours_for, render
from farm.report.points import RunPoint, load_run_points
from farm.report.selection import reason_left_out
from farm.report.series import PER_REQUEST, PER_TOKEN
from farm.report.timeline import representative_runs

GROSS = (PER_REQUEST, PER_TOKEN)
NET = ("energy_per_request_net_j", "energy_per_output_token_net_j")


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
    section_notes: dict[str, list[str]] = field(default_factory=dict)
    net: bool = False
    settings: list[Setting] = field(default_factory=list)    # the runs' [measurement]
    # (check, bound, GPUs) as the verdicts of one run per GPU recorded them
    bounds: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    finding: str | None = None           # the key finding, first on the page
    imported_from: list[str] = field(default_factory=list)   # exports results came from


@dataclass(frozen=True)
class WrittenReport:
    """A report written to disk: its directory, index.html and figure files."""

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
    figures: list[FigureSpec] = []
    notes: dict[str, list[str]] = {}
    cache: dict[tuple[str, str], Any] = {}       # store reads shared by the kinds
    for kind in kinds():
        inputs = FigureInputs(name, points, simulated, net, NET if net else GROSS, runs,
                              Reads(store, kind.name, kind.needs, cache))
        section = kind.build(inputs)
        for planned in section.figures:
            slug, taken = _slug(planned.slug), {f.slug for f in figures}
            unique = next(s for n in range(1, len(taken) + 2)
                          if (s := slug if n == 1 else f"{slug}-{n}") not in taken)
            figures.append(FigureSpec(unique, kind.name, prefix + planned.title, planned.data,
                                      list(planned.notes), simulated, colours))
        if section.notes:
            notes[kind.name] = list(section.notes)

    # How energy was measured: from the results the kinds read (the timeline runs),
    # then those of one run per GPU.
    results = {run_id: r for (need, run_id), r in cache.items() if need == "results"}
    for run_id in representative_runs(points):
        if run_id not in results:
            results[run_id] = store.result_for(run_id)
    # The settings the verdicts used travel with each run (RunSpec.measurement).
    settings = measurement_settings(r["spec_json"] for r in store.runs_of(sweep_row.id))
    gpu_of = {p.run_id: p.gpu_label for p in points}
    imported = sorted({row["imported_from"] for row in store.result_rows(sweep_row.id)
                       if row.get("imported_from")})
    return ReportData(name, simulated, datetime.now(UTC), points, figures,
                      measurement_notes(points, results, net), summary(points), notes, net,
                      settings, recorded_bounds(results, gpu_of), key_finding(points, net),
                      imported)


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
           *_tuning_summary(points),
           ("scenarios", ", ".join(sorted({f"{p.scenario} ({p.scenario_kind})"
                                           for p in points})))]
    out += [(f"run points: {reason}", str(n)) for reason, n in
            sorted(verdicts.items(), key=lambda kv: (kv[0] != "valid measured", kv[0]))]
    if null_energy:
        out.append(("valid run points with J/request null", str(null_energy)))
    return out


def _tuning_summary(points: Sequence[RunPoint]) -> list[tuple[str, str]]:
    """The power limits and SM clocks the runs asked for, where any did."""
    out = []
    for what, attr, unit in (("power limits asked for (per GPU)", "power_limit_w", "W"),
                             ("SM clocks asked for", "sm_clock_mhz", "MHz")):
        settings = sorted({getattr(p, attr) for p in points if getattr(p, attr) is not None},
                          key=lambda v: (0, 0.0) if isinstance(v, str) else (1, float(v)))
        if settings:
            out.append((what, ", ".join(setting_text(v, unit) for v in settings)))
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
               "validity checks (steady window at least min_steady_s long, power within the "
               "idle…limit range, temperature, counter/timeline agreement; the bounds this "
               "sweep used are listed below). Each figure says how many points it left out "
               "and why; the table lists them all.")
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
