"""Load tools' result files (workers/loadtools/): each parser on a file of its tool
(tests/data/loadtools/README.md says how each was made), detection, refusals, and
J per total token from the counts (farm_contract.derive)."""

from __future__ import annotations

import json

import pytest

from farm_contract.derive import counted_figures, per_total_token, with_idle_and_carbon
from farm_contract.records import EnergyWindow, LoadPointResult
from tests.paths import ROOT
from workers.loadtools import ToolReportError, detect, read
from workers.loadtools.report import read_json

DATA = ROOT / "tests" / "data" / "loadtools"


def test_vllm_bench_serve_file_written_by_the_real_tool():
    report = read(DATA / "vllm-bench-result.json")
    assert (report.format, report.tool) == ("vllm-bench", "vllm bench serve")
    assert (report.num_ok, report.num_failed) == (8, 0)
    assert (report.input_tokens, report.output_tokens) == (38, 128)
    assert report.duration_s == pytest.approx(0.1342, abs=1e-3)
    assert report.ttft.mean_ms == pytest.approx(28.14, abs=0.01)
    assert report.ttft.p90_ms == pytest.approx(42.08, abs=0.01)
    assert report.e2e.p99_ms == pytest.approx(78.07, abs=0.01)
    assert "vllm-bench-result.json" in report.provenance


def test_guidellm_report_to_its_schema():
    report = read(DATA / "guidellm-report.json")
    assert (report.format, report.num_ok, report.num_failed) == ("guidellm", 10, 2)
    assert (report.input_tokens, report.output_tokens) == (1280, 640)
    assert report.duration_s == pytest.approx(12.5)
    assert report.ttft.p50_ms == 80.0 and report.e2e.p90_ms == pytest.approx(1600.0)
    assert any("incomplete" in note for note in report.notes)


def test_guidellm_benchmarks_are_summed_and_their_latencies_not_combined(tmp_path):
    data = read_json(DATA / "guidellm-report.json")
    data["benchmarks"] *= 2
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(data))
    report = read(path, "guidellm")
    assert (report.num_ok, report.output_tokens, report.input_tokens) == (20, 1280, 2560)
    assert report.ttft.mean_ms is None and report.duration_s == pytest.approx(25.0)


def test_aiperf_aggregate_as_documented():
    report = read(DATA / "aiperf-profile-export.json")
    assert (report.format, report.num_ok, report.num_failed) == ("aiperf", 200, 3)
    assert (report.input_tokens, report.output_tokens) == (110000, 19370)
    assert report.tpot.mean_ms == pytest.approx(51.76)   # AIPerf's inter_token_latency
    assert report.duration_s == pytest.approx(15.1966, abs=1e-3)


def test_aiperf_without_errors_or_input_lengths(tmp_path):
    data = read_json(DATA / "aiperf-profile-export.json")
    data["error_request_count"] = None          # AIPerf writes null when none failed
    del data["total_isl"]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"records": data}))   # nested, as some versions write it
    report = read(path)
    assert report.num_failed == 0 and report.input_tokens is None


@pytest.mark.parametrize("name,fmt", [("vllm-bench-result.json", "vllm-bench"),
                                      ("guidellm-report.json", "guidellm"),
                                      ("aiperf-profile-export.json", "aiperf")])
def test_each_format_is_detected_from_its_content(name, fmt):
    assert detect(read_json(DATA / name), name) == fmt


def test_unreadable_files_are_refused_naming_the_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ToolReportError, match="x.json is not JSON"):
        read(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"hello": 1}')
    with pytest.raises(ToolReportError, match="--format"):
        read(tmp_path / "y.json")
    with pytest.raises(ToolReportError, match="not a GuideLLM"):
        read(DATA / "vllm-bench-result.json", "guidellm")
    data = read_json(DATA / "vllm-bench-result.json") | {"total_output_tokens": -3}
    (tmp_path / "z.json").write_text(json.dumps(data))
    with pytest.raises(ToolReportError, match="not a count"):
        read(tmp_path / "z.json")


def test_per_total_token_is_null_never_zero_without_input_tokens():
    assert per_total_token(2.0, 300, 100) == pytest.approx(0.5)
    assert per_total_token(2.0, None, 100) is None
    assert per_total_token(None, 300, 100) is None


def test_counted_figures_and_total_tokens_from_a_tools_counts():
    steady = EnergyWindow(name="steady", load_point=0, start_s=1.0, duration_s=10.0,
                          energy_j=1000.0, avg_power_w=100.0)
    lp = LoadPointResult(index=0, kind="batch", value=1, duration_s=10.0, num_requests=11,
                         num_ok=10, num_failed=1, input_tokens=300, output_tokens=200,
                         **counted_figures(200, 10, steady))
    assert lp.steady_output_tokens == 200 and lp.energy_per_output_token_j == 5.0
    assert lp.energy_per_request_j == pytest.approx(100.0)
    done = with_idle_and_carbon(lp, steady, 40.0, None)
    assert done.energy_per_total_token_j == pytest.approx(1000.0 / 500)
    assert done.energy_per_total_token_net_j == pytest.approx((1000.0 - 400.0) / 500)
    unknown = with_idle_and_carbon(lp.model_copy(update={"input_tokens": None}), steady,
                                   40.0, None)
    assert unknown.energy_per_total_token_j is None
    assert unknown.energy_per_total_token_net_j is None
