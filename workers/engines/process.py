"""An engine's own process tree: started in its own session, stopped as a group.

Real engines never run inside the worker process. vLLM and transformers load
CUDA, spawn helper processes (vLLM's engine core, tensor-parallel workers) and
can crash, hang or run out of memory; in a child process group each of those
is the engine's failure, not the worker's: the group is killed, the GPUs are
free again and the worker takes its next run.

- `start_new_session=True`: the child leads a new process group, so one
  `killpg` reaches everything it spawned (vLLM's engine core included), and a
  Ctrl-C aimed at the worker's terminal does not reach it half-way.
- Output goes to a log file, never a pipe nobody reads (a full pipe blocks the
  engine); `tail()` gives the last lines for the failed run's record.
- `pids()` lists the group's processes and every descendant of the leader
  (vLLM's engine core is a child of the engine process, a grandchild of the
  worker; a helper that starts a session of its own leaves the group but not
  the tree): they may use the run's GPUs and are not foreign tenants for the
  isolation watch. `stop()` signals such a runaway with the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.errors import EngineError, RunAborted

LOG_TAIL_LINES = 40
STOP_GRACE_S = 20.0        # SIGTERM → SIGKILL (vLLM needs ~1 s on the CPU)
PIDS_CACHE_S = 0.5         # /proc scans for the isolation watch, at most this often

# Told each engine's process group as it starts. A run process tells the worker, so
# that the worker can stop the engine itself if the run process dies before it can:
# in a session of its own, the engine does not die with the process that started it.
_started_listener: Callable[[int], None] | None = None


def on_engine_started(listener: Callable[[int], None] | None) -> None:
    """Have `listener` told each engine's process group id as the engine starts."""
    global _started_listener
    _started_listener = listener


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ProcInfo:
    """One process as /proc shows it."""

    ppid: int
    pgrp: int
    comm: str           # the kernel's name of the process (15 characters at most)
    exe: str | None     # base name of argv[0]; None unless asked for
    state: str = "?"    # R, S, D, Z (a zombie: gone but not yet reaped) …


def proc_table(with_exe: bool = False) -> dict[int, ProcInfo]:
    """pid → ProcInfo of every process (Linux /proc; empty elsewhere). `with_exe`
    also reads each command line (one more file per process)."""
    table: dict[int, ProcInfo] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            exe = None
            if with_exe:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
                exe = os.path.basename(argv0.decode("utf-8", "replace"))
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp …; comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) < 3:
            continue
        comm = stat[stat.find(b"(") + 1:stat.rfind(b")")].decode("utf-8", "replace")
        table[int(entry)] = ProcInfo(int(fields[1]), int(fields[2]), comm, exe,
                                     fields[0].decode("ascii", "replace"))
    return table


def group_pids(pgid: int) -> set[int]:
    """Processes whose process group is `pgid` (Linux /proc; empty elsewhere)."""
    return {pid for pid, proc in proc_table().items() if proc.pgrp == pgid}


