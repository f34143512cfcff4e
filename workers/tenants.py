"""Who is on each GPU of this worker: free, running one of our runs, or held by a
foreign process (someone's training job on a shared pool).

`TenantWatch` polls every GPU's compute processes about once a second in a thread
of its own. A pid that is neither this worker nor one of its descendants (the
engines, the context helper) is a tenant. A GPU a tenant has left counts as
usable again only once it has been free for the settle time
(`FARM_GPU_SETTLE_S`): a job that restarts between epochs, or a tenant that
comes back, is not measured beside.

The worker uses it twice (tasks/measure.py): to stop consuming a queue while no
set of its GPUs can serve it (`servable`), and to hand back a run it took anyway
(`blocked`), so a run is never charged an attempt for someone else's job.
A GPU whose process list cannot be read (`compute_pids` None) counts as free, as
the preflight treats it (its note says "isolation unchecked").
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from workers.errors import TenantHeld
from workers.gpu.base import GpuDevice

__all__ = ["GpuTenancy", "TenantHeld", "TenantWatch", "own_process_tree", "servable"]

log = logging.getLogger(__name__)

POLL_S = 1.0


def own_process_tree(root: int | None = None) -> set[int]:
    """`root` (default: this process) and its descendants, from /proc; only `root`
    where /proc cannot be read."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {root}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:        # the process ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


@dataclass(frozen=True)
class GpuTenancy:
    """One GPU's state: "free", "running" (one of our runs) or "held" (foreign pids).

    `since` is the wall time (epoch s) the GPU became free of tenants or was first
    seen held, None when it was free when the watch started; `settled` is whether
    a free GPU has been free for the settle time.
    """

    uuid: str
    index: int
    model: str
    state: str
    run_id: str | None
    pids: tuple[int, ...]
    since: float | None
    settled: bool

    def describe(self, settle_s: float) -> str:
        """"free", "free (settling, 12 s of 30 s)", "running RUN", "held by pid N"."""
        if self.state == "held":
            return f"held by pid {', '.join(map(str, self.pids))}"
        if self.state == "running":
            return f"running {self.run_id}"
        if not self.settled and self.since is not None:
            return f"free (settling, {time.time() - self.since:.0f} s of {settle_s:g} s)"
        return "free"

    def advert(self) -> dict:
        """The advertised form (JSON-ready) read by `farmctl workers`."""
        return {"uuid": self.uuid, "state": self.state, "run_id": self.run_id,
                "pids": list(self.pids), "since": self.since, "settled": self.settled}


class _Seen:
    """What the watch knows of one GPU between polls."""

    def __init__(self) -> None:
        self.tenants: tuple[int, ...] = ()
        self.since_wall: float | None = None    # held since / free since
        self.since_mono: float | None = None


