"""The `--simulate` copy of a sweep: the same study on simulated GPUs with the
simulated engine, validated as a sweep of its own, and notes on what it left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from farm.spec import SweepSpec
from farm.sweep_file import (
    Problem,
    SpecError,
    key_lines,
    parse_sweep,
    read_sweep_text,
    validate_sweep,
)
from farm_contract.engines import ENGINE_KINDS, SIMULATOR
from farm_contract.routing import split_backend
from farm_contract.runspec import TUNING_FIELDS


def load_simulated(path: str | Path) -> tuple[SweepSpec, str, list[str]]:
    """Read a sweep file, validate it, and validate its simulated copy (`--simulate`),
    with the file's lines in both; returns the copy, the file's text and the notes
    on what the copy left out (`simulated_copy_with_notes`)."""
    text = read_sweep_text(path)
    spec = parse_sweep(text, str(path))
    copy, notes = simulated_copy_with_notes(spec, text=text, source=f"{path} (--simulate)")
    return copy, text, notes


def simulated_copy(spec: SweepSpec) -> SweepSpec:
    """The same sweep on simulated GPUs with the simulated engine (notes dropped);
    see `simulated_copy_with_notes`."""
    return simulated_copy_with_notes(spec)[0]


def simulated_copy_with_notes(spec: SweepSpec, *, text: str | None = None,
                              source: str = "<sweep> (--simulate)",
                              ) -> tuple[SweepSpec, list[str]]:
    """The same sweep on simulated GPUs with the simulated engine, and notes for the user.

    The name gets a "-sim" suffix so simulated runs never share a sweep (or a
    report) with measured ones. Engine arguments are mapped explicitly: those
    the sim engine takes (named as vLLM's: `max_num_seqs`,
    `gpu_memory_utilization`; hf's `batch_size` as `max_num_seqs`) are carried,
    every other one is dropped with a
    note, and so is an `[[exclude]]` rule that names a dropped one. The copy is
    validated as a sweep of its own (the model's size, memory fit), its
    problems located at the lines of `text`. Raises SpecError.
    """
    def as_sim(name: str) -> str:
        return name if split_backend(name)[0] == "sim" else f"sim:{name}"

    if any(split_backend(g)[0] == "cpu" for g in spec.hardware.gpu):
        line = key_lines(text).get(("hardware", "gpu")) if text is not None else None
        raise SpecError(source, [Problem(
            "hardware.gpu", '"cpu" has no simulated counterpart (the sim engine models '
            "catalogue GPUs): --simulate needs a sweep on GPUs", line)])
    notes: list[str] = []
    carried: dict[str, Any] = {}
    # The kind's own mapping (`EngineKind.simulate_as`); the rest by the sim engine's names.
    mapping = ENGINE_KINDS[spec.engine.kind].simulate_as
    renamed = {key: sim_name for key, (sim_name, _) in mapping.items()}
    takes = set(ENGINE_KINDS[SIMULATOR].args.model_fields)
    for key, value in sorted((spec.engine.model_extra or {}).items()):
        if key in mapping:
            carried[renamed[key]] = value
            notes.append(f"--simulate: engine argument {key} = {value!r} carried as "
                         f"{renamed[key]} ({mapping[key][1]})")
        elif key in takes:
            carried[key] = value
        else:
            notes.append(f"--simulate: engine argument {key} = {value!r} dropped: the sim "
                         "engine does not model it")
    exclude = []
    dropped: dict[str, list[int]] = {}      # the dropped arguments a rule names → rules
    for number, given in enumerate(spec.exclude, start=1):
        # A rule naming a renamed argument names it as the copy does.
        rule = {f"engine.{renamed[k.removeprefix('engine.')]}"
                if k.startswith("engine.") and k.removeprefix("engine.") in renamed else k: v
                for k, v in given.items()}
        gone = sorted(k for k in rule if k.startswith("engine.")
                      and k.removeprefix("engine.") not in carried)
        if gone:
            dropped.setdefault(", ".join(gone), []).append(number)
            continue
        # Exclude rules that name GPUs must keep matching the renamed GPUs.
        exclude.append({k: ([as_sim(str(x)) for x in v] if isinstance(v, list)
                            else as_sim(str(v))) if k == "gpu" else v
                        for k, v in rule.items()})
    for names, numbers in dropped.items():
        rules = f"rule {numbers[0]}" if len(numbers) == 1 else \
            f"rules {', '.join(map(str, numbers))}"
        notes.append(f"--simulate: [[exclude]] {rules} dropped: naming {names}, which the "
                     "simulated sweep does not set")
    data = spec.model_dump(mode="python")
    for key in TUNING_FIELDS:
        if data["hardware"].pop(key, None) is not None:
            notes.append(f"--simulate: [hardware] {key} dropped: the sim engine does not "
                         "model it")
    data["name"] = spec.name if spec.name.endswith("-sim") else f"{spec.name}-sim"
    data["hardware"]["gpu"] = [as_sim(n) for n in spec.hardware.gpu]
    data["engine"] = {"kind": SIMULATOR, **carried}
    data["exclude"] = exclude
    return validate_sweep(data, text, source), notes
