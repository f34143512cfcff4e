"""Engine kind `openai`: an OpenAI-compatible endpoint that is already running.

The farm starts nothing: the run loads `base_url` (any http(s) server speaking
the OpenAI completions/chat API — a vLLM, SGLang or TGI server somebody
started, or the shipped mock, `python -m workers.mock_openai`) with the server
scenario's load points, through the same load generator and steady-state
windows as the vLLM server engine. Arguments (`OpenAIEndpointArgs`):

- `base_url` (required): the server's root, `http(s)://host:port`; a trailing
  `/v1` is dropped (the load generator adds `/v1/completions` itself);
- `served_model`: the requests' `model` field, by default the model's `source`;
- `api_key_env`: the name of an environment variable *on the worker* holding
  the API key, sent as `Authorization: Bearer …`. The key itself is never an
  engine argument: engine arguments are stored with every run. The host
  decides which variables may be sent (FARM_API_KEY_ENVS, none by default;
  never a FARM_* one): the sweep chooses the server they go to;
- `health_path` (default `/v1/models`): polled until it answers 200, for at
  most `ready_timeout_s` (default 60 s) of the start deadline. When it
  answers an OpenAI model list, `served_model` must be in it;
- `continuous_usage`: ask for usage on every streamed chunk (vLLM's
  `stream_options.continuous_usage_stats`): exact token counts from servers
  that bundle tokens;
- `endpoint_pids`, `endpoint_processes`: the endpoint's own processes on the
  run's devices (below).

Isolation. The worker measures the devices it handed to the run, and its
isolation watch flags every compute process there that is not the run's own.
An endpoint served from those GPUs is such a process, started outside the
farm; the sweep names it, and nothing else is let through:
`endpoint_pids = "4121 4133"` (pids, separated by spaces or commas) and/or
`endpoint_processes = "python3,VLLM::EngineCor"` (exact process names: the
kernel's 15-character `comm`, or the base name of the first command-line
word). Each named process counts with all its descendants (a vLLM server's
engine core and tensor-parallel workers), looked up afresh while the run goes
on. A named pid or name that matches no process fails the run's start: a
stale declaration is not a licence. Every load point's notes say what was
allowed, where the endpoint was, and that the farm did not start it.

The host's model policy (workers/model_policy.py) applies to the tokenizer
the worker loads for the prompts (the model's `tokenizer`, else its `source`),
as for the engines that load a model; the workload's dataset is read only from
the host's dataset roots (workers/workload.py): the prompts go to `base_url`.

What the figures mean. The energy is that of the run's devices: it is the
endpoint's only when the endpoint runs on exactly those devices of the
worker's host (a non-loopback `base_url` gets a note saying so). The
endpoint's start-up is not in the "load" window, and its model is resident
during the idle windows, so `idle` is not a no-context idle: the net-of-idle
figures subtract an idle with the model loaded.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import time
import urllib.parse
from typing import ClassVar

from farm_contract.engine_args import OpenAIArgs, normalize_base_url  # noqa: F401 (re-export)
from farm_contract.records import EngineInfo
from farm_contract.runspec import RunSpec
from farm_contract.settings import load_settings
from workers.engines import register
from workers.engines.base import parse_engine_args
from workers.engines.launch import device_backend
from workers.engines.openai_server import OpenAIEngine, http_get
from workers.engines.process import proc_table
from workers.errors import EngineError, RunAborted
from workers.gpu.base import GpuDevice
from workers.loadgen import ClientOptions
from workers.model_policy import check_model_policy

KIND = "openai"
PIDS_CACHE_S = 0.5
READY_POLL_S = 0.25
# Answers to the readiness check that end the wait at once.
REFUSALS = {401: "the API key is missing or wrong: see api_key_env",
            403: "the API key is not allowed",
            404: "no such path: see health_path"}


# The openai engine's arguments are the contract's model, which `farmctl validate`
# checks sweeps with (base_url required, no api_key, pids that are numbers).
OpenAIEndpointArgs = OpenAIArgs


def is_loopback(url: str) -> bool:
    """Whether `url`'s host is this machine's loopback (localhost, 127.0.0.0/8, ::1)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ processes


