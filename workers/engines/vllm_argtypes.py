"""vLLM's engine arguments as the sweep side knows them, read from vLLM itself.

The coordinator never imports vLLM, so it checks `[engine]` arguments against
a shipped list (`farm_contract/vllm_args.py`: name → type expression). This
module computes that list from `vllm.engine.arg_utils.EngineArgs` and
`AsyncEngineArgs` (imported only when called), with what the server's command
line lacks (`server_cli_facts`: arguments without a flag, booleans without a
`--no-` form, read from `vllm serve`'s own parser), and writes the file:

    .venv/bin/python -m workers.engines.vllm_argtypes    # after a vLLM upgrade

`tests/engines/test_vllm_args.py` checks the shipped list against the vLLM
that is installed.

An older vLLM that cannot be imported here (0.26.0, the CUDA build the GPU
hosts run: it needs CUDA torch) is read from its source instead: the fields
of `EngineArgs`/`AsyncEngineArgs` in its `vllm/engine/arg_utils.py`, parsed
with `ast`, written as the names that version has beside the pinned list
(`farm_contract/vllm_args_0_26.py`: which of the pinned names it lacks, and
the few it has that the pinned one does not, with their types):

    python -m workers.engines.vllm_argtypes --source DIR/vllm/engine/arg_utils.py
 Type expressions are the kinds of value a sweep can give
(TOML has no null): `bool`, `int`, `float`, `str`, literal choices
(`'auto' | 'half'`), `json` (a table-like config: a JSON string), or
`unsupported` (a list, set, callable or type: nothing one TOML scalar says).
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import dataclasses
import enum
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}
SHIPPED = Path(__file__).resolve().parents[2] / "farm_contract" / "vllm_args.py"


def _parts(tp: Any) -> set[str]:
    """The value kinds of one annotation (see the module docstring)."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return set()
    if tp in SCALARS:
        return {SCALARS[tp]}
    if origin is typing.Literal:
        return {repr(v) for v in typing.get_args(tp) if v is not None}
    if origin in (typing.Union, types.UnionType):
        found: set[str] = set()
        for arg in typing.get_args(tp):
            found |= _parts(arg)
        return found
    if origin is typing.Annotated:
        return _parts(typing.get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_parts(tp)
    if tp is dict or origin in (dict, collections.abc.Mapping):
        return {"json"}
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or hasattr(tp, "model_fields")):
        return {"json"}      # a vLLM config class: its CLI flag takes JSON
    return {"unsupported"}


def _enum_parts(tp: type[enum.Enum]) -> set[str]:
    """What a sweep gives for an enum: its values, or its member names where the
    values are not what one writes (AttentionBackendEnum's are class paths; vLLM
    looks the member up by name, `AttentionBackendEnum["TRITON_ATTN"]`)."""
    named = any(isinstance(m.value, str) and m.value.upper() != m.name for m in tp)
    if named:
        return {repr(m.name) for m in tp}
    return {repr(m.value) for m in tp if isinstance(m.value, (str, int))}


def describe(tp: Any) -> str:
    """One annotation as a type expression: scalar kinds first, else json/unsupported."""
    return _expression(_parts(tp))


def _expression(parts: set[str]) -> str:
    """Value kinds joined as a type expression (see `describe`)."""
    scalars = parts - {"json", "unsupported"}
    if "str" in scalars:       # any string covers its literal strings
        scalars = {p for p in scalars if not p.startswith("'")}
    if scalars:
        return " | ".join(sorted(scalars))
    return "json" if "json" in parts else "unsupported"


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception:               # a forward reference vLLM leaves unresolved
        return {f.name: f.type for f in dataclasses.fields(cls)}


def engine_arg_types() -> tuple[str, dict[str, str], dict[str, str]]:
    """(vLLM version, EngineArgs' public fields → type, AsyncEngineArgs' extra ones → type)."""
    import vllm
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    def table(cls: type) -> dict[str, str]:
        hints = _hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            if f.name.startswith("_"):
                continue
            tp = hints.get(f.name, f.type)
            out[f.name] = "unsupported" if isinstance(tp, str) else describe(tp)
        return out

    engine = table(EngineArgs)
    server = {k: v for k, v in table(AsyncEngineArgs).items() if k not in engine}
    return vllm.__version__, engine, server


