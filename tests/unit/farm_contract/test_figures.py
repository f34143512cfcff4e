"""Result figures declared once on the records: every flat view agrees with them."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from farm.report.dataset import POINT_COLUMN_NAMES, RUN_POINTS
from farm.report.points import FIGURES
from farm.store.models import LoadPointRow
from farm.store.repository import RESULT_POINT_FIGURES
from farm_contract.figures import figure, flat_columns, flat_values, nested_values
from farm_contract.records import LatencyStats, LoadPointResult, load_point_columns
from tests import factories
from tests.paths import ROOT


def test_load_point_columns_name_every_field_once() -> None:
    columns = load_point_columns()
    names = [c.name for c in columns]
    assert len(names) == len(set(names))
    fields = set(LoadPointResult.model_fields) - {"index", "notes"}
    assert {c.path[0] for c in columns} == fields
    assert [c.name for c in columns if c.path[0] == "ttft"] == [
        "ttft_mean_ms", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"]
    ttft = next(c for c in columns if c.name == "ttft_p50_ms")
    assert (ttft.unit, ttft.description, ttft.nullable) == ("ms", "time to first token, median",
                                                           True)
    assert all(c.description for c in columns)


def test_store_load_points_table_is_the_record() -> None:
    table = LoadPointRow.__table__
    assert [c.name for c in table.c] == ["run_id", "idx",
                                         *[c.name for c in load_point_columns()], "notes"]
    for column in load_point_columns():
        stored = table.c[column.name]
        sql_type = getattr(stored.type, "impl_instance", stored.type)  # AutoString: String
        assert sql_type.python_type is column.type, column.name
        assert stored.nullable == column.nullable, column.name


def test_flat_values_round_trip() -> None:
    _, _, runs = factories.sweep()
    server = next(r for r in runs if r.scenario.kind == "server")
    for lp in factories.result(server).load_points:
        flat = flat_values(lp, load_point_columns())
        back = LoadPointResult(index=lp.index, notes=lp.notes,
                               **nested_values(flat, load_point_columns()))
        assert back == lp


def test_metadata_leaves_the_wire_json_alone() -> None:
    lp = LoadPointResult(index=0, kind="batch", value=8, duration_s=1.0, num_requests=8,
                         num_ok=8, num_failed=0, input_tokens=10, output_tokens=20,
                         request_throughput_rps=None, output_throughput_tps=None)
    assert LoadPointResult.model_validate_json(lp.model_dump_json()) == lp
    assert lp.ttft == LatencyStats() and lp.notes == []


def test_dataset_run_points_follow_the_record() -> None:
    for column in load_point_columns():
        exported = RUN_POINTS.column(POINT_COLUMN_NAMES.get(column.name, column.name))
        assert (exported.unit, exported.description, exported.nullable) == (
            column.unit, column.description, column.nullable)


def test_docs_dataset_shows_every_figure_with_its_unit_and_description() -> None:
    doc = (ROOT / "docs" / "dataset.md").read_text()
    section = doc[doc.index("### run_points"):doc.index("### requests")]
    for column in load_point_columns():
        name = POINT_COLUMN_NAMES.get(column.name, column.name)
        row = re.search(rf"^\| `{name}` \| [^|]+ \| ([^|]*) \| (yes|no) \| (.*) \|$",
                        section, flags=re.M)
        assert row is not None, f"docs/dataset.md: run_points lacks {name}"
        assert row.group(1).strip() == (column.unit or ""), name
        assert row.group(2) == ("yes" if column.nullable else "no"), name
        assert row.group(3) == column.description, name


def test_result_rows_and_report_carry_the_figures() -> None:
    names = [c.name for c in load_point_columns()]
    assert set(RESULT_POINT_FIGURES) <= set(names)
    assert {"energy_per_output_token_j", "ttft_p50_ms", "goodput_rps",
            "lateness_p99_ms"} <= set(RESULT_POINT_FIGURES)
    assert set(RESULT_POINT_FIGURES) <= set(FIGURES)


def test_a_new_figure_is_one_field() -> None:
    class Point(BaseModel):
        joules: float | None = figure("energy", "J", None)
        lat: LatencyStats = figure("latency", "ms", LatencyStats())

    columns = flat_columns(Point)
    assert [c.name for c in columns] == ["joules", "lat_mean_ms", "lat_p50_ms", "lat_p90_ms",
                                         "lat_p99_ms"]
    assert columns[0].unit == "J" and columns[1].description == "latency, mean"

    class Listy(BaseModel):
        items: list[int] = []

    with pytest.raises(TypeError):
        flat_columns(Listy)
    assert flat_columns(Listy, exclude=("items",)) == ()


def test_docs_dataset_tables_are_generated_from_the_schema() -> None:
    from farm.report.dataset import main, with_current_tables

    doc = (ROOT / "docs" / "dataset.md").read_text()
    assert with_current_tables(doc) == doc
    stale = doc.replace("| `energy_j` | float64 | J | yes | GPU energy of the steady window "
                        "(gross) |\n", "", 1)
    assert stale != doc and with_current_tables(stale) == doc
    assert main(["--check", str(ROOT / "docs" / "dataset.md")]) == 0


def test_dataset_runs_host_and_idle_columns_follow_the_records() -> None:
    from farm.report.dataset import HOST_COLUMN_NAMES, RUNS
    from farm_contract.records import HostEnergy, IdleBaseline

    for model, names in ((HostEnergy, HOST_COLUMN_NAMES), (IdleBaseline, {})):
        for column in flat_columns(model):
            exported = RUNS.column(names.get(column.name, column.name))
            assert (exported.unit, exported.description) == (column.unit, column.description)
            assert exported.nullable        # a run may have no such record
