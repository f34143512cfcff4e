"""Power timelines of chosen runs, with the run's energy windows as spans.

Which runs: those asked for (run ids, or unique prefixes of them), else a
representative one per GPU (and GPU count): the succeeded run with the most
load points, valid ones first. Only these runs' traces are ever loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.errors import ExitCode, FarmError
from farm.report.labels import fmt_unit, tokens_label
from farm.report.points import RunPoint
from farm.report.stats import group_by

# Shaded in this order, each with its own colour (plots.py); "run" is drawn as edges.
WINDOW_KINDS = ("idle", "idle_ctx", "load", "warmup", "steady")
WINDOW_NAMES = {"idle": "idle (no CUDA context)", "idle_ctx": "idle (CUDA context held)",
                "load": "engine load", "warmup": "warm-up", "steady": "steady state"}


class UnknownRun(FarmError, LookupError):
    """A `--runs` id that is no run of the sweep, or a prefix of several (exit 2)."""

    exit_code = ExitCode.INVALID_INPUT


def resolve_runs(points: Sequence[RunPoint], requested: Sequence[str], sweep: str) -> list[str]:
    """Each requested id (or unique prefix) as a run id of the sweep, in the given order."""
    run_ids = sorted({p.run_id for p in points})
    out: list[str] = []
    for want in requested:
        matches = [r for r in run_ids if r == want] or [r for r in run_ids if r.startswith(want)]
        if not matches:
            raise UnknownRun(f"no run {want!r} in sweep {sweep!r}")
        if len(matches) > 1:
            raise UnknownRun(f"run id prefix {want!r} matches {len(matches)} runs of sweep "
                             f"{sweep!r}; give more of it")
        if matches[0] not in out:
            out.append(matches[0])
    return out


def representative_runs(points: Sequence[RunPoint]) -> list[str]:
    """Per GPU label: the succeeded run with the most load points (valid first, then
    by model, scenario, lengths, repetition and id, so the choice is stable)."""
    out = []
    by_gpu = group_by([p for p in points if p.measured], lambda p: p.gpu_label)
    for _, gpu_points in sorted(by_gpu.items()):
        runs = group_by(gpu_points, lambda p: p.run_id)

        def rank(item: tuple[str, list[RunPoint]]) -> tuple[Any, ...]:
            run_id, pts = item
            p = pts[0]
            return (-len(pts), p.valid is not True, p.model, p.scenario, p.input_tokens or 0,
                    p.output_tokens, p.repetition, run_id)

        out.append(min(runs.items(), key=rank)[0])
    return out


@dataclass(frozen=True)
class Span:
    """A window shaded on the timeline: kind, start and end (s), energy (J; None: not measured)."""

    kind: str                    # idle | idle_ctx | load | warmup | steady
    label: str                   # e.g. "steady state, c=8"
    start_s: float
    end_s: float
    energy_j: float | None


@dataclass(frozen=True)
class Timeline:
    """One run's power trace (W per GPU over seconds), with its windows as spans."""

    run_id: str
    title: str
    t_s: list[float]
    power_w: list[list[float | None]]        # per GPU
    gpu_labels: list[str]
    sensor: str | None
    sample_period_s: float | None
    spans: list[Span]
    run_window: tuple[float, float] | None
    notes: list[str] = field(default_factory=list)

    @property
    def total_w(self) -> list[float | None] | None:
        """Sum over GPUs where every GPU has the sample (None for a one-GPU run)."""
        if len(self.power_w) < 2:
            return None
        return [None if any(v is None for v in vs) else sum(vs)  # type: ignore[misc]
                for vs in zip(*self.power_w)]


def window_spans(windows: Sequence[Any], load_labels: dict[int, str]) -> list[Span]:
    """The shaded spans of a run's EnergyWindows (the "run" window is not one)."""
    spans = []
    for w in windows:
        if w.name not in WINDOW_KINDS:
            continue
        label = WINDOW_NAMES[w.name]
        if w.name == "steady" and w.load_point is not None:
            label = f"{label}, {load_labels.get(w.load_point, f'load point {w.load_point}')}"
        spans.append(Span(w.name, label, float(w.start_s), float(w.start_s + w.duration_s),
                          w.energy_j))
    return spans


def build_timeline(run_points: Sequence[RunPoint], trace: Any, result: dict[str, Any] | None
                   ) -> Timeline:
    """A run's Timeline from its run points, PowerTrace (or None) and result_for() dict."""
    p = run_points[0]
    loads = [rp for rp in run_points if rp.load_kind is not None]
    load_labels = {i: rp.load_label for i, rp in enumerate(loads)}
    windows = (result or {}).get("windows") or []
    notes = []
    if p.status != "succeeded":
        notes.append(f"run {p.status}" + (f": {p.error}" if p.error else ""))
    elif p.valid is False:
        notes.append(f"invalid ({p.invalid_reasons or 'unnamed check'})")
    if trace is None:
        notes.append("no power timeline stored for this run")
    spans = window_spans(windows, load_labels)
    if spans:
        notes.append("windows: " + "; ".join(
            f"{s.label} {s.end_s - s.start_s:.3g} s, {fmt_unit(s.energy_j, 'J')}"
            for s in spans))
    run_window = next(((float(w.start_s), float(w.start_s + w.duration_s))
                       for w in windows if w.name == "run"), None)
    title = (f"{p.model} on {p.gpu_label}, {p.scenario}, "
             f"{tokens_label(p.input_tokens, p.output_tokens)}, rep {p.repetition} "
             f"(run {p.run_id[:12]})")
    return Timeline(
        run_id=p.run_id, title=title,
        t_s=list(trace.t_s) if trace is not None else [],
        power_w=[list(s) for s in trace.power_w] if trace is not None else [],
        gpu_labels=([f"GPU {i} ({uuid})" for i, uuid in enumerate(trace.gpu_uuids)]
                    if trace is not None else []),
        sensor=trace.sensor if trace is not None else None,
        sample_period_s=trace.sample_period_s if trace is not None else None,
        spans=spans, run_window=run_window, notes=notes)
