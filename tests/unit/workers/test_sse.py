"""SSE token counting (workers.sse) on byte streams split at awkward places:
framing, `data:` lines, `[DONE]`, usage chunks, errors, the chat role chunk,
and the fast path agreeing with a full JSON parse."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from workers.sse import SseTokens


def event(obj, compact: bool = True) -> bytes:
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj)
    return b"data: " + text.encode() + b"\n\n"


def completion(text: str = " tok", usage=None, finish=None) -> dict:
    chunk = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
    if usage is not ...:
        chunk["usage"] = usage
    return chunk


def chat(delta: dict, usage=None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
            "usage": usage}


def usage_chunk(prompt: int, completion_tokens: int) -> dict:
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [], "usage": {"prompt_tokens": prompt, "total_tokens":
                                     prompt + completion_tokens,
                                     "completion_tokens": completion_tokens}}


DONE = b"data: [DONE]\n\n"


def feed_all(stream: bytes, cuts: list[int], chat_api: bool = False) -> tuple[SseTokens, list[int]]:
    """Feed `stream` split at `cuts`; (state, tokens per read)."""
    sse = SseTokens(chat_api)
    edges = [0, *sorted(cuts), len(stream)]
    return sse, [sse.feed(stream[a:b]) for a, b in itertools.pairwise(edges)]


def every_split(stream: bytes, chat_api: bool = False):
    """The stream in one read, then split in two at every byte."""
    yield feed_all(stream, [], chat_api)
    for cut in range(1, len(stream)):
        yield feed_all(stream, [cut], chat_api)


def test_completions_stream_counts_each_token_chunk_at_every_split():
    stream = b"".join(event(completion()) for _ in range(3)) + event(usage_chunk(7, 3)) + DONE
    for sse, reads in every_split(stream):
        assert sum(reads) == 3 and sse.counted == 3
        assert sse.done and sse.error is None
        assert (sse.usage_in, sse.usage_out) == (7, 3)


def test_a_token_is_counted_in_the_read_that_completes_its_line():
    one = event(completion())
    _sse, reads = feed_all(one + one, [len(one) - 2, len(one) + 5])
    # the first line ends (its "\n") in the second read, the second in the third
    assert reads == [0, 1, 1]


def test_random_splits_into_many_reads():
    rng = random.Random(0)
    stream = (b"".join(event(completion(f"t{i}")) for i in range(50))
              + event(usage_chunk(3, 50)) + DONE)
    for _ in range(200):
        cuts = rng.sample(range(1, len(stream)), rng.randint(1, 40))
        sse, reads = feed_all(stream, cuts)
        assert sum(reads) == 50 and sse.done and sse.usage_out == 50


def test_crlf_comments_and_other_fields_are_framing_only():
    stream = (b": keep-alive\r\n\r\nevent: message\r\nid: 1\r\n"
              + event(completion()).replace(b"\n", b"\r\n") + b"retry: 10\r\n"
              + b"data: [DONE]\r\n\r\n")
    for sse, reads in every_split(stream):
        assert sum(reads) == 1 and sse.done


def test_no_done_means_not_done_and_a_partial_line_is_not_counted():
    line = event(completion())
    sse, reads = feed_all(line + line[:-3], [])      # the second chunk never ends
    assert reads == [1] and not sse.done


def test_empty_choices_and_usage_carry_no_token():
    stream = event({"choices": [], "usage": None}) + event(usage_chunk(5, 0)) + DONE
    sse, reads = feed_all(stream, [])
    assert reads == [0] and sse.usage_out == 0 and sse.done


def test_empty_text_is_a_token():
    _sse, reads = feed_all(event(completion("")) + DONE, [])
    assert reads == [1]


def test_continuous_usage_counts_bundled_tokens():
    stream = (event(completion(usage={"prompt_tokens": 4, "completion_tokens": 1,
                                      "total_tokens": 5}))
              + event(completion(usage={"prompt_tokens": 4, "completion_tokens": 4,
                                        "total_tokens": 8}))
              + event(usage_chunk(4, 4)) + DONE)
    for sse, reads in every_split(stream):
        assert sum(reads) == 4 and sse.usage_out == 4
    sse, reads = feed_all(stream, [len(event(completion(usage={"prompt_tokens": 4,
                                                               "completion_tokens": 1,
                                                               "total_tokens": 5})))])
    assert reads == [1, 3]


def test_error_event_is_kept_and_counts_nothing():
    stream = event(completion()) + event({"error": {"message": "boom " * 100}}) + DONE
    sse, reads = feed_all(stream, [])
    assert reads == [1]
    assert sse.error is not None and sse.error.startswith("error in stream: boom")
    assert len(sse.error) == len("error in stream: ") + 200
    sse, _ = feed_all(event({"error": "plain text"}), [])
    assert sse.error == "error in stream: plain text"


def test_a_line_that_is_not_json_raises():
    with pytest.raises(ValueError):
        SseTokens(False).feed(b"data: {not json\n\n")


def test_chat_role_chunk_is_no_token_unless_it_has_content():
    stream = (event(chat({"role": "assistant", "content": ""}))
              + event(chat({"content": "hi"})) + event(chat({"content": ""}))
              + event(chat({"content": None})) + event(chat({"tool_calls": [{"id": "x"}]}))
              + event(chat({"reasoning_content": "hm"}))
              + event(chat({"role": "assistant", "content": "hello"})) + DONE)
    for sse, reads in every_split(stream, chat_api=True):
        # content "hi", content "", tool_calls, reasoning, the role chunk with text
        assert sum(reads) == 5 and sse.done


def test_markers_inside_a_token_text_do_not_fool_the_fast_path():
    tricky = ['"usage":{"completion_tokens":9}', '"choices":[{', '"role"',
              '"delta":{"content":"', "data: [DONE]\n", "\\", '\\"']
    stream = b"".join(event(completion(t)) for t in tricky) + DONE
    sse, reads = feed_all(stream, [])
    assert reads == [len(tricky)] and sse.usage_out is None and sse.done
    chat_stream = b"".join(event(chat({"content": t})) for t in tricky) + DONE
    sse, reads = feed_all(chat_stream, [], chat_api=True)
    assert reads == [len(tricky)]


def test_a_read_of_many_chunks_counts_them_all():
    tokens = b"".join(event(completion()) for _ in range(64))
    role = event(chat({"role": "assistant", "content": ""}))
    chat_tokens = b"".join(event(chat({"content": " tok"})) for _ in range(64))
    usage = event(usage_chunk(3, 64))
    for stream, chat_api, expected in ((tokens + usage + DONE, False, 64),
                                       (b"\n" + tokens, False, 64),
                                       (role + chat_tokens + usage + DONE, True, 64),
                                       (chat_tokens + role + chat_tokens, True, 128)):
        _, reads = feed_all(stream, [], chat_api)
        assert reads == [expected]


def reference(stream: bytes, chat_api: bool) -> tuple[int, int | None, int | None, bool]:
    """The rules of docs/loadgen.md with every chunk parsed (the slow path alone)."""
    counted, usage_in, usage_out, done = 0, None, None, False
    for line in stream.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        chunk = json.loads(payload)
        usage, choices = chunk.get("usage"), chunk.get("choices")
        n = 0
        if choices:
            n = 1
            if usage and usage.get("completion_tokens") is not None:
                n = usage["completion_tokens"] - counted
            elif chat_api:
                delta = choices[0].get("delta") or {}
                text, other = delta.get("content"), delta.get("tool_calls")
                if "role" in delta:
                    n = 1 if (text or other) else 0
                elif text is None and not other:
                    n = 0
        counted += max(0, n)
        if usage:
            usage_in = usage.get("prompt_tokens", usage_in)
            usage_out = usage.get("completion_tokens", usage_out)
    return counted, usage_in, usage_out, done


@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_fast_path_agrees_with_a_full_parse(compact):
    rng = random.Random(1)
    for _ in range(400):
        chat_api = rng.random() < 0.5
        parts: list[bytes] = []
        total = 0
        for _ in range(rng.randint(0, 12)):
            pick = rng.random()
            text = rng.choice([" tok", "", '"quoted"', "é", '"usage":{}'])
            if chat_api:
                delta = rng.choice([{"content": text}, {"role": "assistant", "content": ""},
                                    {"content": None}, {"role": "assistant", "content": text}])
                chunk = chat(delta)
            elif pick < 0.2:
                total += rng.randint(1, 3)
                chunk = completion(text, usage={"prompt_tokens": 2, "completion_tokens": total,
                                                "total_tokens": total + 2})
            else:
                chunk = completion(text, usage=rng.choice([None, ...]))
            parts.append(event(chunk, compact))
            if rng.random() < 0.1:       # framing between events
                parts.append(rng.choice([b": ping\n\n", b"event: x\r\n", b"\n"]))
            if rng.random() < 0.05:      # an error event mid-stream counts nothing
                parts.append(event({"error": {"message": "x"}}, compact))
        stream = b"".join(parts) + DONE
        cuts = rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 6)))
        sse, reads = feed_all(stream, cuts, chat_api)
        assert (sum(reads), sse.usage_in, sse.usage_out, sse.done) == reference(stream, chat_api)
