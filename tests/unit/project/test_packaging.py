"""Each side installs only its side: the extras, the images, and the processes
themselves run with the other side's packages missing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib

from tests.paths import ROOT

SQL_AND_UI = {"sqlmodel", "sqlalchemy", "alembic", "psycopg", "flower", "rich"}
GPU_SIDE = {"nvidia-ml-py", "aiohttp", "torch", "vllm", "codecarbon"}


def _extras() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]


def _names(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Distribution names an extra brings, following farm[...] self-references."""
    names: set[str] = set()
    for req in _extras()[extra]:
        name = re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower()
        if name == "farm":
            inner = req[req.index("[") + 1:req.index("]")].split(",")
            for other in inner:
                if other not in seen:
                    names |= _names(other, seen | {extra})
        else:
            names.add(name)
    return names


def test_the_worker_extra_brings_no_sql_driver_and_no_flower():
    assert not _names("worker") & SQL_AND_UI
    assert {"celery", "nvidia-ml-py", "aiohttp"} <= _names("worker")


def test_the_coordinator_extra_brings_no_gpu_or_engine_package():
    assert not _names("coordinator") & GPU_SIDE
    assert not _names("report") & GPU_SIDE


def test_embedded_runs_both_sides_on_one_machine():
    assert _names("coordinator") | _names("worker") <= _names("embedded")


def test_images_install_only_their_side():
    coordinator = (ROOT / "deploy" / "Dockerfile").read_text()
    worker = (ROOT / "deploy" / "worker.Dockerfile").read_text()
    assert "COPY workers" not in coordinator
    assert re.search(r"pip install '\.\[coordinator[,\]]", coordinator)
    assert re.search(r"pip install '\.\[worker[,\]]", worker)
    assert "coordinator" not in re.search(r"pip install '([^']*)'", worker).group(1)


def _run_without(blocked: set[str], code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing any of `blocked` fails,
    as it would where the package is not installed."""
    prelude = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {sorted(blocked)!r}
        class Missing(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
                return None
        sys.meta_path.insert(0, Missing())
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_worker_probes_its_gpus_without_sql_flower_or_rich():
    proc = _run_without(SQL_AND_UI, """
        import sys
        from tasks.worker_main import main
        sys.exit(main(["--probe", "--sim", "H100"]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert '"queues": ["sim.h100-80gb.x1"]' in proc.stdout


def test_the_coordinator_loads_without_nvml_aiohttp_or_torch():
    proc = _run_without({"pynvml", "aiohttp", "torch", "vllm", "workers"}, """
        import farm.cli, farm.coordinator, farm.local, farm.store.repository, tasks.record
        import farm.report.report, farm.report.recommend, farm.report.recommend_text
        import farm.report.export
    """)
    assert proc.returncode == 0, proc.stderr
