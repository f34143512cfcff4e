"""Result figures described once: unit and description as metadata of the record fields.

A figure is a field of a record (e.g. `LoadPointResult.energy_per_output_token_j`)
declared with `figure(description, unit)`. Its unit and description travel with
the field (pydantic's `description` and `json_schema_extra["unit"]`), so every
flat view of the record — the store's columns, the result rows, the dataset's
schema and docs/dataset.md — is derived from the record instead of listing the
figures again.

`flat_columns(Model)` lists a record's flat columns: a scalar field is one
column under its own name; a nested record field (`LatencyStats`) becomes one
column per field of the nested record, named `{field}_{nested field}`
(`ttft` → `ttft_mean_ms`, `ttft_p50_ms`, …), described as
"{field's description}, {nested field's description}". Lists are not flat and
are left to the caller (`exclude`).
"""

from __future__ import annotations

import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

UNIT_KEY = "unit"
LABEL_KEY = "label"
SHORT_KEY = "short"
# Units a header leaves unsaid: a ratio, or a count its label names ("passes").
UNSAID_UNITS = ("1", "count")
# Name endings that are a unit: a field without a label is read as its name without
# it, and its header says the unit instead ("peak_power_w" → "peak power W").
UNIT_SUFFIXES = ("ms", "s", "w", "j", "rps", "tps", "g", "mhz")


def default_label(name: str) -> str:
    """A field's name in words, without a unit ending ("peak_power_w" → "peak power")."""
    words = name.split("_")
    return " ".join(words[:-1] if len(words) > 1 and words[-1] in UNIT_SUFFIXES else words)


def figure(description: str, unit: str | None = None, default: Any = ...,
           label: str | None = None, short: str | None = None) -> Any:
    """A record field with its description and unit (None: not a quantity), and how
    a person reads it: `label`, its name in words without the unit ("energy per
    output token"), and `short`, a narrow table's header that says its unit
    ("J/out-tok"; None: the label followed by the unit).

    `default` as for pydantic's Field (`...`: required). The metadata changes
    nothing on the wire: a record's JSON is the same with or without it.
    """
    extra = {UNIT_KEY: unit, **({LABEL_KEY: label} if label else {}),
             **({SHORT_KEY: short} if short else {})}
    return Field(default, description=description, json_schema_extra=extra)


def _extra(info: FieldInfo, key: str) -> str | None:
    extra = info.json_schema_extra
    return extra.get(key) if isinstance(extra, dict) else None  # type: ignore[return-value]


def unit_of(info: FieldInfo) -> str | None:
    """The unit a field was declared with by `figure()` (None if none)."""
    return _extra(info, UNIT_KEY)


@dataclass(frozen=True)
class FlatColumn:
    """One flat column of a record: its name, where it sits in the record, its
    scalar Python type (int, float, bool or str), whether it may be None, its
    unit and description."""

    name: str
    path: tuple[str, ...]
    type: type
    nullable: bool
    unit: str | None
    description: str
    label: str = ""               # in words, no unit (default: the name without its unit)
    short: str | None = None      # a narrow header that says its unit

    @property
    def shown_unit(self) -> str:
        """The unit as a header or an axis shows it; "" for a ratio or a count."""
        return "" if self.unit in (None, *UNSAID_UNITS) else str(self.unit)

    @property
    def header(self) -> str:
        """A terminal table's header: `short`, else the label, followed by the unit
        where the name carries one ("TTFT p90 ms", "peak power W")."""
        if self.short:
            return self.short
        said = self.name.rsplit("_", 1)[-1] in UNIT_SUFFIXES and self.shown_unit
        return f"{self.label} {self.shown_unit}" if said else self.label

    @property
    def axis(self) -> str:
        """A plot axis: "energy per output token (J)"."""
        return f"{self.label} ({self.shown_unit})" if self.shown_unit else self.label

    def get(self, record: BaseModel) -> Any:
        """The column's value in `record`."""
        value: Any = record
        for part in self.path:
            value = getattr(value, part)
        return value


def _scalar(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None is allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot flatten the union {annotation!r}")
        return args[0], True
    return annotation, False


def _python_type(annotation: Any) -> type | None:
    """int, float, bool or str for a scalar annotation (a Literal of strings is str)."""
    if get_origin(annotation) is Literal:
        kinds = {type(v) for v in get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 else None
    return annotation if annotation in (int, float, bool, str) else None


def flat_columns(model: type[BaseModel], exclude: Collection[str] = ()) -> tuple[FlatColumn, ...]:
    """The flat columns of `model`, in field order (see the module's docstring).

    Raises TypeError for a field that is neither a scalar nor a nested record,
    unless it is in `exclude`; every column must have a description.
    """
    columns: list[FlatColumn] = []
    for name, info in model.model_fields.items():
        if name in exclude:
            continue
        annotation, nullable = _scalar(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if nullable:
                raise TypeError(f"{model.__name__}.{name}: an optional record is not flat")
            outer = _extra(info, LABEL_KEY) or name
            for inner in flat_columns(annotation):
                columns.append(FlatColumn(
                    name=f"{name}_{inner.name}", path=(name, *inner.path), type=inner.type,
                    nullable=inner.nullable, unit=inner.unit,
                    description=f"{info.description}, {inner.description}",
                    label=f"{outer} {inner.label}"))
            continue
        kind = _python_type(annotation)
        if kind is None:
            raise TypeError(f"{model.__name__}.{name}: {info.annotation!r} is not flat; "
                            "exclude it")
        if not info.description:
            raise TypeError(f"{model.__name__}.{name}: a figure needs a description")
        columns.append(FlatColumn(name=name, path=(name,), type=kind, nullable=nullable,
                                  unit=unit_of(info), description=info.description,
                                  label=_extra(info, LABEL_KEY) or default_label(name),
                                  short=_extra(info, SHORT_KEY)))
    return tuple(columns)


def flat_values(record: BaseModel, columns: Collection[FlatColumn]) -> dict[str, Any]:
    """{column name: value} of `record` for `columns`."""
    return {column.name: column.get(record) for column in columns}


def nested_values(row: Mapping[str, Any], columns: Collection[FlatColumn]) -> dict[str, Any]:
    """The fields of a record back from a flat `row` (by column name): nested
    records as dicts, ready for `Model.model_validate` / `Model(**…)`."""
    fields: dict[str, Any] = {}
    for column in columns:
        target = fields
        for part in column.path[:-1]:
            target = target.setdefault(part, {})
        target[column.path[-1]] = row[column.name]
    return fields
