#!/usr/bin/env bash
# The steps of one GPU lease, run on the lent host from the carried checkout, one
# per call, each call within 30 s of the reply before it (the host keeps /tmp that
# long). benchmarks/device_carry.sh prepares what each call carries, here:
#
#   call  carry                  command
#   1     [".vp-aa1", ".whl"]    bash benchmarks/device_lease.sh half-1 wheels isolation
#   2     [".vp-aa2"]            bash benchmarks/device_lease.sh half-2 model
#   3     [".vp-ab"]             bash benchmarks/device_lease.sh vllm start
#         (+ ".vllm-cache" when an earlier lease's compile cache was kept there)
#   4…    []                     bash benchmarks/device_lease.sh collect
#
# Steps, in the order given:
#   half-1     part aa's first half into /tmp/vp
#   half-2     its second half joined to it: /tmp/vp holds part aa whole
#   wheels     the farm's dependencies (.whl) into /tmp/farmsite
#   model      the 8B-shaped model (workers.tinymodel --preset llama-3.1-8b, or
#              MODEL_ARGS) built in the background into /tmp/farm/.farm/models,
#              while the next call installs vLLM (a build took about 1 min of
#              the first lease); the sweep script waits for it
#   isolation  the 8-run isolation benchmark (issue 21) into $OUT: the run process
#              mode (ISO_MODE; the thread mode's "before" is on record), ROUNDS
#              (3) rounds of 1 run alone then 8 at once, about 100 s
#   vllm       .vp-ab/device-install.sh (checks every part's SHA-256, unpacks vLLM
#              into /tmp/site), then /tmp/farm (a copy of this checkout, which
#              outlives the call; a model built there is kept) and /tmp/vllm-env.sh
#   start      benchmarks/gpu_farm_vllm.sh in the background from /tmp/farm, with
#              SWEEPS (default batch) and RESUME (default: every committed
#              docs/data/vllm-*/export, whose runs are then not measured again);
#              vLLM's compile cache from a carried .vllm-cache/vllm-cache.tgz, if any
#   collect    waits up to COLLECT_S (400) for it, then puts a copy of what it wrote
#              so far, the store and the farm's logs into $OUT/gpu.tgz, and vLLM's
#              compile cache into $OUT/vllm-cache.tgz when it fits a returned file
#              (keep it in .vllm-cache/ here for the next lease: a warm cache cut an
#              engine start on the H100 from 75 to 38 s)
# Back here, `benchmarks/land_gpu_lease.py FILES_AT` turns the last collect's
# gpu.tgz into committed data (exports re-checked by import, reports) and keeps
# the compile cache in .vllm-cache/.
# FARM_OWNER defaults to gpu-lab (the owner of the committed GPU sweeps).
set -uo pipefail
cd "$(dirname "$0")/.."
VP=${VP:-/tmp/vp}
GPUOUT=${GPUOUT:-/tmp/gpuout}
OUT=${OUT:-/tmp/out}
FARM=${FARM:-/tmp/farm}
MODEL=.farm/models/llama-3.1-8b-random     # under $FARM: the sweeps' model source
mkdir -p "$VP" "$OUT"
checkout() {   # this checkout into $FARM, less the vLLM parts; $FARM/.farm (models) is kept
  mkdir -p "$FARM" &&
    find "$FARM" -mindepth 1 -maxdepth 1 ! -name .farm -exec rm -rf {} + &&
    tar -c --exclude='./.vp-aa*' --exclude='./.venv' --exclude='./.git' \
      --exclude='./.farm' . | tar -x -C "$FARM"
}
for step in "$@"; do
  echo "== $step"
  case $step in
    half-1) cp .vp-aa1/half-1 "$VP/" ;;
    half-2)
      [ -f "$VP/half-1" ] || { echo "$VP/half-1 is gone: the host was given back; start again" >&2; exit 3; }
      cat "$VP/half-1" .vp-aa2/half-2 > "$VP/vllm026-core.tar.xz.part-aa" && rm "$VP/half-1" ;;
    wheels)
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/farmsite .whl/*.whl ;;
    isolation)
      PYTHONPATH=/tmp/farmsite:$PWD PYTHONUNBUFFERED=1 timeout 400 \
        python3 benchmarks/bench_isolation.py --mode "${ISO_MODE:-process}" \
        --rounds "${ROUNDS:-3}" --json "$OUT/iso.json" \
        > "$OUT/iso.txt" 2>&1
      echo "isolation: exit $?"; tail -n 18 "$OUT/iso.txt" ;;
    model)
      checkout || exit 3
      if [ -e "$FARM/$MODEL/farm-model.json" ]; then echo "model: built already"; continue; fi
      mkdir -p "$GPUOUT" "$FARM/$(dirname "$MODEL")" && touch "$FARM/$MODEL.building"
      # setsid: the build outlives this call; the marker goes when it ends, either way.
      (cd "$FARM" && setsid nohup bash -c 'PYTHONPATH=/tmp/farmsite:$PWD python3 -m \
          workers.tinymodel "$1" $2 > "$3" 2>&1; rm -f "$1.building"' build "$MODEL" \
          "${MODEL_ARGS:---preset llama-3.1-8b}" "$GPUOUT/model.txt" < /dev/null > /dev/null 2>&1 &)
      echo "model: building $FARM/$MODEL in the background (log $GPUOUT/model.txt)" ;;
    vllm)
      bash .vp-ab/device-install.sh .vp-ab > "$OUT/install.log" 2>&1 || {
        echo "install failed:" >&2; tail -n 20 "$OUT/install.log" >&2; exit 3; }
      tail -n 1 "$OUT/install.log"
      checkout || exit 3
      printf '%s\n' "source $FARM/.vp-ab/env.sh" \
        "export PYTHONPATH=\$PYTHONPATH:/tmp/farmsite:$FARM FARM_OWNER=${FARM_OWNER:-gpu-lab}" \
        > /tmp/vllm-env.sh ;;
    start)
      if [ -f "$FARM/.vllm-cache/vllm-cache.tgz" ]; then
        mkdir -p "$GPUOUT/vllm-cache" &&
          tar xzf "$FARM/.vllm-cache/vllm-cache.tgz" -C "$GPUOUT/vllm-cache" &&
          echo "compile cache: $(du -sh "$GPUOUT/vllm-cache" | cut -f1) from an earlier lease"
      fi
      (cd "$FARM" && RESUME=${RESUME-$(echo docs/data/vllm-*/export)} \
        SWEEPS=${SWEEPS:-batch} SCRIPT=benchmarks/gpu_farm_vllm.sh VLLM_ENV=/tmp/vllm-env.sh \
        bash benchmarks/gpu_farm_hf_background.sh start "$GPUOUT" python3) ;;
    collect)
      (cd "$FARM" && bash benchmarks/gpu_farm_hf_background.sh collect "$GPUOUT" /tmp/copy \
        "${COLLECT_S:-400}" python3)
      status=$?
      tar czf "$OUT/gpu.tgz" -C /tmp/copy . && ls -l "$OUT/gpu.tgz"
      if [ -d "$GPUOUT/vllm-cache" ]; then
        tar czf "$OUT/vllm-cache.tgz" -C "$GPUOUT/vllm-cache" .
        if [ "$(stat -c %s "$OUT/vllm-cache.tgz")" -gt 16000000 ]; then
          echo "compile cache: $(du -sh "$OUT/vllm-cache.tgz" | cut -f1), over a returned file's 16 MiB: not returned"
          rm "$OUT/vllm-cache.tgz"
        else
          ls -l "$OUT/vllm-cache.tgz"
        fi
      fi
      [ "$status" -eq 0 ] && echo "sweep done" ;;
    *) echo "unknown step: $step (half-1 half-2 wheels isolation model vllm start collect)" >&2
       exit 2 ;;
  esac
done
