"""Hands a host's GPUs to runs: N free GPUs of the model a run asked for, never
one GPU to two runs at once.

A worker runs as many task threads as it has GPUs. A run needing N GPUs waits
here until N GPUs of its model are free. Requests are served in arrival order,
so a 4-GPU run is not starved by a stream of 1-GPU runs taking each GPU as soon
as it frees up. A GPU that `usable` refuses (another tenant on it, or not settled
since one left: workers/tenants.py) is not handed out; `give_up` lets a waiting
run be handed back instead of waiting out a tenant.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from workers.errors import PermanentError, RunAborted, TenantHeld
from workers.gpu.base import GpuDevice


class GpuAllocator:
    """Hands N free GPUs of a model to a run, first come first served per model."""

    def __init__(self, devices: list[GpuDevice],
                 usable: Callable[[str], bool] = lambda uuid: True,
                 on_change: Callable[[], None] | None = None):
        self._devices = list(devices)
        self._busy: dict[str, str] = {}          # uuid → holder
        self._waiting: deque[tuple[object, str, int]] = deque()   # (ticket, model, count)
        self._cond = threading.Condition()
        self.usable = usable
        # Told after GPUs are granted or freed (the worker re-decides its queues).
        self.on_change = on_change

    def _free_of(self, model: str) -> list[GpuDevice]:
        return [d for d in self._devices
                if d.info.model == model and d.info.uuid not in self._busy
                and self.usable(d.info.uuid)]

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _first_waiting(self, model: str) -> tuple[object, str, int] | None:
        # Arrival order is kept per model: a run for another model never blocks us.
        return next((t for t in self._waiting if t[1] == model), None)

    def total(self, model: str) -> int:
        """How many GPUs of `model` this host has, busy or not."""
        return sum(1 for d in self._devices if d.info.model == model)

    def busy(self) -> dict[str, str]:
        """The GPUs held now: a copy of uuid → holder."""
        with self._cond:
            return dict(self._busy)

    def waiting(self) -> dict[str, int]:
        """GPUs asked for by runs waiting now, by model."""
        with self._cond:
            out: dict[str, int] = {}
            for _, model, count in self._waiting:
                out[model] = out.get(model, 0) + count
            return out

    @contextmanager
    def hold(self, model: str, count: int, holder: str,
             abort: threading.Event, poll_s: float = 0.2,
             give_up: Callable[[], str | None] | None = None) -> Iterator[list[GpuDevice]]:
        """Block until `count` GPUs of `model` are free; yield them; free them after.

        `give_up()` is asked while waiting: a reason raises TenantHeld (hand the run back).
        """
        if self.total(model) < count:
            raise PermanentError(f"this host has {self.total(model)} GPU(s) of model {model}, "
                                 f"the run needs {count}")
        ticket = (object(), model, count)
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._first_waiting(model) is ticket
                           and len(self._free_of(model)) >= count):
                    if abort.is_set():
                        raise RunAborted("worker shutting down while waiting for GPUs")
                    reason = give_up() if give_up is not None else None
                    if reason:
                        raise TenantHeld(reason)
                    self._cond.wait(poll_s)
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()
            granted = self._free_of(model)[:count]
            for device in granted:
                self._busy[device.info.uuid] = holder
        self._changed()
        try:
            yield granted
        finally:
            with self._cond:
                for device in granted:
                    self._busy.pop(device.info.uuid, None)
                self._cond.notify_all()
            self._changed()
