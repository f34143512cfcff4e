"""Idle power, measured for every run on the run's own GPUs.

Two baselines (DESIGN.md: an H100 idles at ~77 W with no CUDA context and
~124 W with one): `idle` with nothing on the GPUs, and `idle_ctx` with a CUDA
context held by a small helper process and nothing running. Results carry both,
so gross, net-of-idle and idle-amortised figures can all be derived.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from farm_contract.records import EnergyWindow, IdleBaseline
from workers.errors import RunAborted
from workers.gpu.base import GpuDevice
from workers.gpu.vendors import pinning_env
from workers.power import Meter

CONTEXT_READY_TIMEOUT_S = 120.0

# Runs in a child process: opens a CUDA context on every visible GPU, allocates
# a few bytes so the context is real, says so, and holds it until stdin closes.
_HOLDER = (
    "import sys, torch\n"
    "held = [torch.zeros(1, device=f'cuda:{i}') for i in range(torch.cuda.device_count())]\n"
    "torch.cuda.synchronize()\n"
    "print('ready', len(held), flush=True)\n"
    "sys.stdin.read()\n"
)


class ContextUnavailable(Exception):
    """No way to hold a CUDA context here (no torch, no CUDA): the window is null."""


@contextmanager
def cuda_context(gpus: list[GpuDevice], pids: set[int]) -> Iterator[None]:
    """Hold a CUDA context on `gpus` from a child process (its pid added to `pids`)."""
    backend = {g.info.backend for g in gpus}
    if backend == {"sim"}:
        for gpu in gpus:
            gpu.set_context(True)  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for gpu in gpus:
                gpu.set_context(False)  # type: ignore[attr-defined]
        return
    if backend != {"gpu"}:
        raise ContextUnavailable("no CUDA context on this device kind")
    env = {**os.environ, **pinning_env(gpus, use_uuids=True)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            start_new_session=True)
    pids.add(proc.pid)
    try:
        line = _first_line(proc)
        if not line.startswith("ready"):
            raise ContextUnavailable(f"could not open a CUDA context: "
                                     f"{proc.stderr.read()[-500:] if proc.stderr else line}")
        yield
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pids.discard(proc.pid)


def _first_line(proc: subprocess.Popen) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(CONTEXT_READY_TIMEOUT_S)
    return result[0].strip() if result else ""


def _idle_window(meter: Meter, name: str, seconds: float, abort: threading.Event
                 ) -> EnergyWindow:
    # Tick-aligned edges: nothing changes across them, and at 5 s one counter
    # update's energy is 2% of the window (workers.power.Meter._read_ticks).
    meter.begin(name, align=True)
    if abort.wait(seconds):
        raise RunAborted(f"worker shutting down during the {name} baseline")
    return meter.end(name, align=True)


def measure_baselines(meter: Meter, gpus: list[GpuDevice], seconds: float,
                      abort: threading.Event, pids: set[int]) -> IdleBaseline:
    """Both idle windows, each `seconds` long; a missing one is null with a reason."""
    if seconds <= 0:
        return IdleBaseline()
    idle = _idle_window(meter, "idle", seconds, abort)
    try:
        with cuda_context(gpus, pids):
            idle_ctx = _idle_window(meter, "idle_ctx", seconds, abort)
    except ContextUnavailable as exc:
        now = meter.now_s()
        meter.windows.append(EnergyWindow(name="idle_ctx", start_s=round(now, 4),
                                          duration_s=0.0, energy_j=None,
                                          null_reason=str(exc)))
        return IdleBaseline(idle_power_w=idle.avg_power_w)
    return IdleBaseline(idle_power_w=idle.avg_power_w, idle_ctx_power_w=idle_ctx.avg_power_w)
