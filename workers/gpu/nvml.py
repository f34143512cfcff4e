"""Real NVIDIA GPUs through nvidia-ml-py (import name `pynvml`).

Importing this module loads no driver library: `pynvml` binds libnvidia-ml
lazily, at `nvmlInit`, so a machine without a GPU can import it and fall back
to `--sim`. NVML errors are translated in one place, `_nvml`, into the
worker's own errors: an unsupported reading becomes None (missing data, never
0), anything else a transient `GpuError`, and a missing driver at start-up a
permanent `NoGpuError`.

Power timelines use the instantaneous power field (NVML_FI_DEV_POWER_INSTANT,
a per-100 ms sample) because `nvmlDeviceGetPowerUsage` is a 1 s trailing
average that under-reads windows starting with a power rise (FIELD_NOTES);
the average is the fallback only where the field is unsupported, and the
sensor name says which one a trace came from. The average stays available as
`power_avg_w`. Readings for the preflight record (clocks, limits, persistence)
are plain NVML getters, each translated through `_nvml` like the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from farm_contract.records import GpuInfo
from farm_contract.routing import slug_for_device_name
from workers.errors import GpuError
from workers.gpu.base import GpuDevice, GpuInventory, TuningRefused
from workers.gpu.vendors import NoGpuError  # re-exported: the NVML vendor raises it

T = TypeVar("T")

ENERGY_SENSOR = "nvml.total_energy_counter"
POWER_INSTANT_SENSOR = "nvml.field.power_instant"
POWER_AVERAGE_SENSOR = "nvml.power_usage_avg1s"
# How the driver decorates model names ("NVIDIA H100 80GB HBM3"); routing strips
# these for every name anyway, listed so the vendor seam says it (vendors/nvml.py).
NAME_PREFIXES = ("NVIDIA ", "TESLA ", "GEFORCE ")

# NVML_POWER_SCOPE_MEMORY; spelled out for bindings that predate the constant.
POWER_SCOPE_MEMORY = getattr(pynvml, "NVML_POWER_SCOPE_MEMORY", 2)
MEMORY_POWER_FIELD = (pynvml.NVML_FI_DEV_POWER_AVERAGE, POWER_SCOPE_MEMORY)
# Clocks-event reasons: the current name first, the deprecated one (same bitmask)
# for bindings or drivers that lack it.
_THROTTLE_FUNCTIONS = ("nvmlDeviceGetCurrentClocksEventReasons",
                       "nvmlDeviceGetCurrentClocksThrottleReasons")

# A reading the device cannot give: None, not an error.
_UNSUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
# At start-up: there is no NVIDIA driver (or library) on this machine at all.
_NO_DRIVER = frozenset({pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED})

# Field values are a C union; which member holds the number depends on its type.
_FIELD_MEMBER = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}


def _no_gpu(detail: str) -> NoGpuError:
    return NoGpuError(
        f"no NVIDIA driver or GPU was found ({detail}); to run the farm on this machine "
        "without a GPU, start the worker with simulated GPUs, e.g. `--sim H100-80GB`"
    )


def _nvml(fn: Callable[..., T], *args: Any, at_init: bool = False) -> T | None:
    """Call one NVML function; the one place where NVML errors become the worker's.

    Returns None where the device does not support the call. `at_init` marks the
    calls that discover whether a driver exists at all.
    """
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        code = getattr(exc, "value", None)
        if code in _UNSUPPORTED:
            return None
        name = getattr(fn, "__name__", "NVML call")
        if at_init and code in _NO_DRIVER:
            raise _no_gpu(f"{name}: {exc}") from exc
        raise GpuError(f"{name} failed: {exc}") from exc


def _setting(fn: Callable[..., Any], *args: Any) -> None:
    """An NVML setter: a refusal keeps the driver's words (TuningRefused), NO_PERMISSION
    marked as such (a privileged helper may do it)."""
    try:
        fn(*args)
    except pynvml.NVMLError as exc:
        code = getattr(exc, "value", None)
        name = getattr(fn, "__name__", "NVML call")
        raise TuningRefused(f"{name}: {exc}",
                            no_permission=code == pynvml.NVML_ERROR_NO_PERMISSION) from exc


def _required(fn: Callable[..., T], *args: Any, at_init: bool = False) -> T:
    """An NVML call the inventory cannot do without (count, handle, name, UUID)."""
    value = _nvml(fn, *args, at_init=at_init)
    if value is None:
        raise GpuError(f"{getattr(fn, '__name__', 'NVML call')} is not supported on this system")
    return value


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(encoded: int | None) -> str | None:
    """NVML encodes CUDA 12.4 as 12040."""
    if encoded is None:
        return None
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


def _field_number(handle: Any, field: int | tuple[int, int]) -> float:
    """One field value as a number; a per-field failure raises its NVMLError.

    `field` is a field id, or (field id, scope id) for scoped fields such as
    memory power: nvidia-ml-py copies such a pair into the request's
    `c_nvmlFieldValue_t.fieldId`/`.scopeId`.
    """
    try:
        value = pynvml.nvmlDeviceGetFieldValues(handle, [field])[0]
    except TypeError as exc:
        if not isinstance(field, tuple):
            raise
        # A binding too old to take (field, scope) pairs: the reading is unavailable.
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND) from exc
    if value.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(value.nvmlReturn)
    return float(getattr(value.value, _FIELD_MEMBER[value.valueType]))


def _instant_power_mw(handle: Any) -> float:
    return _field_number(handle, pynvml.NVML_FI_DEV_POWER_INSTANT)


def _memory_power_mw(handle: Any) -> float:
    return _field_number(handle, MEMORY_POWER_FIELD)


def _watts(milliwatts: float | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000.0


class NvmlGpu(GpuDevice):
    """One NVIDIA GPU. Readings the device does not support are None."""

    vendor = "nvml"
    energy_sensor = ENERGY_SENSOR
    counter_update_s = 0.1   # FIELD_NOTES: all readings update every ~100 ms (H100)

    def __init__(self, handle: Any, info: GpuInfo):
        self.handle = handle
        self.info = info
        # Probe the instantaneous field once; a GPU that lacks it never gains it.
        self._instant = _nvml(_instant_power_mw, handle) is not None
        self.power_sensor = POWER_INSTANT_SENSOR if self._instant else POWER_AVERAGE_SENSOR
        self.power_source = "instant" if self._instant else "average_1s"

    def energy_mj(self) -> float | None:
        """Total energy since the driver was loaded (Units: mJ); None where unsupported."""
        value = _nvml(pynvml.nvmlDeviceGetTotalEnergyConsumption, self.handle)
        return None if value is None else float(value)

    def power_w(self) -> float | None:
        """The per-100 ms instantaneous field (~7 µs), else the 1 s average."""
        if self._instant:
            return _watts(_nvml(_instant_power_mw, self.handle))
        return self.power_avg_w()

    def power_avg_w(self) -> float | None:
        """NVML's 1 s average board power (Units: W); None where unsupported."""
        return _watts(_nvml(pynvml.nvmlDeviceGetPowerUsage, self.handle))

    def memory_power_w(self) -> float | None:
        """Memory power (Units: W); None where the GPU does not report it."""
        return _watts(_nvml(_memory_power_mw, self.handle))

    def temperature_c(self) -> float | None:
        """GPU core temperature (Units: °C); None where unsupported."""
        value = _nvml(pynvml.nvmlDeviceGetTemperature, self.handle, pynvml.NVML_TEMPERATURE_GPU)
        return None if value is None else float(value)

    def sm_clock_mhz(self) -> float | None:
        """Current SM clock (Units: MHz); None where unsupported."""
        value = _nvml(pynvml.nvmlDeviceGetClockInfo, self.handle, pynvml.NVML_CLOCK_SM)
        return None if value is None else float(value)

    def memory_clock_mhz(self) -> float | None:
        """Current memory clock (Units: MHz); None where unsupported."""
        value = _nvml(pynvml.nvmlDeviceGetClockInfo, self.handle, pynvml.NVML_CLOCK_MEM)
        return None if value is None else float(value)

    def throttle_reasons(self) -> int | None:
        """Clocks-event bitmask; falls back to the deprecated "throttle reasons" call
        (same bits) where the binding or the driver lacks the new one."""
        for name in _THROTTLE_FUNCTIONS:
            fn = getattr(pynvml, name, None)
            if fn is not None and (value := _nvml(fn, self.handle)) is not None:
                return int(value)
        return None

    def utilization_pct(self) -> float | None:
        """GPU utilisation over NVML's last sample period (Units: %); None where unsupported."""
        rates = _nvml(pynvml.nvmlDeviceGetUtilizationRates, self.handle)
        return None if rates is None else float(rates.gpu)

    def power_limit_w(self) -> float | None:
        """The enforced power limit (Units: W); None where unsupported."""
        return _watts(_nvml(pynvml.nvmlDeviceGetEnforcedPowerLimit, self.handle))

    def power_management_limit_w(self) -> float | None:
        """The power-management limit (Units: W); None where unsupported."""
        return _watts(_nvml(pynvml.nvmlDeviceGetPowerManagementLimit, self.handle))

    def default_power_limit_w(self) -> float | None:
        """The default power-management limit (Units: W); None where unsupported."""
        return _watts(_nvml(pynvml.nvmlDeviceGetPowerManagementDefaultLimit, self.handle))

    def persistence_mode(self) -> bool | None:
        """Whether persistence mode is on; None where unsupported."""
        value = _nvml(pynvml.nvmlDeviceGetPersistenceMode, self.handle)
        return None if value is None else value == pynvml.NVML_FEATURE_ENABLED

    def power_limit_range_w(self) -> tuple[float, float] | None:
        """The driver's accepted power limits (Units: W); None where unsupported."""
        limits = _nvml(pynvml.nvmlDeviceGetPowerManagementLimitConstraints, self.handle)
        return None if limits is None else (limits[0] / 1000.0, limits[1] / 1000.0)

    def max_sm_clock_mhz(self) -> float | None:
        """The highest SM clock (Units: MHz); None where unsupported."""
        value = _nvml(pynvml.nvmlDeviceGetMaxClockInfo, self.handle, pynvml.NVML_CLOCK_SM)
        return None if value is None else float(value)

    def set_power_limit_w(self, watts: float) -> None:
        """nvmlDeviceSetPowerManagementLimit, in mW (root only)."""
        _setting(pynvml.nvmlDeviceSetPowerManagementLimit, self.handle, round(watts * 1000))

    def lock_sm_clock_mhz(self, mhz: int) -> None:
        """nvmlDeviceSetGpuLockedClocks(min = max = mhz) (root only)."""
        _setting(pynvml.nvmlDeviceSetGpuLockedClocks, self.handle, int(mhz), int(mhz))

    def reset_sm_clock(self) -> None:
        """nvmlDeviceResetGpuLockedClocks (root only)."""
        _setting(pynvml.nvmlDeviceResetGpuLockedClocks, self.handle)

    def compute_pids(self) -> list[int] | None:
        """Compute processes on this GPU; None where the driver cannot list them."""
        processes = _nvml(pynvml.nvmlDeviceGetComputeRunningProcesses, self.handle)
        return None if processes is None else sorted(p.pid for p in processes)


