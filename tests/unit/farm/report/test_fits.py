"""Fitted curves vs batch size (farm/report/fits.py): the fit recovers known
parameters, refuses too few batch sizes, draws a curve, and reaches the dataset."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from farm.report.fits import batch_axis, fit_figures, fit_logistic, fitted_curves, logistic4
from farm.report.points import RunPoint
from tests.paths import ROOT

TRUE = {"L": 2.0, "k": -1.5, "x0": 4.0, "y0": 0.5}


def point(b: float, rep: int, value: float, *, kind: str = "concurrency",
          args: tuple = (), valid: bool = True) -> RunPoint:
    return RunPoint(
        run_id=f"r{b}-{rep}", sweep="unit", repetition=rep, model="m", backend="sim",
        gpu_model="h100-80gb", gpu_count=1, engine="sim", engine_version="1",
        engine_args=args, scenario="s", scenario_kind="server" if kind != "batch" else "batch",
        load_kind=kind, load_value=b if kind != "batch" else 64.0, input_tokens=64,
        output_tokens=16, decoding="greedy", status="succeeded", simulated=True, valid=valid,
        invalid_reasons=None, error=None,
        figures={"energy_per_output_token_j": value, "avg_power_w": 100.0 + 30 * np.log2(b)})


def synthetic(noise: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = np.repeat(2.0 ** np.arange(0, 9), 3)          # 1 … 256, 3 repetitions each
    y = logistic4(np.log2(b), *TRUE.values()) * (1 + rng.normal(0, noise, b.size))
    return b, y


def test_the_fit_recovers_known_parameters():
    b, y = synthetic()
    fit = fit_logistic(b, y)
    assert fit.ok and fit.n_points == 27 and fit.n_batch_sizes == 9
    for name, true in TRUE.items():
        assert fit.params[name] == pytest.approx(true, abs=0.1)
        # the standard error is honest: the truth within 4 of them
        assert abs(fit.params[name] - true) < 4 * fit.stderr[name]
    assert fit.r2 > 0.999 and 0 < fit.rmse < 0.03


def test_a_rising_curve_is_fitted_too():
    b = 2.0 ** np.arange(0, 8)
    fit = fit_logistic(b, logistic4(np.log2(b), 300.0, 1.2, 3.0, 100.0))
    assert fit.ok and fit.params["k"] == pytest.approx(1.2, rel=1e-3)
    assert fit.r2 == pytest.approx(1.0)


def test_fewer_batch_sizes_than_parameters_is_no_fit():
    fit = fit_logistic([1, 2, 4, 1, 2, 4], [3.0, 2.0, 1.0, 3.1, 2.1, 1.1])
    assert not fit.ok and fit.params is None and fit.rmse is None
    assert "3 batch size(s), fewer than the 4 parameters" in fit.reason
    assert fit.label.startswith("no fit")


def test_four_batch_sizes_without_repetitions_have_no_standard_errors():
    fit = fit_logistic([1, 2, 4, 8], [3.0, 2.0, 1.5, 1.4])
    assert fit.ok and all(e is None for e in fit.stderr.values())


def test_batch_axis_per_scenario():
    assert batch_axis(point(8, 0, 1.0)) == ("concurrency", 8.0)
    assert batch_axis(point(8, 0, 1.0, kind="batch")) == ("num_prompts", 64.0)
    hf = point(8, 0, 1.0, kind="batch", args=(("batch_size", 16),))
    assert batch_axis(hf) == ("engine.batch_size", 16.0)
    assert batch_axis(point(8, 0, 1.0, kind="request_rate")) is None


def test_curves_join_batch_sizes_and_leave_invalid_points_out():
    b, y = synthetic()
    points = [point(bi, i % 3, yi) for i, (bi, yi) in enumerate(zip(b, y))]
    points.append(point(512.0, 0, 99.0, valid=False))
    (curve,) = fitted_curves(points, "energy_per_output_token_j")
    assert [x for x, _ in curve.points] == list(2.0 ** np.arange(0, 9))
    assert curve.fit.ok and curve.fit.n_points == 27 and curve.x_axis == "concurrency"
    assert curve.points[0][1].n == 3


def test_an_engine_batch_argument_is_the_axis_of_a_batch_scenario():
    points = [point(8, r, 1.0 / bs + 0.01 * r, kind="batch", args=(("batch_size", bs),))
              for bs in (1, 2, 4, 8, 16) for r in range(2)]
    (curve,) = fitted_curves(points, "energy_per_output_token_j")
    assert curve.x_axis == "engine.batch_size" and curve.fit.n_batch_sizes == 5


def test_a_line_against_an_engine_argument_is_named_without_it():
    # The hf sweeps vary batch_size alone: their lines are the GPU's, not
    # "h100-80gb · attn_implementation=sdpa, batch_size=…"; a second argument that
    # varies still names its lines.
    same = [point(8, r, 1.0 / bs, kind="batch", args=(("attn", "sdpa"), ("batch_size", bs)))
            for bs in (1, 8, 64) for r in range(2)]
    (curve,) = fitted_curves(same, "energy_per_output_token_j")
    assert curve.label == "h100-80gb"
    both = same + [point(8, r, 2.0 / bs, kind="batch",
                         args=(("attn", "eager"), ("batch_size", bs)))
                   for bs in (1, 8, 64) for r in range(2)]
    labels = sorted(c.label for c in fitted_curves(both, "energy_per_output_token_j"))
    assert labels == ["h100-80gb · attn=eager", "h100-80gb · attn=sdpa"]


def test_the_legend_sits_under_its_panel_clear_of_the_points():
    from farm.report.plots import FigureSpec, draw_fits

    points = [point(bi, r, 1.0 / bi + 0.01 * r) for bi in (1, 2, 4) for r in range(2)]
    (ff,) = fit_figures(points)
    fig = draw_fits(FigureSpec("fits", "fits", "t", ff))
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 < ax.get_window_extent(renderer).y0    # below the axes


def _with_prompts(p: RunPoint, prompts: float) -> RunPoint:
    from dataclasses import replace

    return replace(p, run_id=f"{p.run_id}-{prompts:g}", load_value=prompts)


def test_a_prompt_count_per_batch_size_is_one_curve():
    # examples/hf-gpu.toml's diagonal: each batch size its own pass of prompts
    prompts = {1: 8.0, 8: 48.0, 64: 256.0, 128: 512.0}
    points = [_with_prompts(point(8, r, 1.0 / bs + 0.01 * r, kind="batch",
                                  args=(("batch_size", bs),)), prompts[bs])
              for bs in prompts for r in range(2)]
    (curve,) = fitted_curves(points, "energy_per_output_token_j")
    assert [b for b, _ in curve.points] == [1, 8, 64, 128] and curve.fit.n_batch_sizes == 4


def test_a_batch_size_run_with_two_prompt_counts_gives_a_curve_per_count():
    points = [_with_prompts(point(8, r, 1.0 / bs + n / 1000, kind="batch",
                                  args=(("batch_size", bs),)), n)
              for bs in (1, 8, 64) for n in (64.0, 512.0) for r in range(2)]
    curves = fitted_curves(points, "energy_per_output_token_j")
    assert len(curves) == 2
    assert {c.first.load_value for c in curves} == {64.0, 512.0}
    assert all(len(c.points) == 3 for c in curves)


def test_the_figure_draws_the_fitted_curve_with_r2_in_the_legend():
    from farm.report.plots import FigureSpec, draw_fits

    b, y = synthetic()
    points = [point(bi, i % 3, yi) for i, (bi, yi) in enumerate(zip(b, y))]
    (ff,) = fit_figures(points)
    fig = draw_fits(FigureSpec("fits", "fits", "t", ff))
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == "fit"]
    assert len(line.get_xdata()) == 101
    assert np.allclose(line.get_ydata(), ff.curves["energy_per_output_token_j"][0].fit.predict(
        line.get_xdata()))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    fit = ff.curves["energy_per_output_token_j"][0].fit
    assert fit.r2 > 0.999 and any(f"R² = {fit.r2:.3f}" in t for t in legend)
    assert any("L = 2" in n for n in ff.notes())


def test_three_batch_sizes_draw_points_and_say_no_fit():
    from farm.report.plots import FigureSpec, draw_fits

    points = [point(bi, r, 1.0 / bi + 0.01 * r) for bi in (1, 2, 4) for r in range(2)]
    (ff,) = fit_figures(points)
    fig = draw_fits(FigureSpec("fits", "fits", "t", ff))
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "fit"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("no fit: 3 batch size(s)" in t for t in legend)


# ------------------------------------------------------------------ the dataset

CURVE_SWEEP = """
name = "fit-sim"
repetitions = 2

