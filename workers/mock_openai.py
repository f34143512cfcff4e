"""A fake OpenAI-compatible inference server, shipped with the package.

The load generator's tests and benchmark run against it, and so can anything
else that speaks the OpenAI HTTP API (`vllm bench serve` included): it serves
`/v1/completions` and `/v1/chat/completions` (streaming SSE in the OpenAI chunk
format, with the final `usage` chunk when `stream_options.include_usage` asks
for it, or plain JSON), `/v1/models` and `/health`.

It generates no text: every output token is the word " tok", the prompt's
token count is its number of whitespace-separated words (or the length of a
token-id list), and a request gets exactly `max_tokens` output tokens (as with
`ignore_eos`) unless `eos_after` makes it stop early, never before
`min_tokens`. Knobs (`MockConfig`): time to first token, the gap between
tokens, a seeded failure rate with the kind of failure (an HTTP error status,
a connection dropped mid-stream, or no answer at all), and the model name.
`MockStats` counts requests, what is in flight and its maximum.

HTTP is aiohttp.web's (keep-alive, request bodies up to 64 MiB, chunked
streamed responses). The mock keeps its own cost small: every event of a
stream is built from per-request templates, and with zero delays a whole
streamed response is one body written at once. It binds 127.0.0.1 only.
With `api_key` set, every `/v1` request must carry `Authorization: Bearer
<key>` (401 otherwise); `/health` and `/version` stay open.

In-process (tests), in a background thread:

    with MockOpenAIServer(MockConfig(ttft_s=0.05, itl_s=0.01)) as server:
        ... server.url ... server.stats.max_in_flight

As a process: `python -m workers.mock_openai --port 8000 --ttft-s 0.05 --itl-s 0.01`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aiohttp import web

HOST = "127.0.0.1"
TOKEN_TEXT = " tok"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16   # the OpenAI completions API's default
MAX_BODY_BYTES = 64 * 1024 * 1024
SHUTDOWN_TIMEOUT_S = 1.0              # stop(): what is still streaming is dropped after this
VERSION = "farm-mock"                 # what GET /version reports

FailureKind = Literal["http", "disconnect", "hang"]


@dataclass(frozen=True)
class MockConfig:
    """How the mock behaves. Times in seconds; all zero by default."""

    ttft_s: float = 0.0                 # request received → first token chunk
    itl_s: float = 0.0                  # between token chunks
    model: str = "mock-model"
    # Stop (finish_reason "stop") after this many tokens when the request does not
    # ask for ignore_eos; never before its min_tokens. None: always max_tokens.
    eos_after: int | None = None
    # Chat requests without max_tokens / max_completion_tokens get this many tokens.
    default_max_tokens: int = 16
    # Each request fails with this probability, drawn from random.Random(seed) in
    # arrival order, in the manner `failure` names:
    #   http        answer `error_status` with an OpenAI-style error body
    #   disconnect  stream `disconnect_after_tokens` tokens, then drop the connection
    #   hang        never answer (the client's timeout is what ends it)
    failure_rate: float = 0.0
    failure: FailureKind = "http"
    error_status: int = 500
    disconnect_after_tokens: int = 1
    seed: int = 0
    # Keep every request's JSON body in MockStats.payloads (tests); off for benchmarks.
    record_payloads: bool = False
    # Require "Authorization: Bearer <api_key>" on every /v1 request (401 otherwise).
    api_key: str | None = None


@dataclass
class MockStats:
    """Counters, updated on the server's event loop; read them after the load."""

    requests: int = 0                   # generation requests received
    completed: int = 0                  # answered in full (status 200)
    failed: int = 0                     # answered with an error, dropped or hung on purpose
    in_flight: int = 0
    max_in_flight: int = 0
    output_tokens: int = 0
    connections: int = 0                # TCP connections that sent a request
    statuses: dict[int, int] = field(default_factory=dict)
    payloads: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ HTTP bits


def _error_body(status: int, message: str, kind: str = "BadRequestError") -> bytes:
    # The shape vLLM's server answers errors with.
    return json.dumps({"object": "error", "message": message, "type": kind,
                       "param": None, "code": status}).encode()


def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    return web.Response(status=status, body=_error_body(status, message, kind),
                        content_type="application/json")


_SSE_TYPE = "text/event-stream"
_SSE_HEADERS = {"Cache-Control": "no-cache"}
_SSE_DONE = b"data: [DONE]\n\n"


