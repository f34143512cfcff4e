"""`farmctl import` re-checks, never trusts (issue 22 item 6; docs/dataset.md#import).

An export is edited and its manifest re-hashed, as anyone can: the import derives
every figure and the verdict again from the raw windows, timeline and requests,
refuses what no GPU produces (naming file, row and field), and marks what it
imported with its provenance. A tiny simulated sweep (2 runs, ~4 s) is measured once.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from farm.report import export
from farm.report.dataset import DatasetError
from farm.report.export import export_sweep
from farm.report.importer import import_dataset
from farm.report.recheck import Where, recheck
from farm.store import Store
from farm_contract.records import RunResult
from farm_contract.runspec import RunSpec
from tests.reportdata import fill_store

SWEEP = textwrap.dedent("""\
    name = "recheck"
    repetitions = 2

    [[model]]
    id = "llama-3.1-8b"
    source = "meta-llama/Llama-3.1-8B-Instruct"
    dtype = "bfloat16"

    [hardware]
    gpu = ["sim:L4"]
    gpus_per_run = [1]

    [engine]
    kind = "sim"

    [[scenario]]
    kind = "server"
    concurrency = [1, 8]
    duration_s = {duration_s}
    warmup_s = 0.02

    [workload]
    input_tokens = [64]
    output_tokens = [16]

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.05
    min_steady_s = {min_steady_s}
    agreement_min_window_s = {agreement_min_window_s}
    cooldown_timeout_s = 0
    codecarbon = false
    """)


def _export(tmp_path_factory, min_steady_s: float, agreement_min_window_s: float = 5.0,
            duration_s: float = 0.25) -> Path:
    base = tmp_path_factory.mktemp("recheck")
    toml = SWEEP.format(min_steady_s=min_steady_s, duration_s=duration_s,
                        agreement_min_window_s=agreement_min_window_s)
    with Store.open(f"sqlite:///{base / 'src.db'}", upgrade=True) as store:
        name = fill_store(store, toml, parallel=2)
        export_sweep(store, name, "jsonl", base / "export")
    return base / "export"


@pytest.fixture(scope="module")
def valid_export(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, 0.05)


@pytest.fixture(scope="module")
def invalid_export(tmp_path_factory) -> Path:
    """Its steady windows (~0.25 s) are shorter than min_steady_s: every run invalid."""
    return _export(tmp_path_factory, 5.0)


@pytest.fixture(scope="module")
def judged_export(tmp_path_factory) -> Path:
    """Its steady and idle windows are long enough for the agreement check to judge,
    its steady windows (~0.4 s) long enough to hold several samples (0.05 s)."""
    return _export(tmp_path_factory, 0.05, agreement_min_window_s=0.01, duration_s=0.5)


@pytest.fixture(scope="module")
def measured(valid_export) -> tuple[RunResult, RunSpec]:
    """The first run of the valid export as its worker measured it, with its spec."""
    run = json.loads((valid_export / "runs.jsonl").read_text().splitlines()[0])
    with Store.open(f"sqlite:///{valid_export.parent / 'src.db'}") as store:
        result = store.run_result(run["run_id"])
    assert result is not None and result.requests and result.trace is not None
    return result, RunSpec.model_validate_json(run["spec_json"])


def edited(source: Path, tmp_path: Path, table: str, edit, name: str = "edited") -> Path:
    """A copy of the export with `edit(row: dict, number: int)` applied to each row of
    `table` (jsonl) and the manifest re-hashed, as a careless or hostile hand would."""
    target = tmp_path / name
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    path = target / f"{table}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for number, row in enumerate(rows, start=1):
        edit(row, number)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["tables"][table].update(sha256=export.sha256(path), bytes=path.stat().st_size)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def edit_result(change):
    """An edit of each run's result_json (the figures a store is built from)."""
    def edit(row, number):
        result = json.loads(row["result_json"])
        change(result)
        row["result_json"] = json.dumps(result)
    return edit


def import_into(tmp_path: Path, directory: Path):
    store = Store.open(f"sqlite:///{tmp_path / f'{directory.name}.db'}", upgrade=True)
    return store, import_dataset(store, directory)


