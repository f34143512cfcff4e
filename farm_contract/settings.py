"""Every FARM_* setting, read from the environment in one place (pydantic-settings).

Credentials (broker password, database password, Flower auth) come from the
environment only, never from sweep files or the command line history. An
empty variable means its default. A value farm cannot use raises
`SettingsError`, whose message names the variable and shows a good value.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from farm_contract.exitcodes import ExitCode

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DB_URL = "sqlite:///farm.db"

# URL schemes farm can open: the store's SQLAlchemy dialects (farm/store/db.py and
# counts.py: SQLite, PostgreSQL through psycopg) and kombu's Redis transports (a
# unix socket is redis+socket:///path/redis.sock; redis-py's unix:// is no kombu
# transport, so Celery could not connect with it).
DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
BROKER_SCHEMES = ("redis", "rediss", "redis+socket")


class SettingsError(ValueError):
    """A FARM_* variable with a value farm cannot use."""

    # The contract's root cannot be farm.errors.FarmError: farm/cli.py maps the class.
    exit_code = ExitCode.INVALID_INPUT


# Each field's variable and an example of a good value, for the messages.
EXAMPLES = {
    "FARM_BROKER_URL": f"{DEFAULT_BROKER_URL} or redis+socket:///run/redis/redis.sock",
    "FARM_DB_URL": f"{DEFAULT_DB_URL} or postgresql+psycopg://farm:PASSWORD@db-host/farm",
    "FARM_VISIBILITY_TIMEOUT_S": "21600",
    "FARM_RUN_TIMEOUT_S": "14400",
    "FARM_HEARTBEAT_S": "5",
    "FARM_REAPER_GRACE_S": "60",
    "FARM_SPOOL_DIR": "/var/lib/farm/spool",
    "FARM_FLOWER_USER": "admin",
    "FARM_FLOWER_PASSWORD": "a-long-random-secret",
    "FARM_OWNER": "alice or ml-team@lab",
    "FARM_DISPATCH_DEPTH": "8",
    "FARM_FAIR_SHARE_WINDOW_S": "86400",
    "FARM_GPU_SETTLE_S": "30",
    "FARM_BROKER_TLS_CA_FILE": "/etc/farm/tls/ca.crt",
    "FARM_BROKER_TLS_CERT_FILE": "/etc/farm/tls/client.crt",
    "FARM_BROKER_TLS_KEY_FILE": "/etc/farm/tls/client.key",
    "FARM_SIGNING_KEY": "the output of `openssl rand -hex 32`",
    "FARM_SIGNING_KEYS": "/etc/farm/signing-keys",
    "FARM_ADMINS": "alice,bob",
    "FARM_HOME": "/var/lib/farm/local",
    "FARM_METRICS_PORT": "9461 (a worker) or 9460 (the recorder)",
    "FARM_METRICS_ADDRESS": "0.0.0.0 or 127.0.0.1",
    "FARM_ENERGY_SOURCES": "rapl:name=host_rapl",
    "FARM_GPU_TUNE_HELPER": "sudo -n /usr/local/sbin/farm-gpu-tune",
    "FARM_MODEL_ROOTS": "/models:/srv/checkpoints",
    "FARM_MODELS_DIR": "/models",
    "FARM_ALLOW_HUB": "1",
    "FARM_ALLOW_REMOTE_CODE": "1",
    "FARM_ALLOW_COMMANDS": "1",
    "FARM_API_KEY_ENVS": "ENDPOINT_API_KEY,OPENAI_API_KEY",
    "FARM_DATASET_ROOTS": "/datasets:/srv/prompts",
}

# A worker's result signing key (tasks/signing.py): short keys can be guessed.
MIN_SIGNING_KEY_CHARS = 32
MAX_SECONDS = 1e8          # a duration setting's bound: about 3 years

# A sweep owner's name: short, and safe in tables, logs and Redis keys.
OWNER_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"


class Settings(BaseSettings):
    """The farm's settings. `load_settings()` reads them from FARM_* variables;
    `Settings(field=value, …)` gives some explicitly (the rest from the
    environment, else defaults). Immutable."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True,
                                      populate_by_name=True, extra="ignore",
                                      allow_inf_nan=False)

    broker_url: str = Field(DEFAULT_BROKER_URL, validation_alias="FARM_BROKER_URL")
    db_url: str = Field(DEFAULT_DB_URL, validation_alias="FARM_DB_URL")
    # Redis hands an unacked run to another worker after this long (FIELD_NOTES):
    # it must exceed the longest run plus retry delays.
    visibility_timeout_s: float = Field(6 * 3600.0, gt=0,
                                        validation_alias="FARM_VISIBILITY_TIMEOUT_S")
    # A run taking longer than this is stopped and failed.
    run_timeout_s: float = Field(4 * 3600.0, gt=0, validation_alias="FARM_RUN_TIMEOUT_S")
    # How often a busy worker refreshes the heartbeat of the run it holds, and how
    # long after a missed heartbeat the reaper hands the run back to the queue.
    heartbeat_s: float = Field(5.0, gt=0, validation_alias="FARM_HEARTBEAT_S")
    reaper_grace_s: float = Field(60.0, ge=0, validation_alias="FARM_REAPER_GRACE_S")
    # Where a worker keeps results it could not send before stopping (sent at restart).
    spool_dir: str = Field(default_factory=lambda: str(Path.home() / ".farm" / "spool"),
                           validation_alias="FARM_SPOOL_DIR")
    flower_user: str | None = Field(None, validation_alias="FARM_FLOWER_USER")
    flower_password: str | None = Field(None, repr=False,
                                        validation_alias="FARM_FLOWER_PASSWORD")
    # Who `farmctl enqueue` records as a sweep's owner (else --owner, else the login name).
    owner: str | None = Field(None, pattern=OWNER_PATTERN, validation_alias="FARM_OWNER")
    # Messages the dispatcher keeps waiting on each GPU queue (farm/dispatch.py);
    # unset: max(4, 2 x the runs the queue's live workers can hold at once).
    dispatch_depth: int | None = Field(None, ge=1, validation_alias="FARM_DISPATCH_DEPTH")
    # Seconds of work each GPU queue keeps waiting beyond what its live workers hold
    # (farm/reserve.py): the dispatcher needs the store, so this is how long GPUs stay
    # busy through a store outage (a PostgreSQL restart or failover: seconds to a
    # couple of minutes). The price: a higher priority run waits up to this long more.
    queue_reserve_s: float = Field(180.0, ge=0, validation_alias="FARM_QUEUE_RESERVE_S")
    # Only this sweep's runs are dispatched (`farmctl run` sets it for its recorder).
    dispatch_sweep: str | None = Field(None, validation_alias="FARM_DISPATCH_SWEEP")
    # Fair share counts each owner's GPU time over this window.
    fair_share_window_s: float = Field(24 * 3600.0, gt=0,
                                       validation_alias="FARM_FAIR_SHARE_WINDOW_S")
    # A GPU another tenant has left is used again once it has been free this long
    # (workers/tenants.py): a job that restarts between epochs is not measured beside.
    gpu_settle_s: float = Field(30.0, ge=0, validation_alias="FARM_GPU_SETTLE_S")
    # Where a worker measures each run (workers/runproc.py): "process", a process of
    # the run's own (its sampler and load generator off the worker's interpreter
    # lock, where the other GPU sets' runs are); "thread", the task's own thread. A
    # run whose plug-ins were registered at run time (not shipped in the packages)
    # is measured in the thread either way, and its result says so.
    run_isolation: Literal["process", "thread"] = Field(
        "process", validation_alias="FARM_RUN_ISOLATION")
    # TLS to Redis (a rediss:// broker URL): the CA that signed the server's certificate
    # (unset: the system's CAs), and this client's certificate and key where the
    # server asks for one (redis-server --tls-auth-clients).
    broker_tls_ca_file: str | None = Field(None, validation_alias="FARM_BROKER_TLS_CA_FILE")
    broker_tls_cert_file: str | None = Field(None, validation_alias="FARM_BROKER_TLS_CERT_FILE")
    broker_tls_key_file: str | None = Field(None, validation_alias="FARM_BROKER_TLS_KEY_FILE")
    # A GPU worker signs what it sends with this key (HMAC, tasks/signing.py) ...
    signing_key: str | None = Field(None, repr=False, min_length=MIN_SIGNING_KEY_CHARS,
                                    validation_alias="FARM_SIGNING_KEY")
    # ... and a recorder given this file of `host key` lines stores only what the
    # named host's key signed.
    signing_keys: str | None = Field(None, validation_alias="FARM_SIGNING_KEYS")

    # -- who may change a sweep, and where `farmctl run` keeps its files (issue 22) --
    # Users who may cancel, retry, amend and re-prioritise any sweep, and enqueue
    # for another owner: comma-separated names (farm/ownership.py).
    admins: str | None = Field(None, validation_alias="FARM_ADMINS",
                               description="users who may change any sweep, e.g. alice,bob")
    # `farmctl run`'s logs and spool (relative to the directory it runs in).
    home: str = Field(".farm", validation_alias="FARM_HOME",
                      description="where `farmctl run` keeps its logs and spool")

    @field_validator("db_url")
    @classmethod
    def _shared_database(cls, url: str) -> str:
        # Every farm process opens the store on its own: an in-memory one would be
        # a different, empty store in each of them.
        rest = url.split("://", 1)[1] if "://" in url else url
        if url.lower().startswith("sqlite") and rest.split("?")[0] in ("", "/", "/:memory:"):
            raise ValueError("is an in-memory SQLite store: the farm's processes (recorder, "
                             "workers, each command) could not share it, so it is not "
                             "supported; name a file")
        return url

    @field_validator("admins")
    @classmethod
    def _admin_names(cls, names: str | None) -> str | None:
        for name in (names or "").split(","):
            if name.strip() and not re.match(OWNER_PATTERN, name.strip()):
                raise ValueError(f"has {name.strip()!r}, not a short name (at most 64 "
                                 "letters, digits or . _ - @)")
        return names

    @property
    def admin_names(self) -> frozenset[str]:
        """FARM_ADMINS as a set of user names."""
        return frozenset(n.strip() for n in (self.admins or "").split(",") if n.strip())

    # -- Prometheus metrics (workers/exporter.py, farm/exporter.py, tasks/metrics_http.py) --
    # Off unless a port is given: `farmctl run` starts several workers on one host,
    # and a second bind of one port must not be the default. `farmctl worker` and
    # `farmctl recorder` serve /metrics on it; the deployment files use 9461 and 9460.
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="FARM_METRICS_PORT")
    # All interfaces: the Prometheus server scrapes from another host. The page holds
    # no secret (owners, run ids, GPU readings); bind 127.0.0.1 behind a proxy if needed.
    metrics_address: str = Field("0.0.0.0", validation_alias="FARM_METRICS_ADDRESS")

    # -- read alone, with `setting()` (issue 21: every FARM_* variable declared here) --
    debug: str | None = Field(None, validation_alias="FARM_DEBUG",
                              description="any value: farmctl shows the traceback of an "
                                          "unexpected error")
    # A GPU worker's extra energy sources (workers/energy), unless --energy-source.
    energy_sources: str | None = Field(None, validation_alias="FARM_ENERGY_SOURCES",
                                       description="a worker's extra energy sources, "
                                                   "KIND:key=value;… specs")
    # Tests and demos: a file of simulated foreign processes (workers/gpu/sim.py).
    sim_tenants: str | None = Field(None, validation_alias="FARM_SIM_TENANTS",
                                    description="file of simulated tenants on simulated GPUs")
    # A worker that is not root sets power limits and clocks through this command.
    gpu_tune_helper: str | None = Field(None, validation_alias="FARM_GPU_TUNE_HELPER",
                                        description="the privileged GPU tuning helper's "
                                                    "command line")
    gpu_tune_journal_dir: str = Field(
        default_factory=lambda: str(Path.home() / ".farm" / "gpu-tuning"),
        validation_alias="FARM_GPU_TUNE_JOURNAL_DIR",
        description="which GPUs a run changed, until restored")
    # -- which models a GPU host loads, and whether it runs their code (issue 22) --
    # A host's policy, never a sweep's (workers/model_policy.py): a model is loaded
    # only from a folder under one of these roots (colon-separated; relative ones
    # under the worker's working directory) ...
    model_roots: str | None = Field(
        None, validation_alias="FARM_MODEL_ROOTS",
        description="folders (colon-separated) a worker loads models from; default "
                    "./.farm/models, FARM_MODELS_DIR and /models")
    # ... the deployment files' model folder (mounted at /models in the containers).
    models_dir: str | None = Field(None, validation_alias="FARM_MODELS_DIR",
                                   description="the host's model folder, one of the roots")
    # Hub ids ("org/name") only where allowed: GPU hosts often have no network, and a
    # hub download is code and weights nobody on the host chose.
    allow_hub: bool = Field(False, validation_alias="FARM_ALLOW_HUB",
                            description="whether a worker loads hub ids (org/name)")
    # trust_remote_code runs Python that came with a model: the host decides.
    allow_remote_code: bool = Field(False, validation_alias="FARM_ALLOW_REMOTE_CODE",
                                    description="whether a worker runs a model's own code "
                                                "(trust_remote_code)")
    # A `measure` run executes its command on the worker: only a worker told so runs
    # one (`farmctl measure` tells its own private worker; a shared farm's never is).
    allow_commands: bool = Field(False, validation_alias="FARM_ALLOW_COMMANDS",
                                 description="whether a worker runs the command of a "
                                             "`measure` run (farmctl measure)")
    # An `openai` run sends the variable its api_key_env names to a server the sweep
    # chose: only the variables listed here (comma-separated), never a FARM_* one
    # (workers/engines/openai_endpoint.py). None by default.
    api_key_envs: str | None = Field(None, validation_alias="FARM_API_KEY_ENVS",
                                     description="variables (comma-separated) an openai "
                                                 "run may send as its API key")
    # A workload's prompt file is read only from under these roots (colon-separated;
    # relative ones under the worker's working directory), or the shipped datasets
    # (workers/workload.py): a sweep names the file, and an openai run sends it away.
    dataset_roots: str | None = Field(
        None, validation_alias="FARM_DATASET_ROOTS",
        description="folders (colon-separated) a worker reads prompt datasets from, "
                    "besides the shipped ones; default ./.farm/datasets")

    def model_root_paths(self, cwd: str | None = None) -> list[str]:
        """The model roots as absolute paths, symlinks resolved (FARM_MODEL_ROOTS, else
        <cwd>/.farm/models, FARM_MODELS_DIR if set, and /models)."""
        cwd = cwd or os.getcwd()
        if self.model_roots:
            given = [p for p in self.model_roots.split(":") if p.strip()]
        else:
            given = [os.path.join(".farm", "models"), *([self.models_dir] if self.models_dir
                                                        else []), "/models"]
        return _resolved_roots(given, cwd)

    @field_validator("api_key_envs")
    @classmethod
    def _api_key_names(cls, names: str | None) -> str | None:
        for name in (n.strip() for n in (names or "").split(",")):
            if name and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"has {name!r}, not an environment variable name")
            if name.upper().startswith("FARM_"):
                raise ValueError(f"has {name}, one of the farm's own settings: those hold "
                                 "its credentials and are never sent as an API key")
        return names

    @property
    def api_key_env_names(self) -> frozenset[str]:
        """FARM_API_KEY_ENVS as a set of names (FARM_* ones never in it)."""
        names = (n.strip() for n in (self.api_key_envs or "").split(","))
        return frozenset(n for n in names if n and not n.upper().startswith("FARM_"))

    def dataset_root_paths(self, cwd: str | None = None) -> list[str]:
        """The dataset roots as absolute paths, symlinks resolved (FARM_DATASET_ROOTS,
        else <cwd>/.farm/datasets); the worker adds its shipped datasets."""
        cwd = cwd or os.getcwd()
        given = [p for p in (self.dataset_roots or "").split(":") if p.strip()] \
            or [os.path.join(".farm", "datasets")]
        return _resolved_roots(given, cwd)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_message(exc)) from None

    @field_validator("db_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        _check_scheme(url, DB_SCHEMES, "a database URL")
        return url

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, url: str) -> str:
        _check_scheme(url, BROKER_SCHEMES, "a Redis URL")
        return url

    @field_validator("broker_tls_ca_file", "broker_tls_cert_file", "broker_tls_key_file",
                     "signing_keys")
    @classmethod
    def _readable_file(cls, path: str | None) -> str | None:
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError("is not a file farm can read" if os.path.exists(path)
                             else "names no file")
        if path is not None and not os.path.isfile(path):
            raise ValueError("is not a file")
        return path

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> Settings:
        given = [name for name, value in (
            ("FARM_BROKER_TLS_CA_FILE", self.broker_tls_ca_file),
            ("FARM_BROKER_TLS_CERT_FILE", self.broker_tls_cert_file),
            ("FARM_BROKER_TLS_KEY_FILE", self.broker_tls_key_file)) if value]
        if given and not self.broker_tls:
            raise ValueError(
                f"{', '.join(given)} set, but FARM_BROKER_URL={redact(self.broker_url)!r} is "
                "not a TLS URL: use rediss:// (e.g. FARM_BROKER_URL=rediss://farm-worker:"
                "PASSWORD@coordinator:6379/0), or unset the TLS files")
        if bool(self.broker_tls_cert_file) != bool(self.broker_tls_key_file):
            raise ValueError(
                "FARM_BROKER_TLS_CERT_FILE and FARM_BROKER_TLS_KEY_FILE go together: set both "
                "(the client certificate and its private key) or neither")
        return self

    @model_validator(mode="after")
    def _durations_a_clock_holds(self) -> Settings:
        # A timedelta or a Redis expiry overflows on 1e300 s: the reaper died on it,
        # pass after pass, with a traceback in the log.
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name.endswith("_s") and isinstance(value, float) and value > MAX_SECONDS:
                raise ValueError(f"{field.validation_alias}={value:g} s is more than "
                                 f"{MAX_SECONDS:g} s (about 3 years): not a duration the "
                                 "farm can wait")
        return self

    @model_validator(mode="after")
    def _run_ends_before_redeliver(self) -> Settings:
        if self.run_timeout_s >= self.visibility_timeout_s:
            raise ValueError(
                f"FARM_RUN_TIMEOUT_S ({self.run_timeout_s:g}) must be below "
                f"FARM_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s:g}): otherwise "
                "Redis hands a run still in progress to a second worker (e.g. "
                "FARM_RUN_TIMEOUT_S=14400 with FARM_VISIBILITY_TIMEOUT_S=21600, the defaults)")
        return self


    @property
    def broker_tls(self) -> bool:
        """Whether the broker is reached over TLS (a rediss:// URL)."""
        return self.broker_url.lower().startswith("rediss://")

    def broker_ssl_options(self) -> dict[str, Any]:
        """TLS options for a rediss:// broker, in the keys both Celery's
        `broker_use_ssl` and redis-py's `Redis(...)` take. The server's certificate
        is always verified (against the system's CAs without a CA file)."""
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": self.broker_tls_ca_file,
                "ssl_certfile": self.broker_tls_cert_file,
                "ssl_keyfile": self.broker_tls_key_file}


