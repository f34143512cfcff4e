"""What a run sends: prompts of exact token lengths, sampling settings, datasets, bins.

A `Workload` turns a run's `RunWorkload` (input/output tokens, decoding, dataset,
seed) and the model's own tokenizer into `PromptRequest`s. Request `i` is a pure
function of (workload, tokenizer, i): the same run always sends the same
requests, and — through a per-request seed derived from the workload seed —
samples the same way.

How input tokens are counted
----------------------------
`input_tokens` is the length of the token sequence the engine will process, as
the engine counts it (what vLLM reports as `usage.prompt_tokens`):

- completions API / offline batch: `tokenizer.encode(prompt)` with the
  tokenizer's special tokens (a Llama tokenizer's `<s>` counts as one token);
- chat API: the chat template rendered with the generation prompt, then
  encoded without adding special tokens again (what vLLM and
  `apply_chat_template` do): the template's own tokens count.

With `count_template=False` only the text counts: the prompt encoded without
special tokens, or the message contents without the template. A prompt built
that way is exactly `input_tokens` long as text, and the engine sees a few more
tokens.

Exact lengths (synthetic prompts)
---------------------------------
Text from a seeded word list (sentences of plain English words) is generated
a little longer than needed and encoded once. Then:

1. Token cut with feedback. Decode the first k ids, re-encode the text with the
   counting method above, and move k by the error (target − count). Decoding
   and re-encoding do not always round-trip — BPE merges differently at a cut
   inside a word, special tokens and templates add tokens — so this repeats
   until the count is exact (usually at once or after one step), or a k comes
   back.
2. Character search. Otherwise bisect on the number of characters kept for the
   longest prefix that counts fewer tokens than the target; one more character
   usually hits it exactly.
3. Tail repair. Where one character adds two tokens (it breaks a merge), try
   short filler endings (" a", ".", ",", …) on the last few prefixes.

The result is verified by re-encoding: every prompt counts exactly
`input_tokens`, or the workload raises `WorkloadError` (never an inexact
prompt). A target shorter than the special tokens/template alone is an error;
one equal to them gives an empty text.

Datasets
--------
`dataset` is "synthetic" or a JSONL file: one object per line with "prompt" (a
string) or "messages" (a chat: a list of {"role", "content"}); other keys are
ignored, blank lines skipped. The file is the host's choice as much as the
sweep's: it is read only from under the worker's dataset roots
(FARM_DATASET_ROOTS, default ./.farm/datasets) or the shipped datasets (see
`resolve_dataset`); the shipped sample is workers/datasets/prompts-sample.jsonl.
Entries are taken in a seeded shuffled order and cycled when a run needs more
requests than the file has (repeats can hit an engine's prefix cache).

With `input_tokens` and a dataset, the default policy is "truncate": entries at
least `input_tokens` long are cut to exactly `input_tokens` (the same exact
method, applied to the entry's own text; for a chat, to its last message), and
shorter ones are skipped. Every request then has the run's input length, as
with synthetic prompts, while its text is natural. Policy "bin" keeps, unchanged,
the entries whose length falls in the same Fernandez et al. bin as
`input_tokens` (see `length_bin`); each request records its real length.
In completions mode a chat entry is sent as its message contents joined by
blank lines; in chat mode a prompt entry becomes one user message.

Output and sampling
-------------------
`max_tokens = min_tokens = output_tokens` with `ignore_eos`: every request
generates exactly `output_tokens`. Greedy decoding (temperature 0) sends
top_p 1, no top_k and no seed; sampling sends the spec's temperature, top_p and
top_k and a seed derived from (workload seed, request index).

Token-length bins
-----------------
Fernandez et al. (ACL 2025) bin workloads by input length I ∈ {32, 64, …, 8192}
and output length O ∈ {8, 16, …, 512}, powers of two. Here a length belongs to
the bin b with b/√2 < length ≤ b·√2 (nearest power of two in log scale), so
the bins tile the range without gaps: input bin 128 holds 91…181 tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from farm_contract.lengthbins import INPUT_BINS, bin_name, length_bin
from farm_contract.runspec import Decoding, RunSpec, RunWorkload
from farm_contract.settings import Settings, load_settings
from workers.errors import PermanentError
from workers.model_policy import inside_roots

Api = Literal["completions", "chat"]
Policy = Literal["truncate", "bin"]

# Datasets shipped with the worker (package data), found by their bare name.
DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
SAMPLE_DATASET = DATASETS_DIR / "prompts-sample.jsonl"

# Plain English words for synthetic prompts: common, ASCII, lower case.
_WORDS = """
the of and to in is it that was for on are with as his they be at one have this from
or had by word but what some we can out other were all there when up use your how said
an each she which do their time if will way about many then them write would like so
these her long make thing see him two has look more day could go come did number sound
no most people my over know water than call first who may down side been now find any
new work part take get place made live where after back little only round man year came
show every good me give our under name very through just form sentence great think say
help low line differ turn cause much mean before move right boy old too same tell does set
three want air well also play small end put home read hand port large spell add even land
here must big high such follow act why ask men change went light kind off need house
picture try us again animal point mother world near build self earth father head stand
own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might
story saw far sea draw left late run while press close night real life few north open seem
together next white children begin got walk example ease paper group always music those
both mark often letter until mile river car feet care second book carry took science eat
room friend began idea fish mountain stop once base hear horse cut sure watch color face
wood main enough plain girl usual young ready above ever red list though feel talk bird
soon body dog family direct pose leave song measure door product black short numeral
class wind question happen complete ship area half rock order fire south problem piece
told knew pass since top whole king space heard best hour better true during hundred five
remember step early hold west ground interest reach fast verb sing listen six table travel
less morning ten simple several vowel toward war lay against pattern slow center love
person money serve appear road map rain rule govern pull cold notice voice unit power town
fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest
correct able pound done beauty drive stood contain front teach week final gave green quick
develop ocean warm free minute strong special mind behind clear tail produce fact street
inch multiply nothing course stay wheel full force blue object decide surface deep moon
island foot system busy test record boat common gold possible plane stead dry wonder laugh
thousand ago ran check game shape equate hot miss brought heat snow tire bring yes distant
fill east paint language among
"""
SYNTHETIC_WORDS: tuple[str, ...] = tuple(_WORDS.split())

# Endings tried when one more character adds two tokens (step 3 of the exact method).
_FILLERS = (" a", ".", ",", " I", " ", "a", "s", "e", ";", "!", "?", " the", " and", "-")


# ---------------------------------------------------------------------- errors


class WorkloadError(PermanentError):
    """The workload cannot be built as specified (tokenizer, lengths)."""

    kind = "workload"


class PromptDatasetError(WorkloadError):
    """A dataset that cannot be used; every problem names the file and, where known, the line."""

    kind = "dataset"
    MAX_SHOWN = 20

    def __init__(self, path: str | Path, problems: list[tuple[int | None, str]]):
        self.path = str(path)
        self.problems = problems
        shown = [f"  line {line}: {msg}" if line else f"  {msg}"
                 for line, msg in problems[:self.MAX_SHOWN]]
        if len(problems) > self.MAX_SHOWN:
            shown.append(f"  … and {len(problems) - self.MAX_SHOWN} more")
        if len(problems) == 1:
            line, msg = problems[0]
            text = f"{self.path}:{line}: {msg}" if line else f"{self.path}: {msg}"
        else:
            text = "\n".join([f"{self.path}: {len(problems)} problems", *shown])
        super().__init__(text)


# -------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class PromptRequest:
    """One prompt to send.

    `prompt` is text or token ids (the completions API accepts both; ids give
    exact input lengths); `messages` are chat messages (the chat API wraps a
    plain `prompt` as one user message). `input_tokens` is the length the
    workload built (the server's `usage` wins when it reports one). With
    `ignore_eos` every request generates exactly `max_tokens` tokens
    (`min_tokens` defaults to `max_tokens`; both are vLLM extensions).
    """

    prompt: str | Sequence[int] | None = None
    messages: Sequence[Mapping[str, Any]] | None = None
    input_tokens: int | None = None
    max_tokens: int = 16
    min_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    ignore_eos: bool = True


def request_seed(workload_seed: int, index: int) -> int:
    """The sampling seed of request `index`: stable, spread, and within 31 bits."""
    digest = hashlib.sha256(f"farm.request:{workload_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def sampling_params(decoding: Decoding) -> dict[str, Any]:
    """temperature/top_p/top_k to send; greedy (temperature 0) sends no top_p/top_k."""
    if decoding.temperature == 0:
        return {"temperature": 0.0, "top_p": 1.0, "top_k": None}
    return {"temperature": float(decoding.temperature), "top_p": float(decoding.top_p),
            "top_k": decoding.top_k}


# -------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetEntry:
    """One prompt of a JSONL dataset, with its 1-based line: a `prompt` or chat `messages`."""

    line: int
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None   # (role, content) pairs


def dataset_roots(settings: Settings, search_dirs: Sequence[str | Path] = ()) -> list[str]:
    """The folders a dataset may be read from, symlinks resolved: the host's roots
    (FARM_DATASET_ROOTS), the shipped datasets, and the caller's `search_dirs`."""
    extra = [os.path.realpath(d) for d in (*search_dirs, DATASETS_DIR)]
    return list(dict.fromkeys([*settings.dataset_root_paths(), *extra]))


def resolve_dataset(name: str | Path, search_dirs: Sequence[str | Path] = (),
                    settings: Settings | None = None) -> Path:
    """The file a sweep's `dataset` names, on this worker, if the host lets it be read.

    A relative name is looked for under each root (see `dataset_roots`; the
    shipped sample is "prompts-sample.jsonl"), then under the directory holding
    the `workers` package ("workers/datasets/prompts-sample.jsonl" from a
    checkout); an absolute one is taken as is. Symlinks and `..` are resolved
    before the file must lie under a root: a sweep is anyone's text, and an
    openai run sends its prompts to a server the sweep chose. Every refusal has
    one message, so it never tells what exists on the host.
    """
    settings = settings or load_settings()
    roots = dataset_roots(settings, search_dirs)
    path = Path(name).expanduser()
    bases = [Path()] if path.is_absolute() else [*map(Path, roots), DATASETS_DIR.parents[1]]
    for base in bases:
        resolved = os.path.realpath(base / path)
        if inside_roots(resolved, roots) and os.path.isfile(resolved):
            return Path(resolved)
    raise PromptDatasetError(name, [(None, (
        f"not a dataset this worker ({socket.gethostname()}) reads: it reads prompt files "
        f"only from under its dataset roots ({', '.join(roots)}; FARM_DATASET_ROOTS): fix "
        "the workload's `dataset`, or ask the host's admin to put the file under a root"))])


def _parse_entry(value: Any) -> tuple[DatasetEntry | None, str | None]:
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    has_prompt, has_messages = "prompt" in value, "messages" in value
    if has_prompt and has_messages:
        return None, 'give either "prompt" or "messages", not both'
    if has_prompt:
        prompt = value["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            return None, '"prompt" must be a non-empty string'
        return DatasetEntry(0, prompt=prompt), None
    if has_messages:
        messages = value["messages"]
        if not isinstance(messages, list) or not messages:
            return None, '"messages" must be a non-empty list of {"role", "content"} objects'
        pairs = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                return None, f"messages[{i}] must be an object with \"role\" and \"content\""
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not role:
                return None, f'messages[{i}]: "role" must be a non-empty string'
            if not isinstance(content, str):
                return None, f'messages[{i}]: "content" must be a string'
            pairs.append((role, content))
        if not pairs[-1][1].strip():
            return None, "the last message must have some content"
        return DatasetEntry(0, messages=tuple(pairs)), None
    return None, 'needs "prompt" (a string) or "messages" (a list of {"role", "content"})'


def load_dataset(path: str | Path) -> list[DatasetEntry]:
    """Read and check a JSONL dataset. Raises `PromptDatasetError` listing every bad line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PromptDatasetError(path, [(None, f"cannot read the file: {exc}")]) from None
    entries: list[DatasetEntry] = []
    problems: list[tuple[int | None, str]] = []
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append((number, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        entry, problem = _parse_entry(value)
        if problem:
            problems.append((number, problem))
        else:
            entries.append(DatasetEntry(number, entry.prompt, entry.messages))
    if problems:
        raise PromptDatasetError(path, problems)
    if not entries:
        raise PromptDatasetError(path, [(None, "no prompts in the file")])
    return entries


# ------------------------------------------------------------------- tokenizer


def load_tokenizer(source: str | Path, *, revision: str | None = None,
                   local_files_only: bool = True):
    """The model's tokenizer from a local directory (or the local hub cache), never the network.

    `HF_HUB_OFFLINE=1` is honoured by the hub library as well.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise WorkloadError("transformers is not installed: install farm[engines] "
                            "(transformers, tokenizers) to tokenize prompts") from None
    try:
        return AutoTokenizer.from_pretrained(str(source), revision=revision,
                                             local_files_only=local_files_only)
    except Exception as exc:  # vendor boundary: OSError, ValueError, HF hub errors…
        raise WorkloadError(f"cannot load the tokenizer of {str(source)!r} from local files: "
                            f"{type(exc).__name__}: {exc}") from None


# -------------------------------------------------------------------- workload


@dataclass(frozen=True)
class _Item:
    prompt: str | None
    messages: list[dict] | None
    input_tokens: int


class Workload:
    """Requests of one run.

    Args:
        workload: the run's workload spec.
        tokenizer: the model's tokenizer (a transformers tokenizer, see `load_tokenizer`).
        api: "completions" (also offline batch) sends `prompt`; "chat" sends `messages`.
        count_template: count the special tokens / chat template too (default), as
            the engine does; False counts the text alone.
        dataset_policy: with a dataset and `input_tokens`: "truncate" (default) or "bin".
        dataset_dirs: extra directories to look for a relative dataset path in.
    """

    def __init__(self, workload: RunWorkload, tokenizer: Any, *, api: Api = "completions",
                 count_template: bool = True, dataset_policy: Policy = "truncate",
                 dataset_dirs: Sequence[str | Path] = ()):
        if api not in ("completions", "chat"):
            raise ValueError(f"unknown api {api!r}")
        if dataset_policy not in ("truncate", "bin"):
            raise ValueError(f"unknown dataset policy {dataset_policy!r}")
        self.spec = workload
        self.tokenizer = tokenizer
        self.api: Api = api
        self.count_template = count_template
        self.dataset_policy: Policy = dataset_policy
        self.sampling = sampling_params(workload.decoding)
        if api == "chat" and count_template and not getattr(tokenizer, "chat_template", None):
            raise WorkloadError("the chat API counts the chat template, but this tokenizer has "
                                "none: use count_template=False or the completions API")
        self.dataset_path: Path | None = None
        self._entries: list[DatasetEntry] = []
        self._order: list[int] = []
        self._pool: list[_Item] = []
        self._cursor = 0
        self._lengths_seen: list[int] = []
        if self.synthetic:
            if workload.input_tokens is None:
                raise WorkloadError("a synthetic workload needs input_tokens")
            self._chars_per_token = self._measure_chars_per_token()
        else:
            self.dataset_path = resolve_dataset(workload.dataset, dataset_dirs)
            self._entries = load_dataset(self.dataset_path)
            self._order = list(range(len(self._entries)))
            random.Random(f"farm.dataset:{workload.seed}").shuffle(self._order)
            target = workload.input_tokens
            if target is not None and dataset_policy == "bin" and length_bin(target) is None:
                raise PromptDatasetError(self.dataset_path, [(None, (
                    f"input_tokens {target} lies outside the input bins "
                    f"{INPUT_BINS[0]}…{INPUT_BINS[-1]}: use the truncate policy"))])

    # -------------------------------------------------------------- building

    @classmethod
    def from_run(cls, run: RunSpec, tokenizer: Any = None, **kwargs: Any) -> Workload:
        """The workload of a run: its API from the scenario, its tokenizer from the model."""
        api = getattr(run.scenario, "api", "completions")
        if tokenizer is None:
            model = run.model
            tokenizer = load_tokenizer(model.tokenizer or model.source,
                                       revision=None if model.tokenizer else model.revision)
        return cls(run.workload, tokenizer, api=api, **kwargs)

    @classmethod
    def from_dir(cls, workload: RunWorkload, tokenizer_dir: str | Path,
                 **kwargs: Any) -> Workload:
        """The workload with the tokenizer saved in `tokenizer_dir` (a tiny model's, say)."""
        return cls(workload, load_tokenizer(tokenizer_dir), **kwargs)

    @property
    def synthetic(self) -> bool:
        """Whether prompts are generated text (dataset "synthetic") rather than read from a file."""
        return self.spec.dataset == "synthetic"

    @property
    def distinct_prompts(self) -> int | None:
        """How many different prompts this workload has (None: unbounded, synthetic)."""
        if self.synthetic:
            return None
        self._fill_pool(len(self._order) + 1)
        return len(self._pool)

    # -------------------------------------------------------------- requests

    def request(self, index: int) -> PromptRequest:
        """Request number `index` (0, 1, …); the same index always gives the same request."""
        if index < 0:
            raise ValueError("request index must be >= 0")
        item = self._synthetic_item(index) if self.synthetic else self._dataset_item(index)
        output = self.spec.output_tokens
        return PromptRequest(
            prompt=item.prompt,
            messages=item.messages,
            input_tokens=item.input_tokens,
            max_tokens=output,
            min_tokens=output,
            temperature=self.sampling["temperature"],
            top_p=self.sampling["top_p"],
            top_k=self.sampling["top_k"],
            seed=None if self.sampling["temperature"] == 0 else request_seed(self.spec.seed,
                                                                             index),
            ignore_eos=True,
        )

    def prompts(self, n: int, start: int = 0) -> list[PromptRequest]:
        """Requests start … start+n−1. Use a separate range (e.g. start=n) for warm-up."""
        return [self.request(i) for i in range(start, start + n)]

    def iter_requests(self, start: int = 0) -> Iterator[PromptRequest]:
        """An endless stream of requests from `start` on (server scenarios)."""
        index = start
        while True:
            yield self.request(index)
            index += 1

    # ------------------------------------------------------------- counting

    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=special))

    def _decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)
        return text.rstrip("\ufffd")   # a cut inside a multi-byte character

    def _render(self, messages: list[dict]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as exc:  # jinja2 missing, template errors
            raise WorkloadError(f"cannot apply the tokenizer's chat template: "
                                f"{type(exc).__name__}: {exc}") from None

    def count_tokens(self, prompt: str | None = None,
                     messages: list[dict] | None = None) -> int:
        """Input tokens of a prompt or a chat under this workload's counting method."""
        if (prompt is None) == (messages is None):
            raise ValueError("give exactly one of prompt / messages")
        if prompt is not None:
            return len(self._encode(prompt, self.count_template))
        if self.count_template:
            return len(self._encode(self._render(messages), False))
        return sum(len(self._encode(m["content"], False)) for m in messages)

    def _counter(self, head: list[dict] | None = None,
                 role: str = "user") -> Callable[[str], int]:
        """Count of a text placed as the prompt, or as the last message after `head`."""
        if self.api == "completions":
            return lambda text: len(self._encode(text, self.count_template))
        head = head or []
        if self.count_template:
            return lambda text: len(self._encode(
                self._render([*head, {"role": role, "content": text}]), False))
        head_count = sum(len(self._encode(m["content"], False)) for m in head)
        return lambda text: head_count + len(self._encode(text, False))

    # ------------------------------------------------------------ exact fit

    def _fit(self, source: str, target: int, count: Callable[[str], int],
             ids: list[int] | None = None) -> str | None:
        """A prefix of `source` (or one with a short filler ending) counting exactly `target`.

        None when `source` is too short, or `target` is below the count of an
        empty text. Raises WorkloadError when no exact text is found.
        """
        empty = count("")
        if target < empty:
            return None
        if target == empty:
            return ""
        if ids is None:
            ids = self._encode(source, False)
        # 1. token cut, moved by the error until exact
        k, seen = target - empty, set()
        for _ in range(16):
            k = max(0, min(k, len(ids)))
            if k in seen:
                break
            seen.add(k)
            text = self._decode(ids[:k])
            got = count(text)
            if got == target:
                return text
            if got < target and k == len(ids):
                return None   # all of the source is not enough
            k += target - got
        # 2. bisect on characters: lo counts < target, hi counts >= target
        if count(source) < target:
            return None
        lo, hi = 0, len(source)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(source[:mid]) < target:
                lo = mid
            else:
                hi = mid
        if count(source[:hi]) == target:
            return source[:hi]
        # 3. one character added two tokens: try short endings on nearby prefixes
        for cut in range(lo, max(0, lo - 32) - 1, -1):
            for filler in _FILLERS:
                text = source[:cut] + filler
                if count(text) == target:
                    return text
        raise WorkloadError(f"cannot build a text of exactly {target} tokens with this "
                            f"tokenizer (nearest: {count(source[:lo])} and "
                            f"{count(source[:hi])})")

    # ------------------------------------------------------------- synthetic

    def _measure_chars_per_token(self) -> float:
        sample = self._words(random.Random("farm.calibrate"), 2000)
        return len(sample) / max(1, len(self._encode(sample, False)))

    @staticmethod
    def _words(rng: random.Random, chars: int) -> str:
        """Sentences of seeded random words, at least `chars` characters long."""
        sentences, length = [], 0
        while length < chars:
            words = rng.choices(SYNTHETIC_WORDS, k=rng.randint(6, 18))
            sentence = " ".join(words).capitalize() + rng.choice(".........?!")
            sentences.append(sentence)
            length += len(sentence) + 1
        return " ".join(sentences)

    def _synthetic_item(self, index: int) -> _Item:
        target = self.spec.input_tokens
        assert target is not None
        count = self._counter()
        empty = count("")
        if target < empty:
            raise WorkloadError(
                f"input_tokens {target} is shorter than what the {self.api} API adds "
                f"around any text with this tokenizer ({empty} tokens: special tokens"
                f"{' and chat template' if self.api == 'chat' else ''})")
        rng = random.Random(f"farm.synthetic:{self.spec.seed}:{index}")
        want = (target - empty + 16) * self._chars_per_token * 1.25 + 64
        source = self._words(rng, int(want))
        for _ in range(8):
            text = self._fit(source, target, count)
            if text is not None:
                return self._item(text, target)
            source += " " + self._words(rng, len(source))   # too short: double it
        raise WorkloadError(f"could not generate {target} tokens of synthetic text")

    def _item(self, text: str, input_tokens: int,
              head: list[dict] | None = None, role: str = "user") -> _Item:
        if self.api == "chat":
            return _Item(None, [*(head or []), {"role": role, "content": text}], input_tokens)
        return _Item(text, None, input_tokens)

    # --------------------------------------------------------------- dataset

    def _entry_shape(self, entry: DatasetEntry) -> tuple[str, list[dict], str]:
        """(text to cut, messages before it, role of the text) for this API."""
        if self.api == "completions":
            if entry.prompt is not None:
                return entry.prompt, [], "user"
            return "\n\n".join(content for _, content in entry.messages or ()), [], "user"
        if entry.prompt is not None:
            return entry.prompt, [], "user"
        messages = [{"role": r, "content": c} for r, c in entry.messages or ()]
        return messages[-1]["content"], messages[:-1], messages[-1]["role"]

    def _process(self, entry: DatasetEntry) -> _Item | None:
        text, head, role = self._entry_shape(entry)
        count = self._counter(head, role)
        length = count(text)
        self._lengths_seen.append(length)
        target = self.spec.input_tokens
        if target is None or length == target:
            return self._item(text, length, head, role)
        if self.dataset_policy == "bin":
            if length_bin(length) == length_bin(target):
                return self._item(text, length, head, role)
            return None
        if length < target:
            return None
        cut = self._fit(text, target, count)
        return None if cut is None else self._item(cut, target, head, role)

    def _fill_pool(self, wanted: int) -> None:
        while len(self._pool) < wanted and self._cursor < len(self._order):
            entry = self._entries[self._order[self._cursor]]
            self._cursor += 1
            item = self._process(entry)
            if item is not None:
                self._pool.append(item)

    def _dataset_item(self, index: int) -> _Item:
        self._fill_pool(index + 1)
        if not self._pool:
            target = self.spec.input_tokens
            seen = self._lengths_seen
            rule = (f"at least {target} tokens (policy truncate)"
                    if self.dataset_policy == "truncate"
                    else f"in input bin {bin_name(target or 0)} (policy bin)")
            raise PromptDatasetError(self.dataset_path or self.spec.dataset, [(None, (
                f"no prompt of {rule} for this tokenizer: {len(seen)} prompts, "
                f"{min(seen)}…{max(seen)} tokens"))])
        if index < len(self._pool):
            return self._pool[index]
        return self._pool[index % len(self._pool)]   # all read: cycle
