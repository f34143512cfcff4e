"""The vLLM versions whose engine arguments the farm knows, and what each lacks.

Part of the contract (standard library only). Workers run different vLLM
builds: the CPU build pinned here (`vllm_args.py`, 0.32.0) and the CUDA build
the GPU hosts run (`vllm_args_0_26.py`, 0.26.0, read from its source). An
engine argument one of them lacks is refused by name, with the version:

- at `farmctl validate`/enqueue when the sweep pins the version
  (`[engine] vllm_version = "0.26"`, checked by `engine_args.VllmArgsBase`);
- by the worker before the engine starts, against the vLLM it has installed
  (`workers.engines.launch.vllm_settings`): a clear failed run, not vLLM's
  own TypeError half-way through loading.

A version is matched by its series (major.minor): 0.26.1 has 0.26.0's names.
"""

from __future__ import annotations

from farm_contract import vllm_args, vllm_args_0_26

PINNED_VERSION = vllm_args.VLLM_VERSION


def series(version: str) -> str:
    """"0.26" of "0.26.0", "0.26" or "0.26.0+cu130"."""
    return ".".join(version.split("+")[0].split(".")[:2])


_PINNED_NAMES = frozenset(vllm_args.ENGINE_ARGS) | frozenset(vllm_args.SERVER_ONLY_ARGS)
# series → (the version its list was read from, every engine argument name it has)
KNOWN: dict[str, tuple[str, frozenset[str]]] = {
    series(PINNED_VERSION): (PINNED_VERSION, _PINNED_NAMES),
    series(vllm_args_0_26.VLLM_VERSION): (
        vllm_args_0_26.VLLM_VERSION,
        vllm_args_0_26.ENGINE_ARG_NAMES | vllm_args_0_26.SERVER_ONLY_ARG_NAMES),
}


def arg_types() -> dict[str, str]:
    """Every known version's arguments → type expression (the pinned list's types,
    and an older version's own for the names only it has)."""
    return {**vllm_args_0_26.EXTRA_ARGS, **vllm_args.ENGINE_ARGS, **vllm_args.SERVER_ONLY_ARGS}


def server_only() -> frozenset[str]:
    """Arguments only `AsyncEngineArgs` has (the server's), in any known version."""
    return frozenset(vllm_args.SERVER_ONLY_ARGS) | vllm_args_0_26.SERVER_ONLY_ARG_NAMES


def batch_only() -> frozenset[str]:
    """Engine arguments the server's command line has no flag for (the pinned
    version's, taken for every known one): a batch run's only."""
    return vllm_args.NO_SERVER_FLAG


def flag_on_only() -> frozenset[str]:
    """Booleans whose server flag only turns on (no `--no-` form; the pinned
    version's, which 0.26's store_true flags match)."""
    return vllm_args.SERVER_FLAG_ON_ONLY


def known_series() -> list[str]:
    """The release series the farm has an argument list of, newest first."""
    return sorted(KNOWN, key=lambda s: tuple(int(p) for p in s.split(".") if p.isdigit()),
                  reverse=True)


def names_of(version: str) -> frozenset[str] | None:
    """Every engine argument of vLLM `version`; None for a series the farm has no list of."""
    entry = KNOWN.get(series(version))
    return entry[1] if entry else None


def lacking(names: list[str] | set[str], version: str) -> list[str]:
    """Those of `names` that vLLM `version` does not take (none for an unknown series)."""
    have = names_of(version)
    if have is None:
        return []
    return sorted(n for n in names if n not in have)


def who_has(name: str) -> str:
    """"0.32.0" / "0.32.0 and 0.26.0": the known versions that take `name`."""
    versions = [KNOWN[s][0] for s in known_series() if name in KNOWN[s][1]]
    return " and ".join(versions) or "no known version"


def refusal(name: str, version: str) -> str:
    """Why `name` is refused for vLLM `version`, naming the versions that take it."""
    return f"vLLM {version} has no engine argument {name!r} (it is in {who_has(name)}'s)"


def unknown_version(version: str) -> str:
    """Why a pinned version is refused: the farm has no list of its arguments."""
    listed = ", ".join(f"{s} ({KNOWN[s][0]})" for s in known_series())
    return (f"the farm knows the engine arguments of vLLM {listed}, not {version!r}: "
            "add its list with python -m workers.engines.vllm_argtypes")


def version_mismatch(installed: str, pinned: str) -> str | None:
    """Why a worker running vLLM `installed` refuses a run pinned to `pinned`; None if
    they are one series."""
    if series(installed) == series(pinned):
        return None
    return (f"this worker runs vLLM {installed}; the run pins vllm_version = {pinned!r} "
            "(run it on a worker with that vLLM, or change the pin)")


def portability_notes(names: list[str] | set[str]) -> list[str]:
    """For an unpinned sweep: one line per known version lacking some of `names`, saying
    that a worker running it refuses those runs (validate can say no more: which vLLM a
    worker runs is known only there)."""
    notes = []
    for s in known_series():
        version = KNOWN[s][0]
        missing = lacking(names, version)
        if missing:
            notes.append(f"vLLM {version} has no engine argument {', '.join(missing)}: a "
                         f"worker running {s} refuses these runs (vllm_version = \"{s}\" "
                         "or another series pins them, and validate checks the pin)")
    return notes
