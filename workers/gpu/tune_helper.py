"""`farm-gpu-tune`: the privileged helper that sets a GPU's power limit or SM clock.

NVML's setters are root only; a worker that is not root runs this program
through a sudoers rule the operator installs (docs/deployment.md), as
`FARM_GPU_TUNE_HELPER` names it. Its whole interface is three commands, each
argument checked before NVML is touched:

    farm-gpu-tune set-power-limit UUID WATTS    # 50 ≤ WATTS ≤ 2000, within the driver's range
    farm-gpu-tune lock-clocks UUID MHZ          # 100 ≤ MHZ ≤ 5000 (SM clock, min = max)
    farm-gpu-tune reset UUID                    # default power limit, clock lock undone

Exit status 0: done (one JSON line on stdout: what is in force now); 2: bad
arguments; 1: NVML refused (its words on stderr). It imports only the standard
library and nvidia-ml-py, takes no options, reads no environment variable and
opens no file, so a sudoers rule allowing it allows exactly these three things.
"""

from __future__ import annotations

import json
import re
import sys

USAGE = ("usage: farm-gpu-tune set-power-limit UUID WATTS | lock-clocks UUID MHZ | "
         "reset UUID")
UUID = re.compile(r"^GPU-[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$|"
                  r"^GPU-[0-9A-Za-z-]{1,64}$")
NUMBER = re.compile(r"^[0-9]{1,5}(\.[0-9]{1,3})?$")
WATTS_RANGE = (50.0, 2000.0)
MHZ_RANGE = (100, 5000)


class UsageError(Exception):
    """Arguments outside the interface."""


def parse(argv: list[str]) -> tuple[str, str, float | int | None]:
    """(command, uuid, value) from argv, or UsageError naming what is wrong."""
    if not argv:
        raise UsageError("no command")
    command, args = argv[0], argv[1:]
    expected = {"set-power-limit": 2, "lock-clocks": 2, "reset": 1}
    if command not in expected:
        raise UsageError(f"unknown command {command!r}")
    if len(args) != expected[command]:
        raise UsageError(f"{command} takes {expected[command]} argument(s), got {len(args)}")
    uuid = args[0]
    if not UUID.match(uuid):
        raise UsageError(f"{uuid!r} is not a GPU UUID (GPU-…)")
    if command == "reset":
        return command, uuid, None
    if not NUMBER.match(args[1]):
        raise UsageError(f"{args[1]!r} is not a number")
    if command == "set-power-limit":
        watts = float(args[1])
        if not WATTS_RANGE[0] <= watts <= WATTS_RANGE[1]:
            raise UsageError(f"{watts:g} W is outside {WATTS_RANGE[0]:g}–{WATTS_RANGE[1]:g} W")
        return command, uuid, watts
    if "." in args[1]:
        raise UsageError(f"{args[1]!r}: MHz is a whole number")
    mhz = int(args[1])
    if not MHZ_RANGE[0] <= mhz <= MHZ_RANGE[1]:
        raise UsageError(f"{mhz} MHz is outside {MHZ_RANGE[0]}–{MHZ_RANGE[1]} MHz")
    return command, uuid, mhz


def apply(command: str, uuid: str, value: float | int | None) -> dict:
    """Do it through NVML; returns what is in force afterwards. Raises pynvml.NVMLError."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        if command == "set-power-limit":
            low, high = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
            milliwatts = round(float(value or 0) * 1000)
            if not low <= milliwatts <= high:
                raise ValueError(f"{value:g} W is outside the driver's range "
                                 f"{low / 1000:g}–{high / 1000:g} W")
            pynvml.nvmlDeviceSetPowerManagementLimit(handle, milliwatts)
        elif command == "lock-clocks":
            pynvml.nvmlDeviceSetGpuLockedClocks(handle, int(value or 0), int(value or 0))
        else:
            pynvml.nvmlDeviceSetPowerManagementLimit(
                handle, pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
            pynvml.nvmlDeviceResetGpuLockedClocks(handle)
        return {"uuid": uuid, "command": command,
                "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
                "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)}
    finally:
        pynvml.nvmlShutdown()


def main(argv: list[str] | None = None) -> int:
    """The program: parse, apply, say what happened."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, uuid, value = parse(argv)
    except UsageError as exc:
        print(f"farm-gpu-tune: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    import pynvml

    try:
        done = apply(command, uuid, value)
    except (pynvml.NVMLError, ValueError) as exc:
        print(f"farm-gpu-tune: {command} {uuid}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(done, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
