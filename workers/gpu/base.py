"""The GPU device seam: what the measurement path needs from a GPU.

Implementations: `nvml.NvmlGpu` (real NVIDIA GPUs through nvidia-ml-py) and
`sim.SimGpu` (a labelled simulated GPU). Readings that a device cannot provide
are None, never 0. Errors are the project's own (`workers.errors`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from farm.records import GpuInfo


class GpuDevice(ABC):
    """One GPU.

    Attributes:
        info: identity (UUID, model slug, memory, driver), fixed for the process.
        energy_sensor: name of the energy source, stored with every figure.
        power_sensor: name of the power source used for timelines.
    """

    info: GpuInfo
    energy_sensor: str
    power_sensor: str

    @abstractmethod
    def energy_mj(self) -> float | None:
        """Total energy counter since an arbitrary origin. Units: mJ.

        Monotonic while the driver stays loaded; a decrease means a reset.
        Costly on real hardware (3–18 ms): read at window edges only.
        """

    @abstractmethod
    def power_w(self) -> float | None:
        """Instantaneous board power. Units: W. Cheap; sampled in a loop."""

    @abstractmethod
    def temperature_c(self) -> float | None:
        """GPU core temperature. Units: °C."""

    @abstractmethod
    def compute_pids(self) -> list[int]:
        """PIDs of compute processes on this GPU (to spot foreign tenants)."""

    def close(self) -> None:
        """Release what the device holds (nothing by default)."""


class GpuInventory(ABC):
    """The GPUs of one host."""

    backend: str  # "gpu" | "sim"

    @abstractmethod
    def devices(self) -> list[GpuDevice]:
        """Every GPU on this host, in index order."""

    def shutdown(self) -> None:
        """Release the vendor library."""