def test_a_negative_energy_per_token_is_refused_naming_file_row_and_field(valid_export,
                                                                          tmp_path):
    def minus_five(result):
        result["load_points"][0]["energy_per_output_token_j"] = -5

    directory = edited(valid_export, tmp_path, "runs", edit_result(minus_five))
    with pytest.raises(DatasetError, match=r"runs\.jsonl row 1 \(run [0-9a-f]+\), result_json "
                       r"load_points\[0\]\.energy_per_output_token_j = -5: negative"):
        import_into(tmp_path, directory)


def test_a_flattering_energy_per_token_is_refused(valid_export, tmp_path):
    """Halved J/token, still positive: below what the window's energy and tokens give."""
    def halve(result):
        for lp in result["load_points"]:
            lp["energy_per_output_token_j"] /= 2

    directory = edited(valid_export, tmp_path, "runs", edit_result(halve))
    with pytest.raises(DatasetError, match=r"load_points\[\d\]\.energy_per_output_token_j = "
                       r"\S+ J: below what its steady window's energy and the requests' "
                       r"tokens give"):
        import_into(tmp_path, directory)


def test_impossible_power_and_energy_are_refused(valid_export, tmp_path):
    def spike(row, number):
        if number == 3:
            row["power_w"] = 5000.0

    directory = edited(valid_export, tmp_path, "timelines", spike)
    with pytest.raises(DatasetError, match=r"timelines\.jsonl row 3 \(run \w+, GPU 0, sample 2\)"
                       r" power_w = 5000 W: above 2 × the GPU's power limit"):
        import_into(tmp_path, directory)

    def negative(result):
        result["windows"][0]["energy_j"] = -1.0

    directory = edited(valid_export, tmp_path, "runs", edit_result(negative), "negative")
    with pytest.raises(DatasetError, match=r"result_json windows\[0\] \(\w+\) energy_j = -1 J: "
                       "negative energy"):
        import_into(tmp_path, directory)


def test_a_null_power_limit_does_not_lift_the_ceiling(valid_export, tmp_path):
    # Nulling the GPUs' limits in result_json turned every power ceiling off (audit,
    # 2026-12-08): the catalogue's TDP for the GPU's model stands in.
    def spike(row, number):
        if number == 3:
            row["power_w"] = 5000.0

    def no_limits(result):
        for gpu in result["gpus"]:
            gpu["power_limit_w"] = None

    spiked = edited(valid_export, tmp_path, "timelines", spike)
    directory = edited(spiked, tmp_path, "runs", edit_result(no_limits), "no-limits")
    with pytest.raises(DatasetError, match=r"power_w = 5000 W: above 2 × the GPU's power limit"):
        import_into(tmp_path, directory)


def test_a_window_the_timeline_does_not_integrate_to_is_refused(valid_export, tmp_path):
    def doubled(result):
        for w in result["windows"]:
            if w["name"] == "steady" and w["timeline_energy_j"]:
                w["timeline_energy_j"] *= 2

    directory = edited(valid_export, tmp_path, "runs", edit_result(doubled))
    with pytest.raises(DatasetError, match=r"windows\[\d+\] \(steady\[0\]\) timeline_energy_j = "
                       r".* the exported power timeline integrates to"):
        import_into(tmp_path, directory)


def test_the_verdict_is_derived_again_not_taken(invalid_export, tmp_path):
    def pass_everything(result):
        result["validity"]["valid"] = True
        for check in result["validity"]["checks"]:
            check["passed"] = True

    directory = edited(invalid_export, tmp_path, "runs", edit_result(pass_everything))
    store, summary = import_into(tmp_path, directory)
    with store:
        assert summary.results_imported == 2
        rows = store.result_rows()
        assert rows and all(row["valid"] is False for row in rows)
        assert {row["invalid_reasons"] for row in rows} == {"steady_window"}


def test_figures_are_derived_again_and_results_carry_their_provenance(valid_export, tmp_path):
    """An untouched export imports with the same figures (derived again, within the
    float32 of the stored inter-token gaps) and each result says where it came from."""
    digest = export.sha256(valid_export / "manifest.json")[:16]
    store, summary = import_into(tmp_path, valid_export)
    with store:
        assert summary.results_imported == 2
        rows = store.result_rows()
        assert {row["imported_from"].split(" (")[0] for row in rows} == {
            f"export sha256:{digest}"}
        assert all(row["valid"] for row in rows)
        exported = [json.loads(line) for line in
                    (valid_export / "run_points.jsonl").read_text().splitlines()]
        by_point = {(r["run_id"], r["load_point"]): r for r in exported}
        for row in rows:
            before = by_point[(row["run_id"], row["load_point"])]
            assert row["energy_per_output_token_j"] == pytest.approx(
                before["energy_per_output_token_j"], rel=1e-6)
            assert row["energy_per_output_token_net_j"] == pytest.approx(
                before["energy_per_output_token_net_j"], rel=1e-3)
        # and the store's own export says so too (dataset 1.5)
        export_sweep(store, "recheck", "jsonl", tmp_path / "again")
        runs = [json.loads(line) for line in
                (tmp_path / "again" / "runs.jsonl").read_text().splitlines()]
        assert all(r["imported_from"].startswith(f"export sha256:{digest}") for r in runs)


