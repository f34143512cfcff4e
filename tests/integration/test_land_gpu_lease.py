"""benchmarks/land_gpu_lease.py: a collect's gpu.tgz becomes committed data, nothing lost.

The lease stores here are made from the committed partial batch export (2 runs
measured on an H100): imported into SQLite, then edited to stand for a lease
that measured one run itself and never had the other.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
PARTIAL = ROOT / "docs" / "data" / "vllm-batch-h100-partial"
MEASURED, NEVER_HAD = "12fdf556ca49954f253c8b82", "2ba7b86441898fffaed8c3b7"
SCRIPT = ROOT / "benchmarks" / "land_gpu_lease.py"


def _farmctl(db: Path, *args: str) -> None:
    env = {**os.environ, "FARM_DB_URL": f"sqlite:///{db}", "FARM_OWNER": "gpu-lab"}
    subprocess.run([sys.executable, "-m", "farm.cli", *args], cwd=ROOT, env=env, check=True,
                   capture_output=True)


def _lease(tmp: Path, *, measured: bool) -> Path:
    """A collect's output folder: gpu.tgz (store, printed output, a long log) and a
    compile cache. `measured`: the store measured MEASURED itself and lacks NEVER_HAD;
    else it only holds what it imported."""
    lease = tmp / "lease"
    lease.mkdir()
    db = lease / "farm-gpu.db"
    _farmctl(db, "import", str(PARTIAL / "export"))
    if measured:
        with sqlite3.connect(db) as con:
            tables = [name for (name,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")
                if any(col[1] == "run_id" for col in con.execute(f"PRAGMA table_info({name})"))]
            for table in tables:
                con.execute(f"DELETE FROM {table} WHERE run_id = ?", (NEVER_HAD,))
            con.execute("UPDATE runs SET status = 'queued' WHERE id = ?", (NEVER_HAD,))
            con.execute("UPDATE results SET imported_from = NULL")
    shutil.copy(PARTIAL / "gpu-before.csv", lease / "gpu-before.csv")
    (lease / "batch-run.txt").write_text("vllm-gpu-batch-8b: 28 run(s)\n")
    (lease / "logs" / "sweep").mkdir(parents=True)
    log = lease / "logs" / "sweep" / "worker.log"
    log.write_text("early line\n" + "x" * 300_000 + "\nlast\n")
    files = tmp / "files"
    files.mkdir()
    with tarfile.open(files / "gpu.tgz", "w:gz") as tar:
        for path in lease.iterdir():
            tar.add(path, arcname=path.name)
    (files / "vllm-cache.tgz").write_bytes(b"cache")
    return files


def _data(tmp: Path, *, bare: bool = False) -> Path:
    """docs/data with the committed partial export: in its folder's export/, or
    `bare`, the folder being the export itself (as the first GPU leases' are)."""
    data = tmp / "data"
    if bare:
        shutil.copytree(PARTIAL / "export", data / "vllm-batch-h100-partial")
    else:
        shutil.copytree(PARTIAL, data / "vllm-batch-h100-partial")
    return data


def _land(files: Path, data: Path, tmp: Path, *more: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(files), "--data", str(data),
                           "--cache-dir", str(tmp / "cache"), *more],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)


def _with_results(export: Path) -> set[str]:
    table = pq.read_table(export / "runs.parquet", columns=["run_id", "result_json"])
    return {run for run, result in zip(table.column("run_id").to_pylist(),
                                       table.column("result_json").to_pylist(), strict=True)
            if result}


@pytest.mark.parametrize("bare", [False, True], ids=["export-folder", "bare-folder"])
def test_a_lease_lands_beside_the_committed_runs_it_never_had(tmp_path, bare):
    files, data = _lease(tmp_path, measured=True), _data(tmp_path, bare=bare)
    before = sorted(p.read_bytes() for p in (data / "vllm-batch-h100-partial").rglob("*")
                    if p.is_file())
    proc = _land(files, data, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    landed = data / "vllm-batch"
    manifest = json.loads((landed / "export" / "manifest.json").read_text())
    assert manifest["sweep"]["name"] == "vllm-gpu-batch-8b"
    # The run the lease measured and the committed one it never had, both kept.
    assert _with_results(landed / "export") == {MEASURED, NEVER_HAD}
    assert "1 run(s) measured by this lease, 2 with a result" in proc.stdout
    assert (landed / "report" / "index.html").is_file()
    results = (landed / "results.txt").read_text()
    assert "max_num_seqs=16" in results and "max_num_seqs=64" in results
    assert len(json.loads((landed / "results.json").read_text())) >= 2
    # The committed partial folder is named as superseded, never touched.
    assert "vllm-batch-h100-partial holds a part of it" in proc.stdout
    assert sorted(p.read_bytes() for p in (data / "vllm-batch-h100-partial").rglob("*")
                  if p.is_file()) == before
    printed = data / "gpu-leases" / "2026-12-07-h100-80gb"
    assert (printed / "batch-run.txt").read_text().startswith("vllm-gpu-batch-8b")
    log = (printed / "logs" / "sweep" / "worker.log").read_text()
    assert log.startswith("[the first ") and log.endswith("last\n") and "early" not in log
    assert (tmp_path / "cache" / "vllm-cache.tgz").read_bytes() == b"cache"


def test_a_lease_that_measured_nothing_lands_nothing(tmp_path):
    files, data = _lease(tmp_path, measured=False), _data(tmp_path)
    proc = _land(files, data, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to land" in proc.stdout and "on hardware" in proc.stdout
    assert sorted(p.name for p in data.iterdir()) == ["vllm-batch-h100-partial"]


def test_a_folder_without_gpu_tgz_is_refused_in_one_line(tmp_path):
    proc = _land(tmp_path, _data(tmp_path), tmp_path)
    assert proc.returncode != 0
    assert "gpu.tgz: no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_folder_holding_another_sweeps_export_is_not_overwritten(tmp_path):
    files, data = _lease(tmp_path, measured=True), _data(tmp_path)
    other = data / "vllm-quick-batch-h100"
    shutil.copytree(PARTIAL.parent / "vllm-quick-batch-h100", other)
    before = (other / "export" / "runs.parquet").read_bytes()
    proc = _land(files, data, tmp_path, "--folder", "vllm-gpu-batch-8b=vllm-quick-batch-h100")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "holds the export of sweep 'vllm-gpu-quick-batch-8b'" in proc.stdout
    assert (other / "export" / "runs.parquet").read_bytes() == before
