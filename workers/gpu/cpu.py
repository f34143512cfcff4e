"""The host CPU as a device, for engines that run on it (vLLM's CPU build).

Energy comes from RAPL through the powercap sysfs tree: every CPU package
domain (``intel-rapl:N`` named ``package-N``) plus the package's DRAM
subdomain (``intel-rapl:N:M`` named ``dram``) where there is one. The package
domain does not include DRAM, so the two add up; ``core``/``uncore``
subdomains are inside the package and ``psys`` (platform) domains overlap it,
so neither is added. The kernel's intel_rapl driver exposes AMD Zen packages
under the same names.

RAPL is often unreadable: absent in most VMs, and ``energy_uj`` is readable
only by root on kernels patched for CVE-2020-8694. Then `energy_mj` is None
and `energy_sensor` is "none", so every window is null with a reason, never 0.
A DRAM domain that cannot be read is left out and the sensor name says so
("rapl.package" instead of "rapl.package+dram").

Each RAPL counter wraps at its own ``max_energy_range_uj`` (a 32-bit register
scaled; tens of minutes at full load). `energy_mj` is the plain sum of the
counters, so it wraps too: `energy_wraps_at_mj` gives the wrap point when every
summed domain shares one (one wrap of any domain then drops the sum by exactly
that), else None and a backwards sum is missing data. Power is the counters'
delta over time between successive reads, each domain's wrap corrected.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from farm_contract.records import GpuInfo
from workers.gpu.base import GpuDevice, GpuInventory

POWERCAP_ROOT = Path("/sys/class/powercap")
CPUINFO = Path("/proc/cpuinfo")
CPU_BACKEND = "cpu"
CPU_MODEL = "cpu"
NO_SENSOR = "none"
POWER_SENSOR = "rapl.energy_delta"
# Reads closer together than this give the previous power again: RAPL updates
# every ~1 ms, so a shorter delta is mostly quantisation noise.
MIN_POWER_INTERVAL_S = 0.01

_PACKAGE = re.compile(r"intel-rapl:(\d+)")
_SUBDOMAIN = re.compile(r"intel-rapl:(\d+):(\d+)")


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL counter that the CPU's energy sums.

    Attributes:
        label: "package-0", "dram" (as the domain's ``name`` file says).
        energy_path: its ``energy_uj`` file (Units: µJ).
        wraps_at_uj: its ``max_energy_range_uj`` (Units: µJ), None if unreadable.
    """

    label: str
    energy_path: Path
    wraps_at_uj: int | None

    @property
    def is_dram(self) -> bool:
        """Whether this counter is the DRAM domain."""
        return self.label == "dram"


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def _read_int(path: Path) -> int | None:
    try:
        return int(_read_text(path))
    except (OSError, ValueError):
        return None


def _why_unreadable(path: Path) -> str | None:
    """None if `path` holds an integer; else why not, in words."""
    try:
        int(_read_text(path))
    except PermissionError:
        return (f"permission denied reading {path} (RAPL energy is readable only by root "
                "on kernels patched for CVE-2020-8694)")
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except ValueError:
        return f"{path} does not hold a number"
    return None


def find_rapl_domains(root: Path) -> tuple[list[RaplDomain], str | None]:
    """The readable package and DRAM domains under a powercap root, and why not if none.

    Returns ([], reason) when there is no package domain or one cannot be read (a
    partial sum of packages would pass for the CPU's energy); a DRAM domain that
    cannot be read is left out silently (the sensor name shows it).
    """
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return [], f"no RAPL powercap tree at {root} (common in VMs)"
    packages: list[RaplDomain] = []
    drams: list[RaplDomain] = []
    for entry in entries:
        try:
            label = _read_text(entry / "name")
        except OSError:
            continue
        energy = entry / "energy_uj"
        domain = RaplDomain(label, energy, _read_int(entry / "max_energy_range_uj"))
        if _PACKAGE.fullmatch(entry.name) and label.startswith("package"):
            reason = _why_unreadable(energy)
            if reason is not None:
                return [], reason
            packages.append(domain)
        elif (_SUBDOMAIN.fullmatch(entry.name) and domain.is_dram
              and _why_unreadable(energy) is None):
            drams.append(domain)
    if not packages:
        return [], f"no RAPL package domain under {root} (common in VMs)"
    return packages + drams, None


class _PowerFromEnergy:
    """Average power of some counters since the previous call (W).

    The first call averages since construction. A domain that went backwards
    without a known wrap point makes that reading None (reset: no figure).
    """

    def __init__(self, domains: list[RaplDomain], clock: Callable[[], float]):
        self._domains = domains
        self._clock = clock
        self._last_s = clock()
        self._last_uj = _read_all(domains)
        self._last_w: float | None = None

    def read_w(self) -> float | None:
        now_s = self._clock()
        if now_s - self._last_s < MIN_POWER_INTERVAL_S:
            return self._last_w
        counters = _read_all(self._domains)
        delta_uj = _delta_uj(self._domains, self._last_uj, counters)
        power_w = None if delta_uj is None else delta_uj / 1e6 / (now_s - self._last_s)
        self._last_s, self._last_uj, self._last_w = now_s, counters, power_w
        return power_w