# ------------------------------------------------------------------ audit: import holes


def test_the_judged_export_imports_valid_with_its_windows_agreeing(judged_export, tmp_path):
    """The fixture the agreement tests below edit: untouched, its windows agree."""
    store, _ = import_into(tmp_path, judged_export)
    with store:
        assert all(row["valid"] for row in store.result_rows())


def test_a_non_finite_power_sample_is_refused_naming_its_row(valid_export, tmp_path):
    """NaN passes every bound (`< 0`, `> ceiling`) and voided the timeline integral,
    so the counter went unchecked (audit: 30% less J/token imported as valid)."""
    def nan(row, number):
        if number == 3:
            row["power_w"] = float("nan")

    directory = edited(valid_export, tmp_path, "timelines", nan)
    with pytest.raises(DatasetError, match=r"timelines\.jsonl row 3 \(run \w+(, GPU 0, sample 2)?"
                       r"\) power_w = nan: not a finite number"):
        import_into(tmp_path, directory)


AT = Where("runs.jsonl", 1, "timelines.jsonl", 1, "requests.jsonl", 1)


@pytest.mark.parametrize(("series", "value"), [("power_w", float("nan")),
                                               ("temperature_c", float("inf"))])
def test_the_recheck_refuses_a_non_finite_reading_of_any_series(measured, series, value):
    result, spec = measured
    readings = [list(s) for s in getattr(result.trace, series)]
    readings[0][2] = value
    trace = result.trace.model_copy(update={series: readings})
    with pytest.raises(DatasetError, match=rf"timelines\.jsonl row 3 \(run \w+, GPU 0, sample 2\)"
                       rf" {series} = {value}: not a finite number"):
        recheck(result.model_copy(update={"trace": trace}), spec, AT)


def _lowered_steady(factor: float, null_samples):
    """Edits: each steady window's counter energy and the run's J/token × `factor`
    (consistently, so only the timeline can tell), and `null_samples(window)` of the
    timeline inside each steady window nulled; exported timeline energies nulled."""
    windows: dict[str, list[tuple[float, float]]] = {}

    def runs(row, number):
        result = json.loads(row["result_json"])
        for w in result["windows"]:
            w["timeline_energy_j"] = None
            if w["name"] == "steady":
                w["energy_j"] *= factor
                w["per_gpu_energy_j"] = [e * factor for e in w["per_gpu_energy_j"]]
                windows.setdefault(row["run_id"], []).append(
                    (w["start_s"], w["start_s"] + w["duration_s"]))
        for lp in result["load_points"]:
            lp["energy_per_output_token_j"] *= factor
        row["result_json"] = json.dumps(result)

    def timelines(row, number):
        for start, end in windows.get(row["run_id"], []):
            inside = start <= row["t_s"] <= end
            if inside and null_samples(row["sample"], start, end):
                row["power_w"] = None

    return runs, timelines


@pytest.mark.parametrize("nulled", ["one sample", "every sample"])
def test_missing_power_samples_leave_no_counter_unchecked(judged_export, tmp_path, nulled):
    """A null sample used to void the window's integral (agreement None: passed); now
    the integral spans it, and a window the timeline has no integral for disagrees."""
    first: dict[tuple[float, float], int] = {}

    def pick(sample, start, end):
        return nulled == "every sample" or first.setdefault((start, end), sample) == sample

    runs, timelines = _lowered_steady(0.7, pick)
    directory = edited(judged_export, tmp_path, "runs", runs, "runs")
    directory = edited(directory, tmp_path, "timelines", timelines, "timelines")
    store, summary = import_into(tmp_path, directory)
    with store:
        assert summary.results_imported == 2
        rows = store.result_rows()
        assert rows and all(row["valid"] is False for row in rows)
        assert all("agreement" in row["invalid_reasons"].split(",") for row in rows)
        if nulled == "every sample":
            checks = [c for row in rows for c in store.run_result(row["run_id"]).validity.checks
                      if c.name == "agreement"]
            assert all("(no timeline ratio)" in c.detail for c in checks)


