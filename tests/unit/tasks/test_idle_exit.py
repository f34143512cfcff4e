"""`farmctl worker --idle-exit-s`'s watch (tasks/idle_exit.py), on a fake clock."""

from __future__ import annotations

from tasks.idle_exit import IdleExit


def test_stops_only_after_idle_seconds_in_a_row():
    now, busy, stops = [0.0], [False], []
    watch = IdleExit(10, lambda: busy[0], stop=lambda: stops.append(now[0]),
                     clock=lambda: now[0])
    now[0] = 9.9
    assert not watch.check()
    busy[0], now[0] = True, 9.95          # a run: the idle clock starts again after it
    assert not watch.check()
    busy[0], now[0] = False, 19.9
    assert not watch.check() and stops == []
    now[0] = 19.96
    assert watch.check() and stops == [19.96]


def test_the_worker_flag_reaches_the_worker_program():
    from tasks.worker_main import main, parse_args

    assert parse_args(["--idle-exit-s", "300"]).idle_exit_s == 300.0
    assert parse_args([]).idle_exit_s is None
    assert main(["--idle-exit-s", "0", "--sim", "L4"]) == 2
