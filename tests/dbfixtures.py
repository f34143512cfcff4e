"""Database servers for tests: reach a PostgreSQL, or start a private one.

Shared by the unit and integration suites (tests/conftest.py wires them into
fixtures). A private cluster lives in a temp dir under /tmp, listens on a free
port on 127.0.0.1 with its unix socket in that dir, and runs as the `postgres`
user when the tests run as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL could be reached or started."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> bool:
    """Whether something accepts TCP connections on host:port within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def libpq_url(url: str) -> str:
    """The URL psycopg itself accepts (no SQLAlchemy driver suffix)."""
    scheme, rest = url.split("://", 1)
    return scheme.split("+", 1)[0] + "://" + rest


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def pg_error(url: str, timeout_s: float = 2.0) -> str | None:
    """Why `url` cannot be connected to, or None if it can."""
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=max(1, round(timeout_s))):
            return None
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__


def create_database(server_url: str, prefix: str = "farm_test_") -> str:
    """A fresh empty database on the server; returns its URL."""
    name = prefix + secrets.token_hex(4)
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, db_url: str) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: `url = server.start()`, then `server.stop()`."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.port: int | None = None
        self._as_user: list[str] = []
        self._options = ""

    @property
    def data_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def _run(self, *args: str, timeout_s: float = 60.0) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True,
                                timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed "
                                      f"({result.returncode}): {result.stderr.strip()[-800:]}")

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable("running as root and `runuser` is missing")
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no `postgres` user") from None
        assert self.dir is not None
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._as_user = [runuser, "-u", "postgres", "--"]

    def start(self) -> str:
        initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
        if not (initdb and pg_ctl):
            raise PostgresUnavailable("initdb/pg_ctl not found on PATH")
        self.dir = Path(tempfile.mkdtemp(prefix="farm-pg-"))
        self.port = free_port()
        try:
            self._prepare_user()
            self._run(initdb, "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync")
            # Durability is not the point of a test cluster: skip fsyncs.
            options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            self._options = options
            self._run(pg_ctl, "-D", str(self.data_dir), "-l", str(self.dir / "postgres.log"),
                      "-o", options, "-w", "-t", "60", "start", timeout_s=90)
        except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
            log = self._log_tail()
            self.stop()
            raise PostgresUnavailable(f"{exc}{log}") from None
        if not wait_for_port("127.0.0.1", self.port):
            self.stop()
            raise PostgresUnavailable(f"private PostgreSQL not listening on {self.port}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pause(self) -> None:
        """Stop the server, keeping its data (a database outage); `resume` restarts it."""
        self._run(_pg_binary("pg_ctl") or "pg_ctl", "-D", str(self.data_dir), "-m", "fast",
                  "-w", "stop")

    def resume(self) -> None:
        """Start the paused server again, on the same port."""
        assert self.dir is not None
        self._run(_pg_binary("pg_ctl") or "pg_ctl", "-D", str(self.data_dir), "-l",
                  str(self.dir / "postgres.log"), "-o", self._options, "-w", "-t", "60",
                  "start", timeout_s=90)

    def _log_tail(self) -> str:
        log = self.dir / "postgres.log" if self.dir else None
        if log and log.exists():
            return "\n" + log.read_text(errors="replace")[-800:]
        return ""

    def stop(self) -> None:
        if self.dir is None:
            return
        pg_ctl = _pg_binary("pg_ctl")
        if pg_ctl and (self.data_dir / "postmaster.pid").exists():
            subprocess.run([*self._as_user, pg_ctl, "-D", str(self.data_dir), "-m", "fast",
                            "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
