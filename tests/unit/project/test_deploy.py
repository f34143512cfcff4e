"""No Docker engine here: check what can be checked of the deployment files —
they parse, and services, commands and environment agree with the code."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys

import yaml
from click.testing import CliRunner

from farm.cli import main
from farm_contract.settings import load_settings
from tests.paths import ROOT


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_farm_services():
    services = compose()["services"]
    assert {"redis", "postgres", "recorder", "flower", "worker"} <= set(services)


def test_redis_keeps_an_append_only_file_and_requires_a_password():
    command = compose()["services"]["redis"]["command"]
    assert "--appendonly yes" in command
    assert "--requirepass ${FARM_REDIS_PASSWORD:?" in command


def test_every_farm_variable_in_compose_is_a_known_setting():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"^\s+(FARM_[A-Z_]+):", text, re.MULTILINE))
    settings_source = (ROOT / "farm_contract" / "settings.py").read_text()
    deployment_only = {"FARM_REDIS_PASSWORD", "FARM_DB_PASSWORD"}
    for name in used - deployment_only:
        assert f'"{name}"' in settings_source, f"{name} is not read by farm_contract.settings"


def test_broker_and_store_urls_carry_their_passwords_from_the_environment():
    env = compose()["x-farm-env"]
    assert env["FARM_BROKER_URL"].startswith("redis://:${FARM_REDIS_PASSWORD:?")
    assert env["FARM_DB_URL"].startswith("postgresql://farm:${FARM_DB_PASSWORD:?")
    # The store URL is one the code accepts (psycopg driver is applied by farm.store).
    assert env["FARM_DB_URL"].endswith("@postgres:5432/farm")


def test_gpu_worker_reserves_gpus_and_has_no_database_credentials():
    worker = compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "FARM_DB_URL" not in worker["environment"]
    assert worker["command"] == ["farmctl", "worker"]
    assert worker["stop_signal"] == "SIGTERM"


def test_gpu_host_compose_needs_only_the_broker():
    text = (ROOT / "deploy" / "compose.worker.yml").read_text()
    worker = yaml.safe_load(text)["services"]["worker"]
    assert set(re.findall(r"\$\{(FARM_[A-Z_]+):\?", text)) == {"FARM_BROKER_URL"}
    assert "FARM_DB_URL" not in worker["environment"]
    assert any("/var/lib/farm/spool" in v for v in worker["volumes"])
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_flower_uses_auth_and_binds_loopback_on_the_host():
    flower = compose()["services"]["flower"]
    assert "FARM_FLOWER_PASSWORD" in flower["environment"]
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_compose_commands_exist_in_the_cli():
    runner = CliRunner()
    for service in ("recorder", "flower", "worker"):
        command = compose()["services"][service]["command"]
        assert command[0] == "farmctl"
        if command[1] == "worker":
            # `farmctl worker` execs the worker program, --help too: never in this process,
            # which it would replace (pytest gone mid-run, exit status 0).
            done = subprocess.run([sys.executable, "-m", "farm.cli", "worker", "--help"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            continue
        result = runner.invoke(main, [command[1], "--help"])
        assert result.exit_code == 0, result.output


def test_systemd_units_parse_and_start_farmctl():
    for unit, command in (("farm-worker.service", "farmctl worker"),
                          ("farm-recorder.service", "farmctl recorder")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read(ROOT / "deploy" / unit)
        service = parser["Service"]
        assert service["ExecStart"].endswith(command)
        assert service["KillSignal"] == "SIGTERM"
        assert service["EnvironmentFile"].startswith("/etc/farm/")


def test_example_env_files_name_only_known_settings():
    settings_source = (ROOT / "farm_contract" / "settings.py").read_text()
    known = set(re.findall(r'"(FARM_[A-Z_]+)"', settings_source))
    known |= {"FARM_REDIS_PASSWORD", "FARM_DB_PASSWORD", "FARM_BROKER_HOST", "FARM_MODELS_DIR",
              "FARM_REDIS_BIND"}
    for name in ("farm.env.example", "worker.env.example"):
        for line in (ROOT / "deploy" / name).read_text().splitlines():
            if line and not line.startswith("#"):
                assert line.split("=", 1)[0] in known, line


def test_default_settings_are_consistent():
    settings = load_settings()
    assert settings.run_timeout_s < settings.visibility_timeout_s
