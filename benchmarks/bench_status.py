"""Goal 3: `farmctl status` in under 0.5 s with 100,000 runs in PostgreSQL.

Fills a scratch PostgreSQL database with --runs runs spread over --sweeps
sweeps (Store.record_sweep + add_runs with generated RunSpecs), gives them a
realistic mix of statuses with one SQL UPDATE, ANALYZEs, then times
  (a) the store queries: Store.status_counts() and queue_counts(sweep), in
      process on an open store (and once on a fresh one: connect + schema check);
  (b) `farmctl status` and `farmctl status SWEEP` as subprocesses (the wall
      time a user sees), median of --repeat; plus `python -c pass` and the
      import of farm.cli alone, to show what the interpreter and imports cost;
  (c) with --importtime, the heaviest imports of `farmctl status`
      (python -X importtime), by top-level package.

    .venv/bin/python benchmarks/bench_status.py [--runs 100000] [--sweeps 5] [--db postgresql]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from _common import DB_KINDS, machine, scratch_db, sweep_toml, table, temp_dir

GOAL_S = 0.5

# Status mix per sweep, in percent (queued takes the rest): an old finished
# sweep, one half done, one just started, one cancelled halfway.
MIXES = (
    {"succeeded": 93, "failed": 5, "cancelled": 2},
    {"succeeded": 48, "failed": 2, "running": 1},
    {"succeeded": 5, "running": 1},
    {"succeeded": 30, "failed": 1, "cancelled": 69},
)


def fill(db_url: str, runs: int, sweeps: int) -> tuple[list[str], float]:
    """Record the sweeps and their runs; returns (sweep names, seconds)."""
    from farm.store.repository import Store
    from farm.sweep import expand
    from farm.sweep_file import parse_sweep

    start = time.perf_counter()
    names = []
    per_sweep = runs // sweeps
    with Store.open(db_url, upgrade=True) as store:
        for index in range(sweeps):
            name = f"bench-status-{index}"
            text, _ = sweep_toml(name, per_sweep)
            spec = parse_sweep(text)
            sid = store.record_sweep(spec, text)
            store.add_runs(sid, expand(spec))
            names.append(name)
        set_statuses(store, names)
    return names, time.perf_counter() - start


def set_statuses(store, names: list[str]) -> None:
    """Give each sweep its status mix, by a stable hash bucket of the run id."""
    from sqlalchemy import text

    from farm_contract.runspec import sweep_id

    postgres = store.dialect == "postgresql"
    # 0..99 from the run id (hex): stable, uniform enough.
    bucket = ("(('x' || substr(id, 1, 6))::bit(24)::int % 100)" if postgres
              else "(abs(unicode(substr(id, 1, 1)) * 131 + unicode(substr(id, 2, 1))) % 100)")
    with store.engine.begin() as conn:
        for index, name in enumerate(names):
            mix = MIXES[index % len(MIXES)]
            cases, low = [], 0
            for status, percent in mix.items():
                cases.append(f"WHEN {bucket} < {low + percent} THEN '{status}'")
                low += percent
            conn.execute(text(f"UPDATE runs SET status = CASE {' '.join(cases)} "
                              "ELSE 'queued' END WHERE sweep_id = :sid"),
                         {"sid": sweep_id(name)})
    with store.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.exec_driver_sql("VACUUM ANALYZE runs" if postgres else "ANALYZE")


def time_queries(db_url: str, sweep_name: str, repeat: int) -> list[tuple]:
    from farm.store.repository import Store

    rows = []
    start = time.perf_counter()
    store = Store.open(db_url)
    opened = time.perf_counter() - start
    sid = store.find_sweep(sweep_name).id
    first = time.perf_counter()
    store.status_counts(None)
    first = time.perf_counter() - first
    rows.append(("Store.open (connect + schema check)", opened, opened, opened))
    rows.append(("status_counts(), first on that store", first, first, first))
    for label, fn in (("status_counts() (all sweeps)", lambda: store.status_counts(None)),
                      ("queue_counts(sweep)", lambda: store.queue_counts(sid)),
                      ("find_sweep(name)", lambda: store.find_sweep(sweep_name))):
        samples = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        rows.append((label, statistics.median(samples), min(samples), max(samples)))
    total = sum(c[2] for c in store.status_counts(None))
    store.close()
    rows.append(("(runs counted)", total, total, total))
    return rows


def wall(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, float, float, str]:
    samples, out = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        samples.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
        out = proc.stdout
    return statistics.median(samples), min(samples), max(samples), out


def importtime(env: dict[str, str], args: list[str]) -> list[tuple[str, float]]:
    """Self+children import time (s) of each top-level package, heaviest first."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "farm.cli", *args],
                          env=env, capture_output=True, text=True)
    per_package: dict[str, float] = defaultdict(float)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in
                                      line.removeprefix("import time:").split("|"))
        per_package[name.split(".")[0]] += int(self_us) / 1e6
    return sorted(per_package.items(), key=lambda kv: -kv[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    # 5: a sweep expands to at most 20,000 runs (farm_contract/limits.py MAX_RUNS).
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--db", choices=DB_KINDS, default="postgresql")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--importtime", action="store_true",
                        help="also list the heaviest imports of `farmctl status`")
    args = parser.parse_args()

    print(f"bench_status: {args.runs} runs in {args.sweeps} sweeps, {args.db} — {machine()}")
    with temp_dir() as tmp, scratch_db(args.db, tmp) as db_url:
        names, seconds = fill(db_url, args.runs, args.sweeps)
        print(f"filled in {seconds:.1f} s (sweeps of 200 × n runs: rounded up per sweep)")
        print()
        print(table(f"(a) store queries, median of {args.repeat * 3} (s)",
                    ("query", "median", "min", "max"),
                    time_queries(db_url, names[1], args.repeat * 3)))

        env = {**os.environ, "FARM_DB_URL": db_url, "FARM_HOME": str(tmp / ".farm")}
        py = [sys.executable]
        rows = []
        for label, argv in (
            ("python -c pass", [*py, "-c", "pass"]),
            ("python -c 'import farm.cli'", [*py, "-c", "import farm.cli"]),
            ("farmctl --help", [*py, "-m", "farm.cli", "--help"]),
            ("farmctl status", [*py, "-m", "farm.cli", "status"]),
            (f"farmctl status {names[1]}", [*py, "-m", "farm.cli", "status", names[1]]),
        ):
            median, low, high, _ = wall(argv, env, args.repeat)
            rows.append((label, median, low, high))
        print()
        print(table(f"(b) subprocess wall time, median of {args.repeat} (s)",
                    ("command", "median", "min", "max"), rows))
        print()
        print("`farmctl status` prints:")
        print(wall([*py, "-m", "farm.cli", "status"], env, 1)[3].rstrip())

        if args.importtime:
            heavy = importtime(env, ["status"])
            print()
            print(table("(c) import time of `farmctl status` by top-level package (s, one run)",
                        ("package", "import s"), heavy[:15]))
            print(f"  total imports: {sum(s for _, s in heavy):.3f} s")
        worst = max(r[1] for r in rows if r[0].startswith("farmctl status"))
        print(f"\ngoal: < {GOAL_S:g} s — {'meets' if worst < GOAL_S else 'MISSES'} "
              f"({worst:.3f} s, median wall of the slower status command)")


if __name__ == "__main__":
    main()
