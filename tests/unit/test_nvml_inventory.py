"""NVML discovery and readings against a fake NVML, patched at the vendor boundary.

Every `pynvml` function the inventory calls is replaced (autospec, so a call
with the wrong arguments fails as it would on the real library) by a method of
`FakeNvml`: two H100s whose readings and failures each test sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace
from unittest import mock

import pynvml
import pytest

from workers.errors import GpuError, PermanentError
from workers.gpu.discovery import open_inventory, summarize
from workers.gpu.nvml import (
    POWER_AVERAGE_SENSOR,
    POWER_INSTANT_SENSOR,
    NoGpuError,
    NvmlInventory,
)


class FakeNvml:
    """Two "NVIDIA H100 80GB HBM3" on a driver 580 with CUDA 13.0."""

    def __init__(self) -> None:
        self.gpus = [
            {"bus": "00000000:19:00.0", "uuid": "GPU-aaaa", "energy_mj": 1_000_000,
             "instant_mw": 123_500, "average_mw": 120_000, "temp_c": 31, "pids": [4242]},
            {"bus": "00000000:9A:00.0", "uuid": "GPU-bbbb", "energy_mj": 2_000_000,
             "instant_mw": 698_000, "average_mw": 650_000, "temp_c": 64, "pids": []},
        ]
        self.failures: dict[tuple[str, int | None], int] = {}   # (function, gpu) → NVML code
        self.field_failures: dict[int, int] = {}                # gpu → per-field return code
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
        return 700_000

    def nvmlDeviceGetFieldValues(self, handle, fieldIds):
        assert list(fieldIds) == [pynvml.NVML_FI_DEV_POWER_INSTANT]
        value = pynvml.c_nvmlFieldValue_t()
        value.fieldId = pynvml.NVML_FI_DEV_POWER_INSTANT
        value.nvmlReturn = self.field_failures.get(handle, pynvml.NVML_SUCCESS)
        value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
        value.value.uiVal = self.gpus[handle]["instant_mw"]
        return [value]

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
    nvml.field_failures[1] = pynvml.NVML_ERROR_NOT_SUPPORTED
    first, second = NvmlInventory().devices()
    assert first.power_sensor == POWER_INSTANT_SENSOR
    assert second.power_sensor == POWER_AVERAGE_SENSOR
    assert second.power_w() == 650.0


def test_a_lost_gpu_is_a_transient_gpu_error_with_the_nvml_message(nvml):
    first, _ = NvmlInventory().devices()
    nvml.failures[("nvmlDeviceGetTotalEnergyConsumption", 0)] = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(GpuError, match="GPU is lost") as caught:
        first.energy_mj()
    assert caught.value.kind == "gpu"
    nvml.field_failures[0] = pynvml.NVML_ERROR_UNKNOWN
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
