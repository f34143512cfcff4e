"""Power limit and SM clock lock as sweep axes (`workers.gpu.tuning`), NVML faked at
the vendor boundary: set and read back, refusals in the driver's words, the
privileged helper, restoring after a run and after a crash, the sweep axes and
their run ids, and a whole run through run_one."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path

import pynvml
import pytest

from farm.simulate import simulated_copy_with_notes
from farm.sweep import expand
from farm.sweep_file import SpecError, parse_sweep
from farm_contract.runspec import RunHardware
from tests.fake_nvml import FakeNvml, patched
from tests.unit.workers import test_nvml_measurement as live_nvml
from workers.gpu import tune_helper
from workers.gpu.nvml import NvmlInventory
from workers.gpu.tuning import GpuTuner, Helper, Journal, TuningError, check_tuning
from workers.preflight import IdleTemperatures
from workers.runner import run_one

NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
SET_LIMIT = "nvmlDeviceSetPowerManagementLimit"
LOCK = "nvmlDeviceSetGpuLockedClocks"


def hardware(watts=None, mhz=None) -> RunHardware:
    return RunHardware(backend="gpu", gpu_model="h100-80gb", gpu_count=1,
                       power_limit_w=watts, sm_clock_mhz=mhz)


@pytest.fixture
def nvml():
    fake = FakeNvml()
    with patched(fake):
        inventory = NvmlInventory()
        yield fake, inventory.devices()
        inventory.shutdown()


def tuner(tmp_path: Path, helper: Helper | None = None) -> GpuTuner:
    return GpuTuner(Journal(tmp_path / "journal"), helper)


def fake_helper(tmp_path: Path, exit_status: int = 0, words: str = "") -> Helper:
    """An executable standing in for `sudo farm-gpu-tune`: logs its argv, answers."""
    script = tmp_path / "fake-farm-gpu-tune"
    log = tmp_path / "helper.log"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.stderr.write({words!r})\n"
        f"sys.exit({exit_status})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return Helper([str(script)])


def helper_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "helper.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# ----------------------------------------------------------- set and restore


def test_apply_reads_back_and_restore_puts_the_defaults_back(nvml, tmp_path):
    fake, gpus = nvml
    fake.gpus[0]["default_limit_mw"] = 700_000
    session = tuner(tmp_path).session(gpus[:1], hardware(450, 1500), "run-1")
    journal = tmp_path / "journal" / "GPU-aaaa.json"

    seen = []   # at each set: whether the journal was already written
    original = fake.nvmlDeviceSetPowerManagementLimit
    fake.nvmlDeviceSetPowerManagementLimit = lambda h, mw: (seen.append(journal.exists()),
                                                            original(h, mw))
    session.apply()
    record = session.records[0]
    assert seen == [True]
    assert fake.settings_calls == [("set_power_limit", 0, 450_000), ("lock_clocks", 0, 1500, 1500)]
    assert (record.requested_power_limit_w, record.applied_power_limit_w) == (450, 450.0)
    assert (record.requested_sm_clock_mhz, record.applied_sm_clock_mhz) == (1500, 1500.0)
    assert record.power_limit_before_w == 700.0 and record.via == "nvml"
    assert json.loads(journal.read_text())["changed"] == ["power_limit", "sm_clock"]

    session.restore()
    assert record.restored is True and record.restore_error is None
    assert fake.gpus[0]["limit_mw"] == 700_000 and fake.gpus[0]["locked_mhz"] is None
    assert not journal.exists()


def test_only_what_was_asked_is_changed_and_restored(nvml, tmp_path):
    fake, gpus = nvml
    session = tuner(tmp_path).session(gpus[:1], hardware(mhz=1200), "run-1")
    session.apply()
    session.restore()
    assert fake.settings_calls == [("lock_clocks", 0, 1200, 1200), ("reset_clocks", 0)]
    assert session.records[0].applied_power_limit_w is None


def test_a_run_asking_nothing_touches_nothing(nvml, tmp_path):
    fake, gpus = nvml
    session = tuner(tmp_path).session(gpus, hardware(), "run-1")
    session.apply()
    session.restore()
    assert session.records == [] and fake.settings_calls == []
    assert not (tmp_path / "journal").exists()


def test_a_limit_outside_the_drivers_range_is_refused_before_anything_changes(nvml, tmp_path):
    fake, gpus = nvml
    session = tuner(tmp_path).session(gpus[:1], hardware(150), "run-1")
    with pytest.raises(TuningError, match=r"150 W is outside the range the driver accepts "
                                          r"on this GPU, 200–700 W"):
        session.apply()
    assert session.records[0].refused.startswith("150 W is outside")
    assert fake.settings_calls == [] and not list((tmp_path / "journal").glob("*"))


# --------------------------------------------------------------- privilege


def test_not_root_and_no_helper_fails_naming_what_to_configure(nvml, tmp_path):
    fake, gpus = nvml
    fake.failures[(SET_LIMIT, 0)] = NO_PERMISSION
    session = tuner(tmp_path).session(gpus[:1], hardware(450), "run-1")
    with pytest.raises(TuningError) as caught:
        session.apply()
    assert caught.value.kind == "gpu_tuning"        # permanent: a retry changes nothing
    refused = session.records[0].refused
    assert "Insufficient Permissions" in refused and "FARM_GPU_TUNE_HELPER" in refused
    session.restore()
    # Nothing was changed, so nothing is restored and no journal is left to retry forever.
    assert session.records[0].restored is None
    assert fake.gpus[0]["limit_mw"] == 700_000 and not list((tmp_path / "journal").glob("*"))


def test_not_root_goes_through_the_helper_and_restores_through_it(nvml, tmp_path):
    fake, gpus = nvml
    fake.failures[(SET_LIMIT, 0)] = NO_PERMISSION
    fake.failures[(LOCK, 0)] = NO_PERMISSION
    session = tuner(tmp_path, fake_helper(tmp_path)).session(gpus[:1], hardware(450, 1500),
                                                            "run-1")
    session.apply()
    record = session.records[0]
    assert record.via == "helper" and record.refused is None
    assert json.loads((tmp_path / "journal" / "GPU-aaaa.json").read_text())["via"] == "helper"
    session.restore()
    assert helper_calls(tmp_path) == [["set-power-limit", "GPU-aaaa", "450"],
                                      ["lock-clocks", "GPU-aaaa", "1500"],
                                      ["reset", "GPU-aaaa"]]
    assert record.restored is True
    # The fake helper cannot reach the fake driver: the limit in force stayed at 700 W,
    # which is what the run's check is for.
    assert record.applied_power_limit_w == 700.0
    check = check_tuning([record], [], sampler=None)
    assert not check.passed and "power limit in force 700.0 W, asked 450 W" in check.detail


def test_the_helpers_refusal_is_recorded_in_its_words(nvml, tmp_path):
    fake, gpus = nvml
    fake.failures[(SET_LIMIT, 0)] = NO_PERMISSION
    helper = fake_helper(tmp_path, exit_status=1,
                         words="sudo: a password is required")
    session = tuner(tmp_path, helper).session(gpus[:1], hardware(450), "run-1")
    with pytest.raises(TuningError):
        session.apply()
    refused = session.records[0].refused
    assert "Insufficient Permissions" in refused and "sudo: a password is required" in refused


# ------------------------------------------------------------------ crashes


def test_a_crashed_worker_leaves_a_journal_and_the_next_start_restores(nvml, tmp_path):
    fake, gpus = nvml
    session = tuner(tmp_path).session(gpus, hardware(300, 1400), "run-crashed")
    session.apply()              # ... and the worker is killed here: no restore
    assert fake.gpus[1]["limit_mw"] == 300_000 and fake.gpus[1]["locked_mhz"] == 1400
    assert len(list((tmp_path / "journal").glob("*.json"))) == 2

    lines = tuner(tmp_path).restore_leftovers(gpus)      # the next worker's start
    assert all("defaults restored" in line and "run-crashed" in line for line in lines)
    assert [g["limit_mw"] for g in fake.gpus] == [700_000, 700_000]   # both defaults
    assert [g["locked_mhz"] for g in fake.gpus] == [None, None]
    assert not list((tmp_path / "journal").glob("*.json"))


def test_a_gpu_that_cannot_be_restored_keeps_its_journal(nvml, tmp_path):
    fake, gpus = nvml
    session = tuner(tmp_path).session(gpus[:1], hardware(300), "run-1")
    session.apply()
    fake.failures[(SET_LIMIT, 0)] = pynvml.NVML_ERROR_GPU_IS_LOST
    session.restore()
    record = session.records[0]
    assert record.restored is False and "GPU is lost" in record.restore_error
    assert (tmp_path / "journal" / "GPU-aaaa.json").exists()
    # Another worker's GPU in the journal is left for that worker.
    lines = tuner(tmp_path).restore_leftovers(gpus[1:])
    assert lines == ["GPU-aaaa: left tuned by run run-1, not on this worker; journal kept"]


# -------------------------------------------------------------- the helper


def test_the_helper_takes_only_its_three_commands(capsys):
    for argv in ([], ["set-power-limit", "GPU-aaaa"], ["rm", "GPU-aaaa"],
                 ["set-power-limit", "GPU-aaaa", "450;reboot"],
                 ["set-power-limit", "not-a-uuid", "450"], ["lock-clocks", "GPU-aaaa", "1.5"],
                 ["set-power-limit", "GPU-aaaa", "5000"], ["reset", "GPU-aaaa", "x"]):
        assert tune_helper.main(argv) == 2, argv
    assert "usage: farm-gpu-tune" in capsys.readouterr().err


def test_the_helper_sets_through_nvml_and_says_what_is_in_force(nvml, capsys):
    fake, _ = nvml
    assert tune_helper.main(["set-power-limit", "GPU-bbbb", "450"]) == 0
    assert json.loads(capsys.readouterr().out)["power_limit_w"] == 450.0
    assert tune_helper.main(["lock-clocks", "GPU-bbbb", "1500"]) == 0
    assert fake.gpus[1]["locked_mhz"] == 1500
    assert tune_helper.main(["reset", "GPU-bbbb"]) == 0
    assert fake.gpus[1]["limit_mw"] == 700_000 and fake.gpus[1]["locked_mhz"] is None
    fake.failures[(SET_LIMIT, 1)] = NO_PERMISSION
    assert tune_helper.main(["set-power-limit", "GPU-bbbb", "450"]) == 1
    assert "Insufficient Permissions" in capsys.readouterr().err
    assert tune_helper.main(["set-power-limit", "GPU-bbbb", "100"]) == 1
    assert "outside the driver's range 200–700 W" in capsys.readouterr().err


def test_the_helper_from_the_environment_is_an_argv_list():
    helper = Helper.from_environment({"FARM_GPU_TUNE_HELPER":
                                      "sudo -n /opt/farm/.venv/bin/farm-gpu-tune"})
    assert helper.argv == ["sudo", "-n", "/opt/farm/.venv/bin/farm-gpu-tune"]
    assert Helper.from_environment({}) is None


# ---------------------------------------------------------------- the sweep

SWEEP = """
name = "power-axes"
[[model]]
id = "tiny-1b"
source = "org/tiny-1B"
[hardware]
gpu = ["{gpu}"]
{axes}
[engine]
kind = "{engine}"
[[scenario]]
kind = "batch"
num_prompts = [8]
[workload]
input_tokens = [32]
output_tokens = [16]
"""


def sweep(axes: str, gpu: str = "H100", engine: str = "vllm"):
    return parse_sweep(SWEEP.format(axes=axes, gpu=gpu, engine=engine), "power.toml")


def test_the_axes_expand_and_runs_without_them_keep_their_ids():
    runs = expand(sweep("power_limit_w = [300, 450, 700]\nsm_clock_mhz = [1200, 1980]"))
    assert [(r.hardware.power_limit_w, r.hardware.sm_clock_mhz) for r in runs] == [
        (300, 1200), (300, 1980), (450, 1200), (450, 1980), (700, 1200), (700, 1980)]
    assert len({r.run_id for r in runs}) == 6
    plain = expand(sweep(""))[0]
    assert '"power_limit_w"' not in plain.canonical_json()
    assert '"power_limit_w":null' in plain.to_json()
    assert plain.run_id == "a18903b9b62e815f0a3a2815"   # computed at a63d26f, before the axes
    from tests.factories import sweep as factory_sweep

    assert factory_sweep()[2][0].run_id == "eeba4a95d3d21f7d7119e6ae"   # pinned since 12.2
    excluded = parse_sweep(SWEEP.format(axes="power_limit_w = [300, 450]", gpu="H100",
                                        engine="vllm")
                           + '[[exclude]]\npower_limit_w = 300\n', "power.toml")
    assert [r.hardware.power_limit_w for r in expand(excluded)] == [450]


@pytest.mark.parametrize(("axes", "gpu", "engine", "words"), [
    ("power_limit_w = [300, 800]", "H100", "vllm",
     "hardware.power_limit_w: for 'H100': 800 W is above the NVIDIA H100 80GB (SXM)'s TDP of "
     "700 W"),
    ("power_limit_w = [100]", "H100", "vllm", "hardware.power_limit_w: for 'H100': 100 W is below "
     "175 W (25% of the"),
    ("power_limit_w = [0]", "H100", "vllm",
     "hardware.power_limit_w[0]: Input should be greater than 0"),
    ("sm_clock_mhz = [9000]", "H100", "vllm", "hardware.sm_clock_mhz: 9000 MHz is outside "
     "200–3000 MHz"),
    ("power_limit_w = [300]", "sim:H100", "sim", "hardware.power_limit_w: cannot be swept on "
     "simulated GPUs"),
    ("sm_clock_mhz = [1500]", "cpu", "vllm", 'hardware.sm_clock_mhz: "cpu" has no power limit'),
])
def test_bad_settings_are_refused_naming_the_field_and_line(axes, gpu, engine, words):
    with pytest.raises(SpecError) as caught:
        sweep(axes, gpu=gpu, engine=engine)
    text = str(caught.value)
    assert f"line 8: {words}" in text, text


def test_the_simulated_copy_drops_the_axes_with_a_note():
    copy, notes = simulated_copy_with_notes(sweep("power_limit_w = [300, 450]"))
    assert copy.hardware.power_limit_w is None
    assert any("power_limit_w dropped" in note for note in notes)


# --------------------------------------------------------- a whole run


@pytest.fixture
def live(tmp_path):
    fake = live_nvml.LiveNvml()
    live_nvml.LIVE[:] = [fake]
    live_nvml.WattsEngine.during_steady = None
    with patched(fake):
        inventory = NvmlInventory()
        yield fake, inventory.devices()[:1]
        inventory.shutdown()


def tuned_run(watts=None, mhz=None):
    return live_nvml.RUN.model_copy(update={"hardware": hardware(watts, mhz)})


def measure(run, gpus, tmp_path, helper=None):
    return run_one(run, gpus, threading.Event(), worker=live_nvml.WORKER, attempt=1,
                   engine_factory=live_nvml.WattsEngine, idle_temperatures=IdleTemperatures(),
                   tuner=tuner(tmp_path, helper))


def test_a_run_records_what_was_asked_and_what_was_in_force(live, tmp_path, monkeypatch):
    fake, gpus = live
    monkeypatch.setattr(live_nvml.WattsEngine, "watts", 400.0)    # under the 450 W limit
    limits = []
    live_nvml.WattsEngine.during_steady = lambda n: limits.append(n.gpus[0]["limit_mw"])
    result = measure(tuned_run(450, 1500), gpus, tmp_path)
    assert result.status == "succeeded", result.error
    record = result.preflight.tuning[0]
    assert (record.applied_power_limit_w, record.applied_sm_clock_mhz) == (450.0, 1500.0)
    assert record.restored is True and limits == [450_000, 450_000]   # in force while measured
    check = next(c for c in result.validity.checks if c.name == "tuning")
    assert check.passed and check.value == 0.0
    assert result.validity.valid, result.validity
    # The power range is judged against the run's own limit.
    power = next(c for c in result.validity.checks if c.name == "power_range")
    assert power.passed and power.threshold.endswith("–450 W")
    assert fake.gpus[0]["limit_mw"] == 700_000 and fake.gpus[0]["locked_mhz"] is None


def test_a_lock_not_held_is_flagged_with_the_throttle_reason(live, tmp_path):
    fake, gpus = live
    fake.gpus[0].update(lock_holds=False, sm_mhz=1365, reasons=0x4)    # held back by the cap
    result = measure(tuned_run(mhz=1980), gpus, tmp_path)
    check = next(c for c in result.validity.checks if c.name == "tuning")
    assert not check.passed and not result.validity.valid
    assert check.detail == ("SM clock lock at 1980 MHz not held: steady median 1365 MHz "
                            "(SW power cap)")
    assert check.value == 615.0


def test_a_refused_setting_fails_the_run_with_the_drivers_words(live, tmp_path):
    fake, gpus = live
    fake.failures[(SET_LIMIT, 0)] = NO_PERMISSION
    result = measure(tuned_run(450), gpus, tmp_path)
    assert result.status == "failed" and result.error.kind == "gpu_tuning"
    assert "Insufficient Permissions" in result.error.message
    assert "FARM_GPU_TUNE_HELPER" in result.preflight.tuning[0].refused
    assert result.load_points == []
    assert os.listdir(tmp_path / "journal") == []


def test_a_run_that_fails_later_is_still_restored(live, tmp_path):
    fake, gpus = live

    def crash(nvml):
        raise RuntimeError("engine fell over")

    live_nvml.WattsEngine.during_steady = crash
    result = measure(tuned_run(300), gpus, tmp_path)
    assert result.status == "failed" and "engine fell over" in result.error.message
    assert result.preflight.tuning[0].restored is True
    assert fake.gpus[0]["limit_mw"] == 700_000


def test_a_limit_that_reads_back_late_is_waited_for_not_taken_as_refused():
    # The H200 reads the old enforced limit for a while after a set (docs/measurement.md).
    from workers.gpu.tuning import read_back_limit_w

    class Lagging:
        def __init__(self, reads):
            self.reads = list(reads)

        def power_limit_w(self):
            return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    t = [0.0]
    clock, sleep = (lambda: t[0]), (lambda s: t.__setitem__(0, t[0] + s))
    assert read_back_limit_w(Lagging([700.0] * 5 + [300.0]), 300.0, clock=clock,
                             sleep=sleep) == 300.0
    assert t[0] == pytest.approx(0.5)
    t[0] = 0.0
    # never follows: what it reads at the timeout, for the check to flag
    assert read_back_limit_w(Lagging([700.0]), 300.0, timeout_s=2.0, clock=clock,
                             sleep=sleep) == 700.0
    assert t[0] >= 2.0


# ------------------------------------------------- "default": the GPU's own


def test_default_sets_the_default_limit_and_unlocks_the_clock(nvml, tmp_path):
    fake, gpus = nvml
    fake.gpus[0].update(default_limit_mw=700_000, limit_mw=450_000, locked_mhz=1980)
    session = tuner(tmp_path).session(gpus[:1], hardware("default", "default"), "run-1")
    session.apply()
    record = session.records[0]
    # unlocked first (the helper's reset also resets the limit), then the default limit
    assert fake.settings_calls == [("reset_clocks", 0), ("set_power_limit", 0, 700_000)]
    assert record.power_limit_default is True and record.sm_clock_default is True
    assert (record.requested_power_limit_w, record.applied_power_limit_w) == (700.0, 700.0)
    assert record.requested_sm_clock_mhz is None and fake.gpus[0]["locked_mhz"] is None
    assert check_tuning(session.records, [], None).passed      # the limit asked is in force
    session.restore()
    assert record.restored is True and fake.gpus[0]["limit_mw"] == 700_000


def test_default_is_one_value_of_a_swept_axis_beside_locks():
    text = """name = "clocks"
[[model]]
id = "m"
source = "org/Llama-3.1-8B"
[hardware]
gpu = ["H100"]
sm_clock_mhz = ["default", 1200]
power_limit_w = ["default", 400]
[engine]
kind = "vllm"
[[scenario]]
kind = "batch"
num_prompts = 8
[workload]
input_tokens = 64
output_tokens = 16
[[exclude]]
sm_clock_mhz = 1200
power_limit_w = 400
"""
    runs = expand(parse_sweep(text))
    assert [(r.hardware.power_limit_w, r.hardware.sm_clock_mhz) for r in runs] == [
        ("default", "default"), ("default", 1200), (400.0, "default")]
    # "default" is a setting of its own: not the run ids of runs that set nothing
    plain = expand(parse_sweep(text.replace('sm_clock_mhz = ["default", 1200]\n', "")
                               .replace('power_limit_w = ["default", 400]\n', "")
                               .split("[[exclude]]")[0]))
    assert plain[0].run_id not in {r.run_id for r in runs}
    with pytest.raises(SpecError, match=r"line 7: hardware.sm_clock_mhz\[0\]: .*'default'"):
        parse_sweep(text.replace('["default", 1200]', '["defualt", 1200]'))
