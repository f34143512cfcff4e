"""A tiny random-weight Llama and its tokenizer, built offline in code.

The real engine paths (vLLM, Hugging Face transformers) and the workload module
need a model directory; tests and CPU machines cannot fetch one from a hub. This
builds one in a second, with no network:

- a byte-level BPE tokenizer (the `tokenizers` library) trained on a few
  sentences, wrapped in `PreTrainedTokenizerFast` with `<s>` / `</s>` /
  `<pad>` / `<unk>`. Like a Llama tokenizer it prepends `<s>` to every encoded
  text, and it carries a small chat template, so both the completions and the
  chat paths can be exercised;
- a `LlamaForCausalLM` with random float32 weights (hidden 128, 2 layers, head
  size 64 by default), written with `save_pretrained` — only where `torch` can
  be imported. Without torch the directory holds the tokenizer and
  `config.json` only: enough for everything that tokenizes (workloads), not for
  an engine that runs the model.

Its output text is byte noise: assert on token counts and structure, never on
text. Everything is deterministic for a seed (the weights through
`torch.manual_seed`; the tokenizer's training does not depend on it).

    python -m workers.tinymodel DIR [--hidden 128 --layers 2 --heads 2 --vocab 512 --seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD]

# A minimal chat template in the Llama/Zephyr style: BOS, each turn as
# "<|role|>\ncontent</s>\n", then the assistant's header.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Training text for the tokenizer: a few sentences, enough pairs for a 512-entry
# vocabulary. Kept here (not shared with workers.workload) so this module needs
# nothing of farm: it runs in any environment with transformers.
_SENTENCES = (
    "A benchmark farm measures how much energy a language model needs per token.",
    "The coordinator expands a sweep into runs and sends each one to a worker.",
    "Every worker reads the energy counter of its GPUs before and after a window.",
    "Short prompts finish quickly, while long prompts fill the cache with keys and values.",
    "When the batch is full, the server reaches a steady state and the window opens.",
    "Idle power is measured first, with and without a context on the device.",
    "The quick brown fox jumps over the lazy dog, then rests in the warm grass.",
    "Numbers such as 12, 256 and 4096 appear in logs, tables and reports.",
    "Is the result valid? Only when the counter and the timeline agree.",
    "She wrote: \"Greedy decoding is repeatable; seeded sampling is too.\"",
    "Rivers carry water from the mountains down to the sea through forests and towns.",
    "My family walked along the river on Sunday morning and watched the boats.",
    "Children learn to read by listening to stories, asking questions and writing letters.",
    "The old house near the school has a green door, a small garden and a tall tree.",
    "Please check the map before you travel north, because the road may be closed.",
    "He thought about the problem for an hour, then found a simple answer on paper.",
    "Birds sing early in spring, when the air is cold and the light is soft.",
    "The machine stopped during the night, so the team started it again at dawn.",
    "Music, science and language are taught in every class of the new school.",
    "Each question has one correct answer; write it down and explain your reasons.",
    "A strong wind blew across the island and the waves hit the rocks.",
    "They built a bridge of wood and stone over the deep and fast river.",
    "Her friend brought bread, cheese, apples and a warm drink for everyone.",
    "If the power fails, the system records nothing and the run is tried again.",
)


def torch_available() -> bool:
    """Whether `torch` can be imported here (the weights need it)."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch  # noqa: F401
    except Exception:  # a broken install counts as missing
        return False
    return True


def training_corpus() -> list[str]:
    """The sentences the tokenizer is trained on (a fresh list each call)."""
    return list(_SENTENCES)


def build_tokenizer(vocab: int = 512):
    """The byte-level BPE tokenizer, trained in memory (a `PreTrainedTokenizerFast`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_corpus(), trainer)
    bos_id = backend.token_to_id(BOS)
    # Like Llama: "<s>" in front of every encoded text (add_special_tokens=True).
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        clean_up_tokenization_spaces=False, model_max_length=16384,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama_config(tokenizer, *, hidden: int, layers: int, heads: int, max_positions: int):
    from transformers import LlamaConfig

    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )


def _portable_config(directory: Path) -> None:
    """Write the keys older and newer transformers (and vLLM) read under either name.

    transformers 5 writes `dtype` and `rope_parameters`; 4.x reads `torch_dtype`
    and `rope_theta`. Both are written so any of them loads the same model.
    """
    path = directory / "config.json"
    config = json.loads(path.read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    config.setdefault("dtype", dtype)
    config.setdefault("torch_dtype", dtype)
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_tiny_llama(directory: str | Path, *, hidden: int = 128, layers: int = 2,
                     heads: int = 2, vocab: int = 512, seed: int = 0,
                     max_positions: int = 16384) -> Path:
    """Write the tiny model (or, without torch, its tokenizer and config) to `directory`.

    Returns the directory. The model's vocabulary is the tokenizer's (`vocab`
    entries, specials included), so every id the model can emit decodes.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab)
    config = _llama_config(tokenizer, hidden=hidden, layers=layers, heads=heads,
                           max_positions=max_positions)
    tokenizer.save_pretrained(directory)
    if torch_available():
        import torch
        from transformers import LlamaForCausalLM

        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
        model.save_pretrained(directory, safe_serialization=True)
    else:
        config.save_pretrained(directory)
        log.warning("torch is not installed: %s holds the tokenizer and config.json only, "
                    "no weights (enough for workloads, not for an engine)", directory)
    _portable_config(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.tinymodel DIR`: build the tiny model in DIR; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m workers.tinymodel",
                                     description="Build a tiny random-weight Llama offline.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    path = build_tiny_llama(args.directory, hidden=args.hidden, layers=args.layers,
                            heads=args.heads, vocab=args.vocab, seed=args.seed)
    weights = "random float32 weights" if torch_available() else "no weights (torch missing)"
    print(f"{path}: tokenizer, config.json, {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