def _resolved_roots(given: list[str], cwd: str) -> list[str]:
    """Root folders as absolute paths (relative ones under `cwd`), symlinks resolved,
    each once."""
    return list(dict.fromkeys(os.path.realpath(os.path.join(cwd, os.path.expanduser(p.strip())))
                              for p in given))


def _check_scheme(url: str, schemes: tuple[str, ...], what: str) -> None:
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme.lower() not in schemes:
        found = f"scheme {scheme}://" if scheme else "no scheme"
        accepted = ", ".join(f"{s}://" for s in schemes)
        raise ValueError(f"is not {what} farm can open ({found}; accepted: {accepted})")
    # Read here, or the driver raises them later, unnamed ("unexpected ValueError").
    try:
        _ = urlsplit(url).port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if "\x00" in unquote(url):
        raise ValueError("holds a NUL character")


def _message(exc: ValidationError, model: type[BaseSettings] | None = None) -> str:
    """The problems of a ValidationError, one line each, in the variables' words."""
    model = model or Settings
    lines = []
    for error in exc.errors():
        if not error["loc"]:           # the cross-check: its message names both variables
            lines.append(str(error["ctx"]["error"]) if "ctx" in error else error["msg"])
            continue
        where = str(error["loc"][0])            # the variable, or the field given by name
        field = model.model_fields.get(where)
        if field is None:       # read from the environment: loc is the variable
            field = next((f for f in model.model_fields.values()
                          if f.validation_alias == where), None)
        name = field.validation_alias if field is not None else where
        raw = error.get("input")
        shown = redact(raw) if isinstance(raw, str) else raw
        if field is not None and not field.repr:    # a secret: never echoed
            shown = "***"
        if error["type"] in ("float_parsing", "float_type"):
            problem = "is not a number"
        elif error["type"] in ("int_parsing", "int_type", "int_from_float"):
            problem = "is not a whole number"
        elif error["type"] == "value_error":
            problem = str(error["ctx"]["error"])
        elif error["type"] == "string_too_short":
            problem = f"is too short (at least {error['ctx']['min_length']} characters)"
        elif error["type"] == "string_pattern_mismatch":
            problem = "is not a short name (at most 64 letters, digits or . _ - @)"
        else:
            problem = error["msg"].replace("Input should be", "must be")
        lines.append(f"{name}={shown!r} {problem} (e.g. {name}={EXAMPLES.get(name, '…')})")
    return "; ".join(lines)


