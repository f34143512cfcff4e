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

The secondary readings are simple models, honest about what NVML reports
rather than precise: `power_avg_w` is a true 1 s trailing average of the level
(as `nvmlDeviceGetPowerUsage` is on an H100, so it lags a step by a second);
memory power is an affine share of that average; the SM clock holds its boost
with power headroom and falls towards the measured capped clock at the limit,
where the "SW power cap" reason bit is set.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from farm_contract.records import GpuInfo
from farm_contract.routing import CPU_SLUG, gpu_model, parse_host_spec
from farm_contract.settings import setting, variable
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

# `power_avg_w` averages the level over this trailing window, as NVML's
# nvmlDeviceGetPowerUsage does on an H100 (FIELD_NOTES).
POWER_AVERAGE_WINDOW_S = 1.0

# Memory (HBM) power, from the 1 s average board power P:
#   memory_w = MEMORY_FLOOR_FRACTION_OF_TDP × TDP + MEMORY_SHARE_OF_POWER × P.
# Fitted to the one measurement there is (FIELD_NOTES: 32–48 W on an H100)
# under an assumption the notes do not state: 32 W at idle (77 W board) and
# 48 W at the 700 W cap, i.e. a 30 W static floor plus 2.57% of board power.
# Other models keep the H100's floor-to-TDP ratio; an assumption, not a measurement.
MEMORY_FLOOR_FRACTION_OF_TDP = 30.0 / 700.0
MEMORY_SHARE_OF_POWER = 16.0 / 623.0

# Clocks per model (MHz): (maximum SM boost clock, memory clock). Spec-sheet
# values as nvidia-smi reports them, not measured here; uncatalogued models use
# the H100's. The memory clock is constant (HBM/GDDR run at one clock under load).
CLOCKS_MHZ: dict[str, tuple[float, float]] = {
    "h100-80gb": (1980.0, 2619.0),
    "h100-pcie": (1755.0, 1593.0),
    "h100-nvl": (1785.0, 2619.0),
    "h200-141gb": (1980.0, 3201.0),
    "gh200": (1980.0, 2619.0),
    "a100-40gb": (1410.0, 1215.0),
    "a100-80gb": (1410.0, 1593.0),
    "l40s": (2520.0, 9001.0),
    "l4": (2040.0, 6251.0),
    "t4": (1590.0, 5001.0),
}
DEFAULT_CLOCKS_MHZ = CLOCKS_MHZ["h100-80gb"]
# SM clock model: the boost clock while power is below CLOCK_KNEE_FRACTION of
# the limit, then falling linearly to CAPPED_CLOCK_FRACTION × boost at the limit.
# The H100 measured ~1365 MHz at its 700 W cap under a full bf16 matmul
# (FIELD_NOTES), 1365/1980 of its boost; other models are assumed to scale
# alike. The knee is an assumption (inference at a fraction of TDP runs at boost).
CAPPED_CLOCK_FRACTION = 1365.0 / 1980.0
CLOCK_KNEE_FRACTION = 0.7
# Above this fraction of the limit the driver is holding the power cap.
POWER_CAP_FRACTION = 0.97
# nvmlClocksEventReasonSwPowerCap: the bit NVML reports for "SW power cap".
SW_POWER_CAP = 0x4


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
    slug, count = parse_host_spec(text)
    if slug == CPU_SLUG:
        raise ValueError(f"{text!r}: the CPU is not simulated; a CPU worker is `--cpu`")
    return slug, count


# A file of simulated foreign processes, {"SIM-…uuid": [pid, …]}, read at every
# compute_pids: how a test or a demo puts "someone's training job" on a simulated
# GPU of a running worker process. Simulated GPUs only; unset means none.
SIM_TENANTS_VAR = variable("sim_tenants")


def simulated_tenants() -> dict[str, list[int]]:
    """The simulated tenants by GPU UUID (none when the file is unset, absent or unreadable)."""
    path = setting("sim_tenants")
    if not path:
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):   # being rewritten, or gone: no tenant this time
        return {}
    return {str(k): [int(p) for p in v] for k, v in data.items()} if isinstance(data, dict) else {}


