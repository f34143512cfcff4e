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
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from farm import failures, local_runs
from farm.embedded import PrivateRedis
from farm.errors import Conflict, ExitCode, FarmError, InvalidInput
from farm.output import load_label
from farm.spec import SweepSpec
from farm.sweep import expand
from farm_contract.routing import CPU_SLUG, parse_host_spec, queue_for, queues_for_host
from farm_contract.runspec import RunSpec, sweep_id
from farm_contract.settings import load_settings, redact
from farm_contract.statuses import TERMINAL_STATUSES

POLL_S = 0.25
STOP_TIMEOUT_S = 40.0
# A running run's load point is shown once it has run this long (shorter ones
# would only flicker past).
SHOW_LOAD_POINT_AFTER_S = 3.0


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

    def stop(self, names: list[str] | None = None) -> None:
        """SIGTERM all (or `names`; workers hand back runs in progress), wait, then kill."""
        procs = [p for n, p in self.procs.items() if names is None or n in names]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL every child still alive (a second Ctrl-C: no waiting)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    @property
    def workers(self) -> list[str]:
        """The names of the worker children (every child but the recorder)."""
        return [name for name in self.procs if name != "recorder"]


def run_locally(spec: SweepSpec, toml_text: str, sim_specs: list[str], progress: bool = True,
                amend: bool = False):
    """Run the sweep's runs this machine can serve, with a private Redis and child workers.

    Prints the results table of those runs and returns the exit code: NO_HARDWARE when
    none can run here, RUNS_FAILED when some failed, else OK. Refused (Conflict) while
    another `farmctl run` of the sweep on the same store is in progress on this
    machine; a known sweep name is its owner's (farm/ownership.py; `amend`).
    """
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

    try:
        with local_runs.sweep_lock(settings.db_url, sweep_id(spec.name)), stops_like_ctrl_c():
            log_dir = _log_dir(settings.home, spec.name)
            store = Store.open(settings.db_url, upgrade=True)
            return _run_here(spec, toml_text, store, settings.db_url, plan, local, log_dir,
                             progress, amend)
    except local_runs.SweepBusy:
        raise _busy(spec.name, settings.db_url) from None


def _log_dir(home: str, sweep: str) -> Path:
    """This run's log folder under FARM_HOME (made now); a clear refusal when it
    cannot be made (FARM_HOME a file, unwritable, …)."""
    log_dir = Path(home) / "logs" / f"{sweep}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = exc.filename or log_dir
        raise InvalidInput(
            f"cannot make the log folder {log_dir}: {where}: {exc.strerror or exc}; "
            f"`farmctl run` keeps its logs and spool under FARM_HOME (now {home!r}, default "
            "./.farm): point FARM_HOME at a folder you can write, or move what is in the "
            "way") from None
    return log_dir


def _busy(sweep: str, store_url: str) -> Conflict:
    """The refusal of a second `farmctl run` of a sweep, naming the one in progress."""
    holders = [r for r in local_runs.live(store_url) if r.sweep == sweep]
    who = f"pid {holders[0].pid}, since {holders[0].started_at[:19]}" if holders else "a process"
    return Conflict(
        f"sweep {sweep!r} is being measured by another `farmctl run` on this machine "
        f"({who}) on the same store: running it twice would measure every run twice. "
        f"Let it finish (`farmctl status {sweep}` shows its progress) or stop it first")


