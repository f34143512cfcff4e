"""Token counting over an OpenAI-compatible server's streamed answer (SSE).

`SseTokens` takes the raw bytes of one response as they arrive, in reads split
wherever the network split them, and says how many tokens each read carried;
the load generator (`workers.loadgen`) times the read (one clock read per
read, not per chunk) and turns the count into a TTFT or inter-token gaps.

Framing (the subset of Server-Sent Events these servers use): events are
lines; only `data:` lines matter (comments, `event:`, `id:` and blank lines
are skipped); a line may end in CRLF; a read may end inside a line, which is
kept until its end arrives. `data: [DONE]` ends the stream.

What counts as a token chunk (docs/loadgen.md):

- completions: any chunk with a non-empty `choices` (its text may be empty:
  a special token, a partial UTF-8 byte);
- chat: a delta with `content` (even empty), `reasoning_content`/`reasoning`
  or `tool_calls`, except a chunk that only announces the role;
- a chunk with per-chunk `usage` (vLLM's `continuous_usage_stats`) carries
  `completion_tokens` − the tokens counted so far (a server may bundle
  several tokens in one chunk).

A chunk with no choices may carry `usage` (kept: the request's token counts)
or an `error` (kept: the request fails with it).

Cost: a token chunk in the shape every server we drive sends (vLLM, SGLang,
the mock: compact JSON, `"usage":null` or none) is recognised by substring
tests on its bytes, without parsing the JSON; anything else — the role chunk,
usage, errors, other spacing — is parsed in full. Both give the same count:
inside a JSON string a quote is escaped, so a marker such as `"choices":[{`
cannot occur in a token's text. `tests/unit/workers/test_sse.py` checks the two
paths agree.
"""

from __future__ import annotations

import json
from typing import Any

ERROR_HEAD_CHARS = 200          # of an error event's message, kept in the record
# What benchmarks print as the client's parser.
PARSER = "workers.sse (token chunks by substring, the rest by json)"

# Markers of a one-token chunk that needs no parsing (compact JSON, as servers send).
_CHOICE = b'"choices":[{'
_CHAT_CONTENT = b'"delta":{"content":"'
_USAGE = b'"usage"'
_NO_USAGE = b'"usage":null'
_ROLE = b'"role"'


class SseTokens:
    """The parse state of one streamed response.

    After the stream: `done` (saw `data: [DONE]`), `counted` (tokens seen),
    `usage_in`/`usage_out` (the server's prompt/completion tokens, None when it
    sent no usage), `error` (an error event's text, else None).
    """

    __slots__ = ("_buf", "chat", "counted", "done", "error", "usage_in", "usage_out")

    def __init__(self, chat: bool):
        self.chat = chat
        self.counted = 0
        self.done = False
        self.error: str | None = None
        self.usage_in: int | None = None
        self.usage_out: int | None = None
        self._buf = b""

    def feed(self, data: bytes) -> int:
        """Take one read of the body; return the tokens its complete lines carried.

        Raises ValueError (json's) for a `data:` line that is not JSON: the
        request's failure, which the caller records.
        """
        if self._buf:
            data = self._buf + data
        end = data.rfind(b"\n")
        if end < 0:                 # no complete line yet
            self._buf = data
            return 0
        self._buf = data[end + 1:]
        # The run of token chunks in the middle of the read is counted at once
        # (`_run`); the lines before it (a chat role chunk) and after it (usage,
        # [DONE]) one by one, in stream order: per-chunk usage counts depend on
        # the tokens counted before.
        first, stop = self._run(data, end)
        if first >= stop:
            return self._lines(data[:end])
        n = data.count(_CHAT_CONTENT if self.chat else _CHOICE, first, stop)
        tokens = self._lines(data[:first]) if first else 0
        self.counted += n
        return tokens + n + self._lines(data[stop:end])

    def _run(self, data: bytes, end: int) -> tuple[int, int]:
        """[first, stop) of data[:end]: whole lines that are all one-token chunks
        of the fast path's shape (first ≥ stop when there is no such run)."""
        marker = _CHAT_CONTENT if self.chat else _CHOICE
        last = data.rfind(marker, 0, end)
        if last < 0:
            return 0, 0
        stop = data.find(b"\n", last, end)
        stop = end if stop < 0 else stop
        first = 0
        if self.chat:       # start after the last line announcing the role
            role = data.rfind(_ROLE, 0, stop)
            if role >= 0:
                first = data.find(b"\n", role, stop) + 1
                if first <= 0:
                    return 0, 0
        # every `data:` line of the run holds the marker, and no usage object
        lines = data.count(b"\ndata:", first, stop) + data.startswith(b"data:", first)
        if (lines != data.count(marker, first, stop)
                or data.count(_USAGE, first, stop) != data.count(_NO_USAGE, first, stop)):
            return 0, 0
        return first, stop

    def _lines(self, block: bytes) -> int:
        """The tokens of `block`'s lines, one line at a time."""
        tokens = 0
        chat = self.chat
        for line in block.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            # The fast path: one token, nothing else to learn from the chunk.
            if (((_CHAT_CONTENT in line and _ROLE not in line) if chat else _CHOICE in line)
                    and (_USAGE not in line or _NO_USAGE in line)):
                tokens += 1
                self.counted += 1
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            n = self._chunk(json.loads(payload))
            if n > 0:
                tokens += n
                self.counted += n
        return tokens

    def _chunk(self, chunk: Any) -> int:
        """Tokens in one parsed chunk; notes its usage and error."""
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        n = 0
        if choices:
            n = 1
            if usage and usage.get("completion_tokens") is not None:
                n = usage["completion_tokens"] - self.counted
            elif self.chat:
                delta = choices[0].get("delta") or {}
                text = delta.get("content")
                other = (delta.get("reasoning_content") or delta.get("reasoning")
                         or delta.get("tool_calls"))
                # The first chunk only announces the role; a chunk with empty
                # content is a token without text (vLLM streams one per token).
                if "role" in delta:
                    n = 1 if (text or other) else 0
                elif text is None and not other:
                    n = 0
        elif chunk.get("error") is not None:
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else err
            self.error = f"error in stream: {str(message)[:ERROR_HEAD_CHARS]}"
        if usage:
            self.usage_in = usage.get("prompt_tokens", self.usage_in)
            self.usage_out = usage.get("completion_tokens", self.usage_out)
        return n
