"""workers.collector: full collections kept out of the run's measured windows."""

from __future__ import annotations

import gc
import threading

import pytest

from tests.unit.workers.test_runner import SERVER, WORKER, one_run
from workers import collector
from workers.gpu.sim import SimInventory
from workers.power import Meter
from workers.runner import run_one


@pytest.fixture
def dedicated(monkeypatch):
    monkeypatch.setattr(collector, "_dedicated", True)
    yield
    gc.unfreeze()


def test_settle_and_thaw_leave_a_shared_process_alone():
    before = gc.get_freeze_count()
    assert collector.settle() is None
    collector.thaw()
    assert gc.get_freeze_count() == before


def test_settle_freezes_what_is_alive_and_thaw_gives_it_back(dedicated):
    alive = [[i] for i in range(1000)]
    took = collector.settle()
    assert took is not None and took >= 0
    assert gc.get_freeze_count() >= len(alive)
    collector.thaw()
    assert gc.get_freeze_count() == 0


def test_only_the_settle_before_the_run_walks_the_whole_heap(dedicated):
    def full_passes() -> int:
        return gc.get_stats()[2]["collections"]

    before = full_passes()
    collector.settle()                  # between phases: the young generations
    assert full_passes() == before
    collector.settle(full=True)         # before the sampler starts
    assert full_passes() == before + 1


def test_the_runner_settles_outside_every_window_before_warmup_and_each_load_point(
        dedicated, monkeypatch):
    events: list[tuple[str, str | None]] = []
    begin, end = Meter.begin, Meter.end

    def spy_begin(self, name, *args, **kwargs):
        events.append(("begin", name))
        return begin(self, name, *args, **kwargs)

    def spy_end(self, name, *args, **kwargs):
        events.append(("end", name))
        return end(self, name, *args, **kwargs)

    monkeypatch.setattr(Meter, "begin", spy_begin)
    monkeypatch.setattr(Meter, "end", spy_end)
    settle = collector.settle
    monkeypatch.setattr(collector, "settle", lambda: (events.append(("settle", None)),
                                                      settle())[1])
    result = run_one(one_run(SERVER), SimInventory("H100-80GB").devices(), threading.Event(),
                     worker=WORKER, attempt=1)
    assert result.status == "succeeded", result.error
    open_: set[str] = set()
    settled_before: list[str] = []
    for i, (what, name) in enumerate(events):
        if what == "begin":
            open_.add(name)
        elif what == "end":
            open_.discard(name)
        else:
            assert open_ == {"run"}, f"a collection inside {open_ - {'run'}}"
            settled_before.append(next(n for w, n in events[i:] if w == "begin"))
    assert settled_before == ["warmup", "steady", "steady"]     # two load points
    assert gc.get_freeze_count() == 0                             # thawed after the run
