"""HostEnergyMeter against the real CodeCarbon (offline tracker) on this machine."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time

import pytest

from workers import hostenergy
from workers.hostenergy import HostEnergyMeter

codecarbon = pytest.importorskip("codecarbon", reason="the codecarbon extra is a dev dependency")
from codecarbon.core.cpu import is_rapl_available  # noqa: E402

HAS_NVIDIA = shutil.which("nvidia-smi") is not None
CPU_METHOD = "measured" if is_rapl_available() else "estimated"


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(region, gpus=None, seconds=0.3, work=busy):
    meter = HostEnergyMeter(region, gpus, True)
    meter.start()
    work(seconds)
    return meter.stop()


@pytest.fixture(scope="module", autouse=True)
def warm():
    """CodeCarbon's first start in a process loads its data and probes the CPU (~2 s)."""
    assert measure("FRA", seconds=0.05) is not None


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(hostenergy, "_warned", set())


def test_cpu_ram_and_emissions_with_a_region():
    result = measure("FRA", seconds=1.0)
    assert result is not None
    assert result.tracker == f"codecarbon {codecarbon.__version__}"
    assert 0.9 < result.duration_s < 2.0
    assert result.cpu_energy_j > 0 and result.cpu_method == CPU_METHOD
    assert result.ram_energy_j > 0 and result.ram_method == "estimated"
    assert result.gpu_energy_j is None
    assert result.region == "FRA"
    assert result.emissions_g > 0
    # France's grid in CodeCarbon's data: tens of g/kWh, and emissions follow from it.
    assert 10 < result.carbon_intensity_g_per_kwh < 200
    total_kwh = (result.cpu_energy_j + result.ram_energy_j) / 3.6e6
    assert result.emissions_g == pytest.approx(total_kwh * result.carbon_intensity_g_per_kwh)
    assert "whole host" in result.note and "GPU: no GPUs given" in result.note


def test_busy_cpu_costs_more_than_idle_when_estimated():
    if CPU_METHOD != "estimated":
        pytest.skip("RAPL readable: CPU energy is measured, not load-based")
    idle = measure("FRA", seconds=0.6, work=time.sleep)
    loaded = measure("FRA", seconds=0.6)
    assert loaded.cpu_energy_j / loaded.duration_s > idle.cpu_energy_j / idle.duration_s
    assert "TDP × load estimate" in loaded.note


def test_no_region_no_emissions():
    result = measure(None)
    assert result.cpu_energy_j > 0 and result.ram_energy_j > 0
    assert result.emissions_g is None and result.carbon_intensity_g_per_kwh is None
    assert result.region is None
    assert "no region given" in result.note


def test_region_codecarbon_has_no_data_for_gives_no_emissions():
    result = measure("ZZZ")
    assert result.emissions_g is None and result.region == "ZZZ"
    assert "ZZZ not in CodeCarbon" in result.note


@pytest.mark.skipif(HAS_NVIDIA, reason="checks a host without NVIDIA GPUs")
def test_gpus_on_a_host_without_nvidia_are_none_not_zero():
    result = measure("FRA", gpus=[0, 1])
    assert result.gpu_energy_j is None
    assert "found no GPU" in result.note


def test_only_the_runs_gpus_are_passed(monkeypatch):
    seen = {}
    real = codecarbon.OfflineEmissionsTracker

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", spy)
    assert measure("FRA", gpus=[3, 1, 3]) is not None
    assert seen["gpu_ids"] == [1, 3]
    assert seen["output_methods"] == [] and seen["allow_multiple_runs"] is True


def test_gpu_tracking_is_dropped_when_no_gpus_are_given():
    class GPU:
        gpu_ids = (0, 1)

    class RAM:
        _force_ram_power = None

    class CPU:
        _mode, _tdp, _model = "intel_rapl", 250, "Xeon"

    tracker = type("Tracker", (), {"_hardware": [RAM(), CPU(), GPU()]})()
    meter = HostEnergyMeter("FRA", None, True)
    meter._adopt_hardware(tracker)
    assert [type(h).__name__ for h in tracker._hardware] == ["RAM", "CPU"]
    assert meter._cpu[0] == "measured" and meter._ram[0] == "estimated"
    assert meter._gpus == []


