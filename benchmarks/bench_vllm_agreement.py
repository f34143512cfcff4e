"""Do farm's load generator and `vllm bench serve` measure the same server alike?

One vLLM OpenAI server (the tiny random Llama, started as farm's vLLM server
engine starts it on the CPU device) serves the whole benchmark. Two loads, each
with 32-token prompts and exactly 64 output tokens (ignore_eos, greedy):

    closed   concurrency 8: farm `run_load_point(concurrency=8, duration_s=D)`,
             vllm bench `--max-concurrency 8` (infinite rate) with --num-prompts
             = the number farm sent in the same round
    open     Poisson arrivals at --rate req/s: farm `rate_rps=R, burstiness=1`,
             vllm bench `--request-rate R --burstiness 1.0`, --open-requests each

Three parts:

1. Alternating (the issue's test): farm, then vllm bench, on each load, round
   after round (A, B, A, B, A, B), so slow drift reaches both.
2. Side by side: farm and vllm bench at once, each with half the load
   (concurrency 4 + 4; Poisson R/2 + R/2), judged over the window where both
   were sending, on one clock (perf_counter is CLOCK_MONOTONIC in both
   processes). Both see the very same server moments, so what differs is the
   clients. Done with vllm bench as shipped and with `vllm -env`: its aiohttp
   session made with trust_env=False. As shipped (serve.py:
   `aiohttp.ClientSession(..., trust_env=True)`), aiohttp 3.14 looks up
   ~/.netrc and the proxy variables for every request in a worker thread
   (client.py: `run_in_executor(None, self._get_netrc_auth, …)`,
   `asyncio.to_thread(get_env_proxy_for_url, …)`) after vllm bench started the
   request's TTFT clock and before the request leaves.
3. Mock: the same clients against workers.mock_openai, whose every token is due
   at arrival + TTFT + k·ITL: a server with known true figures.

--api chat runs it all on /v1/chat/completions (vllm bench: --backend
openai-chat), a 32-token text in one user message for both clients.

Every run gets prompts of its own (farm: a fresh index range of its synthetic
workload; vllm bench: its own --seed).

Farm's figures are computed from its request records with vllm bench's
definitions (vllm/benchmarks/serve.py `calculate_metrics`): request throughput
= completed ÷ (last completion − first send), output token throughput
likewise, mean TTFT, mean TPOT = mean over requests of (E2E − TTFT) ÷ (output
tokens − 1), mean ITL = mean of all gaps. vllm bench's are read from its
`--save-result --save-detailed` JSON (and recomputed from its per-request
arrays with the same code as farm's: kept in the raw JSON as a check). The
server's own mean TTFT over each run (Prometheus `vllm:time_to_first_token_
seconds`, from the request's arrival in the API server to its first token) is
a client-independent view of how fast the server was during that run.

Open loop: vllm bench rescales its N gamma gaps so that the N-th arrival lands
exactly at N/R (serve.py `get_request`); farm's `arrival_schedule` does not, so
the span of N farm arrivals varies by ±1/√N (±6% at 240), which alone moves
the throughput by as much. Per round the benchmark therefore takes the first
farm seed whose N-th arrival lies within 0.5% of (N−1)/R, and the duration
that sends exactly N. The arrival law is farm's own.

Both clients run on the server's machine. Unpinned, on a 2-core VM their CPU
competes with the server's, which keeps ~1.8 cores busy: every thread hop of a
client then waits behind the server, and the server's speed drifts between
runs. So by default the server (and the mock) runs on all CPUs but the last
(`taskset`, and vLLM's OpenMP threads bound there by VLLM_CPU_OMP_THREADS_BIND)
and both clients on the last one (--server-cpus, --client-cpus; --no-pin to
share them all), as a load generator runs on a host of its own or on cores the
server leaves free. Reported per run: the client's
CPU (vllm bench: between its "Starting main benchmark run" and result lines)
and the rest of the machine's ("other": neither server nor client). Before
each run pair the benchmark waits (up to --quiet-wait-s) for other processes
to leave the machine alone, and repeats a pair during which they used more
than 5% of it (at most --max-repeats times; the discarded attempts stay in the
JSON).

    .venv/bin/python benchmarks/bench_vllm_agreement.py [--model DIR] [--rounds 3]
        [--closed-seconds 12] [--rate 20] [--open-requests 240] [--side-rounds 2]
        [--server-cpus 0 --client-cpus 1 | --no-pin] [--api completions|chat]
        [--json docs/data/vllm-agreement.json]

PASS/FAIL (mean TTFT, req/s, output tok/s within 10%) is printed for each
comparison; the exit status is 0 when the alternating comparison and the
side-by-side one with vllm bench's trust_env off pass. docs/loadgen.md has
results and their reading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from _common import ROOT, machine, table

from farm_contract.rules import percentile
from farm_contract.runspec import Decoding, RunWorkload
from workers import sse
from workers.engines.launch import engine_env
from workers.engines.process import EngineProcess, free_loopback_port, wait_until
from workers.engines.vllm_server import CLIENT, HEALTH_TIMEOUT_S
from workers.loadgen import ENDPOINTS, Api, ClientOptions, arrival_schedule, run_load_point
from workers.workload import Workload

SERVED = "tiny"
INPUT_TOKENS = 32
OUTPUT_TOKENS = 64
CONCURRENCY = 8
KV_CACHE_BYTES = 268_435_456
MAX_NUM_SEQS = 32
TOLERANCE = 0.10            # the issue's bound on mean TTFT and throughput
SPAN_TOLERANCE = 0.005      # open loop: farm's N-th arrival vs (N−1)/R
WARMUP_S = 5.0
# A run during which other processes (not the server, not the client) used more
# than this share of the machine is repeated (the machine may be shared).
OTHER_CPU_LIMIT = 0.05
MOCK_TTFT_S = 0.020         # the mock's delays: about the vLLM server's here
MOCK_ITL_S = 0.0025
START_DEADLINE_S = 300.0
CLIENT_TIMEOUT_S = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_JSON = ROOT / "docs" / "data" / "vllm-agreement.json"
FARM, VLLM, VLLM_NO_ENV = "farm", "vllm", "vllm -env"
REPORTED = ("request_throughput", "output_throughput", "mean_ttft_ms", "median_ttft_ms",
            "mean_tpot_ms", "mean_itl_ms")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# `python -m vllm.entrypoints.cli.main` asks importlib.metadata for the version of
# the distribution "vllm"; the CPU build is the distribution "vllm-cpu", so the
# module dies before parsing its arguments. This runs it with that one lookup
# answered by vllm-cpu's version, and nothing else changed.
VLLM_CLI = """\
import importlib.metadata as md, runpy, sys
_version = md.version
def version(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu")
        raise
md.version = version
sys.argv = ["vllm", *sys.argv[1:]]
runpy.run_module("vllm.entrypoints.cli.main", run_name="__main__", alter_sys=True)
"""
# The `vllm -env` client: every aiohttp session of vllm bench without trust_env.
NO_TRUST_ENV = """\
import aiohttp
_init = aiohttp.ClientSession.__init__
def __init__(self, *args, **kwargs):
    kwargs["trust_env"] = False
    _init(self, *args, **kwargs)
aiohttp.ClientSession.__init__ = __init__
"""
BENCH_STARTS = "Starting main benchmark run"
BENCH_RESULT = "============ Serving Benchmark Result"


# ------------------------------------------------------------------ the server


def vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    raise SystemExit("vLLM is not installed in this environment (see ../shared/VLLM_CPU.md)")


def server_env(cpus: str = "") -> dict[str, str]:
    """farm's engine environment on the CPU device (VLLM_HOST_IP, no CUDA device, the
    engine core in-process where vLLM allows it), offline; `cpus`: vLLM's OpenMP
    threads bound to these CPUs (otherwise vLLM picks them itself)."""
    cpu = SimpleNamespace(info=SimpleNamespace(backend="cpu"))
    env = engine_env([cpu], in_process_engine=True)  # type: ignore[list-item]
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if cpus:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    return env


def pinned(argv: list[str], cpus: str) -> list[str]:
    """argv run on these CPUs only (taskset), or as it is when `cpus` is empty."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def default_pinning() -> tuple[str, str]:
    """(server CPUs, client CPUs): the last CPU this process may use for the clients,
    the others for the server; nothing pinned on a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "", ""
    return ",".join(map(str, cpus[:-1])), str(cpus[-1])


def parse_cpus(text: str) -> set[int]:
    """A taskset CPU list ("0", "0,2", "0-3") as a set."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def server_argv(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", SERVED, "--enforce-eager",
            "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--dtype", "float32",
            "--max-num-seqs", str(MAX_NUM_SEQS), "--disable-uvicorn-access-log"]


