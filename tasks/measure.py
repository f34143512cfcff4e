"""The `farm.measure` task: the Celery binding of workers.runner.run_one.

Thin by design: decode the RunSpec, take the run (claim + GPUs), call the
runner, send what it returns to the recorder, decide retry or not. Everything
about measuring lives in workers/.

A GPU worker process calls `serve()` (from `farmctl worker`) with its GPU
inventory; the Celery worker then runs one task thread per GPU, and the
allocator keeps runs from sharing GPUs.

On a shared pool (workers/tenants.py) the worker consumes a queue only while it
has a set of GPUs that can serve it now: free of other tenants for the settle
time and not held by its own runs (`_ConsumerGate`, Celery's own
`add_task_queue`/`cancel_task_queue`). A run it takes anyway (prefetched, or a
tenant arriving mid-run) goes back to the head of its queue with the reason,
never charged an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from celery import signals
from celery.exceptions import Reject
from pydantic import ValidationError

from farm_contract.records import (
    EngineInfo,
    ErrorInfo,
    MeasurementInfo,
    RunEvent,
    RunResult,
    WorkerInfo,
)
from farm_contract.routing import queue_for, queues_for_host
from farm_contract.runspec import RunSpec, sweep_id
from farm_contract.settings import Settings, load_settings
from tasks import signing
from tasks.app import EVENT_TASK, MEASURE_TASK, RECORD_TASK, app, run_worker
from tasks.broker_state import BrokerState, redis_client
from tasks.delivery import deliver, drain_spool
from tasks.idle_exit import IdleExit, celery_busy
from tasks.metrics_http import serve_metrics
from tasks.progress import ProgressPublisher
from workers.allocator import GpuAllocator
from workers.energy import configured_sources
from workers.errors import RunAborted, RunTimeout, TenantHeld, TransientError, WorkerError
from workers.exporter import GpuCollector
from workers.gpu.base import GpuInventory
from workers.gpu.discovery import summarize
from workers.gpu.tuning import GpuTuner
from workers.preflight import GpuBusy
from workers.runner import Contaminated, run_one
from workers.runproc import prepare as prepare_run_processes
from workers.runproc import run_in_process, why_not_isolated
from workers.tenants import TenantWatch, servable

log = logging.getLogger(__name__)

TRANSIENT_RETRIES = 3
TRANSIENT_DELAY_S = 60


@dataclass
class WorkerContext:
    """What the measure task needs from the worker process that runs it."""

    inventory: GpuInventory
    allocator: GpuAllocator
    state: BrokerState
    settings: Settings
    node_name: str
    abort: threading.Event
    watch: TenantWatch | None = None
    progress: ProgressPublisher = field(init=False)

    def __post_init__(self) -> None:
        ttl_s = self.settings.run_timeout_s
        self.progress = ProgressPublisher(
            lambda run_id, info: self.state.set_progress(run_id, info, ttl_s=ttl_s),
            self.state.clear_progress)


_ctx: WorkerContext | None = None


def context() -> WorkerContext:
    """The running worker process's context; raises outside `farmctl worker`."""
    if _ctx is None:
        raise RuntimeError("farm.measure runs only inside `farmctl worker`")
    return _ctx


def worker_info() -> WorkerInfo:
    """This worker's name, host and pid, as recorded with results and events."""
    return WorkerInfo(name=context().node_name, host=socket.gethostname(), pid=os.getpid())


def _send(task: str, payload: str, task_id: str | None = None) -> None:
    # Signed with this host's FARM_SIGNING_KEY, if it has one (tasks/signing.py).
    app.send_task(task, args=[payload], kwargs=signing.send_kwargs(payload), task_id=task_id)


def _send_record(payload: str, task_id: str) -> None:
    _send(RECORD_TASK, payload, task_id)


