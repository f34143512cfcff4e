"""One root for the coordinator's errors, each with its exit code; one handler in farmctl."""

from __future__ import annotations

import ast

import pytest

from farm.cli import _describe
from farm.embedded import EmbeddedRedisError
from farm.errors import ExitCode, FarmError, NoMatch, NotFound
from farm.local import LocalRunError
from farm.report.compare import CompareError
from farm.report.dataset import DatasetError, DependencyError
from farm.report.points import SweepNotFound
from farm.report.recommendation import RecommendError
from farm.report.report import NoMeasuredPoints
from farm.report.timeline import UnknownRun
from farm.store.errors import SchemaError
from farm.sweep_file import Problem, SpecError
from farm_contract.routing import UnknownGpuError
from farm_contract.settings import SettingsError
from tasks.broker_state import BrokerUnavailable
from tests.paths import ROOT


@pytest.mark.parametrize(("error", "code"), [
    (SpecError("sweep.toml", [Problem(field="name", message="missing", line=1)]),
     ExitCode.INVALID_INPUT),
    (SchemaError("no schema"), ExitCode.STORE_ERROR),
    (EmbeddedRedisError("no redis-server"), ExitCode.INTERNAL),
    (LocalRunError("the recorder exited"), ExitCode.INTERNAL),
    (DatasetError("no manifest.json"), ExitCode.INVALID_INPUT),
    (DependencyError("no pyarrow"), ExitCode.INTERNAL),
    (NoMeasuredPoints("nothing measured"), ExitCode.NOT_FOUND),
    (CompareError("simulated vs measured"), ExitCode.INVALID_INPUT),
    (RecommendError("no such model", not_found=True), ExitCode.NOT_FOUND),
    (RecommendError("bad --rate"), ExitCode.INVALID_INPUT),
    (UnknownRun("no run abc"), ExitCode.INVALID_INPUT),
    (SweepNotFound("no sweep x"), ExitCode.NOT_FOUND),
    (NotFound("no sweep y"), ExitCode.NOT_FOUND),
    (NoMatch("nothing meets"), ExitCode.NO_MATCH),
])
def test_coordinator_errors_share_one_root_with_their_exit_code(error, code):
    assert isinstance(error, FarmError)
    assert error.exit_code == code
    assert _describe(error) == (str(error), code)


@pytest.mark.parametrize(("error", "code"), [
    (SettingsError("FARM_X='y' is not a number"), ExitCode.INVALID_INPUT),
    (UnknownGpuError("Voodoo5"), ExitCode.INVALID_INPUT),
    (BrokerUnavailable("broker unavailable: refused"), ExitCode.BROKER_ERROR),
])
def test_errors_outside_farm_carry_the_same_codes(error, code):
    assert not isinstance(error, FarmError)      # contract and tasks import no farm
    assert _describe(error) == (str(error), code)


def test_library_and_unexpected_errors():
    import sqlite3

    import redis

    assert _describe(sqlite3.OperationalError("unable to open\nmore")) == (
        "store unavailable: unable to open", ExitCode.STORE_ERROR)
    assert _describe(redis.ConnectionError("refused")) == (
        "broker unavailable: refused", ExitCode.BROKER_ERROR)
    message, code = _describe(KeyError("x"))
    assert code == ExitCode.INTERNAL and "FARM_DEBUG=1" in message


def test_the_cli_matches_no_class_names():
    tree = ast.parse((ROOT / "farm" / "cli.py").read_text())
    names = [node for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr in ("__name__", "__module__")
             and isinstance(node.value, ast.Call)]
    # type(exc).__name__ only in the message of an unexpected error, never compared
    compared = [node for node in ast.walk(tree) if isinstance(node, ast.Compare)
                and any(isinstance(side, ast.Attribute) and side.attr in ("__name__",
                                                                         "__module__")
                        for side in [node.left, *node.comparators])]
    assert not compared and len(names) <= 1


def _imported(path) -> set[str]:
    imports = [node for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Import | ast.ImportFrom)]
    return {(node.module if isinstance(node, ast.ImportFrom) else node.names[0].name)
            for node in imports}


def test_exit_code_lives_in_the_dependency_free_module():
    assert _imported(ROOT / "farm_contract" / "exitcodes.py") <= {"__future__", "enum"}
    assert _imported(ROOT / "farm" / "errors.py") <= {"__future__", "farm_contract.exitcodes"}
    assert "from farm.cli" not in (ROOT / "farm" / "local.py").read_text()


def test_the_handler_needs_no_broker_client():
    """A core-only host (no redis package): errors still get their one line and code."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['redis'] = None\n"
            "from farm.cli import _describe\n"
            "from farm.sweep_file import Problem, SpecError\n"
            "from farm_contract.settings import SettingsError\n"
            "assert _describe(SettingsError('bad'))[1] == 2\n"
            "assert _describe(SpecError('s.toml', [Problem('name', 'missing')]))[1] == 2\n"
            "assert 'tasks.broker_state' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


# The processes' entry points, and every error class that carries a code.
EXIT_PATHS = ("farm/cli.py", "farm/local.py", "tasks/worker_main.py", "tasks/app.py",
              "farm/report/dataset.py")
CODE_PACKAGES = ("farm", "farm_contract", "tasks")


def _bare_exit_codes(path) -> list[str]:
    """Bare ints given as an exit status in `path`: `sys.exit(2)`, `SystemExit(2)`,
    `exit_code = 2`, `… or 0` in a return, or `return 2` from a function annotated to
    return an exit code (int, ExitCode)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def bare(node) -> bool:
        if isinstance(node, ast.BoolOp | ast.IfExp):
            parts = node.values if isinstance(node, ast.BoolOp) else [node.body, node.orelse]
            return any(bare(part) for part in parts)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "int":
            return any(bare(arg) for arg in node.args)
        return isinstance(node, ast.Constant) and type(node.value) is int

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in ("exit", "SystemExit", "_exit") and node.args and bare(node.args[0]):
                found.append(f"{path}:{node.lineno}")
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "exit_code"
                                                for t in node.targets) and bare(node.value):
            found.append(f"{path}:{node.lineno}")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                ast.unparse(node.returns or ast.Constant(None)) in ("int", "ExitCode"):
            found += [f"{path}:{ret.lineno}" for ret in ast.walk(node)
                      if isinstance(ret, ast.Return) and ret.value is not None
                      and bare(ret.value)]
    return found


def test_no_bare_exit_code():
    paths = {ROOT / p for p in EXIT_PATHS}
    # exit_code class attributes anywhere on the coordinator, contract and tasks side
    paths |= {p for package in CODE_PACKAGES for p in (ROOT / package).rglob("*.py")
              if "exit_code" in p.read_text(encoding="utf-8")}
    found = [hit for path in sorted(paths) for hit in _bare_exit_codes(path)]
    assert not found, "name the code (farm_contract.exitcodes.ExitCode):\n" + "\n".join(found)


def test_the_check_sees_bare_codes(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nclass E(Exception):\n    exit_code = 4\n"
                      "def main() -> int:\n    if x:\n        return 2\n    return int(y or 0)\n"
                      "sys.exit(3)\nraise SystemExit(ExitCode.OK)\n")
    assert sorted(int(h.rsplit(":", 1)[1]) for h in _bare_exit_codes(sample)) == [3, 6, 7, 8]