def endpoint_processes(pids: set[int], names: set[str]) -> tuple[set[int], set[int], set[str]]:
    """(every process of the endpoint, the named pids found, the names that matched).

    A process belongs to the endpoint when its pid is in `pids`, its name (comm,
    which the kernel cuts to 15 characters, or argv[0]'s base name) is in
    `names`, or an ancestor of it does.
    """
    table = proc_table(with_exe=True)
    found_pids = pids & table.keys()
    roots = set(found_pids)
    matched: set[str] = set()
    for pid, proc in table.items():
        for name in names:
            if name in (proc.exe, proc.comm) or proc.comm == name[:15]:
                roots.add(pid)
                matched.add(name)
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    members, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in members:
            members.add(pid)
            stack.extend(children.get(pid, ()))
    return members, found_pids, matched


# ------------------------------------------------------------------ engine


@register(KIND, "server")
class OpenAIEndpointEngine(OpenAIEngine):
    """A running OpenAI-compatible endpoint, loaded but never started or stopped."""

    display_name: ClassVar[str] = "openai endpoint"

    def __init__(self, run: RunSpec, gpus: list[GpuDevice], abort: threading.Event):
        super().__init__(run, gpus, abort)
        self.args = parse_engine_args(OpenAIEndpointArgs, run.engine.args, KIND)
        self._declared_pids = self.args.pids()
        self._declared_names = self.args.process_names()
        self._api_key: str | None = None
        self._version: str | None = None
        self._pids: set[int] = set()
        self._pids_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def resident_pids(cls, run: RunSpec) -> set[int]:
        """The endpoint's processes declared by the sweep, found now (with descendants)."""
        args = parse_engine_args(OpenAIEndpointArgs, run.engine.args, KIND)
        return endpoint_processes(args.pids(), args.process_names())[0]

    @property
    def info(self) -> EngineInfo:
        """Kind `openai`, the version the endpoint reports at `GET /version` (if any)."""
        return EngineInfo(kind=KIND, version=self._version, simulated=False)

    @property
    def base_url(self) -> str:
        """The endpoint's root URL (normalised)."""
        return self.args.base_url

    @property
    def served_model(self) -> str:
        """`served_model`, else the model's source."""
        return self.args.served_model or self.run.model.source

    def options(self) -> ClientOptions:
        """Requests carry the API key from the worker's environment, if one is named."""
        return ClientOptions(api_key=self._api_key, continuous_usage=self.args.continuous_usage)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    # --------------------------------------------------------------- lifecycle

    def start(self, deadline_s: float) -> None:
        """Check the endpoint's declaration and wait (at most `ready_timeout_s`) until
        `health_path` answers 200 with the served model in it."""
        device_backend(self.gpus)             # real GPUs or the CPU device, never sim
        check_model_policy(self._tokenizer_run())   # the host's roots, before any file is read
        self._api_key = self._read_api_key()
        self._check_declared()
        self._wait_ready(min(deadline_s, self.args.ready_timeout_s))
        answer = http_get(self.base_url + "/version", headers=self._headers())
        if answer is not None and answer[0] == 200:
            try:
                version = json.loads(answer[1]).get("version")
            except (ValueError, AttributeError):
                version = None
            self._version = str(version)[:100] if version is not None else None
        self.load_workload()

    def _tokenizer_run(self) -> RunSpec:
        """The run as the model policy sees it: the model is the tokenizer the workload
        loads (`tokenizer`, else `source`); the endpoint, not the worker, loads `source`."""
        model = self.run.model
        if not model.tokenizer:
            return self.run
        return self.run.model_copy(update={"model": model.model_copy(
            update={"source": model.tokenizer, "tokenizer": None})})

    def _read_api_key(self) -> str | None:
        """The key from the worker's environment, where the host lets it be sent: the
        sweep chose the server, so a FARM_* credential or any other variable is refused."""
        name = self.args.api_key_env
        if name is None:
            return None
        allowed = load_settings().api_key_env_names
        if name not in allowed:         # FARM_* names are never in it
            raise EngineError(
                f"openai engine: api_key_env {name!r} is not a variable this worker "
                f"({socket.gethostname()}) sends as an API key: it sends only those its host "
                f"lists in FARM_API_KEY_ENVS ({', '.join(sorted(allowed)) or 'none'}), never "
                "a FARM_* one: name a listed variable, or ask the host's admin to list it")
        key = os.environ.get(name)
        if not key:
            raise EngineError(f"openai engine: the environment variable {name!r} "
                              "(api_key_env) is not set on this worker")
        return key

    def _check_declared(self) -> None:
        _, found, matched = endpoint_processes(self._declared_pids, self._declared_names)
        missing = sorted(self._declared_pids - found)
        unmatched = sorted(self._declared_names - matched)
        if missing or unmatched:
            what = [f"endpoint_pids {', '.join(map(str, missing))}"] if missing else []
            what += [f"endpoint_processes {', '.join(unmatched)}"] if unmatched else []
            raise EngineError(f"openai engine: no running process matches {'; '.join(what)}"
                              " (the endpoint's processes must be declared as they are now)")

    def _wait_ready(self, timeout_s: float) -> None:
        url = self.base_url + self.args.health_path
        end = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            answer = http_get(url, headers=self._headers())
            if answer is not None and answer[0] == 200:
                self._check_model_list(answer[1])
                return
            last = f"HTTP {answer[0]}" if answer is not None else "no answer"
            if answer is not None and answer[0] in REFUSALS:
                # A definite answer, not a server still loading: waiting cannot help.
                raise EngineError(f"openai engine: {url} answered {last} "
                                  f"({REFUSALS[answer[0]]})")
            if time.monotonic() >= end:
                raise EngineError(f"openai engine: {url} was not ready within {timeout_s:g} s "
                                  f"(last: {last})")
            if self.abort.wait(READY_POLL_S):
                raise RunAborted("the worker is shutting down while waiting for the endpoint")

    def _check_model_list(self, body: bytes) -> None:
        """An OpenAI model list (`{"data": [{"id": …}]}`) must name the served model."""
        try:
            data = json.loads(body).get("data")
        except (ValueError, AttributeError):
            return
        if not isinstance(data, list):
            return
        ids = [m.get("id") for m in data if isinstance(m, dict)]
        if self.served_model not in ids:
            raise EngineError(f"openai engine: {self.base_url} does not serve "
                              f"{self.served_model!r}; it serves {', '.join(map(str, ids))} "
                              "(set served_model)")

    def pids(self) -> set[int]:
        """The declared endpoint processes and their descendants, looked up at most
        every PIDS_CACHE_S; still allowed after `stop` (the endpoint keeps running)."""
        if not self._declared_pids and not self._declared_names:
            return set()
        now = time.monotonic()
        with self._lock:
            if now - self._pids_at >= PIDS_CACHE_S:
                self._pids = endpoint_processes(self._declared_pids, self._declared_names)[0]
                self._pids_at = now
            return set(self._pids)

    def stop(self) -> None:
        """Nothing to stop: the endpoint is not the farm's."""

    def notes(self) -> list[str]:
        """Where the load went, that the farm did not start it, what was allowed."""
        notes = [f"openai endpoint {self.base_url}, model {self.served_model!r}: not started "
                 "by the farm; its start-up is outside the load window and its model was "
                 "resident during the idle windows"]
        if not is_loopback(self.base_url):
            notes.append("the endpoint is not on this worker's loopback: the energy figures "
                         "are this worker's devices', the endpoint's only if it runs on them")
        if self._declared_pids or self._declared_names:
            declared = []
            if self._declared_pids:
                declared.append(f"endpoint_pids={' '.join(map(str, sorted(self._declared_pids)))}")
            if self._declared_names:
                declared.append(f"endpoint_processes={','.join(sorted(self._declared_names))}")
            notes.append(f"allowed on the run's devices as the endpoint's own: pids "
                         f"{' '.join(map(str, sorted(self.pids()))) or 'none'} "
                         f"({'; '.join(declared)})")
        else:
            notes.append("no endpoint processes declared: any compute process on the run's "
                         "devices counts as a foreign tenant")
        return notes
