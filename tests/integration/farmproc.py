"""Real farm processes for integration tests: `farmctl` subprocesses on a private
Redis and a real database, exactly as a lab would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str,
             interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


class Farm:
    """Starts and stops farmctl processes against one broker and one store."""

    def __init__(self, tmp: Path, broker_url: str, db_url: str, **env_overrides: str):
        self.tmp = tmp
        self.env = {
            **os.environ,
            "FARM_BROKER_URL": broker_url,
            "FARM_DB_URL": db_url,
            # Fast heartbeats and a short reaper grace so kill tests take seconds.
            "FARM_HEARTBEAT_S": "0.5",
            "FARM_REAPER_GRACE_S": "3",
            "FARM_HOME": str(tmp / ".farm"),
            "FARM_SPOOL_DIR": str(tmp / ".farm" / "spool"),
            "PYTHONUNBUFFERED": "1",
            **env_overrides,
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.broker_url = broker_url
        self.db_url = db_url

    def cli(self, *args: str, timeout_s: float = 120, check: bool = True
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "farm.cli", *args], env=self.env,
                              cwd=self.tmp, capture_output=True, text=True, timeout=timeout_s)
        if check and proc.returncode != 0:
            raise AssertionError(f"farmctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, name: str, *args: str, prefix: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `farmctl ARGS` as `name`; `prefix` runs it through another command
        (`ip netns exec NS`), `env` overrides variables for this process only."""
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "farm.cli", *args],
                                env={**self.env, **(env or {})}, cwd=self.tmp, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def worker(self, name: str, *sim_specs: str, **start: object) -> subprocess.Popen:
        args = ["worker", "--name", f"{name}@test"]
        for spec in sim_specs:
            args += ["--sim", spec]
        return self.start(name, *args, **start)  # type: ignore[arg-type]

    def recorder(self, name: str = "recorder") -> subprocess.Popen:
        return self.start(name, "recorder", "--name", f"{name}@test")

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
