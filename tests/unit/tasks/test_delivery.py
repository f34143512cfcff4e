"""A measured result survives a broker outage: retried in memory, spooled on stop."""

import threading

from tasks.delivery import deliver, drain_spool


class FlakyBroker:
    def __init__(self, failures: int):
        self.failures = failures
        self.sent: list[tuple[str, str]] = []

    def __call__(self, payload: str, task_id: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker down")
        self.sent.append((payload, task_id))


def test_retries_until_the_broker_is_back(tmp_path):
    broker = FlakyBroker(failures=2)
    assert deliver(broker, "{}", "record-r-1", threading.Event(), spool=tmp_path,
                   max_delay_s=0.01)
    assert broker.sent == [("{}", "record-r-1")]
    assert not list(tmp_path.iterdir())


def test_spooled_when_stopping_and_sent_at_next_start(tmp_path):
    stop = threading.Event()
    stop.set()
    assert not deliver(FlakyBroker(failures=10**6), '{"run_id": "r"}', "record-r-2", stop,
                       spool=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["record-r-2.json"]
    still_down = FlakyBroker(failures=1)
    assert drain_spool(still_down, tmp_path) == 0          # kept for the next start
    assert (tmp_path / "record-r-2.json").exists()
    back = FlakyBroker(failures=0)
    assert drain_spool(back, tmp_path) == 1
    assert back.sent == [('{"run_id": "r"}', "record-r-2")]
    assert not list(tmp_path.iterdir())


def test_backoff_doubles_up_to_the_limit(tmp_path, monkeypatch):
    import kombu.utils.functional as functional

    slept: list[float] = []
    monkeypatch.setattr(functional, "sleep", slept.append)
    broker = FlakyBroker(failures=6)
    assert deliver(broker, "{}", "record-r-3", threading.Event(), spool=tmp_path,
                   max_delay_s=4.0)
    # 0.5 s, then 1, 2, 4, 4, 4 s: each wait slept one second at a time (the stop
    # event is looked at every second), the remainder last.
    waits, current = [], 0.0
    for s in slept:
        current += s
        if s != 1.0:
            waits.append(current)
            current = 0.0
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_stop_during_the_wait_spools_within_a_second(tmp_path):
    import time

    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert not deliver(FlakyBroker(failures=10**6), "{}", "record-r-4", stop, spool=tmp_path,
                       max_delay_s=60.0)
    assert time.monotonic() - started < 2.5
    assert [p.name for p in tmp_path.iterdir()] == ["record-r-4.json"]
