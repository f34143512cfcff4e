"""`farmctl import` refuses what no farm records, and a refusal writes nothing
(docs/dataset.md#import): one measurement under two runs (a GPU measures one run
at a time), simulated runs in a measured sweep whatever the editable column says,
rows of the wrong type (named by file, row and field, never a traceback), and a
sweep another owner recorded while the import ran.

Exports are built from `tests.factories` results (no run is measured): fast.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from farm.errors import NotPermitted
from farm.ownership import Identity
from farm.report import export
from farm.report.dataset import DatasetError
from farm.report.export import export_sweep
from farm.report.importer import import_dataset
from farm.store import Store
from farm.sweep_file import parse_sweep
from tests import factories

T0 = factories.T0
ALICE = Identity("alice", admin=False)
# The factories' sweep on real GPUs with a real engine: its runs are measured.
MEASURED = (factories.SMALL_SWEEP.replace('gpu = ["sim:H100", "sim:L4"]', 'gpu = ["H100"]')
            .replace('kind = "sim"', 'kind = "vllm"'))


def export_of(tmp_path: Path, starts: list[datetime], toml: str = factories.SMALL_SWEEP
              ) -> Path:
    """A JSON Lines export of the sweep with a result (30 s on GPU-sim-0000) for its
    first runs, started at `starts`."""
    spec, text, runs = factories.sweep(toml)
    with Store.open(f"sqlite:///{tmp_path / 'src.db'}", upgrade=True) as src:
        src.add_runs(src.record_sweep(spec, text), runs)
        for run, start in zip(runs, starts):
            src.record_result(factories.result(run, started_at=start))
        export_sweep(src, spec.name, "jsonl", tmp_path / "export")
    return tmp_path / "export"


def store(tmp_path: Path, name: str = "dst") -> Store:
    return Store.open(f"sqlite:///{tmp_path / f'{name}.db'}", upgrade=True)


def edit_rows(directory: Path, table: str, edit) -> None:
    """`edit(rows)` applied to a table's rows and the manifest re-hashed, as anyone can."""
    path = directory / f"{table}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    edit_manifest(directory, lambda m: m["tables"][table].update(
        sha256=export.sha256(path), bytes=path.stat().st_size))


def edit_manifest(directory: Path, edit) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def with_result(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["result_json"] is not None]


def assert_nothing_written(dst: Store) -> None:
    counts = dst.counts()
    assert (counts["sweeps"], counts["runs"], counts["results"]) == (0, 0, 0)


# ------------------------------------------------------------ one GPU, one run


def test_one_measurement_under_two_runs_is_refused(tmp_path):
    """Two runs measured at once on one GPU: one carries the other's measurement."""
    directory = export_of(tmp_path, [T0, T0 + timedelta(seconds=10)])
    with store(tmp_path) as dst:
        with pytest.raises(DatasetError, match=r"runs\.jsonl row \d+ \(run [0-9a-f]+\): "
                           r"measured on GPU GPU-sim-0000 from .* while it measured run "
                           r"[0-9a-f]+ \(runs\.jsonl row \d+, from "):
            import_dataset(dst, directory, ALICE)
        assert_nothing_written(dst)


def test_a_result_measured_while_the_store_measured_another_run_is_refused(tmp_path):
    directory = export_of(tmp_path, [T0, T0 + timedelta(minutes=1)])    # one after the other
    spec, toml, runs = factories.sweep()
    with store(tmp_path) as dst:
        dst.add_runs(dst.record_sweep(spec, toml, owner="alice"), [runs[2]])
        dst.record_result(factories.result(runs[2], started_at=T0 + timedelta(seconds=65)))
        with pytest.raises(DatasetError, match=rf"while it measured run {runs[2].run_id} "
                           r"\(in this store, from "):
            import_dataset(dst, directory, ALICE)
        assert dst.counts()["results"] == 1
    # The same run's own result in the store is the same run, not an overlap.
    with store(tmp_path, "same") as dst:
        dst.add_runs(dst.record_sweep(spec, toml, owner="alice"), [runs[0]])
        dst.record_result(factories.result(runs[0], started_at=T0 + timedelta(seconds=5)))
        done = import_dataset(dst, directory, ALICE)
        assert (done.results_imported, done.duplicates) == (1, 1)


# ------------------------------------------------------------ simulated vs measured


def test_simulated_runs_never_join_a_measured_sweep_whatever_the_column_says(tmp_path):
    directory = export_of(tmp_path, [T0])
    edit_rows(directory, "runs", lambda rows: [row.update(simulated=None) for row in rows])
    edit_manifest(directory, lambda m: (m.update(simulated=False),
                                        m["sweep"].update(simulated=False)))
    with store(tmp_path) as dst:
        dst.record_sweep(parse_sweep(MEASURED), MEASURED, owner="alice")
        with pytest.raises(DatasetError, match=r"spec_json: a simulated run in a measured "
                           "sweep"):
            import_dataset(dst, directory, ALICE)
        assert dst.counts()["runs"] == 0