def environment_help(model: type[BaseSettings]) -> list[tuple[str, str]]:
    """(variable, what it takes) for each field of `model`, for `farmctl --help`:
    read from the fields, so a new setting is listed without anyone adding it."""
    rows = []
    for field in model.model_fields.values():
        name = field.validation_alias
        if not isinstance(name, str):
            continue
        default = field.get_default(call_default_factory=True)
        shown = ("unset" if default is None
                 else f"{default:g}" if isinstance(default, float) else str(default))
        example = EXAMPLES.get(name)
        text = field.description or (f"e.g. {example}" if example and example != shown
                                     else "")
        rows.append((name, f"{text}{'; ' if text else ''}default {shown}"))
    return rows


def variable(name: str) -> str:
    """The FARM_* variable of the setting `name` ("gpu_settle_s" → "FARM_GPU_SETTLE_S"),
    for messages that tell a person what to set."""
    return str(Settings.model_fields[name].validation_alias)


@functools.cache
def _adapter(name: str) -> TypeAdapter:
    """The check of one field alone: its type with its bounds (built once: a poll reads
    FARM_SIM_TENANTS every second)."""
    field = Settings.model_fields[name]
    kind = Annotated[(field.annotation, *field.metadata)] if field.metadata \
        else field.annotation
    return TypeAdapter(kind)


def setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The setting `name` read alone from `environ` (default: this process's), checked
    against its field's type and bounds; the field's default when unset or empty.

    For a variable read where the others need not be valid or are read often: the
    CLI's error handler (FARM_DEBUG), a poll (FARM_SIM_TENANTS), a worker part a
    test hands its own environment. The model's cross-checks do not run here.
    """
    raw = (os.environ if environ is None else environ).get(variable(name), "")
    if not raw:
        return Settings.model_fields[name].get_default(call_default_factory=True)
    try:
        return _adapter(name).validate_python(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].replace("Input should be", "must be")
        raise SettingsError(f"{variable(name)}={raw!r} {problem}") from None


def load_settings() -> Settings:
    """The settings from the FARM_* environment variables (defaults for unset or empty)."""
    return Settings()


def redact(url: str) -> str:
    """A URL fit for logs: the password replaced by ***."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


# ---------------------------------------------------------------- Slurm (farm/slurm)
# `farmctl slurm` submits worker jobs for GPU queues with waiting runs. Its own
# block: read only by that command, so a bad value here stops nothing else.

EXAMPLES.update({
    "FARM_SLURM_GRES_MAP": "h100-80gb=h100,a100-40gb=a100,l4= (empty: --gres=gpu:N)",
    "FARM_SLURM_CONSTRAINTS": "a100-40gb=a100_40g,h100-80gb=sxm",
    "FARM_SLURM_MAX_GPUS_PER_MODEL": "8 or 8,h100-80gb=4",
    "FARM_SLURM_MAX_GPUS_PER_OWNER": "8",
    "FARM_SLURM_SBATCH_ARGS": "--partition=gpu --account=lab --time=04:00:00",
    "FARM_SLURM_WORKER_COMMAND": "/opt/farm/.venv/bin/farmctl worker",
    "FARM_SLURM_IDLE_EXIT_S": "300",
    "FARM_SLURM_BACKENDS": "gpu",
    "FARM_SLURM_PERIOD_S": "2",
    "FARM_SLURM_JOB_PREFIX": "farm-worker-",
})
SLURM_BACKENDS = ("gpu", "sim")     # sim: simulated runs on fake GRES GPUs (tests, demos)
SLURM_KEY_PATTERN = r"^[A-Za-z0-9._-]+$"   # a GPU slug, gres type, feature or cap key


def parse_pairs(text: str | None, value_pattern: str = SLURM_KEY_PATTERN,
                empty_ok: bool = False) -> dict[str, str]:
    """`key=value,key=value` (spaces allowed around items) → dict; ValueError naming the item."""
    import re

    pairs: dict[str, str] = {}
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not re.match(SLURM_KEY_PATTERN, key) or not (
                (empty_ok and value == "") or re.match(value_pattern, value)):
            raise ValueError(f"has an item {item!r} that is not KEY=VALUE (letters, digits, "
                             ". _ -)")
        pairs[key] = value
    return pairs


class SlurmSettings(BaseSettings):
    """`farmctl slurm`'s settings (FARM_SLURM_*); `load_slurm_settings()` reads them."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True,
                                      populate_by_name=True, extra="ignore",
                                      allow_inf_nan=False)

    # GPU model slug → Slurm gres type: --gres=gpu:<type>:<n>; an empty type asks for
    # --gres=gpu:<n>. Unlisted slugs: the slug without its memory suffix (h100-80gb → h100).
    gres_map: str | None = Field(None, validation_alias="FARM_SLURM_GRES_MAP")
    # GPU model slug → node feature: --constraint=<feature> (none for unlisted slugs).
    constraints: str | None = Field(None, validation_alias="FARM_SLURM_CONSTRAINTS")
    # At most this many GPUs in farm's jobs (pending + running) per GPU model:
    # `N` for every model, `N,slug=M,…` with exceptions.
    max_gpus_per_model: str = Field("8", validation_alias="FARM_SLURM_MAX_GPUS_PER_MODEL")
    # At most this many GPUs in jobs submitted for one sweep owner's waiting runs.
    max_gpus_per_owner: int = Field(8, ge=0, validation_alias="FARM_SLURM_MAX_GPUS_PER_OWNER")
    # Further sbatch options, split like a command line (partition, account, time, qos).
    sbatch_args: str = Field("", validation_alias="FARM_SLURM_SBATCH_ARGS")
    # The job's worker command, split like a command line; farm adds --name, --idle-exit-s.
    worker_command: str = Field("farmctl worker", validation_alias="FARM_SLURM_WORKER_COMMAND")
    # A job's worker stops after this long without a run, giving its GPUs back.
    idle_exit_s: float = Field(300.0, gt=0, validation_alias="FARM_SLURM_IDLE_EXIT_S")
    # Queues of these backends get jobs: `gpu`; `sim` too for simulated demos and tests.
    backends: str = Field("gpu", validation_alias="FARM_SLURM_BACKENDS")
    # Seconds between two passes of the loop.
    period_s: float = Field(2.0, gt=0, validation_alias="FARM_SLURM_PERIOD_S")
    # Job names are <prefix><queue>: how farm finds its jobs in squeue.
    job_prefix: str = Field("farm-worker-", pattern=r"^[A-Za-z0-9._-]{1,40}$",
                            validation_alias="FARM_SLURM_JOB_PREFIX")

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_message(exc, SlurmSettings)) from None

    @field_validator("gres_map")
    @classmethod
    def _gres_pairs(cls, text: str | None) -> str | None:
        parse_pairs(text, empty_ok=True)
        return text

    @field_validator("constraints")
    @classmethod
    def _feature_pairs(cls, text: str | None) -> str | None:
        # A constraint may combine features: a100&nvlink, a100|h100.
        parse_pairs(text, value_pattern=r"^[A-Za-z0-9._&|\[\]*:-]+$")
        return text

    @field_validator("max_gpus_per_model")
    @classmethod
    def _caps(cls, text: str) -> str:
        cls._parse_caps(text)
        return text

    @field_validator("sbatch_args", "worker_command")
    @classmethod
    def _splits(cls, text: str) -> str:
        import shlex

        shlex.split(text)       # unbalanced quotes: ValueError
        return text

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, text: str) -> str:
        names = [b.strip() for b in text.split(",") if b.strip()]
        unknown = [b for b in names if b not in SLURM_BACKENDS]
        if not names or unknown:
            raise ValueError(f"names {unknown or 'no backend'}; known: "
                             f"{', '.join(SLURM_BACKENDS)}")
        return text

    @staticmethod
    def _parse_caps(text: str) -> tuple[int, dict[str, int]]:
        default, overrides = None, {}
        for item in (i.strip() for i in text.split(",")):
            if item.isdigit():
                default = int(item)
            elif item:
                for key, value in parse_pairs(item, value_pattern=r"^\d+$").items():
                    overrides[key] = int(value)
        if default is None:
            raise ValueError("needs a number for every model, e.g. 8 or 8,h100-80gb=4")
        return default, overrides

    @property
    def gres_types(self) -> dict[str, str]:
        """FARM_SLURM_GRES_MAP as {slug: gres type}."""
        return parse_pairs(self.gres_map, empty_ok=True)

    @property
    def constraint_map(self) -> dict[str, str]:
        """FARM_SLURM_CONSTRAINTS as {slug: constraint}."""
        return parse_pairs(self.constraints, value_pattern=r"^[A-Za-z0-9._&|\[\]*:-]+$")

    @property
    def model_caps(self) -> tuple[int, dict[str, int]]:
        """(GPUs for every model, {slug: GPUs} exceptions)."""
        return self._parse_caps(self.max_gpus_per_model)

    @property
    def backend_list(self) -> tuple[str, ...]:
        """FARM_SLURM_BACKENDS as a tuple."""
        return tuple(b.strip() for b in self.backends.split(",") if b.strip())


def load_slurm_settings() -> SlurmSettings:
    """`farmctl slurm`'s settings from the FARM_SLURM_* variables."""
    return SlurmSettings()


# Variables only the coordinator may hold (the store's URL and password, Flower's
# login, the signing keyring): a worker job's environment is stripped of them
# (farm/slurm), since a GPU worker needs the broker alone.
COORDINATOR_ONLY_VARIABLES = frozenset({
    "FARM_DB_URL", "FARM_DB_PASSWORD", "FARM_FLOWER_USER", "FARM_FLOWER_PASSWORD",
    "FARM_SIGNING_KEYS", "FARM_SIGNING_KEYS_FILE", "FARM_REDIS_PASSWORD",
    "FARM_REDIS_COORDINATOR_PASSWORD", "PGPASSWORD"})
