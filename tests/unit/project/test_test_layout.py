"""The tests' own layout (docs/architecture.md "Tests"): tests/unit/ mirrors the source
packages, its packages never shadow them, and tests/engines/ is the `engines` mark."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import farm
import farm_contract.settings
import tasks
import workers
from tests.paths import ROOT

UNIT = ROOT / "tests" / "unit"
# Tests of no one source package: the layering, packaging, deployment files, docs how-tos.
CROSS_CUTTING = UNIT / "project"


def _test_folders() -> list[Path]:
    return sorted(path.parent for path in UNIT.rglob("test_*.py"))


def test_unit_test_folders_mirror_the_source_packages():
    strays = sorted({str(folder.relative_to(UNIT)) for folder in _test_folders()
                     if folder != CROSS_CUTTING
                     and not (ROOT / folder.relative_to(UNIT)).is_dir()})
    assert not strays, f"tests/unit/ folders with no source package of that path: {strays}"
    assert not list(UNIT.glob("test_*.py")), "a unit test belongs in its package's folder"


def test_every_test_folder_is_a_package():
    # Without __init__.py a test module would be imported by its bare name, and two
    # test_dispatch.py (farm/, integration/) or a folder named farm/ could collide.
    missing = sorted(str(folder.relative_to(ROOT)) for folder in _test_folders()
                     if not (folder / "__init__.py").is_file())
    assert not missing, f"test folders without __init__.py: {missing}"


def test_the_mirrored_packages_do_not_shadow_the_source():
    assert __name__ == "tests.unit.project.test_test_layout"
    assert importlib.import_module("tests.unit.farm").__name__ == "tests.unit.farm"
    for module in (farm, workers, tasks, farm_contract.settings):
        path = Path(module.__file__).resolve()
        assert ROOT / "tests" not in path.parents, f"{module.__name__} imported from {path}"


def _collected(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: none selected
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_the_engines_mark_is_exactly_tests_engines():
    paths = ["tests/engines", "tests/unit/farm/test_cli.py"]
    engines = _collected("-m", "engines", *paths)
    others = _collected("-m", "not engines", *paths)
    assert engines
    assert all(node.startswith("tests/engines/") for node in engines)
    assert others
    assert all(node.startswith("tests/unit/") for node in others)


def test_marks_must_be_declared():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert "--strict-markers" in options["ini_options"]["addopts"].split()
    declared = {line.split(":")[0] for line in options["ini_options"]["markers"]}
    assert {"gpu", "integration", "engines", "slow"} <= declared
