"""docs/measurement.md "How to add a sensor", executed for both seams: a GPU
vendor and an energy source, each written as the one module the docs describe,
put where the registry looks (the package's path, extended by a temporary
folder), and then used by a whole run (`run_one`, the openai engine against the
shipped mock endpoint, the tiny model's tokenizer).

The vendor also needs its catalogue entry (farm_contract/routing.py): without
it no sweep can name the GPU, so no run ever reaches its queue.
"""

from __future__ import annotations

import sys
import textwrap
import threading

import pytest

import farm_contract.routing as routing
import workers.energy as energy
import workers.gpu.vendors as vendors
from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from tests.engines.sweeps import SERVER_CLOSED, WORKER, sweep_text
from workers.gpu.cpu import CpuDevice
from workers.gpu.discovery import open_inventory, summarize
from workers.mock_openai import MockConfig, MockOpenAIServer
from workers.runner import run_one

pytestmark = pytest.mark.timeout(120)

VENDOR = '''
"""A GPU vendor (workers/gpu/vendors/fakeamd.py): its device, inventory and Vendor."""
import time

from farm_contract.records import GpuInfo
from workers.gpu.base import GpuDevice, GpuInventory
from workers.gpu.vendors import Vendor, register_vendor

WATTS = 300.0


class FakeAmdGpu(GpuDevice):
    vendor = "fakeamd"
    energy_sensor = "fakeamd.energy"
    power_sensor = "fakeamd.power"

    def __init__(self, info):
        self.info = info
        self.t0 = time.monotonic()

    def energy_mj(self):                  # a counter at a constant 300 W
        return (time.monotonic() - self.t0) * WATTS * 1000.0

    def power_w(self):
        return WATTS

    def temperature_c(self):
        return 40.0

    def compute_pids(self):
        return []


class FakeAmdInventory(GpuInventory):
    backend = "gpu"

    def __init__(self, devices):
        self._devices = devices

    def devices(self):
        return list(self._devices)


@register_vendor
class FakeAmd(Vendor):
    name = "fakeamd"
    backend = "gpu"
    visible_devices_env = "HIP_VISIBLE_DEVICES"
    priority = 5                          # tried before NVML
    name_prefixes = ("AMD INSTINCT ", "AMD ")

    def discover(self):
        return FakeAmdInventory([
            FakeAmdGpu(GpuInfo(index=0, uuid="AMD-0", name="AMD Instinct MI300X",
                               model=self.slug_for("AMD Instinct MI300X"), backend="gpu"))])
'''

SOURCE = '''
"""An energy source (workers/energy/plug.py): a smart plug at a constant 42 W."""
import time

from workers.energy import EnergySource, SourceReading, SourceSpecError, register_source_kind


@register_source_kind
class Plug(EnergySource):
    kind = "plug"
    sensor = "plug.energy"
    scope = "outlet"

    def __init__(self, name, watts):
        self.name, self.watts, self.t0 = name, watts, time.monotonic()

    def read(self):
        return SourceReading((time.monotonic() - self.t0) * self.watts)

    @classmethod
    def from_options(cls, name, options):
        if "watts" not in options:
            raise SourceSpecError("energy source plug: needs watts=")
        return cls(name, float(options["watts"]))
'''



def _plug_in(tmp_path, monkeypatch, package, filename: str, text: str) -> None:
    folder = tmp_path / package.__name__.replace(".", "_")
    folder.mkdir()
    (folder / filename).write_text(textwrap.dedent(text))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    monkeypatch.setattr(package, "_loaded", False)
    monkeypatch.delitem(sys.modules, f"{package.__name__}.{filename[:-3]}", raising=False)


@pytest.fixture
def endpoint(tiny_model):
    with MockOpenAIServer(MockConfig(ttft_s=0.01, itl_s=0.002, model="tiny")) as server:
        yield server


def _openai_run(tiny_model, url: str, gpu: str):
    args = f'base_url = "{url}"\nserved_model = "tiny"'
    scenario = SERVER_CLOSED.replace("concurrency = [1, 4]", "concurrency = [2]")
    text = sweep_text(tiny_model, scenario, engine="openai", engine_args=args)
    # No idle windows: the vendor's devices would hold a CUDA context for one.
    text = text.replace('gpu = ["cpu"]', f'gpu = ["{gpu}"]').replace(
        "idle_baseline_s = 0.5", "idle_baseline_s = 0")
    return expand(parse_sweep(text))[0]


def test_a_gpu_vendor_is_its_module_plus_its_catalogue_entry(tmp_path, monkeypatch,
                                                            tiny_model, endpoint):
    vendors.vendors()
    monkeypatch.setattr(vendors, "_VENDORS", dict(vendors._VENDORS))
    _plug_in(tmp_path, monkeypatch, vendors, "fakeamd.py", VENDOR)
    inventory = open_inventory(None)               # found without a flag: priority 5
    assert [d.info.model for d in inventory.devices()] == ["mi300x"]
    assert vendors.pinning_env(inventory.devices()) == {"HIP_VISIBLE_DEVICES": "0"}
    served = routing.queues_for_host(inventory.backend, summarize(inventory))
    assert served == ["gpu.mi300x.x1"]

    # Without a catalogue entry no sweep can name the GPU: nothing reaches that queue.
    with pytest.raises(SpecError, match="unknown GPU model 'MI300X'"):
        _openai_run(tiny_model, endpoint.url, "MI300X")
    mi300x = routing.GpuModel("mi300x", "AMD Instinct MI300X 192GB", 192, 750,
                              ("MI300X", "AMD Instinct MI300X"))
    # The entry one adds to routing.CATALOG, and what the module derives from it.
    monkeypatch.setattr(routing, "CATALOG", (*routing.CATALOG, mi300x))
    monkeypatch.setitem(routing._BY_SLUG, "mi300x", mi300x)
    for alias in ("mi300x", *mi300x.aliases):
        monkeypatch.setitem(routing._BY_ALIAS, routing._norm(alias), mi300x)

    run = _openai_run(tiny_model, endpoint.url, "MI300X")
    assert run.hardware.queue in served
    result = run_one(run, inventory.devices(), threading.Event(), worker=WORKER, attempt=1,
                     energy_sources=[])
    assert result.status == "succeeded", result.error
    assert [g.model for g in result.gpus] == ["mi300x"]
    steady = result.window("steady", 0)
    assert steady.energy_j == pytest.approx(300.0 * steady.duration_s, rel=0.05)


def test_an_energy_source_is_its_module_and_a_spec(tmp_path, monkeypatch, tiny_model,
                                                  endpoint):
    _plug_in(tmp_path, monkeypatch, energy, "plug.py", SOURCE)
    monkeypatch.setenv("FARM_ENERGY_SOURCES", "plug:watts=42;name=rack_plug")
    monkeypatch.setattr(energy, "_configured", None)     # read FARM_ENERGY_SOURCES again
    [source] = energy.configured_sources()
    assert source.kind == "plug" and source.name == "rack_plug"

    run = _openai_run(tiny_model, endpoint.url, "cpu")
    result = run_one(run, [CpuDevice()], threading.Event(), worker=WORKER, attempt=1)
    assert result.status == "succeeded", result.error
    assert [s.name for s in result.measurement.energy_sources] == ["rack_plug"]
    steady = result.window("steady", 0)
    assert steady.sources["rack_plug"].energy_j == pytest.approx(42.0 * steady.duration_s,
                                                                 rel=0.05)
