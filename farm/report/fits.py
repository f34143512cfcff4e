"""Fitted curves: J/output token and GPU power against batch size.

The fit, as ML.ENERGY's data tools fit their curves, is a 4-parameter logistic
in log2 of the batch size b:

    y = L / (1 + exp(−k · (log2 b − x0))) + y0

L (≥ 0) the height of the step, in the figure's unit; k its steepness per
doubling of b (negative: y falls as b grows); x0 the log2 batch size at its
middle; y0 the level it starts from (k > 0) or falls to (k < 0). Fitted with
scipy.optimize.curve_fit (trust region, bounded) on every usable repetition's
value — not on the means — so repetitions weigh in and the residuals know their
spread. The fit's error: RMSE and R² of those values, and each parameter's
standard error from the covariance (None when there are no degrees of freedom
left). With fewer distinct batch sizes than the 4 parameters there is no fit,
and the curve says why; a fit that does not converge says so too. Never a
curve that the points do not determine.

The batch axis per scenario (`batch_axis`): a closed-loop server's
concurrency (requests kept in flight: the batch the engine can form); a batch
scenario's engine argument `batch_size` (hf) or `max_num_seqs` (vLLM, sim)
where the sweep sets it, else its `num_prompts` (prompts through the engine at
once). An open loop's request rate is not a batch size: no curve.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from farm.report.labels import Variants, tokens_label
from farm.report.points import RunPoint
from farm.report.selection import reason_left_out
from farm.report.stats import Estimate, estimate, group_by

FIT_FIGURES = ("energy_per_output_token_j", "avg_power_w")
PARAMETERS = ("L", "k", "x0", "y0")
MODEL = "y = L / (1 + exp(-k (log2 b - x0))) + y0"
BATCH_ARGS = ("batch_size", "max_num_seqs")     # engine arguments that set the batch


def logistic4(log2_b: np.ndarray, L: float, k: float, x0: float, y0: float) -> np.ndarray:
    """The fitted model at log2 batch sizes."""
    return L / (1.0 + np.exp(-k * (log2_b - x0))) + y0


@dataclass(frozen=True)
class Fit:
    """A logistic fit of one curve, or why there is none (`params` None, `reason`)."""

    n_points: int                       # values fitted (usable repetitions × batch sizes)
    n_batch_sizes: int
    params: dict[str, float] | None = None
    stderr: dict[str, float | None] | None = None
    rmse: float | None = None           # in the figure's unit
    r2: float | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether there is a fitted curve."""
        return self.params is not None

    def predict(self, batch_sizes: Sequence[float]) -> list[float]:
        """The fitted curve at `batch_sizes` (a fit only)."""
        assert self.params is not None
        p = self.params
        return list(logistic4(np.log2(np.asarray(batch_sizes, dtype=float)),
                              p["L"], p["k"], p["x0"], p["y0"]))

    @property
    def label(self) -> str:
        """R² for a legend, or why there is no fit."""
        if not self.ok:
            return f"no fit: {self.reason}"
        return f"R² = {self.r2:.3f}" if self.r2 is not None else "R² —"


