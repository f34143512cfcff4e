"""tasks.progress: progress reports never wait for the broker."""

from __future__ import annotations

import threading
import time

from tasks.progress import ProgressPublisher


def test_telling_returns_at_once_while_the_broker_blocks_and_the_newest_update_wins():
    unblock = threading.Event()
    written: list[tuple[str, object]] = []

    def blocking_set(run_id, info):
        unblock.wait(10)             # a partitioned link: the write hangs
        written.append((run_id, info["load_point"]))

    publisher = ProgressPublisher(blocking_set, lambda run_id: written.append((run_id, None)))
    started = time.monotonic()
    for point in range(5):
        publisher.tell("run-a", {"load_point": point})
    publisher.tell("run-b", {"load_point": 0})
    publisher.forget("run-b")
    assert time.monotonic() - started < 0.5
    assert not publisher.idle(0.2)   # still stuck on the first write
    unblock.set()
    assert publisher.idle(5)
    # One write was under way; of the rest only the newest per run is written, in order.
    assert len(written) <= 3 and written[0][0] == "run-a"
    assert written[-2:] == [("run-a", 4), ("run-b", None)]


def test_a_failing_write_is_logged_and_the_publisher_goes_on(caplog):
    calls = []

    def failing_set(run_id, info):
        calls.append(info["load_point"])
        if len(calls) == 1:
            raise ConnectionError("broker unreachable")

    publisher = ProgressPublisher(failing_set, lambda run_id: None)
    publisher.tell("run-a", {"load_point": 0})
    assert publisher.idle(5)
    publisher.tell("run-a", {"load_point": 1})
    assert publisher.idle(5)
    assert calls == [0, 1] and "not published" in caplog.text
