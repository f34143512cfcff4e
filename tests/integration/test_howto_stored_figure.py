"""docs/architecture.md "How to extend it", a stored figure, executed: in a copy of
the source tree, the three documented edits — the field on `LoadPointResult`
(farm_contract/records.py, declared with `figure`), its computation in
workers/metrics.py, one Alembic migration adding its column — and then a sweep
through `farmctl run` (private Redis, worker, recorder, SQLite store): the new
figure is in the store's `load_points` table and in `farmctl results --format
json`, with no other file changed."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
FIELD = ('    mean_input_tokens: float | None = figure(\n'
         '        "mean prompt tokens of a successful request", "tokens", None)\n')
COMPUTED = ('        mean_input_tokens=(tallies["input_tokens"] / len(ok) if ok else None),\n')
MIGRATION = '''"""mean_input_tokens on load points (the how-to-add test's figure)."""
import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("load_points") as batch:
        batch.add_column(sa.Column("mean_input_tokens", sa.Float(), nullable=True))


def downgrade():
    op.drop_column("load_points", "mean_input_tokens")
'''
SWEEP = """
name = "stored-figure"
[[model]]
id = "m-1b"
source = "org/m-1B"
[hardware]
gpu = ["sim:L4"]
[engine]
kind = "sim"
[[scenario]]
kind = "batch"
num_prompts = 8
warmup_prompts = 1
[workload]
input_tokens = [64]
output_tokens = [8]
[measurement]
idle_baseline_s = 0.2
min_steady_s = 0.1
cooldown_timeout_s = 0
"""


def _insert_before(path: Path, anchor: str, text: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count(anchor) == 1, f"{path}: anchor {anchor!r} not found once"
    path.write_text(source.replace(anchor, text + anchor), encoding="utf-8")


def test_a_stored_figure_is_a_field_its_computation_and_a_migration(tmp_path):
    tree = tmp_path / "src"
    for package in ("farm_contract", "farm", "workers", "tasks"):
        shutil.copytree(ROOT / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    _insert_before(tree / "farm_contract" / "records.py",
                   '    notes: list[str] = Field([], description="the engine\'s remarks on '
                   'this load point")', FIELD)
    _insert_before(tree / "workers" / "metrics.py", "        notes=list(outcome.notes),\n",
                   COMPUTED)
    versions = tree / "farm" / "store" / "migrations" / "versions"
    head = max(re.search(r'^revision: str = "(\d+)"', p.read_text(), re.M).group(1)
               for p in versions.glob("0*.py"))
    revision = f"{int(head) + 1:04d}"
    (versions / f"{revision}_howto_mean_input_tokens.py").write_text(
        MIGRATION.format(revision=revision, head=head))

    (tmp_path / "sweep.toml").write_text(SWEEP)
    db = tmp_path / "farm.db"
    env = {**os.environ, "PYTHONPATH": str(tree), "FARM_DB_URL": f"sqlite:///{db}",
           "FARM_HOME": str(tmp_path / ".farm")}
    for key in ("FARM_BROKER_URL", "FARM_ENERGY_SOURCES"):
        env.pop(key, None)
    farmctl = [sys.executable, "-m", "farm.cli"]
    done = subprocess.run([*farmctl, "run", "--quiet", "sweep.toml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT mean_input_tokens FROM load_points").fetchall()
    assert stored and all(value == pytest.approx(64, abs=1) for (value,) in stored)
    shown = subprocess.run([*farmctl, "results", "stored-figure", "--format", "json"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "mean_input_tokens" in json.dumps(json.loads(shown.stdout))