def fit_logistic(batch_sizes: Sequence[float], values: Sequence[float]) -> Fit:
    """Fit MODEL to (batch size, value) pairs (see the module)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    b = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    x = np.log2(b)
    n, n_x = int(y.size), len(set(x.tolist()))
    if n_x < len(PARAMETERS):
        return Fit(n, n_x, reason=f"{n_x} batch size(s), fewer than the "
                                  f"{len(PARAMETERS)} parameters")
    lo, hi = float(x.min()), float(x.max())
    span = float(y.max() - y.min()) or abs(float(y.mean())) or 1.0
    bounds = ([0.0, -20.0, lo - 4.0, -np.inf], [np.inf, 20.0, hi + 4.0, np.inf])
    best = None
    # A few starts (falling and rising, step early, middle, late): least squares on a
    # logistic has local minima; the best of them is kept.
    starts = [(k0, m) for k0 in (-2.0, 2.0) for m in (lo + (hi - lo) / 4, (lo + hi) / 2,
                                                     hi - (hi - lo) / 4)]
    for k0, m in starts:
        p0 = [span, k0, m, float(y.min())]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(logistic4, x, y, p0=p0, bounds=bounds, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((y - logistic4(x, *popt)) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    if best is None:
        return Fit(n, n_x, reason="the least-squares fit did not converge")
    sse, popt, pcov = best
    sst = float(np.sum((y - y.mean()) ** 2))
    errors = {}
    for name, var in zip(PARAMETERS, np.diag(pcov)):
        ok = n > len(PARAMETERS) and math.isfinite(var) and var >= 0
        errors[name] = math.sqrt(var) if ok else None
    return Fit(n, n_x, params=dict(zip(PARAMETERS, (float(v) for v in popt))), stderr=errors,
               rmse=math.sqrt(sse / n), r2=1.0 - sse / sst if sst > 0 else None)


def batch_axis(p: RunPoint) -> tuple[str, float] | None:
    """(axis name, batch size) of a run point, or None when it has no batch axis."""
    if p.load_kind == "concurrency":
        return "concurrency", float(p.load_value)
    if p.load_kind == "batch":
        args = dict(p.engine_args)
        for name in BATCH_ARGS:
            if name in args and isinstance(args[name], int | float):
                return f"engine.{name}", float(args[name])
        return "num_prompts", float(p.load_value)
    return None


def _curve_key(p: RunPoint, axis: str) -> tuple:
    """The configuration without its batch axis or its load value: what one curve
    joins (`_curves_of` splits a group again by load value where it must)."""
    args = tuple((k, v) for k, v in p.engine_args if f"engine.{k}" != axis)
    return (p.model, p.gpu_model, p.gpu_count, *p.tuning, p.engine, args, p.scenario,
            p.load_kind, p.input_tokens, p.output_tokens, p.decoding, axis)


def _curves_of(group: list[RunPoint]) -> list[list[RunPoint]]:
    """One curve, or one per load value. An engine-argument axis (hf batch_size)
    has the prompts of a pass as its load value: where each batch size has its own
    prompt count (the diagonal examples/hf-gpu.toml sweeps, a pass of 10-20 s at
    each batch size; self-sizing makes every window as long) they are one curve;
    where a batch size was run with several prompt counts, those are different
    workloads and each count gets its curve."""
    axis = batch_axis(group[0])[0]
    if axis in ("concurrency", "num_prompts"):
        return [group]
    loads: dict[float, set] = {}
    for p in group:
        loads.setdefault(batch_axis(p)[1], set()).add(p.load_value)
    if all(len(values) == 1 for values in loads.values()):
        return [group]
    return list(group_by(group, lambda p: p.load_value).values())


@dataclass(frozen=True)
class Curve:
    """One configuration's values against its batch axis, and the fit through them."""

    model: str
    gpu_label: str
    label: str
    figure: str
    x_axis: str
    input_tokens: int | None
    output_tokens: int
    points: tuple[tuple[float, Estimate], ...]     # batch size, mean over repetitions
    fit: Fit
    first: RunPoint                                  # a run point of it (its dimensions)


def fitted_curves(points: Iterable[RunPoint], figure: str,
                  variants: Variants | None = None) -> list[Curve]:
    """A curve (with its fit) per configuration with ≥ 2 batch sizes of valid measured
    `figure` values."""
    points = list(points)
    usable = [p for p in points if reason_left_out(p, (figure,)) is None
              and batch_axis(p) is not None]
    variants = variants or Variants(usable)
    # An engine-argument axis spans that argument's values: the line is named
    # without it (else every line would read "batch_size=…").
    by_axis: dict[str, Variants] = {}

    def label_of(p: RunPoint, axis: str) -> str:
        if not axis.startswith("engine."):
            return variants.label(p)
        if axis not in by_axis:
            by_axis[axis] = Variants(
                [q for q in points if (batch_axis(q) or ("",))[0] == axis],
                without_args=(axis.removeprefix("engine."),))
        return by_axis[axis].label(p)

    out = []
    groups = group_by(usable, lambda p: _curve_key(p, batch_axis(p)[0])).values()
    for group in (curve for g in groups for curve in _curves_of(g)):
        axis = batch_axis(group[0])[0]
        by_b = group_by(group, lambda p: batch_axis(p)[1])
        if len(by_b) < 2:
            continue
        means = tuple((b, estimate(p.get(figure) for p in by_b[b])) for b in sorted(by_b))
        values = [(batch_axis(p)[1], float(p.get(figure))) for p in group]
        first = group[0]
        out.append(Curve(first.model, first.gpu_label, label_of(first, axis), figure, axis,
                         first.input_tokens, first.output_tokens, means,
                         fit_logistic([b for b, _ in values], [v for _, v in values]), first))
    out.sort(key=lambda c: (c.model, c.x_axis, c.input_tokens or 0, c.output_tokens,
                            c.gpu_label, c.label))
    return out


