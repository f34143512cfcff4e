"""Async streaming load generator for any OpenAI-compatible server.

One load point = one call of `run_load_point`: requests are sent for
`duration_s`, then the ones in flight are waited for (drained). Two shapes:

- closed loop (`concurrency=N`): N clients, each sending its next request the
  moment its previous one completes, so exactly N are in flight;
- open loop (`rate_rps=R`): arrivals at times drawn from a seeded RNG, gamma
  inter-arrivals of shape `burstiness` and mean 1/R (shape 1 = Poisson, < 1
  burstier, > 1 more regular: the same law as `vllm bench serve`), optionally
  capped at `max_concurrency` in flight: an arrival then waits for a slot, and
  its record keeps both the scheduled and the actual send time.

Prompts are cycled deterministically: request i sends `requests[i % len]`.
Every request streams (`stream: true`, `stream_options.include_usage`) and its
`RequestRecord` holds the send time on the run clock, TTFT (first token
chunk), every inter-token gap, E2E (to the last token chunk, as `vllm bench
serve` measures it), token counts from the server's `usage`, and either ok or
the error text: an HTTP status with the head of its body, a timeout, a dropped
connection. A failed request is data, never an exception; whether a run with
failures is published is the runner's policy.

Times: durations come from `time.perf_counter`; `sent_s`/`scheduled_s` are
offsets on the run clock (`clock`, else `meter.now_s`, else seconds since the
load point started), aligned with perf_counter once at the start (both are
CLOCK_MONOTONIC on Linux), so `workers.metrics.token_times_s` places each token
on the same clock as the energy windows.

The steady-state window (see `_Steady`) is opened and closed on the `meter`
here, because only the load generator knows when the batch is full and when
sending stops. Meter calls run in a helper thread: an NVML counter read costs
3–18 ms per GPU and would otherwise stall every stream at the window's edges.

Cost: one event loop, one aiohttp connection pool sized to the concurrency
(`max_concurrency` in the open loop; unbounded without a cap, so the pool never
hides a queue), request bodies encoded once per prompt, SSE parsed from raw
bytes by `workers.sse` (a token chunk is recognised without parsing its JSON),
one clock read per network read, and per request nothing but a small tuple
until the drain ends; the pydantic records are built afterwards.
docs/loadgen.md has the measured overheads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp

from farm_contract.records import LatencyStats, RequestRecord
from farm_contract.rules import Goodput, Slo, goodput_of  # pure, shared; still importable here
from farm_contract.runspec import ServerLoad
from workers.engines.base import LoadPointOutcome, WindowMeter
from workers.sse import ERROR_HEAD_CHARS, SseTokens

Api = Literal["completions", "chat"]
ENDPOINTS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
USER_AGENT = "farm-loadgen/1"
ABORT_POLL_S = 0.05
DEFAULT_SLO = Slo()


# ------------------------------------------------------------------ inputs


class Prompt(Protocol):
    """What the load generator reads from a request: `workers.workload.PromptRequest`, or any
    object with these attributes (workers.workload's requests have them)."""

    prompt: Any
    messages: Any
    input_tokens: int | None
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int | None
    seed: int | None
    ignore_eos: bool


@dataclass(frozen=True)
class ClientOptions:
    """How requests are sent (rarely changed)."""

    request_timeout_s: float = 600.0     # whole request, send to last byte
    connect_timeout_s: float = 30.0
    api_key: str | None = None           # sent as "Authorization: Bearer …"
    extra_body: Mapping[str, Any] | None = None   # merged into every request body
    # Ask vLLM for usage on every chunk (`continuous_usage_stats`): exact token
    # counts where a server bundles several tokens in one chunk. vLLM only.
    continuous_usage: bool = False
    # Closed loop: requests that must have received their first token (besides
    # all `concurrency` being in flight) before the steady window opens.
    # ML.ENERGY waits for max_num_seqs of them; 1 is the earliest full batch.
    steady_min_started: int = 1
    # A request that repeats an earlier prompt (the point outgrew its prompt list)
    # carries a `cache_salt` of its own (vLLM's field), so the server's prefix cache
    # cannot serve its prefill: it costs what a new prompt would. vLLM only (a strict
    # OpenAI server refuses the field).
    salt_repeats: bool = False


def build_body(req: Prompt, model: str, api: Api,
               options: ClientOptions = ClientOptions()) -> bytes:
    """The JSON body of one streamed request (encoded once per prompt)."""
    body: dict[str, Any] = {"model": model}
    if api == "chat":
        messages = req.messages
        if messages is None:
            if not isinstance(req.prompt, str):
                raise ValueError("the chat API needs `messages` or a text `prompt`")
            messages = [{"role": "user", "content": req.prompt}]
        body["messages"] = [dict(m) for m in messages]
        body["max_completion_tokens"] = req.max_tokens
    else:
        if req.prompt is None:
            raise ValueError("the completions API needs a `prompt`")
        body["prompt"] = req.prompt if isinstance(req.prompt, str) else list(req.prompt)
        body["max_tokens"] = req.max_tokens
    min_tokens = getattr(req, "min_tokens", None)
    if req.ignore_eos:
        body["min_tokens"] = min_tokens or req.max_tokens
        body["ignore_eos"] = True
    elif min_tokens:
        body["min_tokens"] = min_tokens
    body["temperature"] = req.temperature
    body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k
    if req.seed is not None:
        body["seed"] = req.seed
    body["stream"] = True
    body["stream_options"] = ({"include_usage": True, "continuous_usage_stats": True}
                              if options.continuous_usage else {"include_usage": True})
    if options.extra_body:
        body.update(options.extra_body)
    return json.dumps(body, separators=(",", ":")).encode()


def arrival_schedule(rate_rps: float, burstiness: float, duration_s: float,
                     seed: int) -> list[float]:
    """Open-loop send times (s after the start) inside [0, duration_s).

    The first arrival is at 0; gaps are gamma(shape=burstiness, scale=1/(rate·shape)):
    mean 1/rate, coefficient of variation 1/√burstiness (1 = Poisson).
    """
    if rate_rps <= 0 or burstiness <= 0 or duration_s <= 0:
        raise ValueError("rate_rps, burstiness and duration_s must be positive")
    rng = random.Random(seed)
    scale = 1.0 / (rate_rps * burstiness)
    times: list[float] = []
    t = 0.0
    while t < duration_s:
        times.append(t)
        t += rng.gammavariate(burstiness, scale)
    return times


def point_args(scenario: ServerLoad, kind: str, value: float) -> dict[str, Any]:
    """`run_load_point` keyword arguments for one load point of a server scenario."""
    args: dict[str, Any] = {"duration_s": scenario.duration_s, "api": scenario.api}
    if kind == "concurrency":
        args["concurrency"] = int(value)
    elif kind == "request_rate":
        args.update(rate_rps=value, burstiness=scenario.burstiness or 1.0,
                    max_concurrency=scenario.max_concurrency)
    else:
        raise ValueError(f"load point kind {kind!r} is not a server load")
    return args


# ------------------------------------------------------------------ outputs


@dataclass(repr=False)
class LoadgenOutcome(LoadPointOutcome):
    """A `LoadPointOutcome` with what only the load generator knows.

    Times ending in `_s` without "duration" are offsets on the run clock.
    """

    start_s: float = 0.0                    # the load point started (first send)
    sending_s: float = 0.0                  # how long requests were sent (≈ duration_s asked)
    steady_start_s: float | None = None     # steady window, as this side saw its edges
    steady_end_s: float | None = None
    max_in_flight: int = 0                  # as the client counted them
    unsent: int = 0                         # open loop: arrivals left waiting for a slot
    # Open loop: the schedule's arrivals inside the steady window, sent or still waiting
    # for a slot (under max_concurrency, sends follow the server, not the rate offered).
    arrivals_in_steady: int | None = None
    lateness: LatencyStats = field(default_factory=LatencyStats)   # sent − scheduled
    goodput: Goodput | None = None
    aborted: bool = False

    def __repr__(self) -> str:
        # Short on purpose: Python 3.11's asyncio.run formats the main task (and so
        # its result) when it restores the SIGINT handler; a full repr of every
        # record would cost seconds after a big load point.
        ok = sum(r.ok for r in self.requests)
        return (f"LoadgenOutcome({len(self.requests)} requests, {ok} ok, "
                f"duration_s={self.duration_s:.3f}, steady=({self.steady_start_s}, "
                f"{self.steady_end_s}), aborted={self.aborted})")


# ------------------------------------------------------------------ the load point

# What one request leaves behind until the drain ends (a tuple: cheap):
# index, scheduled (perf s or None), sent (perf s), ttft, e2e, itl, input, output,
# chunk-counted output, error (None = ok)
_Raw = tuple


class _Steady:
    """Opens and closes the steady-state window.

    Energy per token is taken while the batch is full, as the ML.ENERGY
    benchmark does: the ramp (clients connecting, prompts prefilled, the
    batch filling) and the drain (the batch emptying as the last requests
    finish) run the GPU at a lower and changing power and throughput, and
    including them would make the figure depend on the load point's length.
    So the window opens once the batch is full and closes the moment the load
    generator stops sending, before it waits for the requests in flight:

    - closed loop: all `concurrency` requests are in flight and the first of
      them (`steady_min_started` of them) has produced its first token, i.e.
      its prefill is done and decoding runs at full batch;
    - open loop: the first request has completed. By Little's law the number
      in flight grows with the arrivals until the first request leaves, then
      stays near rate × E2E: the arrival process is in steady state.

    Either way not before `warmup_s` after the start. A window that would open
    after sending stopped never opens (and the outcome says so).
    """

    def __init__(self, meter: WindowMeter | None, index: int):
        self.meter = meter
        self.index = index
        self.full = asyncio.Event()
        self.start: float | None = None     # perf_counter seconds
        self.end: float | None = None
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="loadgen-meter")
                      if meter is not None else None)
        self._begun: asyncio.Future | None = None

    async def open_when_full(self, not_before: float) -> None:
        await self.full.wait()
        delay = not_before - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        self.start = time.perf_counter()
        if self.meter is not None:
            self._begun = asyncio.get_running_loop().run_in_executor(
                self._pool, self.meter.begin, "steady", self.index)

    async def close(self) -> None:
        """Sending stopped: close the window if it opened."""
        if self.start is None:
            return
        self.end = time.perf_counter()
        if self._begun is not None:
            await self._begun
            await asyncio.get_running_loop().run_in_executor(
                self._pool, self.meter.end, "steady", self.index)  # type: ignore[union-attr]

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class _LoadPoint:
    """The state of one load point while it runs (one event loop, no locks)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 bodies: list[bytes], api: Api, steady: _Steady,
                 options: ClientOptions, concurrency: int | None):
        self.session = session
        self.url = url
        self.headers = headers
        self.bodies = bodies
        self.chat = api == "chat"
        self.steady = steady
        self.options = options
        self.concurrency = concurrency
        self.timeout_s = options.request_timeout_s
        self.raw: list[_Raw] = []
        self.stopping = False
        self.next_index = 0
        self.sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0            # requests with a first token
        self.repeats = 0            # requests that repeated an earlier prompt
        self.need_started = min(max(1, options.steady_min_started), concurrency or 1)
        self.bugs: list[BaseException] = []

    def track(self, task: asyncio.Task, tasks: set[asyncio.Task]) -> None:
        """Keep `task` in `tasks` while it runs. Requests never raise (failures are
        records): an exception here is a bug in this module, raised at the end."""
        tasks.add(task)

        def done(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.bugs.append(task.exception())  # type: ignore[arg-type]
        task.add_done_callback(done)

    # -- one request

    def _first_token(self) -> None:
        self.started += 1
        if (self.concurrency is not None and not self.steady.full.is_set()
                and self.started >= self.need_started and self.sent >= self.concurrency):
            self.steady.full.set()

    async def request(self, index: int, scheduled: float | None) -> None:
        """Send request `index`, stream the answer, leave a raw record. Never raises
        (but lets cancellation through, after recording it)."""
        body = self.bodies[index % len(self.bodies)]
        if index >= len(self.bodies):
            self.repeats += 1
            if self.options.salt_repeats:
                body = b'{"cache_salt":"farm-repeat-%d",' % index + body[1:]
        pc = time.perf_counter
        self.sent += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        if (self.concurrency is not None and self.sent == self.concurrency
                and self.started >= self.need_started):
            self.steady.full.set()
        itl: list[float] = []
        ttft = None
        sse = SseTokens(self.chat)
        error: str | None = None
        st = pc()
        last = st
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as resp:
                if resp.status != 200:
                    head = await resp.content.read(4 * ERROR_HEAD_CHARS)
                    text = head.decode("utf-8", "replace").strip()[:ERROR_HEAD_CHARS]
                    error = f"HTTP {resp.status}: {text}" if text else f"HTTP {resp.status}"
                else:
                    feed = sse.feed
                    async for received in resp.content.iter_any():
                        # One clock read per read: every token in it arrived together.
                        now = pc()
                        n = feed(received)
                        if n:
                            if ttft is None:
                                ttft = now - st
                                self._first_token()
                            else:
                                itl.append(now - last)
                            if n > 1:   # several tokens in one read: zero gaps
                                itl.extend([0.0] * (n - 1))
                            last = now
                    error = sse.error
                    if error is None and not sse.done:
                        error = "stream ended without `data: [DONE]`"
                    elif error is None and ttft is None:
                        error = "no token in the response"
        except asyncio.CancelledError:
            error = "cancelled: the load point was aborted"
            self._keep(index, scheduled, st, ttft, pc() - st, itl, sse, error)
            raise
        except TimeoutError:
            error = (f"timeout: no complete answer within {self.timeout_s:g} s "
                     f"({pc() - st:.1f} s)")
        except aiohttp.ClientPayloadError as exc:
            error = f"disconnected mid-stream: {exc}"
        except aiohttp.ServerDisconnectedError as exc:
            error = f"server disconnected: {exc}"
        except aiohttp.ClientError as exc:
            error = f"connection error: {type(exc).__name__}: {exc}"
        except Exception as exc:    # a malformed chunk etc.: the request's failure, not ours
            error = f"{type(exc).__name__}: {exc}"
        e2e = (last - st) if error is None else (pc() - st)
        self._keep(index, scheduled, st, ttft, e2e, itl, sse, error)

    def _keep(self, index, scheduled, st, ttft, e2e, itl, sse: SseTokens, error) -> None:
        self.in_flight -= 1
        self.raw.append((index, scheduled, st, ttft, e2e, itl, sse.usage_in, sse.usage_out,
                         sse.counted, error))
        if (error is None and self.concurrency is None and not self.steady.full.is_set()):
            self.steady.full.set()      # open loop: the first completion ends the ramp

    # -- the two loops

    async def client(self) -> None:
        """Closed loop: one of `concurrency` clients."""
        while not self.stopping:
            index = self.next_index
            self.next_index += 1
            await self.request(index, None)

    async def dispatch(self, schedule: list[float], t0: float,
                       slots: asyncio.Semaphore | None, tasks: set[asyncio.Task]) -> None:
        """Open loop: send each arrival at its time (after a free slot, with a cap)."""
        loop = asyncio.get_running_loop()
        for index, at in enumerate(schedule):
            due = t0 + at
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots is not None:
                await slots.acquire()
            if self.stopping:
                if slots is not None:
                    slots.release()
                return
            self.next_index = index + 1
            self.track(loop.create_task(self._slot(index, due, slots)), tasks)

    async def _slot(self, index: int, due: float, slots: asyncio.Semaphore | None) -> None:
        try:
            await self.request(index, due)
        finally:
            if slots is not None:
                slots.release()


async def _wait_abort(abort: threading.Event) -> None:
    while not abort.is_set():
        await asyncio.sleep(ABORT_POLL_S)


async def _until_steady(steady: _Steady, min_steady_s: float, cap: float,
                        abort: threading.Event | None) -> bool:
    """Self-sizing: keep sending until the steady window has lasted `min_steady_s`
    (it may not be open yet), never past `cap` (perf_counter). True if aborted."""
    while steady.start is None and time.perf_counter() < cap:
        if abort is not None and abort.is_set():
            return True
        await asyncio.sleep(min(ABORT_POLL_S, max(0.0, cap - time.perf_counter())))
    if steady.start is None:
        return False
    return await _until(min(cap, steady.start + min_steady_s), abort)


async def _until(deadline: float, abort: threading.Event | None) -> bool:
    """Sleep until perf_counter() ≥ deadline; True if `abort` was set first."""
    delay = deadline - time.perf_counter()
    if abort is None:
        if delay > 0:
            await asyncio.sleep(delay)
        return False
    watcher = asyncio.ensure_future(_wait_abort(abort))
    try:
        done, _ = await asyncio.wait({watcher}, timeout=max(0.0, delay))
        return watcher in done
    finally:
        watcher.cancel()


async def _drain(tasks: set[asyncio.Task], abort: threading.Event | None) -> bool:
    """Wait for the requests in flight; True if `abort` was set before they finished."""
    drain = asyncio.ensure_future(asyncio.wait(set(tasks)))
    if abort is None:
        await drain
        return False
    watcher = asyncio.ensure_future(_wait_abort(abort))
    try:
        await asyncio.wait({drain, watcher}, return_when=asyncio.FIRST_COMPLETED)
        return not drain.done()
    finally:
        watcher.cancel()


async def _cancelled(task: asyncio.Future | None) -> None:
    """Cancel `task` (if not done) and wait until it is."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_load_point(
    base_url: str,
    model: str,
    requests: Sequence[Prompt],
    *,
    concurrency: int | None = None,
    rate_rps: float | None = None,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    duration_s: float,
    warmup_s: float = 0.0,
    min_steady_s: float = 0.0,
    max_duration_s: float | None = None,
    api: Api = "completions",
    seed: int = 0,
    clock: Callable[[], float] | None = None,
    meter: WindowMeter | None = None,
    load_point_index: int = 0,
    slo: Slo = DEFAULT_SLO,
    options: ClientOptions = ClientOptions(),
    abort: threading.Event | None = None,
) -> LoadgenOutcome:
    """Run one load point against `base_url` (e.g. "http://127.0.0.1:8000").

    Give exactly one of `concurrency` (closed loop) or `rate_rps` (open loop,
    with `burstiness` and an optional `max_concurrency`). Requests are sent
    for `duration_s`, then drained. `clock` is the run clock for `sent_s` /
    `scheduled_s` (it must tick in real seconds; only its origin matters),
    by default `meter.now_s`, else seconds since this call. With a `meter`,
    the steady-state window ("steady", load_point_index) is opened and closed
    on it. `abort` (set from another thread) stops sending and cancels what is
    in flight; the outcome then says `aborted`. Self-sizing: with
    `min_steady_s`, sending goes on past `duration_s` until the steady window
    has lasted that long, up to `max_duration_s` of sending in all (default
    duration_s); the outcome's `extended_s` says by how much.
    """
    if (concurrency is None) == (rate_rps is None):
        raise ValueError("give exactly one of concurrency (closed loop) or rate_rps (open loop)")
    if concurrency is not None and (concurrency < 1 or max_concurrency is not None):
        raise ValueError("concurrency must be ≥ 1; max_concurrency applies to rate_rps only")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError("max_concurrency must be ≥ 1")
    if duration_s <= 0 or not requests:
        raise ValueError("duration_s must be positive and requests non-empty")
    if api not in ENDPOINTS:
        raise ValueError(f"api must be one of {', '.join(ENDPOINTS)}, got {api!r}")

    bodies = [build_body(r, model, api, options) for r in requests]
    # The longest sending may last: the schedule is drawn for it, and its first
    # arrivals are those of duration_s alone (one seeded stream).
    cap_s = max(duration_s, max_duration_s or duration_s) if min_steady_s > 0 else duration_s
    schedule = (arrival_schedule(rate_rps, burstiness, cap_s, seed)
                if rate_rps is not None else [])
    pool_size = concurrency or max_concurrency or 0      # 0: aiohttp's "no limit"
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if options.api_key:
        headers["Authorization"] = f"Bearer {options.api_key}"

    run_clock = clock or (meter.now_s if meter is not None else None)
    steady = _Steady(meter, load_point_index)
    connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=options.request_timeout_s,
                                    sock_connect=options.connect_timeout_s)
    aborted = False
    notes: list[str] = []
    try:
        async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False,
                skip_auto_headers=("Accept-Encoding",), trust_env=False) as session:
            lp = _LoadPoint(session, base_url.rstrip("/") + ENDPOINTS[api], headers, bodies,
                            api, steady, options, concurrency)
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            # run clock = perf_counter + offset
            offset = (run_clock() - t0) if run_clock is not None else -t0
            tasks: set[asyncio.Task] = set()
            dispatcher = opener = None
            try:
                if concurrency is not None:
                    for _ in range(concurrency):
                        lp.track(loop.create_task(lp.client()), tasks)
                else:
                    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
                    dispatcher = loop.create_task(lp.dispatch(schedule, t0, slots, tasks))
                opener = loop.create_task(steady.open_when_full(t0 + warmup_s))

                aborted = await _until(t0 + duration_s, abort)
                if not aborted and min_steady_s > 0:
                    aborted = await _until_steady(steady, min_steady_s, t0 + cap_s, abort)
                # Sending stops here: the batch starts to drain, so the steady window ends.
                lp.stopping = True
                stop = time.perf_counter()
                await _cancelled(dispatcher)
                if steady.start is None:
                    await _cancelled(opener)
                    notes.append("the steady window never opened: the batch was not full "
                                 f"before sending stopped ({stop - t0:g} s)")
                await steady.close()

                if not aborted and tasks:
                    aborted = await _drain(tasks, abort)
                if aborted:
                    notes.append("aborted: sending stopped and the requests in flight were "
                                 "cancelled")
            finally:
                # normally nothing is left; after an abort or an error, cancel what is
                for task in (dispatcher, opener, *tasks):
                    await _cancelled(task)
            if lp.bugs:
                raise lp.bugs[0]
            end = time.perf_counter()
    finally:
        steady.shutdown()

    sending_s = stop - t0
    unsent = (sum(1 for at in schedule if at < sending_s) - lp.next_index
              if rate_rps is not None else 0)
    arrivals_in_steady = None
    if rate_rps is not None and steady.start is not None and steady.end is not None:
        arrivals_in_steady = sum(1 for at in schedule if steady.start <= t0 + at <= steady.end)
    extended_s = max(0.0, sending_s - duration_s) if min_steady_s > 0 else None
    if extended_s:
        notes.append(f"sending extended by {extended_s:.2f} s for a steady window of "
                     f"{min_steady_s:g} s")
    if lp.repeats:
        notes.append(
            f"{lp.repeats} request(s) repeated one of the point's {len(bodies)} prompts"
            + ("; each carried a cache_salt of its own, so the server's prefix cache could "
               "not serve its prefill" if options.salt_repeats else
               ": a server's prefix cache may have served their prefill, so their TTFT and "
               "energy read low"))
    records = _records(lp.raw, load_point_index, offset, requests, notes)
    outcome = LoadgenOutcome(
        requests=records, duration_s=end - t0, notes=notes, extended_s=extended_s,
        start_s=t0 + offset, sending_s=sending_s,
        steady_start_s=steady.start + offset if steady.start is not None else None,
        steady_end_s=steady.end + offset if steady.end is not None else None,
        max_in_flight=lp.max_in_flight, unsent=unsent, arrivals_in_steady=arrivals_in_steady,
        lateness=LatencyStats.of_seconds([r.sent_s - r.scheduled_s for r in records
                                          if r.scheduled_s is not None]),
        goodput=goodput_of(records, end - t0, slo), aborted=aborted)
    _describe(outcome, max_concurrency)
    return outcome


