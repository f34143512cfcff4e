"""FARM_* settings (pydantic-settings): defaults, messages naming the variable, URLs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from farm_contract.settings import (
    DEFAULT_BROKER_URL,
    DEFAULT_DB_URL,
    Settings,
    SettingsError,
    load_settings,
    redact,
    setting,
    variable,
)
from tests.paths import ROOT

VARIABLES = ("FARM_BROKER_URL", "FARM_DB_URL", "FARM_VISIBILITY_TIMEOUT_S", "FARM_RUN_TIMEOUT_S",
             "FARM_HEARTBEAT_S", "FARM_REAPER_GRACE_S", "FARM_SPOOL_DIR", "FARM_FLOWER_USER",
             "FARM_FLOWER_PASSWORD")


@pytest.fixture
def env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_and_empty_variables(env):
    env.setenv("FARM_HEARTBEAT_S", "")            # empty: the default
    env.setenv("FARM_FLOWER_USER", "")
    s = load_settings()
    assert (s.broker_url, s.db_url) == (DEFAULT_BROKER_URL, DEFAULT_DB_URL)
    assert (s.visibility_timeout_s, s.run_timeout_s) == (21600.0, 14400.0)
    assert (s.heartbeat_s, s.reaper_grace_s) == (5.0, 60.0)
    assert s.spool_dir.endswith(".farm/spool") and s.flower_user is None


def test_every_variable_is_read(env):
    values = {"FARM_BROKER_URL": "rediss://:pw@redis-host:6380/1",
              "FARM_DB_URL": "postgresql+psycopg://farm:pw@db/farm",
              "FARM_VISIBILITY_TIMEOUT_S": "7200", "FARM_RUN_TIMEOUT_S": "3600",
              "FARM_HEARTBEAT_S": "2.5", "FARM_REAPER_GRACE_S": "0", "FARM_SPOOL_DIR": "/sp",
              "FARM_FLOWER_USER": "admin", "FARM_FLOWER_PASSWORD": "secret"}
    for name, value in values.items():
        env.setenv(name, value)
    s = load_settings()
    assert s.broker_url == values["FARM_BROKER_URL"] and s.db_url == values["FARM_DB_URL"]
    assert (s.visibility_timeout_s, s.run_timeout_s, s.heartbeat_s, s.reaper_grace_s) == (
        7200.0, 3600.0, 2.5, 0.0)
    assert (s.spool_dir, s.flower_user, s.flower_password) == ("/sp", "admin", "secret")
    assert "secret" not in repr(s)


def test_lower_case_variables_are_not_settings(env):
    env.setenv("farm_db_url", "postgresql://elsewhere/db")
    assert load_settings().db_url == DEFAULT_DB_URL


@pytest.mark.parametrize(("name", "value", "says"), [
    ("FARM_HEARTBEAT_S", "often", "FARM_HEARTBEAT_S='often' is not a number (e.g. "
                                  "FARM_HEARTBEAT_S=5)"),
    ("FARM_RUN_TIMEOUT_S", "-5", "FARM_RUN_TIMEOUT_S='-5' must be greater than 0 (e.g. "
                                 "FARM_RUN_TIMEOUT_S=14400)"),
    ("FARM_DB_URL", "farm.db", "FARM_DB_URL='farm.db' is not a database URL farm can open "
                               "(no scheme;"),
    ("FARM_DB_URL", "mysql://u:pw@h/db", "FARM_DB_URL='mysql://u:***@h/db' is not a database "
                                         "URL farm can open (scheme mysql://;"),
    ("FARM_BROKER_URL", "amqp://guest@h//", "FARM_BROKER_URL='amqp://guest@h//' is not a "
                                            "Redis URL"),
    ("FARM_BROKER_URL", "127.0.0.1:6379", "FARM_BROKER_URL='127.0.0.1:6379' is not a Redis URL"),
    ("FARM_BROKER_URL", "unix:///tmp/r.sock", "(scheme unix://; accepted: redis://, rediss://, "
                                              "redis+socket://)"),
    # Once "unexpected ValueError" from the driver, or a reaper that died pass after pass.
    ("FARM_DB_URL", "postgresql://u:pw@h:abc/x", "has a port that is not a number"),
    ("FARM_BROKER_URL", "redis://h:abc/0", "has a port that is not a number"),
    ("FARM_DB_URL", "sqlite:///x.db%00", "holds a NUL character"),
    ("FARM_DB_URL", "sqlite:///", "is an in-memory SQLite store"),
    ("FARM_REAPER_GRACE_S", "inf", "FARM_REAPER_GRACE_S='inf' must be a finite number"),
    ("FARM_HEARTBEAT_S", "nan", "FARM_HEARTBEAT_S='nan' must be a finite number"),
])
def test_a_bad_value_names_its_variable_and_a_good_value(env, name, value, says):
    env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert says in message and f"(e.g. {name}=" in message
    assert "pw" not in message                     # passwords never printed


def test_a_duration_beyond_any_clock_is_refused(env):
    env.setenv("FARM_REAPER_GRACE_S", "1e300")
    with pytest.raises(SettingsError, match=r"FARM_REAPER_GRACE_S=1e\+300 s is more than"):
        load_settings()


@pytest.mark.parametrize("url", ["sqlite:///farm.db", "sqlite:////abs/farm.db",
                                 "postgresql://u:p@h:5432/db", "postgresql+psycopg://h/db"])
def test_accepted_database_urls(env, url):
    env.setenv("FARM_DB_URL", url)
    assert load_settings().db_url == url


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:p@h:6380/0",
                                 "redis+socket:///tmp/redis.sock"])
def test_accepted_broker_urls(env, url):
    env.setenv("FARM_BROKER_URL", url)
    assert load_settings().broker_url == url


def test_run_timeout_must_be_below_the_visibility_timeout(env):
    env.setenv("FARM_RUN_TIMEOUT_S", "30000")
    with pytest.raises(SettingsError, match=r"FARM_RUN_TIMEOUT_S \(30000\) must be below "
                                            r"FARM_VISIBILITY_TIMEOUT_S \(21600\)"):
        load_settings()
    with pytest.raises(SettingsError, match="must be below"):
        Settings(run_timeout_s=100.0, visibility_timeout_s=100.0)


def test_explicit_values_and_immutability(env):
    s = Settings(broker_url="redis://other:6379/0", heartbeat_s=1.0)
    assert s.broker_url == "redis://other:6379/0" and s.heartbeat_s == 1.0
    assert s.db_url == DEFAULT_DB_URL
    with pytest.raises(SettingsError, match="FARM_HEARTBEAT_S='x' is not a number"):
        Settings(heartbeat_s="x")
    with pytest.raises(ValueError):
        s.heartbeat_s = 2.0


def test_redact():
    assert redact("postgresql://farm:secret@db/farm") == "postgresql://farm:***@db/farm"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# ------------------------------------------------- every FARM_* variable, one place

SOURCE_PACKAGES = ("farm", "farm_contract", "tasks", "workers")
ONLY_READER = Path("farm_contract") / "settings.py"
FARM_VARIABLE = re.compile(r"^FARM_[A-Z0-9_]+$")


def _farm_variable_reads(path: Path) -> list[str]:
    """Where `path` names a FARM_* variable other than to set it for a child process
    (a dict key of an environment built for one) or for itself (`os.environ[...] =`):
    a read (`environ.get("FARM_X")`, `environ["FARM_X"]`, `"FARM_X" in environ`) or
    a constant holding the name for a read elsewhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and FARM_VARIABLE.match(node.value)):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Dict) and node in parent.keys:
            continue
        if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store):
            continue
        found.append(f"{path}:{node.lineno}: {node.value}")
    return found


