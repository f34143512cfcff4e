#!/usr/bin/env bash
# benchmarks/gpu_farm_hf.sh (or the script in SCRIPT, e.g.
# SCRIPT=benchmarks/gpu_farm_vllm.sh) in the background, for a lent GPU machine whose calls
# last at most a few minutes each: `start` launches it detached (it outlives the
# call), `collect` waits until it is done or SECONDS have passed and copies what it
# has written so far — the printed output, a consistent copy of the SQLite store
# (sqlite3's online backup, safe while the recorder writes) and the farm's logs
# (.farm/logs, as logs/) — to COPY_DIR.
#
#   benchmarks/gpu_farm_hf_background.sh start   OUT_DIR [PYTHON]
#   benchmarks/gpu_farm_hf_background.sh collect OUT_DIR COPY_DIR SECONDS [PYTHON]
#
# collect exits 0 once OUT_DIR/DONE exists (the script finished), 3 while it runs,
# 4 when it is neither running nor done (the machine was restarted: start again,
# with the last copied store put back at OUT_DIR/farm-gpu.db, and farmctl run
# completes what is left without measuring anything twice).
set -uo pipefail
cd "$(dirname "$0")/.."
verb=$1 out=$(realpath -m "$2")
case $verb in
  start)
    py=${3:-.venv/bin/python}
    mkdir -p "$out"
    setsid nohup "${SCRIPT:-benchmarks/gpu_farm_hf.sh}" "$out" "$py" > "$out/script.log" 2>&1 \
      < /dev/null &
    echo $! > "$out/script.pid"
    echo "started: pid $(cat "$out/script.pid"), log $out/script.log" ;;
  collect)
    copy=$(realpath -m "$3") seconds=$4 py=${5:-.venv/bin/python}
    mkdir -p "$copy"
    deadline=$((SECONDS + seconds))
    running() { [ -f "$out/script.pid" ] && kill -0 "$(cat "$out/script.pid")" 2>/dev/null; }
    while [ ! -e "$out/DONE" ] && running && [ $SECONDS -lt $deadline ]; do sleep 5; done
    for f in "$out"/*.txt "$out"/*.json "$out"/*.csv "$out"/DONE "$out"/script.log; do
      [ -f "$f" ] && cp "$f" "$copy/"
    done
    # The workers' and recorders' logs (farmctl run writes them under .farm/logs).
    [ -d .farm/logs ] && cp -r .farm/logs "$copy/"
    # How big vLLM's compile cache grew: whether a later lease could carry it.
    [ -d "$out/vllm-cache" ] && du -sh "$out/vllm-cache"
    if [ -f "$out/farm-gpu.db" ]; then
      "$py" -c 'import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst); dst.close(); src.close()' "$out/farm-gpu.db" "$copy/farm-gpu.db"
    fi
    tail -c 2000 "$out/script.log" 2>/dev/null
    if [ -e "$out/DONE" ]; then echo "done"; exit 0; fi
    if running; then echo "still running"; exit 3; fi
    echo "not running and not done"; exit 4 ;;
  *) echo "usage: $0 start|collect OUT_DIR ..." >&2; exit 2 ;;
esac
