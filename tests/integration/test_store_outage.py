"""A store outage does not idle the GPUs: each queue keeps a reserve of runs
(farm/reserve.py) that workers live on while the dispatcher cannot read the store,
and after the store is back no run is sent or measured twice."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy.exc import OperationalError

from farm.dispatch import dispatch_once
from farm.reserve import RunEstimates
from farm.store import Store
from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.settings import Settings
from tasks.app import MEASURE_TASK, create_app
from tasks.broker_state import BrokerState, redis_client
from tests.conftest import unavailable
from tests.dbfixtures import PostgresUnavailable, PrivatePostgres
from tests.integration.farmproc import Farm, wait_for
from tests.integration.test_dispatch import take
from tests.integration.test_farm import all_finished, assert_exactly_once, sweep_toml, write

pytestmark = pytest.mark.integration


class OutageStore:
    """A real store whose every call fails while `down`, as an unreachable database does."""

    def __init__(self, store: Store):
        self._store, self.down = store, False

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if not (self.down and callable(attr)):
            return attr

        def unreachable(*_args, **_kwargs):
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("store down"))
        return unreachable


class FixedEstimates(RunEstimates):
    """Every queue's runs last `run_s` seconds."""

    def __init__(self, run_s: float):
        super().__init__()
        self.fixed = run_s

    def run_s(self, store, queues):
        return dict.fromkeys(queues, self.fixed)


def test_the_reserve_feeds_a_worker_through_an_outage_and_nothing_is_sent_twice(
        tmp_path, broker_url):
    text = sweep_toml("outage", '["sim:L4"]', repetitions=40)
    spec = parse_sweep(text)
    runs = expand(spec)
    queue = runs[0].hardware.queue
    with Store.open(f"sqlite:///{tmp_path / 'farm.db'}", upgrade=True) as real:
        sid = real.record_sweep(spec, text, owner="alice")
        real.add_runs(sid, runs)
        store = OutageStore(real)
        state = BrokerState(redis_client(broker_url))
        state.advertise("l4@test", {"gpus": [{"model": "l4"}], "queues": [queue]}, 60)

        app = create_app(Settings(broker_url=broker_url))

        def send(batch) -> None:
            for run in batch:
                app.send_task(MEASURE_TASK, args=[run.to_json()], task_id=run.run_id,
                              queue=run.hardware.queue)

        # One worker slot, 2-s runs, a 30-s reserve: 1 + 15 waiting.
        def pass_() -> None:
            dispatch_once(store, state, reserve_s=30, estimates=FixedEstimates(2.0), send=send)
        pass_()
        assert state.queue_length(queue) == 16

        taken: list[str] = []
        with app.connection_for_read() as conn:
            store.down = True
            while state.queue_length(queue):          # the worker lives on the reserve
                taken.append(take(conn, queue, timeout_s=5))
                with pytest.raises(OperationalError):
                    pass_()
            assert len(taken) == 16                   # 32 s of work for a 30-s reserve

            store.down = False
            while len(taken) < len(runs):
                pass_()
                taken.append(take(conn, queue, timeout_s=5))
        assert sorted(taken) == sorted(r.run_id for r in runs)     # each run sent once
        assert real.undispatched_ids() == []


@pytest.fixture
def private_pg() -> Iterator[tuple[PrivatePostgres, str]]:
    """A PostgreSQL of this test's own, to stop and start again."""
    server = PrivatePostgres()
    try:
        url = server.start()
    except PostgresUnavailable as exc:
        unavailable(f"no private PostgreSQL can be started: {exc}")
    try:
        yield server, url
    finally:
        server.stop()


@pytest.mark.slow
def test_gpus_keep_working_through_a_postgresql_outage(tmp_path, broker_url, private_pg):
    server, db_url = private_pg
    Store.open(db_url, upgrade=True).close()
    farm = Farm(tmp_path, broker_url, db_url, FARM_QUEUE_RESERVE_S="15")
    client = redis_client(broker_url)
    text = sweep_toml("pg-outage", '["sim:L4"]', concurrency="[1]", duration_s=0.2,
                      repetitions=20)
    runs = expand(parse_sweep(text))
    ids = [r.run_id for r in runs]
    queue = runs[0].hardware.queue

    def done() -> int:
        return sum(client.exists(f"farm:done:{run_id}") for run_id in ids)
    try:
        farm.recorder()
        farm.worker("l4", "L4")
        farm.cli("enqueue", str(write(farm, "pg-outage", text)))
        with Store.open(db_url) as store:
            wait_for(lambda: list(store.run_statuses(ids).values()).count("succeeded") >= 3,
                     90, "three runs, to know how long a run lasts")
        # The reserve: 15 s of work at the measured run duration, beyond the one slot.
        wait_for(lambda: client.llen(queue) >= 8, 15, "the reserve on the queue")

        server.pause()
        stopped, done_at_stop = time.monotonic(), done()
        wait_for(lambda: done() >= done_at_stop + 8, 60, "runs measured during the outage")
        during = done() - done_at_stop
        busy_s = time.monotonic() - stopped
        assert "store unavailable" in farm.log("recorder")
        server.resume()

        with Store.open(db_url) as store:
            wait_for(lambda: all_finished(store, ids), 120, "every run after the outage")
            assert_exactly_once(store, runs, load_points_per_run=1)
            assert store.undispatched_ids() == []
        attempts = {int(client.get(f"farm:attempts:{run_id}")) for run_id in ids}
        assert attempts == {1}, "a run was measured twice"
        print(f"\n{during} runs measured in the first {busy_s:.1f} s of the outage")
    finally:
        farm.stop_all()