def _records(raw: list[_Raw], load_point: int, offset: float,
             requests: Sequence[Prompt], notes: list[str]) -> list[RequestRecord]:
    """Raw tuples → RequestRecords, in send order (built after the drain)."""
    records: list[RequestRecord] = []
    no_usage = bundled = 0
    for (index, scheduled, st, ttft, e2e, itl, usage_in, usage_out, counted,
         error) in sorted(raw, key=lambda r: r[0]):
        ok = error is None
        output = usage_out
        if ok and usage_out is None:
            no_usage += 1
            output = counted
        elif ok and usage_out != counted:
            bundled += 1
        records.append(RequestRecord(
            load_point=load_point, index=index,
            scheduled_s=None if scheduled is None else round(scheduled + offset, 6),
            sent_s=round(st + offset, 6),
            ttft_s=None if ttft is None else round(ttft, 6),
            e2e_s=None if e2e is None else round(e2e, 6),
            itl_s=[round(g, 6) if g else g for g in itl],   # bundled tokens: zeros as they are
            input_tokens=(usage_in if usage_in is not None
                          else requests[index % len(requests)].input_tokens),
            output_tokens=output, ok=ok, error=error))
    if no_usage:
        notes.append(f"{no_usage} request(s) came without `usage`: their output tokens are "
                     "the token chunks counted")
    if bundled:
        notes.append(f"{bundled} request(s) streamed a different number of token chunks than "
                     "`usage` reports (several tokens per chunk?): tokens inside the steady "
                     "window are placed by chunk; ClientOptions(continuous_usage=True) fixes "
                     "that on vLLM")
    return records


def _describe(outcome: LoadgenOutcome, max_concurrency: int | None) -> None:
    failed = [r for r in outcome.requests if not r.ok]
    if failed:
        notes = outcome.notes
        kinds: dict[str, int] = {}
        for r in failed:
            key = (r.error or "?").split(":", 1)[0]
            kinds[key] = kinds.get(key, 0) + 1
        summary = ", ".join(f"{k} ×{n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
        notes.append(f"{len(failed)} of {len(outcome.requests)} request(s) failed ({summary}); "
                     f"first: {failed[0].error}")
    if outcome.unsent:
        outcome.notes.append(
            f"{outcome.unsent} scheduled arrival(s) were still waiting for one of the "
            f"{max_concurrency} slots when sending stopped: the server kept up with less "
            "than the asked rate")
    p99 = outcome.lateness.p99_ms
    if p99 is not None and p99 > 10.0 and max_concurrency is None:
        outcome.notes.append(f"arrivals were sent up to {p99:.1f} ms late (p99): the load "
                             "generator or its machine is busy")