def test_a_simulated_result_never_joins_a_measured_sweep(tmp_path):
    """The runs are measured by their spec; the factories' results say simulated."""
    directory = export_of(tmp_path, [T0], toml=MEASURED)
    edit_rows(directory, "runs", lambda rows: [row.update(simulated=None) for row in rows])
    with store(tmp_path) as dst:
        with pytest.raises(DatasetError, match=r"result_json simulated: a simulated result "
                           "in a measured sweep"):
            import_dataset(dst, directory, ALICE)
        assert_nothing_written(dst)


# ------------------------------------------------------------ all or nothing


def test_a_refused_import_writes_nothing(tmp_path):
    """The second result is refused by the re-check: the first is not kept, no run
    sits dispatched without a result, no sweep is recorded."""
    directory = export_of(tmp_path, [T0, T0 + timedelta(minutes=1)])

    def negative_energy(rows):
        second = with_result(rows)[1]
        result = json.loads(second["result_json"])
        result["windows"][0]["energy_j"] = -1.0
        second["result_json"] = json.dumps(result)

    edit_rows(directory, "runs", negative_energy)
    with store(tmp_path) as dst:
        with pytest.raises(DatasetError, match="negative energy"):
            import_dataset(dst, directory, ALICE)
        assert_nothing_written(dst)


# ------------------------------------------------------------ bad rows, named


def first_trace(change):
    def edit(rows):
        row = with_result(rows)[0]
        trace = json.loads(row["trace_json"])
        change(trace)
        row["trace_json"] = json.dumps(trace)
    return edit


BAD_ROWS = {
    "trace without sensor": ("runs", first_trace(lambda t: t.pop("sensor")),
                             r"runs\.jsonl row \d+ \(run \w+\), trace_json: no sensor"),
    "series null": ("runs", first_trace(lambda t: t.update(series=None)),
                    r"trace_json series = None: not a list of series names"),
    "gpu_index null": ("timelines", lambda rows: rows[0].update(gpu_index=None),
                       r"timelines\.jsonl row 1 \(run \w+\) gpu_index = None: not an index"),
    "sample a string": ("timelines", lambda rows: rows[0].update(sample="0"),
                        r"timelines\.jsonl row 1 \(run \w+\) sample = '0': not an index"),
    "power a string": ("timelines", lambda rows: rows[1].update(power_w="x"),
                       r"timelines\.jsonl row 2 \(run \w+\) power_w = 'x': not a finite "),
    "itl_s with a string": ("requests", lambda rows: rows[0].update(itl_s=["x"]),
                            r"requests\.jsonl row 1 \(run \w+\) itl_s = \['x'\]: not a list"),
    "itl_s with NaN": ("requests", lambda rows: rows[1].update(itl_s=[0.01, float("nan")]),
                       r"requests\.jsonl row 2 \(run \w+\) itl_s\[1\] = nan: not a gap"),
    "negative output tokens": ("requests", lambda rows: rows[0].update(output_tokens=-100),
                               r"requests\.jsonl row 1 \(run \w+\) output_tokens = -100: "),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_bad_row_is_named_by_file_row_and_field(tmp_path, case):
    table, edit, message = BAD_ROWS[case]
    directory = export_of(tmp_path, [T0])
    edit_rows(directory, table, edit)
    with store(tmp_path) as dst:
        with pytest.raises(DatasetError, match=message):
            import_dataset(dst, directory, ALICE)
        assert_nothing_written(dst)


def test_a_manifest_file_that_is_no_name_is_named(tmp_path):
    directory = export_of(tmp_path, [T0])
    edit_manifest(directory, lambda m: m["tables"]["requests"].update(file=5))
    with store(tmp_path) as dst:
        with pytest.raises(DatasetError, match=r"manifest\.json: tables\.requests\.file = 5: "
                           "not a file name"):
            import_dataset(dst, directory, ALICE)


# ------------------------------------------------------------ owners


def test_a_sweep_recorded_meanwhile_keeps_its_owner_and_file(tmp_path, monkeypatch):
    """Bob's enqueue lands after the import looked for the sweep and before it
    recorded it: refused for mallory, bob's owner and file kept."""
    directory = export_of(tmp_path, [T0])
    spec, toml, _ = factories.sweep()
    bobs = toml.replace("repetitions = 2", "repetitions = 3")
    with store(tmp_path) as dst:
        looked = type(dst).find_sweep
        raced = []

        def racing(self, name):
            found = looked(self, name)
            if found is None and not raced:
                raced.append(self.record_sweep(parse_sweep(bobs), bobs, owner="bob"))
            return found

        monkeypatch.setattr(type(dst), "find_sweep", racing)
        with pytest.raises(NotPermitted, match="bob's"):
            import_dataset(dst, directory, Identity("mallory", admin=False))
        stored = dst.find_sweep(spec.name)
        assert (stored.owner, stored.spec_toml) == ("bob", bobs)
        assert dst.counts()["runs"] == 0
        done = import_dataset(dst, directory, Identity("bob", admin=False))
        assert not done.sweep_recorded and done.results_imported == 1
        assert dst.find_sweep(spec.name).spec_toml == bobs
