"""A private redis-server with TLS and the deployment's ACL users, for the transport
security tests: certificates made here (the `cryptography` package), the ACL file
rendered by deploy/redis/render-acl, the server started by farm.embedded.PrivateRedis
on a free loopback port. Plain TCP is off: only TLS connections reach it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from farm.embedded import PrivateRedis

ROOT = Path(__file__).resolve().parents[1]
RENDER_ACL = ROOT / "deploy" / "redis" / "render-acl"
PASSWORDS = {"farm-coordinator": "coordinator-password-for-tests",
             "farm-worker": "worker-password-for-tests"}


@dataclass(frozen=True)
class Pki:
    """Paths of a CA, a server certificate for 127.0.0.1/localhost, a client
    certificate, and a second CA that signed neither."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        path.with_suffix(".key").chmod(0o600)
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert(name: str, key, issuer_name: str, issuer_key, *, ca: bool = False,
          server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Write a test CA, server and client certificates (and an unrelated CA) to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = _key(), _key()
    _write(directory / "ca", None, _cert("farm test CA", ca_key, "farm test CA", ca_key, ca=True))
    _write(directory / "other-ca", None,
           _cert("someone else's CA", other_key, "someone else's CA", other_key, ca=True))
    for name, server in (("server", True), ("client", False)):
        key = _key()
        _write(directory / name, key, _cert(name, key, "farm test CA", ca_key, server=server))
    return Pki(ca=directory / "ca.crt", server_cert=directory / "server.crt",
               server_key=directory / "server.key", client_cert=directory / "client.crt",
               client_key=directory / "client.key", other_ca=directory / "other-ca.crt")


def render_acl(path: Path) -> Path:
    """The deployment's ACL file (deploy/redis/users.acl.in) with the test passwords."""
    env = {**os.environ, "FARM_REDIS_COORDINATOR_PASSWORD": PASSWORDS["farm-coordinator"],
           "FARM_REDIS_WORKER_PASSWORD": PASSWORDS["farm-worker"]}
    rendered = subprocess.run([str(RENDER_ACL)], env=env, check=True, capture_output=True,
                              text=True, timeout=30)
    path.write_text(rendered.stdout)
    return path


def free_port() -> int:
    """A TCP port nobody listens on now, on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TlsRedis:
    """redis-server on 127.0.0.1:`port`, TLS only, client certificates required,
    the deployment's ACL users."""

    def __init__(self, directory: Path):
        self.pki = make_pki(directory / "tls")
        self.port = free_port()
        acl = render_acl(directory / "users.acl")
        self.server = PrivateRedis(extra_args=[
            "--tls-port", str(self.port), "--tls-cert-file", str(self.pki.server_cert),
            "--tls-key-file", str(self.pki.server_key), "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", "yes", "--aclfile", str(acl)])

    def url(self, user: str, password: str | None = None, scheme: str = "rediss") -> str:
        """A broker URL for `user` (with its test password unless one is given)."""
        secret = PASSWORDS[user] if password is None else password
        return f"{scheme}://{user}:{secret}@127.0.0.1:{self.port}/0"

    def tls_settings(self) -> dict[str, str]:
        """The TLS fields of a `Settings` this server accepts."""
        return {"broker_tls_ca_file": str(self.pki.ca),
                "broker_tls_cert_file": str(self.pki.client_cert),
                "broker_tls_key_file": str(self.pki.client_key)}

    def tls_env(self) -> dict[str, str]:
        """The FARM_BROKER_TLS_* settings of a client this server accepts."""
        return {"FARM_BROKER_TLS_CA_FILE": str(self.pki.ca),
                "FARM_BROKER_TLS_CERT_FILE": str(self.pki.client_cert),
                "FARM_BROKER_TLS_KEY_FILE": str(self.pki.client_key)}

    def start(self) -> TlsRedis:
        """Start the server (see PrivateRedis.start); returns self."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.server.stop()
