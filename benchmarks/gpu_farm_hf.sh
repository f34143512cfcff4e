#!/usr/bin/env bash
# The hf engine on a real NVIDIA GPU through the whole farm (docs/engines.md):
# `farmctl run examples/hf-gpu.toml` — private Redis, NVML worker, recorder,
# SQLite store — after a short smoke sweep of the same path. Writes to OUT_DIR:
# run.txt and smoke.txt (what farmctl printed), results.json, farm-gpu.db (the
# store: both sweeps, per-request records, power timelines) and extras.tar.gz
# (GPU, worker probe, smoke sweep, the farm's logs).
#
#   benchmarks/gpu_farm_hf.sh OUT_DIR [PYTHON]
#
# PYTHON (default .venv/bin/python) must have farm's dependencies and torch.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1"); py=${2:-.venv/bin/python}
work=$(mktemp -d)
mkdir -p "$out"
export FARM_DB_URL="sqlite:///$work/farm-gpu.db" PYTHONUNBUFFERED=1
farmctl() { "$py" -m farm.cli "$@"; }
keep() {    # whatever happened: the store (a consistent copy) and the logs
    [ -e "$work/farm-gpu.db" ] && "$py" -c 'import sqlite3, sys
sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' "$work/farm-gpu.db" "$out/farm-gpu.db"
    cp -r .farm/logs "$work/logs" 2>/dev/null || true
    tar -czf "$out/extras.tar.gz" --exclude='farm-gpu.db*' -C "$work" . 2>/dev/null || true
}
trap keep EXIT

model=.farm/models/llama-0.67b
[ -e "$model/config.json" ] || "$py" -m workers.tinymodel "$model" --hidden 2048 --layers 16 --heads 16
nvidia-smi --query-gpu=name,driver_version,power.limit,temperature.gpu --format=csv | tee "$work/gpu.csv"
farmctl worker --probe | tee "$work/probe.json"

# Smoke: one short run of the same path (its 1 s bound makes it a smoke test, labelled so).
sed -e 's/^name = .*/name = "hf-gpu-smoke"/' -e 's/^batch_size = .*/batch_size = [8]/' \
    -e 's/^num_prompts = .*/num_prompts = [16]/' -e 's/^idle_baseline_s = .*/idle_baseline_s = 2\nmin_steady_s = 1\ncooldown_timeout_s = 0/' \
    -e '/^\[\[exclude\]\]/,$d' examples/hf-gpu.toml > "$work/smoke.toml"
farmctl run --quiet "$work/smoke.toml" 2>&1 | tee "$out/smoke.txt"

farmctl run examples/hf-gpu.toml 2>&1 | tee "$out/run.txt"
farmctl results hf-gpu-llama-0.67b --format json --out "$out/results.json"
