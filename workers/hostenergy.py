"""CPU and RAM energy and emissions of the host over a run, through CodeCarbon.

`HostEnergyMeter(region, gpu_indices, enabled)` wraps CodeCarbon's
`OfflineEmissionsTracker` around a whole run: `start()` before, `stop()` after,
which returns a `HostEnergy` or None. CodeCarbon is optional (the `codecarbon`
extra) and never fails a run: not installed, failing to start or to stop, the
meter logs one warning per process and `stop()` returns None.

What it measures (CodeCarbon 3.3, `tracking_mode="machine"`): the whole host,
every process on it, not this run alone; runs that share a host overlap.
  CPU  RAPL / Windows EMI / Power Gadget energy counters where readable
       ("measured"), else TDP × a cubic function of system CPU load
       ("estimated"; CodeCarbon's docs put it at −60 %…+190 %).
  RAM  a DIMM-count model, ≈5 W per assumed DIMM ("estimated").
  GPU  only the run's GPUs (NVML indices, `gpu_ids`), never the others on the
       node (codecarbon#567). No GPUs given: GPU tracking is dropped, so GPU
       energy is None. The farm measures GPU energy itself (workers.power);
       this figure is a cross-check.
The method labels come from the hardware objects CodeCarbon actually sums over
(`tracker._hardware`): their class and, for a CPU, its `_mode`, the attribute
CodeCarbon's own `CPU.measure_power_and_energy` branches on to choose a counter
delta over power × time.

Zero is not a measurement: CodeCarbon reports 0 kWh for a part it has no source
for (no GPU, a GPU without energy counter or power reading, #1316). Such a part
is None here, and `note` says why.

Emissions use the country's grid intensity from CodeCarbon's bundled data
(`region`, ISO 3166-1 alpha-3). No region, or one CodeCarbon has no data for:
emissions are None (CodeCarbon would silently use a world average).

Nothing is written or sent: no CSV, API, Prometheus, Logfire or HTTP output,
no lock file (`allow_multiple_runs`), no Electricity Maps token, and every
setting that changes the figures is passed explicitly so a `.codecarbon.config`
or a `CODECARBON_*` variable on a worker cannot change them. CodeCarbon's own
logger is set to level error (process-wide).

Cost: the first start() in a process takes ≈1.6 s (CodeCarbon loads its data
files and looks the CPU model up, once per process; 2-core VM and H200 hosts
alike), later ones 0.005–0.08 s; stop() ≈1–15 ms (≈0.05–0.09 s the first time).
The window opens at the end of start(), after that set-up.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from typing import Any

from farm_contract.records import HostEnergy

log = logging.getLogger(__name__)

J_PER_KWH = 3.6e6

# CodeCarbon CPU `_mode`s backed by a hardware energy or power counter, and the
# model-based ones. Anything else is labelled None (unknown) rather than guessed.
MEASURED_CPU_MODES = {
    "intel_rapl": "RAPL energy counter",
    "windows_emi": "Windows EMI (RAPL) energy counter",
    "intel_power_gadget": "Intel Power Gadget power readings",
}
ESTIMATED_CPU_MODES = {
    "cpu_load": "TDP × load estimate",
    "constant": "constant 50 % of TDP estimate",
}

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: Any) -> None:
    """One warning per kind of failure per process; repeats go to debug."""
    with _warned_lock:
        first = key not in _warned
        _warned.add(key)
    (log.warning if first else log.debug)(message, *args)


def _kind(hw: Any) -> str:
    return type(hw).__name__


def _part(hw: Any) -> str | None:
    """Which total CodeCarbon adds this hardware object to: "cpu", "ram" or "gpu"."""
    kind = _kind(hw)
    if kind in ("CPU", "RAM", "GPU"):
        return kind.lower()
    if kind in ("AppleSiliconChip", "Raspberry"):
        return str(getattr(hw, "chip_part", "")).lower() or None
    return None


def _cpu_method(hw: Any) -> tuple[str | None, str]:
    kind = _kind(hw)
    if kind in ("AppleSiliconChip", "Raspberry"):
        return "measured", "powermetrics" if kind == "AppleSiliconChip" else "PMIC rails"
    mode = getattr(hw, "_mode", None)
    if mode in MEASURED_CPU_MODES:
        return "measured", MEASURED_CPU_MODES[mode]
    if mode in ESTIMATED_CPU_MODES:
        tdp = getattr(hw, "_tdp", None)
        model = getattr(hw, "_model", None) or "unknown CPU"
        generic = " generic" if getattr(hw, "_is_generic_tdp", False) else ""
        return "estimated", f"{ESTIMATED_CPU_MODES[mode]} ({tdp}{generic} W, {model})"
    return None, f"unknown CodeCarbon CPU mode {mode!r}"


def _ram_method(hw: Any) -> tuple[str | None, str]:
    kind = _kind(hw)
    if kind == "Raspberry":
        return "measured", "PMIC DDR rails"
    if kind == "RAM":
        forced = getattr(hw, "_force_ram_power", None)
        if forced is not None:
            return "estimated", f"constant {forced} W"
        return "estimated", "DIMM-count estimate"
    return None, f"unknown CodeCarbon RAM source {kind}"


class HostEnergyMeter:
    """CodeCarbon's offline tracker around one run. start(), then stop() once."""

    def __init__(self, region: str | None, gpu_indices: list[int] | None,
                 enabled: bool = True):
        self.region = region
        self.gpu_indices = sorted(set(gpu_indices)) if gpu_indices else []
        self.enabled = enabled
        self._tracker: Any = None
        self._version: str | None = None
        self._country: str | None = None      # what CodeCarbon computes emissions for
        self._notes: list[str] = []
        self._cpu: tuple[str | None, str] | None = None
        self._ram: tuple[str | None, str] | None = None
        self._gpu_hw: Any = None
        self._gpus: list[int] = []            # the run's GPUs CodeCarbon found
        self._started = False
        self._result: HostEnergy | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Open the window. Never raises; a failure makes stop() return None."""
        if not self.enabled or self._started:
            return
        self._started = True
        try:
            import codecarbon
            from codecarbon import OfflineEmissionsTracker
            from codecarbon.input import DataSource
        except Exception as exc:  # not installed, or broken on import
            _warn_once("import", "CodeCarbon is unavailable (%s: %s): no host CPU/RAM "
                       "energy; install the farm's codecarbon extra",
                       type(exc).__name__, exc)
            return
        try:
            self._version = codecarbon.__version__
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._country = self._resolve_country(DataSource())
            tracker = OfflineEmissionsTracker(**self._tracker_kwargs())
            self._tracker = tracker
            # The hardware probe (slow the first time): done here, outside
            # CodeCarbon's start(), which swallows exceptions.
            tracker.get_detected_hardware()
            self._adopt_hardware(tracker)
            # Anything a config file or variable set: never talk to Electricity Maps.
            tracker._electricitymaps_api_token = None
            tracker.start()
            if getattr(tracker, "_start_time", None) is None:
                raise RuntimeError("OfflineEmissionsTracker.start() did not start "
                                   "(CodeCarbon swallowed the error; its log level is error)")
        except Exception as exc:
            _warn_once("start", "CodeCarbon failed to start (%s: %s): no host CPU/RAM "
                       "energy for this run", type(exc).__name__, exc)
            self._discard()

    def stop(self) -> HostEnergy | None:
        """Close the window: the host's energy over it, or None. Never raises."""
        if self._tracker is None:
            return self._result
        tracker, self._tracker = self._tracker, None
        try:
            tracker.stop()
            data = getattr(tracker, "final_emissions_data", None)
            if data is None:
                raise RuntimeError("OfflineEmissionsTracker.stop() returned no data "
                                   "(CodeCarbon swallowed the error; its log level is error)")
            self._result = self._record(data)
        except Exception as exc:
            _warn_once("stop", "CodeCarbon failed to stop (%s: %s): no host CPU/RAM "
                       "energy for this run", type(exc).__name__, exc)
            self._result = None
        finally:
            _stop_threads(tracker)
        return self._result

    # -- setup -------------------------------------------------------------

    def _resolve_country(self, data_source: Any) -> str | None:
        if self.region is None:
            self._notes.append("no region given: no emissions")
            return None
        if self.region not in data_source.get_global_energy_mix_data():
            self._notes.append(f"region {self.region} not in CodeCarbon's energy-mix "
                               "data: no emissions")
            return None
        return self.region

    def _tracker_kwargs(self) -> dict[str, Any]:
        return dict(
            country_iso_code=self._country,
            region=None, cloud_provider=None, cloud_region=None,
            country_2letter_iso_code=None,
            # The run's GPUs only; None (none given) is handled in _adopt_hardware.
            gpu_ids=list(self.gpu_indices) or None,
            tracking_mode="machine",
            measure_power_secs=15,
            pue=1.0, wue=0.0,
            force_cpu_power=None, force_ram_power=None,
            force_mode_cpu_load=False, force_carbon_intensity_g_co2e_kwh=None,
            rapl_include_dram=False, rapl_prefer_psys=False,
            # No output of any kind, no lock file, no network.
            output_methods=[], output_handlers=[], emissions_endpoint=None,
            api_call_interval=-1, electricitymaps_api_token=None,
            allow_multiple_runs=True, output_dir=tempfile.gettempdir(),
            metadata=None, log_level="error", project_name="farm",
        )

    def _adopt_hardware(self, tracker: Any) -> None:
        """Keep only the run's GPUs; find what each part is measured with.

        GPU tracking is dropped when no GPUs are given, and also when CodeCarbon
        resolved GPUs other than the run's: its process-wide hardware cache
        replays a selection that matched no GPU as "all GPUs" (3.3.2), and a
        GPU the run does not hold must never be counted.
        """
        requested = set(self.gpu_indices)
        found_gpus = False
        keep = []
        for hw in tracker._hardware:
            part = _part(hw)
            if part == "gpu":
                if _kind(hw) != "GPU" or not requested:
                    continue
                found_gpus = True
                resolved = {int(i) for i in (getattr(hw, "gpu_ids", None) or [])}
                if not resolved or not resolved <= requested:
                    self._notes.append(f"GPU: CodeCarbon resolved NVML indices "
                                       f"{sorted(resolved)} for {sorted(requested)}: "
                                       "GPU not tracked")
                    continue
                self._gpu_hw, self._gpus = hw, sorted(resolved)
                if requested - resolved:
                    self._notes.append("GPU: CodeCarbon did not find NVML indices "
                                       f"{sorted(requested - resolved)}")
            elif part == "cpu" and self._cpu is None:
                self._cpu = _cpu_method(hw)
            elif part == "ram" and self._ram is None:
                self._ram = _ram_method(hw)
            keep.append(hw)
        tracker._hardware = keep
        if not requested:
            self._notes.append("GPU: no GPUs given")
        elif not found_gpus:
            self._notes.append("GPU: CodeCarbon found no GPU (no nvidia-smi/NVML)")

    # -- result ------------------------------------------------------------

    def _record(self, data: Any) -> HostEnergy:
        notes = list(self._notes)
        notes.append("whole host (machine mode), not this run alone")

        cpu_method, cpu_how = self._cpu or (None, "no CPU source")
        cpu_j = _joules(data.cpu_energy, "CPU", notes) if self._cpu else None
        notes.append(f"CPU: {cpu_how}")

        ram_method, ram_how = self._ram or (None, "no RAM source")
        ram_j = _joules(data.ram_energy, "RAM", notes) if self._ram else None
        if ram_how == "DIMM-count estimate" and data.ram_power and data.ram_total_size:
            ram_how += f" {data.ram_power:.3g} W for {data.ram_total_size:.0f} GB"
        notes.append(f"RAM: {ram_how}")

        gpu_j = None
        if self._gpus:
            gpu_j = _joules(data.gpu_energy, "GPU", notes)
            no_counter = [d.gpu_index for d in getattr(self._gpu_hw.devices, "devices", [])
                          if d.gpu_index in self._gpus and not getattr(d, "_has_counter", True)]
            if no_counter:
                notes.append(f"GPU {no_counter}: no energy counter, power samples × time")
            notes.append(f"GPU: NVML indices {self._gpus}")

        emissions_g = intensity = None
        if self._country is not None:
            emissions_g = float(data.emissions) * 1000.0
            if data.energy_consumed > 0:
                intensity = emissions_g / float(data.energy_consumed)
        return HostEnergy(
            tracker=f"codecarbon {self._version}",
            duration_s=float(data.duration),
            cpu_energy_j=cpu_j, cpu_method=cpu_method if cpu_j is not None else None,
            ram_energy_j=ram_j, ram_method=ram_method if ram_j is not None else None,
            gpu_energy_j=gpu_j,
            emissions_g=emissions_g,
            region=self.region,
            carbon_intensity_g_per_kwh=intensity,
            note="; ".join(notes),
        )

    def _discard(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            _stop_threads(tracker)


def _joules(kwh: Any, part: str, notes: list[str]) -> float | None:
    """kWh → J; 0 (CodeCarbon's "no source") or not a number → None with a note."""
    try:
        value = float(kwh)
    except (TypeError, ValueError):
        notes.append(f"{part}: CodeCarbon gave no figure")
        return None
    if not value > 0:
        notes.append(f"{part}: CodeCarbon reported {value:g} kWh (no source): not measured")
        return None
    return value * J_PER_KWH


def _stop_threads(tracker: Any) -> None:
    """CodeCarbon's two timer threads, stopped even when its stop() failed."""
    for name in ("_scheduler", "_scheduler_monitor_power"):
        scheduler = getattr(tracker, name, None)
        if scheduler is not None:
            try:
                scheduler.stop()
            except Exception:
                pass
