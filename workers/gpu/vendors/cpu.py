"""The host CPU as a device (`workers.gpu.cpu`, energy from RAPL), for CPU-built engines.

Chosen only when asked (`--cpu`); a child process on it is shown no accelerator
at all: every registered vendor's visible-devices variable is set empty.
"""

from __future__ import annotations

from collections.abc import Iterable

from workers.gpu.base import GpuDevice, GpuInventory
from workers.gpu.vendors import Vendor, accelerator_env_vars, register_vendor


@register_vendor
class CpuVendor(Vendor):
    """The host's CPUs as one device of the "cpu" backend."""

    name = "cpu"
    backend = "cpu"
    auto = False

    def discover(self) -> GpuInventory:
        """The CPU inventory (always one device; its energy is null where RAPL is unreadable)."""
        from workers.gpu.cpu import CpuInventory

        return CpuInventory()

    def slug_for(self, device_name: str) -> str:
        """Every CPU serves the one "cpu" queue namespace, whatever its model."""
        from workers.gpu.cpu import CPU_MODEL

        return CPU_MODEL

    def pinning_env(self, devices: Iterable[GpuDevice], use_uuids: bool = False
                    ) -> dict[str, str]:
        """Hide every accelerator from the child: it runs on the CPU."""
        return dict.fromkeys(accelerator_env_vars(), "")
