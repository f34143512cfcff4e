"""GPU model names → canonical model → Celery queue name.

Pure: standard library only. This module is part of the contract between the
coordinator and the workers: both sides must compute the same queue name for the
same GPU, or runs wait forever.

A sweep names GPUs the way people do ("H100", "A100-40GB"); NVML names them the
way the driver does ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"). Both
resolve to one `GpuModel` with a canonical slug, and the queue for N GPUs of a
model on a backend is ``{backend}.{slug}.x{N}``, e.g. ``gpu.h100-80gb.x1``.
Simulated GPUs get their own namespace (``sim.h100-80gb.x1``) so a simulated
worker can never take a run that asked for real hardware.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from farm_contract.exitcodes import ExitCode

Backend = Literal["gpu", "sim", "cpu"]
BACKENDS: tuple[str, ...] = ("gpu", "sim", "cpu")
# The host's CPU as the device of engines built for it (vLLM's CPU build): named
# "cpu" in a sweep, one per host, energy from RAPL where readable.
CPU_SLUG = "cpu"
SIM_PREFIX = "sim:"


class UnknownGpuError(ValueError):
    """A GPU name that matches no known model."""

    # The contract's root cannot be farm.errors.FarmError: farm/cli.py maps the class.
    exit_code = ExitCode.INVALID_INPUT


@dataclass(frozen=True)
class GpuModel:
    """A GPU model as the farm knows it.

    Attributes:
        slug: canonical name, used in queue names and the store.
        display: human name.
        memory_gb: memory of one GPU (GB, as marketed).
        tdp_w: board power limit at default settings (W).
        aliases: names that resolve to this model (compared normalised).
    """

    slug: str
    display: str
    memory_gb: int
    tdp_w: int
    aliases: tuple[str, ...]


# Each alias is normalised by `_norm` before matching; NVML names are listed as
# the driver reports them. Ambiguous short names ("H100", "A100") resolve to the
# most common data-centre part and are documented as such.
CATALOG: tuple[GpuModel, ...] = (
    GpuModel("h100-80gb", "NVIDIA H100 80GB (SXM)", 80, 700,
             ("H100", "H100-80GB", "H100-SXM", "H100-SXM5", "H100-SXM-80GB",
              "NVIDIA H100 80GB HBM3", "NVIDIA H100")),
    GpuModel("h100-pcie", "NVIDIA H100 PCIe 80GB", 80, 350,
             ("H100-PCIE", "H100-PCIE-80GB", "NVIDIA H100 PCIe")),
    GpuModel("h100-nvl", "NVIDIA H100 NVL 94GB", 94, 400,
             ("H100-NVL", "H100-94GB", "NVIDIA H100 NVL")),
    GpuModel("h200-141gb", "NVIDIA H200 141GB", 141, 700,
             ("H200", "H200-141GB", "NVIDIA H200", "NVIDIA H200 141GB HBM3e")),
    GpuModel("gh200", "NVIDIA GH200 96GB", 96, 900,
             ("GH200", "NVIDIA GH200 480GB", "NVIDIA GH200 96GB HBM3")),
    GpuModel("b200", "NVIDIA B200 180GB", 180, 1000, ("B200", "NVIDIA B200")),
    GpuModel("a100-40gb", "NVIDIA A100 40GB", 40, 400,
             ("A100", "A100-40GB", "A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB",
              "NVIDIA A100-PCIE-40GB", "NVIDIA A100 40GB PCIe")),
    GpuModel("a100-80gb", "NVIDIA A100 80GB", 80, 400,
             ("A100-80GB", "A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB",
              "NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB")),
    GpuModel("l40s", "NVIDIA L40S 48GB", 48, 350, ("L40S", "NVIDIA L40S")),
    GpuModel("l40", "NVIDIA L40 48GB", 48, 300, ("L40", "NVIDIA L40")),
    GpuModel("l4", "NVIDIA L4 24GB", 24, 72, ("L4", "NVIDIA L4")),
    GpuModel("a10g", "NVIDIA A10G 24GB", 24, 300, ("A10G", "NVIDIA A10G")),
    GpuModel("a10", "NVIDIA A10 24GB", 24, 150, ("A10", "NVIDIA A10")),
    GpuModel("a40", "NVIDIA A40 48GB", 48, 300, ("A40", "NVIDIA A40")),
    GpuModel("a6000", "NVIDIA RTX A6000 48GB", 48, 300,
             ("A6000", "RTX-A6000", "NVIDIA RTX A6000")),
    GpuModel("t4", "NVIDIA T4 16GB", 16, 70, ("T4", "Tesla T4", "NVIDIA T4")),
    GpuModel("v100-16gb", "NVIDIA V100 16GB", 16, 300,
             ("V100", "V100-16GB", "Tesla V100-SXM2-16GB", "Tesla V100-PCIE-16GB")),
    GpuModel("v100-32gb", "NVIDIA V100 32GB", 32, 300,
             ("V100-32GB", "Tesla V100-SXM2-32GB", "Tesla V100-PCIE-32GB")),
    GpuModel("rtx-4090", "NVIDIA GeForce RTX 4090 24GB", 24, 450,
             ("RTX-4090", "RTX4090", "4090", "NVIDIA GeForce RTX 4090")),
    GpuModel("rtx-3090", "NVIDIA GeForce RTX 3090 24GB", 24, 350,
             ("RTX-3090", "RTX3090", "3090", "NVIDIA GeForce RTX 3090")),
    # Not a GPU: the host CPU for CPU-built engines (memory and TDP vary per host).
    GpuModel(CPU_SLUG, "Host CPU", 0, 0, ("CPU",)),
)


def _norm(name: str) -> str:
    """Upper-case, drop a vendor prefix, and unify separators: "nvidia h100_80gb" → "H100-80GB"."""
    text = name.strip().upper()
    for prefix in ("NVIDIA ", "TESLA ", "GEFORCE "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return re.sub(r"[\s_/]+", "-", text).strip("-")


_BY_ALIAS: dict[str, GpuModel] = {}
for _model in CATALOG:
    for _alias in (_model.slug, *_model.aliases):
        _BY_ALIAS.setdefault(_norm(_alias), _model)
_BY_SLUG: dict[str, GpuModel] = {m.slug: m for m in CATALOG}


def known_gpu_names() -> list[str]:
    """Short names users can write in a sweep, for error messages."""
    return sorted({m.aliases[0] for m in CATALOG})


def resolve_gpu(name: str) -> GpuModel:
    """Resolve a friendly or NVML name to its model; raise `UnknownGpuError` otherwise."""
    model = _BY_ALIAS.get(_norm(name))
    if model is None:
        raise UnknownGpuError(
            f"unknown GPU model {name!r}; known: {', '.join(known_gpu_names())}"
        )
    return model


def slug_for_device_name(device_name: str, vendor_prefixes: tuple[str, ...] = ()) -> str:
    """Canonical slug of a GPU reported by the driver.

    `vendor_prefixes` (upper case, e.g. ("AMD INSTINCT ",)) are stripped first:
    each GPU vendor's driver decorates model names its own way (NVIDIA's
    "NVIDIA "/"Tesla " prefixes are always stripped). A GPU missing from the
    catalogue still gets a stable slug derived from its name, so a new model
    can serve sweeps that name it by that slug.
    """
    name = device_name.strip()
    for prefix in vendor_prefixes:
        if name.upper().startswith(prefix):
            name = name[len(prefix):]
            break
    try:
        return resolve_gpu(name).slug
    except UnknownGpuError:
        return re.sub(r"[^a-z0-9]+", "-", _norm(name).lower()).strip("-")


def gpu_model(slug: str) -> GpuModel | None:
    """The catalogue entry for a canonical slug, or None for uncatalogued GPUs."""
    return _BY_SLUG.get(slug)


# Power limits a sweep may ask for, as a share of the model's TDP: drivers
# refuse limits above the board's maximum (its TDP at default settings, for the
# catalogued data-centre parts) and below a minimum near a quarter to a third
# of it (H100 SXM: 200 of 700 W; A100: 100 of 400 W). The worker checks the
# exact range the driver reports before setting anything.
MIN_POWER_LIMIT_FRACTION_OF_TDP = 0.25
# SM clocks a sweep may lock to: no catalogued GPU supports one outside this.
SM_CLOCK_RANGE_MHZ = (200, 3000)


def power_limit_problem(slug: str, watts: float) -> str | None:
    """Why a power limit of `watts` cannot be set on GPUs of model `slug`, or None.

    Judged against the catalogue's TDP where it is known; None for an
    uncatalogued model (the worker checks the driver's own range).
    """
    model = gpu_model(slug)
    if model is None or model.tdp_w <= 0:
        return None
    low = MIN_POWER_LIMIT_FRACTION_OF_TDP * model.tdp_w
    if watts > model.tdp_w:
        return (f"{watts:g} W is above the {model.display}'s TDP of {model.tdp_w} W: the "
                "driver refuses a limit above the board's maximum")
    if watts < low:
        return (f"{watts:g} W is below {low:g} W ({MIN_POWER_LIMIT_FRACTION_OF_TDP:.0%} of "
                f"the {model.display}'s {model.tdp_w} W TDP), under any minimum limit a "
                "driver accepts")
    return None


def sm_clock_problem(mhz: int) -> str | None:
    """Why an SM clock lock at `mhz` is implausible on any catalogued GPU, or None."""
    low, high = SM_CLOCK_RANGE_MHZ
    if not low <= mhz <= high:
        return f"{mhz} MHz is outside {low}–{high} MHz, the SM clocks GPUs support"
    return None


def split_backend(name: str) -> tuple[Backend, str]:
    """"sim:H100" → ("sim", "H100"); "H100" → ("gpu", "H100"); "cpu" → ("cpu", "cpu")."""
    if name.strip().lower().startswith(SIM_PREFIX):
        return "sim", name.strip()[len(SIM_PREFIX):]
    if name.strip().lower() == CPU_SLUG:
        return "cpu", CPU_SLUG
    return "gpu", name


def queue_for(backend: str, slug: str, gpu_count: int) -> str:
    """Queue of runs needing `gpu_count` GPUs of model `slug` on `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown GPU backend {backend!r}; known: {', '.join(BACKENDS)}")
    if gpu_count < 1:
        raise ValueError(f"gpu_count must be >= 1, got {gpu_count}")
    return f"{backend}.{slug}.x{gpu_count}"


def queues_for_host(backend: str, gpus_by_slug: dict[str, int]) -> list[str]:
    """Every queue a host can serve: for each model with n GPUs, x1 … xn."""
    return [
        queue_for(backend, slug, count)
        for slug, total in sorted(gpus_by_slug.items())
        for count in range(1, total + 1)
    ]


RECORD_QUEUE = "farm.record"


def parse_host_spec(text: str) -> tuple[str, int]:
    """"H100-80GBx2" / "sim:L4" / "L4x4" → (canonical slug, GPU count).

    A spec that names no known model or a count below 1 raises UnknownGpuError
    (a ValueError that farmctl reports as bad input, exit status 2)."""
    _, body = split_backend(text)
    body = body.strip()
    if not body:
        raise UnknownGpuError(f"cannot read GPU spec {text!r}: expected MODEL or MODELxN, "
                         "e.g. H100-80GB or L4x2")
    # A whole name first: "RTX4090" is a model, not "RT" times 4090.
    if _norm(body) in _BY_ALIAS:
        return resolve_gpu(body).slug, 1
    match = re.fullmatch(r"(.+?)\s*[xX×](\d+)", body)
    name, count = (match.group(1), int(match.group(2))) if match else (body, 1)
    if count < 1:
        raise UnknownGpuError(f"GPU spec {text!r}: the count must be at least 1")
    try:
        return resolve_gpu(name).slug, count
    except UnknownGpuError as exc:
        raise UnknownGpuError(f"GPU spec {text!r}: {exc}") from None
