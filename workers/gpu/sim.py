"""A labelled simulated GPU, so the whole farm runs without NVIDIA hardware.

`SimGpu` behaves like a real GPU towards the measurement path: its energy
counter integrates a piecewise-constant power level over real monotonic time,
so `workers.power.Meter` and `PowerSampler` measure it with exactly the code
they use on NVML. The sim engine sets that power level (`set_power_w`) from its
performance model; with no load set, the GPU sits at one of two idle levels,
depending on whether a CUDA context is held (`set_context`).

Every identity string says "sim": UUIDs start with ``SIM-``, names with
"Simulated", the backend is "sim", so a simulated figure can never pass for a
measured one.
"""

from __future__ import annotations

import hashlib
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable

from farm.records import GpuInfo
from farm.routing import gpu_model, parse_host_spec
from workers.gpu.base import GpuDevice, GpuInventory

# Idle board power per GPU: (no CUDA context, CUDA context held), watts.
# Only the H100 figures are measured (FIELD_NOTES: 76.7 W without a context,
# ~124 W with one, driver 580). The others are assumptions, not measurements:
# typical nvidia-smi readings at P8 (no context) and P0 (context, no work) for
# those boards, rounded; they keep the ratio seen on the H100 (context ≈ 1.6×)
# and give low-TDP inference cards (L4, T4) their known low idle.
IDLE_POWER_W: dict[str, tuple[float, float]] = {
    "h100-80gb": (77.0, 124.0),    # measured, FIELD_NOTES
    "h100-pcie": (48.0, 78.0),     # assumed
    "h100-nvl": (55.0, 90.0),      # assumed
    "h200-141gb": (80.0, 130.0),   # assumed: H100 board with more HBM
    "a100-40gb": (52.0, 68.0),     # assumed
    "a100-80gb": (60.0, 80.0),     # assumed
    "l4": (16.0, 28.0),            # assumed
    "t4": (10.0, 27.0),            # assumed
}
# Fallback for models not in the table: the H100's idle/TDP ratios
# (77/700 = 0.11 without a context, 124/700 = 0.177 with one).
IDLE_FRACTION_OF_TDP = (0.11, 0.177)

AMBIENT_C = 28.0
# Steady temperature rise at TDP: the H100 settles at ~64 °C at 700 W (FIELD_NOTES).
RISE_AT_TDP_C = 36.0
THERMAL_TIME_CONSTANT_S = 20.0
RIPPLE_FRACTION = 0.01


def idle_power_w(slug: str, context_held: bool) -> float:
    """Idle board power of one GPU of model `slug`, with or without a CUDA context."""
    levels = IDLE_POWER_W.get(slug)
    if levels is None:
        model = gpu_model(slug)
        if model is None:
            raise ValueError(f"no simulated GPU model {slug!r}")
        levels = (model.tdp_w * IDLE_FRACTION_OF_TDP[0], model.tdp_w * IDLE_FRACTION_OF_TDP[1])
    return levels[1] if context_held else levels[0]


def parse_sim_spec(text: str) -> tuple[str, int]:
    """Parse "H100-80GB", "H100-80GBx2" or "sim:L4x4" into (catalogue slug, count).

    The grammar is the farm's one host-spec grammar (`farm.routing.parse_host_spec`),
    so a worker's `--sim` and the queues it serves can never disagree. Raises
    ValueError naming the bad text.
    """
    return parse_host_spec(text)


def _host_hash(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


class SimGpu(GpuDevice):
    """A simulated GPU whose counter integrates the power level the sim engine sets."""

    energy_sensor = "sim.energy_counter"
    power_sensor = "sim.power"

    def __init__(self, slug: str, index: int, host: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        model = gpu_model(slug)
        if model is None:
            raise ValueError(f"no simulated GPU model {slug!r}")
        uuid = f"SIM-{slug}-{_host_hash(host or socket.gethostname())}-{index}"
        self.info = GpuInfo(
            index=index, uuid=uuid, name=f"Simulated {model.display}", model=slug,
            backend="sim", memory_mib=model.memory_gb * 1024, driver_version="sim",
            power_limit_w=float(model.tdp_w),
        )
        self._limit_w = float(model.tdp_w)
        self._clock = clock
        self._lock = threading.Lock()
        self._ripple = random.Random(uuid)
        self._context_held = False
        self._load_w: float | None = None
        self._pids: set[int] = set()
        self._since_s = clock()
        self._energy_mj = 0.0
        self._temperature_c = self._steady_temperature_c(self._level_w())

    # ------------------------------------------------------------ engine side

    def set_power_w(self, watts: float | None) -> None:
        """Set the load power level; None returns to the idle level.

        Clamped to the power limit, as the driver's power cap would.
        """
        with self._lock:
            self._advance()
            self._load_w = None if watts is None else min(max(watts, 0.0), self._limit_w)

    def set_context(self, held: bool) -> None:
        """Whether a CUDA context is open: selects which idle level applies."""
        with self._lock:
            self._advance()
            self._context_held = held

    def add_compute_pid(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def remove_compute_pid(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    # ------------------------------------------------------------ device side

    def energy_mj(self) -> float | None:
        with self._lock:
            self._advance()
            return self._energy_mj

    def power_w(self) -> float | None:
        """The current level with a ±1% deterministic ripple, so timelines look sampled."""
        with self._lock:
            ripple = self._ripple.uniform(-RIPPLE_FRACTION, RIPPLE_FRACTION)
            return self._level_w() * (1.0 + ripple)

    def temperature_c(self) -> float | None:
        with self._lock:
            self._advance()
            return self._temperature_c

    def compute_pids(self) -> list[int]:
        with self._lock:
            return sorted(self._pids)

    # --------------------------------------------------------------- internals

    def _level_w(self) -> float:
        if self._load_w is not None:
            return self._load_w
        return idle_power_w(self.info.model, self._context_held)

    def _steady_temperature_c(self, power_w: float) -> float:
        return AMBIENT_C + RISE_AT_TDP_C * power_w / self._limit_w

    def _advance(self) -> None:
        """Integrate energy and temperature up to now; exact for a constant level.

        Called under the lock before every change of level, so each interval
        between changes is integrated at the level it actually had.
        """
        now_s = self._clock()
        elapsed_s = max(0.0, now_s - self._since_s)
        level_w = self._level_w()
        self._energy_mj += level_w * elapsed_s * 1000.0
        target_c = self._steady_temperature_c(level_w)
        decay = math.exp(-elapsed_s / THERMAL_TIME_CONSTANT_S)
        self._temperature_c = target_c + (self._temperature_c - target_c) * decay
        self._since_s = now_s


class SimInventory(GpuInventory):
    """The simulated GPUs of one host, from specs like ["H100-80GBx2", "sim:L4"].

    Several specs make a mixed host; indices run on across them in spec order.
    """

    backend = "sim"

    def __init__(self, specs: str | Iterable[str], host: str | None = None):
        spec_list = [specs] if isinstance(specs, str) else list(specs)
        if not spec_list:
            raise ValueError("no simulated GPU spec given; write e.g. --sim H100-80GB")
        host = host or socket.gethostname()
        self._devices: list[SimGpu] = []
        for spec in spec_list:
            slug, count = parse_sim_spec(spec)
            for _ in range(count):
                self._devices.append(SimGpu(slug, len(self._devices), host=host))

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)
