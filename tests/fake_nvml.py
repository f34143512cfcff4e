"""A fake NVML for tests, patched at the vendor boundary (the `pynvml` module).

Every `pynvml` function the worker calls is replaced (autospec, so a call with
the wrong arguments fails as it would on the real library) by a method of
`FakeNvml`: two H100s whose readings and failures each test sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from unittest import mock

import pynvml

INSTANT = pynvml.NVML_FI_DEV_POWER_INSTANT
MEMORY = (pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_POWER_SCOPE_MEMORY)


class FakeNvml:
    """Two "NVIDIA H100 80GB HBM3" on a driver 580 with CUDA 13.0."""

    def __init__(self) -> None:
        self.gpus = [
            {"bus": "00000000:19:00.0", "uuid": "GPU-aaaa", "energy_mj": 1_000_000,
             "instant_mw": 123_500, "average_mw": 120_000, "memory_mw": 32_250,
             "temp_c": 31, "pids": [4242], "sm_mhz": 1980, "mem_mhz": 2619, "reasons": 0x1,
             "limit_mw": 700_000, "default_limit_mw": 700_000, "persistence": 1,
             "util_pct": 0},
            {"bus": "00000000:9A:00.0", "uuid": "GPU-bbbb", "energy_mj": 2_000_000,
             "instant_mw": 698_000, "average_mw": 650_000, "memory_mw": 47_500,
             "temp_c": 64, "pids": [], "sm_mhz": 1365, "mem_mhz": 2619, "reasons": 0x4,
             "limit_mw": 500_000, "default_limit_mw": 700_000, "persistence": 0,
             "util_pct": 97},
        ]
        self.failures: dict[tuple[str, int | None], int] = {}   # (function, gpu) → NVML code
        # (gpu, field id or (field id, scope id)) → per-field return code
        self.field_failures: dict[tuple[int, int | tuple[int, int]], int] = {}
        self.field_requests: list[list] = []                    # fieldIds of every call
        self.handle_order = [0, 1]                              # NVML index → fake GPU
        self.shutdowns = 0
        for gpu in self.gpus:
            # Power limits the driver accepts (mW), the SM clock's maximum, a clock
            # lock (None: none) and whether the GPU holds it (False: the reading
            # stays at sm_mhz, as under a power cap).
            gpu.update(limit_range_mw=(200_000, 700_000), max_sm_mhz=1980,
                       locked_mhz=None, lock_holds=True)
        self.settings_calls: list[tuple] = []                   # (function, gpu, *args)

    def _check(self, name: str, gpu: int | None = None) -> None:
        code = self.failures.get((name, gpu))
        if code is not None:
            raise pynvml.NVMLError(code)

    def _gpu(self, name: str, handle: int) -> dict:
        self._check(name, handle)
        return self.gpus[handle]

    def nvmlInit(self):
        self._check("nvmlInit")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        self._check("nvmlDeviceGetCount")
        return len(self.handle_order)

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.handle_order[index]

    def nvmlDeviceGetPciInfo(self, handle):
        return SimpleNamespace(busId=self.gpus[handle]["bus"].encode())

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        return self.gpus[handle]["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        return SimpleNamespace(total=81559 * 2**20, used=0, free=81559 * 2**20)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle)["limit_mw"]

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return self._gpu("nvmlDeviceGetPowerManagementLimit", handle)["limit_mw"]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle):
        return self._gpu("nvmlDeviceGetPowerManagementDefaultLimit", handle)["default_limit_mw"]

    def nvmlDeviceGetFieldValues(self, handle, fieldIds):
        """Field values as the real binding returns them: one c_nvmlFieldValue_t each."""
        self.field_requests.append(list(fieldIds))
        readings = {INSTANT: "instant_mw", MEMORY: "memory_mw"}
        values = []
        for field in fieldIds:
            assert field in readings, f"unexpected field request {field!r}"
            value = pynvml.c_nvmlFieldValue_t()
            value.fieldId, value.scopeId = field if isinstance(field, tuple) else (field, 0)
            value.nvmlReturn = self.field_failures.get((handle, field), pynvml.NVML_SUCCESS)
            value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            value.value.uiVal = self.gpus[handle][readings[field]]
            values.append(value)
        return values

    def nvmlDeviceGetClockInfo(self, handle, type):
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        sm_mhz = gpu["locked_mhz"] if gpu["locked_mhz"] and gpu["lock_holds"] else gpu["sm_mhz"]
        return {pynvml.NVML_CLOCK_SM: sm_mhz, pynvml.NVML_CLOCK_MEM: gpu["mem_mhz"]}[type]

    def nvmlDeviceGetMaxClockInfo(self, handle, type):
        assert type == pynvml.NVML_CLOCK_SM
        return self._gpu("nvmlDeviceGetMaxClockInfo", handle)["max_sm_mhz"]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._check("nvmlDeviceGetHandleByUUID")
        for index, gpu in enumerate(self.gpus):
            if gpu["uuid"] == (uuid.decode() if isinstance(uuid, bytes) else uuid):
                return index
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle):
        gpu = self._gpu("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return list(gpu["limit_range_mw"])

    # Setters: root only on a real driver (a test sets NVML_ERROR_NO_PERMISSION
    # in `failures` to be the unprivileged worker).

    def nvmlDeviceSetPowerManagementLimit(self, handle, limit):
        gpu = self._gpu("nvmlDeviceSetPowerManagementLimit", handle)
        low, high = gpu["limit_range_mw"]
        if not low <= limit <= high:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.settings_calls.append(("set_power_limit", handle, limit))
        gpu["limit_mw"] = limit

    def nvmlDeviceSetGpuLockedClocks(self, handle, minGpuClockMHz, maxGpuClockMHz):
        gpu = self._gpu("nvmlDeviceSetGpuLockedClocks", handle)
        if not 0 < minGpuClockMHz <= maxGpuClockMHz <= gpu["max_sm_mhz"]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self.settings_calls.append(("lock_clocks", handle, minGpuClockMHz, maxGpuClockMHz))
        gpu["locked_mhz"] = maxGpuClockMHz

    def nvmlDeviceResetGpuLockedClocks(self, handle):
        gpu = self._gpu("nvmlDeviceResetGpuLockedClocks", handle)
        self.settings_calls.append(("reset_clocks", handle))
        gpu["locked_mhz"] = None

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle)["reasons"]

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle)["reasons"]

    def nvmlDeviceGetPersistenceMode(self, handle):
        return self._gpu("nvmlDeviceGetPersistenceMode", handle)["persistence"]

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._gpu("nvmlDeviceGetPowerUsage", handle)["average_mw"]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle)["energy_mj"]

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._gpu("nvmlDeviceGetTemperature", handle)["temp_c"]

    def nvmlDeviceGetUtilizationRates(self, handle):
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=gpu["util_pct"], memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in gpu["pids"]]


PATCHED = [name for name in vars(FakeNvml) if name.startswith("nvml")]


@contextmanager
def patched(fake: FakeNvml) -> Iterator[FakeNvml]:
    """Route every NVML call the worker makes to `fake` (methods looked up per call,
    so a subclass may compute readings live)."""
    with ExitStack() as stack:
        for name in PATCHED:
            stack.enter_context(mock.patch.object(
                pynvml, name, autospec=True,
                side_effect=lambda *a, _n=name, **k: getattr(fake, _n)(*a, **k)))
        yield fake
