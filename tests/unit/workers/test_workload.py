"""workers.workload: exact token counts, determinism, sampling settings, datasets, bins;
workers.tinymodel: the offline tokenizer (and model, where torch is installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers", reason="the engines extra (tokenizers) is not installed")
pytest.importorskip("transformers", reason="the engines extra (transformers) is not installed")

from farm.sweep import expand
from farm.sweep_file import parse_sweep
from farm_contract.lengthbins import INPUT_BINS, OUTPUT_BINS, bin_name, length_bin
from farm_contract.runspec import Decoding, RunWorkload
from tests.paths import ROOT
from workers import tinymodel
from workers.errors import PermanentError
from workers.workload import (
    SAMPLE_DATASET,
    PromptDatasetError,
    PromptRequest,
    Workload,
    WorkloadError,
    load_dataset,
    load_tokenizer,
    request_seed,
    resolve_dataset,
)

LENGTHS = [1, 7, 32, 128, 500]
SEEDS = [0, 1, 7]


@pytest.fixture(autouse=True)
def _dataset_roots(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """The tests' prompt files live under pytest's temporary folder: the dataset root."""
    monkeypatch.setenv("FARM_DATASET_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tinymodel.build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tok(tiny_dir: Path):
    return load_tokenizer(tiny_dir)


def spec(input_tokens: int | None = 32, output_tokens: int = 16, dataset: str = "synthetic",
         seed: int = 0, decoding: Decoding | None = None) -> RunWorkload:
    return RunWorkload(input_tokens=input_tokens, output_tokens=output_tokens,
                       decoding=decoding or Decoding(), dataset=dataset, seed=seed)


def text_of(request: PromptRequest) -> str:
    return request.prompt if request.prompt is not None else request.messages[-1]["content"]


# ------------------------------------------------------------------ tiny model


def test_tiny_tokenizer_is_llama_like(tiny_dir: Path, tok):
    assert (tiny_dir / "tokenizer.json").is_file()
    assert (tiny_dir / "config.json").is_file()
    assert len(tok) == 512
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<s>", "</s>", "<pad>", "<unk>")
    ids = tok.encode("hello world")
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in tok.encode(
        "hello world", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "hello world"   # byte-level: lossless
    assert tok.chat_template
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["head_dim"]) == (512, 128, 2, 2, 64)
    assert config["torch_dtype"] == "float32"
    weights = list(tiny_dir.glob("*.safetensors"))
    assert bool(weights) == tinymodel.torch_available()


def test_tiny_model_is_deterministic_and_has_a_cli(tmp_path: Path, tiny_dir: Path, capsys):
    assert tinymodel.main([str(tmp_path / "again")]) == 0
    assert "tokenizer" in capsys.readouterr().out
    for name in ("tokenizer.json", "config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (tiny_dir / name).read_bytes()


def test_tiny_model_offline_through_the_module_cli(tmp_path: Path):
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "workers.tinymodel", str(tmp_path / "m"),
                           "--vocab", "400"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m" / "config.json").read_text())["vocab_size"] == 400


# ------------------------------------------------------------ exact synthetic


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", LENGTHS)
def test_synthetic_prompts_have_exact_counts(tok, length: int, seed: int):
    workload = Workload(spec(length, seed=seed), tok)
    for request in workload.prompts(8):
        assert len(tok.encode(request.prompt)) == length           # as the engine counts
        assert request.input_tokens == length and request.messages is None


@pytest.mark.parametrize("length", LENGTHS)
def test_text_only_counting_leaves_out_special_tokens(tok, length: int):
    workload = Workload(spec(length, seed=3), tok, count_template=False)
    for request in workload.prompts(6):
        assert len(tok.encode(request.prompt, add_special_tokens=False)) == length
        assert len(tok.encode(request.prompt)) == length + 1      # the engine adds <s>


def test_a_length_of_only_special_tokens_is_an_empty_text(tok):
    (request,) = Workload(spec(1), tok).prompts(1)
    assert request.prompt == "" and len(tok.encode(request.prompt)) == 1


@pytest.mark.parametrize("length", [32, 128, 500])
def test_chat_prompts_count_the_template(tok, length: int):
    workload = Workload(spec(length, seed=5), tok, api="chat")
    for request in workload.prompts(6):
        assert request.prompt is None and request.messages[0]["role"] == "user"
        rendered = tok.apply_chat_template(request.messages, tokenize=False,
                                           add_generation_prompt=True)
        assert len(tok.encode(rendered, add_special_tokens=False)) == length


@pytest.mark.parametrize("length", [1, 7, 128])
def test_chat_prompts_can_count_the_content_only(tok, length: int):
    workload = Workload(spec(length), tok, api="chat", count_template=False)
    for request in workload.prompts(4):
        assert len(tok.encode(text_of(request), add_special_tokens=False)) == length


def test_a_chat_shorter_than_its_template_is_an_error(tok):
    with pytest.raises(WorkloadError, match="shorter than what the chat API adds"):
        Workload(spec(7), tok, api="chat").prompts(1)


def test_long_prompts_are_exact(tok):
    workload = Workload(spec(8192, seed=2), tok)
    assert [len(tok.encode(r.prompt)) for r in workload.prompts(2)] == [8192, 8192]


def _odd_tokenizer(kind: str):
    """Tokenizers of other shapes: byte-level without the word split, SentencePiece-like."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    if kind == "bytes-no-split":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
        backend.decoder = decoders.Metaspace(prepend_scheme="first", split=False)
        alphabet = []
    backend.train_from_iterator(tinymodel.training_corpus() * 2, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet,
        show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("kind", ["bytes-no-split", "metaspace"])
def test_exact_counts_with_other_tokenizer_shapes(kind: str):
    odd = _odd_tokenizer(kind)
    for length in [2, 7, 33, 129, 301]:
        for request in Workload(spec(length, seed=length), odd).prompts(3):
            assert len(odd.encode(request.prompt)) == length


class AwkwardTokenizer:
    """One token per character, but "z" is three: no cut of "zzz…" hits most targets,
    so the exact method must fall through to its character search and filler endings."""

    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [1] if add_special_tokens else []
        for char in text:
            ids += [ord(char)] * (3 if char == "z" else 1)
        return ids

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        out, i = [], 0
        while i < len(ids):
            if ids[i] == 1:
                i += 1
                continue
            out.append(chr(ids[i]))
            i += 3 if ids[i] == ord("z") else 1
        return "".join(out)


def test_the_exact_method_falls_back_to_characters_and_fillers():
    workload = Workload(spec(10), AwkwardTokenizer())
    count = workload._counter()
    for target in range(2, 40):
        text = workload._fit("z" * 60, target, count)
        assert text is not None and count(text) == target
    assert workload._fit("zzz", 40, count) is None                 # source too short


def test_an_impossible_length_is_an_error_never_an_inexact_prompt():
    class EvenOnly(AwkwardTokenizer):
        def encode(self, text, add_special_tokens=True):
            return [ord(c) for c in text for _ in range(2)]

    workload = Workload(spec(10), EvenOnly(), count_template=False)
    with pytest.raises(WorkloadError, match="exactly 7 tokens"):
        workload._fit("abcdefghijklmnopqrstuvwxyz", 7, workload._counter())


# ------------------------------------------------------------------ determinism


def test_same_seed_same_requests_different_seed_different(tok):
    a = Workload(spec(128, seed=11), tok).prompts(10)
    b = Workload(spec(128, seed=11), tok).prompts(10)
    c = Workload(spec(128, seed=12), tok).prompts(10)
    assert a == b
    assert all(x.prompt != y.prompt for x, y in zip(a, c))
    assert len({r.prompt for r in a}) == 10                        # every request differs


def test_requests_depend_on_their_index_only(tok):
    workload = Workload(spec(64, seed=4), tok)
    first = workload.prompts(6)
    assert workload.prompts(3, start=3) == first[3:]
    assert [workload.request(i) for i in (5, 0)] == [first[5], first[0]]
    stream = workload.iter_requests(start=2)
    assert [next(stream) for _ in range(4)] == first[2:6]
    # the first words differ, so requests share no prefix an engine could cache
    assert len({text_of(r)[:12] for r in first}) == len(first)


def test_request_seed_is_stable_and_spread():
    seeds = [request_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert request_seed(0, 5) == request_seed(0, 5) != request_seed(1, 5)


# ---------------------------------------------------------------------- decoding


def test_greedy_decoding_sends_temperature_zero_and_no_seed(tok):
    for request in Workload(spec(32, output_tokens=64), tok).prompts(3):
        assert (request.temperature, request.top_p, request.top_k, request.seed) == (
            0.0, 1.0, None, None)
        assert (request.max_tokens, request.min_tokens, request.ignore_eos) == (64, 64, True)


def test_greedy_word_maps_to_temperature_zero(tok):
    request = Workload(spec(32, decoding=Decoding.model_validate("greedy")), tok).request(0)
    assert request.temperature == 0.0 and request.seed is None


def test_sampling_sends_the_spec_and_a_seed_per_request(tok):
    decoding = Decoding(temperature=0.8, top_p=0.95, top_k=40)
    workload = Workload(spec(32, output_tokens=8, seed=9, decoding=decoding), tok)
    requests = workload.prompts(4)
    for i, request in enumerate(requests):
        assert (request.temperature, request.top_p, request.top_k) == (0.8, 0.95, 40)
        assert request.seed == request_seed(9, i)
        assert (request.max_tokens, request.min_tokens, request.ignore_eos) == (8, 8, True)
    assert len({r.seed for r in requests}) == 4
    assert Workload(spec(32, decoding=Decoding(temperature=1.0)), tok).request(0).top_k is None


def test_prompt_request_is_a_plain_frozen_dataclass():
    import dataclasses

    assert [f.name for f in dataclasses.fields(PromptRequest)] == [
        "prompt", "messages", "input_tokens", "max_tokens", "min_tokens", "temperature",
        "top_p", "top_k", "seed", "ignore_eos"]
    request = PromptRequest("hi", None, 2, 4, 4, 0.0, 1.0, None, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.prompt = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------- JSONL


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_prompts_messages_blank_lines_and_extra_keys(tmp_path: Path):
    path = write(tmp_path / "d.jsonl", [
        json.dumps({"prompt": "Why is the sea salty?", "id": 1}),
        "",
        json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Name a blue fruit."}]}),
        "   ",
        json.dumps({"prompt": "Café au lait, s'il vous plaît."}),
    ])
    entries = load_dataset(path)
    assert [e.line for e in entries] == [1, 3, 5]
    assert entries[0].prompt == "Why is the sea salty?" and entries[0].messages is None
    assert entries[1].messages == (("system", "Be brief."), ("user", "Name a blue fruit."))


@pytest.mark.parametrize("line,problem", [
    ('{"prompt": "unterminated', "invalid JSON"),
    ('["a list"]', "expected a JSON object, got list"),
    ('{"prompt": "a", "messages": []}', "not both"),
    ('{"text": "no prompt key"}', 'needs "prompt"'),
    ('{"prompt": "   "}', '"prompt" must be a non-empty string'),
    ('{"prompt": 42}', '"prompt" must be a non-empty string'),
    ('{"messages": []}', '"messages" must be a non-empty list'),
    ('{"messages": [{"role": "user"}]}', 'messages[0]: "content" must be a string'),
    ('{"messages": [{"content": "hi"}]}', 'messages[0]: "role" must be a non-empty string'),
    ('{"messages": ["hi"]}', "messages[0] must be an object"),
])
def test_jsonl_errors_name_the_file_and_line(tmp_path: Path, line: str, problem: str):
    path = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "fine"}), "", line])
    with pytest.raises(PromptDatasetError) as info:
        load_dataset(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and problem in message
    assert info.value.problems[0][0] == 3 and info.value.path == str(path)
    assert isinstance(info.value, PermanentError) and info.value.kind == "dataset"


def test_jsonl_lists_every_bad_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\nnot json\n{"prompt": "\xff\xfe"}\n'
                     + b"\xff\xfe\n" + b'{"prompt": ""}\n')
    with pytest.raises(PromptDatasetError) as info:
        load_dataset(path)
    assert [line for line, _ in info.value.problems] == [2, 3, 4, 5]
    assert "4 problems" in str(info.value) and "line 4: not UTF-8" in str(info.value)


