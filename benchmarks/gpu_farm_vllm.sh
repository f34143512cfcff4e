#!/usr/bin/env bash
# vLLM on a real NVIDIA GPU through the whole farm (issue 19): the seeds'
# experiments as `farmctl run`s into one SQLite store, on the random-weight
# Llama-3.1-8B shape, each sweep with its private Redis —
#   batch    examples/vllm-gpu-batch.toml: J/token vs max_num_seqs 8..512 (ML.ENERGY)
#   server   examples/vllm-gpu-server.toml: J/request vs concurrency 1..256 (LLM
#            Efficiency Benchmark), one engine start
#   vs-hf    examples/vllm-gpu-vs-hf-{vllm,hf}.toml: vLLM against transformers
#            (Fernandez et al.), then `farmctl compare`
#   clocks   examples/vllm-gpu-clocks.toml: SM clock locks and power caps, the
#            GPU's default among them (needs root or the privileged helper)
#   watt-counts examples/vllm-gpu-watt-counts.toml: a rate sweep from 0.25 req/s
#            to saturation (Watt Counts), H100 and H200 in one store: run it on
#            one host, copy OUT_DIR/farm-gpu.db into the other host's OUT_DIR and
#            run it there (the same FARM_OWNER, or login name, on both: the sweep
#            is its first recorder's); only that host's runs are measured
# SWEEPS="batch server" runs those only (default: all five, in that order); an
# entry ending in .toml is run as a sweep file of its own (e.g. the one-lease
# slices examples/vllm-gpu-quick-{batch,server}.toml).
#
# Writes to OUT_DIR as it goes: gpu-before.csv / gpu-after.csv (nvidia-smi),
# probe.json, model.txt (the build, once per host), SWEEP-run.txt (what farmctl
# printed), SWEEP-results.txt / SWEEP-results.json, vs-hf-compare.txt,
# farm-gpu.db (the store) and DONE (each step's exit status) at the end.
#
#   benchmarks/gpu_farm_vllm.sh OUT_DIR [PYTHON]
#   SCRIPT=benchmarks/gpu_farm_vllm.sh benchmarks/gpu_farm_hf_background.sh start OUT_DIR
#
# PYTHON (default .venv/bin/python) must import farm, torch and vLLM: on the lent
# hosts, `source ../shared/vllm-gpu/env.sh` first (vLLM 0.26.0 in /tmp/site,
# VLLM_USE_FLASHINFER_SAMPLER=0) or name it in VLLM_ENV, and put the farm's
# wheels on PYTHONPATH (benchmarks/device_wheels.sh). The model is built once
# (MODEL, default .farm/models/llama-3.1-8b-random); the store in OUT_DIR is
# reused, so a second start completes what an interrupted one left.
#
# A lease ends after 30 minutes and takes /tmp with it. To go on with a sweep
# an earlier lease left unfinished, name its committed export(s) in RESUME
# (e.g. RESUME=docs/data/vllm-batch-h100-partial/export): they are imported into
# this store first (run ids are content hashes, so the runs they hold are done
# here and only the rest is measured; the sweep becomes FARM_OWNER's).
# vLLM's compile cache goes to OUT_DIR/vllm-cache (VLLM_CACHE_ROOT), where a
# collect can take it for the next lease: a warm cache cut torch.compile from
# 24-28 s to 5-6 s per engine start on an H100 (2026-12-07).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1"); py=${2:-.venv/bin/python}
mkdir -p "$out"
# shellcheck disable=SC1090
[ -n "${VLLM_ENV:-}" ] && source "$VLLM_ENV"
export FARM_DB_URL="sqlite:///$out/farm-gpu.db" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-$out/vllm-cache}
farmctl() { "$py" -m farm.cli "$@"; }
status=()
step() { "$@"; status+=("$*: $?"); }

model=${MODEL:-.farm/models/llama-3.1-8b-random}
# A build started earlier in the background (device_lease.sh model) marks itself
# with MODEL.building until it ends: wait for it rather than build twice at once.
for _ in $(seq 600); do [ -e "$model.building" ] || break; sleep 1; done
if [ -e "$model.building" ]; then
  echo "the model build in the background has not ended in 10 min: building here" >&2
  rm -rf "$model" "$model.building"
fi
if [ ! -e "$model/farm-model.json" ]; then
  step "$py" -m workers.tinymodel "$model" --preset llama-3.1-8b > "$out/model.txt" 2>&1
fi
query=name,driver_version,power.limit,power.default_limit,clocks.sm,clocks.max.sm,temperature.gpu,memory.used
nvidia-smi --query-gpu=$query --format=csv > "$out/gpu-before.csv"
farmctl worker --probe > "$out/probe.json"
for export_dir in ${RESUME:-}; do
  step farmctl import "$export_dir" >> "$out/resume.txt" 2>&1
done

sweep_of() {   # example file → its sweep name
  "$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["name"])' "$1"
}
measure() {    # TAG FILE: run one example, save what farmctl printed and the results
  local tag=$1 file=$2 name
  name=$(sweep_of "$file")
  # --amend: a RESUMEd export carries the file its runs were measured under, and
  # the committed example may be newer (batch: 8 sequences got 128 prompts after
  # the first lease); run ids are content hashes, so what was measured stays done.
  step farmctl run --amend "$file" > "$out/$tag-run.txt" 2>&1
  step farmctl results "$name" > "$out/$tag-results.txt" 2>&1
  step farmctl results "$name" --format json --out "$out/$tag-results.json"
}

for sweep in ${SWEEPS:-batch server vs-hf clocks watt-counts}; do
  case $sweep in
    batch)  measure batch examples/vllm-gpu-batch.toml ;;
    server) measure server examples/vllm-gpu-server.toml ;;
    vs-hf)
      measure vs-hf-vllm examples/vllm-gpu-vs-hf-vllm.toml
      measure vs-hf-hf examples/vllm-gpu-vs-hf-hf.toml
      step farmctl compare "$(sweep_of examples/vllm-gpu-vs-hf-vllm.toml)" \
        "$(sweep_of examples/vllm-gpu-vs-hf-hf.toml)" > "$out/vs-hf-compare.txt" 2>&1 ;;
    clocks) measure clocks examples/vllm-gpu-clocks.toml ;;
    watt-counts) measure watt-counts examples/vllm-gpu-watt-counts.toml ;;
    *.toml) measure "$(basename "$sweep" .toml)" "$sweep" ;;   # any sweep file
    *) echo "unknown sweep in SWEEPS: $sweep" >&2; exit 2 ;;
  esac
done
nvidia-smi --query-gpu=$query --format=csv > "$out/gpu-after.csv"
printf '%s\n' "${status[@]}" > "$out/DONE"
