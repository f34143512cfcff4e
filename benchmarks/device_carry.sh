#!/usr/bin/env bash
# Prepares the folders a lent GPU host's calls carry (issue 19), in this checkout:
#   .vp-aa1/, .vp-aa2/  the two halves of part aa of vLLM 0.26.0's bundle (29 MiB each)
#   .vp-ab/  part ab, SHA256SUMS, device-install.sh, env.sh, smoke.sh
#   .whl/    farm's dependencies as wheels (benchmarks/device_wheels.sh)
# and keeps them out of git (.git/info/exclude). A call carries at most 64 MiB,
# the tracked tree included; part aa (58 MiB) no longer fits beside the tree
# with its committed GPU data (8 MiB on 2026-12-07), so it travels in halves.
#
#   benchmarks/device_carry.sh BUNDLE_DIR     # the folder holding the vllm-gpu bundle
#
# The calls, each within 30 s of the reply before it (the host keeps /tmp that long),
# run benchmarks/device_lease.sh's steps; its header says what each carries:
#   1. carry [".vp-aa1", ".whl"]:  device_lease.sh half-1 wheels isolation
#   2. carry [".vp-aa2"]:          device_lease.sh half-2 model  (the model, in the background)
#   3. carry [".vp-ab"]:           device_lease.sh vllm start  (a sweep in the background)
#   4… collects:                   device_lease.sh collect; then, here, land_gpu_lease.py
set -euo pipefail
bundle=$(realpath "${1:?usage: $0 BUNDLE_DIR}")
cd "$(dirname "$0")/.."
for f in vllm026-core.tar.xz.part-aa vllm026-core.tar.xz.part-ab SHA256SUMS \
         device-install.sh env.sh smoke.sh; do
  [ -f "$bundle/$f" ] || { echo "$bundle/$f: missing" >&2; exit 2; }
done
mkdir -p .vp-aa1 .vp-aa2 .vp-ab
part="$bundle/vllm026-core.tar.xz.part-aa"
half=$(( ($(stat -c %s "$part") + 1) / 2 ))
head -c "$half" "$part" > .vp-aa1/half-1
tail -c +$(( half + 1 )) "$part" > .vp-aa2/half-2
cmp <(cat .vp-aa1/half-1 .vp-aa2/half-2) "$part"
cp "$bundle"/{vllm026-core.tar.xz.part-ab,SHA256SUMS,device-install.sh,env.sh,smoke.sh} .vp-ab/
exclude=$(git rev-parse --git-path info/exclude)
for folder in .vp-aa1/ .vp-aa2/ .vp-ab/ .whl/ .vllm-cache/; do
  grep -qxF "$folder" "$exclude" 2>/dev/null || echo "$folder" >> "$exclude"
done
[ -n "$(ls .whl/*.whl 2>/dev/null)" ] || bash benchmarks/device_wheels.sh .whl > /dev/null
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
mib() { echo $(( ($1 + 1048575) / 1048576 )); }
size() { du -cb "$@" | tail -1 | cut -f1; }
echo "calls carry $(mib $(( $(size .vp-aa1 .whl) + tree ))), $(mib $(( $(size .vp-aa2) + tree )))" \
     "and $(mib $(( $(size .vp-ab) + tree ))) MiB (at most 64 each)"
if [ -d .vllm-cache ]; then
  echo "  the third can carry .vllm-cache too: $(mib "$(size .vllm-cache)") MiB"
fi
