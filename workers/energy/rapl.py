"""The host's RAPL counters (CPU packages + DRAM) as an extra energy source.

The reading is `workers.gpu.cpu.RaplCounter`'s, the same code that measures the
CPU device: packages plus DRAM domains, each wrapping at its own range. On a
GPU host it gives the CPUs' share of a run's energy beside the GPUs'. Where
RAPL is unreadable (most VMs; non-root on kernels patched for CVE-2020-8694)
every window's figure is None with that reason. A run on the CPU device does
not read it again: its `energy_j` already is this counter.

Spec: `rapl` (options: `name=`, `powercap_root=` for another powercap tree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from workers.energy import EnergySource, SourceReading, SourceSpecError, register_source_kind
from workers.gpu.base import GpuDevice
from workers.gpu.cpu import POWERCAP_ROOT, RaplCounter

# RAPL's counters move about every millisecond.
RAPL_UPDATE_S = 0.001


@register_source_kind
class HostRapl(EnergySource):
    """CPU packages + DRAM of this host, from RAPL."""

    kind = "rapl"
    scope = "host"
    update_s = RAPL_UPDATE_S

    def __init__(self, name: str = "rapl", powercap_root: Path = POWERCAP_ROOT):
        self.name = name
        self.counter = RaplCounter(powercap_root)
        self.sensor = self.counter.sensor
        self.wraps_at_j = (None if self.counter.wraps_at_mj is None
                           else self.counter.wraps_at_mj / 1000.0)
        self._root = powercap_root

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, str]) -> HostRapl:
        """`rapl[:name=…;powercap_root=…]`."""
        unknown = sorted(set(options) - {"powercap_root"})
        if unknown:
            raise SourceSpecError(f"energy source rapl: unknown option(s) {', '.join(unknown)}")
        return cls(name, Path(options.get("powercap_root", str(POWERCAP_ROOT))))

    def read(self) -> SourceReading:
        """The summed counters (J); None with the reason where RAPL cannot be read."""
        if not self.counter.available:
            return SourceReading(None, self.counter.unavailable_reason or "RAPL unavailable")
        energy_mj = self.counter.energy_mj()
        if energy_mj is None:
            return SourceReading(None, "a RAPL counter could not be read")
        return SourceReading(energy_mj / 1000.0)

    def detail(self) -> str:
        """The powercap tree and the summed domains."""
        domains = ", ".join(d.label for d in self.counter.domains) or "none readable"
        return f"{self._root} ({domains})"

    def redundant_with(self, gpus: Sequence[GpuDevice]) -> bool:
        """A run on the CPU device already measures RAPL as its energy."""
        return any(g.info.backend == "cpu" for g in gpus)
