"""Issue 22, the door: what a careless or hostile user met, each refused clearly.

Sweeps are owned (item 2, the store's side; the CLI's is in
tests/integration/test_door.py), nothing the user has is damaged (item 4), and
the messages (item 9). In-process through click's CliRunner where the command
fails before any service is needed.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from farm import ownership
from farm.cli import ExitCode, main
from farm.errors import Conflict, InvalidInput, NotPermitted
from farm.report.compare import compare, format_comparison
from farm.report.export import export_sweep
from farm.report.recommend import recommend
from farm.report.recommend_text import format_recommendation
from farm.store import Store
from farm.sweep_file import parse_sweep
from farm_contract.settings import Settings
from tests import factories
from tests.unit.farm.report.test_recommend import point

EXCLUDE_ALL = factories.SMALL_SWEEP + '\n[[exclude]]\nmodel = "tiny-llama-1B"\n'


def farmctl(*args: str, **env: str):
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def store(tmp_path):
    spec, text, _ = factories.sweep()
    with Store.open(f"sqlite:///{tmp_path}/farm.db", upgrade=True) as opened:
        opened.record_sweep(spec, text, owner="alice")
        yield opened, spec, text


# ------------------------------------------------------------ 2. sweeps are owned


def test_a_changed_file_under_a_known_name_is_refused_with_its_diff(store):
    s, spec, text = store
    mallory = ownership.Identity("mallory", admin=False)
    changed = text.replace("output_tokens = [64]", "output_tokens = [65]")
    with pytest.raises(Conflict) as refused:
        s.record_sweep(spec, changed, admit=ownership.admission(mallory, spec.name, changed,
                                                                priority=100))
    assert "-output_tokens = [64]" in str(refused.value)
    assert "+output_tokens = [65]" in str(refused.value) and "--amend" in str(refused.value)
    with pytest.raises(NotPermitted, match="alice's: only alice or an admin"):
        s.record_sweep(spec, changed, admit=ownership.admission(mallory, spec.name, changed,
                                                                amend=True))
    with pytest.raises(NotPermitted, match="priority"):
        s.record_sweep(spec, text, admit=ownership.admission(mallory, spec.name, text,
                                                             priority=100))
    row = s.find_sweep(spec.name)
    assert (row.owner, row.priority, row.spec_toml) == ("alice", 0, text)   # untouched

    # The same file by someone else changes nothing; the owner amends.
    s.record_sweep(spec, text, admit=ownership.admission(mallory, spec.name, text))
    alice = ownership.Identity("alice", admin=False)
    s.record_sweep(spec, changed, admit=ownership.admission(alice, spec.name, changed,
                                                            amend=True, priority=3))
    row = s.find_sweep(spec.name)
    assert (row.owner, row.priority, row.spec_toml) == ("alice", 3, changed)


def test_an_admin_may_change_any_sweep_and_enqueue_for_others(store, monkeypatch):
    s, spec, text = store
    root = ownership.Identity("root", admin=True)
    s.record_sweep(spec, text, admit=ownership.admission(root, spec.name, text, priority=9))
    assert s.find_sweep(spec.name).priority == 9
    ownership.check_owner_option(root, "bob")
    with pytest.raises(NotPermitted, match="only an admin"):
        ownership.check_owner_option(ownership.Identity("mallory", False), "bob")
    monkeypatch.setenv("FARM_OWNER", "carol")
    monkeypatch.setenv("FARM_ADMINS", "root, carol")
    assert ownership.Identity.configured() == ownership.Identity("carol", admin=True)


def test_cancel_and_retry_are_the_owners(store, monkeypatch):
    s, spec, _ = store
    env = {"FARM_DB_URL": str(s.engine.url), "FARM_OWNER": "mallory",
           "FARM_BROKER_URL": "redis://127.0.0.1:9/0"}     # refused before the broker
    for command in ("cancel", "retry"):
        result = farmctl(command, spec.name, **env)
        assert result.exit_code == ExitCode.NOT_PERMITTED, result.output
        assert f"sweep '{spec.name}' is alice's: only alice or an admin" in result.output
        assert f"may {command} it" in result.output


# ------------------------------------------------------ 4. never damage what they have


def test_a_store_in_a_folder_that_does_not_exist_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/typo/dir/x.db"
    with pytest.raises(InvalidInput, match="which does not exist"):
        Store.open(url, upgrade=True)
    result = farmctl("sweeps", FARM_DB_URL=url)
    assert result.exit_code == ExitCode.INVALID_INPUT and "mkdir -p" in result.output
    assert not (tmp_path / "typo").exists()


def test_report_never_overwrites_an_index_html_without_force(store, tmp_path):
    s, spec, _ = store
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    result = farmctl("report", spec.name, "--out", str(mine), FARM_DB_URL=str(s.engine.url))
    assert result.exit_code == ExitCode.INVALID_INPUT and "--force" in result.output
    assert (mine / "index.html").read_text() == "my page"


def test_export_force_removes_only_what_an_export_wrote(store, tmp_path):
    s, spec, _ = store
    out = tmp_path / "x"
    out.mkdir()
    (out / "runs.csv").write_text("my own table")           # not an export's
    with pytest.raises(Exception, match=r"runs\.csv would be overwritten"):
        export_sweep(s, spec.name, "csv", out, force=True)
    assert (out / "runs.csv").read_text() == "my own table"

    (out / "runs.csv").unlink()
    (out / "notes.txt").write_text("mine")
    export_sweep(s, spec.name, "csv", out, force=True)       # beside the user's file
    export_sweep(s, spec.name, "jsonl", out, force=True)     # replaces the csv export
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "runs.csv").exists() and (out / "runs.jsonl").exists()
    # A manifest edited to list the user's file does not make it the farm's.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tables"]["runs"]["file"] = "notes.txt"
    (out / "manifest.json").write_text(json.dumps(manifest))
    export_sweep(s, spec.name, "csv", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------- 9. messages


def test_excluding_every_run_says_so(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(EXCLUDE_ALL)
    for command in ("validate", "run"):
        result = farmctl(command, str(sweep), FARM_HOME=str(tmp_path / "home"),
                         FARM_DB_URL=f"sqlite:///{tmp_path}/f.db")
        assert result.exit_code == ExitCode.INVALID_INPUT, result.output
        assert "exclude every run, so nothing would be measured" in result.output


def test_queued_runs_are_not_called_failed():
    points = [point("h100", 8, 0), point("l4", 8, 0, status="queued"),
              point("l4", 8, 1, status="running"), point("a100", 8, 0, status="failed")]
    text = format_recommendation(recommend(points, sweep="s"), "table")
    assert "2 run(s) not measured yet (queued or running)" in text
    assert "1 failed run(s)" in text
    both = compare(points, [point("h100", 8, 0), point("l4", 8, 0, status="queued")],
                   sweep_a="a", sweep_b="b")
    text = format_comparison(both, "table")
    assert "B: 0 point(s) without a valid repetition, 1 run(s) not measured yet" in text
    assert "B: 0 point(s) without a valid repetition, 1 failed" not in text


@pytest.mark.parametrize("args, option", [
    (["recommend", "s", "--ttft-ms", "nan"], "--ttft-ms"),
    (["recommend", "s", "--tpot-ms", "-5"], "--tpot-ms"),
    (["recommend", "s", "--rate", "inf"], "--rate"),
    (["status", "--watch", "--interval", "-1"], "--interval"),
])
def test_numbers_that_mean_nothing_are_refused_at_the_option(args, option):
    result = farmctl(*args)
    assert result.exit_code == 2 and option in result.output
    assert "must be a finite number above 0" in result.output


def test_an_in_memory_store_is_refused_as_unshareable():
    result = farmctl("sweeps", FARM_DB_URL="sqlite://")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "in-memory" in result.output and "db upgrade" not in result.output


def test_an_unwritable_out_names_the_option(store):
    s, spec, _ = store
    result = farmctl("results", spec.name, "--out", "/dev/full", FARM_DB_URL=str(s.engine.url))
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert "--out /dev/full: cannot write there: No space left on device" in result.output


def test_a_farm_home_that_cannot_hold_logs_names_the_variable(tmp_path, monkeypatch):
    sweep = tmp_path / "s.toml"
    sweep.write_text(factories.SMALL_SWEEP)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".farm").write_text("a file where the folder would go")
    result = farmctl("run", str(sweep), FARM_DB_URL=f"sqlite:///{tmp_path}/f.db")
    assert result.exit_code == ExitCode.INVALID_INPUT, result.output
    assert "FARM_HOME (now '.farm'" in result.output and "Not a directory" in result.output
    result = farmctl("run", str(sweep), FARM_HOME="/dev/null/farm",
                     FARM_DB_URL=f"sqlite:///{tmp_path}/f.db")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "FARM_HOME (now '/dev/null/farm'" in result.output
    assert not (tmp_path / "f.db").exists()       # refused before the store is made


def test_help_lists_every_farm_variable():
    text = farmctl("--help").output
    assert "Environment:" in text
    for field in Settings.model_fields.values():
        assert field.validation_alias in text
    assert "FARM_DEBUG" in text


def test_the_diff_is_bounded():
    old = "\n".join(f"a{i} = {i}" for i in range(500))
    assert len(ownership.toml_diff(old, "", "s").splitlines()) == ownership.MAX_DIFF_LINES + 1


def test_a_new_name_is_the_users():
    spec = parse_sweep(factories.SMALL_SWEEP)
    check = ownership.admission(ownership.Identity("bob", False), spec.name, "x")
    assert check(None) == ("bob", 0)


def test_the_sweep_lock_is_one_holders_and_leaves_nothing(tmp_path, monkeypatch):
    from farm import local_runs

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with local_runs.sweep_lock("sqlite:///a.db", "s1") as held:
        assert held
        with pytest.raises(local_runs.SweepBusy):
            with local_runs.sweep_lock("sqlite:///a.db", "s1"):
                pass
        with local_runs.sweep_lock("sqlite:///b.db", "s1"):     # another store: its own
            pass
    with local_runs.sweep_lock("sqlite:///a.db", "s1"):
        pass
    assert list(local_runs.registry_dir().iterdir()) == []
