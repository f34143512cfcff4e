"""An external meter read over HTTP: a PDU outlet, a Redfish chassis, any JSON endpoint.

The endpoint answers a GET with JSON; `field` is the dotted path of the number
to read (`outlets.3.energy_wh`, `PowerControl.0.PowerConsumedWatts`; a numeric
part indexes a list), and `quantity` says what that number is:

- a cumulative energy counter (`energy_j`, `energy_wh`, `energy_kwh`): read at
  each window edge, the window's energy is the difference (a counter that went
  backwards is a reset: None with the reason);
- a power (`power_w`, `power_kw`): polled every `update_s` in a background
  thread and integrated (trapezoids) into a cumulative energy, and polled once
  more at each edge so the integral reaches the edge. A failed poll breaks the
  integral: a window spanning it is None ("readings were interrupted").

Spec: `http:url=URL;field=PATH[;quantity=energy_wh][;update_s=1][;timeout_s=1]
[;scope=outlet][;name=NAME][;token_env=VAR | user_env=VAR;password_env=VAR]`.
Credentials come from the environment variables the spec names (a bearer token,
or HTTP basic user and password), never from the spec or the URL; the stored
description has the URL and field only. Every read has a timeout; a failing
read is a null figure with the reason, never a failed run.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from workers.energy import EnergySource, SourceReading, SourceSpecError, register_source_kind

# What the field holds → (energy or power, factor to J or W).
QUANTITIES: dict[str, tuple[str, float]] = {
    "energy_j": ("energy", 1.0),
    "energy_wh": ("energy", 3600.0),
    "energy_kwh": ("energy", 3.6e6),
    "power_w": ("power", 1.0),
    "power_kw": ("power", 1000.0),
}
OPTIONS = frozenset({"url", "field", "quantity", "update_s", "timeout_s", "scope",
                     "token_env", "user_env", "password_env"})


class MeterReadError(Exception):
    """One read of the meter failed; its message is the window's null reason."""