class _Heartbeat:
    """Keeps this worker's claim on a run alive while the run is in progress."""

    def __init__(self, ctx: WorkerContext, run_id: str, holder: str):
        self.ctx, self.run_id, self.holder = ctx, run_id, holder
        self.ttl_s = 3 * ctx.settings.heartbeat_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"hb-{run_id}")

    def _loop(self) -> None:
        while not self._stop.wait(self.ctx.settings.heartbeat_s):
            try:
                self.ctx.state.refresh_claim(self.run_id, self.holder, self.ttl_s)
            except Exception:  # a Redis blip must not kill the run
                log.warning("heartbeat for %s failed", self.run_id, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.ctx.state.release(self.run_id, self.holder)


class _RunGuard:
    """The abort event of one run: set when the worker shuts down (hand the run
    back) or when the run exceeds its time limit (fail it)."""

    def __init__(self, worker_abort: threading.Event, limit_s: float):
        self.abort = threading.Event()
        self.timed_out = False
        self._worker_abort = worker_abort
        self._limit_s = limit_s
        self._deadline = time.monotonic() + limit_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="run-guard")

    def restart_clock(self) -> None:
        self._deadline = time.monotonic() + self._limit_s

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            if self._worker_abort.is_set():
                self.abort.set()
                return
            if time.monotonic() > self._deadline:
                self.timed_out = True
                self.abort.set()
                return

    def __enter__(self) -> _RunGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=5)


@app.task(name=MEASURE_TASK, bind=True, acks_late=True, max_retries=TRANSIENT_RETRIES)
def measure(self, run_json: str) -> str:
    """Measure one run (a `RunSpec` as JSON) and send its result to the recorder.

    Returns the result's status, or why the run was skipped (already measured,
    sweep cancelled, running elsewhere) or failed unread.
    """
    ctx = context()
    queue = (self.request.delivery_info or {}).get("routing_key")
    if not isinstance(run_json, str | bytes):
        ctx.state.park_unreadable(run_json, queue=queue,
                                  reason=f"farm.measure argument is a {type(run_json).__name__},"
                                         " not a RunSpec JSON string")
        return "parked: not a run"
    try:
        run = RunSpec.model_validate_json(run_json)
    except ValidationError as exc:
        # A newer coordinator's run: fail it with the reason instead of losing it,
        # and keep the message itself (the store may not know the run at all).
        first = exc.errors()[0]
        ctx.state.park_unreadable(run_json, queue=queue, reason="not a RunSpec this worker can "
                                  f"read: {first['loc']} {first['msg']}")
        deliver(_send_record, _unreadable(self.request.id, exc).model_dump_json(),
                f"record-{self.request.id}-unreadable", stop=ctx.abort)
        return "failed: unreadable run"
    run_id = run.run_id
    if run_id != self.request.id:
        log.warning("task id %s does not match run id %s", self.request.id, run_id)
    if ctx.state.is_done(run_id):
        return "skipped: already measured"
    if ctx.state.is_cancelled(sweep_id(run.sweep)):
        return "skipped: sweep cancelled"
    blocked = ctx.watch.blocked(run.hardware.gpu_model, run.hardware.gpu_count) \
        if ctx.watch else None
    if blocked:
        # Taken before the queue stopped being consumed (prefetched): back to the
        # head of its queue, unclaimed, no attempt. The pause lets the queue's
        # cancel take effect instead of taking the message again at once.
        log.info("run %s handed back before it started: %s", run_id, blocked)
        ctx.abort.wait(1.0)
        raise Reject(blocked, requeue=True)
    # The claim is this execution's, not the worker's: a worker measures several GPU
    # sets at once, and a second copy of the message (a dispatcher crash between send
    # and mark, `retry --queued`) taken by another of its threads must not run too.
    holder = f"{ctx.node_name}#{uuid.uuid4().hex[:12]}"
    if not ctx.state.claim(run_id, holder, 3 * ctx.settings.heartbeat_s):
        # Another live execution runs this very run (a duplicate message): drop ours.
        return "skipped: running elsewhere"
    attempt = ctx.state.next_attempt(run_id)
    # The claim stays alive until the result is delivered: until then the run
    # must not be handed to anyone else.
    with _Heartbeat(ctx, run_id, holder), _RunGuard(ctx.abort, ctx.settings.run_timeout_s) as guard:
        result = _measure(self, ctx, run, attempt, guard)
        sent = deliver(_send_record, result.model_dump_json(), f"record-{run_id}-{attempt}",
                       stop=ctx.abort)
    # A result only in this host's spool is not done: should the host never come back
    # to send it, the marker would keep the run from ever being measured again.
    if sent and result.status == "succeeded":
        ctx.state.mark_done(run_id)
    return result.status


