"""Which models a GPU host loads, and whether it runs their code: the host's policy,
read from its settings (farm_contract/settings.py), never from the sweep.

A sweep is anyone's text. Without this check `source = "/etc/passwd"` reached
the engine, the worker's existence check told the sender whether any path on
the GPU host existed, and `trust_remote_code = true` ran Python shipped with
a model on the host. So, before a real engine starts (workers/engines/ready.py):

- a model (or tokenizer) is a folder under one of the host's model roots
  (FARM_MODEL_ROOTS; by default ./.farm/models, FARM_MODELS_DIR and /models),
  symlinks and `..` resolved before the containment check;
- a hub id ("org/name") only where the host allows the hub (FARM_ALLOW_HUB);
- `trust_remote_code` only where the host allows it (FARM_ALLOW_REMOTE_CODE);
- no engine argument that makes the host import code, touch a path or reach an
  address of the sweep's choosing (`farm_contract/host_reach.py`; validate
  refuses them too).

A refused source gets one message whether the path is missing, outside the
roots or a hub id on a host without the hub: the answer never says what exists.
"""

from __future__ import annotations

import os
import socket

from farm_contract import host_reach
from farm_contract.runspec import RunSpec
from farm_contract.settings import Settings, load_settings
from workers.errors import EngineError


def _looks_like_path(source: str) -> bool:
    """A local path by its form ("org/name" and "gpt2" are hub ids)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1


def inside_roots(path: str, roots: list[str]) -> bool:
    """Whether the resolved `path` is one of `roots` or lies under one."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def source_allowed(source: str, settings: Settings, cwd: str | None = None) -> bool:
    """Whether this host loads `source`: an existing folder under a model root (after
    resolving symlinks and `..`), or a hub id where the hub is allowed."""
    cwd = cwd or os.getcwd()
    local = os.path.join(cwd, os.path.expanduser(source))
    resolved = os.path.realpath(local)
    if inside_roots(resolved, settings.model_root_paths(cwd)) and os.path.isdir(resolved):
        return True
    # A hub-shaped name that is a folder here would be loaded as that folder.
    return settings.allow_hub and not _looks_like_path(source) and not os.path.lexists(local)


def refusal(source: str, settings: Settings) -> str:
    """The one message for every refused source (it must not tell what exists)."""
    roots = ", ".join(settings.model_root_paths())
    hub = "hub ids where FARM_ALLOW_HUB is on" if not settings.allow_hub else "hub ids"
    return (f"model source {source!r} is not one this worker ({socket.gethostname()}) loads: "
            f"it takes models only from folders under its model roots ({roots}; "
            f"FARM_MODEL_ROOTS), and {hub}: fix the model's `source`, or ask the host's "
            "admin to put the model under a root")


def check_model_policy(run: RunSpec, settings: Settings | None = None) -> None:
    """Raise EngineError (the run fails, not retried) if this host's policy refuses
    `run`'s model, tokenizer or remote code."""
    settings = settings or load_settings()
    if run.engine.args.get("trust_remote_code") and not settings.allow_remote_code:
        raise EngineError(f"trust_remote_code = true: this worker ({socket.gethostname()}) "
                          "does not run code that comes with a model (FARM_ALLOW_REMOTE_CODE "
                          "is off on this host): leave the argument out, or run the sweep on "
                          "a host whose admin allows it")
    for source in (run.model.source, run.model.tokenizer):
        if source and not source_allowed(source, settings):
            raise EngineError(refusal(source, settings))
    # Validate refuses these too; a run message need not have passed it.
    reaching = host_reach.reach_in(run.engine.args)
    if reaching:
        raise EngineError(f"this worker ({socket.gethostname()}) refuses engine arguments "
                          f"that reach past the run: {'; '.join(reaching)}")
