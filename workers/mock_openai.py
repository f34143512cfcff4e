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

It is a plain asyncio protocol speaking HTTP/1.1 (keep-alive, Content-Length
request bodies, chunked responses) so it costs the machine as little as
possible: with zero delays a whole streamed response is one write. It binds
127.0.0.1 only.

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
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

HOST = "127.0.0.1"
TOKEN_TEXT = " tok"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16   # the OpenAI completions API's default
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024

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


@dataclass
class MockStats:
    """Counters, updated on the server's event loop; read them after the load."""

    requests: int = 0                   # generation requests received
    completed: int = 0                  # answered in full (status 200)
    failed: int = 0                     # answered with an error, dropped or hung on purpose
    in_flight: int = 0
    max_in_flight: int = 0
    output_tokens: int = 0
    connections: int = 0                # TCP connections accepted
    statuses: dict[int, int] = field(default_factory=dict)
    payloads: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ HTTP bits

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _response(status: int, body: bytes, content_type: str = "application/json",
              close: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            + ("connection: close\r\n" if close else "") + "\r\n")
    return head.encode("latin-1") + body


def _error_body(status: int, message: str, kind: str = "BadRequestError") -> bytes:
    # The shape vLLM's server answers errors with.
    return json.dumps({"object": "error", "message": message, "type": kind,
                       "param": None, "code": status}).encode()


_SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
             b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
_SSE_DONE = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"   # the last event, then the chunked end


def _sse(payload: str) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + payload.encode() + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(event), event)


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
        """The usage event (when asked for), `data: [DONE]` and the end of the body."""
        usage = (_sse(self._usage_head + ',"usage":' + self._usage(self.gen.output_tokens) + "}")
                 if self.gen.usage else b"")
        return usage + _SSE_DONE

    def whole(self) -> bytes:
        n = self.gen.output_tokens
        if self._middle is not None and n > 1:
            body = self._role + self._middle * (n - 1) + self.token(n - 1)
        else:
            body = b"".join(self.token(k) for k in range(n))
        return _SSE_HEAD + body + self.tail()


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


# ------------------------------------------------------------------ protocol


class _Connection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests one after the other (keep-alive)."""

    def __init__(self, server: MockOpenAIServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False           # a generation is being streamed on this connection
        self.task: asyncio.Task | None = None
        self.counted = False        # this connection's current request is in `in_flight`

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.stats.connections += 1

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.task is not None:
            self.task.cancel()
        self._done()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def _done(self) -> None:
        if self.counted:
            self.counted = False
            self.server.stats.in_flight -= 1

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _next_request(self) -> None:
        """Parse and answer the buffered requests until one needs time (or none is whole)."""
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._fail_connection(413, "request headers too large")
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._fail_connection(400, "malformed request line")
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._fail_connection(411, "chunked request bodies are not supported")
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._fail_connection(400, "bad content-length")
                return
            if length > MAX_BODY_BYTES:
                self._fail_connection(413, "request body too large")
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            close = (headers.get("connection", "").lower() == "close"
                     or version == "HTTP/1.0")
            self._route(method, target.split("?", 1)[0], body, close)

    def _fail_connection(self, status: int, message: str) -> None:
        self._write(_response(status, _error_body(status, message), close=True))
        if self.transport is not None:
            self.transport.close()

    def _send(self, status: int, body: bytes, close: bool,
              content_type: str = "application/json") -> None:
        self._write(_response(status, body, content_type, close))
        if close and self.transport is not None:
            self.transport.close()

    def _route(self, method: str, path: str, body: bytes, close: bool) -> None:
        server = self.server
        if path in ("/health", "/ping"):
            self._send(200, b"", close)
        elif path == "/v1/models":
            self._send(200, server.models_body, close)
        elif path in ("/v1/completions", "/v1/chat/completions"):
            if method != "POST":
                self._send(405, _error_body(405, f"{method} not allowed"), close)
                return
            self._generate(path == "/v1/chat/completions", body, close)
        else:
            self._send(404, _error_body(404, f"no route {path}", "NotFoundError"), close)

    def _generate(self, chat: bool, raw: bytes, close: bool) -> None:
        server = self.server
        stats = server.stats
        config = server.config
        stats.requests += 1
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if config.record_payloads:
                stats.payloads.append(body)
            gen = _plan(config, chat, body, stats.requests)
        except ValueError as exc:   # json.JSONDecodeError is a ValueError
            self._answer_error(400, str(exc), close)
            return
        failing = config.failure_rate > 0 and server.rng.random() < config.failure_rate
        if failing and config.failure == "http":
            self._answer_error(config.error_status, "mock failure", close, "MockError")
            return
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        self.counted = True
        instant = config.ttft_s <= 0 and config.itl_s <= 0
        if not failing and instant:
            self._write(self._whole(gen))
            self._finish(gen, close)
            return
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(
            self._stream(gen, config, failing, close))

    def _whole(self, gen: _Generation) -> bytes:
        created = int(time.time())
        if gen.stream:
            return _Chunks(gen, self.server.model_json, created).whole()
        return _response(200, _completion_json(gen, self.server.config.model, created))

    def _answer_error(self, status: int, message: str, close: bool,
                      kind: str = "BadRequestError") -> None:
        stats = self.server.stats
        stats.failed += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        self._send(status, _error_body(status, message, kind), close)

    def _finish(self, gen: _Generation, close: bool) -> None:
        stats = self.server.stats
        stats.completed += 1
        stats.output_tokens += gen.output_tokens
        stats.statuses[200] = stats.statuses.get(200, 0) + 1
        self._done()
        if close and self.transport is not None:
            self.transport.close()

    async def _stream(self, gen: _Generation, config: MockConfig, failing: bool,
                      close: bool) -> None:
        """Answer on a timeline: token k is due at start + ttft + k·itl (no drift)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        stats = self.server.stats
        try:
            if failing and config.failure == "hang":
                stats.failed += 1
                await asyncio.Future()      # until the client gives up and disconnects
            if not gen.stream:
                await asyncio.sleep(config.ttft_s + config.itl_s * (gen.output_tokens - 1))
                self._write(self._whole(gen))
                self._finish(gen, close)
                return
            chunks = _Chunks(gen, self.server.model_json, int(time.time()))
            self._write(_SSE_HEAD)
            sent = (min(max(0, config.disconnect_after_tokens), gen.output_tokens) if failing
                    else gen.output_tokens)
            for k in range(sent):
                delay = start + config.ttft_s + k * config.itl_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._write(chunks.token(k))
            if failing:                     # a connection dropped mid-stream
                stats.failed += 1
                if self.transport is not None:
                    self.transport.abort()
                return
            self._write(chunks.tail())
            self._finish(gen, close)
        except asyncio.CancelledError:
            pass
        finally:
            self.task = None
            self._done()
            self.busy = False
            if self.buffer and self.transport is not None:
                loop.call_soon(self._next_request)


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
        self._server: asyncio.base_events.Server | None = None
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

    def reset_stats(self) -> None:
        self._call(lambda _: setattr(self, "stats", MockStats()), None)

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
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), HOST, self.port, backlog=4096, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

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
    args = parser.parse_args(argv)
    config = MockConfig(ttft_s=args.ttft_s, itl_s=args.itl_s, model=args.model,
                        eos_after=args.eos_after, failure_rate=args.failure_rate,
                        failure=args.failure, error_status=args.error_status, seed=args.seed)
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