def _measure(task, ctx: WorkerContext, run: RunSpec, attempt: int,
             guard: _RunGuard) -> RunResult:
    """Hold the GPUs, run, and turn every outcome into a result — or hand it back."""
    run_id = run.run_id
    model, count = run.hardware.gpu_model, run.hardware.gpu_count
    give_up = (lambda: ctx.watch.blocked(model, count)) if ctx.watch else None
    try:
        with ctx.allocator.hold(model, count, holder=run_id, abort=guard.abort,
                                give_up=give_up) as gpus:
            guard.restart_clock()   # the time limit is for the run, not the wait for GPUs
            _send(EVENT_TASK, RunEvent(
                run_id=run_id, kind="started", attempt=attempt, worker=worker_info(),
                gpu_uuids=[g.info.uuid for g in gpus], at=datetime.now(UTC),
            ).model_dump_json())
            # One run, one process: its sampler and load generator off this
            # process's interpreter lock, where the other GPU sets' runs are.
            measure = run_one
            if ctx.settings.run_isolation == "process":
                why_not = why_not_isolated(run, gpus, configured_sources())
                if why_not is None:
                    measure = run_in_process
                else:
                    log.warning("run %s measured in the worker's thread: %s", run_id, why_not)
            return measure(run, gpus, guard.abort, worker=worker_info(), attempt=attempt,
                           start_deadline_s=min(900.0, ctx.settings.run_timeout_s),
                           on_load_point=_progress_reporter(ctx, run_id))
    except (GpuBusy, Contaminated) as exc:
        # Another tenant at preflight or mid-run: what was measured is dropped, and
        # the run goes back to the head of its queue with the reason, no attempt
        # charged; the queue is not consumed again until the GPU has settled.
        _saw_tenants(ctx, exc)
        log.warning("run %s handed back: %s", run_id, exc)
        _requeued(run_id, attempt, f"handed back: {exc}")
        raise Reject(str(exc), requeue=True) from None
    except RunAborted as exc:
        if isinstance(exc, TenantHeld) or not guard.timed_out:
            log.warning("run %s handed back: %s", run_id, exc)
            _requeued(run_id, attempt, str(exc))
            raise Reject(str(exc), requeue=True) from None
        return _failed(run, attempt, RunTimeout(
            f"the run took longer than FARM_RUN_TIMEOUT_S={ctx.settings.run_timeout_s:g} s"))
    except TransientError as exc:
        if task.request.retries < TRANSIENT_RETRIES:
            _requeued(run_id, attempt, f"retry in {TRANSIENT_DELAY_S} s: {exc}")
            raise task.retry(exc=exc, countdown=TRANSIENT_DELAY_S) from None
        return _failed(run, attempt, exc)
    except WorkerError as exc:      # e.g. more GPUs than this host has: fail, don't loop
        return _failed(run, attempt, exc)
    finally:
        _forget_progress(ctx, run_id)


def _saw_tenants(ctx: WorkerContext, exc: Exception) -> None:
    """Tell the tenant watch what the run saw (it may have come and gone between polls)."""
    if ctx.watch is None:
        return
    if isinstance(exc, GpuBusy):
        for uuid, pids in exc.busy.items():
            ctx.watch.saw_tenant(uuid, pids)
    elif isinstance(exc, Contaminated):
        for sighting in exc.sightings:
            ctx.watch.saw_tenant(sighting.gpu_uuid, sighting.pids)


