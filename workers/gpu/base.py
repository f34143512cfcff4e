"""The device seam: what the measurement path needs from an accelerator.

Implementations: `nvml.NvmlGpu` (real NVIDIA GPUs through nvidia-ml-py),
`sim.SimGpu` (a labelled simulated GPU) and `cpu.CpuDevice` (the host CPU, for
engines that run on it, energy from RAPL). How each real kind is discovered,
named and pinned is its vendor's (`workers.gpu.vendors`). Readings that a device cannot
provide are None, never 0. Errors are the project's own (`workers.errors`).

The abstract methods are what every device must answer (possibly with None);
the other readings default to None so that a device only implements what it
has. Per-sample readings (`power_w`, `memory_power_w`, `temperature_c`,
`sm_clock_mhz`, `throttle_reasons`) must stay cheap: the timeline sampler calls
them at ~10 Hz.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from farm_contract.records import GpuInfo, GpuState


class TuningRefused(Exception):
    """The driver would not set a power limit or clock lock; the message is its words.

    `no_permission` marks the refusal a privileged helper can get round (NVML's
    NO_PERMISSION: the worker is not root).
    """

    def __init__(self, message: str, *, no_permission: bool = False):
        super().__init__(message)
        self.no_permission = no_permission


class GpuDevice(ABC):
    """One GPU (or the CPU standing in for one).

    Attributes:
        info: identity (UUID, model slug, memory, driver), fixed for the process.
        energy_sensor: name of the energy source, stored with every figure;
            "none" where the device has no energy counter.
        power_sensor: name of the power source used for timelines.
        power_source: which power reading `power_w` returns, in short:
            "instant" (NVML per-100 ms field), "average_1s" (NVML 1 s trailing
            average), "sim", "rapl" (energy-counter deltas) or "none".
        energy_wraps_at_mj: value at which `energy_mj` wraps back to 0 (mJ), or
            None where the counter never wraps in practice (NVML's 64-bit mJ
            counter). Lets the energy window correct a backwards counter when
            exactly one wrap is plausible.
        vendor: the registry name of the device's vendor (`workers.gpu.vendors`:
            "nvml", "cpu"), which pins child processes to it; None for
            simulated devices.
    """

    info: GpuInfo
    vendor: str | None = None
    energy_sensor: str
    power_sensor: str
    power_source: str = "none"
    energy_wraps_at_mj: float | None = None
    # How often the energy counter moves (s): a window shorter than twice this
    # cannot be measured by counter deltas (NVML updates every ~100 ms).
    counter_update_s: float = 0.0

    @abstractmethod
    def energy_mj(self) -> float | None:
        """Total energy counter since an arbitrary origin. Units: mJ.

        Monotonic while the driver stays loaded, except for a wrap at
        `energy_wraps_at_mj`; any other decrease means a reset.
        Costly on real hardware (3–18 ms): read at window edges only.
        """

    @abstractmethod
    def power_w(self) -> float | None:
        """Board power, as fresh as the device gives it. Units: W. Cheap; sampled in a loop.

        `power_source` says which reading this is.
        """

    @abstractmethod
    def temperature_c(self) -> float | None:
        """GPU core temperature. Units: °C."""

    @abstractmethod
    def compute_pids(self) -> list[int] | None:
        """PIDs of compute processes on this GPU (to spot foreign tenants), sorted.

        None means "unknown": the driver cannot list processes here. That is not
        the same as [] (listed, and there are none): a caller checking for
        tenants must not read None as "free".
        """

    def power_avg_w(self) -> float | None:
        """Board power averaged over the last second. Units: W.

        NVML: `nvmlDeviceGetPowerUsage`, a 1 s trailing average on H100 (it
        under-reads a window that starts with a power rise).
        """
        return None

    def memory_power_w(self) -> float | None:
        """Power of the memory subsystem (HBM), averaged. Units: W.

        NVML: field NVML_FI_DEV_POWER_AVERAGE with scope "memory" (32–48 W on H100).
        """
        return None

    def sm_clock_mhz(self) -> float | None:
        """Current SM (graphics) clock. Units: MHz."""
        return None

    def memory_clock_mhz(self) -> float | None:
        """Current memory clock. Units: MHz."""
        return None

    def throttle_reasons(self) -> int | None:
        """Why clocks are below their maximum now, as NVML's clocks-event bitmask.

        0 = not held back; 0x4 = software power cap, 0x1 = idle, 0x20/0x40 =
        thermal (see `nvmlClocksEventReason*` in pynvml). Units: bitmask.
        """
        return None

    def utilization_pct(self) -> float | None:
        """Share of the last sample period in which a kernel ran. Units: %.

        NVML: `nvmlDeviceGetUtilizationRates().gpu` (a period of 1/6 s to 1 s,
        by product); 0 on a GPU at rest, whether or not a context is open.
        """
        return None

    def power_limit_w(self) -> float | None:
        """Power limit the driver enforces now. Units: W."""
        return None

    def power_management_limit_w(self) -> float | None:
        """Power limit set by the power-management setting (what `set_power_limit_w`
        changes). Units: W. The enforced limit (`power_limit_w`) is the lowest of
        this and other limits (e.g. an out-of-band one), so the two can differ.
        """
        return None

    def default_power_limit_w(self) -> float | None:
        """Power limit at default settings (what the limit is reset to). Units: W."""
        return None

    def persistence_mode(self) -> bool | None:
        """Whether the driver stays loaded with no client (persistence mode on)."""
        return None

    # Settings a sweep may set for a run (`workers.gpu.tuning`); a device that
    # cannot refuses with the reason (TuningRefused).

    def power_limit_range_w(self) -> tuple[float, float] | None:
        """The lowest and highest power limit the driver accepts. Units: W."""
        return None

    def max_sm_clock_mhz(self) -> float | None:
        """The highest SM clock the GPU supports. Units: MHz."""
        return None

    def set_power_limit_w(self, watts: float) -> None:
        """Set the power-management limit. Units: W. Raises TuningRefused."""
        raise TuningRefused(f"{type(self).__name__} has no settable power limit")

    def lock_sm_clock_mhz(self, mhz: int) -> None:
        """Lock the SM clock at `mhz` (min = max). Units: MHz. Raises TuningRefused."""
        raise TuningRefused(f"{type(self).__name__} has no lockable SM clock")

    def reset_sm_clock(self) -> None:
        """Undo a clock lock (the driver's own clock management). Raises TuningRefused."""
        raise TuningRefused(f"{type(self).__name__} has no lockable SM clock")

    def state(self) -> GpuState:
        """The device's settings and condition now, for a run's preflight record.

        `foreign_pids` is left empty and `idle_temperature_c` unset: the caller,
        which knows the run's own processes and the idle reference, fills them.
        """
        return GpuState(
            uuid=self.info.uuid, temperature_c=self.temperature_c(),
            power_limit_w=self.power_limit_w(),
            default_power_limit_w=self.default_power_limit_w(),
            sm_clock_mhz=self.sm_clock_mhz(), memory_clock_mhz=self.memory_clock_mhz(),
            persistence_mode=self.persistence_mode(),
        )

    def close(self) -> None:
        """Release what the device holds (nothing by default)."""


class GpuInventory(ABC):
    """The devices of one host."""

    backend: str  # "gpu" | "sim" | "cpu"

    @abstractmethod
    def devices(self) -> list[GpuDevice]:
        """Every device on this host, in index order."""

    def shutdown(self) -> None:
        """Release the vendor library."""