def _sse(payload: str) -> bytes:
    """One SSE event."""
    return b"data: " + payload.encode() + b"\n\n"


def _words(value: Any) -> int:
    """The mock's tokenizer: one token per whitespace-separated word (or per token id)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_words(v) for v in value)
    if isinstance(value, dict):  # a chat content part {"type": "text", "text": ...}
        return _words(value.get("text", ""))
    return 0


# ------------------------------------------------------------------ generation


@dataclass
class _Generation:
    """One generation request, parsed and planned."""

    chat: bool
    stream: bool
    usage: bool                 # stream_options.include_usage
    continuous_usage: bool      # stream_options.continuous_usage_stats (vLLM)
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    rid: str


def _plan(config: MockConfig, chat: bool, body: dict[str, Any], serial: int) -> _Generation:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        prompt_tokens = sum(_words(m.get("content", "")) for m in messages
                            if isinstance(m, dict))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = config.default_max_tokens if max_tokens is None else max_tokens
    else:
        if "prompt" not in body:
            raise ValueError("`prompt` is required")
        prompt_tokens = _words(body["prompt"])
        max_tokens = body.get("max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS)
    min_tokens = body.get("min_tokens") or 0
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not isinstance(min_tokens, int) or min_tokens > max_tokens:
        raise ValueError(f"min_tokens ({min_tokens!r}) must be <= max_tokens ({max_tokens})")
    output, finish = max_tokens, "length"
    if config.eos_after is not None and not body.get("ignore_eos"):
        stop_at = max(min_tokens, config.eos_after)
        if stop_at < max_tokens:
            output, finish = max(1, stop_at), "stop"
    options = body.get("stream_options") or {}
    return _Generation(
        chat=chat, stream=bool(body.get("stream")), usage=bool(options.get("include_usage")),
        continuous_usage=bool(options.get("continuous_usage_stats")),
        prompt_tokens=prompt_tokens, output_tokens=output, finish_reason=finish,
        rid=f"{'chatcmpl' if chat else 'cmpl'}-mock-{serial}")


class _Chunks:
    """The SSE events of one streamed generation, built from per-request templates."""

    def __init__(self, gen: _Generation, model_json: str, created: int):
        self.gen = gen
        if gen.chat:
            head = (f'{{"id":"{gen.rid}","object":"chat.completion.chunk","created":{created},'
                    f'"model":{model_json},"choices":[{{"index":0,"delta":')
            self._token = head + '{"content":' + json.dumps(TOKEN_TEXT) + '},"logprobs":null,'
            self._role = _sse(head + '{"role":"assistant","content":""},"logprobs":null,'
                              '"finish_reason":null}]}')
        else:
            head = (f'{{"id":"{gen.rid}","object":"text_completion","created":{created},'
                    f'"model":{model_json},"choices":[{{"index":0,')
            self._token = head + '"text":' + json.dumps(TOKEN_TEXT) + ',"logprobs":null,'
            self._role = b""
        self._usage_head = (f'{{"id":"{gen.rid}","object":'
                            f'"{"chat.completion.chunk" if gen.chat else "text_completion"}",'
                            f'"created":{created},"model":{model_json},"choices":[]')
        self._middle = (None if gen.continuous_usage
                        else _sse(self._token + '"finish_reason":null}]}'))

    def _usage(self, completion: int) -> str:
        p = self.gen.prompt_tokens
        return (f'{{"prompt_tokens":{p},"total_tokens":{p + completion},'
                f'"completion_tokens":{completion}}}')

    def token(self, k: int) -> bytes:
        """The k-th token's event (0-based); the chat role event comes with the first."""
        gen = self.gen
        last = k == gen.output_tokens - 1
        if self._middle is not None and not last:
            event = self._middle
        else:
            finish = f'"{gen.finish_reason}"' if last else "null"
            payload = self._token + f'"finish_reason":{finish}}}]'
            if gen.continuous_usage:
                payload += ',"usage":' + self._usage(k + 1)
            event = _sse(payload + "}")
        return self._role + event if k == 0 else event

    def tail(self) -> bytes:
        """The usage event (when asked for) and `data: [DONE]`."""
        usage = (_sse(self._usage_head + ',"usage":' + self._usage(self.gen.output_tokens) + "}")
                 if self.gen.usage else b"")
        return usage + _SSE_DONE

    def whole(self) -> bytes:
        """Every event of the stream, for an answer without delays."""
        n = self.gen.output_tokens
        if self._middle is not None and n > 1:
            body = self._role + self._middle * (n - 1) + self.token(n - 1)
        else:
            body = b"".join(self.token(k) for k in range(n))
        return body + self.tail()


