"""Power limit and SM clock lock for one run: set, read back, checked, restored.

A run whose `RunHardware` asks for `power_limit_w` or `sm_clock_mhz` has them
set on each of its GPUs after the quiet-GPU gate (which judges the GPU at rest
under its usual settings) and before the idle baselines (so the idle power
subtracted from the run's figures is the idle power under the same settings),
and put back to the driver's defaults in the runner's `finally`. The value
"default" asks for the GPU's own default, as one value of a swept axis: its
default power limit set, its SM clock unlocked (a lock at the maximum clock is
not the default); the record says so (`power_limit_default`, `sm_clock_default`).

Crash safety: before anything is changed, a journal entry per GPU (which GPU,
what is changed, the defaults) is written to `FARM_GPU_TUNE_JOURNAL_DIR`
(default ~/.farm/gpu-tuning) and removed only once the defaults are read back.
A worker killed mid-run (SIGKILL, a power cut of the host process) leaves it
behind, and the next worker start (`restore_leftovers`, called by
`tasks.measure.serve`) restores those GPUs before serving any run.

Privilege: NVML's setters are root only. Where the driver answers
NO_PERMISSION and `FARM_GPU_TUNE_HELPER` names a command (e.g.
`sudo -n /opt/farm/.venv/bin/farm-gpu-tune`, allowed by a sudoers rule; see
docs/deployment.md), that helper (`workers.gpu.tune_helper`) is run with an
argv list, never a shell. Otherwise the run fails (permanently: retrying
changes nothing) naming what to configure. Every refusal keeps the driver's
or the helper's own words in the run's record (`Preflight.tuning`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from farm_contract.records import EnergyWindow, GpuTuning, ValidityCheck
from farm_contract.runspec import DEFAULT, RunHardware
from farm_contract.settings import setting, variable
from workers.errors import PermanentError
from workers.gpu.base import GpuDevice, TuningRefused

log = logging.getLogger(__name__)

HELPER_ENV = variable("gpu_tune_helper")      # named in messages: what to set
HELPER_TIMEOUT_S = 30.0
# The enforced limit NVML reads back is in mW; allow rounding to the watt.
POWER_LIMIT_TOLERANCE_W = 1.0
# Measured on an H200 (2026-12-02, docs/measurement.md): right after a set, the
# enforced limit NVML reads back is still the old one (700 W read back after
# setting 300 W, 300 W after setting 700 W back), though the new cap already
# throttles; it follows within seconds. So a read-back is polled, up to this long.
LIMIT_READ_BACK_TIMEOUT_S = 10.0
LIMIT_READ_BACK_POLL_S = 0.1
# SM clocks move in steps of ~15 MHz (H100/H200 supported clocks); a lock that
# holds reads within a step or two of its value.
SM_CLOCK_TOLERANCE_MHZ = 30.0
# nvmlClocksEventReason* bits, named for the check's detail.
CLOCK_EVENT_REASONS = {0x1: "idle", 0x2: "applications clocks setting", 0x4: "SW power cap",
                       0x8: "HW slowdown", 0x20: "SW thermal slowdown",
                       0x40: "HW thermal slowdown", 0x80: "HW power brake"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class TuningError(PermanentError):
    """A requested power limit or clock lock could not be set: the run fails with why."""

    kind = "gpu_tuning"


# --------------------------------------------------------------- the helper


class Helper:
    """The privileged helper, run as `argv + [command, UUID, value]` with no shell."""

    def __init__(self, argv: list[str], timeout_s: float = HELPER_TIMEOUT_S):
        if not argv:
            raise ValueError(f"{HELPER_ENV} is empty")
        self.argv = list(argv)
        self.timeout_s = timeout_s

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Helper | None:
        """The helper `FARM_GPU_TUNE_HELPER` names (split like a command line), or None."""
        value = (setting("gpu_tune_helper", env) or "").strip()
        return cls(shlex.split(value)) if value else None

    def run(self, *args: str) -> None:
        """Run one helper command; a non-zero exit raises TuningRefused with its words."""
        command = [*self.argv, *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TuningRefused(f"helper {shlex.join(command)}: {exc}") from exc
        if done.returncode != 0:
            words = (done.stderr.strip() or done.stdout.strip()
                     or f"exit status {done.returncode}")
            raise TuningRefused(f"helper {shlex.join(command)}: {words}")


# -------------------------------------------------------------- the journal


class Journal:
    """One JSON file per GPU whose settings a run changed, until they are restored."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, uuid: str) -> Path:
        """The entry's file for a GPU."""
        return self.directory / f"{_SAFE_NAME.sub('_', uuid)}.json"

    def write(self, entry: dict[str, Any]) -> None:
        """Write an entry durably (temporary file, fsync, rename) before anything changes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(entry["uuid"])
        temporary = target.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(entry, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    def remove(self, uuid: str) -> None:
        """Forget a GPU's entry (its defaults are back)."""
        self.path(uuid).unlink(missing_ok=True)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry left, unreadable ones skipped with a warning."""
        found = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("GPU tuning journal %s unreadable: %s", path, exc)
        return found


# ---------------------------------------------------------------- the tuner


class GpuTuner:
    """Sets a run's power limit / clock lock on its GPUs and puts the defaults back."""

    def __init__(self, journal: Journal, helper: Helper | None = None):
        self.journal = journal
        self.helper = helper

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> GpuTuner:
        """The worker's tuner: journal and helper from FARM_GPU_TUNE_* variables."""
        directory = setting("gpu_tune_journal_dir", env).strip() \
            or setting("gpu_tune_journal_dir", {})   # blank: the default
        return cls(Journal(Path(directory)), Helper.from_environment(env))

    def session(self, gpus: list[GpuDevice], hardware: RunHardware, run_id: str) -> Tuning:
        """The tuning of one run (nothing happens until `apply`)."""
        return Tuning(self, gpus, hardware, run_id)

    # One setting on one GPU: through NVML, else (not root) through the helper.
    def _set(self, gpu: GpuDevice, record: GpuTuning, nvml_call, *helper_args: str) -> None:
        try:
            nvml_call()
            record.via = record.via or "nvml"
            return
        except TuningRefused as exc:
            if not exc.no_permission:
                raise
            if self.helper is None:
                raise TuningRefused(
                    f"{exc} — the worker is not root: set {HELPER_ENV} to the privileged "
                    "helper (e.g. 'sudo -n /opt/farm/.venv/bin/farm-gpu-tune', with the "
                    "sudoers rule of docs/deployment.md) or run the worker as root") from exc
            first = str(exc)
        try:
            self.helper.run(*helper_args)
        except TuningRefused as exc:
            raise TuningRefused(f"{first}; then {exc}") from exc
        record.via = "helper"

    def restore(self, gpu: GpuDevice, entry: dict[str, Any]) -> None:
        """Put back what `entry` says was changed; raises TuningRefused if it cannot,
        or if the defaults do not read back (the journal entry is then kept)."""
        uuid = gpu.info.uuid
        changed = set(entry.get("changed", []))
        default_w = entry.get("default_power_limit_w")
        if entry.get("via") == "helper" and self.helper is not None:
            self.helper.run("reset", uuid)
        else:
            scratch = GpuTuning(uuid=uuid)
            if "power_limit" in changed and default_w is not None:
                self._set(gpu, scratch, lambda: gpu.set_power_limit_w(default_w), "reset", uuid)
            if "sm_clock" in changed and scratch.via != "helper":
                self._set(gpu, scratch, gpu.reset_sm_clock, "reset", uuid)
        if "power_limit" in changed and default_w is not None:
            now_w = read_back_limit_w(gpu, default_w)
            if now_w is None or abs(now_w - default_w) > POWER_LIMIT_TOLERANCE_W:
                raise TuningRefused(f"power limit reads {now_w} W after restoring, not the "
                                    f"default {default_w:g} W")
        self.journal.remove(uuid)

    def restore_leftovers(self, devices: list[GpuDevice]) -> list[str]:
        """At worker start: restore every GPU a previous worker left tuned (its journal
        entries). Returns one line per entry, for the log; entries of GPUs this
        worker does not have are kept for the worker that does."""
        by_uuid = {gpu.info.uuid: gpu for gpu in devices}
        lines = []
        for entry in self.journal.entries():
            uuid = str(entry.get("uuid"))
            gpu = by_uuid.get(uuid)
            if gpu is None:
                lines.append(f"{uuid}: left tuned by run {entry.get('run_id')}, not on "
                             "this worker; journal kept")
                continue
            try:
                self.restore(gpu, entry)
            except TuningRefused as exc:
                lines.append(f"{uuid}: left tuned by run {entry.get('run_id')}; restoring "
                             f"failed: {exc}")
                continue
            lines.append(f"{uuid}: left tuned by run {entry.get('run_id')} "
                         f"(pid {entry.get('pid')}); defaults restored")
        return lines


