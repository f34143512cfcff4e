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

**A full-size shape** (`--preset llama-3.1-8b`: hidden 4096, 32 layers, 32
heads, 8 KV heads, intermediate 14336, vocabulary 128256, rope theta 500000,
bf16) does the GPU work of the real model with random weights, for engines
measured where no hub is reachable. Such a model is built on the GPU in bf16
when CUDA is available (8 B parameters: seconds there, minutes on a CPU) and
written as safetensors shards. The BPE tokenizer is still trained on the few
sentences below (at most 512 entries); its vocabulary is padded with filler
tokens up to the model's (`pad_vocabulary`), so every id the model can emit
decodes, and no filler is ever produced by encoding.

Every directory built here holds `farm-model.json` (`MARKER`), which says the
weights are random; the runner records that with each run
(`EngineInfo.model_weights`, `model_weights()`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD]
# The trained BPE's most entries: a few sentences give no more merges than this.
TRAINED_VOCAB = 512
# Written into every model directory built here: the weights are random.
MARKER = "farm-model.json"

# Shapes of published models, with random weights (`--preset NAME`).
PRESETS: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.1-8B's config.json, but its llama3 rope scaling and its
    # 131072 positions (16384 suffice for the farm's workloads and keep the KV
    # cache's minimum small).
    "llama-3.1-8b": {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8,
                     "intermediate": 14336, "vocab": 128256, "rope_theta": 500000.0,
                     "max_positions": 16384, "dtype": "bfloat16"},
}
DTYPES = ("float32", "bfloat16", "float16")

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


def pad_vocabulary(backend, size: int):
    """`backend` (a trained byte-level BPE `Tokenizer`) with filler entries appended up
    to `size` ids. A filler is three byte-level alphabet characters that are not an
    entry already: no merge produces it (every merge's result is an entry), so
    encoding never emits one, and decoding one gives its three bytes."""
    from tokenizers import Tokenizer, pre_tokenizers

    data = json.loads(backend.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    taken = set(vocab) | {t["content"] for t in data.get("added_tokens", [])}
    next_id = max([*vocab.values(), *(t["id"] for t in data.get("added_tokens", []))]) + 1
    if next_id > size:
        raise ValueError(f"the tokenizer has {next_id} entries, more than the vocabulary "
                         f"of {size} asked for")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    fillers = ("".join(t) for t in itertools.product(alphabet, repeat=3))
    for token in fillers:
        if next_id >= size:
            break
        if token not in taken:
            vocab[token] = next_id
            next_id += 1
    return Tokenizer.from_str(json.dumps(data))


def build_tokenizer(vocab: int = TRAINED_VOCAB):
    """The byte-level BPE tokenizer, trained in memory (a `PreTrainedTokenizerFast`) on
    at most TRAINED_VOCAB entries and padded with fillers to exactly `vocab`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab, TRAINED_VOCAB),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_corpus(), trainer)
    if backend.get_vocab_size() < vocab:
        backend = pad_vocabulary(backend, vocab)
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


def _llama_config(tokenizer, *, hidden: int, layers: int, heads: int, max_positions: int,
                  kv_heads: int | None = None, intermediate: int | None = None,
                  rope_theta: float = 10000.0, dtype: str = "float32"):
    from transformers import LlamaConfig

    kv_heads = kv_heads or heads
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        rope_theta=rope_theta,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype=dtype,
    )


def _portable_config(directory: Path) -> None:
    """Write the keys older and newer transformers (and vLLM) read under either name.

    transformers 5 writes `dtype` and `rope_parameters`; 4.x reads `torch_dtype`
    and `rope_theta`. Both are written so any of them loads the same model.
    """
    path = directory / "config.json"
    config = json.loads(path.read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    config["dtype"] = config["torch_dtype"] = dtype
    config.setdefault("dtype", dtype)
    config.setdefault("torch_dtype", dtype)
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_tiny_llama(directory: str | Path, *, hidden: int = 128, layers: int = 2,
                     heads: int = 2, vocab: int = 512, seed: int = 0,
                     max_positions: int = 16384, kv_heads: int | None = None,
                     intermediate: int | None = None, rope_theta: float = 10000.0,
                     dtype: str = "float32", device: str | None = None,
                     max_shard_size: str = "5GB", preset: str | None = None) -> Path:
    """Write the model (or, without torch, its tokenizer and config) to `directory`.

    Returns the directory. The model's vocabulary is the tokenizer's (`vocab`
    entries, specials and fillers included), so every id the model can emit
    decodes. `kv_heads` < `heads` is grouped-query attention (default: `heads`);
    `intermediate` the MLP width (default 2 × hidden). The weights are made in
    `dtype` on `device` (default: the first GPU when CUDA is available, else the
    CPU) and written as safetensors shards of at most `max_shard_size`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab)
    config = _llama_config(tokenizer, hidden=hidden, layers=layers, heads=heads,
                           max_positions=max_positions, kv_heads=kv_heads,
                           intermediate=intermediate, rope_theta=rope_theta, dtype=dtype)
    tokenizer.save_pretrained(directory)
    built_on = None
    if torch_available():
        built_on = _write_weights(directory, config, dtype, seed, device, max_shard_size)
    else:
        config.save_pretrained(directory)
        log.warning("torch is not installed: %s holds the tokenizer and config.json only, "
                    "no weights (enough for workloads, not for an engine)", directory)
    _portable_config(directory)
    (directory / MARKER).write_text(json.dumps({
        "weights": "random" if built_on else None, "builder": "workers.tinymodel",
        "preset": preset, "seed": seed, "dtype": dtype, "built_on": built_on,
        "parameters": _parameter_count(config)}, indent=2) + "\n")
    return directory


