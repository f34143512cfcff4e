"""The CPU as a device: RAPL energy from a fake powercap tree built in tmp_path.

The tree mirrors /sys/class/powercap: package domains ``intel-rapl:N``, their
subdomains ``intel-rapl:N:M`` (core, uncore, dram), a platform ``psys`` domain
and the MMIO duplicate of package 0, which must not be added.
"""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest

from workers.gpu.cpu import (
    CpuDevice,
    CpuInventory,
    RaplCounter,
    cpu_model_name,
)
from workers.gpu.discovery import open_inventory

RANGE_UJ = 262_143_328_850          # a common max_energy_range_uj on Intel servers


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 500.0

    def __call__(self) -> float:
        return self.now_s


class Powercap:
    """A fake /sys/class/powercap tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)
        (root / "intel-rapl").mkdir()                        # the control type: no counter
        (root / "intel-rapl" / "enabled").write_text("1\n")

    def domain(self, entry: str, name: str, energy_uj: int,
               range_uj: int | None = RANGE_UJ) -> Path:
        path = self.root / entry
        path.mkdir()
        (path / "name").write_text(f"{name}\n")
        (path / "energy_uj").write_text(f"{energy_uj}\n")
        if range_uj is not None:
            (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
        return path

    def set(self, entry: str, energy_uj: int) -> None:
        (self.root / entry / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path) -> Powercap:
    return Powercap(tmp_path / "powercap")


@pytest.fixture
def two_sockets(powercap) -> Powercap:
    """Two packages with DRAM, plus domains that overlap them and must be ignored."""
    powercap.domain("intel-rapl:0", "package-0", 1_000_000)
    powercap.domain("intel-rapl:0:0", "core", 400_000)
    powercap.domain("intel-rapl:0:1", "uncore", 50_000)
    powercap.domain("intel-rapl:0:2", "dram", 200_000)
    powercap.domain("intel-rapl:1", "package-1", 3_000_000)
    powercap.domain("intel-rapl:1:0", "dram", 100_000)
    powercap.domain("intel-rapl:2", "psys", 9_000_000)
    powercap.domain("intel-rapl-mmio:0", "package-0", 1_000_000)
    return powercap


@pytest.fixture
def denied(monkeypatch):
    """Paths whose reads fail as a non-root read of energy_uj does (tests run as root here)."""
    paths: set[Path] = set()
    real_read_text = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):
        if self in paths:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    return paths


def test_energy_sums_packages_and_their_dram_only(two_sockets):
    rapl = RaplCounter(two_sockets.root)
    assert sorted(d.label for d in rapl.domains) == ["dram", "dram", "package-0", "package-1"]
    assert rapl.energy_mj() == (1_000_000 + 200_000 + 3_000_000 + 100_000) / 1000.0
    assert rapl.sensor == "rapl.package+dram" and rapl.unavailable_reason is None
    assert rapl.wraps_at_mj == RANGE_UJ / 1000.0


def test_a_package_without_dram_domain_is_named_so(powercap):
    powercap.domain("intel-rapl:0", "package-0", 5_000)
    rapl = RaplCounter(powercap.root)
    assert rapl.sensor == "rapl.package" and rapl.energy_mj() == 5.0
    assert rapl.dram_power_w() is None


def test_one_wrap_of_the_summed_counter_is_exactly_the_wrap_point(two_sockets):
    rapl = RaplCounter(two_sockets.root)
    two_sockets.set("intel-rapl:1", RANGE_UJ - 2_000_000)
    before_mj = rapl.energy_mj()
    two_sockets.set("intel-rapl:1", 3_000_000)                  # wrapped: +5 J really
    after_mj = rapl.energy_mj()
    assert after_mj < before_mj
    # What the energy window does with a backwards counter and a known wrap point.
    assert rapl.wraps_at_mj - before_mj + after_mj == pytest.approx(5_000.0)


def test_domains_with_different_ranges_have_no_single_wrap_point(powercap):
    powercap.domain("intel-rapl:0", "package-0", 1_000, range_uj=RANGE_UJ)
    powercap.domain("intel-rapl:0:2", "dram", 1_000, range_uj=65_532_610_987)
    assert RaplCounter(powercap.root).wraps_at_mj is None


def test_power_is_the_counter_delta_over_time(two_sockets):
    clock = FakeClock()
    rapl = RaplCounter(two_sockets.root, clock=clock)
    clock.now_s += 0.5
    two_sockets.set("intel-rapl:0", 1_000_000 + 40_000_000)    # +40 J
    two_sockets.set("intel-rapl:1", 3_000_000 + 45_000_000)    # +45 J
    two_sockets.set("intel-rapl:0:2", 200_000 + 5_000_000)     # +5 J of DRAM
    assert rapl.power_w() == pytest.approx(180.0)              # 90 J / 0.5 s
    assert rapl.dram_power_w() == pytest.approx(10.0)
    clock.now_s += 0.001                                       # too soon for a new delta
    two_sockets.set("intel-rapl:0", 999_999_999)
    assert rapl.power_w() == pytest.approx(180.0)
    clock.now_s += 0.099
    two_sockets.set("intel-rapl:0", 1_000_000 + 40_000_000 + 10_000_000)  # +10 J in 0.1 s
    assert rapl.power_w() == pytest.approx(100.0)


def test_power_across_a_wrap_is_corrected_per_domain(powercap):
    clock = FakeClock()
    powercap.domain("intel-rapl:0", "package-0", RANGE_UJ - 1_000_000)
    rapl = RaplCounter(powercap.root, clock=clock)
    clock.now_s += 0.1
    powercap.set("intel-rapl:0", 9_000_000)                    # 10 J across the wrap
    assert rapl.power_w() == pytest.approx(100.0)


def test_power_is_none_for_a_backwards_counter_without_a_wrap_point(powercap):
    clock = FakeClock()
    powercap.domain("intel-rapl:0", "package-0", 5_000_000, range_uj=None)
    rapl = RaplCounter(powercap.root, clock=clock)
    assert rapl.wraps_at_mj is None
    clock.now_s += 0.1
    powercap.set("intel-rapl:0", 1_000)
    assert rapl.power_w() is None
    clock.now_s += 0.1
    powercap.set("intel-rapl:0", 1_000 + 2_000_000)            # reads resume from the reset
    assert rapl.power_w() == pytest.approx(20.0)


def test_no_powercap_tree_means_no_energy_not_zero(tmp_path):
    rapl = RaplCounter(tmp_path / "absent")
    assert rapl.energy_mj() is None and rapl.power_w() is None
    assert rapl.sensor == "none" and rapl.wraps_at_mj is None
    assert "no RAPL powercap tree" in rapl.unavailable_reason


def test_a_tree_without_package_domains_is_unavailable(powercap):
    powercap.domain("intel-rapl:0", "psys", 1_000)
    rapl = RaplCounter(powercap.root)
    assert rapl.sensor == "none" and rapl.energy_mj() is None
    assert "no RAPL package domain" in rapl.unavailable_reason


def test_an_unreadable_package_counter_makes_the_whole_cpu_unavailable(two_sockets, denied):
    denied.add(two_sockets.root / "intel-rapl:1" / "energy_uj")
    rapl = RaplCounter(two_sockets.root)
    assert rapl.energy_mj() is None and rapl.power_w() is None and rapl.sensor == "none"
    assert "permission denied" in rapl.unavailable_reason
    assert "CVE-2020-8694" in rapl.unavailable_reason


def test_an_unreadable_dram_counter_is_left_out_and_the_sensor_says_so(powercap, denied):
    powercap.domain("intel-rapl:0", "package-0", 7_000)
    powercap.domain("intel-rapl:0:2", "dram", 3_000)
    denied.add(powercap.root / "intel-rapl:0:2" / "energy_uj")
    rapl = RaplCounter(powercap.root)
    assert rapl.sensor == "rapl.package" and rapl.energy_mj() == 7.0


def test_a_counter_that_becomes_unreadable_is_missing_data(two_sockets, denied):
    rapl = RaplCounter(two_sockets.root)
    denied.add(two_sockets.root / "intel-rapl:0" / "energy_uj")
    assert rapl.energy_mj() is None


def test_cpu_model_name_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R) Xeon(R)  Platinum 8480+\n\nprocessor\t: 1\n")
    assert cpu_model_name(cpuinfo) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_model_name(tmp_path / "absent") == "unknown CPU"


def test_cpu_device_identity_and_readings(two_sockets, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC 9654 96-Core Processor\n")
    clock = FakeClock()
    device = CpuDevice(two_sockets.root, host="node-a", cpuinfo=cpuinfo, clock=clock)
    info = device.info
    assert info.backend == "cpu" and info.model == "cpu" and info.index == 0
    assert info.name == "AMD EPYC 9654 96-Core Processor" and info.uuid.startswith("CPU-")
    assert CpuDevice(two_sockets.root, host="node-a", cpuinfo=cpuinfo).info.uuid == info.uuid
    assert CpuDevice(two_sockets.root, host="node-b", cpuinfo=cpuinfo).info.uuid != info.uuid
    assert device.energy_sensor == "rapl.package+dram" and device.power_source == "rapl"
    assert device.energy_wraps_at_mj == RANGE_UJ / 1000.0
    assert device.energy_mj() == 4_300.0
    clock.now_s += 1.0
    two_sockets.set("intel-rapl:0:2", 200_000 + 7_000_000)
    assert device.power_w() == pytest.approx(7.0)
    assert device.compute_pids() is None                       # unknown, not "free"
    state = device.state()
    assert state.uuid == info.uuid and state.temperature_c is None
    assert state.sm_clock_mhz is None and state.persistence_mode is None


def test_cpu_device_without_rapl_has_no_sensor(tmp_path):
    device = CpuDevice(tmp_path / "absent", host="h")
    assert device.energy_sensor == "none" and device.power_source == "none"
    assert device.energy_mj() is None and device.power_w() is None
    assert "no RAPL powercap tree" in device.unavailable_reason


def test_cpu_inventory_and_open_inventory(two_sockets):
    inventory = CpuInventory(two_sockets.root, host="h")
    assert inventory.backend == "cpu" and len(inventory.devices()) == 1
    opened = open_inventory(None, cpu=True)
    assert opened.backend == "cpu" and [d.info.index for d in opened.devices()] == [0]


def test_open_inventory_refuses_sim_and_cpu_together():
    with pytest.raises(ValueError, match="not both"):
        open_inventory(["L4"], cpu=True)