def test_jsonl_empty_or_missing_file(tmp_path: Path):
    with pytest.raises(PromptDatasetError, match="no prompts in the file"):
        load_dataset(write(tmp_path / "empty.jsonl", ["", ""]))
    with pytest.raises(PromptDatasetError, match="cannot read the file"):
        load_dataset(tmp_path / "absent.jsonl")


def test_dataset_paths_are_resolved_on_the_worker(tmp_path: Path, monkeypatch):
    data = write(tmp_path / "mine.jsonl", [json.dumps({"prompt": "hello"})])
    assert resolve_dataset(str(data)) == data                     # absolute, under a root
    assert resolve_dataset("mine.jsonl", [tmp_path]) == data      # under a search dir
    monkeypatch.delenv("FARM_DATASET_ROOTS")                      # default: ./.farm/datasets
    monkeypatch.chdir(tmp_path)
    own = write(tmp_path / ".farm" / "datasets" / "own.jsonl", [json.dumps({"prompt": "hi"})])
    assert resolve_dataset("own.jsonl") == own
    assert resolve_dataset("prompts-sample.jsonl") == SAMPLE_DATASET     # shipped: always
    assert resolve_dataset("workers/datasets/prompts-sample.jsonl").samefile(SAMPLE_DATASET)
    with pytest.raises(PromptDatasetError, match="not a dataset this worker") as info:
        resolve_dataset("nowhere.jsonl")
    assert info.value.path == "nowhere.jsonl"