class Tuning:
    """One run's settings on its GPUs: `apply` before the idle baselines, `restore`
    in the runner's `finally`; `records` is what the run stores."""

    def __init__(self, tuner: GpuTuner, gpus: list[GpuDevice], hardware: RunHardware,
                 run_id: str):
        self.tuner = tuner
        self.gpus = gpus
        self.power_limit_w = hardware.power_limit_w
        self.sm_clock_mhz = hardware.sm_clock_mhz
        self.run_id = run_id
        self.records: list[GpuTuning] = []
        self._entries: dict[str, dict[str, Any]] = {}

    @property
    def requested(self) -> bool:
        """Whether the run asks for any setting."""
        return self.power_limit_w is not None or self.sm_clock_mhz is not None

    def apply(self) -> None:
        """Set the run's settings on every GPU and read them back. Raises TuningError
        (the refusal is in `records` too); what was already set is restored later."""
        if not self.requested:
            return
        for gpu in self.gpus:
            default_w = gpu.default_power_limit_w()
            record = GpuTuning(
                uuid=gpu.info.uuid,
                # "default": the GPU's own limit is what is asked for (and checked)
                requested_power_limit_w=(default_w if self.power_limit_w == DEFAULT
                                         else self.power_limit_w),
                requested_sm_clock_mhz=(None if self.sm_clock_mhz == DEFAULT
                                        else self.sm_clock_mhz),
                power_limit_default=True if self.power_limit_w == DEFAULT else None,
                sm_clock_default=True if self.sm_clock_mhz == DEFAULT else None,
                power_limit_before_w=gpu.power_limit_w(),
                default_power_limit_w=default_w)
            self.records.append(record)
            try:
                self._apply_one(gpu, record)
            except TuningRefused as exc:
                record.refused = str(exc)
                raise TuningError(f"GPU {gpu.info.uuid}: {exc}") from exc

    def _apply_one(self, gpu: GpuDevice, record: GpuTuning) -> None:
        uuid = gpu.info.uuid
        leftover = next((e for e in self.tuner.journal.entries() if e.get("uuid") == uuid), None)
        if leftover is not None:  # a run of this worker could not restore it: try again
            self.tuner.restore(gpu, leftover)
        watts, mhz = record.requested_power_limit_w, record.requested_sm_clock_mhz
        unlock = bool(record.sm_clock_default)
        if record.power_limit_default and watts is None:
            raise TuningRefused("the driver reports no default power limit, so the default "
                                "cannot be set")
        if watts is not None:
            if record.default_power_limit_w is None:
                raise TuningRefused("the driver reports no default power limit to restore "
                                    "afterwards, so none is set")
            span = gpu.power_limit_range_w()
            if span is not None and not span[0] <= watts <= span[1]:
                raise TuningRefused(f"{watts:g} W is outside the range the driver accepts "
                                    f"on this GPU, {span[0]:g}–{span[1]:g} W")
        if mhz is not None:
            top = gpu.max_sm_clock_mhz()
            if top is not None and mhz > top:
                raise TuningRefused(f"{mhz} MHz is above this GPU's maximum SM clock, "
                                    f"{top:g} MHz")
        entry = {"uuid": uuid, "run_id": self.run_id, "pid": os.getpid(), "at": time.time(),
                 "changed": [k for k, v in (("power_limit", watts),
                                            ("sm_clock", mhz if not unlock else DEFAULT))
                             if v is not None],
                 "default_power_limit_w": record.default_power_limit_w,
                 "power_limit_before_w": record.power_limit_before_w, "via": None}
        self.tuner.journal.write(entry)     # before anything changes: a crash restores it
        self._entries[uuid] = entry
        done: list[str] = []
        try:
            if unlock:    # first: the helper's reset puts the default power limit back too
                self.tuner._set(gpu, record, gpu.reset_sm_clock, "reset", uuid)
                done.append("sm_clock")
            if watts is not None:
                self.tuner._set(gpu, record, lambda: gpu.set_power_limit_w(watts),
                                "set-power-limit", uuid, f"{watts:g}")
                done.append("power_limit")
            if mhz is not None:
                self.tuner._set(gpu, record, lambda: gpu.lock_sm_clock_mhz(mhz),
                                "lock-clocks", uuid, str(mhz))
                done.append("sm_clock")
        finally:
            # A refused setter changed nothing: only what was set is restored (and a
            # GPU left untouched needs no restoring, nor a journal entry).
            if not done:
                self.tuner.journal.remove(uuid)
                del self._entries[uuid]
            elif done != entry["changed"] or record.via != entry["via"]:
                entry.update(changed=done, via=record.via)   # restore the way it was set
                self.tuner.journal.write(entry)
        record.applied_power_limit_w = (read_back_limit_w(gpu, watts) if watts is not None
                                        else None)
        record.applied_sm_clock_mhz = gpu.sm_clock_mhz() if mhz is not None else None

    def restore(self) -> None:
        """Put the defaults back on every GPU this run changed; never raises (a GPU
        that cannot be restored keeps its journal entry and says why)."""
        by_uuid = {r.uuid: r for r in self.records}
        for gpu in self.gpus:
            entry = self._entries.pop(gpu.info.uuid, None)
            if entry is None:
                continue
            record = by_uuid[gpu.info.uuid]
            try:
                self.tuner.restore(gpu, entry)
                record.restored = True
            except Exception as exc:    # whatever it is, the other GPUs still get theirs
                record.restored = False
                record.restore_error = str(exc)
                log.error("GPU %s: settings of run %s not restored (journal kept for the "
                          "next worker start): %s", gpu.info.uuid, self.run_id, exc)


