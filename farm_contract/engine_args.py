"""Each engine kind's arguments: one pydantic model per kind, read by both sides.

Part of the contract (standard library and pydantic only). The coordinator
checks a sweep's `[engine]` table against the model of its `kind` before
anything is queued (every value of a swept list against the field's type);
the worker's engine reads a run's `engine.args` through the same model. So an
argument a worker would refuse is refused at `farmctl validate`, with its line.

Keys the farm sets itself (the model, the GPU count, the seed, the devices,
the server's address) are refused with the reason (`farm_sets`). vLLM's
arguments are its own `EngineArgs` fields, from the shipped lists of the
versions the farm knows (`farm_contract/vllm_versions.py`): the coordinator
never imports vLLM. `vllm_version = "0.26"` pins a run to a vLLM release
series: an argument that version lacks is then refused at validate.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from farm_contract import host_reach, simmodels, vllm_versions

Scalar = bool | int | float | str
# One problem, as pydantic's ValidationError.from_exception_data takes it.
ErrorDetails = dict[str, Any]


def problem(loc: tuple, message: str, value: Any = None) -> ErrorDetails:
    """A located problem with our own message (pydantic's "value_error" type)."""
    return {"type": "value_error", "loc": loc, "input": value,
            "ctx": {"error": ValueError(message)}}


def message_of(err: ErrorDetails) -> str:
    """The message of a problem made by `problem`."""
    return str(err["ctx"]["error"])

# Why a key is not an engine argument: the farm sets it from another table.
MODEL = "the farm sets the model from [[model]] (source, revision, tokenizer, dtype)"
GPUS = "the farm sets it to the run's GPU count: set gpus_per_run in [hardware]"
SEED = "the farm sets the seed from [workload] seed"
DEVICES = "the farm pins the run's devices itself (they are the GPUs it holds)"
ADDRESS = "the farm starts the server on a free loopback port"
SERVED = "the farm serves the model under its [[model]] id"


class EngineArgsError(ValueError):
    """A run's engine arguments that the engine's model refuses (the worker's check)."""


class EngineArgs(BaseModel):
    """Base of every kind's arguments: unknown names are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Keys a sweep may not give, each with the reason.
    farm_sets: ClassVar[dict[str, str]] = {}
    # Arguments only the engine's server scenario takes, and those only its batch one.
    server_only: ClassVar[frozenset[str]] = frozenset()
    batch_only: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def grid_problems(cls, grid: Mapping[str, list[Scalar]],
                      listed: set[str]) -> list[ErrorDetails]:
        """Problems of a sweep's arguments taken together, beyond each field's type
        (none by default; vLLM's: an argument the pinned version lacks)."""
        return []


_COMMON = {"model": MODEL, "dtype": MODEL, "revision": MODEL, "tokenizer": MODEL,
           "seed": SEED, "device": DEVICES, "device_map": DEVICES,
           "cuda_visible_devices": DEVICES}


class SimArgs(EngineArgs):
    """The sim engine's arguments, named as vLLM's (it models vLLM)."""

    farm_sets: ClassVar[dict[str, str]] = {**_COMMON, "tensor_parallel_size": GPUS}

    max_num_seqs: int = Field(default=simmodels.MAX_NUM_SEQS, gt=0, strict=True)
    gpu_memory_utilization: float = Field(default=simmodels.GPU_MEMORY_UTILIZATION, gt=0,
                                          le=1)


class HfArgs(EngineArgs):
    """The hf engine's arguments: `batch_size` (prompts per generate) and `attn_implementation`."""

    farm_sets: ClassVar[dict[str, str]] = dict(_COMMON)

    batch_size: int | None = Field(default=None, gt=0, strict=True)
    attn_implementation: str | None = None

    @field_validator("attn_implementation")
    @classmethod
    def _built_in(cls, value: str | None) -> str | None:
        why = host_reach.reach("attn_implementation", value)
        if why is not None:
            raise ValueError(why)
        return value


# The load tools whose result files the measure engine reads (workers/loadtools/).
LOAD_TOOL_FORMATS = ("vllm-bench", "guidellm", "aiperf")


class MeasureArgs(EngineArgs):
    """The measure engine's arguments: a command run under the meter (`farmctl measure`).

    `command` is the argument list, written as a POSIX shell would split it
    (`shlex.join`; split back with `shlex.split`, never given to a shell), `cwd`
    where it runs, `result` the load tool's result file it writes and `format` how
    to read it ("auto": from its content). Without `result` the run has energy
    figures only, its token figures null.
    """

    command: StrictStr
    cwd: StrictStr | None = None
    result: StrictStr | None = None
    format: Literal["auto", "vllm-bench", "guidellm", "aiperf"] = "auto"

    @field_validator("command")
    @classmethod
    def _argv(cls, value: str) -> str:
        import shlex

        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"command {value!r} is not an argument list: {exc}") from None
        if not argv:
            raise ValueError("command is empty")
        return value

    def argv(self) -> list[str]:
        """The command's argument list."""
        import shlex

        return shlex.split(self.command)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEPARATORS = re.compile(r"[\s,]+")


class OpenAIArgs(EngineArgs):
    """The openai engine's arguments: an endpoint that is already running, at `base_url`."""

    farm_sets: ClassVar[dict[str, str]] = {
        "api_key": "an API key is never written in a sweep (it would be stored with every "
                   "run): name the worker's environment variable that holds it with "
                   "api_key_env",
        "model": "served_model names the endpoint's model (default: the [[model]] source)",
        "seed": SEED,
    }

    base_url: str | None = None     # required: see _needs_base_url
    served_model: str | None = None
    api_key_env: str | None = None
    health_path: str = "/v1/models"
    ready_timeout_s: float = Field(default=60.0, gt=0)
    continuous_usage: bool = False
    endpoint_pids: str | int | None = None
    endpoint_processes: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_base_url(value)

    @model_validator(mode="after")
    def _needs_base_url(self) -> OpenAIArgs:
        if self.base_url is None:
            raise ValueError('the openai engine needs base_url (e.g. "http://127.0.0.1:8000")')
        return self

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        # The farm's own settings hold its credentials (broker password, signing key):
        # a sweep could send them to a server of its choosing (security audit A).
        if value is not None and value.upper().startswith("FARM_"):
            raise ValueError(f"{value!r} is one of the farm's own settings (FARM_*), never "
                             "sent as an API key: name the variable that holds the "
                             "endpoint's key (one the GPU host lists in FARM_API_KEY_ENVS)")
        return value

    @field_validator("health_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("endpoint_pids")
    @classmethod
    def _pid_list(cls, value: str | int | None) -> str | int | None:
        words = [w for w in _SEPARATORS.split(str(value)) if w] if value is not None else []
        if not all(w.isdigit() for w in words):
            raise ValueError(f"{value!r} is not a list of process ids (e.g. \"4121 4133\")")
        return value

    def pids(self) -> set[int]:
        """`endpoint_pids` as numbers."""
        if self.endpoint_pids is None:
            return set()
        return {int(w) for w in _SEPARATORS.split(str(self.endpoint_pids)) if w}

    def process_names(self) -> set[str]:
        """`endpoint_processes` as names."""
        if self.endpoint_processes is None:
            return set()
        return {w for w in _SEPARATORS.split(self.endpoint_processes) if w}


def normalize_base_url(value: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing `/` or `/v1`; ValueError otherwise."""
    import urllib.parse

    parsed = urllib.parse.urlsplit(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL with a host")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{value!r}: a base URL has no query or fragment")
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


# ------------------------------------------------------------------------ vLLM


def _json_object(value: str) -> str:
    try:
        decoded = json.loads(value)
    except ValueError:
        raise ValueError("vLLM takes a config here: give it as a JSON object in a string, "
                         "e.g. '{\"mode\": 0}'") from None
    if not isinstance(decoded, dict):
        raise ValueError("vLLM takes a config here: a JSON object ({...}), not "
                         f"{type(decoded).__name__}")
    return value


def _unsupported(value: Any) -> Any:
    raise ValueError("vLLM takes a list or a structure here, which one sweep value cannot "
                     "give (a list in [engine] is swept, not passed)")


_KINDS: dict[str, Any] = {
    "bool": StrictBool, "int": StrictInt, "float": Annotated[float, Field(strict=True)],
    "str": StrictStr, "json": Annotated[StrictStr, AfterValidator(_json_object)],
}


def _vllm_type(expression: str) -> Any:
    """A shipped type expression (`int`, `'auto' | 'half'`, `json`, …) as a pydantic type."""
    if expression == "unsupported":
        return Annotated[Any, AfterValidator(_unsupported)]
    parts = [p.strip() for p in expression.split("|")]
    literals = tuple(json.loads(p.replace("'", '"')) if p.startswith("'") else int(p)
                     for p in parts if p not in _KINDS)
    types = [_KINDS[p] for p in parts if p in _KINDS]
    if literals:
        types.append(Literal[literals])
    out = types[0]
    for tp in types[1:]:
        out = out | tp
    return out


class VllmArgsBase(EngineArgs):
    """vLLM's `EngineArgs` fields (of every version the farm knows), but those the farm
    sets, and `vllm_version`: the release series the run needs (not passed to vLLM)."""

    farm_sets: ClassVar[dict[str, str]] = {
        **_COMMON, "tokenizer_revision": MODEL, "tensor_parallel_size": GPUS,
        "device_ids": DEVICES, "served_model_name": SERVED, "host": ADDRESS, "port": ADDRESS,
        "model_weights": MODEL,
    }
    server_only: ClassVar[frozenset[str]] = vllm_versions.server_only()
    batch_only: ClassVar[frozenset[str]] = vllm_versions.batch_only()
    pinned_version: ClassVar[str] = vllm_versions.PINNED_VERSION

    # The vLLM release series the run needs ("0.26", "0.32.0"): the worker refuses
    # the run under another one, validate refuses arguments that series lacks.
    vllm_version: StrictStr | None = None

    def vllm_arguments(self) -> dict[str, Any]:
        """The arguments given, for vLLM itself (without the farm's `vllm_version`)."""
        return self.model_dump(exclude_none=True, exclude={"vllm_version"})

    def json_configs(self) -> dict[str, Any]:
        """The arguments given as JSON strings, decoded (for `vllm.LLM`, which takes dicts)."""
        types = vllm_versions.arg_types()
        return {name: json.loads(value) for name, value in self.vllm_arguments().items()
                if types.get(name) == "json"}

    @classmethod
    def grid_problems(cls, grid: Mapping[str, list[Scalar]],
                      listed: set[str]) -> list[ErrorDetails]:
        """Each argument a pinned `vllm_version` lacks, a version the farm has no list
        of, and each value that reaches past the run into the host (`host_reach`)."""
        errors: list[ErrorDetails] = []
        for name, values in grid.items():
            for index, value in enumerate(values):
                why = host_reach.reach(name, value)
                if why is not None:
                    at = (name, index) if name in listed else (name,)
                    errors.append(problem(at, why, value))
        for index, version in enumerate(grid.get("vllm_version") or []):
            if not isinstance(version, str):
                continue                        # the field's own type check says so
            at = ("vllm_version", index) if "vllm_version" in listed else ("vllm_version",)
            if vllm_versions.names_of(version) is None:
                errors.append(problem(at, vllm_versions.unknown_version(version), version))
                continue
            for name in vllm_versions.lacking([k for k in grid if k != "vllm_version"],
                                              version):
                errors.append(problem((name,), f"{vllm_versions.refusal(name, version)}; "
                                               f"the sweep pins vllm_version = {version!r}",
                                      grid[name]))
        return errors


@cache
def vllm_args_model() -> type[VllmArgsBase]:
    """The model of vLLM's arguments, built on first use (260 fields: kept off the import)."""
    table = vllm_versions.arg_types()
    fields: dict[str, Any] = {
        name: (_vllm_type(expression) | None, None)
        for name, expression in table.items() if name not in VllmArgsBase.farm_sets
    }
    return create_model("VllmArgs", __base__=VllmArgsBase, __doc__=VllmArgsBase.__doc__,
                        **fields)



# ------------------------------------------------------------------ checking


def _prefix(err: dict) -> tuple:
    return err["loc"][:1]


def _merge(errors: list[dict], index_of: Mapping[str, int | None]) -> list[ErrorDetails]:
    """One error per (argument, list index), union branches' messages joined."""
    merged: dict[tuple, tuple[str, str, Any]] = {}
    for err in errors:
        if not err["loc"]:          # a rule over several arguments: the table's
            loc: tuple = ()
        else:
            key = err["loc"][0]
            index = index_of.get(key) if err["type"] != "extra_forbidden" else None
            loc = (key,) if index is None else (key, index)
        message = err["msg"].removeprefix("Value error, ")
        if loc in merged:
            kind, old, value = merged[loc]
            if message not in old:
                merged[loc] = ("engine_arg", f"{old}, or {message[0].lower()}{message[1:]}",
                               value)
            continue
        merged[loc] = (err["type"], message, err.get("input"))
    out: list[ErrorDetails] = []
    for loc, (kind, message, value) in merged.items():
        if kind in ("extra_forbidden", "missing"):
            out.append({"type": kind, "loc": loc, "input": value})
        else:
            out.append(problem(loc, message, value))
    return out


def grid_errors(model: type[EngineArgs], grid: Mapping[str, list[Scalar]],
                listed: set[str] | None = None) -> list[ErrorDetails]:
    """Every problem of a sweep's engine arguments (`grid`: each argument's list of values),
    located (argument,) or (argument, index) for a value of a list in `listed`."""
    listed = listed or set()
    errors: list[ErrorDetails] = []
    for key in grid:
        if key in model.farm_sets:
            errors.append(problem((key,), f"not an engine argument: {model.farm_sets[key]}",
                                  grid[key]))
    args = {k: v for k, v in grid.items() if k not in model.farm_sets}
    errors += model.grid_problems(args, listed)
    base = {k: v[0] for k, v in args.items()}
    try:
        model.model_validate(base)
    except ValidationError as exc:
        errors += _merge(exc.errors(), {k: 0 if k in listed else None for k in args})
    for key, values in args.items():
        for index, value in enumerate(values[1:], start=1):
            try:
                model.model_validate({**base, key: value})
            except ValidationError as exc:
                mine = [e for e in exc.errors() if e["loc"][:1] == (key,)
                        and e["type"] != "extra_forbidden"]
                errors += _merge(mine, {key: index})
    return errors


def parse_args(model: type[EngineArgs], args: Mapping[str, Any], kind: str) -> EngineArgs:
    """One run's arguments through `model`; EngineArgsError naming each bad one otherwise."""
    errors = grid_errors(model, {k: [v] for k, v in args.items()})
    if not errors:
        return model.model_validate(dict(args))
    problems = []
    for err in errors:
        key = err["loc"][0] if err["loc"] else "(all)"
        kind_ = err["type"]
        if kind_ == "extra_forbidden":
            problems.append(f"{key}: unknown argument{did_you_mean(model, str(key))}")
        elif kind_ == "missing":
            problems.append(f"{key}: required")
        else:
            problems.append(f"{key}: {message_of(err)}" if err["loc"] else message_of(err))
    names = known_names(model)
    known = f"; known: {', '.join(names)}" if len(names) <= 12 else ""
    raise EngineArgsError(f"{kind} engine arguments: {'; '.join(problems)}{known}")


def known_names(model: type[EngineArgs]) -> list[str]:
    """The argument names `model` takes."""
    return list(model.model_fields)


def did_you_mean(model: type[EngineArgs], key: str) -> str:
    """" (did you mean 'x'?)" for the closest known name, or ""."""
    hint = difflib.get_close_matches(key, known_names(model), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""

