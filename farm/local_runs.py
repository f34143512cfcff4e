"""The `farmctl run`s in progress on this machine, and the private brokers they use.

`farmctl run` starts its workers on a private Redis (a Unix socket in a temp
directory), so from another shell `farmctl status` reading the farm's broker
saw no worker for the run's queues and warned that no live worker serves
them — while the run was being measured. Each `farmctl run` therefore leaves
a small file here for as long as it runs: its pid, the store it writes to (as
a digest: the URL may hold a password) and its broker URL (a socket path, no
credentials). `farmctl status` and `farmctl workers` read the workers of every
live local run on the same store from its broker.

The directory is per user ($XDG_RUNTIME_DIR, else the temp directory) and
private (0700); a file whose process is gone is removed by the next reader.

The same directory holds one lock file per (store, sweep): `farmctl run` holds
it while it runs, so a second `farmctl run` of the sweep on the same store is
refused instead of sending every run again on its own broker (both measured
all of them). An flock dies with its process: a killed run leaves a file, never
a held lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LocalRun:
    """One live `farmctl run` on this machine."""

    pid: int
    sweep: str
    broker_url: str
    started_at: str


def registry_dir() -> Path:
    """Where the files are: per user, under $XDG_RUNTIME_DIR or the temp directory."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"farm-local-runs-{os.getuid()}"


def _trusted(directory: Path) -> bool:
    """Ours alone: in a shared /tmp another user could have made the directory first
    and would read (or plant) the files."""
    info = directory.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def _store_key(store_url: str) -> str:
    return hashlib.sha256(store_url.encode()).hexdigest()


@contextmanager
def registered(store_url: str, broker_url: str, sweep: str) -> Iterator[Path | None]:
    """Announce this process's local run while the block runs (yields the file, or
    None where it cannot be written: the run goes on, unannounced)."""
    path = registry_dir() / f"{os.getpid()}.json"
    record = {"pid": os.getpid(), "sweep": sweep, "broker_url": broker_url,
              "store": _store_key(store_url), "started_at": datetime.now(UTC).isoformat()}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted(path.parent):
            raise PermissionError(f"{path.parent} is not this user's alone")
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(record))
        partial.replace(path)      # a reader never sees half a file
    except OSError:                # a read-only or foreign directory: a note lost, no more
        yield None
        return
    try:
        yield path
    finally:
        with suppress(FileNotFoundError):
            path.unlink()


class SweepBusy(OSError):
    """Another `farmctl run` on this machine holds the sweep on the same store."""


@contextmanager
def sweep_lock(store_url: str, sweep_id: str) -> Iterator[bool]:
    """Hold the (store, sweep) lock while the block runs; raise SweepBusy when another
    process holds it. Yields False (no lock, the run goes on) where the directory
    cannot be used, as `registered` does. The file is removed at the end, while
    still locked; a taker that opened it before checks it still is the file there."""
    path = registry_dir() / f"{_store_key(store_url)[:24]}-{sweep_id}.lock"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted(path.parent):
            raise PermissionError(f"{path.parent} is not this user's alone")
        handle = _take(path)
    except SweepBusy:
        raise
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with suppress(FileNotFoundError):
            path.unlink()
        handle.close()


def _take(path: Path):
    """The locked, open lock file at `path`; SweepBusy when another process has it."""
    for _ in range(5):
        handle = open(path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SweepBusy(f"{path} is held") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()      # its holder removed it as we opened it: take the new one
    raise SweepBusy(f"{path} keeps changing hands")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # someone else's process with a reused pid
        return False
    return True


def live(store_url: str) -> list[LocalRun]:
    """The live local runs writing to `store_url`, oldest first; stale files removed."""
    directory = registry_dir()
    if not directory.is_dir() or not _trusted(directory):
        return []
    key, out = _store_key(store_url), []
    for path in sorted(directory.glob("*.json")):
        try:
            record: dict[str, Any] = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue               # not one of ours, or being replaced: skip it
        if not _alive(pid):
            with suppress(FileNotFoundError):
                path.unlink()
            continue
        if record.get("store") == key:
            out.append(LocalRun(pid, str(record.get("sweep")), str(record["broker_url"]),
                                str(record.get("started_at"))))
    return sorted(out, key=lambda r: r.started_at)