def _run_here(spec: SweepSpec, toml_text: str, store, db_url: str, plan: WorkerPlan,
              local: list[RunSpec], log_dir: Path, progress: bool, amend: bool):
    """The local run proper, with the sweep's lock held: private Redis, children,
    record, dispatch, wait, then the results."""
    from farm import coordinator, output, ownership
    from farm.dispatch import dispatch_once

    # Refused before anything starts: a known sweep name is its owner's.
    sid = store.record_sweep(spec, toml_text, admit=ownership.admission(
        ownership.Identity.configured(), spec.name, toml_text, amend=amend, action="run"))
    waited = [r.run_id for r in local]
    with PrivateRedis() as redis, local_runs.registered(db_url, redis.url, spec.name):
        # FARM_DISPATCH_SWEEP: the recorder dispatches this sweep's runs only, not the
        # runs other sweeps left queued in this store.
        env = {**os.environ, "FARM_BROKER_URL": redis.url, "FARM_DB_URL": db_url,
               "FARM_DISPATCH_SWEEP": sweep_id(spec.name),
               "FARM_SPOOL_DIR": str(log_dir.parent.parent / "spool")}
        if not load_settings().dataset_roots:
            # Your own sweep on your own workers: prompt files under the folder you
            # run from are yours to read (a farm worker serving others reads only
            # its roots, workers/workload.py).
            env["FARM_DATASET_ROOTS"] = f".:{os.path.join('.farm', 'datasets')}"
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
            # Runs left queued, running or failed by an earlier, interrupted local run
            # lost their messages with its private Redis: send them again, then the new.
            # (The sweep's lock says no other local run is measuring them.)
            stale = store.runs_to_retry(sid, include_queued=True, include_running=True,
                                        queues=plan.queues)
            new = store.add_runs(sid, local)
            # The recorder child's dispatcher feeds the rest as the workers take runs.
            dispatch_once(store, coordinator.broker_state(), sweep_id=sid, wait_s=5.0)
            _say(f"  {len(new)} new run(s), {len(stale)} sent again, "
                 f"{len(local) - len(new) - len(stale)} already done; logs in {log_dir}")
            waited = _wait(store, local, children, progress, sid, plan.queues)
        except KeyboardInterrupt:
            _say("interrupted: stopping the workers; runs in progress go back to queued "
                 "(Ctrl-C or the signal again kills them at once)")
            left = _stop_interrupted(children, store, sid, local)
            _say(f"interrupted: {left} run(s) not finished, queued in the store; "
                 "the same command measures them")
            return ExitCode.INTERRUPTED
        finally:
            children.stop()
    rows = store.result_rows(sid)
    local_ids = set(waited)     # with the repetitions adaptive ones added
    rows = [r for r in rows if r["run_id"] in local_ids]
    sys.stdout.write(output.format_results(rows, "table", title=spec.name))
    groups = failures.from_result_rows(rows)
    if groups:
        sys.stdout.write(failures.format_failures(groups, spec.name))
        _say(f"{sum(g.count for g in groups)} run(s) failed")
        return ExitCode.RUNS_FAILED
    return ExitCode.OK


