"""Hands a host's GPUs to runs: N free GPUs of the model a run asked for, never
one GPU to two runs at once.

A worker runs as many task threads as it has GPUs. A run needing N GPUs waits
here until N GPUs of its model are free. Requests are served in arrival order,
so a 4-GPU run is not starved by a stream of 1-GPU runs taking each GPU as soon
as it frees up.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from workers.errors import PermanentError, RunAborted
from workers.gpu.base import GpuDevice


class GpuAllocator:
    """Hands N free GPUs of a model to a run, first come first served per model."""

    def __init__(self, devices: list[GpuDevice]):
        self._devices = list(devices)
        self._busy: dict[str, str] = {}          # uuid → holder
        self._waiting: deque[tuple[object, str]] = deque()   # (ticket, model)
        self._cond = threading.Condition()

    def _free_of(self, model: str) -> list[GpuDevice]:
        return [d for d in self._devices
                if d.info.model == model and d.info.uuid not in self._busy]

    def _first_waiting(self, model: str) -> tuple[object, str] | None:
        # Arrival order is kept per model: a run for another model never blocks us.
        return next((t for t in self._waiting if t[1] == model), None)

    def total(self, model: str) -> int:
        """How many GPUs of `model` this host has, busy or not."""
        return sum(1 for d in self._devices if d.info.model == model)

    def busy(self) -> dict[str, str]:
        """The GPUs held now: a copy of uuid → holder."""
        with self._cond:
            return dict(self._busy)

    @contextmanager
    def hold(self, model: str, count: int, holder: str,
             abort: threading.Event, poll_s: float = 0.2) -> Iterator[list[GpuDevice]]:
        """Block until `count` GPUs of `model` are free; yield them; free them after."""
        if self.total(model) < count:
            raise PermanentError(f"this host has {self.total(model)} GPU(s) of model {model}, "
                                 f"the run needs {count}")
        ticket = (object(), model)
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._first_waiting(model) is ticket
                           and len(self._free_of(model)) >= count):
                    if abort.is_set():
                        raise RunAborted("worker shutting down while waiting for GPUs")
                    self._cond.wait(poll_s)
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()
            granted = self._free_of(model)[:count]
            for device in granted:
                self._busy[device.info.uuid] = holder
        try:
            yield granted
        finally:
            with self._cond:
                for device in granted:
                    self._busy.pop(device.info.uuid, None)
                self._cond.notify_all()