def test_a_dataset_outside_the_hosts_roots_is_refused_without_saying_if_it_exists(
        tmp_path: Path, monkeypatch):
    # Security audit B: `dataset = "/home/alice/private/prompts.jsonl"` with an openai
    # engine sent every prompt to the sweep's server, and the error told what exists.
    root, private = tmp_path / "datasets", tmp_path / "private"
    write(root / "ok.jsonl", [json.dumps({"prompt": "fine"})])
    secret = write(private / "prompts.jsonl", [json.dumps({"prompt": "secret"})])
    (root / "link.jsonl").symlink_to(secret)
    (root / "sub").mkdir()
    monkeypatch.setenv("FARM_DATASET_ROOTS", str(root))
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset("ok.jsonl") == root / "ok.jsonl"
    messages = set()
    for name in (str(secret), str(private / "absent.jsonl"), "../private/prompts.jsonl",
                 str(root / ".." / "private" / "prompts.jsonl"), "link.jsonl", "private",
                 "private/prompts.jsonl", "/etc/passwd", "sub"):
        with pytest.raises(PromptDatasetError, match="FARM_DATASET_ROOTS") as info:
            resolve_dataset(name)
        assert info.value.path == name
        messages.add(str(info.value).split(": ", 1)[1])
    assert len(messages) == 1, messages           # one message: nothing said about what exists
    with pytest.raises(PromptDatasetError, match="not a dataset this worker"):
        Workload(spec(None, dataset=str(secret)), None)


