"""NVML discovery and readings against a fake NVML, patched at the vendor boundary.

Every `pynvml` function the inventory calls is replaced (autospec, so a call
with the wrong arguments fails as it would on the real library) by a method of
`FakeNvml`: two H100s whose readings and failures each test sets.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace
from unittest import mock

import pynvml
import pytest

from farm.records import GpuInfo, GpuState
from workers.errors import GpuError, PermanentError
from workers.gpu.discovery import open_inventory, summarize
from workers.gpu.nvml import (
    POWER_AVERAGE_SENSOR,
    POWER_INSTANT_SENSOR,
    NoGpuError,
    NvmlGpu,
    NvmlInventory,
)

INSTANT = pynvml.NVML_FI_DEV_POWER_INSTANT
MEMORY = (pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_POWER_SCOPE_MEMORY)


class FakeNvml:
    """Two "NVIDIA H100 80GB HBM3" on a driver 580 with CUDA 13.0."""

    def __init__(self) -> None:
        self.gpus = [
            {"bus": "00000000:19:00.0", "uuid": "GPU-aaaa", "energy_mj": 1_000_000,
             "instant_mw": 123_500, "average_mw": 120_000, "memory_mw": 32_250,
             "temp_c": 31, "pids": [4242], "sm_mhz": 1980, "mem_mhz": 2619, "reasons": 0x1,
             "limit_mw": 700_000, "default_limit_mw": 700_000, "persistence": 1},
            {"bus": "00000000:9A:00.0", "uuid": "GPU-bbbb", "energy_mj": 2_000_000,
             "instant_mw": 698_000, "average_mw": 650_000, "memory_mw": 47_500,
             "temp_c": 64, "pids": [], "sm_mhz": 1365, "mem_mhz": 2619, "reasons": 0x4,
             "limit_mw": 500_000, "default_limit_mw": 700_000, "persistence": 0},
        ]
        self.failures: dict[tuple[str, int | None], int] = {}   # (function, gpu) → NVML code
        # (gpu, field id or (field id, scope id)) → per-field return code
        self.field_failures: dict[tuple[int, int | tuple[int, int]], int] = {}
        self.field_requests: list[list] = []                    # fieldIds of every call
        self.handle_order = [0, 1]                              # NVML index → fake GPU
        self.shutdowns = 0

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
        return {pynvml.NVML_CLOCK_SM: gpu["sm_mhz"], pynvml.NVML_CLOCK_MEM: gpu["mem_mhz"]}[type]

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

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in gpu["pids"]]


PATCHED = [name for name in vars(FakeNvml) if name.startswith("nvml")]


@pytest.fixture
def nvml() -> Iterator[FakeNvml]:
    fake = FakeNvml()
    with ExitStack() as stack:
        for name in PATCHED:
            stack.enter_context(mock.patch.object(
                pynvml, name, autospec=True, side_effect=getattr(fake, name)))
        yield fake


def test_discovers_two_h100s_with_their_identity(nvml):
    inventory = NvmlInventory()
    devices = inventory.devices()
    assert inventory.backend == "gpu"
    assert [d.info.index for d in devices] == [0, 1]
    info = devices[0].info
    assert info.uuid == "GPU-aaaa" and info.name == "NVIDIA H100 80GB HBM3"
    assert info.model == "h100-80gb" and info.backend == "gpu"
    assert info.memory_mib == 81559 and info.power_limit_w == 700.0
    assert info.driver_version == "580.159.04" and info.cuda_version == "13.0"
    assert summarize(inventory) == {"h100-80gb": 2}
    inventory.shutdown()
    inventory.shutdown()
    assert nvml.shutdowns == 1


def test_devices_come_in_pci_bus_order_whatever_the_nvml_order(nvml):
    nvml.handle_order = [1, 0]          # NVML index 0 is the GPU on bus 9A
    devices = NvmlInventory().devices()
    assert [d.info.uuid for d in devices] == ["GPU-aaaa", "GPU-bbbb"]
    assert [d.info.index for d in devices] == [1, 0]


def test_readings_in_project_units(nvml):
    first, second = NvmlInventory().devices()
    assert first.energy_mj() == 1_000_000.0
    assert first.power_sensor == POWER_INSTANT_SENSOR
    assert first.power_w() == 123.5 and second.power_w() == 698.0
    assert first.temperature_c() == 31.0
    assert first.compute_pids() == [4242] and second.compute_pids() == []
    assert first.energy_sensor == "nvml.total_energy_counter"


def test_unsupported_readings_are_none_not_zero(nvml):
    nvml.failures[("nvmlDeviceGetTotalEnergyConsumption", 1)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    nvml.failures[("nvmlDeviceGetTemperature", 1)] = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    first, second = NvmlInventory().devices()
    assert second.energy_mj() is None and second.temperature_c() is None
    assert first.energy_mj() == 1_000_000.0


def test_power_falls_back_to_the_one_second_average_without_the_instant_field(nvml):
    nvml.field_failures[(1, INSTANT)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    first, second = NvmlInventory().devices()
    assert first.power_sensor == POWER_INSTANT_SENSOR and first.power_source == "instant"
    assert second.power_sensor == POWER_AVERAGE_SENSOR and second.power_source == "average_1s"
    assert second.power_w() == 650.0


def test_a_lost_gpu_is_a_transient_gpu_error_with_the_nvml_message(nvml):
    first, _ = NvmlInventory().devices()
    nvml.failures[("nvmlDeviceGetTotalEnergyConsumption", 0)] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(GpuError, match="GPU is lost") as caught:
        first.energy_mj()
    assert caught.value.kind == "gpu"
    nvml.field_failures[(0, INSTANT)] = pynvml.NVML_ERROR_UNKNOWN
    with pytest.raises(GpuError, match="Unknown Error"):
        first.power_w()


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                                  pynvml.NVML_ERROR_LIBRARY_NOT_FOUND])
def test_no_driver_is_a_clear_permanent_error_suggesting_sim(nvml, code):
    nvml.failures[("nvmlInit", None)] = code
    with pytest.raises(NoGpuError, match="no NVIDIA driver or GPU .*--sim") as caught:
        open_inventory(None, None)
    assert isinstance(caught.value, PermanentError)


def test_a_driver_without_gpus_is_no_gpu_too(nvml):
    nvml.handle_order = []
    with pytest.raises(NoGpuError, match="reports no GPU"):
        NvmlInventory()
    assert nvml.shutdowns == 1


def test_other_init_failures_are_transient(nvml):
    nvml.failures[("nvmlInit", None)] = pynvml.NVML_ERROR_TIMEOUT
    with pytest.raises(GpuError, match="Timeout"):
        NvmlInventory()


def test_open_inventory_selects_nvml_indices(nvml):
    inventory = open_inventory(None, [1])
    assert [d.info.uuid for d in inventory.devices()] == ["GPU-bbbb"]
    inventory.shutdown()
    assert nvml.shutdowns == 1


# ---------------------------------------------------------------- preflight and timeline readings


def test_more_readings_in_project_units(nvml):
    first, second = NvmlInventory().devices()
    assert first.power_avg_w() == 120.0 and second.power_avg_w() == 650.0
    assert first.memory_power_w() == 32.25 and second.memory_power_w() == 47.5
    assert first.sm_clock_mhz() == 1980.0 and second.sm_clock_mhz() == 1365.0
    assert first.memory_clock_mhz() == 2619.0
    assert first.throttle_reasons() == 0x1
    assert second.throttle_reasons() == pynvml.nvmlClocksEventReasonSwPowerCap
    assert second.power_limit_w() == 500.0 and second.default_power_limit_w() == 700.0
    assert first.persistence_mode() is True and second.persistence_mode() is False
    assert first.energy_wraps_at_mj is None          # a 64-bit mJ counter: never in practice


def test_memory_power_asks_for_the_average_power_field_with_the_memory_scope(nvml):
    first, _ = NvmlInventory().devices()
    nvml.field_requests.clear()
    first.memory_power_w()
    assert nvml.field_requests == [[(185, 2)]]        # NVML_FI_DEV_POWER_AVERAGE, scope memory
    nvml.field_requests.clear()
    first.power_w()                                    # the hot path: one field, no scope
    assert nvml.field_requests == [[INSTANT]]


def test_memory_power_scope_reaches_the_c_struct_through_the_real_binding(monkeypatch):
    """Through pynvml's own nvmlDeviceGetFieldValues: only the C function is faked."""
    requested = []

    def fake_get_field_values(handle, count, values_ref):
        values = values_ref._obj                       # the c_nvmlFieldValue_t array
        for i in range(count.value):
            requested.append((values[i].fieldId, values[i].scopeId))
            values[i].nvmlReturn = pynvml.NVML_SUCCESS
            values[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            values[i].value.uiVal = 40_000
        return pynvml.NVML_SUCCESS

    def function_pointer(name):
        assert name == "nvmlDeviceGetFieldValues"
        return fake_get_field_values

    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", function_pointer)
    info = GpuInfo(index=0, uuid="GPU-x", name="NVIDIA H100 80GB HBM3", model="h100-80gb",
                   backend="gpu")
    gpu = NvmlGpu(ctypes.c_void_p(), info)
    requested.clear()
    assert gpu.memory_power_w() == 40.0
    assert requested == [(pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_POWER_SCOPE_MEMORY)]


@pytest.mark.parametrize("reading,function", [
    ("power_avg_w", "nvmlDeviceGetPowerUsage"),
    ("sm_clock_mhz", "nvmlDeviceGetClockInfo"),
    ("memory_clock_mhz", "nvmlDeviceGetClockInfo"),
    ("throttle_reasons", "nvmlDeviceGetCurrentClocksEventReasons"),
    ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit"),
    ("default_power_limit_w", "nvmlDeviceGetPowerManagementDefaultLimit"),
    ("persistence_mode", "nvmlDeviceGetPersistenceMode"),
    ("compute_pids", "nvmlDeviceGetComputeRunningProcesses"),
])
def test_each_new_reading_unsupported_is_none_and_a_lost_gpu_is_a_gpu_error(nvml, reading,
                                                                            function):
    first, _ = NvmlInventory().devices()
    nvml.failures[(function, 0)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    if reading == "throttle_reasons":      # the deprecated call is tried too; it fails alike
        nvml.failures[("nvmlDeviceGetCurrentClocksThrottleReasons", 0)] = (
            pynvml.NVML_ERROR_NOT_SUPPORTED)
    assert getattr(first, reading)() is None
    nvml.failures[(function, 0)] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(GpuError, match=f"{function} failed: GPU is lost"):
        getattr(first, reading)()


def test_memory_power_unsupported_is_none_and_other_field_failures_are_gpu_errors(nvml):
    first, _ = NvmlInventory().devices()
    nvml.field_failures[(0, MEMORY)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert first.memory_power_w() is None
    assert first.power_w() == 123.5                 # the other field is unaffected
    nvml.field_failures[(0, MEMORY)] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(GpuError, match="GPU is lost"):
        first.memory_power_w()


def test_compute_pids_unknown_is_none_not_an_empty_list(nvml):
    first, second = NvmlInventory().devices()
    nvml.failures[("nvmlDeviceGetComputeRunningProcesses", 0)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert first.compute_pids() is None
    assert second.compute_pids() == []               # listed, and nobody there


def test_throttle_reasons_fall_back_to_the_deprecated_call_where_the_driver_lacks_the_new(nvml):
    first, _ = NvmlInventory().devices()
    nvml.failures[("nvmlDeviceGetCurrentClocksEventReasons", 0)] = (
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    assert first.throttle_reasons() == 0x1
    assert pynvml.nvmlDeviceGetCurrentClocksThrottleReasons.call_count == 1


def test_throttle_reasons_fall_back_where_the_binding_lacks_the_new_call(nvml, monkeypatch):
    first, _ = NvmlInventory().devices()
    monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
    assert first.throttle_reasons() == 0x1
    assert pynvml.nvmlDeviceGetCurrentClocksThrottleReasons.call_count == 1


def test_state_composes_the_preflight_readings(nvml):
    _, second = NvmlInventory().devices()
    assert second.state() == GpuState(
        uuid="GPU-bbbb", temperature_c=64.0, power_limit_w=500.0, default_power_limit_w=700.0,
        sm_clock_mhz=1365.0, memory_clock_mhz=2619.0, persistence_mode=False, foreign_pids=[])


def test_state_keeps_what_the_driver_does_not_say_as_none(nvml):
    first, _ = NvmlInventory().devices()
    nvml.failures[("nvmlDeviceGetClockInfo", 0)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    nvml.failures[("nvmlDeviceGetPersistenceMode", 0)] = pynvml.NVML_ERROR_NOT_SUPPORTED
    state = first.state()
    assert state.sm_clock_mhz is None and state.memory_clock_mhz is None
    assert state.persistence_mode is None and state.power_limit_w == 700.0
