"""workers.tinymodel's full-size shapes, shrunk: grouped-query attention, MLP width,
a vocabulary padded past the trained BPE's, bf16 weights and the random-weights marker."""

from __future__ import annotations

import json

import pytest

from workers import tinymodel

# The 8B preset's code path at a size a CPU builds in a second: 4 heads over 2 KV
# heads, an MLP wider than 2 × hidden, a vocabulary twice the trained BPE's.
SHRUNK = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=224, vocab=1024,
              rope_theta=500000.0, dtype="bfloat16")


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    if not tinymodel.torch_available():
        pytest.skip("torch is not installed: no weights")
    return tinymodel.build_tiny_llama(tmp_path_factory.mktemp("m") / "shrunk", **SHRUNK)


def test_the_config_has_the_shape_asked_for(shrunk):
    config = json.loads((shrunk / "config.json").read_text())
    assert config["num_attention_heads"] == 4 and config["num_key_value_heads"] == 2
    assert config["intermediate_size"] == 224 and config["vocab_size"] == 1024
    assert config["head_dim"] == 16 and config["rope_theta"] == 500000.0
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"


def test_weights_are_bf16_shards_and_marked_random(shrunk):
    from safetensors import safe_open

    shards = sorted(shrunk.glob("*.safetensors"))
    assert shards
    with safe_open(str(shards[0]), "pt") as f:
        names = list(f.keys())
        tensor = f.get_tensor(next(n for n in names if "k_proj" in n))
    assert str(tensor.dtype) == "torch.bfloat16" and tuple(tensor.shape) == (2 * 16, 64)
    marker = json.loads((shrunk / tinymodel.MARKER).read_text())
    assert marker["weights"] == "random" and marker["built_on"] in ("cpu", "cuda")
    assert tinymodel.model_weights(shrunk) == "random"
    assert tinymodel.model_weights(shrunk / "nope") is None
    assert tinymodel.model_weights("meta-llama/Llama-3.1-8B") is None


def test_the_tokenizer_has_every_id_of_the_model_and_encodes_as_before(shrunk):
    from transformers import AutoTokenizer

    padded = AutoTokenizer.from_pretrained(shrunk)
    assert len(padded) == 1024
    trained = tinymodel.build_tokenizer()          # the 512 entries, unpadded
    text = " ".join(tinymodel.training_corpus()) + " ünïcode 12345 ??"
    # Fillers are never produced by encoding: the same ids as the unpadded tokenizer.
    assert padded(text)["input_ids"] == trained(text)["input_ids"]
    assert max(padded(text)["input_ids"]) < len(trained)
    assert isinstance(padded.decode(list(range(len(trained), 1024))), str)


def test_the_8b_preset_is_llama_31_8b_shaped():
    preset = tinymodel.PRESETS["llama-3.1-8b"]
    assert (preset["hidden"], preset["layers"], preset["heads"], preset["kv_heads"],
            preset["intermediate"], preset["vocab"]) == (4096, 32, 32, 8, 14336, 128256)
    tokenizer = tinymodel.build_tokenizer(preset["vocab"])
    assert len(tokenizer) == 128256
    config = tinymodel._llama_config(tokenizer, **{k: v for k, v in preset.items()
                                                   if k != "vocab"})
    assert tinymodel._parameter_count(config) == 8_030_261_248    # Llama-3.1-8B's


def test_shapes_that_cannot_be_built_are_refused():
    tokenizer = tinymodel.build_tokenizer()
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        tinymodel._llama_config(tokenizer, hidden=64, layers=1, heads=4, kv_heads=3,
                                max_positions=64)
