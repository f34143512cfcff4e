"""What every real engine process starts with: its environment and its settings.

Device pinning is done with the environment, never inside the engine: the
child sees exactly the run's GPUs (by NVML index: `CUDA_DEVICE_ORDER=PCI_BUS_ID`
makes CUDA count them the same way), or none at all on the CPU device.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from farm_contract import vllm_versions
from farm_contract.engines import engine_kind
from farm_contract.layouts import LayoutError
from farm_contract.runspec import RunSpec
from workers.engines.base import engine_args
from workers.errors import EngineError
from workers.gpu.base import GpuDevice
from workers.gpu.vendors import pinning_env


def device_backend(gpus: list[GpuDevice]) -> str:
    """"gpu" or "cpu" (a real engine never runs on simulated GPUs)."""
    backends = {g.info.backend for g in gpus}
    if backends == {"cpu"}:
        return "cpu"
    if backends == {"gpu"}:
        return "gpu"
    from workers.errors import EngineError
    raise EngineError(f"a real engine needs real GPUs or the CPU device, got "
                      f"{', '.join(sorted(backends)) or 'no device'}")


def without_farm_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less the farm's own settings: they hold its credentials (the broker's
    password, the host's signing key), and an engine runs a model's code, or a
    command, that need not see them."""
    return {k: v for k, v in env.items() if not k.startswith("FARM_")}


def engine_env(gpus: list[GpuDevice], *, in_process_engine: bool = False,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an engine process pinned to `gpus`.

    `in_process_engine` (CPU device only) keeps vLLM's engine core in the engine
    process: on the CPU a separate core process costs 25–35 s more start-up and
    another 1 GB (../shared/VLLM_CPU.md), and there is no GPU work to overlap.
    """
    env = without_farm_settings(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    # vLLM's internal sockets bind the host's address unless told otherwise.
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    on_cpu = device_backend(gpus) == "cpu"
    # The devices' vendor pins them (CUDA_VISIBLE_DEVICES …; the CPU hides every GPU).
    env.update(pinning_env(gpus))
    if on_cpu and in_process_engine:
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return env


def model_settings(run: RunSpec) -> dict[str, Any]:
    """Model source, revision, tokenizer and dtype, named as vLLM names them."""
    model = run.model
    settings: dict[str, Any] = {"model": model.source}
    if model.revision:
        settings["revision"] = model.revision
    if model.tokenizer:
        settings["tokenizer"] = model.tokenizer
    if model.dtype != "auto":
        settings["dtype"] = model.dtype
    return settings


def vllm_settings(run: RunSpec, gpus: list[GpuDevice]) -> dict[str, Any]:
    """vLLM engine arguments: the model's, tensor parallelism over the run's GPUs,
    the workload seed, then the sweep's `[engine]` arguments.

    The sweep's arguments are read through the contract's model of vLLM's
    (`farm_contract.engine_args`, the one `farmctl validate` checked): the keys
    set here (model, tensor_parallel_size, seed) are refused there. The run's
    GPUs are tensor_parallel_size × pipeline_parallel_size × data_parallel_size
    (vLLM's layout in farm_contract.engines).
    """
    parsed = engine_args(run)
    args = parsed.vllm_arguments()  # type: ignore[attr-defined]
    check_vllm_version(args, parsed.vllm_version,  # type: ignore[attr-defined]
                       installed_vllm_version())
    settings = model_settings(run)
    device_backend(gpus)            # a real engine: refused on simulated GPUs
    settings.update(layout(run, gpus))
    settings["seed"] = run.workload.seed
    # In the sweep's order (the server's flags follow it).
    settings.update({k: args[k] for k in run.engine.args if k in args})
    return settings


def layout(run: RunSpec, gpus: list[GpuDevice]) -> dict[str, int]:
    """The parallel degrees `run`'s engine kind sets so that it uses every one of
    `gpus` (its `layout` in farm_contract.engines: vLLM's tensor_parallel_size);
    an EngineError when it cannot, since the meter sums them all."""
    backends = {g.info.backend for g in gpus}
    backend = backends.pop() if len(backends) == 1 else "gpu"
    try:
        return engine_kind(run.engine.kind).layout.degrees(run.engine.args, len(gpus), backend)
    except LayoutError as exc:
        raise EngineError(f"{run.engine.kind} engine: {exc}") from None


def with_layout(argv: list[str], degrees: Mapping[str, int]) -> list[str]:
    """A server's command line with each layout degree as a flag (`tensor_parallel_size`
    → `--tensor-parallel-size 2`): added where the command does not give it, an
    EngineError where it gives another value. So a server engine whose command
    forgets its parallel degree still runs on all of the run's GPUs."""
    out = list(argv)
    for name, value in degrees.items():
        flag = "--" + name.replace("_", "-")
        given = [out[i + 1] for i, word in enumerate(out[:-1]) if word == flag]
        given += [word.split("=", 1)[1] for word in out if word.startswith(flag + "=")]
        if not given:
            out += [flag, str(value)]
        elif any(word != str(value) for word in given):
            raise EngineError(f"the server's command line sets {flag} {', '.join(given)}, "
                              f"but the run has {value} for it (gpus_per_run): the meter "
                              "sums every GPU of the run")
    return out


def installed_vllm_version() -> str | None:
    """The vLLM this worker's engines would import ("vllm" or the CPU build's
    "vllm-cpu" distribution), without importing it (11–14 s); None if neither."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def check_vllm_version(args: Mapping[str, Any], pinned: str | None,
                       installed: str | None) -> None:
    """Refuse, before anything starts, a run whose pinned vLLM series is not the
    installed one, or whose arguments the installed vLLM lacks (an EngineError
    naming them and the version). Nothing to check without vLLM (require_ready
    says that) or for a series the farm has no list of."""
    if installed is None:
        return
    if pinned is not None and (mismatch := vllm_versions.version_mismatch(installed, pinned)):
        raise EngineError(mismatch)
    missing = vllm_versions.lacking(list(args), installed)
    if missing:
        raise EngineError("vLLM engine arguments: " + "; ".join(
            vllm_versions.refusal(name, f"{installed} (this worker's)") for name in missing))


def cli_flags(settings: Mapping[str, Any]) -> list[str]:
    """Engine arguments as vLLM command-line flags: `max_num_seqs=8` →
    `--max-num-seqs 8`; True → `--flag`, False → `--no-flag`, or nothing for a
    flag that only turns on (`--disable-log-stats`: false is its default)."""
    argv: list[str] = []
    on_only = vllm_versions.flag_on_only()
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            if key not in on_only:
                argv.append("--no-" + key.replace("_", "-"))
        elif value is not None:
            argv += [flag, str(value)]
    return argv