def _bus_id(handle: Any) -> str:
    pci = _nvml(pynvml.nvmlDeviceGetPciInfo, handle)
    return "" if pci is None else _text(pci.busId).lower()


def _gpu_info(index: int, handle: Any, driver_version: str | None,
              cuda_version: str | None) -> GpuInfo:
    name = _text(_required(pynvml.nvmlDeviceGetName, handle))
    memory = _nvml(pynvml.nvmlDeviceGetMemoryInfo, handle)
    return GpuInfo(
        index=index, uuid=_text(_required(pynvml.nvmlDeviceGetUUID, handle)), name=name,
        model=slug_for_device_name(name, vendor_prefixes=NAME_PREFIXES), backend="gpu",
        memory_mib=None if memory is None else int(memory.total // 2**20),
        driver_version=driver_version, cuda_version=cuda_version,
        power_limit_w=_watts(_nvml(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)),
    )


class NvmlInventory(GpuInventory):
    """The NVIDIA GPUs of this host, in PCI bus order (as CUDA_DEVICE_ORDER=PCI_BUS_ID).

    `GpuInfo.index` is the NVML index; NVML does not promise that its index
    order follows the PCI bus, so the devices are sorted by bus id explicitly.
    """

    backend = "gpu"

    def __init__(self) -> None:
        _nvml(pynvml.nvmlInit, at_init=True)
        self._open = True
        try:
            self._devices = self._discover()
        except BaseException:
            with contextlib.suppress(GpuError):  # keep the discovery error, not this one
                self.shutdown()
            raise

    def _discover(self) -> list[NvmlGpu]:
        count = _required(pynvml.nvmlDeviceGetCount, at_init=True)
        if count == 0:
            raise _no_gpu("the driver is loaded but reports no GPU")
        driver = _nvml(pynvml.nvmlSystemGetDriverVersion)
        driver_version = None if driver is None else _text(driver)
        cuda_version = _cuda_version(_nvml(pynvml.nvmlSystemGetCudaDriverVersion))
        handles = [(i, _required(pynvml.nvmlDeviceGetHandleByIndex, i)) for i in range(count)]
        handles.sort(key=lambda item: (_bus_id(item[1]), item[0]))
        return [NvmlGpu(handle, _gpu_info(i, handle, driver_version, cuda_version))
                for i, handle in handles]

    def devices(self) -> list[GpuDevice]:
        """The GPUs, in PCI bus order."""
        return list(self._devices)

    def shutdown(self) -> None:
        """Release NVML once; later calls do nothing."""
        if self._open:
            self._open = False
            _nvml(pynvml.nvmlShutdown)