def _host_hash(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


class SimGpu(GpuDevice):
    """A simulated GPU whose counter integrates the power level the sim engine sets."""

    energy_sensor = "sim.energy_counter"
    power_sensor = "sim.power"
    power_source = "sim"

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
        self._boost_mhz, self._memory_mhz = CLOCKS_MHZ.get(slug, DEFAULT_CLOCKS_MHZ)
        self._clock = clock
        self._lock = threading.Lock()
        self._ripple = random.Random(uuid)
        self._context_held = False
        self._load_w: float | None = None
        self._pids: set[int] = set()
        self._since_s = clock()
        self._energy_mj = 0.0
        self._temperature_c = self._steady_temperature_c(self._level_w())
        # (since, level) of each level change within the averaging window; the
        # oldest also stands for all time before it.
        self._levels: deque[tuple[float, float]] = deque([(self._since_s, self._level_w())])

    # ------------------------------------------------------------ engine side

    def set_power_w(self, watts: float | None) -> None:
        """Set the load power level; None returns to the idle level.

        Clamped to the power limit, as the driver's power cap would.
        """
        with self._lock:
            self._advance()
            self._load_w = None if watts is None else min(max(watts, 0.0), self._limit_w)
            self._level_changed()

    def set_context(self, held: bool) -> None:
        """Whether a CUDA context is open: selects which idle level applies."""
        with self._lock:
            self._advance()
            self._context_held = held
            self._level_changed()

    def add_compute_pid(self, pid: int) -> None:
        """Show `pid` among this GPU's compute processes (a simulated engine started)."""
        with self._lock:
            self._pids.add(pid)

    def remove_compute_pid(self, pid: int) -> None:
        """Stop showing `pid` among this GPU's compute processes."""
        with self._lock:
            self._pids.discard(pid)

    # --------------------------------------------------------- process hand-off

    def handoff(self) -> dict:
        """The device's state as plain data, for a run's own process to go on from
        (`workers.runproc`): identity, counter, temperature, level, its history for
        the 1 s average, and the ripple's random state, so a run measured in
        another process reads what it would have read here. Monotonic times
        are system-wide (CLOCK_MONOTONIC), so they hold in the other process."""
        with self._lock:
            self._advance()
            version, internal, gauss = self._ripple.getstate()
            return {"slug": self.info.model, "index": self.info.index, "uuid": self.info.uuid,
                    "context_held": self._context_held, "load_w": self._load_w,
                    "since_s": self._since_s, "energy_mj": self._energy_mj,
                    "temperature_c": self._temperature_c, "levels": list(self._levels),
                    "ripple": [version, list(internal), gauss], "pids": sorted(self._pids)}

    @classmethod
    def resumed(cls, state: dict) -> SimGpu:
        """A device that goes on from `handoff()`'s state (in a run's process)."""
        gpu = cls(state["slug"], state["index"])
        gpu.info = gpu.info.model_copy(update={"uuid": state["uuid"]})
        gpu.resume(state)
        # Processes shown on it go along (a tenant a test put there); they never come
        # back with `resume`: a run process that died mid-run must not stay "on" it.
        gpu._pids = set(state["pids"])
        return gpu

    def resume(self, state: dict) -> None:
        """Take over `handoff()`'s state (the run's process's, once the run is over)."""
        with self._lock:
            self._context_held = state["context_held"]
            self._load_w = state["load_w"]
            self._since_s = state["since_s"]
            self._energy_mj = state["energy_mj"]
            self._temperature_c = state["temperature_c"]
            self._levels = deque((since, level) for since, level in state["levels"])
            version, internal, gauss = state["ripple"]
            self._ripple.setstate((version, tuple(internal), gauss))

    # ------------------------------------------------------------ device side

    def energy_mj(self) -> float | None:
        """The simulated level integrated since the device was made (Units: mJ)."""
        with self._lock:
            self._advance()
            return self._energy_mj

    def power_w(self) -> float | None:
        """The current level with a ±1% deterministic ripple, so timelines look sampled."""
        with self._lock:
            ripple = self._ripple.uniform(-RIPPLE_FRACTION, RIPPLE_FRACTION)
            return self._level_w() * (1.0 + ripple)

    def temperature_c(self) -> float | None:
        """The modelled core temperature, lagging the level (Units: °C)."""
        with self._lock:
            self._advance()
            return self._temperature_c

    def compute_pids(self) -> list[int] | None:
        """The pids added with add_compute_pid, plus the simulated tenants named for
        this GPU in the file `FARM_SIM_TENANTS` names (see `simulated_tenants`), sorted."""
        with self._lock:
            pids = set(self._pids)
        return sorted(pids | set(simulated_tenants().get(self.info.uuid, ())))

    def power_avg_w(self) -> float | None:
        """The level averaged over the last second: lags a step change by 1 s, as NVML's."""
        with self._lock:
            return self._average_w(self._clock())

    def memory_power_w(self) -> float | None:
        """An affine share of the 1 s average (see MEMORY_SHARE_OF_POWER): a model."""
        with self._lock:
            average_w = self._average_w(self._clock())
        return MEMORY_FLOOR_FRACTION_OF_TDP * self._limit_w + MEMORY_SHARE_OF_POWER * average_w

    def sm_clock_mhz(self) -> float | None:
        """Boost clock with power headroom, falling to the capped clock at the limit."""
        with self._lock:
            fraction = self._level_w() / self._limit_w
        capped_mhz = self._boost_mhz * CAPPED_CLOCK_FRACTION
        over = (fraction - CLOCK_KNEE_FRACTION) / (1.0 - CLOCK_KNEE_FRACTION)
        return self._boost_mhz - (self._boost_mhz - capped_mhz) * min(max(over, 0.0), 1.0)

    def memory_clock_mhz(self) -> float | None:
        """The model's fixed memory clock (Units: MHz)."""
        return self._memory_mhz

    def throttle_reasons(self) -> int | None:
        """0, or the "SW power cap" bit when the level is within 3% of the limit."""
        with self._lock:
            capped = self._level_w() >= POWER_CAP_FRACTION * self._limit_w
        return SW_POWER_CAP if capped else 0

    def power_limit_w(self) -> float | None:
        """The model's TDP (Units: W)."""
        return self._limit_w

    def power_management_limit_w(self) -> float | None:
        """The model's TDP (Units: W), the same as the enforced limit."""
        return self._limit_w

    def default_power_limit_w(self) -> float | None:
        """The model's TDP (Units: W), the same as the power limit."""
        return self._limit_w

    def persistence_mode(self) -> bool | None:
        """Always on."""
        return True

    # --------------------------------------------------------------- internals

    def _level_w(self) -> float:
        if self._load_w is not None:
            return self._load_w
        return idle_power_w(self.info.model, self._context_held)

    def _level_changed(self) -> None:
        """Record the new level for the trailing average; forget what left the window."""
        now_s = self._clock()
        self._levels.append((now_s, self._level_w()))
        while len(self._levels) > 1 and self._levels[1][0] <= now_s - POWER_AVERAGE_WINDOW_S:
            self._levels.popleft()

    def _average_w(self, now_s: float) -> float:
        """Mean of the piecewise-constant level over [now - window, now]."""
        start_s = now_s - POWER_AVERAGE_WINDOW_S
        levels = list(self._levels)
        energy_j = 0.0
        for i, (since_s, level_w) in enumerate(levels):
            until_s = levels[i + 1][0] if i + 1 < len(levels) else now_s
            energy_j += level_w * max(0.0, min(until_s, now_s) - max(since_s, start_s))
        # The oldest level also held before it was recorded (the GPU sat at it).
        energy_j += levels[0][1] * max(0.0, min(levels[0][0], now_s) - start_s)
        return energy_j / POWER_AVERAGE_WINDOW_S

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
        """The simulated GPUs, in index order."""
        return list(self._devices)
