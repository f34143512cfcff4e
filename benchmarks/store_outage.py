"""How long a simulated GPU stays busy through a PostgreSQL outage (issue 20 item 4).

A private PostgreSQL and Redis, a recorder (with its dispatcher) and one worker
serving one simulated L4; a sweep of short runs. Once a few runs succeeded (the
reserve knows how long a run lasts) and the reserve is on the queue, PostgreSQL
is stopped for `--outage-s` seconds, then started again. Printed: when, into the
outage, the worker finished its last run before going idle; the runs measured
during the outage; how long after recovery the runs measured until then were
all recorded; and runs started more than once (re-executions), once all ran.

    python benchmarks/store_outage.py [--reserve-s 180] [--outage-s 60] [--runs 80]

`--reserve-s 0` is the dispatcher without a reserve (depth max(4, 2 × slots)).
"""

from __future__ import annotations

import argparse
import time

from _common import ROOT, private_redis, redis_client, temp_dir  # noqa: F401 (ROOT: sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reserve-s", type=float, default=180.0)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--duration-s", type=float, default=1.0, help="each run's load point")
    args = parser.parse_args()

    from farm.store import Store
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep
    from tests.dbfixtures import PrivatePostgres
    from tests.integration.farmproc import Farm, wait_for
    from tests.integration.test_farm import sweep_toml

    text = sweep_toml("outage", '["sim:L4"]', concurrency="[1]", duration_s=args.duration_s,
                      repetitions=args.runs)
    ids = [r.run_id for r in expand(parse_sweep(text))]
    server = PrivatePostgres()
    db_url = server.start()
    try:
        with private_redis() as redis, temp_dir() as tmp:
            client = redis_client(redis)
            Store.open(db_url, upgrade=True).close()
            farm = Farm(tmp, redis.url, db_url, FARM_QUEUE_RESERVE_S=str(args.reserve_s))
            try:
                farm.recorder()
                farm.worker("l4", "L4")
                (tmp / "outage.toml").write_text(text)
                farm.cli("enqueue", str(tmp / "outage.toml"))

                def done() -> list[float]:
                    return [time.monotonic() for i in ids if client.exists(f"farm:done:{i}")]
                with Store.open(db_url) as store:
                    wait_for(lambda: list(store.run_statuses(ids).values()).count("succeeded")
                             >= 3, 120, "three runs")
                time.sleep(2.0)                        # a dispatcher pass with the estimate
                queued = client.llen("sim.l4.x1")
                server.pause()
                stopped, before = time.monotonic(), len(done())
                last_done, count = stopped, before
                while time.monotonic() - stopped < args.outage_s:
                    now_done = len(done())
                    if now_done > count:
                        count, last_done = now_done, time.monotonic()
                    time.sleep(0.1)
                measured = [i for i in ids if client.exists(f"farm:done:{i}")]
                server.resume()
                resumed = time.monotonic()
                with Store.open(db_url) as store:
                    wait_for(lambda: set(store.run_statuses(measured).values()) == {"succeeded"},
                             600, "the runs measured before the recovery, recorded")
                    recorded_s = time.monotonic() - resumed
                    wait_for(lambda: set(store.run_statuses(ids).values()) == {"succeeded"},
                             600, "every run")
                repeats = sum(int(client.get(f"farm:attempts:{i}") or 0) > 1 for i in ids)
                print(f"reserve {args.reserve_s:g} s, outage {args.outage_s:g} s, "
                      f"run load point {args.duration_s:g} s")
                print(f"  messages waiting at the stop: {queued}")
                print(f"  runs measured during the outage: {count - before}")
                print(f"  last run finished {last_done - stopped:.1f} s into the outage; "
                      f"idle for its last {args.outage_s - (last_done - stopped):.1f} s")
                print(f"  the runs measured so far all recorded {recorded_s:.1f} s after "
                      "PostgreSQL came back")
                print(f"  runs started more than once: {repeats}")
            finally:
                farm.stop_all()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