def _progress_reporter(ctx: WorkerContext, run_id: str):
    """The runner's load point callback: where the run is, kept in Redis for
    `farmctl run`'s progress display (farm:progress:<run_id>). It returns at once:
    the write happens on the publisher's thread, never on the measurement path."""
    def tell(index: int, total: int, kind: str, value: float) -> None:
        ctx.progress.tell(run_id, {"load_point": index, "of": total, "kind": kind,
                                   "value": value, "at": time.time()})
    return tell


def _forget_progress(ctx: WorkerContext, run_id: str) -> None:
    ctx.progress.forget(run_id)


def _requeued(run_id: str, attempt: int, why: str) -> None:
    """Tell the store the run is waiting again (a handed-back or retried run)."""
    _send(EVENT_TASK, RunEvent(run_id=run_id, kind="requeued", attempt=attempt,
                               worker=worker_info(), at=datetime.now(UTC),
                               detail=why).model_dump_json())


def _unreadable(run_id: str, exc: ValidationError) -> RunResult:
    now = datetime.now(UTC)
    return RunResult(
        run_id=run_id, status="failed", attempt=0, worker=worker_info(), gpus=[],
        engine=EngineInfo(kind="unknown", simulated=False),
        measurement=MeasurementInfo(energy_sensor="none", power_sensor=None,
                                    sample_period_s=None, simulated=False),
        simulated=False, started_at=now, finished_at=now, duration_s=0.0,
        error=ErrorInfo(kind="incompatible", message=(
            "this worker cannot read the run (is it older than the coordinator? upgrade it, "
            f"then `farmctl retry`): {exc.error_count()} problem(s), first: "
            f"{exc.errors()[0]['loc']} {exc.errors()[0]['msg']}")),
    )


def _failed(run: RunSpec, attempt: int, exc: Exception) -> RunResult:
    """A failed result for a run that never reached (or never left) the runner."""
    now = datetime.now(UTC)
    return RunResult(
        run_id=run.run_id, status="failed", attempt=attempt, worker=worker_info(), gpus=[],
        engine=EngineInfo(kind=run.engine.kind, simulated=run.simulated),
        measurement=MeasurementInfo(energy_sensor="none", power_sensor=None,
                                    sample_period_s=None, simulated=run.simulated),
        simulated=run.simulated, started_at=now, finished_at=now, duration_s=0.0,
        error=ErrorInfo(kind=getattr(exc, "kind", "internal"), message=str(exc)),
    )


# ------------------------------------------------------------- worker process


class _ConsumerGate:
    """Which of the host's queues the Celery consumer takes messages from.

    A queue is consumed while this worker has GPUs that can serve a run from it
    now (`workers.tenants.servable`): a slot never takes a run for GPUs held by a
    tenant, or by our own runs, while another model's GPUs sit idle with runs
    waiting. Celery's own per-queue consumer control does the work, run in the
    consumer's event loop (`call_soon`); a message BRPOP returns for a queue just
    cancelled is handed back to the head of its queue by kombu (tasks.transport.QoS).
    """

    def __init__(self, ctx: WorkerContext, needs: dict[str, tuple[str, int]]):
        self.ctx, self.needs = ctx, needs
        self.consuming = set(needs)     # the worker starts on every queue
        self._consumer = None
        self._lock = threading.Lock()

    def attach(self, consumer) -> None:
        """The Celery consumer, once it is ready (`worker_ready`)."""
        self._consumer = consumer
        self.update()

    def update(self) -> None:
        """Consume exactly the queues that can be served now."""
        consumer, watch = self._consumer, self.ctx.watch
        if consumer is None or watch is None or self.ctx.abort.is_set():
            return      # stopping: never add a queue back
        allocator = self.ctx.allocator
        want = servable(self.needs, watch, allocator.busy(), allocator.waiting())
        with self._lock:
            for queue in sorted(self.needs):
                if queue in want and queue not in self.consuming:
                    consumer.call_soon(consumer.add_task_queue, queue)
                    self.consuming.add(queue)
                elif queue not in want and queue in self.consuming:
                    consumer.call_soon(consumer.cancel_task_queue, queue)
                    self.consuming.discard(queue)