def _completion_json(gen: _Generation, model: str, created: int) -> bytes:
    """A non-streamed answer."""
    text = TOKEN_TEXT * gen.output_tokens
    if gen.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": gen.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None,
                  "finish_reason": gen.finish_reason}
    return json.dumps({
        "id": gen.rid, "object": "chat.completion" if gen.chat else "text_completion",
        "created": created, "model": model, "choices": [choice],
        "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.output_tokens,
                  "total_tokens": gen.prompt_tokens + gen.output_tokens},
    }).encode()


# ------------------------------------------------------------------ handlers


class _Handlers:
    """aiohttp.web request handlers over one server's config and stats."""

    def __init__(self, server: MockOpenAIServer):
        self.server = server
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()    # connections (transports)

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/health", self.health)
        app.router.add_route("*", "/ping", self.health)
        app.router.add_route("GET", "/version", self.version)
        app.router.add_route("*", "/v1/models", self.models)
        app.router.add_route("*", "/v1/completions", self.completions)
        app.router.add_route("*", "/v1/chat/completions", self.chat)
        app.router.add_route("*", "/{path:.*}", self.not_found)

    def _count_connection(self, request: web.Request) -> None:
        transport = request.transport
        if transport is not None and transport not in self._seen:
            self._seen.add(transport)
            self.server.stats.connections += 1

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        key = self.server.config.api_key
        if key is None or request.headers.get("Authorization") == f"Bearer {key}":
            return None
        return _error(401, "missing or wrong API key", "AuthenticationError")

    async def health(self, request: web.Request) -> web.Response:
        self._count_connection(request)
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        self._count_connection(request)
        return web.json_response({"version": VERSION})

    async def models(self, request: web.Request) -> web.Response:
        self._count_connection(request)
        return self._unauthorized(request) or web.Response(
            body=self.server.models_body, content_type="application/json")

    async def not_found(self, request: web.Request) -> web.Response:
        self._count_connection(request)
        return _error(404, f"no route {request.path}", "NotFoundError")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    # -------------------------------------------------------------- generation

    def _failed(self, status: int, message: str, kind: str = "BadRequestError") -> web.Response:
        stats = self.server.stats
        stats.failed += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        return _error(status, message, kind)

    def _finished(self, gen: _Generation) -> None:
        stats = self.server.stats
        stats.completed += 1
        stats.output_tokens += gen.output_tokens
        stats.statuses[200] = stats.statuses.get(200, 0) + 1

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self._count_connection(request)
        if request.method != "POST":
            return _error(405, f"{request.method} not allowed")
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        raw = await request.read()
        server = self.server
        stats, config = server.stats, server.config
        stats.requests += 1
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if config.record_payloads:
                stats.payloads.append(body)
            gen = _plan(config, chat, body, stats.requests)
        except ValueError as exc:   # json.JSONDecodeError is a ValueError
            return self._failed(400, str(exc))
        failing = config.failure_rate > 0 and server.rng.random() < config.failure_rate
        if failing and config.failure == "http":
            return self._failed(config.error_status, "mock failure", "MockError")
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            if not failing and config.ttft_s <= 0 and config.itl_s <= 0:
                response = self._whole(gen)
                self._finished(gen)
                return response
            return await self._timed(request, gen, config, failing)
        finally:
            stats.in_flight -= 1

    def _whole(self, gen: _Generation) -> web.Response:
        """The answer without delays: one body, written at once."""
        created = int(time.time())
        if gen.stream:
            return web.Response(body=_Chunks(gen, self.server.model_json, created).whole(),
                                content_type=_SSE_TYPE, charset="utf-8",
                                headers=_SSE_HEADERS)
        return web.Response(body=_completion_json(gen, self.server.config.model, created),
                            content_type="application/json")

    async def _timed(self, request: web.Request, gen: _Generation, config: MockConfig,
                     failing: bool) -> web.StreamResponse:
        """Answer on a timeline: token k is due at start + ttft + k·itl (no drift)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        stats = self.server.stats
        if failing and config.failure == "hang":
            stats.failed += 1
            await asyncio.Future()      # until the client gives up (the handler is cancelled)
        if not gen.stream:
            await asyncio.sleep(config.ttft_s + config.itl_s * (gen.output_tokens - 1))
            response = self._whole(gen)
            self._finished(gen)
            return response
        chunks = _Chunks(gen, self.server.model_json, int(time.time()))
        response = web.StreamResponse(headers=_SSE_HEADERS)
        response.content_type = _SSE_TYPE
        response.charset = "utf-8"
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = (min(max(0, config.disconnect_after_tokens), gen.output_tokens) if failing
                else gen.output_tokens)
        try:
            for k in range(sent):
                delay = start + config.ttft_s + k * config.itl_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await response.write(chunks.token(k))
            if failing:                     # a connection dropped mid-stream
                stats.failed += 1
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write(chunks.tail())
            await response.write_eof()
        except ConnectionError:
            return response                 # the client went away
        self._finished(gen)
        return response


# ------------------------------------------------------------------ server


class MockOpenAIServer:
    """The mock server, in a background thread (`start`) or on a running loop (`serve`)."""

    def __init__(self, config: MockConfig | None = None, port: int = 0):
        self.config = config or MockConfig()
        self.port = port
        self.stats = MockStats()
        self.rng = random.Random(self.config.seed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._set_model()

    def _set_model(self) -> None:
        self.model_json = json.dumps(self.config.model)
        self.models_body = json.dumps({"object": "list", "data": [
            {"id": self.config.model, "object": "model", "created": 0,
             "owned_by": "farm-mock"}]}).encode()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234 (the API is under /v1)."""
        return f"http://{HOST}:{self.port}"

    def configure(self, **changes: Any) -> None:
        """Change knobs between loads (e.g. configure(failure_rate=1.0)); resets the RNG."""
        self._call(self._configure, changes)

    def _configure(self, changes: dict[str, Any]) -> None:
        self.config = replace(self.config, **changes)
        self.rng = random.Random(self.config.seed)
        self._set_model()

    def _call(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run `fn(arg)` on the server's loop (so it never races a request)."""
        loop = self._loop
        if loop is None or not loop.is_running() or self._thread is None:
            fn(arg)
            return
        done = threading.Event()

        def call() -> None:
            try:
                fn(arg)
            finally:
                done.set()
        loop.call_soon_threadsafe(call)
        done.wait(5.0)

    async def serve(self) -> None:
        """Listen on the running loop until cancelled."""
        await self.listen()
        try:
            await asyncio.Future()
        finally:
            await self.close()

    async def listen(self) -> None:
        """Bind 127.0.0.1:`port` (0: a free one, then `port` says which) and serve."""
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        _Handlers(self).routes(app)
        # Cancel a handler when its client disconnects (a hung request ends there);
        # no access log: it would cost the mock a log line per request.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port, backlog=4096, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def close(self) -> None:
        """Stop listening and drop what is still being answered."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- background thread

    def start(self) -> MockOpenAIServer:
        """Start in a daemon thread with its own event loop; returns once listening."""
        self._thread = threading.Thread(target=self._run_thread, name="mock-openai", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise RuntimeError(f"the mock server did not start: {self._error}") from self._error
        return self

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.listen())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.close())
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def stop(self) -> None:
        """Stop the background thread (connections are dropped)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)
        self._thread = None

    def __enter__(self) -> MockOpenAIServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.mock_openai`: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.mock_openai",
        description="A fake OpenAI-compatible server on 127.0.0.1 (no model, no text).")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--ttft-s", type=float, default=0.0)
    parser.add_argument("--itl-s", type=float, default=0.0)
    parser.add_argument("--model", default=MockConfig.model)
    parser.add_argument("--eos-after", type=int, default=None)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--failure", choices=["http", "disconnect", "hang"], default="http")
    parser.add_argument("--error-status", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key-env", metavar="NAME", default=None,
                        help="require the API key held by this environment variable")
    args = parser.parse_args(argv)
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"the environment variable {args.api_key_env} is not set")
    config = MockConfig(ttft_s=args.ttft_s, itl_s=args.itl_s, model=args.model,
                        eos_after=args.eos_after, failure_rate=args.failure_rate,
                        failure=args.failure, error_status=args.error_status, seed=args.seed,
                        api_key=api_key)
    server = MockOpenAIServer(config, port=args.port)

    async def run() -> None:
        await server.listen()
        print(f"mock_openai listening on {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
