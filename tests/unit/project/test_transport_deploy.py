"""The transport security recipe's files (no Docker engine here): the compose overlays
parse and agree with the code and the ACL template; the template renders only with
passwords given, and keeps no password. (The ACL itself, on a real redis-server:
tests/integration/test_transport_security.py.)"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import yaml

from tests.paths import ROOT

DEPLOY = ROOT / "deploy"
# Read by compose or the render script only, never by farm.
DEPLOYMENT_ONLY = {"FARM_REDIS_COORDINATOR_PASSWORD", "FARM_REDIS_WORKER_PASSWORD",
                   "FARM_TLS_DIR", "FARM_SIGNING_KEYS_FILE", "FARM_REDIS_TLS_AUTH_CLIENTS",
                   "FARM_WORKER_HOSTNAME", "FARM_BROKER_HOST", "FARM_REDIS_PASSWORD"}


def overlay(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_the_overlays_set_only_settings_farm_reads():
    known = set(re.findall(r'"(FARM_[A-Z_]+)"', (ROOT / "farm_contract" / "settings.py")
                           .read_text()))
    for name in ("compose.tls.yml", "compose.worker.tls.yml"):
        text = (DEPLOY / name).read_text()
        used = set(re.findall(r"\b(FARM_[A-Z_]+)\b", text))
        assert used - DEPLOYMENT_ONLY <= known, (name, used - DEPLOYMENT_ONLY - known)
        for service in overlay(name)["services"].values():
            assert "FARM_DB_URL" not in (service.get("environment") or {})


def test_coordinator_overlay_serves_tls_only_with_the_acl_and_clients_follow():
    services = overlay("compose.tls.yml")["services"]
    command = services["redis"]["command"][-1]
    assert "render-acl /etc/farm/redis/users.acl.in > /data/users.acl" in command
    for option in ("--port 0", "--tls-port 6379", "--aclfile /data/users.acl",
                   "--tls-ca-cert-file", "--appendonly yes"):
        assert option in command
    assert "--tls" in services["redis"]["healthcheck"]["test"][1]
    for name in ("recorder", "flower"):
        env = services[name]["environment"]
        assert env["FARM_BROKER_URL"].startswith("rediss://farm-coordinator:")
        assert env["FARM_BROKER_TLS_CA_FILE"] == "/etc/farm/tls/ca.crt"
    assert services["recorder"]["environment"]["FARM_SIGNING_KEYS"] == "/etc/farm/signing-keys"
    assert services["worker"]["environment"]["FARM_BROKER_URL"].startswith(
        "rediss://farm-worker:")


def test_worker_overlay_signs_with_a_fixed_host_name_and_no_database():
    worker = overlay("compose.worker.tls.yml")["services"]["worker"]
    assert worker["hostname"].startswith("${FARM_WORKER_HOSTNAME:?")
    assert worker["environment"]["FARM_SIGNING_KEY"].startswith("${FARM_SIGNING_KEY:?")
    assert "FARM_DB_URL" not in worker["environment"]
    assert worker["environment"]["FARM_BROKER_TLS_KEY_FILE"] == "/etc/farm/tls/worker.key"


def test_the_acl_file_holds_digests_and_is_refused_without_passwords():
    script = str(DEPLOY / "redis" / "render-acl")
    env = {"PATH": os.environ["PATH"], "FARM_REDIS_COORDINATOR_PASSWORD": "c" * 20,
           "FARM_REDIS_WORKER_PASSWORD": "w" * 20}
    text = subprocess.run([script], env=env, capture_output=True, text=True, check=True,
                          timeout=30).stdout
    assert "c" * 20 not in text and "w" * 20 not in text
    assert f"#{hashlib.sha256(b'w' * 20).hexdigest()}" in text
    assert all(line.startswith("user ") for line in text.splitlines())   # no comments
    assert "user default off" in text
    short = subprocess.run([script], env={**env, "FARM_REDIS_WORKER_PASSWORD": "short"},
                           capture_output=True, text=True, timeout=30)
    assert short.returncode == 2 and short.stdout == ""
    assert "FARM_REDIS_WORKER_PASSWORD must be set to a password of at least 16" in short.stderr


def test_the_signing_keys_example_is_a_keyring_farm_reads():
    from tasks.signing import Keyring

    ring = Keyring.read(str(DEPLOY / "signing-keys.example"))
    assert sorted(ring.keys) == ["gpu-a.lab.example", "gpu-b.lab.example"]
