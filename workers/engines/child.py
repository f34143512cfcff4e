"""The engine host: an offline engine (vLLM or transformers) in its own process.

Started by `workers.engines.offline.OfflineEngine` as

    python -m workers.engines.child '<config json>'

in its own process group, it loads the model, then answers commands, one JSON
object per line on stdin, with JSON lines on stdout. The protocol uses a
private copy of the original stdout: fd 1 itself is pointed at stderr (the
log file) so that whatever the libraries print cannot corrupt it.

    → {"event": "ready", "version": ..., "load_s": ..., "startup": {...}}  after loading
    ← {"op": "generate", "requests": [...], "batch_size": B|null,
       "min_window_s": S, "max_passes": P}
    → {"event": "armed"}                                            about to generate
    ← {"op": "go"}                                                  energy window open
    → {"event": "finished", "t": mono, "passes": n}                 last token out
    → {"event": "result", "requests": [{"sent", "first", "gaps", "input_tokens",
                                         "output_tokens"}, ...]}
    ← {"op": "stop"}                                                exit 0
    → {"event": "error", "kind": "oom"|"engine", "message": ...}    a command failed

Times are `time.monotonic()` (CLOCK_MONOTONIC: the same clock in every process
of the machine, and the worker's meter clock), so the parent places each
token on the run clock without a round trip. The child waits for "go" before
its first request, so the parent's energy window is open before the first
token however late the parent reads "armed" (a loaded host, a slow counter
read); "finished" goes out before the (possibly large) result, so the window
closes when generation does. Self-sizing: the child generates the same
requests again (same order, same seeds; vLLM's prefix cache emptied between
passes, so no pass profits from the one before) until `min_window_s` has
passed since "go" or `max_passes` passes ran; the result holds every pass's
requests, pass after pass.

Only the standard library is imported at the top: the backends import vLLM or
torch/transformers when the config names them.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import traceback
from typing import Any


class _Protocol:
    def __init__(self) -> None:
        # Keep the real stdout for the protocol; send fd 1 to the log (stderr).
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, **message: Any) -> None:
        self.out.write(json.dumps(message, separators=(",", ":")) + "\n")
        self.out.flush()

    @staticmethod
    def commands():
        for line in sys.stdin:
            if line.strip():
                yield json.loads(line)

    def arm(self) -> None:
        """Say generation is about to begin and wait until the parent says go."""
        self.send(event="armed")
        command = next(self.commands(), None)
        if command is None:
            raise EOFError("the worker closed the command pipe before 'go'")
        if command.get("op") != "go":
            raise RuntimeError(f"expected the command 'go', got {command.get('op')!r}")


def _gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


# ------------------------------------------------------------------ vLLM


class VllmBackend:
    """vLLM's offline engine, driven step by step to time every token."""

    def __init__(self, config: dict[str, Any]):
        import vllm
        from vllm import LLM

        self.version = vllm.__version__
        self.llm = LLM(**config["settings"])
        self.engine = self.llm.llm_engine
        self._next_id = 0

    def startup(self) -> dict[str, Any]:
        """The KV cache vLLM chose (its blocks, their size, the memory it was given
        if the sweep fixed it): EngineStartup fields."""
        cache = self.engine.vllm_config.cache_config
        return {"kv_cache_blocks": cache.num_gpu_blocks or None,
                "kv_block_size_tokens": cache.block_size or None,
                "kv_cache_bytes": getattr(cache, "kv_cache_memory_bytes", None) or None}

    def _params(self, r: dict[str, Any]):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=r["max_tokens"], min_tokens=r.get("min_tokens") or 0,
            ignore_eos=r.get("ignore_eos", True), temperature=r["temperature"],
            top_p=r["top_p"], top_k=(r.get("top_k") or 0) if r["temperature"] > 0 else 0,
            seed=r.get("seed"))

    def between_passes(self) -> None:
        """Empty the prefix cache: the next pass must prefill its prompts again."""
        self.llm.reset_prefix_cache()

    def run_pass(self, requests: list[dict[str, Any]],
                 _batch_size: int | None) -> list[dict[str, Any]]:
        """Generate every request with vLLM, with token times; one result per request."""
        ids: list[str] = []
        sent: list[float] = []
        params = [self._params(r) for r in requests]
        for r, p in zip(requests, params):
            request_id = f"farm-{self._next_id}"
            self._next_id += 1
            sent.append(time.monotonic())
            self.engine.add_request(request_id, r["prompt"], p)
            ids.append(request_id)
        index = {rid: i for i, rid in enumerate(ids)}
        times: list[list[float]] = [[] for _ in requests]
        counts = [0] * len(requests)
        prompt_tokens: list[int | None] = [None] * len(requests)
        while self.engine.has_unfinished_requests():
            outputs = self.engine.step()
            now = time.monotonic()
            for out in outputs:
                i = index.get(out.request_id)
                if i is None:
                    continue
                n = len(out.outputs[0].token_ids)
                # Several tokens in one step (speculative or async scheduling): each
                # gets this step's time; the gaps between them are 0.
                times[i].extend([now] * (n - counts[i]))
                counts[i] = n
                if out.prompt_token_ids is not None:
                    prompt_tokens[i] = len(out.prompt_token_ids)
        return [{"sent": sent[i], "first": t[0] if t else None, "gaps": _gaps(t),
                 "input_tokens": prompt_tokens[i], "output_tokens": counts[i]}
                for i, t in enumerate(times)]


