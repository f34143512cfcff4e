"""NVIDIA GPUs through NVML (`workers.gpu.nvml`), pinned with CUDA_VISIBLE_DEVICES.

Importing pynvml loads no driver library (it binds at `nvmlInit`), so this
module imports on any host.

CUDA counts devices in PCI bus order once `CUDA_DEVICE_ORDER=PCI_BUS_ID`, the
order `NvmlInventory` lists them in, so a child pinned by index sees the same
GPUs the worker measures.
"""

from __future__ import annotations

from collections.abc import Iterable

from workers.gpu.base import GpuDevice, GpuInventory
from workers.gpu.nvml import NAME_PREFIXES, NvmlInventory  # pynvml binds the driver lazily
from workers.gpu.vendors import Vendor, register_vendor


@register_vendor
class NvmlVendor(Vendor):
    """The host's NVIDIA GPUs; the default vendor of a real-GPU worker."""

    name = "nvml"
    backend = "gpu"
    visible_devices_env = "CUDA_VISIBLE_DEVICES"
    priority = 10

    name_prefixes = NAME_PREFIXES

    def discover(self) -> GpuInventory:
        """Every NVIDIA GPU, through NVML; `NoGpuError` without a driver or GPUs."""
        return NvmlInventory()

    def pinning_env(self, devices: Iterable[GpuDevice], use_uuids: bool = False
                    ) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES, with CUDA counting in PCI bus order as NVML's list does."""
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                **super().pinning_env(devices, use_uuids=use_uuids)}