def _advertise_loop(ctx: WorkerContext, queues: list[str], stop: threading.Event) -> None:
    ttl_s = 3 * ctx.settings.heartbeat_s
    started = datetime.now(UTC).isoformat()
    while True:
        try:
            ctx.state.advertise(ctx.node_name, {
                "name": ctx.node_name, "host": socket.gethostname(), "pid": os.getpid(),
                "backend": ctx.inventory.backend, "queues": queues, "started_at": started,
                "gpus": [d.info.model_dump() for d in ctx.inventory.devices()],
                "busy": ctx.allocator.busy(),
                # Each GPU free / running RUN / held by foreign pids (workers/tenants.py).
                "gpu_states": [t.advert() for t in ctx.watch.states()] if ctx.watch else [],
                "settle_s": ctx.settings.gpu_settle_s,
            }, ttl_s)
        except Exception:
            log.warning("could not advertise worker", exc_info=True)
        if stop.wait(ctx.settings.heartbeat_s):
            break
    ctx.state.withdraw(ctx.node_name)


def serve(inventory: GpuInventory, node_name: str, loglevel: str = "INFO",
          idle_exit_s: float | None = None) -> int:
    """Run a GPU worker: one task thread per GPU, subscribed to this host's queues.
    With `idle_exit_s`, stop (status 0) after that long without a run (tasks/idle_exit.py).
    Returns Celery's exit status (non-zero when it stopped on an error)."""
    global _ctx
    settings = load_settings()
    devices = inventory.devices()
    queues = queues_for_host(inventory.backend, summarize(inventory))
    state = BrokerState(redis_client(settings.broker_url))
    allocator = GpuAllocator(devices)
    _ctx = WorkerContext(inventory=inventory, allocator=allocator, state=state,
                         settings=settings, node_name=node_name, abort=threading.Event())
    gate = _ConsumerGate(_ctx, {queue_for(inventory.backend, slug, count): (slug, count)
                                for slug, total in summarize(inventory).items()
                                for count in range(1, total + 1)})
    _ctx.watch = TenantWatch(devices, allocator.busy, settings.gpu_settle_s,
                             on_poll=gate.update)
    # Never hand out a GPU a tenant holds; re-decide the queues as GPUs are taken/freed.
    allocator.usable = _ctx.watch.usable
    allocator.on_change = gate.update
    _ctx.watch.poll()        # before the first message: a tenant there now is seen
    serve_metrics(settings, GpuCollector(devices, _ctx.watch, node_name), "worker")
    stop_advertising = threading.Event()
    advertiser = threading.Thread(target=_advertise_loop, args=(_ctx, queues, stop_advertising),
                                  daemon=True, name="advertise")

    @signals.worker_ready.connect(weak=False)
    def _on_ready(sender=None, **_kwargs) -> None:
        gate.attach(sender)          # the sender is the Celery consumer

    @signals.worker_shutting_down.connect(weak=False)
    def _on_shutdown(**_kwargs) -> None:
        # Runs are worthless if cut short: abort at once, hand them back.
        _ctx.abort.set()
        stop_advertising.set()

    # GPUs a killed worker left with a run's power limit / clock lock: defaults back
    # before any run is taken (workers.gpu.tuning's journal).
    for line in GpuTuner.from_environment().restore_leftovers(devices):
        log.warning("GPU settings: %s", line)
    if settings.run_isolation == "process":
        prepare_run_processes()     # before the first run: its imports take seconds
    advertiser.start()
    _ctx.watch.start()
    if idle_exit_s is not None:
        IdleExit(idle_exit_s, lambda: celery_busy() or bool(allocator.busy())).start()
    drain_spool(_send_record)
    log.info("worker %s serves %s", node_name, ", ".join(queues))
    try:
        return run_worker(app, hostname=node_name, queues=queues, pool="threads",
                          concurrency=len(devices), loglevel=loglevel)
    finally:
        _ctx.watch.stop()
        stop_advertising.set()
        advertiser.join(timeout=5)
        inventory.shutdown()