def _delta_uj(domains: list[RaplDomain], before: list[int] | None,
              after: list[int] | None) -> int | None:
    """Energy between two reads of every domain (µJ), one wrap per domain corrected."""
    if before is None or after is None:
        return None
    total = 0
    for domain, start, end in zip(domains, before, after):
        step = end - start
        if step < 0:
            if domain.wraps_at_uj is None:
                return None
            step += domain.wraps_at_uj
        total += step
    return total


def _read_all(domains: list[RaplDomain]) -> list[int] | None:
    values = [_read_int(d.energy_path) for d in domains]
    return None if any(v is None for v in values) else values  # type: ignore[return-value]


class RaplCounter:
    """The CPU's RAPL energy: packages plus DRAM, as one counter and as power.

    Attributes:
        domains: the summed domains ([] when RAPL is unusable here).
        sensor: "rapl.package+dram", "rapl.package", or "none".
        unavailable_reason: why RAPL is unusable, in words; None when it works.
        wraps_at_mj: wrap point of the summed counter (Units: mJ), or None.
    """

    def __init__(self, powercap_root: Path = POWERCAP_ROOT,
                 clock: Callable[[], float] = time.monotonic):
        self.domains, self.unavailable_reason = find_rapl_domains(powercap_root)
        kinds = ["package"] + (["dram"] if any(d.is_dram for d in self.domains) else [])
        self.sensor = "rapl." + "+".join(kinds) if self.domains else NO_SENSOR
        ranges = {d.wraps_at_uj for d in self.domains}
        self.wraps_at_mj = (ranges.pop() / 1000.0
                            if len(ranges) == 1 and None not in ranges else None)
        self._lock = threading.Lock()
        self._total = _PowerFromEnergy(self.domains, clock)
        drams = [d for d in self.domains if d.is_dram]
        self._dram = _PowerFromEnergy(drams, clock) if drams else None

    @property
    def available(self) -> bool:
        """Whether any RAPL domain could be read."""
        return bool(self.domains)

    def energy_mj(self) -> float | None:
        """Sum of the counters (Units: mJ); None when RAPL is unusable or a read fails."""
        if not self.domains:
            return None
        counters = _read_all(self.domains)
        return None if counters is None else sum(counters) / 1000.0

    def power_w(self) -> float | None:
        """Packages + DRAM power since the previous call (Units: W)."""
        if not self.domains:
            return None
        with self._lock:
            return self._total.read_w()

    def dram_power_w(self) -> float | None:
        """DRAM power since the previous call (Units: W); None without a DRAM domain."""
        if self._dram is None:
            return None
        with self._lock:
            return self._dram.read_w()


def cpu_model_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's marketing name from /proc/cpuinfo ("model name"), else "unknown CPU"."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown CPU"
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return " ".join(value.split())
    return "unknown CPU"


def cpu_info(model_name: str, host: str) -> GpuInfo:
    """The CPU's identity in the `GpuInfo` contract, backend "cpu"."""
    digest = hashlib.sha256(f"{host}\0{model_name}".encode()).hexdigest()[:12]
    return GpuInfo(index=0, uuid=f"CPU-{digest}", name=model_name, model=CPU_MODEL,
                   backend=CPU_BACKEND)


class CpuDevice(GpuDevice):
    """The host's CPUs as one device; energy and power from RAPL, else None.

    Temperature, clocks, limits and processes are not read: they are None
    (compute_pids None = "cannot list", not "free").
    """

    vendor = "cpu"

    def __init__(self, powercap_root: Path = POWERCAP_ROOT, host: str | None = None,
                 cpuinfo: Path = CPUINFO, clock: Callable[[], float] = time.monotonic):
        self.rapl = RaplCounter(powercap_root, clock)
        self.info = cpu_info(cpu_model_name(cpuinfo), host or socket.gethostname())
        self.energy_sensor = self.rapl.sensor
        self.power_sensor = POWER_SENSOR if self.rapl.available else NO_SENSOR
        self.power_source = "rapl" if self.rapl.available else NO_SENSOR
        self.energy_wraps_at_mj = self.rapl.wraps_at_mj

    @property
    def unavailable_reason(self) -> str | None:
        """Why the CPU has no energy figures here; None when RAPL works."""
        return self.rapl.unavailable_reason

    def energy_mj(self) -> float | None:
        """Sum of the RAPL counters (Units: mJ); None when RAPL is unusable."""
        return self.rapl.energy_mj()

    def power_w(self) -> float | None:
        """Average power since the previous call, from the RAPL counters."""
        return self.rapl.power_w()

    def memory_power_w(self) -> float | None:
        """DRAM power from its RAPL domain, where there is one."""
        return self.rapl.dram_power_w()

    def temperature_c(self) -> float | None:
        """Not read for a CPU: always None."""
        return None

    def compute_pids(self) -> list[int] | None:
        """Always None: the CPU's processes are not listed ("cannot list", not "free")."""
        return None


class CpuInventory(GpuInventory):
    """This host's CPU as the one device of a "cpu" backend."""

    backend = CPU_BACKEND

    def __init__(self, powercap_root: Path = POWERCAP_ROOT, host: str | None = None,
                 cpuinfo: Path = CPUINFO, clock: Callable[[], float] = time.monotonic):
        self._device = CpuDevice(powercap_root, host=host, cpuinfo=cpuinfo, clock=clock)

    def devices(self) -> list[GpuDevice]:
        """The one CPU device."""
        return [self._device]