def healthy(url: str) -> bool:
    try:
        with _NO_PROXY.open(url + "/health", timeout=HEALTH_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


_METRIC = re.compile(r"^vllm:(time_to_first_token_seconds|e2e_request_latency_seconds)"
                     r"_(sum|count)\{[^}]*\} (\S+)$", re.M)


def server_metrics(url: str) -> dict[str, float]:
    """The server's TTFT and E2E histograms' sums and counts (Prometheus /metrics)."""
    with _NO_PROXY.open(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for name, kind, value in _METRIC.findall(text):
        out[f"{name}_{kind}"] = out.get(f"{name}_{kind}", 0.0) + float(value)
    return out


def server_mean_ms(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return total / count * 1e3 if count else None


def cpu_s(pids: set[int]) -> float:
    """utime + stime of these processes (those gone meanwhile count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_cpu_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far (/proc/stat). Busy is
    user + nice + system time: interrupts are left out, they are mostly this
    benchmark's own loopback traffic, which no process is charged for."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields[:8]
    return (user + nice + system) / CLK_TCK, steal / CLK_TCK


def others_busy(server_pids: set[int], seconds: float = 1.0) -> float:
    """Cores used by other processes (not the server, not this one) over `seconds`."""
    busy0, srv0, me0 = machine_cpu_s()[0], cpu_s(server_pids), time.process_time()
    time.sleep(seconds)
    busy1, srv1, me1 = machine_cpu_s()[0], cpu_s(server_pids), time.process_time()
    return (busy1 - busy0 - (srv1 - srv0) - (me1 - me0)) / seconds


def wait_quiet(server_pids: set[int], max_wait_s: float) -> float:
    """Wait (up to max_wait_s) until other processes leave the machine alone; the
    seconds waited."""
    t0 = time.perf_counter()
    while (others_busy(server_pids) > OTHER_CPU_LIMIT
           and time.perf_counter() - t0 < max_wait_s):
        pass
    return time.perf_counter() - t0


@dataclass
class Sample:
    """CPU counters at one moment: the client's, the server's, the machine's."""

    wall: float
    client: float
    server: float
    busy: float
    steal: float

    @classmethod
    def take(cls, client: float, server_pids: set[int]) -> Sample:
        busy, steal = machine_cpu_s()
        return cls(time.perf_counter(), client, cpu_s(server_pids), busy, steal)


def cpu_shares(a: Sample, b: Sample, requests: int) -> dict[str, float]:
    wall = b.wall - a.wall
    client, server = b.client - a.client, b.server - a.server
    return {"wall_s": wall, "client_cpu_s": client, "client_cpu_share": client / wall,
            "client_cpu_ms_per_request": client / max(1, requests) * 1e3,
            "server_cpu_share": server / wall,
            "other_cpu_share": (b.busy - a.busy - client - server) / wall,
            "steal_share": (b.steal - a.steal) / wall}


# ------------------------------------------------------------------ figures


@dataclass
class Req:
    """One completed request, as either client saw it (seconds)."""

    sent: float
    ttft: float
    e2e: float
    itl: list[float]
    output: int
    input: int | None


def figures(reqs: list[Req], failed: int) -> dict:
    """vllm bench's definitions (serve.py calculate_metrics), throughput over the span
    from the first send to the last completion."""
    if not reqs:
        raise RuntimeError(f"no request completed ({failed} failed)")
    first = min(r.sent for r in reqs)
    span = max(r.sent + r.e2e for r in reqs) - first
    ttfts = sorted(r.ttft for r in reqs)
    tpots = [(r.e2e - r.ttft) / (r.output - 1) for r in reqs if r.output > 1]
    gaps = [g for r in reqs for g in r.itl]
    tokens = sum(r.output for r in reqs)
    inputs = [r.input for r in reqs if r.input is not None]
    return {
        "completed": len(reqs), "failed": failed, "span_s": span,
        "request_throughput": len(reqs) / span, "output_throughput": tokens / span,
        "mean_ttft_ms": statistics.fmean(ttfts) * 1e3,
        "median_ttft_ms": percentile(ttfts, 50) * 1e3,
        "p99_ttft_ms": percentile(ttfts, 99) * 1e3,
        "mean_tpot_ms": statistics.fmean(tpots) * 1e3 if tpots else None,
        "mean_itl_ms": statistics.fmean(gaps) * 1e3 if gaps else None,
        "itl_gaps_per_request": len(gaps) / len(reqs),
        "mean_e2el_ms": statistics.fmean(r.e2e for r in reqs) * 1e3,
        "mean_input_tokens": statistics.fmean(inputs) if inputs else None,
        "input_tokens_seen": sorted(set(inputs)),
        "mean_output_tokens": tokens / len(reqs),
    }


def windowed(reqs: list[Req], lo: float, hi: float) -> dict:
    """Side by side: latencies of the requests sent inside [lo, hi], throughput of
    the completions inside it (both clients on the same clock)."""
    sent = [r for r in reqs if lo <= r.sent <= hi]
    done = [r for r in reqs if lo <= r.sent + r.e2e <= hi]
    result = figures(sent, 0)
    result.update(completed=len(sent), completed_in_window=len(done),
                  request_throughput=len(done) / (hi - lo),
                  output_throughput=sum(r.output for r in done) / (hi - lo))
    return result


# ------------------------------------------------------------------ the clients


class Bench:
    def __init__(self, model: Path, url: str, server, workdir: Path,
                 options: ClientOptions, metrics: bool = True, api: Api = "completions"):
        self.model = model
        self.url = url
        self.server = server            # EngineProcess or Mock: pids(), running()
        self.metrics = metrics          # the server has vLLM's /metrics
        self.server_pids = server.pids()
        self.workdir = workdir
        self.options = options
        self.api: Api = api
        self.last_farm: list[Req] = []
        self.last_vllm: list[Req] = []
        self.block = 0
        self.workload = Workload.from_dir(
            RunWorkload(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS,
                        decoding=Decoding(), dataset="synthetic", seed=0), model,
            # chat: INPUT_TOKENS of text, the template on top (as vllm bench's prompts)
            api=api, count_template=api == "completions")

    def prompts(self, n: int):
        """n farm prompts no other run sends (a fresh range of request indices)."""
        self.block += 1
        return self.workload.prompts(n, start=self.block * 1_000_000)

    def farm(self, prompts, scrape: bool = True, **load) -> dict:
        """One farm load point; `scrape`: the server's own TTFT over it (/metrics)."""
        scrape = scrape and self.metrics
        m0 = server_metrics(self.url) if scrape else {}
        s0 = Sample.take(time.process_time(), self.server_pids)
        out = asyncio.run(run_load_point(self.url, SERVED, prompts, options=self.options,
                                         api=self.api,
                                         **load))
        s1 = Sample.take(time.process_time(), self.server_pids)
        m1 = server_metrics(self.url) if scrape else {}
        self._check_server()
        ok = [r for r in out.requests if r.ok]
        reqs = [Req(r.sent_s, r.ttft_s, r.e2e_s, list(r.itl_s), r.output_tokens or 0,
                    r.input_tokens) for r in ok]
        self.last_farm = reqs
        result = figures(reqs, len(out.requests) - len(ok))
        result.update(
            cpu_shares(s0, s1, len(out.requests)),
            server_mean_ttft_ms=server_mean_ms(m0, m1, "time_to_first_token_seconds"),
            server_mean_e2el_ms=server_mean_ms(m0, m1, "e2e_request_latency_seconds"),
            sending_s=out.sending_s, max_in_flight=out.max_in_flight,
            lateness_p99_ms=out.lateness.p99_ms, notes=list(out.notes),
            distinct_prompts=len(prompts),
            reported={k: result[k] for k in REPORTED})
        if len(prompts) <= len(out.requests):
            result["notes"].append(f"prompts were cycled: {len(out.requests)} requests, "
                                   f"{len(prompts)} prompts")
        return result

    def _vllm_argv(self, name: str, num_prompts: int, seed: int, load_args: list[str],
                   trust_env: bool) -> tuple[list[str], list[str]]:
        cli = VLLM_CLI if trust_env else NO_TRUST_ENV + VLLM_CLI
        backend = (["--backend", "vllm"] if self.api == "completions" else
                   ["--backend", "openai-chat", "--endpoint", ENDPOINTS["chat"]])
        args = ["bench", "serve", *backend,
                "--base-url", self.url, "--model", SERVED, "--tokenizer", str(self.model),
                "--dataset-name", "random", "--random-input-len", str(INPUT_TOKENS),
                "--random-output-len", str(OUTPUT_TOKENS), "--random-range-ratio", "0",
                "--num-prompts", str(num_prompts), "--ignore-eos", "--temperature", "0",
                "--seed", str(seed), "--disable-tqdm", "--save-result", "--save-detailed",
                "--result-dir", str(self.workdir), "--result-filename", f"{name}.json",
                *load_args]
        return [sys.executable, "-c", cli, *args], args

    def vllm(self, name: str, num_prompts: int, seed: int, load_args: list[str],
             trust_env: bool = True, alongside=None) -> dict:
        """One `vllm bench serve` run; `alongside()` (farm's side) runs in this process
        from the moment vllm bench starts its timed run, and its result is returned too."""
        argv, args = self._vllm_argv(name, num_prompts, seed, load_args, trust_env)
        m0 = server_metrics(self.url) if self.metrics else {}
        proc = subprocess.Popen(argv, cwd=self.workdir, env=server_env() | {
            "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        killer = threading.Timer(CLIENT_TIMEOUT_S, proc.kill)
        killer.start()
        marks: dict[str, Sample] = {}
        log: list[str] = []
        started = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.append(line.rstrip())
                for mark in (BENCH_STARTS, BENCH_RESULT):
                    if line.startswith(mark) and mark not in marks:
                        marks[mark] = Sample.take(cpu_s({proc.pid}), self.server_pids)
                        started.set()
            started.set()

        reader = threading.Thread(target=read, name="vllm-bench-output", daemon=True)
        reader.start()
        beside = None
        try:
            if alongside is not None:
                started.wait(CLIENT_TIMEOUT_S)
                if BENCH_STARTS in marks:
                    beside = alongside()
            code = proc.wait()
            reader.join()
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        m1 = server_metrics(self.url) if self.metrics else {}
        self._check_server()
        path = self.workdir / f"{name}.json"
        if code != 0 or not path.exists() or len(marks) != 2:
            tail = "\n".join(log[-30:])
            raise RuntimeError(f"vllm bench serve failed (exit {code}):\n{tail}")
        data = json.loads(path.read_text())
        reqs, failed = [], 0
        for i, error in enumerate(data["errors"]):
            if error:
                failed += 1
                continue
            reqs.append(Req(data["start_times"][i], data["ttfts"][i], data["latencies"][i],
                            data["itls"][i], data["output_lens"][i], data["input_lens"][i]))
        self.last_vllm = reqs
        # the same code as farm's, over vllm bench's own per-request arrays
        result = figures(reqs, failed)
        result.update(
            cpu_shares(marks[BENCH_STARTS], marks[BENCH_RESULT], num_prompts),
            # (counts vllm bench's one untimed test request too)
            server_mean_ttft_ms=server_mean_ms(m0, m1, "time_to_first_token_seconds"),
            server_mean_e2el_ms=server_mean_ms(m0, m1, "e2e_request_latency_seconds"),
            duration_s=data["duration"], seed=seed, trust_env=trust_env,
            reported={k: data[k] for k in REPORTED},
            summary={k: v for k, v in data.items() if not isinstance(v, list)},
            argv=["vllm", *args])
        if alongside is not None:
            result["alongside"] = beside
        return result

    def side_by_side(self, name: str, prompts, farm_load: dict, num_prompts: int, seed: int,
                     vllm_args: list[str], trust_env: bool) -> dict:
        """farm and vllm bench at once, each with half the load, on the same clock;
        both judged over the window where both were sending."""
        def farm_side():
            # (the server's TTFT comes from vllm's side: one figure for both clients)
            out = self.farm(prompts, scrape=False, clock=time.perf_counter, **farm_load)
            return out, self.last_farm

        vllm_run = self.vllm(name, num_prompts, seed, vllm_args, trust_env,
                             alongside=farm_side)
        if vllm_run["alongside"] is None:
            raise RuntimeError("vllm bench never started its timed run")
        farm_run, farm_reqs = vllm_run.pop("alongside")
        vllm_reqs = self.last_vllm
        lo = max(min(r.sent for r in farm_reqs), min(r.sent for r in vllm_reqs)) + 1.0
        hi = min(max(r.sent for r in farm_reqs), max(r.sent for r in vllm_reqs))
        for run, reqs in ((farm_run, farm_reqs), (vllm_run, vllm_reqs)):
            run["whole_run"] = run.pop("reported")
            run["reported"] = {k: v for k, v in windowed(reqs, lo, hi).items()
                               if k in (*REPORTED, "completed", "completed_in_window")}
        other = vllm_run["other_cpu_share"] - farm_run["client_cpu_s"] / vllm_run["wall_s"]
        return {"window_s": hi - lo, "farm": farm_run, "vllm": vllm_run,
                "other_cpu_share": other,
                "farm_first_send_after_vllm_s": (min(r.sent for r in farm_reqs)
                                                 - min(r.sent for r in vllm_reqs))}

    def _check_server(self) -> None:
        if not self.server.running():
            raise RuntimeError(f"the server exited during the benchmark: {self.server}")


class Mock:
    """farm's mock OpenAI server (workers.mock_openai) as its own process: every
    token is due at arrival + TTFT + k·ITL, so both clients' figures have a known
    true value."""

    def __init__(self, ttft_s: float, itl_s: float, cpus: str = ""):
        self.proc = subprocess.Popen(
            pinned([sys.executable, "-m", "workers.mock_openai", "--port", "0", "--ttft-s",
                    str(ttft_s), "--itl-s", str(itl_s), "--model", SERVED], cpus),
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("mock_openai listening on "):
            self.proc.kill()
            raise RuntimeError(f"the mock did not start: {line!r}")
        self.url = line.split()[-1]

    def pids(self) -> set[int]:
        return {self.proc.pid}

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def open_loop_seed(rate: float, n: int, first_seed: int) -> tuple[int, float]:
    """A farm seed whose N-th arrival lies within SPAN_TOLERANCE of (N−1)/R, and the
    duration that sends exactly N (halfway between the N-th and the (N+1)-th)."""
    target = (n - 1) / rate
    for seed in range(first_seed, first_seed + 100_000):
        times = arrival_schedule(rate, 1.0, 2.0 * n / rate + 10.0, seed)
        if len(times) > n and abs(times[n - 1] / target - 1.0) <= SPAN_TOLERANCE:
            return seed, (times[n - 1] + times[n]) / 2.0
    raise RuntimeError("no farm seed matched the open-loop span")


# ------------------------------------------------------------------ report

# (key in the run's figures, column); "reported" keys are each client's own figures
COLUMNS = (("mean_ttft_ms", "TTFT ms"), ("median_ttft_ms", "p50 TTFT"),
           ("server_mean_ttft_ms", "server TTFT"), ("mean_tpot_ms", "TPOT ms"),
           ("mean_itl_ms", "ITL ms"), ("request_throughput", "req/s"),
           ("output_throughput", "out tok/s"), ("client_cpu_share", "client CPU"),
           ("other_cpu_share", "other CPU"))
CHECKED = (("mean_ttft_ms", "mean TTFT"), ("request_throughput", "req/s"),
           ("output_throughput", "output tok/s"))
NO_DELTA = {"client_cpu_share", "other_cpu_share"}


def value(figs: dict, key: str) -> float | None:
    return figs["reported"][key] if key in figs["reported"] else figs.get(key)


def rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else (a - b) / b


def pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:+.1f}%"


def fmt(key: str, v: float | None) -> str:
    if v is None:
        return "–"
    if key in NO_DELTA:
        return f"{v:.2f}"
    return f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def verdict_of(farm: dict, other: dict, judged=tuple(k for k, _ in CHECKED)) -> dict:
    """Relative differences; PASS/FAIL on the `judged` figures (None: not judged)."""
    out = {key: {"farm": farm[key], "vllm": other[key], "rel_diff": rel(farm[key], other[key])}
           for key, _ in COLUMNS if key in farm and key in other}
    for key, _ in CHECKED:
        out[key]["pass"] = (abs(out[key]["rel_diff"]) <= TOLERANCE if key in judged
                            else None)
    return out


def checks(verdict: dict) -> str:
    def word(ok: bool | None) -> str:
        return {True: "PASS", False: "FAIL", None: "(not judged)"}[ok]
    return ", ".join(f"{label} {pct(verdict[k]['rel_diff'])} {word(verdict[k]['pass'])}"
                     for k, label in CHECKED)


def alternation_report(title: str, runs: list[dict]) -> tuple[str, dict]:
    """Per round and the mean of rounds, farm against vllm bench."""
    rounds = sorted({r["round"] for r in runs})
    mean: dict[str, dict] = {}
    for client in (FARM, VLLM):
        mine = [r["figures"] for r in runs if r["client"] == client]
        mean[client] = {"requests": statistics.fmean(f["completed"] for f in mine)}
        for key, _ in COLUMNS:
            values = [value(f, key) for f in mine]
            mean[client][key] = statistics.fmean(values) if None not in values else None
    rows = []
    for rnd in [*rounds, "mean"] if len(rounds) > 1 else rounds:
        got = {}
        for client in (FARM, VLLM):
            if rnd == "mean":
                got[client], requests = mean[client], f"{mean[client]['requests']:.0f}"
            else:
                figs = next(r["figures"] for r in runs
                            if r["round"] == rnd and r["client"] == client)
                got[client] = {key: value(figs, key) for key, _ in COLUMNS}
                requests = str(figs["completed"])
            rows.append([rnd, client, requests, *(fmt(k, got[client][k]) for k, _ in COLUMNS)])
        rows.append(["", "Δ farm", "", *("" if k in NO_DELTA else pct(rel(got[FARM][k],
                                                                          got[VLLM][k]))
                                         for k, _ in COLUMNS)])
    verdict = verdict_of(mean[FARM], mean[VLLM])
    text = table(title, ["round", "client", "requests", *(h for _, h in COLUMNS)], rows)
    return f"{text}\n  mean of rounds, farm vs vllm (±{TOLERANCE:.0%}): {checks(verdict)}", verdict


def side_report(title: str, pairs: list[dict]) -> tuple[str, dict]:
    """Side by side: per load and vllm client, each round's two clients over their
    common window, and the mean of rounds."""
    columns = [c for c in COLUMNS if c[0] != "other_cpu_share"]
    rows, verdicts = [], {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for pair in pairs:
        groups.setdefault((pair["load"], pair["client"]), []).append(pair)
    for (load, client), mine in groups.items():
        per_round = [{FARM: {k: value(p["farm"], k) for k, _ in columns},
                      client: {k: value(p["vllm"], k) for k, _ in columns},
                      "requests": (p["farm"]["reported"]["completed"],
                                   p["vllm"]["reported"]["completed"])} for p in mine]
        mean = {c: {k: (statistics.fmean(r[c][k] for r in per_round)
                        if all(r[c][k] is not None for r in per_round) else None)
                    for k, _ in columns} for c in (FARM, client)}
        mean["requests"] = tuple(statistics.fmean(r["requests"][i] for r in per_round)
                                 for i in (0, 1))
        shown = [*((str(i + 1), r) for i, r in enumerate(per_round))]
        for rnd, got in shown + ([("mean", mean)] if len(per_round) > 1 else []):
            for i, c in enumerate((FARM, client)):
                rows.append([load, rnd, c, f"{got['requests'][i]:.0f}",
                             *(fmt(k, got[c][k]) for k, _ in columns)])
            rows.append(["", "", "Δ farm", "",
                         *("" if k in NO_DELTA or k == "server_mean_ttft_ms"
                           else pct(rel(got[FARM][k], got[client][k])) for k, _ in columns)])
        # An open loop below saturation completes what arrives: side by side each
        # client's throughput is its own random arrivals' rate over a short window
        # (±1/√n), not a measurement of the server; the alternating runs compare it.
        judged = ("mean_ttft_ms",) if load == "open" else tuple(k for k, _ in CHECKED)
        verdicts[f"{load} / {client}"] = verdict_of(mean[FARM], mean[client], judged)
    text = table(title, ["load", "round", "client", "requests", *(h for _, h in columns)],
                 rows)
    lines = [f"  {name}, mean of rounds: {checks(v)}" for name, v in verdicts.items()]
    return text + "\n" + "\n".join(lines), verdicts


def mock_report(title: str, runs: list[dict]) -> str:
    columns = [c for c in COLUMNS if c[0] not in ("server_mean_ttft_ms", "other_cpu_share")]
    got = {r["client"]: {k: value(r["figures"], k) for k, _ in columns} for r in runs}
    rows = []
    for run in runs:
        client = run["client"]
        rows.append([client, run["figures"]["completed"],
                     *(fmt(k, got[client][k]) for k, _ in columns)])
        if client != FARM:
            rows.append(["Δ farm", "", *("" if k in NO_DELTA else
                                         pct(rel(got[FARM][k], got[client][k]))
                                         for k, _ in columns)])
    return table(title, ["client", "requests", *(h for _, h in columns)], rows)


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="the tiny model's directory "
                        "(default: built in a temporary directory)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--closed-seconds", type=float, default=12.0,
                        help="closed loop: farm's duration_s (vllm bench: as many prompts "
                             "as farm sent)")
    parser.add_argument("--rate", type=float, default=20.0, help="open loop: req/s")
    parser.add_argument("--open-requests", type=int, default=240,
                        help="open loop: requests per run")
    parser.add_argument("--no-side-by-side", action="store_true",
                        help="skip the side-by-side runs")
    parser.add_argument("--side-rounds", type=int, default=2,
                        help="rounds of side-by-side runs")
    parser.add_argument("--no-mock", action="store_true", help="skip the mock-server runs")
    parser.add_argument("--mock-seconds", type=float, default=6.0)
    parser.add_argument("--max-repeats", type=int, default=2,
                        help=f"repeat a run pair disturbed by other processes (other CPU > "
                             f"{OTHER_CPU_LIMIT}) at most this often")
    parser.add_argument("--repeat-until-s", type=float, default=420.0,
                        help="no repeats (and no waiting) after this many seconds")
    parser.add_argument("--quiet-wait-s", type=float, default=60.0,
                        help="before each run pair, wait at most this long for other "
                             "processes to leave the machine alone")
    parser.add_argument("--api", choices=("completions", "chat"), default="completions",
                        help="the endpoint both clients use (vllm bench: --backend vllm, "
                             "or openai-chat)")
    parser.add_argument("--json", type=Path, help=f"raw results (default "
                        f"{DEFAULT_JSON.relative_to(ROOT)}, -chat for the chat API)")
    auto_server, auto_client = default_pinning()
    parser.add_argument("--server-cpus", default=auto_server,
                        help=f"CPUs of the server (taskset list; default {auto_server or 'none'})")
    parser.add_argument("--client-cpus", default=auto_client,
                        help=f"CPUs of both clients (default {auto_client or 'none'})")
    parser.add_argument("--no-pin", action="store_true",
                        help="server and clients share all CPUs")
    args = parser.parse_args()
    if args.json is None:
        args.json = DEFAULT_JSON if args.api == "completions" else DEFAULT_JSON.with_name(
            f"{DEFAULT_JSON.stem}-chat.json")
    server_cpus, client_cpus = ("", "") if args.no_pin else (args.server_cpus,
                                                             args.client_cpus)
    if client_cpus:
        # vllm bench, started from here, inherits it
        os.sched_setaffinity(0, parse_cpus(client_cpus))

    version = vllm_version()
    t_start = time.perf_counter()
    print(machine())
    print(f"{version}; farm loadgen (aiohttp, JSON parser {sse.PARSER}, "
          f"continuous_usage={CLIENT.continuous_usage}); {args.rounds} rounds; "
          f"{args.api} API ({ENDPOINTS[args.api]})")
    print(f"CPUs: server {server_cpus or 'any'}, clients {client_cpus or 'any'}\n")
    closed_args = ["--max-concurrency", str(CONCURRENCY)]
    rate_args = ["--request-rate", f"{args.rate:g}", "--burstiness", "1.0"]
    half = CONCURRENCY // 2
    open_s = args.open_requests / args.rate

    rounds = args.rounds
    runs: list[dict] = []
    pairs: list[dict] = []
    discarded: list[dict] = []
    waits: list[dict] = []
    mock_runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="farm-vllm-agree-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if model is None:
            from workers.tinymodel import build_tiny_llama
            model = build_tiny_llama(workdir / "tiny")
        model = model.resolve()
        port = free_loopback_port()
        url = f"http://127.0.0.1:{port}"
        server = EngineProcess(pinned(server_argv(model, port), server_cpus),
                               env=server_env(server_cpus), name="vLLM server",
                               log_dir=workdir)
        server.start()
        try:
            t0 = time.perf_counter()
            # farm's prompts for the first attempts are built while the server starts
            # (~5 ms each, CPU only); repeats build theirs when they need them
            bench = Bench(model, url, server, workdir, CLIENT, api=args.api)
            closed_n = int(args.closed_seconds * 75) + 64       # above what farm sends
            ready = {(rnd, "closed"): bench.prompts(closed_n) for rnd in range(1, rounds + 1)}
            ready |= {(rnd, "open"): bench.prompts(args.open_requests + 8)
                      for rnd in range(1, rounds + 1)}
            ready |= {("side", rnd, i): bench.prompts(closed_n)
                      for rnd in range(1, args.side_rounds + 1) for i in range(4)}
            warm = bench.prompts(int(WARMUP_S * 100))
            wait_until(lambda: healthy(url), deadline_s=START_DEADLINE_S, process=server,
                       abort=threading.Event(), what="healthy")
            bench.server_pids = server.pids()
            print(f"server healthy {time.perf_counter() - t0:.0f} s after its start "
                  f"({len(bench.server_pids)} processes); prompts ready")

            wait_quiet(bench.server_pids, args.quiet_wait_s)
            warmup = bench.farm(warm, concurrency=CONCURRENCY, duration_s=WARMUP_S)
            print(f"warm-up (untimed): {warmup['completed']} requests at concurrency "
                  f"{CONCURRENCY}, {warmup['request_throughput']:.1f} req/s\n")

            def prompts_for(key, n: int, attempt: int):
                return ready[key] if attempt == 0 else bench.prompts(n)

            def repeated(label: str, group, others) -> tuple:
                """Run `group(attempt)` again while other processes disturbed it; keep
                the least disturbed attempt."""
                tried: list[tuple[float, int, object]] = []
                for attempt in range(args.max_repeats + 1):
                    late = time.perf_counter() - t_start > args.repeat_until_s
                    waited = wait_quiet(bench.server_pids, 0.0 if late else args.quiet_wait_s)
                    if waited > 1.5:
                        print(f"  {label}: waited {waited:.0f} s for other processes to "
                              "leave the machine alone", flush=True)
                    waits.append({"what": label, "attempt": attempt, "waited_s": waited})
                    result = group(attempt)
                    other = max(others(result))
                    tried.append((other, attempt, result))
                    late = time.perf_counter() - t_start > args.repeat_until_s
                    if other <= OTHER_CPU_LIMIT or late:
                        break
                    if attempt < args.max_repeats:
                        print(f"  {label}: other processes used {other:.2f} of the machine, "
                              "repeated", flush=True)
                other, best, result = min(tried, key=lambda t: t[0])
                for o, attempt, r in tried:
                    if attempt != best:
                        discarded.append({"what": label, "attempt": attempt,
                                          "other_cpu_share": o, "result": r})
                if other > OTHER_CPU_LIMIT:
                    print(f"  {label}: kept attempt {best + 1}, still disturbed "
                          f"(other processes {other:.2f})", flush=True)
                return result, other

            def closed_pair(rnd: int):
                def group(attempt: int) -> list[dict]:
                    farm_run = bench.farm(prompts_for((rnd, "closed"), closed_n, attempt),
                                          concurrency=CONCURRENCY,
                                          duration_s=args.closed_seconds)
                    n = farm_run["completed"] + farm_run["failed"]
                    vllm_run = bench.vllm(f"closed-{rnd}-{attempt}", n,
                                          100 + 10 * rnd + attempt, closed_args)
                    return [{"load": "closed", "round": rnd, "client": FARM,
                             "figures": farm_run, "args": {"concurrency": CONCURRENCY,
                                                           "duration_s": args.closed_seconds}},
                            {"load": "closed", "round": rnd, "client": VLLM,
                             "figures": vllm_run}]
                return group

            def open_pair(rnd: int):
                def group(attempt: int) -> list[dict]:
                    # exactly N each, the spans of the arrivals matched
                    seed, duration = open_loop_seed(args.rate, args.open_requests,
                                                    1000 * (10 * rnd + attempt))
                    farm_run = bench.farm(
                        prompts_for((rnd, "open"), args.open_requests + 8, attempt),
                        rate_rps=args.rate, burstiness=1.0, seed=seed, duration_s=duration)
                    vllm_run = bench.vllm(f"open-{rnd}-{attempt}", args.open_requests,
                                          200 + 10 * rnd + attempt, rate_args)
                    return [{"load": "open", "round": rnd, "client": FARM, "figures": farm_run,
                             "args": {"rate_rps": args.rate, "burstiness": 1.0, "seed": seed,
                                      "duration_s": duration}},
                            {"load": "open", "round": rnd, "client": VLLM,
                             "figures": vllm_run}]
                return group

            def others(pair: list[dict]) -> list[float]:
                return [r["figures"]["other_cpu_share"] for r in pair]

            def show(run: dict) -> None:
                f = run["figures"]
                print(f"round {run['round']} {run['load']:6} {run['client']:4} "
                      f"{f['completed']:5} req  {f['reported']['request_throughput']:6.2f} req/s"
                      f"  TTFT {f['reported']['mean_ttft_ms']:6.2f} ms (server "
                      f"{f['server_mean_ttft_ms']:6.2f})  TPOT "
                      f"{f['reported']['mean_tpot_ms']:5.2f} ms  CPU client "
                      f"{f['client_cpu_share']:.2f} other {f['other_cpu_share']:.2f}",
                      flush=True)

            for rnd in range(1, rounds + 1):
                for load, group in (("closed", closed_pair(rnd)), ("open", open_pair(rnd))):
                    pair, _ = repeated(f"round {rnd} {load}", group, others)
                    runs += pair
                    for run in pair:
                        show(run)

            if not args.no_side_by_side:
                print("\nside by side: farm and vllm bench at once, half the load each")
                # vllm bench gets enough prompts to outlast farm's run
                half_rps = warmup["request_throughput"] / 2
                specs = (("closed", {"concurrency": half, "duration_s": args.closed_seconds},
                          int((args.closed_seconds + 3) * half_rps) + 1,
                          ["--max-concurrency", str(half)]),
                         ("open", {"rate_rps": args.rate / 2, "burstiness": 1.0,
                                   "duration_s": open_s},
                          int((open_s + 3) * args.rate / 2) + 1,
                          ["--request-rate", f"{args.rate / 2:g}", "--burstiness", "1.0"]))
                for rnd in range(1, args.side_rounds + 1):
                    for i, (load, farm_load, n, vllm_args) in enumerate(specs):
                        for j, (client, trust_env) in enumerate(((VLLM, True),
                                                                 (VLLM_NO_ENV, False))):
                            key = ("side", rnd, 2 * i + j)

                            this_load = (farm_load | {"seed": 10 * rnd + j} if load == "open"
                                         else farm_load)

                            def side(attempt: int, key=key, load=load, farm_load=this_load,
                                     n=n, vllm_args=vllm_args, trust_env=trust_env) -> dict:
                                return bench.side_by_side(
                                    f"side-{key[1]}-{load}-{key[2]}-{attempt}",
                                    prompts_for(key, closed_n, attempt), farm_load, n,
                                    300 + 100 * key[1] + 10 * key[2] + attempt, vllm_args,
                                    trust_env)

                            pair, other = repeated(f"side by side {rnd} {load} {client}",
                                                   side, lambda p: [p["other_cpu_share"]])
                            pair.update(load=load, client=client, round=rnd,
                                        farm_args=this_load)
                            pairs.append(pair)
                            f, v = pair["farm"]["reported"], pair["vllm"]["reported"]
                            print(f"round {rnd} {load:6} farm + {client:9} window "
                                  f"{pair['window_s']:5.1f} s: TTFT {f['mean_ttft_ms']:6.2f} / "
                                  f"{v['mean_ttft_ms']:6.2f} ms, req/s "
                                  f"{f['request_throughput']:5.2f} / "
                                  f"{v['request_throughput']:5.2f}, other CPU {other:.2f}",
                                  flush=True)
        finally:
            server.stop()
            server_tail = server.tail(20)
            server.remove_log()

        if not args.no_mock:
            # the same clients against a server whose every token time is known
            print(f"\nmock server: TTFT {MOCK_TTFT_S * 1e3:g} ms, ITL {MOCK_ITL_S * 1e3:g} ms")
            mock = Mock(MOCK_TTFT_S, MOCK_ITL_S, server_cpus)
            try:
                mbench = Bench(model, mock.url, mock, workdir, CLIENT, metrics=False,
                               api=args.api)
                mbench.farm(mbench.prompts(200), concurrency=CONCURRENCY, duration_s=2.0)
                farm_run = mbench.farm(mbench.prompts(closed_n), concurrency=CONCURRENCY,
                                       duration_s=args.mock_seconds)
                n = farm_run["completed"]
                mock_runs = [{"client": FARM, "figures": farm_run}]
                for client, trust_env in ((VLLM, True), (VLLM_NO_ENV, False)):
                    mock_runs.append({"client": client, "figures": mbench.vllm(
                        f"mock-{int(trust_env)}", n, 500 + trust_env, closed_args,
                        trust_env)})
                for run in mock_runs:
                    f = run["figures"]["reported"]
                    print(f"mock {run['client']:9} TTFT {f['mean_ttft_ms']:6.2f} ms  TPOT "
                          f"{f['mean_tpot_ms']:5.3f} ms  {f['request_throughput']:6.2f} req/s",
                          flush=True)
            finally:
                mock.stop()

    print()
    verdicts: dict[str, dict] = {}
    for load, title in (("closed", f"closed loop, concurrency {CONCURRENCY}, alternating"),
                        ("open", f"open loop, Poisson {args.rate:g} req/s, "
                                 f"{args.open_requests} requests, alternating")):
        text, verdicts[load] = alternation_report(title, [r for r in runs
                                                          if r["load"] == load])
        print(text + "\n")
    passed = {"alternating": all(verdicts[load][k]["pass"]
                                 for load in ("closed", "open") for k, _ in CHECKED)}
    if pairs:
        text, side = side_report(
            f"side by side (concurrency {half} + {half}; Poisson {args.rate / 2:g} + "
            f"{args.rate / 2:g} req/s), over the window where both were sending", pairs)
        verdicts["side_by_side"] = side
        print(text + "\n")
        for client in (VLLM, VLLM_NO_ENV):
            passed[f"side by side, {client}"] = all(
                v[k]["pass"] is not False for name, v in side.items()
                if name.endswith(f"/ {client}") for k, _ in CHECKED)
    if mock_runs:
        print(mock_report(f"mock server, concurrency {CONCURRENCY} (true TTFT "
                          f"{MOCK_TTFT_S * 1e3:g} ms after the request arrives, true TPOT "
                          f"{MOCK_ITL_S * 1e3:g} ms)", mock_runs) + "\n")
    for name, ok in passed.items():
        print(f"farm vs vllm bench, {name}: {'PASS' if ok else 'FAIL'} (mean TTFT and "
              f"throughput within {TOLERANCE:.0%} on every load)")
    elapsed = time.perf_counter() - t_start
    print(f"{elapsed:.0f} s in all")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(), "vllm": version, "loadgen_json_parser": sse.PARSER,
            "server_argv": ["python", *server_argv(Path("MODEL_DIR"), 0)[1:]],
            "settings": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                         "concurrency": CONCURRENCY, "closed_seconds": args.closed_seconds,
                         "rate_rps": args.rate, "open_requests": args.open_requests,
                         "rounds": args.rounds, "api": args.api,
                         "server_cpus": server_cpus or None,
                         "client_cpus": client_cpus or None,
                         "farm_continuous_usage": CLIENT.continuous_usage,
                         "tolerance": TOLERANCE},
            "warmup": warmup, "runs": runs, "side_by_side": pairs, "mock": mock_runs,
            "mock_server": {"ttft_s": MOCK_TTFT_S, "itl_s": MOCK_ITL_S}, "verdict": verdicts,
            "other_cpu_limit": OTHER_CPU_LIMIT, "discarded": discarded, "waits": waits,
            "pass": passed, "elapsed_s": elapsed, "server_log_tail": server_tail,
        }, indent=1, default=str) + "\n")
        print(f"raw results: {args.json}")
    # exit status: the issue's comparison (alternating) and the like-for-like one
    # (side by side, vllm bench's per-request environment lookup off)
    fair = passed.get(f"side by side, {VLLM_NO_ENV}")
    return 0 if passed["alternating"] and fair is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
