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

`--vs-vllm` instead sets farm's client beside `vllm bench serve` against the
same zero-delay mock: the mock alone on one core (taskset), both clients on
another, taking turns (farm, then vllm bench, --rounds times), at one
concurrency and 2- and 64-token streams; each side's completed requests ÷ its
own sending span (vllm bench's `request_throughput`), and its CPU time per
request over the timed run (imports and start-up excluded), whose inverse is
what one core of that client sustains — the figure that survives a busy host:

    .venv/bin/python benchmarks/bench_loadgen.py --vs-vllm [--rounds 2] [--concurrency 32]
        [--mock-cpu 0 --client-cpu 1]
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

    def __init__(self, ttft_s: float = 0.0, itl_s: float = 0.0, cpus: str = ""):
        pin = ["taskset", "-c", cpus] if cpus else []
        self.proc = subprocess.Popen(
            [*pin, sys.executable, "-m", "workers.mock_openai", "--port", "0",
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


# ------------------------------------------------------------- beside vllm bench

VS_TOKENS = (2, 64)
VS_INPUT_TOKENS = 32
# `vllm bench serve` without vLLM's command-line entry point, whose imports load
# vLLM's native ops (built for AVX-512: SIGILL on CPUs without it); the benchmark
# client itself is pure Python and runs unchanged.
VLLM_BENCH = """\
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def farm_turn(url: str, concurrency: int, tokens: int, duration_s: float) -> dict:
    """farm's client, this process (pinned by the caller): completed ÷ sending span."""
    requests = [PromptRequest(prompt=list(range(i, i + VS_INPUT_TOKENS)),
                              input_tokens=VS_INPUT_TOKENS, max_tokens=tokens, ignore_eos=True)
                for i in range(256)]
    asyncio.run(run_load_point(url, "mock-model", requests, concurrency=concurrency,
                               duration_s=0.5))        # warm-up: imports, connections
    cpu0 = time.process_time()
    out = asyncio.run(run_load_point(url, "mock-model", requests, concurrency=concurrency,
                                     duration_s=duration_s))
    cpu = time.process_time() - cpu0
    ok = [r for r in out.requests if r.ok]
    first = min(r.sent_s for r in out.requests)
    last = max(r.sent_s + r.e2e_s for r in ok)
    return {"client": "farm", "requests": len(ok), "failed": len(out.requests) - len(ok),
            "requests_per_s": len(ok) / (last - first), "cpu_s": cpu,
            "us_per_request": cpu / max(1, len(ok)) * 1e6}


def vllm_turn(url: str, tokenizer: Path, concurrency: int, tokens: int, num_prompts: int,
              cpu: str, workdir: Path, seed: int) -> dict:
    """One `vllm bench serve` run on CPU `cpu`; its own request_throughput."""
    name = f"vllm-{tokens}-{seed}.json"
    argv = ["taskset", "-c", cpu, sys.executable, "-c", VLLM_BENCH,
            "--backend", "vllm", "--base-url", url, "--model", "mock-model",
            "--tokenizer", str(tokenizer), "--dataset-name", "random",
            "--random-input-len", str(VS_INPUT_TOKENS), "--random-output-len", str(tokens),
            "--random-range-ratio", "0", "--ignore-eos", "--num-prompts", str(num_prompts),
            "--max-concurrency", str(concurrency), "--seed", str(seed), "--disable-tqdm",
            "--save-result", "--result-dir", str(workdir), "--result-filename", name]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "no_proxy": "*", "NO_PROXY": "*", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # Its CPU time over the timed run alone (not its imports): read at the lines
    # that open and close it.
    marks: dict[str, float] = {}
    log: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line.rstrip())
        for mark in ("Starting main benchmark run", "============ Serving Benchmark Result"):
            if line.startswith(mark) and mark not in marks:
                marks[mark] = process_cpu_s(proc.pid)
    code = proc.wait(600)
    path = workdir / name
    if code != 0 or not path.exists() or len(marks) != 2:
        raise RuntimeError(f"vllm bench serve failed ({code}):\n" + "\n".join(log[-30:]))
    data = json.loads(path.read_text())
    cpu = marks["============ Serving Benchmark Result"] - marks["Starting main benchmark run"]
    return {"client": "vllm bench", "requests": data["completed"],
            "failed": data.get("failed", 0), "requests_per_s": data["request_throughput"],
            "cpu_s": cpu, "us_per_request": cpu / max(1, data["completed"]) * 1e6}


def vs_vllm(args) -> int:
    """farm's client and vllm bench, turn by turn, against one zero-delay mock."""
    import tempfile

    from workers.tinymodel import build_tokenizer

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tokenizer = workdir / "tok"
        build_tokenizer().save_pretrained(str(tokenizer))
        os.sched_setaffinity(0, {int(args.client_cpu)})
        mock = Mock(cpus=args.mock_cpu)
        try:
            for round_ in range(args.rounds):
                for tokens in VS_TOKENS:
                    farm = farm_turn(mock.url, args.concurrency, tokens, args.duration)
                    vllm = vllm_turn(mock.url, tokenizer, args.concurrency, tokens,
                                     farm["requests"], args.client_cpu, workdir, round_)
                    for row in (farm, vllm):
                        rows.append(row | {"round": round_ + 1, "output_tokens": tokens})
                    print(f"round {round_ + 1}, {tokens} tokens: farm "
                          f"{farm['requests_per_s']:.0f} req/s, {farm['us_per_request']:.0f} "
                          f"µs CPU/req; vllm bench {vllm['requests_per_s']:.0f} req/s, "
                          f"{vllm['us_per_request']:.0f} µs CPU/req; per core "
                          f"{vllm['us_per_request'] / farm['us_per_request']:.2f}×", flush=True)
        finally:
            mock.stop()
    print(table(f"farm vs vllm bench serve, concurrency {args.concurrency}, mock on CPU "
                f"{args.mock_cpu}, clients on CPU {args.client_cpu}",
                ["round", "out tok", "client", "requests", "req/s", "CPU µs/req",
                 "req/s per core (10⁶ ÷ µs)"],
                [[r["round"], r["output_tokens"], r["client"], r["requests"],
                  f"{r['requests_per_s']:.0f}", f"{r['us_per_request']:.0f}",
                  f"{1e6 / r['us_per_request']:.0f}"] for r in rows]))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 1 if any(r["failed"] for r in rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-paced", action="store_true", help="skip the paced rows")
    parser.add_argument("--vs-vllm", action="store_true",
                        help="farm's client beside vllm bench serve (see the module's doc)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mock-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args()
    if args.vs_vllm:
        return vs_vllm(args)

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
