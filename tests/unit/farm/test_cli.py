"""farmctl at the edge: clear errors, named exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from farm.cli import ExitCode
from tests.paths import ROOT

EXAMPLES = ROOT / "examples"
CLOSED_BROKER = "redis://127.0.0.1:9/0"   # discard port: nothing listens


def farmctl(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "farm.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


def test_validate_prints_the_plan():
    proc = farmctl("validate", str(EXAMPLES / "study.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "648 run(s)" in proc.stdout and "gpu.h100-80gb.x1" in proc.stdout


@pytest.mark.parametrize("command", ["validate", "enqueue"])
def test_bad_sweep_file_names_field_and_line_without_traceback(tmp_path, command):
    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLES / "study.toml").read_text().replace(
        "duration_s = 120\nwarmup_s = 20", "duration_s = -1\nwarmup_s = 20"))
    proc = farmctl(command, str(bad), env={"FARM_DB_URL": f"sqlite:///{tmp_path}/f.db"})
    assert proc.returncode == ExitCode.INVALID_INPUT
    assert "scenario[0].duration_s" in proc.stderr and "line 26" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "f.db").exists()      # nothing touched


def test_toml_syntax_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nrepetitions = \n')
    proc = farmctl("validate", str(bad))
    assert proc.returncode == ExitCode.INVALID_INPUT
    assert "line 2" in proc.stderr and "invalid TOML" in proc.stderr


def test_dry_run_touches_neither_redis_nor_the_store(tmp_path):
    proc = farmctl("enqueue", "--dry-run", str(EXAMPLES / "study.toml"), cwd=tmp_path,
                   env={"FARM_BROKER_URL": CLOSED_BROKER,
                        "FARM_DB_URL": f"sqlite:///{tmp_path}/f.db"})
    assert proc.returncode == 0, proc.stderr
    assert "dry run, 648 run(s)" in proc.stdout
    assert "gpu.l4.x1" in proc.stdout and "216" in proc.stdout
    assert not (tmp_path / "f.db").exists()


def test_simulate_flag_relabels_the_plan():
    proc = farmctl("enqueue", "--dry-run", "--simulate", str(EXAMPLES / "study.toml"))
    assert "concurrency-vs-energy-sim" in proc.stdout and "sim.h100-80gb.x1" in proc.stdout


def test_unreachable_broker_records_nothing(tmp_path):
    db = f"sqlite:///{tmp_path}/f.db"
    proc = farmctl("enqueue", str(EXAMPLES / "quickstart.toml"),
                   env={"FARM_BROKER_URL": CLOSED_BROKER, "FARM_DB_URL": db})
    assert proc.returncode == ExitCode.BROKER_ERROR, proc.stderr
    assert "broker unavailable" in proc.stderr and "Traceback" not in proc.stderr
    assert "0 run" not in proc.stdout
    status = farmctl("status", env={"FARM_DB_URL": db})
    assert "no runs in the store yet" in status.stdout


def test_store_without_schema_says_how_to_fix(tmp_path):
    proc = farmctl("status", env={"FARM_DB_URL": f"sqlite:///{tmp_path}/empty.db"})
    assert proc.returncode == ExitCode.STORE_ERROR
    assert "farmctl db upgrade" in proc.stderr


def test_db_upgrade_then_empty_views(tmp_path):
    env = {"FARM_DB_URL": f"sqlite:///{tmp_path}/f.db"}
    assert farmctl("db", "upgrade", env=env).returncode == 0
    assert "no sweeps" in farmctl("sweeps", env=env).stdout
    missing = farmctl("results", "nope", env=env)
    assert missing.returncode == ExitCode.NOT_FOUND and "no sweep named" in missing.stderr


def test_worker_without_gpu_says_so(tmp_path):
    proc = farmctl("worker", "--probe", env={"FARM_BROKER_URL": CLOSED_BROKER})
    if proc.returncode == 0:
        pytest.skip("this machine has an NVIDIA GPU")
    assert proc.returncode == ExitCode.NO_HARDWARE
    assert "--sim" in proc.stderr


def test_worker_probe_with_simulated_gpus():
    proc = farmctl("worker", "--probe", "--sim", "H100-80GBx2", "--sim", "L4")
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout)
    assert probe["backend"] == "sim"
    assert probe["queues"] == ["sim.h100-80gb.x1", "sim.h100-80gb.x2", "sim.l4.x1"]
    assert len({g["uuid"] for g in probe["gpus"]}) == 3


def test_the_worker_command_has_one_parser_and_every_documented_option():
    # farmctl passes every argument to tasks/worker_main.py's parser: the options
    # docs/cli.md and docs/measurement.md name all reach it.
    helped = farmctl("worker", "--help")
    assert helped.returncode == 0, helped.stderr
    for option in ("--sim", "--gpus", "--name", "--loglevel", "--cpu", "--probe",
                   "--energy-source"):
        assert option in helped.stdout
    proc = farmctl("worker", "--probe", "--sim", "H100", "--energy-source", "rapl")
    assert proc.returncode == 0, proc.stderr
    assert [s["kind"] for s in json.loads(proc.stdout)["energy_sources"]] == ["rapl"]
    bad = farmctl("worker", "--probe", "--sim", "H100", "--energy-source", "bogus")
    assert bad.returncode == ExitCode.INVALID_INPUT and "unknown energy source kind" in bad.stderr
    unknown = farmctl("worker", "--colour")
    assert unknown.returncode == ExitCode.INVALID_INPUT and "--colour" in unknown.stderr


def test_bad_sim_spec_is_an_input_error():
    proc = farmctl("worker", "--probe", "--sim", "Voodoo5")
    assert proc.returncode == ExitCode.INVALID_INPUT and "Voodoo5" in proc.stderr


def test_flower_refuses_to_start_without_auth():
    proc = farmctl("flower", "--address", "0.0.0.0",
                   env={"FARM_FLOWER_USER": "", "FARM_FLOWER_PASSWORD": ""})
    assert proc.returncode == ExitCode.INVALID_INPUT
    assert "FARM_FLOWER_USER" in proc.stderr
    proc = farmctl("flower", "--no-auth", "--address", "0.0.0.0")
    assert proc.returncode == ExitCode.INVALID_INPUT and "loopback" in proc.stderr


def test_bad_setting_is_an_input_error(tmp_path):
    proc = farmctl("status", env={"FARM_HEARTBEAT_S": "often",
                                  "FARM_DB_URL": f"sqlite:///{tmp_path}/f.db"})
    assert proc.returncode == ExitCode.INVALID_INPUT
    assert "FARM_HEARTBEAT_S='often' is not a number" in proc.stderr


def test_worker_probe_on_the_cpu():
    proc = farmctl("worker", "--probe", "--cpu")
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout)
    assert probe["backend"] == "cpu" and probe["queues"] == ["cpu.cpu.x1"]
    assert probe["gpus"][0]["backend"] == "cpu" and probe["gpus"][0]["uuid"].startswith("CPU-")


def test_results_table_shows_goodput_and_slo_attainment_only_when_measured():
    from farm.output import format_results

    server = {"model": "m", "gpu_model": "l4", "gpu_count": 1, "scenario": "s",
              "load_kind": "request_rate", "load_value": 4.0, "status": "succeeded",
              "goodput_rps": 3.25, "slo_attainment": 0.9996, "valid": True,
              "tpot_p50_ms": 5.0, "energy_per_output_token_j": 0.1}
    batch = {**server, "scenario": "b", "load_kind": "batch", "load_value": 8.0,
             "goodput_rps": None, "slo_attainment": None, "tpot_p50_ms": 7.5,
             "energy_per_output_token_j": 0.2}
    table = format_results([server, batch], "table", "t", simulated=False)
    # (columns the same in both rows, model…, are on the line above the table)
    header = next(line for line in table.splitlines() if "TPOT p50 ms" in line)
    assert header.index("TPOT p50 ms") < header.index("good req/s") < header.index("SLO %") \
        < header.index("J/out-tok")
    server_line = next(line for line in table.splitlines() if "4 req/s" in line)
    assert "3.25" in server_line
    assert "99.9" in server_line and "100.0" not in server_line  # not all were good
    batch_line = next(line for line in table.splitlines() if "8 prompts" in line)
    assert batch_line.count("—") >= 2
    # A sweep without any goodput keeps the narrower table.
    assert "SLO %" not in format_results([batch], "table", "t", simulated=False)
    rows = json.loads(format_results([server], "json", "t"))["rows"]
    assert rows[0]["goodput_rps"] == 3.25 and rows[0]["slo_attainment"] == 0.9996


def test_results_table_names_the_engine_arguments_that_tell_rows_apart():
    from farm.output import format_results

    row = {"model": "m", "gpu_model": "h100-80gb", "gpu_count": 1, "engine": "hf",
           "scenario": "b", "load_kind": "batch", "load_value": 32.0, "status": "succeeded",
           "valid": True}
    rows = [{**row, "engine_args": {"batch_size": b, "attn_implementation": "sdpa"},
             "load_value": n} for b, n in ((1, 32.0), (64, 1024.0))]
    table = format_results(rows, "table", "t", simulated=False)
    assert "hf batch_size=1 " in table and "hf batch_size=64" in table
    assert "sdpa" not in table              # the same in every row: says nothing
    lone = format_results(rows[:1], "table", "t", simulated=False)
    assert "batch_size" not in lone and " hf " in lone
    assert json.loads(format_results(rows, "json", "t"))["rows"][1]["engine_args"] == {
        "batch_size": 64, "attn_implementation": "sdpa"}


def test_bad_sim_spec_for_a_local_run_is_an_input_error():
    proc = farmctl("run", "--sim", "Voodoo5", str(EXAMPLES / "quickstart.toml"))
    assert proc.returncode == ExitCode.INVALID_INPUT, proc.stderr
    assert "GPU spec 'Voodoo5': unknown GPU model" in proc.stderr
    assert "unexpected" not in proc.stderr
