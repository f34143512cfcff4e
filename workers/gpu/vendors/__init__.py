"""The vendor seam: how the worker finds, names and pins one kind of accelerator.

A vendor is one module in this package defining a `Vendor` subclass registered
with `@register_vendor`. It says

- `discover()`: the host's devices of that kind (a `GpuInventory`), or
  `NoGpuError` where the vendor's driver or devices are absent;
- `visible_devices_env`: the variable that pins a child process to some devices
  (`CUDA_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`), and `pinning_env()`, the
  whole environment that does it;
- `slug_for(name)`: the canonical model slug of a device name as the driver
  reports it (`farm_contract.routing.slug_for_device_name`, after the vendor's
  own prefixes are stripped).

Every module of this package is imported the first time the registry is asked,
so a new vendor (AMD through amdsmi, say) is one new file here; a vendor module
must import its vendor library lazily (inside `discover`), so that a host
without it can still import the module. Simulated GPUs are not a vendor: they
are opened from `--sim` specs by `workers.gpu.discovery` and never pinned.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar, TypeVar

from farm_contract.routing import slug_for_device_name
from workers.errors import PermanentError
from workers.gpu.base import GpuDevice, GpuInventory

log = logging.getLogger(__name__)

V = TypeVar("V", bound="type[Vendor]")


class NoGpuError(PermanentError):
    """No driver or device of a vendor on this machine: a worker for it cannot start here."""

    kind = "no_gpu"


class Vendor(ABC):
    """One kind of accelerator (or the CPU standing in for one).

    Attributes:
        name: the vendor's registry name, also each of its devices' `vendor`
            ("nvml", "cpu", "amdsmi").
        backend: the `GpuInfo.backend` of its devices ("gpu" or "cpu"); it names
            the queue namespace (`farm_contract.routing.queue_for`).
        visible_devices_env: the variable that limits a child process to some
            devices, or None where the devices are not pinned by one (the CPU).
        auto: whether `open_vendor_inventory` tries this vendor when none is named.
        priority: order in which auto vendors are tried (lower first).
        name_prefixes: upper-case prefixes the driver puts before model names
            ("AMD INSTINCT "), stripped before the name is matched.
    """

    name: ClassVar[str]
    backend: ClassVar[str]
    visible_devices_env: ClassVar[str | None] = None
    auto: ClassVar[bool] = True
    priority: ClassVar[int] = 100
    name_prefixes: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def discover(self) -> GpuInventory:
        """This host's devices of the vendor, in index order.

        Raises `NoGpuError` where the vendor's driver or devices are absent.
        """

    def slug_for(self, device_name: str) -> str:
        """Canonical model slug of a device name as this vendor's driver reports it."""
        return slug_for_device_name(device_name, vendor_prefixes=self.name_prefixes)

    def pinning_env(self, devices: Iterable[GpuDevice], use_uuids: bool = False
                    ) -> dict[str, str]:
        """Environment variables that show a child process exactly `devices`.

        By index unless `use_uuids`; empty where the vendor has no such variable.
        """
        if self.visible_devices_env is None:
            return {}
        ids = [d.info.uuid if use_uuids else str(d.info.index) for d in devices]
        return {self.visible_devices_env: ",".join(ids)}


_VENDORS: dict[str, Vendor] = {}
_loaded = False


def register_vendor(cls: V) -> V:
    """Class decorator: make a `Vendor` subclass known under its `name`."""
    name = cls.name
    if name in _VENDORS and type(_VENDORS[name]) is not cls:
        raise ValueError(f"two vendors named {name!r}: {type(_VENDORS[name]).__name__} "
                         f"and {cls.__name__}")
    _VENDORS[name] = cls()
    return cls


def _load_vendor_modules() -> None:
    """Import every module of this package once (each registers its vendor)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules(__path__):
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except ImportError as exc:   # its library is missing here: the vendor is not offered
            log.info("GPU vendor module %s not loaded: %s", module.name, exc)


def vendors() -> list[Vendor]:
    """Every registered vendor, auto vendors in the order they are tried first."""
    _load_vendor_modules()
    return sorted(_VENDORS.values(), key=lambda v: (not v.auto, v.priority, v.name))


def vendor_named(name: str) -> Vendor:
    """The vendor registered as `name`; ValueError naming the known ones otherwise."""
    _load_vendor_modules()
    try:
        return _VENDORS[name]
    except KeyError:
        known = ", ".join(sorted(_VENDORS)) or "none"
        raise ValueError(f"unknown GPU vendor {name!r}; known: {known}") from None


def vendor_of(device: GpuDevice) -> Vendor | None:
    """The vendor of a device: its `vendor` attribute, else the first vendor of its
    backend; None for simulated devices (they have none)."""
    name = getattr(device, "vendor", None)
    if name:
        return vendor_named(name)
    for vendor in vendors():
        if vendor.backend == device.info.backend:
            return vendor
    return None


def pinning_env(devices: list[GpuDevice], use_uuids: bool = False) -> dict[str, str]:
    """The environment that pins a child process to `devices` (one vendor's).

    ValueError for devices of several vendors, or of none (simulated).
    """
    found = {id(v): v for v in (vendor_of(d) for d in devices) if v is not None}
    if len(found) != 1 or any(vendor_of(d) is None for d in devices):
        names = sorted({getattr(d, "vendor", None) or d.info.backend for d in devices})
        raise ValueError(f"cannot pin a process to devices of {', '.join(names) or 'no vendor'}:"
                         " one vendor's real devices are needed")
    return next(iter(found.values())).pinning_env(devices, use_uuids=use_uuids)


def accelerator_env_vars() -> list[str]:
    """Every registered vendor's visible-devices variable (to hide them all)."""
    return sorted({v.visible_devices_env for v in vendors() if v.visible_devices_env})


def open_vendor_inventory(name: str | None = None) -> GpuInventory:
    """The inventory of vendor `name`, else of the first auto vendor that finds devices.

    Raises the `NoGpuError` of the first vendor tried when no vendor finds any
    (with the others' reasons appended), ValueError for an unknown name.
    """
    if name is not None:
        return vendor_named(name).discover()
    errors: list[NoGpuError] = []
    for vendor in vendors():
        if not vendor.auto:
            continue
        try:
            return vendor.discover()
        except NoGpuError as exc:
            errors.append(exc)
    if not errors:
        raise NoGpuError("no GPU vendor is available on this worker")
    if len(errors) > 1:
        first = errors[0]
        raise type(first)("; ".join(str(e) for e in errors)) from first
    raise errors[0]
