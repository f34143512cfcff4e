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
from farm.store import Store
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
    duration_s = 0.25
    warmup_s = 0.02

    [workload]
    input_tokens = [64]
    output_tokens = [16]

    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.05
    min_steady_s = {min_steady_s}
    cooldown_timeout_s = 0
    codecarbon = false
    """)


def _export(tmp_path_factory, min_steady_s: float) -> Path:
    base = tmp_path_factory.mktemp("recheck")
    with Store.open(f"sqlite:///{base / 'src.db'}", upgrade=True) as store:
        name = fill_store(store, SWEEP.format(min_steady_s=min_steady_s), parallel=2)
        export_sweep(store, name, "jsonl", base / "export")
    return base / "export"


@pytest.fixture(scope="module")
def valid_export(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, 0.05)


@pytest.fixture(scope="module")
def invalid_export(tmp_path_factory) -> Path:
    """Its steady windows (~0.25 s) are shorter than min_steady_s: every run invalid."""
    return _export(tmp_path_factory, 5.0)


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