@pytest.mark.parametrize(("requested", "resolved", "kept"), [
    ([1], (1,), [1]),
    ([1, 2], (1,), [1]),            # index 2 not on the host: noted, 1 still tracked
    ([5], (), []),                  # nothing matched
    ([5], (0, 1, 2, 3), []),        # CodeCarbon's cache replays "no match" as all GPUs
])
def test_only_the_runs_gpus_are_ever_tracked(requested, resolved, kept):
    gpu = type("GPU", (), {"gpu_ids": resolved})()
    tracker = type("Tracker", (), {"_hardware": [gpu]})()
    meter = HostEnergyMeter("FRA", requested, True)
    meter._adopt_hardware(tracker)
    assert meter._gpus == kept
    assert tracker._hardware == ([gpu] if kept else [])
    assert ("GPU not tracked" in " ".join(meter._notes)) == (not kept)


@pytest.mark.parametrize(("mode", "method"), [
    ("intel_rapl", "measured"), ("windows_emi", "measured"),
    ("intel_power_gadget", "measured"), ("cpu_load", "estimated"),
    ("constant", "estimated"), ("something_new", None),
])
def test_cpu_method_follows_codecarbons_mode(mode, method):
    cpu = type("CPU", (), {"_mode": mode, "_tdp": 85, "_model": "x"})()
    assert hostenergy._cpu_method(cpu)[0] == method


def test_zero_from_codecarbon_is_not_measured():
    notes: list[str] = []
    assert hostenergy._joules(0.0, "GPU", notes) is None
    assert "GPU: CodeCarbon reported 0 kWh" in notes[0]
    assert hostenergy._joules(1e-6, "CPU", notes) == pytest.approx(3.6)


def test_nothing_is_written_and_codecarbon_settings_are_ignored(tmp_path, monkeypatch):
    baseline = measure("FRA")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # CodeCarbon's output_dir
    monkeypatch.setenv("CODECARBON_SAVE_TO_FILE", "true")
    monkeypatch.setenv("CODECARBON_OUTPUT_METHODS", "csv")
    monkeypatch.setenv("CODECARBON_PUE", "3")
    monkeypatch.setenv("CODECARBON_ALLOW_MULTIPLE_RUNS", "false")
    result = measure("FRA")
    assert [p.name for p in tmp_path.rglob("*")] == ["tmp"]
    ram_w = result.ram_energy_j / result.duration_s
    assert ram_w == pytest.approx(baseline.ram_energy_j / baseline.duration_s, rel=0.05)


def test_codecarbon_threads_end_with_stop():
    measure("FRA")
    time.sleep(0.05)
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)
              and type(getattr(t.function, "__self__", None)).__name__ == "PeriodicScheduler"]
    assert not [t for t in timers if t.is_alive() and not t.finished.is_set()]


def test_disabled_meter_returns_none():
    meter = HostEnergyMeter("FRA", [0], enabled=False)
    meter.start()
    assert meter.stop() is None


def test_stop_without_start_and_twice():
    assert HostEnergyMeter("FRA", None, True).stop() is None
    meter = HostEnergyMeter("FRA", None, True)
    meter.start()
    first = meter.stop()
    assert first is not None and meter.stop() is first


def test_codecarbon_missing_returns_none_and_warns_once(monkeypatch, caplog, fresh_warnings):
    monkeypatch.setitem(sys.modules, "codecarbon", None)   # import raises ImportError
    with caplog.at_level(logging.DEBUG, logger="workers.hostenergy"):
        assert measure("FRA", seconds=0) is None
        assert measure("FRA", seconds=0) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CodeCarbon is unavailable" in warnings[0].getMessage()


def test_tracker_failing_to_start_returns_none(monkeypatch, caplog, fresh_warnings):
    def broken(self):
        raise OSError("no /proc here")

    monkeypatch.setattr(codecarbon.OfflineEmissionsTracker, "get_detected_hardware", broken)
    with caplog.at_level(logging.WARNING, logger="workers.hostenergy"):
        assert measure("FRA", seconds=0) is None
    assert "no /proc here" in caplog.text


def test_tracker_failing_to_stop_returns_none(monkeypatch, caplog, fresh_warnings):
    # CodeCarbon's stop() swallows its own exceptions: it then leaves no data.
    monkeypatch.setattr(codecarbon.OfflineEmissionsTracker, "stop", lambda self: None)
    with caplog.at_level(logging.WARNING, logger="workers.hostenergy"):
        assert measure("FRA", seconds=0) is None
    assert "failed to stop" in caplog.text