# ------------------------------------------------------------- dataset workloads


SYSTEM = "Answer in one line."


@pytest.fixture()
def varied(tmp_path: Path) -> Path:
    words = ["the", "cat", "sat", "on", "a", "warm", "mat", "near", "the", "open", "door"]
    lines = [json.dumps({"prompt": " ".join(words * n)}) for n in (1, 2, 4, 8, 16)]
    lines.append(json.dumps({"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": " ".join(words * 6)}]}))
    return write(tmp_path / "varied.jsonl", lines)


def completion_texts(path: Path) -> list[str]:
    """Each entry as the completions API sends it (a chat's contents joined)."""
    out = []
    for line in path.read_text().splitlines():
        value = json.loads(line)
        out.append(value.get("prompt") or "\n\n".join(m["content"] for m in value["messages"]))
    return out


def test_dataset_without_input_tokens_keeps_prompts_as_they_are(tok, varied: Path):
    workload = Workload(spec(None, dataset=str(varied)), tok)
    assert workload.distinct_prompts == 6
    requests = workload.prompts(6)
    assert {len(tok.encode(r.prompt)) for r in requests} == {r.input_tokens for r in requests}
    joined = [r for r in requests if SYSTEM in r.prompt]
    assert len(joined) == 1 and "\n\n" in joined[0].prompt       # chat flattened


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_truncate_policy_cuts_long_prompts_to_the_exact_length(tok, varied: Path, api: str):
    workload = Workload(spec(64, dataset=str(varied), seed=3), tok, api=api)
    distinct = workload.distinct_prompts
    requests = workload.prompts(2 * distinct)
    for request in requests:
        assert request.input_tokens == 64
        assert workload.count_tokens(request.prompt, request.messages) == 64
    long_enough = [t for t in completion_texts(varied) if len(tok.encode(t)) >= 64]
    if api == "completions":
        assert workload.distinct_prompts == len(long_enough) < 6   # short ones are skipped
    if api == "chat":
        system = [r for r in requests if r.messages[0]["role"] == "system"]
        assert system and all(r.messages[0]["content"] == SYSTEM for r in system)
    assert requests[distinct:] == requests[:distinct]             # cycled, same order


