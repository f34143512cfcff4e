"""The load generator's own ceiling: how fast it can drive a server that costs nothing.

The shipped mock server (workers.mock_openai) runs as a separate process with
zero delays on loopback, so each request's cost is the load generator's
(aiohttp, SSE parsing, timing, records) plus the mock's. For each concurrency
(closed loop) and output length, one load point runs for --duration seconds:

    req/s, output tok/s       sustained (completed requests / load point duration)
    loadgen CPU               this process's CPU time ÷ wall time (1.00 = one core)
    µs/request, µs/token      this process's CPU time per request / per output token
    mock CPU                  the server process's CPU time ÷ wall time

On a 2-core machine the two processes share the cores: where "loadgen CPU"
nears 1.0 the load generator is the limit (one event loop is one core), where
"mock CPU" does, the server is. The --paced rows give the mock a real TTFT/ITL
(every token chunk then arrives in its own read, as from a GPU server) and
show what the load generator costs per token at a realistic pace, and how
close the measured ITL stays to the configured one.

    .venv/bin/python benchmarks/bench_loadgen.py [--duration 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from _common import ROOT, machine, table

from workers import sse
from workers.loadgen import run_load_point
from workers.workload import PromptRequest

CONCURRENCY = (1, 16, 64, 256)
OUTPUT_TOKENS = (16, 128)
PACED = ((256, 128, 0.05, 0.02), (64, 128, 0.02, 0.005))   # concurrency, tokens, ttft, itl
CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Mock:
    """The mock server as its own process (python -m workers.mock_openai)."""

    def __init__(self, ttft_s: float = 0.0, itl_s: float = 0.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.mock_openai", "--port", "0",
             "--ttft-s", str(ttft_s), "--itl-s", str(itl_s)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("mock_openai listening on "):
            self.proc.kill()
            raise RuntimeError(f"the mock did not start: {line!r}")
        self.url = line.split()[-1]

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def prompts(output_tokens: int) -> list[PromptRequest]:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"]
    return [PromptRequest(prompt=" ".join(words[i % 9:] + words[:i % 9]) * 4, input_tokens=36,
                          max_tokens=output_tokens) for i in range(64)]


def one_point(mock: Mock, concurrency: int, output_tokens: int, duration_s: float) -> dict:
    requests = prompts(output_tokens)
    # a short warm-up load point: imports, connections, caches
    asyncio.run(run_load_point(mock.url, "mock-model", requests, concurrency=concurrency,
                               duration_s=min(1.0, duration_s / 5)))
    cpu0, mock0, wall0 = time.process_time(), mock.cpu_s(), time.perf_counter()
    out = asyncio.run(run_load_point(mock.url, "mock-model", requests,
                                     concurrency=concurrency, duration_s=duration_s))
    wall = time.perf_counter() - wall0
    cpu, mock_cpu = time.process_time() - cpu0, mock.cpu_s() - mock0
    ok = [r for r in out.requests if r.ok]
    tokens = sum(r.output_tokens or 0 for r in ok)
    itl = [g for r in ok for g in r.itl_s]
    return {
        "concurrency": concurrency, "output_tokens": output_tokens,
        "requests": len(out.requests), "failed": len(out.requests) - len(ok),
        "max_in_flight": out.max_in_flight,
        "requests_per_s": len(ok) / out.duration_s,
        "output_tokens_per_s": tokens / out.duration_s,
        "loadgen_cpu_share": cpu / wall, "mock_cpu_share": mock_cpu / wall,
        "us_per_request": cpu / max(1, len(out.requests)) * 1e6,
        "us_per_token": cpu / max(1, tokens) * 1e6,
        "mean_ttft_ms": (sum(r.ttft_s for r in ok) / len(ok) * 1e3) if ok else None,
        "mean_itl_ms": (sum(itl) / len(itl) * 1e3) if itl else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-paced", action="store_true", help="skip the paced rows")
    args = parser.parse_args()

    print(machine())
    print(f"aiohttp {aiohttp.__version__}, JSON parser {sse.PARSER}, "
          f"{args.duration:g} s per load point\n")
    rows: list[dict] = []
    mock = Mock()
    try:
        for tokens in OUTPUT_TOKENS:
            for concurrency in CONCURRENCY:
                rows.append(one_point(mock, concurrency, tokens, args.duration) | {"paced": ""})
    finally:
        mock.stop()
    if not args.no_paced:
        for concurrency, tokens, ttft_s, itl_s in PACED:
            mock = Mock(ttft_s, itl_s)
            try:
                rows.append(one_point(mock, concurrency, tokens, args.duration)
                            | {"paced": f"{ttft_s * 1e3:g}/{itl_s * 1e3:g} ms"})
            finally:
                mock.stop()

    print(table("closed loop against the mock (zero delays unless paced: TTFT/ITL)",
                ["concurrency", "out tok", "paced", "req/s", "out tok/s", "loadgen CPU",
                 "µs/req", "µs/tok", "mock CPU", "TTFT ms", "ITL ms", "failed"],
                [[r["concurrency"], r["output_tokens"], r["paced"], f"{r['requests_per_s']:.0f}",
                  f"{r['output_tokens_per_s']:.0f}", f"{r['loadgen_cpu_share']:.2f}",
                  f"{r['us_per_request']:.0f}", f"{r['us_per_token']:.1f}",
                  f"{r['mock_cpu_share']:.2f}", f"{r['mean_ttft_ms']:.2f}",
                  f"{r['mean_itl_ms']:.3f}", r["failed"]] for r in rows]))
    bad = [r for r in rows if r["failed"] or r["max_in_flight"] != r["concurrency"]]
    if bad:
        print(f"\n{len(bad)} load point(s) had failures or did not hold the concurrency")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
