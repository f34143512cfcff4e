"""The registry of `farmctl run`s in progress (farm/local_runs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from farm import local_runs


def test_a_run_is_listed_for_its_store_only_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with local_runs.registered("sqlite:///a.db", "redis+socket:///tmp/x/redis.sock",
                               "sweep-a") as path:
        (run,) = local_runs.live("sqlite:///a.db")
        assert (run.pid, run.sweep, run.broker_url) == (
            os.getpid(), "sweep-a", "redis+socket:///tmp/x/redis.sock")
        assert local_runs.live("sqlite:///b.db") == []
        # the store URL may hold a password: only its digest is written
        assert "a.db" not in path.read_text()
        assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert local_runs.live("sqlite:///a.db") == [] and not path.exists()


def test_the_file_of_a_dead_run_is_removed_and_junk_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = local_runs.registry_dir()
    directory.mkdir(mode=0o700)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = directory / "dead.json"
    dead.write_text(json.dumps({"pid": int(gone.stdout), "sweep": "s", "store": "x",
                                "broker_url": "u", "started_at": "t"}))
    junk = directory / "junk.json"
    junk.write_text("{not json")
    assert local_runs.live("sqlite:///a.db") == []
    assert not dead.exists() and junk.exists()


def test_an_unwritable_directory_does_not_stop_the_run(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")          # a file where the directory would go
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocked))
    with local_runs.registered("sqlite:///a.db", "u", "s") as path:
        assert path is None
    assert local_runs.live("sqlite:///a.db") == []


def test_a_directory_others_can_read_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    local_runs.registry_dir().mkdir(mode=0o755)
    local_runs.registry_dir().chmod(0o755)      # as another user's mkdir would leave it
    with local_runs.registered("sqlite:///a.db", "u", "s") as path:
        assert path is None
        assert list(local_runs.registry_dir().iterdir()) == []
    assert local_runs.live("sqlite:///a.db") == []


def test_farmctl_run_waits_for_its_recorder_while_it_makes_progress(monkeypatch, capsys):
    # A result left in the private Redis is lost when it stops (measured again next
    # time): the wait gives up only after a spell without progress, not after a fixed 30 s.
    import time
    from types import SimpleNamespace

    import farm.coordinator
    from farm import local

    backlog = iter([12, 11, 9, 6, 4, 2, 1, 0])

    class Redis:
        def llen(self, queue):
            time.sleep(0.02)
            return next(backlog)

        def hvals(self, name):
            return []

    monkeypatch.setattr(farm.coordinator, "broker_state", lambda: SimpleNamespace(r=Redis()))
    monkeypatch.setattr(local, "POLL_S", 0.06)
    alive = SimpleNamespace(poll=lambda: None)
    started = time.monotonic()
    local._drain_recorder(SimpleNamespace(procs={"recorder": alive}), timeout_s=0.1)
    assert time.monotonic() - started > 0.1          # longer than one spell: it waited on
    assert next(backlog, "drained") == "drained"
    assert "not recorded" not in capsys.readouterr().err

    stuck = iter([3] * 100)
    monkeypatch.setattr(Redis, "llen", lambda self, queue: next(stuck))
    local._drain_recorder(SimpleNamespace(procs={"recorder": alive}), timeout_s=0.1)
    assert "3 result(s) or event(s) were not recorded (the recorder made no progress" \
        in capsys.readouterr().err