def field_value(document: Any, path: str) -> float:
    """The number at a dotted `path` of a JSON document ("a.0.b"); MeterReadError if none."""
    value = document
    for part in path.split("."):
        if isinstance(value, list) and part.lstrip("-").isdigit():
            try:
                value = value[int(part)]
                continue
            except IndexError:
                raise MeterReadError(f"field {path!r}: index {part} out of range") from None
        if not isinstance(value, dict) or part not in value:
            raise MeterReadError(f"field {path!r} not in the meter's answer (at {part!r})")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MeterReadError(f"field {path!r} is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise MeterReadError(f"field {path!r} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise MeterReadError(f"field {path!r} is not finite: {value!r}")
    return number


def _positive(options: Mapping[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SourceSpecError(f"energy source http: {key}={raw!r} is not a number") from None
    if not value > 0:
        raise SourceSpecError(f"energy source http: {key} must be > 0, got {raw}")
    return value


def _auth_header(options: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    """The Authorization header from the environment variables the spec names."""
    def variable(key: str) -> str:
        name = options[key]
        value = environ.get(name)
        if not value:
            raise SourceSpecError(f"energy source http: {key}={name} but ${name} is not set")
        return value

    if "token_env" in options:
        if "user_env" in options or "password_env" in options:
            raise SourceSpecError("energy source http: token_env or user_env/password_env, "
                                  "not both")
        return f"Bearer {variable('token_env')}"
    if ("user_env" in options) != ("password_env" in options):
        raise SourceSpecError("energy source http: user_env and password_env go together")
    if "user_env" in options:
        pair = f"{variable('user_env')}:{variable('password_env')}".encode()
        return "Basic " + base64.b64encode(pair).decode()
    return None


@register_source_kind
class HttpMeter(EnergySource):
    """A JSON endpoint with a cumulative energy counter or a power reading."""

    kind = "http"

    def __init__(self, name: str, url: str, field: str, quantity: str = "energy_wh",
                 update_s: float = 1.0, timeout_s: float = 1.0, scope: str = "outlet",
                 authorization: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SourceSpecError(f"energy source {name}: {url!r} is not an http(s) URL")
        if parsed.username or parsed.password:
            raise SourceSpecError(f"energy source {name}: credentials in the URL; name "
                                  "environment variables with user_env/password_env instead")
        if quantity not in QUANTITIES:
            raise SourceSpecError(f"energy source {name}: quantity {quantity!r}; known: "
                                  f"{', '.join(QUANTITIES)}")
        self.name = name
        self.url = url
        self.field = field
        self.quantity = quantity
        self.update_s = update_s
        self.timeout_s = timeout_s
        self.scope = scope
        self._measure, self._factor = QUANTITIES[quantity]
        self.sensor = f"http.{'energy_counter' if self._measure == 'energy' else 'power_integral'}"
        self._authorization = authorization
        self._clock = clock
        # Power mode: the integral, the last poll and how many times it broke.
        self._lock = threading.Lock()
        self._energy_j = 0.0
        self._last: tuple[float, float] | None = None      # (time s, power W)
        self._epoch = 0
        self._error: str | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, str],
                     environ: Mapping[str, str] | None = None) -> HttpMeter:
        """`http:url=…;field=…[;quantity=…;update_s=…;timeout_s=…;scope=…;…_env=VAR]`."""
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise SourceSpecError(f"energy source http: unknown option(s) {', '.join(unknown)}")
        for key in ("url", "field"):
            if not options.get(key):
                raise SourceSpecError(f"energy source http: {key}= is required")
        return cls(name, options["url"], options["field"],
                   quantity=options.get("quantity", "energy_wh"),
                   update_s=_positive(options, "update_s", 1.0),
                   timeout_s=_positive(options, "timeout_s", 1.0),
                   scope=options.get("scope", "outlet"),
                   authorization=_auth_header(options, os.environ if environ is None
                                              else environ))

    def detail(self) -> str:
        """URL, field and what the field holds (credentials are never part of it)."""
        return f"GET {self.url} → {self.field} ({self.quantity})"

    def fetch(self) -> float:
        """One GET of the field, in J (a counter) or W (a power); MeterReadError on failure."""
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self._authorization:
            request.add_header("Authorization", self._authorization)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                body = answer.read()
        except urllib.error.HTTPError as exc:
            raise MeterReadError(f"meter {self.name}: HTTP {exc.code} from {self.url}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            why = getattr(exc, "reason", exc)
            raise MeterReadError(f"meter {self.name}: cannot read {self.url}: {why}") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise MeterReadError(f"meter {self.name}: the answer is not JSON") from None
        return field_value(document, self.field) * self._factor

    def read(self) -> SourceReading:
        """The counter now (energy mode) or the power integral up to now (power mode)."""
        if self._measure == "energy":
            try:
                return SourceReading(self.fetch())
            except MeterReadError as exc:
                return SourceReading(None, str(exc))
        self._start_poller()
        return self.poll()

    def poll(self) -> SourceReading:
        """Power mode: read the power now and extend the integral; a failure breaks it."""
        with self._lock:          # polls in time order, one at a time
            try:
                power_w = self.fetch()
            except MeterReadError as exc:
                if self._last is not None:
                    self._epoch += 1
                self._last, self._error = None, str(exc)
                return SourceReading(None, str(exc), self._epoch)
            now_s = self._clock()
            if self._last is not None:
                then_s, then_w = self._last
                self._energy_j += (now_s - then_s) * (then_w + power_w) / 2.0
            self._last, self._error = (now_s, power_w), None
            return SourceReading(self._energy_j, None, self._epoch)

    def _start_poller(self) -> None:
        with self._lock:
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll_loop, daemon=True,
                                                name=f"meter-{self.name}")
                self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.update_s):
            self.poll()

    def close(self) -> None:
        """Stop the background poller (power mode)."""
        self._stop.set()
        if self._poller is not None and self._poller.is_alive():
            self._poller.join(timeout=self.timeout_s + 1.0)
