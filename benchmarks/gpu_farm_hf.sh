#!/usr/bin/env bash
# The hf engine on a real NVIDIA GPU through the whole farm (docs/measurement.md,
# "Self-sized windows and repetitions on an H200"): two `farmctl run`s into one
# SQLite store, each with its private Redis —
#   1. examples/hf-gpu.toml: batch 1/8/64, self-sized 30 s windows, repetitions
#      until the 95% CI of net-of-idle J/output token is within 2% (3 to 6 runs
#      each);
#   2. examples/hf-gpu-power-limit.toml: batch 64 at power limits 200-700 W.
# SWEEPS="hf-gpu" (or "hf-gpu-power-limit") runs one of them only.
# Writes to OUT_DIR as it goes: gpu-before.csv / gpu-after.csv (nvidia-smi),
# probe.json, run.txt, results.txt and power-limit.txt (what farmctl printed), results.json,
# power-limit-results.json, farm-gpu.db (the store: runs, load points, requests,
# power timelines) and DONE (the exit status of each step) at the end.
#
#   benchmarks/gpu_farm_hf.sh OUT_DIR [PYTHON]
#
# PYTHON (default .venv/bin/python) must have farm's dependencies and torch.
# The store in OUT_DIR is reused: started again, the script completes what an
# interrupted run left (farmctl run's own resume) instead of measuring twice.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1"); py=${2:-.venv/bin/python}
mkdir -p "$out"
export FARM_DB_URL="sqlite:///$out/farm-gpu.db" PYTHONUNBUFFERED=1
farmctl() { "$py" -m farm.cli "$@"; }
status=()
step() { "$@"; status+=("$*: $?"); }

model=.farm/models/llama-0.67b
[ -e "$model/config.json" ] || "$py" -m workers.tinymodel "$model" --hidden 2048 --layers 16 --heads 16
query=name,driver_version,power.limit,power.default_limit,clocks.sm,temperature.gpu
nvidia-smi --query-gpu=$query --format=csv > "$out/gpu-before.csv"
farmctl worker --probe > "$out/probe.json"

for sweep in ${SWEEPS:-hf-gpu hf-gpu-power-limit}; do
  case $sweep in
    hf-gpu)
      step farmctl run examples/hf-gpu.toml > "$out/run.txt" 2>&1
      step farmctl results hf-gpu-llama-0.67b > "$out/results.txt" 2>&1
      step farmctl results hf-gpu-llama-0.67b --format json --out "$out/results.json" ;;
    hf-gpu-power-limit)
      step farmctl run examples/hf-gpu-power-limit.toml > "$out/power-limit.txt" 2>&1
      step farmctl results hf-gpu-power-limit --format json --out "$out/power-limit-results.json" ;;
    *) echo "unknown sweep in SWEEPS: $sweep" >&2; exit 2 ;;
  esac
done
nvidia-smi --query-gpu=$query --format=csv > "$out/gpu-after.csv"
printf '%s\n' "${status[@]}" > "$out/DONE"
