"""Entry point of a GPU worker process (`farmctl worker` execs this module).

The coordinator's CLI never imports NVML or worker code: `farmctl worker`
replaces its own process with `python -m tasks.worker_main …`, so the layering
in DESIGN.md holds at the process boundary too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from farm_contract.exitcodes import ExitCode
from farm_contract.routing import queues_for_host


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The `farmctl worker` command line: its one parser (farm/cli.py passes every
    argument through). Bad usage exits 2, as click's does."""
    parser = argparse.ArgumentParser(
        prog="farmctl worker",
        description="Serve the runs meant for this host's GPUs (discovered through NVML).")
    parser.add_argument("--sim", action="append", default=[], metavar="MODEL[xN]",
                        help="simulated GPUs instead of NVML, e.g. H100-80GBx2; repeatable")
    parser.add_argument("--gpus", default=None, metavar="0,1,…",
                        help="use only these GPU indices")
    parser.add_argument("--name", default=None,
                        help="Celery node name (default farm-gpu-PID@HOST or farm-sim-PID@HOST)")
    parser.add_argument("--loglevel", default="INFO", help="default: INFO")
    parser.add_argument("--cpu", action="store_true",
                        help='serve runs on the host CPU (sweeps naming gpu = ["cpu"]; energy '
                             "from RAPL where readable, else null)")
    parser.add_argument("--probe", action="store_true",
                        help="print the GPUs found and the queues this worker would serve, "
                             "as JSON, and exit")
    # Extra energy sources read beside the GPUs (workers.energy); else FARM_ENERGY_SOURCES.
    parser.add_argument("--energy-source", action="append", default=[], dest="energy_sources",
                        metavar="KIND[:key=value;…]",
                        help="an energy source read beside the GPUs (workers/energy/), e.g. "
                             "rapl; repeatable; default: FARM_ENERGY_SOURCES")
    # Stop (status 0) after this long without a run: a batch job's worker (farm/slurm).
    parser.add_argument("--idle-exit-s", type=float, default=None, metavar="SECONDS",
                        help="stop (exit 0) after this long without a run: a batch job's "
                             "worker")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Open the devices and energy sources and serve this host's queues until stopped.

    With --probe, print the backend, queues, GPUs and sources as JSON and exit.
    Returns the exit code: INVALID_INPUT, NO_HARDWARE, or the Celery worker's own.
    """
    from farm_contract.settings import SettingsError, load_settings
    from workers.errors import PermanentError
    from workers.gpu.discovery import open_inventory, summarize

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.idle_exit_s is not None and args.idle_exit_s <= 0:
        print("Error: --idle-exit-s must be a positive number of seconds", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    try:
        load_settings()
    except SettingsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    from workers.energy import (
        SourceSpecError,
        configure_sources,
        configured_sources,
        parse_source_specs,
    )
    try:
        if args.energy_sources:
            configure_sources(parse_source_specs(args.energy_sources))
        sources = configured_sources()
    except SourceSpecError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    try:
        indices = [int(i) for i in args.gpus.split(",")] if args.gpus else None
        sim_host = f"{socket.gethostname()}/{args.name}" if args.name else None
        inventory = open_inventory(args.sim or None, indices, sim_host=sim_host, cpu=args.cpu)
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return ExitCode.INVALID_INPUT
    except PermanentError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return ExitCode.NO_HARDWARE
    queues = queues_for_host(inventory.backend, summarize(inventory))
    if args.probe:
        print(json.dumps({"backend": inventory.backend, "queues": queues,
                          "gpus": [d.info.model_dump() for d in inventory.devices()],
                          "energy_sources": [s.info().model_dump() for s in sources]}))
        inventory.shutdown()
        return ExitCode.OK
    from tasks.broker_state import credentials_refused

    refused = credentials_refused(load_settings().broker_url)
    if refused:
        print(f"Error: {refused}", file=sys.stderr)
        inventory.shutdown()
        return ExitCode.BROKER_ERROR
    from tasks.measure import serve

    kind = "sim" if args.sim else ("cpu" if args.cpu else "gpu")
    return serve(inventory, args.name or f"farm-{kind}-{os.getpid()}@{socket.gethostname()}",
                 args.loglevel, idle_exit_s=args.idle_exit_s)


if __name__ == "__main__":
    sys.exit(main())
