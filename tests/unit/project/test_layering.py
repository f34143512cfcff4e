"""DESIGN.md's layering, checked by import-linter (contracts in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: run scripts/setup --dev"
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is a dev dependency: run scripts/setup --dev"
    proc = subprocess.run([ruff, "check", "farm_contract", "farm", "workers", "tasks", "tests",
                           "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_allowlist_contract_follows_indirect_chains(tmp_path):
    """A module reached only through an allowed one is still checked, and named
    with the chain that reaches it."""
    (tmp_path / "front").mkdir()
    (tmp_path / "front" / "__init__.py").write_text("import middle.helper\n")
    (tmp_path / "middle").mkdir()
    (tmp_path / "middle" / "__init__.py").write_text("")
    (tmp_path / "middle" / "helper.py").write_text("import json\nimport yaml\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_packages =\n    front\n    middle\n"
        "include_external_packages = True\n"
        "contract_types =\n    allowlist: tests.allowlist_contract.AllowListContract\n\n"
        "[importlinter:contract:only-middle]\nname = front reaches only middle\n"
        "type = allowlist\nsource_modules =\n    front\nallowed_modules =\n    middle\n")
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run([lint, "--no-cache", "--config", ".importlinter"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "yaml is not allowed: front -> middle.helper -> yaml" in proc.stdout
    assert "json" not in proc.stdout.split("Broken contracts")[-1]


def _cycles(graph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_back_at_run_time():
    """Floors, not loops: no chain of run-time imports among the project's modules
    (farm/ first of all) comes back to where it started. Imports under
    TYPE_CHECKING are annotations only and are left out."""
    import grimp

    graph = grimp.build_graph("farm", "farm_contract", "workers", "tasks",
                              exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_a_class_name_names_one_class():
    """Two classes of one name (FarmError in farm/ and workers/, three Columns) make
    a reader check which one an import means; each name is defined once."""
    import ast

    defined: dict[str, list[str]] = {}
    for package in ("farm", "farm_contract", "tasks", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.ClassDef):
                    defined.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    twice = {name: where for name, where in defined.items() if len(where) > 1}
    assert not twice, twice
