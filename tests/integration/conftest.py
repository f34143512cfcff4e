"""Integration fixtures: a private Redis for the session (flushed per test), a
farm of real processes, and the store it writes — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from farm.embedded import EmbeddedRedisError, PrivateRedis
from farm.store import Store
from tests.conftest import unavailable
from tests.integration.farmproc import Farm


@pytest.fixture(scope="session")
def redis_server() -> Iterator[PrivateRedis]:
    try:
        server = PrivateRedis().start()
    except EmbeddedRedisError as exc:
        unavailable(f"no Redis can be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def broker_url(redis_server: PrivateRedis) -> str:
    import redis

    redis.Redis(unix_socket_path=str(redis_server.socket)).flushall()
    return redis_server.url


@pytest.fixture
def farm(tmp_path, broker_url: str, store_url: str) -> Iterator[Farm]:
    # Schema first, as `farmctl db upgrade` would in a deployment.
    Store.open(store_url, upgrade=True).close()
    farm = Farm(tmp_path, broker_url, store_url)
    try:
        yield farm
    finally:
        farm.stop_all()


@pytest.fixture
def store(farm: Farm) -> Iterator[Store]:
    with Store.open(farm.db_url) as opened:
        yield opened
