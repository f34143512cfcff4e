"""Flower's command line for the farm's broker: auth on by default.

Flower's basic auth guards the UI and API but not `/metrics` and `/healthcheck`
(FIELD_NOTES): bind to loopback and publish through an authenticating proxy.
"""

from __future__ import annotations

from farm_contract.settings import Settings

# Runs last minutes to hours: Flower's default runtime buckets stop at 10 s.
RUNTIME_BUCKETS_S = "1,5,10,30,60,120,300,600,1200,1800,3600,7200,14400"


def flower_argv(settings: Settings, address: str, port: int, no_auth: bool) -> list[str]:
    """Flower's command line, with basic auth from the settings.

    Raises `ValueError` when no user and password are set, unless `no_auth` is
    given on a loopback address.
    """
    argv = ["flower", f"--address={address}", f"--port={port}",
            f"--task_runtime_metric_buckets={RUNTIME_BUCKETS_S}", "--purge_offline_workers=600"]
    if settings.flower_user and settings.flower_password:
        argv.append(f"--basic-auth={settings.flower_user}:{settings.flower_password}")
    elif not no_auth:
        raise ValueError("set FARM_FLOWER_USER and FARM_FLOWER_PASSWORD (Flower basic auth), "
                         "or pass --no-auth on a loopback address")
    elif address not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("--no-auth is allowed on a loopback address only")
    return argv