def _write_weights(directory: Path, config, dtype: str, seed: int, device: str | None,
                   max_shard_size: str) -> str:
    """Random weights made in `dtype` on `device` (default: CUDA when available),
    saved as safetensors shards; returns the device they were made on."""
    import torch
    from transformers import LlamaForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    with _default_dtype(torch, getattr(torch, dtype)), torch.device(device):
        model = LlamaForCausalLM(config).eval()
    model.save_pretrained(directory, safe_serialization=True, max_shard_size=max_shard_size)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return device


@contextlib.contextmanager
def _default_dtype(torch, dtype):
    """Tensors made inside are `dtype`: no float32 copy of 8 B parameters first."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _parameter_count(config) -> int:
    """Parameters of a Llama of `config` (untied embeddings), without building it."""
    h, v, i = config.hidden_size, config.vocab_size, config.intermediate_size
    kv = config.num_key_value_heads * config.head_dim
    layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h   # q, o, k, v, MLP, two norms
    return config.num_hidden_layers * layer + 2 * v * h + h


def model_weights(source: str | Path) -> str | None:
    """"random" when `source` is a model directory built here (its MARKER says so);
    None otherwise (a hub id, a real checkpoint, or no such directory)."""
    try:
        marker = json.loads((Path(source) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return "random" if isinstance(marker, dict) and marker.get("weights") == "random" else None


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.tinymodel DIR`: build the tiny model in DIR; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m workers.tinymodel",
                                     description="Build a tiny random-weight Llama offline.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a published model's shape (flags given as well override it)")
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int, help="grouped-query attention (default: heads)")
    parser.add_argument("--intermediate", type=int, help="MLP width (default: 2 × hidden)")
    parser.add_argument("--vocab", type=int, help="the model's and the tokenizer's vocabulary")
    parser.add_argument("--rope-theta", type=float)
    parser.add_argument("--max-positions", type=int)
    parser.add_argument("--dtype", choices=DTYPES)
    parser.add_argument("--device", help="where the weights are made (default: cuda if any)")
    parser.add_argument("--max-shard-size", default="5GB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    shape = {"hidden": 128, "layers": 2, "heads": 2, "vocab": TRAINED_VOCAB,
             **PRESETS.get(args.preset or "", {})}
    for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab",
                "rope_theta", "max_positions", "dtype"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    path = build_tiny_llama(args.directory, seed=args.seed, device=args.device,
                            max_shard_size=args.max_shard_size, preset=args.preset, **shape)
    marker = json.loads((path / MARKER).read_text())
    weights = (f"random {shape.get('dtype', 'float32')} weights "
               f"({marker['parameters'] / 1e9:.2f} B parameters, made on {marker['built_on']})"
               if marker["weights"] else "no weights (torch missing)")
    print(f"{path}: tokenizer, config.json, {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
