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


def figure(description: str, unit: str | None = None, default: Any = ...) -> Any:
    """A record field with its description and unit (None: not a quantity).

    `default` as for pydantic's Field (`...`: required). The metadata changes
    nothing on the wire: a record's JSON is the same with or without it.
    """
    return Field(default, description=description, json_schema_extra={UNIT_KEY: unit})


def unit_of(info: FieldInfo) -> str | None:
    """The unit a field was declared with by `figure()` (None if none)."""
    extra = info.json_schema_extra
    return extra.get(UNIT_KEY) if isinstance(extra, dict) else None  # type: ignore[return-value]


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
            for inner in flat_columns(annotation):
                columns.append(FlatColumn(
                    name=f"{name}_{inner.name}", path=(name, *inner.path), type=inner.type,
                    nullable=inner.nullable, unit=inner.unit,
                    description=f"{info.description}, {inner.description}"))
            continue
        kind = _python_type(annotation)
        if kind is None:
            raise TypeError(f"{model.__name__}.{name}: {info.annotation!r} is not flat; "
                            "exclude it")
        if not info.description:
            raise TypeError(f"{model.__name__}.{name}: a figure needs a description")
        columns.append(FlatColumn(name=name, path=(name,), type=kind, nullable=nullable,
                                  unit=unit_of(info), description=info.description))
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
