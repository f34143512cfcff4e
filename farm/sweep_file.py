"""From a sweep file to a `SweepSpec`, or a `SpecError` naming each problem's field
and line: the bounded read (`load_sweep`), the TOML parse (`parse_sweep`) and the
translation of pydantic's errors to the file's keys and lines (`validate_sweep`).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from farm.errors import ExitCode, FarmError
from farm.spec import (
    BatchScenario,
    HardwareSpec,
    Repetitions,
    ServerScenario,
    SweepSpec,
    WorkloadSpec,
)
from farm_contract import limits as lim
from farm_contract.engine_args import known_names
from farm_contract.engines import ENGINE_KINDS
from farm_contract.runspec import Decoding, MeasurementSpec, ModelSpec


@dataclass(frozen=True)
class Problem:
    """One problem of a sweep file: the field it is in, what is wrong, its line if known."""

    field: str
    message: str
    line: int | None = None


class SpecError(FarmError, ValueError):
    """A sweep file that cannot be used; every problem names its field and line."""

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        """The problems as text: a header naming the source, then one line per problem."""
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        for p in self.problems:
            where = f"line {p.line}: " if p.line else ""
            field = f"{p.field}: " if p.field else ""
            lines.append(f"  {where}{field}{p.message}")
        return "\n".join(lines)


def key_lines(text: str) -> dict[tuple, int]:
    """Map TOML paths (('scenario', 1, 'duration_s')) to the line that sets them.

    A light scan of headers and `key =` lines, enough to point a user at the
    line of a validation error; tomllib itself keeps no positions.
    """
    lines: dict[tuple, int] = {}
    table: tuple = ()
    array_counts: dict[tuple, int] = {}
    header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key_line = re.compile(r'^\s*([A-Za-z0-9_."\'-]+)\s*=')
    for number, raw in enumerate(text.splitlines(), start=1):
        match = header.match(raw)
        if match:
            path = tuple(part.strip().strip('"\'') for part in match.group(2).split("."))
            if match.group(1) == "[[":
                index = array_counts.get(path, -1) + 1
                array_counts[path] = index
                table = (*path, index)
            else:
                table = path
            lines.setdefault(table, number)
            lines.setdefault(table[:1], number)
            continue
        match = key_line.match(raw)
        if match:
            keys = tuple(k.strip().strip('"\'') for k in match.group(1).split("."))
            lines.setdefault((*table, *keys), number)
    return lines


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union tags and validator names, keeping the path into the data."""
    path: list = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not path_is_tag(part):
            path.append(part)  # a missing or unknown key: still the user's name
            node = None
    return tuple(path)


def path_is_tag(part: str) -> bool:
    """Whether a pydantic location part is a union tag or validator name, not a user's key."""
    return (part in ("server", "batch", "adaptive-repetitions", "repetition-count")
            or "[" in part or part.startswith("function-"))


def _message(err: dict, loc: tuple, data: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else ""
        parent = _lookup_model_fields(loc[:-1], data)
        hint = difflib.get_close_matches(str(key), parent, n=1) if parent else []
        return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if kind == "missing":
        return "required key is missing"
    message = err["msg"]
    return message.removeprefix("Value error, ")


_SECTION_FIELDS: dict[str, type[BaseModel]] = {
    "model": ModelSpec, "hardware": HardwareSpec, "workload": WorkloadSpec,
    "measurement": MeasurementSpec, "repetitions": Repetitions,
}


def _lookup_model_fields(loc: tuple, data: Any) -> list[str]:
    """Field names valid at `loc`, for "did you mean" hints."""
    if not loc:
        return list(SweepSpec.model_fields)
    head = loc[0]
    if head == "scenario" and len(loc) >= 2 and isinstance(data, dict):
        try:
            kind = data["scenario"][loc[1]].get("kind")
        except (KeyError, IndexError, TypeError, AttributeError):
            kind = None
        model = {"server": ServerScenario, "batch": BatchScenario}.get(kind)
        return list(model.model_fields) if model else []
    if head == "workload" and "decoding" in loc:
        return list(Decoding.model_fields)
    if head == "engine" and isinstance(data, dict):
        kind = (data.get("engine") or {}).get("kind") if isinstance(data.get("engine"),
                                                                       dict) else None
        return known_names(ENGINE_KINDS[kind].args) if kind in ENGINE_KINDS else []
    model = _SECTION_FIELDS.get(head)
    return list(model.model_fields) if model else []


def parse_sweep(text: str, source: str = "<sweep>") -> SweepSpec:
    """Parse and validate a sweep file's text. Raises `SpecError`, never anything else."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise SpecError(source, [Problem("", f"invalid TOML: {exc}",
                                         int(match.group(1)) if match else None)]) from None
    return validate_sweep(data, text, source)


def validate_sweep(data: Any, text: str | None, source: str) -> SweepSpec:
    """`data` as a SweepSpec; a SpecError with each problem's field, and its line in
    `text` (the file the data came from) where known."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        positions = key_lines(text) if text is not None else {}
        problems = []
        for err in exc.errors():
            loc = _clean_loc(err["loc"], data)
            line = None
            for end in range(len(loc), 0, -1):
                line = positions.get(loc[:end])
                if line:
                    break
            problems.append(Problem(_field_name(loc) or "(top level)",
                                    _message(err, loc, data), line))
        raise SpecError(source, problems) from None


def read_sweep_text(path: str | Path) -> str:
    """The file's text, refused before parsing when it is not a regular file (a device
    such as /dev/zero, or a FIFO, reads forever) or is larger than MAX_SWEEP_BYTES."""
    def refuse(message: str) -> SpecError:
        return SpecError(str(path), [Problem("", message)])

    try:
        # Non-blocking: opening a FIFO nobody writes to would wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise refuse("not a regular file (a device, a pipe or a folder): a sweep is "
                             "a .toml file")
            if info.st_size > lim.MAX_SWEEP_BYTES:
                raise refuse(_too_big(info.st_size))
            data = handle.read(lim.MAX_SWEEP_BYTES + 1)    # it may grow while read
        if len(data) > lim.MAX_SWEEP_BYTES:
            raise refuse(_too_big(len(data)))
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise refuse(f"cannot read the file: {exc}") from None


def _too_big(size: int) -> str:
    return (f"{size:,} bytes, above the farm's maximum of {lim.MAX_SWEEP_BYTES:,} for a sweep "
            f"file ({lim.WHY_SWEEP_BYTES}): split the study into sweeps")


def load_sweep(path: str | Path) -> tuple[SweepSpec, str]:
    """Read and validate a sweep file; returns the spec and the file's text."""
    text = read_sweep_text(path)
    return parse_sweep(text, str(path)), text
