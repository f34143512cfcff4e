"""Results signed by the worker host that measured them (HMAC-SHA256).

Anyone who can write to the broker can put a message on `farm.record`. A GPU
worker given `FARM_SIGNING_KEY` signs every result and run event it sends; a
recorder given `FARM_SIGNING_KEYS` (a file of `host key` lines) stores only
messages signed with the key of the host the record itself names
(`worker.host`). So a machine with broker access but not a host's key cannot
pass measurements off as that host's, nor alter a signed one in transit.
Without a keyring (the embedded single-machine farm) nothing is checked and
unsigned messages are stored as before.

The signature travels as the task's `host_signature` keyword argument, beside
the JSON text it signs byte for byte: no canonical form to agree on, JSON
serialization unchanged, and Celery's retries carry it along with the payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from farm_contract.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

ALGORITHM = "hmac-sha256"
KWARG = "host_signature"          # the recorder tasks' keyword argument


def mac(key: str, host: str, payload: str | bytes) -> str:
    """The hex HMAC-SHA256 of `payload` as sent by `host`: the host's name is part of
    what is signed, so a signature cannot be moved to a record naming another host."""
    body = payload if isinstance(payload, bytes) else payload.encode()
    message = json.dumps([ALGORITHM, host]).encode() + b"\n" + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(payload: str, settings: Settings | None = None,
         host: str | None = None) -> dict[str, str] | None:
    """This host's signature of `payload`, or None when FARM_SIGNING_KEY is unset.
    `host` defaults to the name records carry as `worker.host` (the host name)."""
    key = (settings or load_settings()).signing_key
    if not key:
        return None
    host = host or socket.gethostname()
    return {"alg": ALGORITHM, "host": host, "mac": mac(key, host, payload)}


def send_kwargs(payload: str) -> dict[str, Any]:
    """The keyword arguments that carry `payload`'s signature to a recorder task
    (none when this worker does not sign, so an older recorder still reads it)."""
    signature = sign(payload)
    return {KWARG: signature} if signature else {}


class Keyring:
    """The recorder's keys by worker host: several keys for one host while its key
    is being rotated (any of them verifies)."""

    def __init__(self, keys: dict[str, list[str]]):
        self.keys = keys

    @classmethod
    def read(cls, path: str) -> Keyring:
        """Parse a keyring file: `host key` per line, `#` comments and blank lines
        ignored. A line farm cannot use raises SettingsError naming it."""
        keys: dict[str, list[str]] = {}
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"FARM_SIGNING_KEYS={path!r} cannot be read: {exc}") from None
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 2:
                raise SettingsError(
                    f"FARM_SIGNING_KEYS={path!r} line {number}: expected `HOST KEY` (two "
                    f"fields), found {len(fields)} (e.g. `gpu-a.lab a3f9…` with the key from "
                    "`openssl rand -hex 32`, the FARM_SIGNING_KEY of that host)")
            host, key = fields
            if len(key) < 32:
                raise SettingsError(
                    f"FARM_SIGNING_KEYS={path!r} line {number}: the key of {host} is too "
                    "short (at least 32 characters; e.g. the output of `openssl rand -hex 32`)")
            keys.setdefault(host, []).append(key)
        if not keys:
            raise SettingsError(f"FARM_SIGNING_KEYS={path!r} holds no `HOST KEY` line: every "
                                "result would be refused (unset it to accept unsigned results)")
        return cls(keys)

    def refusal(self, host: str, payload: str | bytes, signature: Any) -> str | None:
        """Why a message naming `host` must not be stored; None when its signature
        is that host's."""
        if signature is None:
            return ("unsigned: this recorder stores only results signed by their host "
                    "(FARM_SIGNING_KEYS is set; give the worker FARM_SIGNING_KEY)")
        if not (isinstance(signature, dict) and signature.get("alg") == ALGORITHM
                and isinstance(signature.get("host"), str)
                and isinstance(signature.get("mac"), str)):
            return f"malformed signature (expected {ALGORITHM} with host and mac)"
        if signature["host"] != host:
            return (f"signed by host {signature['host']!r} but the record names host "
                    f"{host!r} (worker.host)")
        keys = self.keys.get(host)
        if not keys:
            return f"host {host!r} has no key in FARM_SIGNING_KEYS"
        if not any(hmac.compare_digest(mac(key, host, payload), signature["mac"])
                   for key in keys):
            return (f"signature does not match host {host!r}'s key (signed with another "
                    "key, or the message was altered)")
        return None


_cached: tuple[tuple[str, int, int], Keyring] | None = None


def keyring(settings: Settings | None = None) -> Keyring | None:
    """The recorder's keyring (None: FARM_SIGNING_KEYS unset, nothing is checked).
    Read again when the file changes, so a key rotation needs no restart."""
    global _cached
    path = (settings or load_settings()).signing_keys
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise SettingsError(f"FARM_SIGNING_KEYS={path!r} cannot be read: {exc}") from None
    stamp = (path, stat.st_mtime_ns, stat.st_size)
    if _cached is None or _cached[0] != stamp:
        _cached = (stamp, Keyring.read(path))
        log.info("signing keys of %d host(s) read from %s", len(_cached[1].keys), path)
    return _cached[1]


def refusal(host: str, payload: str | bytes, signature: Any) -> str | None:
    """Why the recorder must not store a message naming `host` (None: store it)."""
    ring = keyring()
    return None if ring is None else ring.refusal(host, payload, signature)