def server_cli_facts(names: set[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(those of `names` the server's command line has no flag for, the booleans
    among them whose flag only turns on: no `--no-` form) of the installed vLLM."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    options = {o: action for action in make_arg_parser(FlexibleArgumentParser())._actions
               for o in action.option_strings}
    no_flag, on_only = set(), set()
    for name in names:
        flag = "--" + name.replace("_", "-")
        if flag not in options:
            no_flag.add(name)
        elif isinstance(options[flag], argparse._StoreTrueAction):
            on_only.add(name)
    return frozenset(no_flag), frozenset(on_only)


def render(version: str, engine: dict[str, str], server: dict[str, str],
           server_cli: tuple[frozenset[str], frozenset[str]]) -> str:
    """The shipped module's text (`server_cli`: `server_cli_facts`)."""
    def block(items: dict[str, str]) -> str:
        return "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(items.items()))

    def names(items: frozenset[str]) -> str:
        return "".join(f"    {k!r},\n" for k in sorted(items))

    return (
        "# ruff: noqa: E501\n"
        f'"""vLLM {version}\'s engine arguments: name → the kinds of value a sweep can give.\n\n'
        "Generated by `python -m workers.engines.vllm_argtypes` from\n"
        "`dataclasses.fields(vllm.engine.arg_utils.EngineArgs)` (and `AsyncEngineArgs`, for\n"
        "the server); checked against the installed vLLM by tests/engines/test_vllm_args.py.\n"
        "Do not edit by hand. Type expressions: see workers/engines/vllm_argtypes.py.\n"
        '"""\n\n'
        f"VLLM_VERSION = {version!r}\n\n"
        "# EngineArgs: taken by vllm.LLM (batch) and by the server.\n"
        f"ENGINE_ARGS: dict[str, str] = {{\n{block(engine)}}}\n\n"
        "# AsyncEngineArgs adds these: taken by vLLM's server only.\n"
        f"SERVER_ONLY_ARGS: dict[str, str] = {{\n{block(server)}}}\n\n"
        "# The server's command line (`vllm serve`) has no flag for these: batch runs only.\n"
        f"NO_SERVER_FLAG: frozenset[str] = frozenset({{\n{names(server_cli[0])}}})\n\n"
        "# Booleans whose server flag only turns on (no `--no-` form): false is their\n"
        "# default, and is left off the command line.\n"
        f"SERVER_FLAG_ON_ONLY: frozenset[str] = frozenset({{\n{names(server_cli[1])}}})\n"
    )


# ------------------------------------------------- an older vLLM, from its source


def _ast_parts(node: ast.expr | None) -> set[str]:
    """The value kinds of one annotation in source form (`_parts` for an AST):
    scalars, `X | None`, Optional/Union, Literal, dict/Mapping and vLLM's *Config
    classes (json); anything else (lists, enums, aliases) unsupported."""
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:                            # a quoted annotation
            return _ast_parts(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return {"unsupported"}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _ast_parts(node.left) | _ast_parts(node.right)
    name = _ast_name(node.value if isinstance(node, ast.Subscript) else node)
    if isinstance(node, ast.Subscript):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name == "Literal":
            return {repr(i.value) for i in items
                    if isinstance(i, ast.Constant) and isinstance(i.value, (str, int))}
        if name in ("Optional", "Union"):
            return set().union(*(_ast_parts(i) for i in items))
        if name == "Annotated":
            return _ast_parts(items[0])
    if name in SCALARS_BY_NAME:
        return {SCALARS_BY_NAME[name]}
    if name in ("dict", "Dict", "Mapping") or name.endswith("Config"):
        return {"json"}
    return {"unsupported"}


SCALARS_BY_NAME = {t.__name__: kind for t, kind in SCALARS.items()}


def _ast_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def source_arg_types(arg_utils: Path) -> tuple[str, dict[str, str], dict[str, str]]:
    """(version, EngineArgs' public fields → type, AsyncEngineArgs' extra ones → type)
    of the vLLM whose `vllm/engine/arg_utils.py` is `arg_utils`, without importing it;
    the version from `vllm/_version.py` beside it."""
    tree = ast.parse(arg_utils.read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def table(name: str) -> dict[str, str]:
        return {s.target.id: _expression(_ast_parts(s.annotation))
                for s in classes[name].body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                and not s.target.id.startswith("_")}

    engine = table("EngineArgs")
    server = {k: v for k, v in table("AsyncEngineArgs").items() if k not in engine}
    found = re.search(r"""(?:__)?version(?:__)?\s*(?::\s*str\s*)?=\s*['"]([^'"]+)""",
                      (arg_utils.parents[1] / "_version.py").read_text(encoding="utf-8"))
    if not found:
        raise ValueError(f"no version in {arg_utils.parents[1] / '_version.py'}")
    return found.group(1), engine, server


def series(version: str) -> str:
    """"0.26" of "0.26.0" (a release series: its engine arguments are one set)."""
    return ".".join(version.split(".")[:2])


def older_path(version: str) -> Path:
    """Where the name set of vLLM `version` is shipped: farm_contract/vllm_args_0_26.py."""
    return SHIPPED.with_name(f"vllm_args_{series(version).replace('.', '_')}.py")


def render_older(version: str, engine: dict[str, str], server: dict[str, str],
                 pinned: dict[str, str], pinned_version: str) -> str:
    """The shipped module of an older vLLM's names: the names, the pinned ones it
    lacks, and its own extras with their types. `pinned`: every pinned name → type."""
    names = {**engine, **server}
    lacks = sorted(set(pinned) - set(names))
    extra = {k: v for k, v in names.items() if k not in pinned}

    def lines(items) -> str:
        return "".join(f"    {k!r},\n" for k in sorted(items))

    extras = "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(extra.items()))
    text = (
        f'"""vLLM {version}\'s engine argument names, beside the pinned {pinned_version}\'s.\n\n'
        f"vLLM {version} is the CUDA build the GPU hosts run; it cannot be imported here, so\n"
        "this is read from its source: `python -m workers.engines.vllm_argtypes --source\n"
        "DIR/vllm/engine/arg_utils.py` parses the fields of `EngineArgs` and `AsyncEngineArgs`\n"
        "with `ast`. Checked by tests/engines/test_vllm_args.py. Do not edit by hand.\n"
        '"""\n\n'
        f"VLLM_VERSION = {version!r}\n"
        f"PINNED_VERSION = {pinned_version!r}\n\n"
        f"# EngineArgs' public fields ({len(engine)}).\n"
        f"ENGINE_ARG_NAMES: frozenset[str] = frozenset({{\n{lines(engine)}}})\n\n"
        "# AsyncEngineArgs adds these: taken by vLLM's server only.\n"
        f"SERVER_ONLY_ARG_NAMES: frozenset[str] = frozenset({{\n{lines(server)}}})\n\n"
        f"# The pinned {pinned_version}'s arguments this version does not have ({len(lacks)}).\n"
        f"LACKS: frozenset[str] = frozenset({{\n{lines(lacks)}}})\n\n"
        f"# Its arguments the pinned {pinned_version} does not have, with their types "
        f"({len(extra)}).\n"
        f"EXTRA_ARGS: dict[str, str] = {{\n{extras}}}\n"
    )
    long_lines = any(len(line) > 100 for line in text.splitlines())
    return ("# ruff: noqa: E501\n" if long_lines else "") + text


def main(argv: list[str] | None = None) -> int:
    """Write farm_contract/vllm_args.py from the installed vLLM, or with --source the
    name set of an older vLLM read from its arg_utils.py."""
    parser = argparse.ArgumentParser(prog="python -m workers.engines.vllm_argtypes")
    parser.add_argument("--source", type=Path,
                        help="an older vLLM's vllm/engine/arg_utils.py (not imported)")
    options = parser.parse_args(argv)
    if options.source is None:
        version, engine, server = engine_arg_types()
        SHIPPED.write_text(render(version, engine, server,
                                  server_cli_facts({*engine, *server})), encoding="utf-8")
        print(f"wrote {SHIPPED}", file=sys.stderr)
        return 0
    from farm_contract import vllm_args

    version, engine, server = source_arg_types(options.source)
    target = older_path(version)
    target.write_text(render_older(version, engine, server,
                                   {**vllm_args.ENGINE_ARGS, **vllm_args.SERVER_ONLY_ARGS},
                                   vllm_args.VLLM_VERSION), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
