"""The dispatcher's choice (farm.dispatch.choose, pure) and its store side
(farm.store.dispatching, on SQLite and PostgreSQL), the migration 0006."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from farm.dispatch import _contested, choose, depth_for, gpus_of
from farm.reserve import MAX_RESERVE_PER_SLOT, RunEstimates, reserve_runs
from farm.store import Store, make_engine
from farm.store.counts import owner_counts
from farm.store.db import _alembic_config
from farm.store.dispatching import Backlog, Usage
from farm.store.mapping import runs_t, sweeps_t
from tests import factories

T = datetime(2026, 1, 1, tzinfo=UTC)
NO_USAGE = Usage({}, {})


def backlog(sweep: str, owner: str, waiting: int, priority: int = 0, age_s: int = 0,
            queue: str = "sim.h100.x1") -> Backlog:
    return Backlog(queue, sweep, owner, priority, T - timedelta(seconds=age_s), waiting)


def owners(picks: list[Backlog]) -> str:
    return "".join(p.owner for p in picks)


# ---------------------------------------------------------------- the choice


def test_owners_interleave_at_equal_usage() -> None:
    picks = choose([backlog("big", "A", 5000), backlog("small", "B", 3)],
                   {"sim.h100.x1": 8}, NO_USAGE)
    # A is first by name only; then each pick charges its owner, so they alternate
    # until B has nothing left.
    assert owners(picks) == "ABABABAA"


def test_a_higher_priority_goes_first_whatever_the_usage() -> None:
    usage = Usage({"B": 1e6}, {})
    picks = choose([backlog("a", "A", 5), backlog("b", "B", 3, priority=1)],
                   {"sim.h100.x1": 5}, usage)
    assert owners(picks) == "BBBAA"


def test_the_owner_with_less_gpu_time_goes_first_until_caught_up() -> None:
    # A used 300 GPU-s in the window; B none: B takes 5 picks at the default 60 s.
    picks = choose([backlog("a", "A", 50), backlog("b", "B", 50)],
                   {"sim.h100.x1": 8}, Usage({"A": 300.0}, {}))
    assert owners(picks) == "BBBBBABA"


def test_the_estimate_is_the_owners_mean_run_duration() -> None:
    # A's runs last 600 s, B's 60 s: after one A pick, B gets ten, then both are
    # at 600 s and A goes (ties by name).
    picks = choose([backlog("a", "A", 50), backlog("b", "B", 50)],
                   {"sim.h100.x1": 12}, Usage({}, {"A": 600.0, "B": 60.0}))
    assert owners(picks) == "A" + "B" * 10 + "A"


def test_the_charge_counts_the_queues_gpus() -> None:
    # A x4 run charges 4 × 60 s: B, on an x1 queue, gets four picks for it.
    picks = choose([backlog("a", "A", 9, queue="sim.h100.x4"),
                    backlog("b", "B", 9, queue="sim.h100.x1")],
                   {"sim.h100.x1": 4, "sim.h100.x4": 1}, NO_USAGE)
    # Queues go in name order: x1 first, alternating nobody (only B there) …
    assert [(p.queue, p.owner) for p in picks] == [("sim.h100.x1", "B")] * 4 + [
        ("sim.h100.x4", "A")]


def test_charges_carry_across_queues() -> None:
    picks = choose([backlog("a1", "A", 9, queue="q.l4.x1"), backlog("b", "B", 9, queue="q.l4.x1"),
                    backlog("a2", "A", 9, queue="q.l4.x2")],
                   {"q.l4.x1": 2, "q.l4.x2": 1}, Usage({"B": 30.0}, {}))
    # x1: A (0) then B (30 < 60): A charged 60, B 90; x2 has only A.
    assert [(p.queue, p.sweep_id) for p in picks] == [("q.l4.x1", "a1"), ("q.l4.x1", "b"),
                                                      ("q.l4.x2", "a2")]


def test_within_an_owner_the_oldest_sweep_first() -> None:
    picks = choose([backlog("new", "A", 5, age_s=10), backlog("old", "A", 2, age_s=100)],
                   {"sim.h100.x1": 4}, NO_USAGE)
    assert [p.sweep_id for p in picks] == ["old", "old", "new", "new"]


def test_no_room_no_picks_and_never_more_than_waits() -> None:
    assert choose([backlog("a", "A", 5)], {"sim.h100.x1": 0}, NO_USAGE) == []
    assert choose([backlog("a", "A", 5)], {"sim.h100.x1": -3}, NO_USAGE) == []
    assert len(choose([backlog("a", "A", 2)], {"sim.h100.x1": 9}, NO_USAGE)) == 2


def test_depth_and_gpus_of_a_queue() -> None:
    assert depth_for("sim.h100.x1", {}) == 4
    assert depth_for("sim.h100.x1", {"sim.h100.x1": 8}) == 16
    assert depth_for("sim.h100.x1", {"sim.h100.x1": 8}, depth=3) == 3
    assert (gpus_of("gpu.h100-80gb.x4"), gpus_of("cpu.cpu.x1"), gpus_of("odd")) == (4, 1, 1)


def test_the_reserve_is_seconds_of_work_bounded_per_slot() -> None:
    # 8 slots, 3-minute runs, a 180-s reserve: one run per slot more.
    assert reserve_runs(8, 180, 180.0) == 8
    assert depth_for("sim.h100.x1", {"sim.h100.x1": 8}, reserve=8) == 16
    # 2-s runs: 90 per slot wanted, 50 per slot at most.
    assert reserve_runs(1, 180, 2.0) == MAX_RESERVE_PER_SLOT
    assert depth_for("sim.h100.x1", {"sim.h100.x1": 1}, reserve=50) == 51
    # Before any run succeeded: DEFAULT_RUN_S (60 s); no worker or no reserve: nothing.
    assert reserve_runs(2, 180, None) == 6
    assert reserve_runs(0, 180, 2.0) == reserve_runs(4, 0, 2.0) == 0
    assert depth_for("sim.h100.x1", {}, reserve=0) == 4


def test_run_estimates_are_reused_until_stale_and_asked_again_without_history() -> None:
    class Store:
        def __init__(self):
            self.asked: list[str] = []

        def recent_run_s(self, queue):
            self.asked.append(queue)
            return None if queue == "new" else 5.0

    store, estimates = Store(), RunEstimates(ttl_s=60)
    assert estimates.run_s(store, ["old", "new"]) == {"old": 5.0, "new": None}
    assert estimates.run_s(store, ["old", "new"]) == {"old": 5.0, "new": None}
    assert store.asked == ["old", "new", "new"]


# ---------------------------------------------------------------- the store


def _record(store: Store, toml: str = factories.SMALL_SWEEP, **kw):
    spec, toml, runs = factories.sweep(toml)
    sid = store.record_sweep(spec, toml, **kw)
    store.add_runs(sid, runs)
    return sid, runs


def test_new_runs_wait_for_dispatch_until_marked(store: Store) -> None:
    sid, runs = _record(store, owner="alice", priority=2)
    backlog_ = store.dispatch_backlog()
    assert {(b.queue, b.owner, b.priority, b.waiting) for b in backlog_} == {
        (q, "alice", 2, n) for q, n in Counter(r.hardware.queue for r in runs).items()}
    queue = runs[0].hardware.queue
    first = store.undispatched_runs(sid, queue, 2)
    assert len(first) == 2 and all(r.hardware.queue == queue for r in first)
    assert store.mark_dispatched([r.run_id for r in first]) == 2
    assert store.mark_dispatched([r.run_id for r in first]) == 0   # marked once
    left = {r.run_id for r in store.undispatched_runs(sid, queue, 100)}
    assert left and not left & {r.run_id for r in first}
    assert len(store.undispatched_ids(sid)) == len(runs) - 2
    assert store.dispatch_backlog("no-such-sweep") == []


def test_every_configuration_is_sent_once_before_any_is_repeated(store: Store) -> None:
    sid, runs = _record(store)                  # SMALL_SWEEP: 2 repetitions
    queue = runs[0].hardware.queue
    configurations = sum(r.hardware.queue == queue and r.repetition == 0 for r in runs)
    assert configurations >= 2
    order = store.undispatched_runs(sid, queue, 100)
    assert [r.repetition for r in order] == sorted(r.repetition for r in order)
    assert [r.repetition for r in order[:configurations]] == [0] * configurations
    # Sent in pieces, as passes do, the order holds across them.
    store.mark_dispatched([r.run_id for r in order[:2]])
    assert store.undispatched_runs(sid, queue, 100) == order[2:]


def test_retry_makes_runs_undispatched_again(store: Store) -> None:
    sid, runs = _record(store)
    store.mark_dispatched([r.run_id for r in runs])
    assert store.dispatch_backlog() == []
    store.record_result(factories.result(runs[0], status="failed"))
    back = store.runs_to_retry(sid)
    assert [r.run_id for r in back] == [runs[0].run_id]
    assert store.undispatched_ids(sid) == [runs[0].run_id]


def test_a_re_enqueue_updates_owner_and_priority_only_when_given(store: Store) -> None:
    spec, toml, _ = factories.sweep()
    sid = store.record_sweep(spec, toml, owner="alice", priority=1)
    store.record_sweep(spec, toml)                          # farmctl run: keeps both
    assert (store.find_sweep(sid).owner, store.find_sweep(sid).priority) == ("alice", 1)
    store.record_sweep(spec, toml, owner="bob", priority=-1)
    assert (store.find_sweep(sid).owner, store.find_sweep(sid).priority) == ("bob", -1)


def test_owner_usage_and_counts(store: Store) -> None:
    _, runs = _record(store, owner="alice")
    other = factories.SMALL_SWEEP.replace('name = "small-sim"', 'name = "other"')
    _, bob_runs = _record(store, other, owner="bob")
    now = datetime.now(UTC)
    finished = runs[0]
    store.mark_started(factories.event(finished.run_id, at=now - timedelta(seconds=100)))
    # factories.result: finished 30 s after its start, 1 GPU.
    store.record_result(factories.result(finished, started_at=now - timedelta(seconds=100)))
    store.mark_started(factories.event(runs[1].run_id, at=now - timedelta(seconds=20)))
    old = bob_runs[0]      # finished before the window: not charged
    store.mark_started(factories.event(old.run_id, at=now - timedelta(hours=30)))
    store.record_result(factories.result(old, started_at=now - timedelta(hours=30)))
    store.mark_dispatched([r.run_id for r in runs[:3]])
    usage = store.owner_usage(24 * 3600, now=now)
    assert set(usage.gpu_s) == {"alice"}
    assert abs(usage.gpu_s["alice"] - (30 + 20) * finished.hardware.gpu_count) < 1
    assert abs(usage.mean_run_s["alice"] - 30) < 1e-6 and abs(usage.all_mean_run_s - 30) < 1e-6
    # runs[2] is dispatched and not started: on a queue, counted at its estimate.
    assert usage.in_flight_gpus == {"alice": runs[2].hardware.gpu_count}
    rows = {r["owner"]: r for r in store.owner_counts(24 * 3600, now=now)}
    alice, bob = rows["alice"], rows["bob"]
    assert (alice["sweeps"], alice["succeeded"], alice["running"]) == (1, 1, 1)
    assert alice["queued"] == len(runs) - 2 and alice["waiting"] == len(runs) - 3
    assert (bob["succeeded"], bob["queued"], bob["waiting"]) == (1, len(bob_runs) - 1,
                                                                  len(bob_runs) - 1)
    assert bob["gpu_hours"] == 0.0 and 0.01 < alice["gpu_hours"] < 0.02
    # The fast path (DB-API connection of its own) gives the same table.
    connection = store.engine.raw_connection()
    try:
        assert owner_counts(connection.driver_connection, 24 * 3600, now) == list(rows.values())
    finally:
        connection.close()


def test_recent_run_s_is_the_queues_mean_succeeded_run(store: Store) -> None:
    _, runs = _record(store)
    queue = runs[0].hardware.queue
    assert store.recent_run_s(queue) is None
    now = datetime.now(UTC)
    same_queue = [r for r in runs if r.hardware.queue == queue]
    for run in same_queue[:2]:        # factories.result: finished 30 s after its start
        store.mark_started(factories.event(run.run_id, at=now - timedelta(seconds=60)))
        store.record_result(factories.result(run, started_at=now - timedelta(seconds=60)))
    assert abs(store.recent_run_s(queue) - 30) < 1e-6
    assert store.recent_run_s("sim.none.x1") is None


def test_migration_0006_marks_older_queued_runs_dispatched(store_url: str) -> None:
    """Down to 0005 (runs an older farm had sent), up again: they are not sent twice."""
    from alembic import command

    with Store.open(store_url, upgrade=True) as store:
        _, runs = _record(store, owner="alice", priority=3)
        store.record_result(factories.result(runs[0]))
    engine = make_engine(store_url)
    try:
        with engine.begin() as connection:
            command.downgrade(_alembic_config(connection), "0005")
    finally:
        engine.dispose()
    with Store.open(store_url, upgrade=True) as store:
        assert store.dispatch_backlog() == []
        with store._read() as session:
            sweep = session.execute(select(sweeps_t.c.owner, sweeps_t.c.priority)).one()
            marks = dict(session.execute(select(runs_t.c.id, runs_t.c.dispatched_at)).all())
        assert tuple(sweep) == ("", 0)
        assert marks[runs[0].run_id] is None                 # finished: no mark needed
        assert all(marks[r.run_id] is not None for r in runs[1:])


def test_runs_added_as_dispatched_are_never_sent(store: Store) -> None:
    """An import brings results with its runs: a live dispatcher must not send them."""
    spec, toml, runs = factories.sweep()
    sid = store.record_sweep(spec, toml)
    assert store.add_runs(sid, runs, dispatched=True) == runs
    assert store.dispatch_backlog() == [] and store.undispatched_ids() == []


def test_runs_waiting_on_the_queues_count_at_their_estimate() -> None:
    # A has nothing finished in the window but 5 messages on the queues (60 s each
    # by default, 300 GPU-s): B, with 100 GPU-s used, goes first four times
    # (100, 160, 220, 280 < 300).
    picks = choose([backlog("a", "A", 9), backlog("b", "B", 9)], {"sim.h100.x1": 5},
                   Usage({"B": 100.0}, {}, {"A": 5}))
    assert owners(picks) == "BBBBA"


def test_a_new_owner_is_estimated_by_every_owners_mean() -> None:
    # A's runs last 1 s, B has none finished: B is estimated at the farm's 1 s, not 60 s.
    picks = choose([backlog("a", "A", 9), backlog("b", "B", 9)], {"sim.h100.x1": 4},
                   Usage({"A": 2.0}, {"A": 1.0}, {}, all_mean_run_s=1.0))
    assert owners(picks) == "BBAB"


def test_usage_is_needed_only_when_owners_compete_for_free_places() -> None:
    one_owner = [backlog("a1", "A", 5), backlog("a2", "A", 5, age_s=9)]
    assert not _contested(one_owner, {"sim.h100.x1": 4})
    two = [backlog("a", "A", 5), backlog("b", "B", 5)]
    assert _contested(two, {"sim.h100.x1": 1})
    assert not _contested(two, {"sim.h100.x1": 0})                  # the queue is full
    assert not _contested([backlog("a", "A", 5, priority=1), backlog("b", "B", 5)],
                          {"sim.h100.x1": 4})                        # priority decides
    assert not _contested([backlog("a", "A", 5), backlog("b", "B", 5, queue="q.l4.x1")],
                          {"sim.h100.x1": 4, "q.l4.x1": 4})          # different queues


def test_enqueue_refuses_an_owner_that_is_no_short_name(tmp_path) -> None:
    """Checked before Redis or the store is touched: exit 2 with the rule."""
    from click.testing import CliRunner

    from farm.cli import main

    path = tmp_path / "s.toml"
    path.write_text(factories.SMALL_SWEEP)
    env = {"FARM_BROKER_URL": "redis://127.0.0.1:1/0", "FARM_DB_URL": f"sqlite:///{tmp_path}/x.db"}
    result = CliRunner().invoke(main, ["enqueue", str(path), "--owner", "bad name"], env=env)
    assert result.exit_code == 2 and "not a short name" in result.output
    assert not (tmp_path / "x.db").exists()
