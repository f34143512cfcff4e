"""The vendor seam: discovery, pinning and name → slug per vendor, one module each."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from farm_contract.records import GpuInfo
from tests.fake_nvml import FakeNvml, patched
from workers.engines.launch import engine_env
from workers.gpu import vendors
from workers.gpu.base import GpuDevice, GpuInventory
from workers.gpu.discovery import open_inventory, summarize
from workers.gpu.sim import SimInventory
from workers.gpu.vendors import (
    NoGpuError,
    Vendor,
    open_vendor_inventory,
    pinning_env,
    register_vendor,
    vendor_named,
    vendor_of,
)


class _FakeAmdGpu(GpuDevice):
    vendor = "fake-amd"
    energy_sensor = "fake.energy"
    power_sensor = "fake.power"

    def __init__(self, info: GpuInfo):
        self.info = info

    def energy_mj(self):
        return 1000.0

    def power_w(self):
        return 90.0

    def temperature_c(self):
        return 35.0

    def compute_pids(self):
        return []


class _FakeAmdInventory(GpuInventory):
    backend = "gpu"

    def __init__(self, devices: list[GpuDevice]):
        self._devices = devices

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)


@pytest.fixture
def fake_amd(monkeypatch) -> Iterator[dict]:
    """A second GPU vendor registered for one test, the way an amdsmi module would be."""
    vendors.vendors()                                   # load the shipped ones first
    monkeypatch.setattr(vendors, "_VENDORS", dict(vendors._VENDORS))
    state = {"present": True}

    @register_vendor
    class FakeAmdVendor(Vendor):
        name = "fake-amd"
        backend = "gpu"
        visible_devices_env = "HIP_VISIBLE_DEVICES"
        priority = 20
        name_prefixes = ("AMD INSTINCT ", "AMD ")

        def discover(self) -> GpuInventory:
            if not state["present"]:
                raise NoGpuError("no amdgpu driver (fake)")
            names = ["AMD Instinct MI300X", "AMD Instinct MI300X"]
            return _FakeAmdInventory([
                _FakeAmdGpu(GpuInfo(index=i, uuid=f"AMD-{i}", name=name,
                                    model=self.slug_for(name), backend="gpu"))
                for i, name in enumerate(names)])

    yield state


def test_the_shipped_vendors_register_themselves_when_the_package_is_asked():
    # A fresh interpreter: nothing but the package is imported, its modules are found.
    code = ("from workers.gpu.vendors import vendors; "
            "print(' '.join(f'{v.name}:{v.backend}:{v.auto}' for v in vendors()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["nvml:gpu:True", "cpu:cpu:False"]


def test_nvml_and_cpu_pin_as_before():
    gpus = [_Dev("gpu", 2), _Dev("gpu", 5)]
    assert vendor_named("nvml").pinning_env(gpus) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                                     "CUDA_VISIBLE_DEVICES": "2,5"}
    assert pinning_env(gpus, use_uuids=True)["CUDA_VISIBLE_DEVICES"] == "U2,U5"
    assert pinning_env([_Dev("cpu")]) == {"CUDA_VISIBLE_DEVICES": ""}
    assert vendor_named("nvml").slug_for("NVIDIA H100 80GB HBM3") == "h100-80gb"
    assert vendor_named("cpu").slug_for("AMD EPYC 9654 96-Core Processor") == "cpu"


def test_simulated_or_mixed_devices_cannot_be_pinned():
    with pytest.raises(ValueError, match="sim"):
        pinning_env(SimInventory("L4").devices())
    with pytest.raises(ValueError, match="cpu, gpu"):
        pinning_env([_Dev("gpu"), _Dev("cpu")])


def test_unknown_vendor_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known: cpu, nvml"):
        open_inventory(None, vendor="voodoo")
    with pytest.raises(ValueError, match="not both"):
        open_inventory(None, cpu=True, vendor="nvml")


def test_a_new_vendor_is_one_registered_class(fake_amd):
    inventory = open_inventory(None, [1], vendor="fake-amd")
    device = inventory.devices()[0]
    assert device.info.model == "mi300x" and device.info.index == 1
    assert summarize(inventory) == {"mi300x": 1}
    assert vendor_of(device).name == "fake-amd"
    # Its own variable pins it, for the engines and the context holder alike.
    assert pinning_env([device]) == {"HIP_VISIBLE_DEVICES": "1"}
    assert engine_env([device], base={})["HIP_VISIBLE_DEVICES"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in engine_env([device], base={})
    # A CPU engine is shown neither vendor's GPUs.
    assert pinning_env([_Dev("cpu")]) == {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}


def test_auto_discovery_falls_through_vendors_without_devices(fake_amd):
    fake = FakeNvml()
    fake.handle_order = []                              # an NVIDIA driver with no GPU
    with patched(fake):
        inventory = open_vendor_inventory()
        assert {d.vendor for d in inventory.devices()} == {"fake-amd"}
        fake_amd["present"] = False
        with pytest.raises(NoGpuError,
                           match=r"reports no GPU\).*--sim.*; no amdgpu driver \(fake\)"):
            open_inventory(None)


def test_nvml_is_found_first_when_present(fake_amd):
    with patched(FakeNvml()):
        inventory = open_inventory(None)
        assert [d.vendor for d in inventory.devices()] == ["nvml", "nvml"]
        assert summarize(inventory) == {"h100-80gb": 2}
        inventory.shutdown()


class _Dev:
    def __init__(self, backend: str, index: int = 0):
        self.info = GpuInfo(index=index, uuid=f"U{index}", name="x", model="h100-80gb",
                            backend=backend)