# Signals that stop `farmctl run` as Ctrl-C does: a batch job's time limit or
# `timeout` (SIGTERM), a closed terminal or SSH session (SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stops_like_ctrl_c() -> Iterator[None]:
    """Within: STOP_SIGNALS raise KeyboardInterrupt, so the workers hand their runs
    back and the private Redis, recorder and workers stop with `farmctl run`.
    Without it a SIGTERM ended `farmctl run` alone: its children outlived it, the
    worker still measuring (on a GPU host, holding the GPU). The handlers before
    are put back on the way out; outside the main thread nothing is changed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    before = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _stop_interrupted(children: Children, store, sid: str | None,
                      runs: list[RunSpec]) -> int:
    """After Ctrl-C: leave no run `running` and lose nothing measured. Returns how
    many of `runs` are not finished.

    The workers stop first (SIGTERM: runs in progress are aborted and handed back,
    with a `requeued` event); the recorder stays up until it has taken every result
    and event left in Redis, so a result already delivered is stored, not lost with
    the private Redis. A run still marked running after that (its event never
    came) is handed back here. Handed-back runs are `queued`: the next `farmctl run`
    sends them again, and nothing of theirs was stored.
    """
    try:
        children.stop(children.workers)
        _drain_recorder(children)
        children.stop()
    except KeyboardInterrupt:
        children.kill()
    from farm_contract.records import RunEvent, WorkerInfo

    ids = {run.run_id for run in runs}
    now = datetime.now(UTC)
    for row in store.runs_of(sid) if sid else ():
        if row["id"] in ids and row["status"] == "running":
            store.mark_requeued(RunEvent(
                run_id=row["id"], kind="requeued", attempt=row["attempts"],
                worker=WorkerInfo(name=row["worker"] or "", host="", pid=0), at=now,
                detail="interrupted: farmctl run was stopped (Ctrl-C or a stop signal) "
                       "before the run ended"))
    statuses = store.run_statuses(list(ids))
    return sum(1 for i in ids if statuses.get(i) not in TERMINAL_STATUSES)


def _drain_recorder(children: Children, timeout_s: float = 30.0) -> None:
    """Wait until no result or run event waits in Redis for the recorder (none on its
    queue, none taken but not yet acknowledged), for as long as it makes progress:
    it gives up after `timeout_s` without one. The private Redis keeps nothing once
    stopped, and a result left there is a measurement done again next time."""
    from farm.coordinator import broker_state
    from farm_contract.routing import RECORD_QUEUE
    from tasks.app import EVENT_TASK, RECORD_TASK

    recorder = children.procs.get("recorder")
    state = broker_state()
    deadline, fewest = time.monotonic() + timeout_s, None
    pending = 0
    while recorder is not None and recorder.poll() is None and time.monotonic() < deadline:
        pending = state.r.llen(RECORD_QUEUE)
        for raw in state.r.hvals("unacked"):
            try:
                task = json.loads(raw)[0]["headers"]["task"]
            except (ValueError, KeyError, TypeError, IndexError):
                continue
            pending += task in (RECORD_TASK, EVENT_TASK)
        if not pending:
            return
        if fewest is None or pending < fewest:       # progress: wait on
            fewest, deadline = pending, time.monotonic() + timeout_s
        time.sleep(POLL_S)
    if pending:
        stopped = recorder is None or recorder.poll() is not None
        why = "stopped" if stopped else f"made no progress for {timeout_s:g} s"
        _say(f"{pending} result(s) or event(s) were not recorded (the recorder {why}): "
             "their runs are measured again by the next `farmctl run`")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _more_runs(store, sid: str | None, queues: Collection[str],
               known: Collection[str]) -> dict[str, list[str]]:
    """Runs of an adaptive sweep on this machine's queues beyond `known`, by queue:
    those the recorder added, and any its decision still owes (farm.adaptive,
    idempotent), so waiting never ends between a result and the decision on it."""
    from farm import adaptive

    if sid is None or adaptive.policy_of(store.find_sweep(sid).spec_toml) is None:
        return {}
    adaptive.extend_sweep(store, sid)
    more: dict[str, list[str]] = {}
    for row in store.runs_of(sid):
        if row["queue"] in queues and row["id"] not in known:
            more.setdefault(row["queue"], []).append(row["id"])
    return more


def _take_more(store, sid: str | None, queues: Collection[str], ids: list[str],
               by_queue: dict[str, list[str]]) -> dict[str, list[str]]:
    """Add the repetitions an adaptive sweep asked for to `ids` and `by_queue` (in
    place); returns them by queue, none when the sweep is complete."""
    more = _more_runs(store, sid, queues, ids)
    for queue, members in more.items():
        by_queue.setdefault(queue, []).extend(members)
        ids += members
    return more


def _wait(store, runs: list[RunSpec], children: Children, progress: bool,
          sid: str | None = None, queues: Collection[str] = ()) -> list[str]:
    """Wait until every run (and every repetition adaptive repetitions add) has
    ended; returns the ids waited for."""
    by_queue: dict[str, list[str]] = {}
    for run in runs:
        by_queue.setdefault(run.hardware.queue, []).append(run.run_id)
    ids = [r.run_id for r in runs]
    if not progress:
        while True:
            children.check_alive()
            statuses = store.run_statuses(ids)
            if (all(statuses.get(i) in TERMINAL_STATUSES for i in ids)
                    and not _take_more(store, sid, queues, ids, by_queue)):
                return ids
            time.sleep(POLL_S)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from farm.coordinator import broker_state

    state = broker_state()
    tracker = ProgressTracker(by_queue, store.run_statuses(ids), time.monotonic())
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bars:
        tasks = {q: bars.add_task(q, total=len(members), detail="")
                 for q, members in sorted(by_queue.items())}
        while True:
            children.check_alive()
            statuses = store.run_statuses(ids)
            now = time.monotonic()
            running = [i for i in ids if statuses.get(i) == "running"]
            try:
                where = state.progress(running)
            except Exception:   # the display only: a Redis hiccup must not stop the run
                where = {}
            for queue in by_queue:
                done, detail = tracker.update(queue, statuses, where, now)
                bars.update(tasks[queue], completed=done, detail=detail)
            if all(statuses.get(i) in TERMINAL_STATUSES for i in ids):
                more = _take_more(store, sid, queues, ids, by_queue)
                if not more:
                    return ids
                for queue in more:
                    if queue not in tasks:
                        tracker.done_before[queue] = 0
                        tasks[queue] = bars.add_task(queue, total=0, detail="")
                    bars.update(tasks[queue], total=len(by_queue[queue]))
            time.sleep(POLL_S)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressTracker:
    """What each queue's progress bar says besides its count: the running runs and
    the load point each is at (from the worker, via Redis), failures, and an ETA
    from the runs finished since `farmctl run` started waiting."""

    MAX_SHOWN = 3

    def __init__(self, by_queue: dict[str, list[str]], statuses: dict[str, str],
                 started: float):
        self.by_queue = by_queue
        self.started = started
        # Runs finished before this wait (an earlier run) say nothing about the pace.
        self.done_before = {q: sum(statuses.get(i) in TERMINAL_STATUSES for i in members)
                            for q, members in by_queue.items()}
        self.running_since: dict[str, float] = {}
        self.last_end: dict[str, tuple[int, float]] = {}    # queue → (done, when)

    def eta_s(self, queue: str, done: int, now: float) -> float | None:
        """Seconds until the queue's last run ends at its pace so far (the time per
        run up to the latest run's end), counting down between ends; None before
        any run has ended."""
        if self.last_end.get(queue, (None,))[0] != done:
            self.last_end[queue] = (done, now)
        finished = done - self.done_before[queue]
        _, ended_at = self.last_end[queue]
        if finished <= 0 or ended_at <= self.started:
            return None
        remaining = len(self.by_queue[queue]) - done
        per_run = (ended_at - self.started) / finished
        return max(0.0, remaining * per_run - (now - ended_at))

    def update(self, queue: str, statuses: dict[str, str],
               where: dict[str, dict], now: float) -> tuple[int, str]:
        """(runs finished, the detail text) for the queue's bar."""
        members = self.by_queue[queue]
        counts = Counter(statuses.get(i, "queued") for i in members)
        done = sum(counts[s] for s in TERMINAL_STATUSES)
        points = []
        for run_id in members:
            if statuses.get(run_id) != "running":
                self.running_since.pop(run_id, None)
                continue
            since = self.running_since.setdefault(run_id, now)
            point = where.get(run_id)
            if point and now - since >= SHOW_LOAD_POINT_AFTER_S:
                points.append(f"{load_label(point['kind'], point['value'])} "
                              f"({point['load_point'] + 1}/{point['of']})")
        running = f"{counts['running']} running"
        if points:
            more = len(points) - self.MAX_SHOWN
            running += ": " + ", ".join(points[:self.MAX_SHOWN]) + (
                f" +{more} more" if more > 0 else "")
        eta = self.eta_s(queue, done, now)
        tail = "" if done == len(members) else (
            f", ETA {_clock(eta)}" if eta is not None else ", ETA —")
        return done, f"{running}, {counts['failed']} failed{tail}"