X_AXIS_LABELS = {
    "concurrency": "concurrency (requests in flight)",
    "engine.batch_size": "engine batch_size",
    "engine.max_num_seqs": "engine max_num_seqs",
    "num_prompts": "prompts given at once (batch)",
}


@dataclass(frozen=True)
class FitFigure:
    """One figure of fitted curves: a model and a batch axis; rows are the token-length
    pairs, columns the figures (J/output token, W)."""

    model: str
    x_axis: str
    figures: tuple[str, ...]
    curves: dict[str, list[Curve]]

    @property
    def token_pairs(self) -> list[tuple[int | None, int]]:
        """The (input, output) token lengths of the curves, ascending."""
        pairs = {(c.input_tokens, c.output_tokens) for cs in self.curves.values() for c in cs}
        return sorted(pairs, key=lambda t: (t[0] or 0, t[1]))

    def notes(self) -> list[str]:
        """One line per curve of the figure: its fit or why there is none."""
        lines = [f"fit: {MODEL} (b = {X_AXIS_LABELS.get(self.x_axis, self.x_axis)}), "
                 "least squares on every usable repetition; ± one standard error"]
        for figure in self.figures:
            for c in self.curves.get(figure, []):
                where = f"{c.label}, in {c.input_tokens}/out {c.output_tokens}, {figure}"
                f = c.fit
                if not f.ok:
                    lines.append(f"{where}: no fit ({f.reason}; n = {f.n_points})")
                    continue
                p, e = f.params, f.stderr
                params = ", ".join(f"{k} = {p[k]:.4g}" + (f" ± {e[k]:.2g}" if e[k] is not None
                                                          else "") for k in PARAMETERS)
                lines.append(f"{where}: {params}; RMSE {f.rmse:.3g}, {f.label}, "
                             f"n = {f.n_points} at {f.n_batch_sizes} batch sizes")
        return lines


def fit_figures(points: Sequence[RunPoint], figures: tuple[str, ...] = FIT_FIGURES
                ) -> list[FitFigure]:
    """One FitFigure per (model, batch axis) with a curve of ≥ 2 batch sizes."""
    variants = Variants(points)
    curves = {f: fitted_curves(points, f, variants) for f in figures}
    keys = sorted({(c.model, c.x_axis) for cs in curves.values() for c in cs})
    return [FitFigure(model, axis, figures,
                      {f: [c for c in cs if (c.model, c.x_axis) == (model, axis)]
                       for f, cs in curves.items()})
            for model, axis in keys]


def only_fitted(figures: Sequence[FitFigure]) -> tuple[list[FitFigure], str | None]:
    """The figures without the token-length rows in which no curve has a fit (a panel of
    points saying "no fit" in every legend tells nothing the caption cannot), and one
    line naming what was left out and why (None when nothing was)."""
    kept: list[FitFigure] = []
    left: dict[str, list[str]] = {}         # why → the rows left out for it
    for ff in figures:
        pairs = []
        for pair in ff.token_pairs:
            curves = [c for cs in ff.curves.values() for c in cs
                      if (c.input_tokens, c.output_tokens) == pair]
            if any(c.fit.ok for c in curves):
                pairs.append(pair)
                continue
            why = "; ".join(dict.fromkeys(str(c.fit.reason) for c in curves))
            left.setdefault(why, []).append(
                f"{ff.model} vs {ff.x_axis}, {tokens_label(*pair)}")
        if pairs:
            kept.append(FitFigure(ff.model, ff.x_axis, ff.figures, {
                f: [c for c in cs if (c.input_tokens, c.output_tokens) in pairs]
                for f, cs in ff.curves.items()}))
    if not left:
        return kept, None
    return kept, "Not drawn, no fit: " + "; ".join(
        f"{', '.join(rows)} ({why})" for why, rows in left.items()) + "."