# ------------------------------------------------------------------ transformers


class HfBackend:
    """Hugging Face transformers `generate`, in batches of `batch_size` prompts."""

    def __init__(self, config: dict[str, Any]):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        s = config["settings"]
        self.device = s.get("device", "cpu")
        self.version = f"transformers {transformers.__version__}, torch {torch.__version__}"
        dtype = s.get("dtype") or "auto"
        self.tokenizer = AutoTokenizer.from_pretrained(
            s.get("tokenizer") or s["model"], revision=s.get("revision"))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        kwargs: dict[str, Any] = {"revision": s.get("revision"),
                                  "dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        if s.get("attn_implementation"):
            kwargs["attn_implementation"] = s["attn_implementation"]
        self.model = AutoModelForCausalLM.from_pretrained(s["model"], **kwargs).to(self.device)
        self.model.eval()

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def between_passes(self) -> None:
        """Nothing to reset: transformers keeps no cache between `generate` calls."""

    def run_pass(self, requests: list[dict[str, Any]],
                 batch_size: int | None) -> list[dict[str, Any]]:
        """Generate every request with transformers in batches of `batch_size` (None: all)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        torch = self.torch
        size = batch_size or len(requests)
        results: list[dict[str, Any]] = []
        sync = self._sync

        class StepClock(StoppingCriteria):
            """Called once per generated token (of the whole batch): timestamps it."""

            def __init__(self) -> None:
                self.times: list[float] = []

            def __call__(self, input_ids, scores, **kwargs):
                sync()
                self.times.append(time.monotonic())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool,
                                   device=input_ids.device)

        t0 = time.monotonic()
        for start in range(0, len(requests), size):
            chunk = requests[start:start + size]
            first = chunk[0]
            enc = self.tokenizer([r["prompt"] for r in chunk], return_tensors="pt",
                                 padding=True).to(self.device)
            out_len = max(r["max_tokens"] for r in chunk)
            sampling = first["temperature"] > 0
            gen: dict[str, Any] = {
                "max_new_tokens": out_len, "do_sample": sampling,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if all(r.get("ignore_eos", True) for r in chunk):
                gen["min_new_tokens"] = out_len
            if sampling:
                gen.update(temperature=first["temperature"], top_p=first["top_p"],
                           top_k=first.get("top_k") or 0)
                # One generator per batch: transformers cannot seed each row.
                torch.manual_seed(first.get("seed") or 0)
            else:
                gen.update(temperature=None, top_p=None, top_k=None)
            clock = StepClock()
            with torch.inference_mode():
                out = self.model.generate(**enc, **gen,
                                          stopping_criteria=StoppingCriteriaList([clock]))
            sync()
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            eos = self.tokenizer.eos_token_id
            for row, r in enumerate(chunk):
                # With ignore_eos every row runs all steps; otherwise a row ends at
                # its first EOS (the rest is padding).
                generated = len(clock.times)
                if not r.get("ignore_eos", True) and eos in new[row]:
                    generated = min(generated, new[row].index(eos) + 1)
                times = clock.times[:generated]
                results.append({
                    # Every prompt is submitted at the start, as in vLLM's batch: a
                    # later chunk's wait is part of its requests' TTFT.
                    "sent": t0, "first": times[0] if times else None, "gaps": _gaps(times),
                    "input_tokens": int(enc["attention_mask"][row].sum()),
                    "output_tokens": len(times)})
        return results


BACKENDS = {"vllm": VllmBackend, "hf": HfBackend}


def generate(backend: Any, command: dict[str, Any], proto: _Protocol) -> list[dict[str, Any]]:
    """One generate command: passes over its requests until `min_window_s` has
    passed since "go" (at least one, at most `max_passes`); every pass's results."""
    requests = command["requests"]
    min_window_s = command.get("min_window_s") or 0.0
    max_passes = max(1, command.get("max_passes") or 1)
    proto.arm()
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    passes = 0
    while True:
        results.extend(backend.run_pass(requests, command.get("batch_size")))
        passes += 1
        if passes >= max_passes or time.monotonic() - t0 >= min_window_s:
            break
        backend.between_passes()
    proto.send(event="finished", t=time.monotonic(), passes=passes)
    return results


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return "OutOfMemory" in text or "out of memory" in text.lower()


def main(argv: list[str] | None = None) -> int:
    """Run the engine child: load, send `ready`, then serve commands from stdin; the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    proto = _Protocol()
    config = json.loads(argv[0])
    started = time.monotonic()
    try:
        backend = BACKENDS[config["backend"]](config)
    except BaseException as exc:  # the engine's own message goes to the parent
        traceback.print_exc()
        proto.send(event="error", kind="oom" if _is_oom(exc) else "engine",
                   message=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    load_s = time.monotonic() - started
    try:
        startup = backend.startup() if hasattr(backend, "startup") else {}
    except Exception:  # a figure vLLM moved elsewhere is not known, not a failed run
        traceback.print_exc()
        startup = {}
    proto.send(event="ready", version=backend.version, load_s=load_s, startup=startup)
    for command in proto.commands():
        if command.get("op") == "stop":
            break
        try:
            results = generate(backend, command, proto)
        except BaseException as exc:
            traceback.print_exc()
            proto.send(event="error", kind="oom" if _is_oom(exc) else "engine",
                       message=f"{type(exc).__name__}: {exc}"[:2000])
            return 1
        proto.send(event="result", requests=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
