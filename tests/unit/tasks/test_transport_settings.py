"""TLS to the broker from the settings: FARM_BROKER_TLS_* reach Celery's connections
and farm's own redis clients; a TLS setting farm cannot use is a one-line error
naming it. (A real TLS redis-server: tests/integration/test_transport_security.py.)"""

from __future__ import annotations

import ssl

import pytest
from click.testing import CliRunner

from farm_contract.settings import Settings, SettingsError
from tasks.app import create_app
from tasks.broker_state import redis_client

URL = "rediss://farm-worker:pw@coordinator:6379/0"


@pytest.fixture
def files(tmp_path):
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("PEM\n")
    return {"broker_tls_ca_file": str(tmp_path / "ca.crt"),
            "broker_tls_cert_file": str(tmp_path / "client.crt"),
            "broker_tls_key_file": str(tmp_path / "client.key")}


def test_celery_and_farms_redis_clients_open_rediss_with_the_tls_files(files):
    settings = Settings(broker_url=URL, **files)
    expected = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": files["broker_tls_ca_file"],
                "ssl_certfile": files["broker_tls_cert_file"],
                "ssl_keyfile": files["broker_tls_key_file"]}
    assert create_app(settings).conf.broker_use_ssl == expected
    pool = redis_client(URL, settings).connection_pool
    assert {k: pool.connection_kwargs[k] for k in expected} == expected
    assert pool.connection_kwargs["username"] == "farm-worker"
    # Without TLS files, rediss:// still verifies the server (against the system's CAs).
    assert create_app(Settings(broker_url=URL)).conf.broker_use_ssl["ssl_cert_reqs"] \
        == ssl.CERT_REQUIRED
    assert create_app(Settings(broker_url="redis://h:6379/0")).conf.broker_use_ssl is None


@pytest.mark.parametrize(("given", "message"), [
    ({"broker_url": "redis://:pw@coordinator:6379/0", "broker_tls_ca_file": "ca.crt"},
     "FARM_BROKER_TLS_CA_FILE set, but FARM_BROKER_URL='redis://:***@coordinator:6379/0' is "
     "not a TLS URL: use rediss://"),
    ({"broker_url": URL, "broker_tls_cert_file": "client.crt"},
     "FARM_BROKER_TLS_CERT_FILE and FARM_BROKER_TLS_KEY_FILE go together"),
    ({"broker_url": URL, "broker_tls_ca_file": "missing.crt"},
     "FARM_BROKER_TLS_CA_FILE='missing.crt' names no file (e.g. "
     "FARM_BROKER_TLS_CA_FILE=/etc/farm/tls/ca.crt)"),
    ({"broker_url": URL, "broker_tls_key_file": "."},
     "FARM_BROKER_TLS_KEY_FILE='.' is not a file"),
    ({"signing_keys": "missing-keys"}, "FARM_SIGNING_KEYS='missing-keys' names no file"),
])
def test_a_tls_or_signing_setting_farm_cannot_use_names_the_variable(files, tmp_path,
                                                                      monkeypatch, given,
                                                                      message):
    monkeypatch.chdir(tmp_path)          # the files of the fixture, by relative name
    with pytest.raises(SettingsError) as caught:
        Settings(**given)
    assert message in str(caught.value)


def test_farmctl_stops_on_a_bad_tls_setting_with_the_message(monkeypatch):
    from farm.cli import main

    monkeypatch.setenv("FARM_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("FARM_BROKER_TLS_CA_FILE", "/nonexistent/ca.crt")
    out = CliRunner().invoke(main, ["workers"])
    assert out.exit_code == 2
    assert "FARM_BROKER_TLS_CA_FILE='/nonexistent/ca.crt' names no file" in out.output
    assert "Traceback" not in out.output
