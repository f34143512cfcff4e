"""The helper relay of the Kubernetes worker pod (workers/gpu/tune_relay.py): the
worker's client gets the helper's exit status and output through a unix socket;
requests outside the helper's three commands never run anything."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.paths import ROOT
from workers.gpu import tune_relay

# A stand-in helper: echoes its arguments; `reset` succeeds, the rest are refused.
ECHO = [sys.executable, "-c", "import sys; print(' '.join(sys.argv[1:])); "
        "print('refused', file=sys.stderr) if sys.argv[1] != 'reset' else None; "
        "sys.exit(0 if sys.argv[1] == 'reset' else 1)"]


def relay(tmp_path: Path, helper: list[str]) -> str:
    path = str(tmp_path / "helper.sock")
    threading.Thread(target=tune_relay.serve, args=(path, helper), daemon=True).start()
    deadline = time.monotonic() + 5
    while True:              # bound is not yet listening: wait for a connection
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(path)
            return path
        except OSError:
            assert time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.02)


def test_the_client_gets_the_helpers_status_and_output(tmp_path, capsys) -> None:
    path = relay(tmp_path, ECHO)
    assert tune_relay.main(["call", path, "reset", "GPU-aaaa"]) == 0
    assert capsys.readouterr().out == "reset GPU-aaaa\n"
    assert tune_relay.main(["call", path, "set-power-limit", "GPU-aaaa", "300"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "set-power-limit GPU-aaaa 300\n" and "refused" in captured.err


@pytest.mark.parametrize("args", [["rm", "-rf", "/"], ["reset"] * 4, ["reset", "x" * 81]])
def test_requests_outside_the_helpers_commands_run_nothing(tmp_path, capsys, args) -> None:
    path = relay(tmp_path, ECHO)
    assert tune_relay.main(["call", path, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not a helper request" in captured.err


def test_the_real_helper_checks_its_arguments_behind_the_relay(tmp_path, capsys) -> None:
    path = relay(tmp_path, [sys.executable, "-I", str(ROOT / "workers/gpu/tune_helper.py")])
    assert tune_relay.main(["call", path, "set-power-limit", "not-a-uuid", "300"]) == 2
    assert "not a GPU UUID" in capsys.readouterr().err


def test_no_relay_is_a_refusal_with_the_path(tmp_path, capsys) -> None:
    assert tune_relay.main(["call", str(tmp_path / "none.sock"), "reset", "GPU-a"]) == 1
    assert "no helper at" in capsys.readouterr().err
    assert tune_relay.main(["serve"]) == 2
