"""Transport security against a real redis-server: TLS with the farm's CA and client
certificates, the deployment's ACL users (deploy/redis/users.acl.in), and a farm
whose worker signs its results over that link (tests/tlsredis.py makes the server)."""

from __future__ import annotations

import json
import socket
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from farm.embedded import EmbeddedRedisError
from farm.store import Store
from farm_contract.records import RunEvent, WorkerInfo
from farm_contract.settings import Settings
from tasks.app import EVENT_TASK, create_app
from tasks.broker_state import BrokerState, redis_client
from tests.conftest import unavailable
from tests.integration.farmproc import Farm, wait_for
from tests.tlsredis import PASSWORDS, TlsRedis

pytestmark = pytest.mark.integration
QUEUE = "sim.h100-80gb.x1"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[TlsRedis]:
    pytest.importorskip("cryptography")
    try:
        server = TlsRedis(tmp_path_factory.mktemp("tls-redis")).start()
    except EmbeddedRedisError as exc:
        unavailable(f"no redis-server with TLS can be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


def client(server: TlsRedis, user: str, password: str | None = None, **tls: str
           ) -> redis.Redis:
    """A farm redis client for `user`, with the farm's TLS files unless `tls` says otherwise."""
    files = {**server.tls_settings(), **tls}
    url = server.url(user, password)
    return redis_client(url, Settings(broker_url=url, **files))


@pytest.fixture
def coordinator(tls_redis) -> redis.Redis:
    r = client(tls_redis, "farm-coordinator")
    r.flushall()
    return r


def test_broker_state_reaches_redis_over_tls_with_the_farm_ca(tls_redis, coordinator):
    state = BrokerState(client(tls_redis, "farm-worker"))
    assert state.claim("run-1", "w1@gpu-a", ttl_s=30)
    assert coordinator.get("farm:claim:run-1") == b"w1@gpu-a"
    assert state.r.connection_pool.connection_class is redis.SSLConnection


def test_a_plain_connection_an_untrusted_server_or_a_missing_client_cert_is_refused(
        tls_redis, coordinator):
    plain = tls_redis.url("farm-worker", scheme="redis")
    with pytest.raises(redis.ConnectionError):
        redis_client(plain, Settings(broker_url=plain)).ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client(tls_redis, "farm-worker", broker_tls_ca_file=str(tls_redis.pki.other_ca)).ping()
    with pytest.raises(redis.ConnectionError):   # the server asks for a client certificate
        client(tls_redis, "farm-worker", broker_tls_cert_file=None,
               broker_tls_key_file=None).ping()


def test_the_worker_user_reaches_only_the_farms_keys(tls_redis, coordinator):
    worker = client(tls_redis, "farm-worker")
    worker.lpush(QUEUE, "message")
    assert worker.brpop([QUEUE], timeout=1) == (QUEUE.encode(), b"message")
    worker.lpush("farm.record", "result")
    worker.set("farm:claim:run-1", "w1", ex=60)
    worker.hset("unacked", "tag", "message")
    worker.zadd("unacked_index", {"tag": 1.0})
    worker.sadd("_kombu.binding.farm.record", "binding")
    worker.publish("/0.celeryev/worker.heartbeat", "{}")
    refused = [worker.flushall, lambda: worker.config_get("*"),
               lambda: worker.set("sessions:admin", "x"), lambda: worker.get("other"),
               lambda: worker.keys("*"),
               lambda: worker.eval("return redis.call('get', KEYS[1])", 1, "other"),
               lambda: worker.eval("return redis.call('flushall')", 0),
               lambda: worker.acl_setuser("farm-worker"), worker.info,
               lambda: worker.publish("/0.other-channel", "x")]
    for command in refused:
        with pytest.raises(redis.ResponseError, match="no permissions|can.t run this command"):
            command()
    assert coordinator.llen("farm.record") == 1 and coordinator.dbsize() == 5
    with pytest.raises(redis.AuthenticationError):
        client(tls_redis, "farm-worker", password="not-the-password").ping()
    anonymous = f"rediss://:{PASSWORDS['farm-coordinator']}@127.0.0.1:{tls_redis.port}/0"
    with pytest.raises(redis.AuthenticationError):    # no default user
        redis_client(anonymous, Settings(broker_url=anonymous, **tls_redis.tls_settings())).ping()


SWEEP = textwrap.dedent("""\
    name = "signed"
    [[model]]
    id = "tiny-1b"
    source = "org/tiny-1B"
    [hardware]
    gpu = ["sim:H100-80GB"]
    [engine]
    kind = "sim"
    [[scenario]]
    kind = "server"
    concurrency = [1]
    duration_s = 0.3
    warmup_s = 0.05
    [workload]
    input_tokens = [32]
    output_tokens = [16]
    [measurement]
    sample_period_s = 0.05
    idle_baseline_s = 0.1
    min_steady_s = 0.1
    """)


def test_a_farm_over_tls_with_acl_users_records_its_workers_signed_result(
        tmp_path, tls_redis, coordinator):
    """Worker and recorder as deployed: rediss:// with client certificates, each as
    its ACL user; the worker signs, the recorder holds its key and stores the result."""
    key = "k" * 40
    keyring = tmp_path / "signing-keys"
    keyring.write_text(f"# host key\n{socket.gethostname()} {key}\nother-host {'o' * 40}\n")
    db_url = f"sqlite:///{tmp_path / 'farm.db'}"
    Store.open(db_url, upgrade=True).close()
    tls = tls_redis.tls_env()
    recorder = Farm(tmp_path, tls_redis.url("farm-coordinator"), db_url,
                    FARM_SIGNING_KEYS=str(keyring), **tls)
    worker = Farm(tmp_path, tls_redis.url("farm-worker"), db_url, FARM_SIGNING_KEY=key, **tls)
    try:
        procs = [recorder.recorder(), worker.worker("w1", "H100-80GB")]
        sweep = tmp_path / "signed.toml"
        sweep.write_text(SWEEP)
        recorder.cli("enqueue", str(sweep))
        with Store.open(db_url) as store:
            # A process refused by the ACL stops: no need to wait any longer then.
            wait_for(lambda: store.counts()["results"] == 1
                     or any(p.poll() is not None for p in procs), 60, "the signed result")
            assert store.counts()["results"] == 1, (recorder.log("recorder")[-3000:]
                                                    + worker.log("w1")[-3000:])
        assert coordinator.llen("farm:unreadable") == 0
        # The same recorder refuses what no worker host signed: parked with the reason.
        event = RunEvent(run_id="not-signed", kind="started", attempt=1, at=datetime.now(UTC),
                         worker=WorkerInfo(name="w1@test", host=socket.gethostname(), pid=1))
        url = tls_redis.url("farm-coordinator")
        create_app(Settings(broker_url=url, **tls_redis.tls_settings())).send_task(
            EVENT_TASK, args=[event.model_dump_json()])
        parked = wait_for(lambda: coordinator.lrange("farm:unreadable", 0, -1), 30,
                          "the unsigned event parked")
        assert "RunEvent refused: unsigned" in json.loads(parked[0])["reason"]
    finally:
        worker.stop_all()
        recorder.stop_all()
