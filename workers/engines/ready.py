"""Before a real engine starts: is its package installed, does its model path exist?

Without these checks a run fails with what the engine makes of it — the engine
child's `ModuleNotFoundError: No module named 'vllm'`, or transformers' and vLLM's
"Repo id must be in the form 'repo_name' or 'namespace/repo_name'" for a local
directory that is not there — and the user is left to guess what to change.
Each error here names it: the install command, or the path and where it was
looked for.
"""

from __future__ import annotations

import os
import socket

from farm_contract.engines import engine_kind
from farm_contract.runspec import RunSpec
from workers.errors import EngineError
from workers.model_policy import check_model_policy


def require_installed(kind: str) -> None:
    """Raise EngineError naming the install command if a package engine `kind` needs
    (its `packages` in farm_contract.engines) is missing."""
    from importlib.util import find_spec

    for package in engine_kind(kind).packages:
        if find_spec(package.module) is None:
            raise EngineError(f"{package.module} is not installed on this worker "
                              f"({socket.gethostname()}): install it with {package.install}, "
                              "then `farmctl retry` the sweep")


def is_local_path(source: str) -> bool:
    """A local path, not a hub id ("org/name" has one slash and never starts with . / ~)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1


def require_local_paths(*sources: str | None) -> None:
    """Raise EngineError if a model (or tokenizer) source is a local path that does not
    exist on this worker."""
    for source in sources:
        if source and is_local_path(source) and not os.path.exists(os.path.expanduser(source)):
            where = "" if source.startswith(("/", "~")) else f", relative to {os.getcwd()}"
            raise EngineError(f"model path {source} does not exist on this worker "
                              f"({socket.gethostname()}{where}): fix the model's `source` "
                              "(a directory on the worker, or a hub id such as org/name)")


def require_ready(run: RunSpec) -> None:
    """Both checks for `run`'s engine and model; called as a real engine starts."""
    check_model_policy(run)     # the host's model roots, hub and remote code, first
    require_installed(run.engine.kind)
    require_local_paths(run.model.source, run.model.tokenizer)
