"""Run statuses live in one place (farm_contract/statuses.py): the store's CHECK
constraints, the wire record and the dataset's description read them from there,
and no module writes a group of statuses out by hand."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

from farm.report.dataset import RUNS
from farm.store.models import ResultRow, RunRow
from farm_contract.records import RunResult
from farm_contract.statuses import (
    PENDING_STATUSES,
    RESULT_STATUSES,
    RUN_STATUSES,
    TERMINAL_STATUSES,
    RunStatus,
)
from tests.paths import ROOT

PACKAGES = ("farm", "farm_contract", "tasks", "workers")
# Where statuses may be spelled as a group: their one place, and the migrations,
# which are history (a migration says what the schema was when it was written).
OWN_PLACE = ("farm_contract/statuses.py", "farm/store/migrations/versions/")
# A Literal the wire record must spell out (checked against RESULT_STATUSES below).
LITERALS = {"farm_contract/records.py": [("succeeded", "failed")]}


def test_the_groups_come_from_the_one_list():
    assert tuple(s.value for s in RunStatus) == RUN_STATUSES
    assert set(TERMINAL_STATUSES) | set(PENDING_STATUSES) == set(RUN_STATUSES)
    assert not set(TERMINAL_STATUSES) & set(PENDING_STATUSES)
    assert set(RESULT_STATUSES) <= set(TERMINAL_STATUSES)


def test_the_store_the_wire_and_the_dataset_read_them():
    checks = {t.name: str(getattr(c, "sqltext", "")) for t in (RunRow.__table__,
                                                                ResultRow.__table__)
              for c in t.constraints if "status IN" in str(getattr(c, "sqltext", ""))}
    assert checks == {"runs": f"status IN {RUN_STATUSES}",
                      "results": f"status IN {RESULT_STATUSES}"}
    assert get_args(RunResult.model_fields["status"].annotation) == RESULT_STATUSES
    assert RUNS.column("status").description == ", ".join(f"`{s}`" for s in RUN_STATUSES)


def _status_groups(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    """Tuples, lists and sets of two or more status strings, and SQL `IN ('…', '…')`
    lists of them, in `path`: (line, the statuses)."""
    text = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Constant) and e.value in RUN_STATUSES for e in node.elts):
            found.append((node.lineno, tuple(e.value for e in node.elts)))
    names = "|".join(RUN_STATUSES)
    for match in re.finditer(rf"IN \(\s*'({names})'\s*,[^)]*\)", text):
        found.append((text.count("\n", 0, match.start()) + 1,
                      tuple(re.findall(rf"'({names})'", match.group(0)))))
    return found


def test_no_group_of_statuses_is_written_by_hand():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(OWN_PLACE):
                continue
            allowed = LITERALS.get(rel, [])
            found += [f"{rel}:{line} {group}" for line, group in _status_groups(path)
                      if group not in allowed]
    assert not found, ("name the group from farm_contract.statuses (RunStatus, "
                       "PENDING_STATUSES, …):\n" + "\n".join(found))


def test_the_check_sees_groups(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('a = ("queued", "running")\nb = ["failed", "cancelled"]\n'
                      'c = ("queued",)\nd = ("queued", "other")\n'
                      'e = "WHERE status IN (\'running\', \'failed\')"\n')
    assert _status_groups(sample) == [(1, ("queued", "running")), (2, ("failed", "cancelled")),
                                      (5, ("running", "failed"))]