def _with_requests_doubled(source: Path, tmp_path: Path) -> Path:
    """Run 1's request rows twice (same load point and index), its count doubled."""
    rows = (source / "requests.jsonl").read_text().splitlines()
    first_run = json.loads(rows[0])["run_id"]
    mine = [line for line in rows if json.loads(line)["run_id"] == first_run]

    def twice(row, number):
        if row["run_id"] == first_run:
            row["num_requests"] *= 2
            result = json.loads(row["result_json"])
            for lp in result["load_points"]:
                lp["energy_per_output_token_j"] /= 2
            row["result_json"] = json.dumps(result)

    directory = edited(source, tmp_path, "runs", twice, "runs")
    path = directory / "requests.jsonl"
    path.write_text("\n".join(mine + rows) + "\n")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["tables"]["requests"].update(sha256=export.sha256(path),
                                          bytes=path.stat().st_size, rows=len(mine + rows))
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_duplicated_request_rows_are_refused(valid_export, tmp_path):
    """Every token counted twice halved J/token (audit: 4.09 → 2.05, valid)."""
    with pytest.raises(DatasetError, match=r"requests(\.jsonl)? (row \d+ )?\(run \w+, load "
                       r"point 0, request 0\) index = 0: a second row for this load point and "
                       "index"):
        import_into(tmp_path, _with_requests_doubled(valid_export, tmp_path))


def test_a_request_of_no_load_point_is_refused(valid_export, tmp_path):
    def elsewhere(row, number):
        if number == 1:
            row["load_point"] = 7

    directory = edited(valid_export, tmp_path, "requests", elsewhere)
    with pytest.raises(DatasetError, match=r"requests(\.jsonl)? (row \d+ )?\(run \w+, load point "
                       r"7, request 0\) load_point = 7: the result has no such load point"):
        import_into(tmp_path, directory)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("output_tokens", -3, r"output_tokens = -3: negative token count"),
    ("ttft_s", float("nan"), r"ttft_s = nan s: not a finite number"),
    ("itl_s", [0.01, float("inf")], r"itl_s\[1\] = inf s: not a finite number"),
])
def test_the_recheck_refuses_request_values_no_load_generator_writes(measured, field, value,
                                                                     message):
    result, spec = measured
    requests = [result.requests[0].model_copy(update={field: value}), *result.requests[1:]]
    with pytest.raises(DatasetError, match=r"requests\.jsonl row 1 \(run \w+, load point 0, "
                       r"request \d+\) " + message):
        recheck(result.model_copy(update={"requests": requests}), spec, AT)


def test_a_null_energy_per_token_that_can_be_derived_is_refused(valid_export, tmp_path):
    """A null exported J/token skipped the comparison, so the store showed the one the
    (edited) requests gave, unchecked."""
    def null(result):
        result["load_points"][0]["energy_per_output_token_j"] = None

    directory = edited(valid_export, tmp_path, "runs", edit_result(null))
    with pytest.raises(DatasetError, match=r"load_points\[0\]\.energy_per_output_token_j = null, "
                       r"but its steady window's energy and the requests' tokens give \S+ J"):
        import_into(tmp_path, directory)


def test_a_failed_result_is_checked_too_and_has_no_verdict(valid_export, tmp_path):
    """Status "failed" skipped every check (audit: −7 J/token shown as valid)."""
    def failed(result):
        result["status"] = "failed"

    def failed_negative(result):
        failed(result)
        result["load_points"][0]["energy_per_output_token_j"] = -7.0

    directory = edited(valid_export, tmp_path, "runs", edit_result(failed_negative), "negative")
    with pytest.raises(DatasetError, match=r"load_points\[0\]\.energy_per_output_token_j = -7: "
                       "negative"):
        import_into(tmp_path, directory)

    store, summary = import_into(tmp_path, edited(valid_export, tmp_path, "runs",
                                                  edit_result(failed), "failed"))
    with store:
        assert summary.results_imported == 2
        rows = store.result_rows()
        assert rows and all(row["status"] == "failed" and row["valid"] is None for row in rows)