class TenantWatch:
    """Per-GPU tenancy of a worker's GPUs, polled in a thread (`start`/`stop`).

    `held()` gives the GPUs our runs hold now (uuid → run id, the allocator's
    `busy`); `own_pids()` the pids that are ours. `on_poll` is called after
    every poll (the worker re-decides which queues it consumes).
    """

    def __init__(self, devices: list[GpuDevice], held: Callable[[], Mapping[str, str]],
                 settle_s: float, *, poll_s: float = POLL_S,
                 own_pids: Callable[[], set[int]] = own_process_tree,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 on_poll: Callable[[], None] | None = None):
        self.devices = list(devices)
        self.settle_s = settle_s
        self._held, self._own_pids = held, own_pids
        self._poll_s, self._clock, self._wall = poll_s, clock, wall
        self._on_poll = on_poll
        self._seen = {d.info.uuid: _Seen() for d in self.devices}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- polling

    def poll(self) -> None:
        """Read every GPU's compute processes once and update its state."""
        readings = {}
        for device in self.devices:
            try:
                readings[device.info.uuid] = device.compute_pids()
            except Exception:   # a refused reading: as if the list were unavailable
                readings[device.info.uuid] = None
        me = os.getpid()
        # The /proc walk only when some GPU shows a pid other than this process.
        own = (self._own_pids() if any(set(p or ()) - {me} for p in readings.values())
               else {me})
        for uuid, pids in readings.items():
            self._note(uuid, tuple(sorted(set(pids or ()) - own)))
        if self._on_poll is not None:
            try:
                self._on_poll()
            except Exception:   # the watch must outlive a broker blip
                log.warning("tenant watch callback failed", exc_info=True)

    def _note(self, uuid: str, tenants: tuple[int, ...]) -> None:
        with self._lock:
            seen = self._seen[uuid]
            if tenants and not seen.tenants:
                log.warning("GPU %s held by foreign pid(s) %s", uuid, list(tenants))
                seen.since_wall, seen.since_mono = self._wall(), self._clock()
            elif not tenants and seen.tenants:
                log.info("GPU %s free of tenants; usable after %g s", uuid, self.settle_s)
                seen.since_wall, seen.since_mono = self._wall(), self._clock()
            seen.tenants = tenants

    def saw_tenant(self, uuid: str, pids: list[int]) -> None:
        """A run saw a tenant on `uuid` that this watch may have missed (it came and
        went between polls): the settle time starts again from now."""
        with self._lock:
            seen = self._seen.get(uuid)
            if seen is not None and not seen.tenants:
                seen.since_wall, seen.since_mono = self._wall(), self._clock()
        log.warning("run saw foreign pid(s) %s on GPU %s", pids, uuid)

    def start(self) -> TenantWatch:
        """Poll in a daemon thread until `stop`."""
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tenant-watch")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._poll_s)

    def stop(self) -> None:
        """Stop the polling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------- reading

    def usable(self, uuid: str) -> bool:
        """No tenant on the GPU, and none for the settle time."""
        with self._lock:
            seen = self._seen.get(uuid)
            if seen is None or seen.tenants:
                return False
            return seen.since_mono is None or self._clock() - seen.since_mono >= self.settle_s

    def states(self) -> list[GpuTenancy]:
        """Every GPU's state now, in device order."""
        held = dict(self._held())
        out = []
        for device in self.devices:
            uuid = device.info.uuid
            settled = self.usable(uuid)
            with self._lock:
                seen = self._seen[uuid]
                tenants, since = seen.tenants, seen.since_wall
            state = "held" if tenants else "running" if uuid in held else "free"
            out.append(GpuTenancy(uuid=uuid, index=device.info.index, model=device.info.model,
                                  state=state, run_id=held.get(uuid), pids=tenants,
                                  since=since, settled=settled))
        return out

    def blocked(self, model: str, count: int) -> str | None:
        """Why a run needing `count` GPUs of `model` cannot have them because of
        tenants (our own runs holding them do not count: that is a wait); None
        when it can, or when the host has fewer than `count` (the allocator fails
        such a run)."""
        mine = [d for d in self.devices if d.info.model == model]
        if len(mine) < count or sum(self.usable(d.info.uuid) for d in mine) >= count:
            return None
        reasons = []
        for state in self.states():
            if state.model != model or state.settled:
                continue
            if state.state == "held":
                reasons.append(f"foreign process {', '.join(map(str, state.pids))} on GPU "
                               f"{state.uuid}")
            else:
                reasons.append(f"GPU {state.uuid} free of tenants for less than "
                               f"FARM_GPU_SETTLE_S={self.settle_s:g} s")
        return "; ".join(reasons)


def servable(needs: Mapping[str, tuple[str, int]], watch: TenantWatch,
             busy: Mapping[str, str], waiting: Mapping[str, int]) -> set[str]:
    """The queues a worker should consume now: those with `count` GPUs of their
    model that are usable (no tenant, settled), not held by our runs, and not
    promised to runs already waiting for GPUs of that model.

    `needs`: queue → (model, GPUs per run); `busy`: uuid → run (ours);
    `waiting`: model → GPUs asked for by runs waiting in the allocator.
    """
    free: dict[str, int] = {}
    for device in watch.devices:
        uuid = device.info.uuid
        if uuid not in busy and watch.usable(uuid):
            free[device.info.model] = free.get(device.info.model, 0) + 1
    return {queue for queue, (model, count) in needs.items()
            if free.get(model, 0) - waiting.get(model, 0) >= count}
