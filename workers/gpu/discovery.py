"""Which GPUs this worker serves: simulated ones or the CPU when asked, else the host's
NVIDIA GPUs.

The worker advertises what `summarize` returns (model slug → count) and
subscribes to the matching queues (`farm.routing.queues_for_host`).
"""

from __future__ import annotations

from collections import Counter

from workers.gpu.base import GpuDevice, GpuInventory


class _Subset(GpuInventory):
    """Some GPUs of an inventory (`--gpus 0,2`); shutting it down releases the whole."""

    def __init__(self, inner: GpuInventory, devices: list[GpuDevice]):
        self.backend = inner.backend
        self._inner = inner
        self._devices = devices

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def shutdown(self) -> None:
        self._inner.shutdown()


def select_devices(devices: list[GpuDevice], indices: list[int]) -> list[GpuDevice]:
    """The devices whose `info.index` is in `indices`, in inventory order.

    Raises ValueError naming the indices this host does not have.
    """
    if not indices:
        raise ValueError("an empty list of GPU indices selects no GPU")
    wanted = set(indices)
    chosen = [d for d in devices if d.info.index in wanted]
    missing = sorted(wanted - {d.info.index for d in chosen})
    if missing:
        found = ", ".join(str(d.info.index) for d in devices) or "none"
        raise ValueError(f"no GPU with index {', '.join(map(str, missing))} on this host "
                         f"(found: {found})")
    return chosen


def open_inventory(sim_specs: list[str] | None,
                   gpu_indices: list[int] | None = None,
                   sim_host: str | None = None,
                   cpu: bool = False) -> GpuInventory:
    """Simulated GPUs if `sim_specs` is non-empty, the CPU if `cpu`, else NVML;
    optionally only `gpu_indices` (the CPU is index 0).

    Raises `workers.gpu.nvml.NoGpuError` on a machine without an NVIDIA driver,
    ValueError for a bad sim spec, an index the host does not have, or both
    `sim_specs` and `cpu`.
    """
    inventory: GpuInventory
    if sim_specs and cpu:
        raise ValueError("choose simulated GPUs or the CPU, not both")
    if cpu:
        from workers.gpu.cpu import CpuInventory

        inventory = CpuInventory()
    elif sim_specs:
        from workers.gpu.sim import SimInventory

        # `sim_host` makes UUIDs distinct for several simulated workers on one host.
        inventory = SimInventory(sim_specs, host=sim_host)
    else:
        from workers.gpu.nvml import NvmlInventory

        inventory = NvmlInventory()
    if gpu_indices is None:
        return inventory
    try:
        return _Subset(inventory, select_devices(inventory.devices(), gpu_indices))
    except ValueError:
        inventory.shutdown()
        raise


def summarize(inventory: GpuInventory) -> dict[str, int]:
    """GPU count per model slug, e.g. {"h100-80gb": 2}."""
    return dict(sorted(Counter(d.info.model for d in inventory.devices()).items()))