def test_bin_policy_keeps_prompts_of_the_same_bin_unchanged(tok, varied: Path):
    workload = Workload(spec(128, dataset=str(varied)), tok, dataset_policy="bin")
    texts = completion_texts(varied)
    in_bin = [t for t in texts if length_bin(len(tok.encode(t))) == 128]
    assert 0 < workload.distinct_prompts == len(in_bin) < len(texts)
    for request in workload.prompts(4):
        assert length_bin(request.input_tokens) == 128 and request.prompt in in_bin
        assert len(tok.encode(request.prompt)) == request.input_tokens


def test_no_usable_prompt_names_the_file(tok, varied: Path):
    with pytest.raises(PromptDatasetError, match="no prompt of at least 4096 tokens") as info:
        Workload(spec(4096, dataset=str(varied)), tok).prompts(1)
    assert info.value.path == str(varied)
    with pytest.raises(PromptDatasetError, match="outside the input bins"):
        Workload(spec(10, dataset=str(varied)), tok, dataset_policy="bin")


def test_dataset_order_depends_on_the_seed(tok, varied: Path):
    def order(seed: int) -> list[str]:
        return [r.prompt for r in Workload(spec(None, dataset=str(varied), seed=seed),
                                           tok).prompts(6)]
    assert order(0) == order(0)
    assert sorted(order(0)) == sorted(order(1)) and any(order(s) != order(0) for s in (1, 2, 3))


def test_dataset_errors_surface_when_the_workload_is_built(tok, tmp_path: Path):
    bad = write(tmp_path / "bad.jsonl", ['{"prompt": "ok"}', "{oops"])
    with pytest.raises(PromptDatasetError, match=r"bad\.jsonl:2: invalid JSON"):
        Workload(spec(32, dataset=str(bad)), tok)