# ------------------------------------------------------------- the check


def read_back_limit_w(gpu: GpuDevice, want_w: float,
                      timeout_s: float = LIMIT_READ_BACK_TIMEOUT_S,
                      clock=time.monotonic, sleep=time.sleep) -> float | None:
    """The enforced power limit once it reads `want_w` (± tolerance), or what it reads
    at the timeout (Units: W; None: not readable)."""
    deadline = clock() + timeout_s
    while True:
        now_w = gpu.power_limit_w()
        if (now_w is not None and abs(now_w - want_w) <= POWER_LIMIT_TOLERANCE_W) \
                or clock() >= deadline:
            return now_w
        sleep(LIMIT_READ_BACK_POLL_S)


def check_tuning(records: list[GpuTuning], windows: list[EnergyWindow], sampler) -> ValidityCheck:
    """Pass if every GPU ran at what was asked: the power limit in force equals the
    request, and the SM clock during the steady windows holds the lock (median within
    SM_CLOCK_TOLERANCE_MHZ). The value is the worst clock deviation (MHz), or the
    worst limit deviation (W) where no clock was locked. Throttle reasons seen in
    the steady windows are named in the detail (a power cap overrides a lock)."""
    problems: list[str] = []
    value: float | None = None
    steady = [w for w in windows if w.name == "steady"]
    for record in records:
        asked_w, asked_mhz = record.requested_power_limit_w, record.requested_sm_clock_mhz
        if asked_w is not None:
            got = record.applied_power_limit_w
            if got is None or abs(got - asked_w) > POWER_LIMIT_TOLERANCE_W:
                problems.append(f"{record.uuid}: power limit in force {got} W, asked "
                                f"{asked_w:g} W")
            if got is not None and asked_mhz is None:
                value = max(value or 0.0, abs(got - asked_w))
    locked = [r for r in records if r.requested_sm_clock_mhz is not None]
    if locked and steady:
        asked = float(locked[0].requested_sm_clock_mhz or 0)
        clocks = sorted(c for w in steady
                        for c in sampler.values_in("sm_clock_mhz", w.start_s, w.duration_s))
        reasons = 0
        for w in steady:
            for bits in sampler.values_in("throttle_reasons", w.start_s, w.duration_s):
                reasons |= int(bits)
        if clocks:
            median = clocks[len(clocks) // 2]
            value = round(abs(median - asked), 1)
            if value > SM_CLOCK_TOLERANCE_MHZ:
                named = [n for bit, n in CLOCK_EVENT_REASONS.items() if reasons & bit]
                problems.append(f"SM clock lock at {asked:g} MHz not held: steady median "
                                f"{median:g} MHz" + (f" ({', '.join(named)})" if named else ""))
        else:
            problems.append("no SM clock readings in the steady windows: the lock is unchecked")
    return ValidityCheck(
        name="tuning", passed=not problems, value=value,
        threshold=(f"limit in force = asked ± {POWER_LIMIT_TOLERANCE_W:g} W; steady SM clock "
                   f"median = lock ± {SM_CLOCK_TOLERANCE_MHZ:g} MHz"),
        detail="; ".join(problems) or None)
