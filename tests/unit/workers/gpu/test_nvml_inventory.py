"""NVML discovery and readings against a fake NVML (tests/fake_nvml.py), patched at
the vendor boundary."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pynvml
import pytest

from farm_contract.records import GpuInfo, GpuState
from tests.fake_nvml import FakeNvml, patched
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


@pytest.fixture
def nvml() -> Iterator[FakeNvml]:
    with patched(FakeNvml()) as fake:
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