def test_no_module_but_settings_reads_a_farm_variable():
    root = ROOT
    found = [hit for package in SOURCE_PACKAGES
             for path in sorted((root / package).rglob("*.py"))
             if path.relative_to(root) != ONLY_READER
             for hit in _farm_variable_reads(path)]
    assert not found, "read FARM_* through farm_contract.settings (a field, then " \
                      "load_settings() or setting(name)):\n" + "\n".join(found)


def test_the_check_sees_a_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('import os\nVAR = "FARM_X"\nos.environ.get("FARM_Y")\n'
                      'env = {"FARM_Z": "1"}\nos.environ["FARM_W"] = "1"\n')
    assert [hit.rsplit(": ", 1)[1] for hit in _farm_variable_reads(sample)] == ["FARM_X",
                                                                               "FARM_Y"]


def test_a_setting_read_alone(monkeypatch):
    assert setting("debug", {"FARM_DEBUG": "1"}) == "1"
    assert setting("debug", {}) is None
    assert setting("metrics_port", {"FARM_METRICS_PORT": "9461"}) == 9461
    assert setting("gpu_tune_journal_dir", {}).endswith("gpu-tuning")     # the default
    with pytest.raises(SettingsError, match=r"FARM_METRICS_PORT='0' must be greater"):
        setting("metrics_port", {"FARM_METRICS_PORT": "0"})
    monkeypatch.setenv("FARM_SIM_TENANTS", "/tmp/t.json")
    assert setting("sim_tenants") == "/tmp/t.json"                      # this process's
    assert variable("gpu_tune_helper") == "FARM_GPU_TUNE_HELPER"


# ------------------------------------------- what a sweep may read or send (audit A, B)


def test_api_key_variables_are_the_hosts_list_never_a_farm_setting(env):
    env.delenv("FARM_API_KEY_ENVS", raising=False)
    assert load_settings().api_key_env_names == frozenset()          # none by default
    env.setenv("FARM_API_KEY_ENVS", " ENDPOINT_KEY, OPENAI_API_KEY ,")
    assert load_settings().api_key_env_names == {"ENDPOINT_KEY", "OPENAI_API_KEY"}
    for bad, says in (("KEY,FARM_SIGNING_KEY", "has FARM_SIGNING_KEY, one of the farm's own"),
                      ("farm_broker_url", "has farm_broker_url, one of the farm's own"),
                      ("A-KEY", "has 'A-KEY', not an environment variable name")):
        env.setenv("FARM_API_KEY_ENVS", bad)
        with pytest.raises(SettingsError, match=f"FARM_API_KEY_ENVS='{bad}' {says}.*e.g. "
                                                "FARM_API_KEY_ENVS="):
            load_settings()


def test_dataset_roots_default_and_given(env, tmp_path):
    env.delenv("FARM_DATASET_ROOTS", raising=False)
    assert load_settings().dataset_root_paths(str(tmp_path)) == [
        str(tmp_path / ".farm" / "datasets")]
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    env.setenv("FARM_DATASET_ROOTS", "link:/srv/prompts::")
    assert load_settings().dataset_root_paths(str(tmp_path)) == [str(tmp_path / "real"),
                                                                  "/srv/prompts"]
