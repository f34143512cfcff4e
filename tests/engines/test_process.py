"""Engine processes: own group, log tail, group stop, readiness deadline. Real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from workers.engines.process import (
    EngineProcess,
    free_loopback_port,
    group_pids,
    proc_table,
    wait_until,
)
from workers.errors import EngineError, RunAborted

# A parent that starts a grandchild (as vLLM starts its engine core), prints, and sleeps.
FAMILY = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("engine: loading", flush=True)
print("RuntimeError: model weights are garbage", file=sys.stderr, flush=True)
time.sleep(600)
"""
# Ignores SIGTERM: only SIGKILL stops it.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(600)
"""


def _proc(code: str, **kwargs) -> EngineProcess:
    return EngineProcess([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"},
                         name="test", **kwargs)


def _until(predicate, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.05)


def test_the_group_holds_the_grandchild_and_stop_kills_all_of_it():
    p = _proc(FAMILY)
    p.start()
    try:
        _until(lambda: len(group_pids(p.pid)) == 2)
        assert p.pid in p.pids() and len(p.pids()) == 2
        _until(lambda: "engine: loading" in p.tail())
        assert p.tail()[-1] in ("engine: loading", "RuntimeError: model weights are garbage")
    finally:
        code = p.stop(grace_s=5)
    assert code is not None and code < 0
    assert group_pids(p.pid) == set()
    p.remove_log()


def test_a_process_ignoring_sigterm_is_killed_after_the_grace():
    p = _proc(STUBBORN)
    p.start()
    _until(lambda: "up" in p.tail())
    started = time.monotonic()
    assert p.stop(grace_s=0.5) == -9
    assert time.monotonic() - started < 5
    p.remove_log()


def test_a_leader_slow_to_die_after_sigkill_does_not_cut_the_clean_up_short(monkeypatch):
    # A process stuck in the GPU driver can outlive SIGKILL for a while: stop() must
    # still signal the rest of the group, not escape as a traceback (an internal error).
    p = _proc(FAMILY)
    p.start()
    _until(lambda: len(group_pids(p.pid)) == 2)
    group = group_pids(p.pid)

    def never_in_time(timeout=None):
        raise subprocess.TimeoutExpired(p.argv, timeout)

    monkeypatch.setattr(p.proc, "wait", never_in_time)
    p.stop(grace_s=0.2)
    _until(lambda: all(proc_table().get(pid) is None or proc_table()[pid].state == "Z"
                       for pid in group_pids(p.pid)))
    monkeypatch.undo()
    p.proc.wait(5)
    assert group
    p.remove_log()


def test_an_exit_is_reported_with_the_engines_own_last_error_line():
    p = _proc("import sys; print('ValueError: no such model /x', file=sys.stderr); sys.exit(3)")
    p.start()
    _until(lambda: not p.running())
    error = p.exited_error("before it was ready")
    assert isinstance(error, EngineError)
    assert "exited with code 3 before it was ready: ValueError: no such model /x" in str(error)
    assert error.log_tail == ["ValueError: no such model /x"]
    p.remove_log()


def test_a_kill_by_sigkill_hints_at_the_oom_killer():
    p = _proc("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    p.start()
    _until(lambda: not p.running())
    assert "killed by signal 9" in str(p.exited_error("mid-run"))
    assert "out of memory" in str(p.exited_error("mid-run"))
    p.remove_log()


def test_wait_until_stops_the_engine_at_the_deadline():
    p = _proc(FAMILY)
    p.start()
    with pytest.raises(EngineError, match="was not ready within 0.5 s") as caught:
        wait_until(lambda: False, deadline_s=0.5, process=p, abort=threading.Event(),
                   what="ready", poll_s=0.05)
    assert "engine: loading" in caught.value.log_tail or caught.value.log_tail
    assert not p.running() and group_pids(p.pid) == set()
    p.remove_log()


def test_wait_until_fails_at_once_when_the_engine_exits():
    p = _proc("import sys; sys.exit(1)")
    p.start()
    started = time.monotonic()
    with pytest.raises(EngineError, match="exited with code 1 before healthy"):
        wait_until(lambda: False, deadline_s=60, process=p, abort=threading.Event(),
                   what="healthy", poll_s=0.05)
    assert time.monotonic() - started < 10
    p.remove_log()


def test_wait_until_hands_the_run_back_on_abort():
    p = _proc(FAMILY)
    p.start()
    abort = threading.Event()
    abort.set()
    with pytest.raises(RunAborted):
        wait_until(lambda: False, deadline_s=60, process=p, abort=abort, what="ready")
    assert group_pids(p.pid) == set()
    p.remove_log()


def test_a_missing_program_is_an_engine_error():
    p = EngineProcess(["/nonexistent/python"], env={}, name="test")
    with pytest.raises(EngineError, match="cannot start the test engine"):
        p.start()
    p.remove_log()


def test_free_loopback_port_can_be_bound():
    port = free_loopback_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# An engine process whose engine core starts a session of its own (leaving the
# group, as a launcher may) and has a child of its own; pids written for the test.
SESSIONED = """
import os, subprocess, sys, time
core = subprocess.Popen([sys.executable, "-c", '''
import os, subprocess, sys, time
os.setsid()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(os.getpid(), child.pid, flush=True)
time.sleep(600)
'''], stdout=subprocess.PIPE, text=True)
print("pids", core.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_every_descendant_of_the_engine_is_its_own_and_a_tenant_is_still_caught():
    """vLLM's engine core is a grandchild of the worker: on the run's GPUs it is the
    run's own, also outside the engine's group, while a real tenant is flagged."""
    from tests.fake_nvml import FakeNvml, patched
    from workers.gpu.nvml import NvmlInventory
    from workers.power import PowerSampler
    from workers.preflight import foreign_pids

    p = _proc(SESSIONED)
    tenant = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    p.start()
    try:
        _until(lambda: any(line.startswith("pids ") for line in p.tail()))
        line = next(line for line in p.tail() if line.startswith("pids "))
        core, grandchild = (int(w) for w in line.split()[1:])
        assert core not in group_pids(p.pid)                  # out of the group ...
        _until(lambda: {p.pid, core, grandchild} <= p.pids())  # ... not out of the tree
        fake = FakeNvml()
        fake.gpus[0]["pids"] = [core, grandchild, tenant.pid]
        with patched(fake):
            inventory = NvmlInventory()
            gpus = inventory.devices()[:1]
            sampler = PowerSampler(gpus, 0.1, allowed_pids=p.pids)
            [seen] = sampler.check_tenants(now_s=1.0)
            assert seen.pids == [tenant.pid]
            assert foreign_pids(gpus, p.pids()) == {gpus[0].info.uuid: [tenant.pid]}
            inventory.shutdown()
    finally:
        code = p.stop(grace_s=5)
        tenant.kill()
        tenant.wait()
    assert code is not None
    _until(lambda: not any(_alive(pid) for pid in (core, grandchild)))  # stopped too
    p.remove_log()
