"""`farmctl run`: the whole farm on one machine, with embedded defaults.

A private Redis (unix socket), the store from FARM_DB_URL (SQLite file by
default), one recorder process and one worker process — the real components,
started as subprocesses exactly as a lab would start them — then enqueue,
show progress, print the results, and stop everything.

Only runs this machine can serve are added to the store: the rest of the sweep
stays for a farm with those GPUs (`farmctl enqueue` there adds them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from farm.embedded import PrivateRedis
from farm.errors import ExitCode, FarmError
from farm.spec import SweepSpec
from farm.sweep import expand
from farm_contract.routing import CPU_SLUG, parse_host_spec, queue_for, queues_for_host
from farm_contract.runspec import RunSpec
from farm_contract.settings import load_settings, redact

POLL_S = 0.25
STOP_TIMEOUT_S = 40.0


class LocalRunError(FarmError, RuntimeError):
    """A child process of `farmctl run` died (an environment failure)."""

    exit_code = ExitCode.INTERNAL


@dataclass
class WorkerPlan:
    """Which workers `farmctl run` starts on this machine, and the queues they serve."""

    sim_specs: list[str] = field(default_factory=list)   # for one sim worker
    real: bool = False                                   # start an NVML worker
    cpu: bool = False                                    # start a CPU worker
    queues: set[str] = field(default_factory=set)


def _sim_specs_for(runs: list[RunSpec]) -> list[str]:
    """Simulated GPUs enough for every simulated run: each model × its largest count."""
    need: dict[str, int] = {}
    for run in runs:
        if run.hardware.backend == "sim":
            slug = run.hardware.gpu_model
            need[slug] = max(need.get(slug, 0), run.hardware.gpu_count)
    return [f"{slug}x{count}" for slug, count in sorted(need.items())]


def _probe_real_gpus() -> set[str]:
    """Queues a real (NVML) worker on this machine would serve; empty without GPUs.

    Asked of a `farmctl worker --probe` subprocess: the coordinator side never
    loads NVML itself.
    """
    proc = subprocess.run([sys.executable, "-m", "farm.cli", "worker", "--probe"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return set()
    return set(json.loads(proc.stdout)["queues"])


def plan_workers(runs: list[RunSpec], sim_specs: list[str]) -> WorkerPlan:
    """The workers this machine can start for `runs`, and the queues they cover.

    A sim worker with `sim_specs` (else enough simulated GPUs for the sim runs), a CPU
    worker if any run is on the CPU, an NVML worker if a GPU run's probe finds GPUs.
    """
    plan = WorkerPlan(sim_specs=sim_specs or _sim_specs_for(runs))
    plan.cpu = any(run.hardware.backend == "cpu" for run in runs)
    if plan.cpu:
        plan.queues.add(queue_for("cpu", CPU_SLUG, 1))
    counts: Counter[str] = Counter()
    for spec in plan.sim_specs:
        slug, count = parse_host_spec(spec)
        counts[slug] += count
    plan.queues |= set(queues_for_host("sim", dict(counts)))
    if any(run.hardware.backend == "gpu" for run in runs):
        real_queues = _probe_real_gpus()
        plan.real = bool(real_queues)
        plan.queues |= real_queues
    return plan


class Children:
    """The recorder and worker subprocesses, with their logs."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir = log_dir
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> None:
        """Start `farmctl <args>` as child `name`, its output in <log_dir>/<name>.log."""
        log = open(self.log_dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "farm.cli", *args], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def check_alive(self) -> None:
        """Raise LocalRunError, with the end of its log, if any child has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise LocalRunError(f"the {name} exited with code {proc.returncode}; "
                                    f"its log ({self.log_dir / (name + '.log')}) ends with:\n"
                                    f"{tail}")

    def stop(self) -> None:
        """SIGTERM all (workers hand back runs in progress), then wait, then kill."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_locally(spec: SweepSpec, toml_text: str, sim_specs: list[str], progress: bool = True):
    """Run the sweep's runs this machine can serve, with a private Redis and child workers.

    Prints the results table of those runs and returns the exit code: NO_HARDWARE when
    none can run here, RUNS_FAILED when some failed, else OK.
    """
    from farm import coordinator, output
    from farm.store.repository import Store

    settings = load_settings()
    runs = expand(spec)
    plan = plan_workers(runs, sim_specs)
    local = [r for r in runs if r.hardware.queue in plan.queues]
    _say(f"{spec.name}: {len(runs)} run(s); {len(local)} can run here "
         f"(store: {redact(settings.db_url)})")
    if len(local) < len(runs):
        missing = sorted({r.hardware.queue for r in runs} - plan.queues)
        _say(f"  {len(runs) - len(local)} run(s) need GPUs this machine lacks "
             f"({', '.join(missing)}): not added here; `farmctl enqueue` them on a farm")
    if not local:
        return ExitCode.NO_HARDWARE

    store = Store.open(settings.db_url, upgrade=True)
    log_dir = Path(os.environ.get("FARM_HOME", ".farm")) / "logs" / (
        f"{spec.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    log_dir.mkdir(parents=True, exist_ok=True)
    with PrivateRedis() as redis:
        env = {**os.environ, "FARM_BROKER_URL": redis.url, "FARM_DB_URL": settings.db_url,
               "FARM_SPOOL_DIR": str(log_dir.parent.parent / "spool")}
        os.environ["FARM_BROKER_URL"] = redis.url   # for this process's sends
        children = Children(log_dir, env)
        try:
            children.start("recorder", ["recorder", "--name", "farm-recorder@local"])
            if plan.sim_specs:
                args = ["worker", "--name", "farm-sim@local"]
                for sim in plan.sim_specs:
                    args += ["--sim", sim]
                children.start("sim-worker", args)
            if plan.real:
                children.start("gpu-worker", ["worker", "--name", "farm-gpu@local"])
            if plan.cpu:
                children.start("cpu-worker", ["worker", "--cpu", "--name", "farm-cpu@local"])
            sid = store.record_sweep(spec, toml_text)
            # Runs left queued, running or failed by an earlier, interrupted local run
            # lost their messages with its private Redis: send them again, then the new.
            stale = store.runs_to_retry(sid, include_queued=True, include_running=True,
                                        queues=plan.queues)
            new = store.add_runs(sid, local)
            coordinator.send_runs(stale + new)
            _say(f"  {len(new)} new run(s), {len(stale)} sent again, "
                 f"{len(local) - len(new) - len(stale)} already done; logs in {log_dir}")
            _wait(store, local, children, progress)
        except KeyboardInterrupt:
            _say("interrupted: stopping workers; unfinished runs stay queued in the store")
            raise
        finally:
            children.stop()
    rows = store.result_rows(sid)
    local_ids = {r.run_id for r in local}
    rows = [r for r in rows if r["run_id"] in local_ids]
    sys.stdout.write(output.format_results(rows, "table", title=spec.name))
    failed = {r["run_id"] for r in rows if r["status"] == "failed"}
    if failed:
        _say(f"{len(failed)} run(s) failed: `farmctl results {spec.name} --format json` "
             "shows why")
        return ExitCode.RUNS_FAILED
    return ExitCode.OK


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait(store, runs: list[RunSpec], children: Children, progress: bool) -> None:
    by_queue: dict[str, list[str]] = {}
    for run in runs:
        by_queue.setdefault(run.hardware.queue, []).append(run.run_id)
    ids = [r.run_id for r in runs]
    terminal = {"succeeded", "failed", "cancelled"}
    if not progress:
        while True:
            children.check_alive()
            statuses = store.run_statuses(ids)
            if all(statuses.get(i) in terminal for i in ids):
                return
            time.sleep(POLL_S)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bars:
        tasks = {q: bars.add_task(q, total=len(members), detail="")
                 for q, members in sorted(by_queue.items())}
        while True:
            children.check_alive()
            statuses = store.run_statuses(ids)
            for queue, members in by_queue.items():
                counts = Counter(statuses.get(i, "queued") for i in members)
                done = sum(counts[s] for s in terminal)
                detail = f"{counts['running']} running, {counts['failed']} failed"
                bars.update(tasks[queue], completed=done, detail=detail)
            if all(statuses.get(i) in terminal for i in ids):
                return
            time.sleep(POLL_S)