def tree_pids(root: int, table: dict[int, ProcInfo]) -> set[int]:
    """`root`'s descendants in `table` (by parent pid), and `root` if it is there."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found = {root} if root in table else set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def engine_pids(leader: int) -> set[int]:
    """The processes of an engine led by `leader`: its process group and every
    descendant of the leader, in or out of the group (one /proc scan)."""
    table = proc_table()
    return {pid for pid, proc in table.items() if proc.pgrp == leader} | tree_pids(leader,
                                                                                    table)


class EngineProcess:
    """One engine command, its log file and its process group."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], name: str,
                 log_dir: str | Path | None = None, stdin_pipe: bool = False,
                 stdout_pipe: bool = False, cwd: str | None = None):
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.name = name
        fd, path = tempfile.mkstemp(prefix=f"farm-{name}-", suffix=".log",
                                    dir=str(log_dir) if log_dir else None)
        os.close(fd)
        self.log_path = Path(path)
        self._stdin_pipe = stdin_pipe
        self._stdout_pipe = stdout_pipe
        self.proc: subprocess.Popen[bytes] | None = None
        self._pids_at = 0.0
        self._pids: set[int] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Launch the engine in a new session (its own process group), output to the log file."""
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.argv, env=self.env, start_new_session=True,
                    stdin=subprocess.PIPE if self._stdin_pipe else subprocess.DEVNULL,
                    stdout=subprocess.PIPE if self._stdout_pipe else log,
                    stderr=log, close_fds=True, cwd=self.cwd)
            except OSError as exc:
                raise EngineError(f"cannot start the {self.name} engine "
                                  f"({self.argv[0]}): {exc}") from None
        if _started_listener is not None:
            _started_listener(self.proc.pid)

    # ----------------------------------------------------------------- state

    @property
    def pid(self) -> int | None:
        """The leader's process id; None before start."""
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return self.proc.poll() if self.proc else None

    def running(self) -> bool:
        """Whether the engine has been started and has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> set[int]:
        """The engine's processes: the leader, its group and all its descendants."""
        if self.proc is None:
            return set()
        now = time.monotonic()
        with self._lock:
            if now - self._pids_at >= PIDS_CACHE_S:
                self._pids = engine_pids(self.proc.pid)
                if self.proc.poll() is None:
                    self._pids.add(self.proc.pid)
                self._pids_at = now
            return set(self._pids)

    def tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last lines of the engine's output (stderr, and stdout unless piped)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]

    def failure(self, message: str) -> EngineError:
        """An EngineError carrying the engine's last log lines."""
        return EngineError(message, log_tail=self.tail())

    def exited_error(self, while_doing: str) -> EngineError:
        """The error for an engine that exited or was killed during `while_doing`, with log."""
        code = self.exit_code()
        how = (f"was killed by signal {-code}" if code is not None and code < 0
               else f"exited with code {code}")
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if code == -9 else ""
        last = self._last_error_line()
        return self.failure(f"the {self.name} engine {how} {while_doing}{hint}"
                            + (f": {last}" if last else ""))

    def _last_error_line(self) -> str | None:
        """The engine's own message: the last line that names an error."""
        for line in reversed(self.tail(200)):
            if "Error" in line or "error:" in line or "Exception" in line:
                return line.strip()[:500]
        return None

    # ------------------------------------------------------------------ stop

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the group, SIGKILL it after `grace_s`; safe to call twice.

        The group is signalled again after the leader exits: helpers it
        spawned (vLLM's engine core) must not outlive it.
        """
        if self.proc is None:
            return None
        pgid = self.proc.pid
        # Descendants outside the group, found while the leader still ties them to it.
        runaways = engine_pids(pgid) - group_pids(pgid) if self.proc.poll() is None else set()
        for pid in runaways:
            self._signal_pid(pid, signal.SIGTERM)
        if self.proc.poll() is None:
            self._signal(pgid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(pgid, signal.SIGKILL)
                # A process stuck in the driver outlives even SIGKILL for a while:
                # the rest of the clean-up must still run.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
        deadline = time.monotonic() + grace_s
        while group_pids(pgid) and time.monotonic() < deadline:
            self._signal(pgid, signal.SIGTERM)
            time.sleep(0.1)
        if group_pids(pgid):
            self._signal(pgid, signal.SIGKILL)
        for pid in runaways:
            self._signal_pid(pid, signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.proc.returncode

    @staticmethod
    def _signal(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    @staticmethod
    def _signal_pid(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)

    def remove_log(self) -> None:
        """Delete the engine's log file, if it is still there."""
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def stop_orphaned_group(pgid: int, grace_s: float = STOP_GRACE_S) -> set[int]:
    """Stop an engine whose starter died: SIGTERM its group and the leader's
    descendants, SIGKILL what is left after `grace_s`. Returns the pids found
    (none: the engine had ended already).

    Only the group, and the descendants of its leader while the leader still leads
    it: Linux gives no process a pid that is a living group's id, so nothing else
    is signalled, even long after the engine ended."""
    table = proc_table()
    found = {pid for pid, proc in table.items() if proc.pgrp == pgid}
    if pgid in found:
        found |= tree_pids(pgid, table)
    if not found:
        return found
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(found):
            time.sleep(0.1)
        if not _alive(found):
            break
    return found


def _alive(pids: set[int]) -> bool:
    """Whether any of `pids` still runs (a zombie does not: it holds no GPU)."""
    table = proc_table()
    return any(pid in table and table[pid].state != "Z" for pid in pids)


def wait_until(ready, *, deadline_s: float, process: EngineProcess, abort: threading.Event,
               what: str, poll_s: float = 0.25) -> None:
    """Poll `ready()` until it is true; fail if the engine exits, the deadline
    passes (the engine is then stopped) or the worker aborts."""
    end = time.monotonic() + deadline_s
    while True:
        if ready():
            return
        if not process.running():
            raise process.exited_error(f"before {what}")
        if time.monotonic() >= end:
            error = process.failure(f"the {process.name} engine was not {what} within "
                                    f"{deadline_s:g} s")
            process.stop()
            raise error
        if abort.wait(poll_s):
            process.stop()
            raise RunAborted(f"the worker is shutting down while the {process.name} engine "
                             "was starting")
