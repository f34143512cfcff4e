"""Which GPUs this worker serves: simulated ones or the CPU when asked, else the host's
GPUs of the first vendor that finds any (`workers.gpu.vendors`: NVML today).

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
                   cpu: bool = False,
                   vendor: str | None = None) -> GpuInventory:
    """Simulated GPUs if `sim_specs` is non-empty, the CPU if `cpu`, the GPUs of
    `vendor` if named, else those of the first vendor that finds any (NVML);
    optionally only `gpu_indices` (the CPU is index 0).

    Raises `workers.gpu.vendors.NoGpuError` on a machine without a GPU driver,
    ValueError for a bad sim spec, an unknown vendor, an index the host does not
    have, or more than one of `sim_specs`, `cpu` and `vendor`.
    """
    inventory: GpuInventory
    chosen = [what for what, asked in (("simulated GPUs", bool(sim_specs)), ("the CPU", cpu),
                                       (f"vendor {vendor}", vendor is not None)) if asked]
    if len(chosen) > 1:
        raise ValueError(f"choose {' or '.join(chosen)}, not "
                         f"{'both' if len(chosen) == 2 else 'all three'}")
    if sim_specs:
        from workers.gpu.sim import SimInventory

        # `sim_host` makes UUIDs distinct for several simulated workers on one host.
        inventory = SimInventory(sim_specs, host=sim_host)
    else:
        from workers.gpu.vendors import open_vendor_inventory

        inventory = open_vendor_inventory("cpu" if cpu else vendor)
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
