"""GPU loads for the measurement tests, run as child processes (python -m tests.gpu.loads).

Each load prints `READY`, then `BEGIN <name>` / `END <name> <count>` around the
part to be measured, flushing every line, so the measuring process opens and
closes its windows at the edges of the real work.
"""

from __future__ import annotations

import argparse
import sys
import time


def say(*words: object) -> None:
    print(*words, flush=True)


def matmul(seconds: float, size: int) -> None:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    say("READY")
    say("BEGIN steady")
    iterations = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(8):
            a @ b
        torch.cuda.synchronize()
        iterations += 8
    say("END steady", iterations)


def pulses(seconds: float, on_s: float, off_s: float, size: int) -> None:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    say("READY")
    say("BEGIN pulses")
    end = time.monotonic() + seconds
    cycles = 0
    while time.monotonic() < end:
        busy_until = time.monotonic() + on_s
        while time.monotonic() < busy_until:
            a @ a
            torch.cuda.synchronize()
        time.sleep(off_s)
        cycles += 1
    say("END pulses", cycles)


def generate(batches: list[int], new_tokens: int, prompt_tokens: int,
             min_window_s: float) -> None:
    """HF transformers generate on a random-weight ~0.85B Llama built here (no hub)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=14,
                         num_attention_heads=16, num_key_value_heads=16, vocab_size=32000,
                         max_position_embeddings=4096)
    model = LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16).eval()
    params_b = sum(p.numel() for p in model.parameters()) / 1e9
    say("MODEL", f"{params_b:.3f}")
    say("READY")
    for batch in batches:
        ids = torch.randint(100, 31000, (batch, prompt_tokens), device="cuda")
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      pad_token_id=0)
        with torch.inference_mode():
            model.generate(ids, **kwargs)          # the first full-length run per shape is slow
            torch.cuda.synchronize()
            # Repeat whole generations until the window is long enough to judge
            # (windows under ~3 s from a lower power read low with either method).
            say(f"BEGIN generate-b{batch}")
            started, tokens = time.monotonic(), 0
            while time.monotonic() - started < min_window_s:
                out = model.generate(ids, **kwargs)
                torch.cuda.synchronize()
                tokens += int((out.shape[1] - prompt_tokens) * batch)
        say(f"END generate-b{batch}", tokens)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["matmul", "pulses", "generate"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--on", type=float, default=1.0)
    parser.add_argument("--off", type=float, default=1.0)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--min-window-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.kind == "matmul":
        matmul(args.seconds, args.size)
    elif args.kind == "pulses":
        pulses(args.seconds, args.on, args.off, args.size)
    else:
        generate([int(b) for b in args.batches.split(",")], args.new_tokens,
                 args.prompt_tokens, args.min_window_s)


if __name__ == "__main__":
    main(sys.argv[1:])
