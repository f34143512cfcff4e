"""Goal: a worker's /metrics costs it less than 1% of a CPU at a 1 s scrape interval.

Starts a private Redis and one `farmctl worker --sim H100-80GBxN` (N GPUs, default
8) with FARM_METRICS_PORT set, lets it settle, then measures the worker
process's CPU time (utime + stime, /proc/PID/stat) over --duration seconds
without scrapes and over --duration seconds with one GET /metrics per --interval
(as a Prometheus server at that scrape_interval), alternating for --rounds
rounds. The cost of scraping is the difference of the two, as a share of one
CPU. Also: each scrape's wall time and the page's size and sample count.

The worker is idle (no run): its own CPU then is the tenant watch, heartbeats
and Celery's loop — the baseline a scrape is compared with. Simulated readings
go through Python and a lock per GPU; NVML's are a few µs each plus the energy
counter (3–18 ms, read at most every 5 s per GPU: workers/exporter.py).

    .venv/bin/python benchmarks/bench_metrics.py [--gpus 8] [--duration 60] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from _common import ROOT, machine, private_redis, summary, table, temp_dir

GOAL = 0.01
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """The process's user + system CPU time so far (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S     # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> tuple[float, int, int]:
    """(wall s, bytes, samples) of one GET /metrics."""
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as page:
        body = page.read()
    wall = time.perf_counter() - start
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return wall, len(body), samples


def phase(pid: int, duration_s: float, url: str | None, interval_s: float
          ) -> tuple[float, list[tuple[float, int, int]]]:
    """CPU seconds the worker used over `duration_s`, scraping `url` every `interval_s`."""
    scrapes = []
    before, start = cpu_s(pid), time.monotonic()
    tick = start
    while time.monotonic() < start + duration_s:
        if url is not None:
            scrapes.append(scrape(url))
        tick += interval_s
        time.sleep(max(0.0, tick - time.monotonic()))
    return cpu_s(pid) - before, scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8, help="simulated H100s of the worker")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--interval", type=float, default=1.0, help="scrape interval (s)")
    parser.add_argument("--rounds", type=int, default=1, help="(quiet, scraped) pairs")
    args = parser.parse_args()
    print(machine())
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with private_redis() as redis, temp_dir() as tmp:
        env = {**os.environ, "FARM_BROKER_URL": redis.url, "FARM_METRICS_PORT": str(port),
               "FARM_METRICS_ADDRESS": "127.0.0.1", "FARM_HOME": str(tmp),
               "FARM_SPOOL_DIR": str(tmp / "spool"), "PYTHONPATH": str(ROOT)}
        log = open(tmp / "worker.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", "worker", "--name", "bench@metrics",
             "--sim", f"H100-80GBx{args.gpus}"], cwd=tmp, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    first = scrape(url)
                    break
                except OSError:
                    if worker.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit((tmp / "worker.log").read_text()) from None
                    time.sleep(0.5)
            time.sleep(5)          # past start-up (imports, Celery's connect)
            rows, quiet_all, scraped_all, walls = [], 0.0, 0.0, []
            for n in range(args.rounds):
                quiet, _ = phase(worker.pid, args.duration, None, args.interval)
                busy, scrapes = phase(worker.pid, args.duration, url, args.interval)
                quiet_all, scraped_all = quiet_all + quiet, scraped_all + busy
                walls += [s[0] for s in scrapes]
                cost = (busy - quiet) / args.duration
                rows.append((n + 1, len(scrapes), quiet, busy, f"{cost:.2%}",
                             f"{1000 * (busy - quiet) / len(scrapes):.2f}"))
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            log.close()
    print(table(f"worker with {args.gpus} simulated GPUs; {args.duration:g} s per phase, "
                f"a scrape every {args.interval:g} s",
                ["round", "scrapes", "CPU s quiet", "CPU s scraped", "cost (of 1 CPU)",
                 "CPU ms / scrape"], rows))
    cost = (scraped_all - quiet_all) / (args.duration * args.rounds)
    wall = summary(walls)
    print(f"page: {first[1]:,} bytes, {first[2]} samples; scrape wall time median "
          f"{1000 * wall['median']:.1f} ms, p90 {1000 * wall['p90']:.1f} ms")
    print(f"cost of scraping: {cost:.2%} of one CPU (goal < {GOAL:.0%}): "
          f"{'met' if cost < GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