# -------------------------------------------------------------------- sample file


def test_the_shipped_sample_loads_and_varies_in_length(tok):
    entries = load_dataset(SAMPLE_DATASET)
    assert 45 <= len(entries) <= 60
    assert any(e.messages for e in entries) and sum(e.prompt is not None for e in entries) >= 40
    words = sorted(len(e.prompt.split()) for e in entries if e.prompt)
    assert words[0] < 15 and words[-1] > 250
    for api in ("completions", "chat"):
        workload = Workload(spec(None, dataset="prompts-sample.jsonl"), tok, api=api)
        assert workload.distinct_prompts == len(entries)
        bins = {bin_name(r.input_tokens) for r in workload.prompts(len(entries))}
        assert len(bins) >= 4


def test_sample_is_packaged():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "datasets/*.jsonl" in data["tool"]["setuptools"]["package-data"]["workers"]
    assert SAMPLE_DATASET.parent == ROOT / "workers" / "datasets"


# -------------------------------------------------------------------------- bins


@pytest.mark.parametrize("length,kind,expected", [
    (22, "input", None), (23, "input", 32), (32, "input", 32), (45, "input", 32),
    (46, "input", 64), (128, "input", 128), (181, "input", 128), (182, "input", 256),
    (8192, "input", 8192), (11585, "input", 8192), (11586, "input", None),
    (0, "input", None), (5, "output", None), (6, "output", 8), (8, "output", 8),
    (100, "output", 128), (512, "output", 512), (724, "output", 512), (725, "output", None),
])
def test_length_bins(length: int, kind: str, expected: int | None):
    assert length_bin(length, kind) == expected


def test_bins_tile_the_range_and_name_every_length():
    assert all(length_bin(b) == b for b in INPUT_BINS)
    assert all(length_bin(b, "output") == b for b in OUTPUT_BINS)
    assert all(length_bin(n) is not None for n in range(23, 11586))
    assert bin_name(128) == "I128" and bin_name(64, "output") == "O64"
    assert bin_name(3) == "I<32" and bin_name(20000) == "I>8192"
    assert bin_name(1000, "output") == "O>512"


# ------------------------------------------------------------ runs and tokenizer


def test_workload_from_a_run(tiny_dir: Path):
    sweep = parse_sweep(f"""
name = "tiny"
[[model]]
id = "tiny"
source = "{tiny_dir}"
[hardware]
gpu = "H100"
[engine]
kind = "vllm"
[[scenario]]
kind = "server"
concurrency = [4]
duration_s = 5
api = "chat"
[[scenario]]
kind = "batch"
num_prompts = 8
[workload]
input_tokens = [64]
output_tokens = [8]
decoding = [{{ temperature = 0.7 }}]
seed = 3
""")
    runs = {run.scenario.kind: run for run in expand(sweep)}
    chat = Workload.from_run(runs["server"])
    batch = Workload.from_run(runs["batch"], tokenizer=chat.tokenizer)
    assert chat.api == "chat" and batch.api == "completions"
    assert chat.request(0).messages and batch.request(0).prompt
    assert batch.request(1).seed == request_seed(3, 1) and batch.request(1).input_tokens == 64


def test_tokenizers_load_offline_only(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WorkloadError, match="cannot load the tokenizer"):
        load_tokenizer(tmp_path / "no-such-model")
    with pytest.raises(WorkloadError, match="cannot load the tokenizer"):
        load_tokenizer("farm-tests/not-a-cached-model")


def test_a_chat_without_template_needs_content_counting():
    with pytest.raises(WorkloadError, match="has none"):
        Workload(spec(32), AwkwardTokenizer(), api="chat")


def test_importing_the_module_does_not_import_transformers():
    code = ("import sys, workers.workload, workers.tinymodel; "
            "assert 'transformers' not in sys.modules and 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