[[model]]
id = "tiny-llama-1B"
source = "local/tiny"

[hardware]
gpu = ["sim:H100"]

[engine]
kind = "sim"

[[scenario]]
kind = "server"
concurrency = [1, 2, 4, 8, 16, 32]
duration_s = 1.0

[workload]
input_tokens = [128]
output_tokens = [64]
"""


def test_the_dataset_has_the_fits_table_and_imports(tmp_path):
    import pyarrow.parquet as pq

    from farm.report.dataset import TABLES
    from farm.report.export import export_sweep
    from farm.report.importer import import_dataset
    from farm.store import Store
    from tests import factories

    spec, toml, runs = factories.sweep(CURVE_SWEEP)
    store = Store.open(f"sqlite:///{tmp_path / 'a.db'}", upgrade=True)
    sid = store.record_sweep(spec, toml)
    store.add_runs(sid, runs)
    xs = np.log2([1, 2, 4, 8, 16, 32])
    for i, run in enumerate(runs):
        # J/output token = steady energy ÷ 50 tokens: the logistic TRUE, ±1% per repetition
        energies = logistic4(xs, *TRUE.values()) * 50 * (1 + 0.01 * (run.repetition - 0.5))
        # One after another: an import refuses two runs measured at once on one GPU.
        store.record_result(factories.result(
            run, steady_energy_j=list(energies),
            started_at=factories.T0 + timedelta(minutes=i)))
    summary = export_sweep(store, spec.name, "parquet", tmp_path / "out")
    assert summary.rows["fits"] == 4            # gross and net J/token, gross and net power
    fits = pq.read_table(tmp_path / "out" / "fits.parquet").to_pylist()
    assert [f for f in TABLES["fits"].names] == list(fits[0])
    (energy,) = [r for r in fits if r["figure"] == "energy_per_output_token_j"]
    assert energy["fitted"] and energy["x_axis"] == "concurrency"
    assert energy["n_points"] == 12 and energy["n_batch_sizes"] == 6
    assert energy["l_j"] == pytest.approx(TRUE["L"], rel=0.05)
    assert energy["k"] == pytest.approx(TRUE["k"], rel=0.05)
    assert energy["l_w"] is None and energy["rmse_w"] is None
    assert energy["r2"] > 0.99 and energy["l_stderr_j"] > 0
    (power,) = [r for r in fits if r["figure"] == "avg_power_w"]
    # the factory's power is 350 W at every load: a flat curve has no R²
    assert power["r2"] is None and power["l_j"] is None
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"dataset_schema_version": "1.8"' in manifest and '"fits"' in manifest
    with Store.open(f"sqlite:///{tmp_path / 'b.db'}", upgrade=True) as other:
        import_dataset(other, tmp_path / "out")
        assert other.counts()["results"] == len(runs)
    store.close()


def test_the_dataset_doc_is_current():
    import subprocess
    import sys

    root = ROOT
    proc = subprocess.run([sys.executable, "-m", "farm.report.dataset", "--check",
                           "docs/dataset.md"], capture_output=True, text=True, timeout=60,
                          cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_report_counts_n_and_the_ci_reached_per_configuration():
    from farm.report.figures import FigureInputs, kind

    points = [point(b, r, v) for b, vs in ((1.0, (1.0, 1.0, 1.0)), (2.0, (1.0, 1.2, 0.8)))
              for r, v in enumerate(vs)]
    points.append(point(4.0, 0, 0.5))               # one repetition: no interval
    section = kind("repetitions").build(FigureInputs(
        "unit", points, True, False, ("energy_per_request_j", "energy_per_output_token_j"),
        (), None))
    assert not section.figures
    assert section.notes[0].startswith("3 configuration point(s); usable repetitions n = 1–3")
    assert "1 with n < 2 have no interval" in section.notes[0]
    # c=2: mean 1.0, s = 0.2, t(0.975, 2) = 4.3027: ± 4.3027 × 0.2 / √3 = ±49.68%
    assert section.notes[2].startswith("±49.68% (n = 3)") and "c=2" in section.notes[2]
