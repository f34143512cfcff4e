"""Shared helpers of the benchmark scripts: scratch stores, a private Redis,
generated sweeps, statistics and a plain-text table.

The scripts are run as `.venv/bin/python benchmarks/bench_*.py` from anywhere;
this module puts the repository root on sys.path so `farm`, `tasks` and
`tests.dbfixtures` (the PostgreSQL helpers the test suite uses) import.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The server the scratch databases are created on (trust auth, as in the tests).
PG_SERVER_URL = os.environ.get("FARM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DB_KINDS = ("sqlite", "postgresql")


# ------------------------------------------------------------------ stores


def farmctl(db: Path, *args: str, out: Path | None = None, owner: str | None = None) -> str:
    """Run `farmctl ARGS` on the SQLite store `db` (as `owner`, when given) from the
    repository root; its output (also written to `out`), or SystemExit with it."""
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{db}"}
    if owner:
        env["FARM_OWNER"] = owner
    proc = subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"farmctl {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    if out is not None:
        out.write_text(proc.stdout)
    return proc.stdout


def committed_exports(data: Path, sweep: str | None = None, *,
                      bare: bool = False) -> dict[Path, str]:
    """{export folder: sweep name} of the exports under `data` (docs/data/*/export),
    of `sweep` alone when given. `bare` adds the folders that are an export
    themselves (docs/data/*/manifest.json, as the first GPU leases' are): an older
    state of a sweep that a later export may not hold whole."""
    found = {}
    manifests = [*data.glob("*/export/manifest.json"),
                 *(data.glob("*/manifest.json") if bare else [])]
    for manifest in sorted(manifests):
        try:
            name = json.loads(manifest.read_text())["sweep"]["name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if sweep is None or name == sweep:
            found[manifest.parent] = name
    return found


@contextlib.contextmanager
def scratch_db(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty database URL (no schema yet); dropped or deleted afterwards."""
    if kind == "sqlite":
        path = tmp / f"bench-{os.getpid()}-{datetime.now().strftime('%H%M%S%f')}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}; known: {', '.join(DB_KINDS)}")
    from tests.dbfixtures import create_database, drop_database, pg_error

    problem = pg_error(PG_SERVER_URL)
    if problem:
        raise SystemExit(f"PostgreSQL at {PG_SERVER_URL} unavailable ({problem}); "
                         "set FARM_BENCH_PG_URL")
    url = create_database(PG_SERVER_URL, prefix="farm_bench_")
    try:
        yield url
    finally:
        drop_database(PG_SERVER_URL, url)


@contextlib.contextmanager
def private_redis() -> Iterator[object]:
    """A PrivateRedis on a unix socket; FARM_BROKER_URL points at it while open.

    Set before `tasks.app` is imported: the Celery app reads the URL once.
    """
    from farm.embedded import PrivateRedis

    previous = os.environ.get("FARM_BROKER_URL")
    with PrivateRedis() as redis:
        os.environ["FARM_BROKER_URL"] = redis.url
        try:
            yield redis
        finally:
            if previous is None:
                os.environ.pop("FARM_BROKER_URL", None)
            else:
                os.environ["FARM_BROKER_URL"] = previous


def redis_client(redis) -> object:
    import redis as redis_py

    return redis_py.Redis(unix_socket_path=str(redis.socket))


@contextlib.contextmanager
def temp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="farm-bench-") as name:
        yield Path(name)


# ------------------------------------------------------------------ sweeps

GPUS = ("H100-80GB", "A100-40GB", "L4", "L40S", "H200")


def sweep_toml(name: str, runs: int, backend: str = "") -> tuple[str, int]:
    """A realistic sweep file of about `runs` runs; returns (text, exact run count).

    Per model: 5 GPU models × 2 GPU counts × 5 scenario variants (closed-loop
    server with 5 load points, open-loop server with 3, batch of 64/256/1024)
    × 2 input lengths × 2 output lengths = 200 runs; the model count is
    ceil(runs / 200) (10,000 runs = 50 models, the scale of Watt Counts).
    """
    per_model = 200
    models = max(1, -(-runs // per_model))
    lines = [f'name = "{name}"', "repetitions = 1", ""]
    for index in range(models):
        lines += ["[[model]]", f'id = "model-{index:03d}-7b"',
                  f'source = "org/model-{index:03d}-7B-Instruct"', 'dtype = "bfloat16"', ""]
    gpus = ", ".join(f'"{backend}{gpu}"' for gpu in GPUS)
    lines += [
        "[hardware]", f"gpu = [{gpus}]", "gpus_per_run = [1, 2]", "",
        "[engine]", 'kind = "vllm"', "max_num_seqs = 256", "",
        "[[scenario]]", 'kind = "server"', "concurrency = [1, 8, 32, 100, 256]",
        "duration_s = 120", "warmup_s = 20", "",
        "[[scenario]]", 'kind = "server"', "request_rate = [2.0, 8.0, 32.0]",
        "duration_s = 120", "",
        "[[scenario]]", 'kind = "batch"', "num_prompts = [64, 256, 1024]", "",
        "[workload]", "input_tokens = [128, 2048]", "output_tokens = [64, 256]",
        'decoding = ["greedy"]', "",
        "[measurement]", "sample_period_s = 0.1", "idle_baseline_s = 10", 'region = "FRA"', "",
    ]
    return "\n".join(lines), models * per_model


# -------------------------------------------------------------- reporting


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p90": percentile(values, 90), "max": max(values)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU(s), {cpu}; Python {platform.python_version()}; "
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = [title]
    for n, row in enumerate(cells):
        out.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                    for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
