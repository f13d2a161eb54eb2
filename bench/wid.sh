#!/usr/bin/env bash
# WID step cost: `slimbert wid` (compactors on every linear, formed into the weights each step)
# against a plain `slimbert pretrain` MLM step of the same teacher, batch, sequence and threads.
#   bench/wid.sh [BUILD/slimbert] [SHARDS_DIR] [TEACHER_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
slimbert=$(realpath "${1:-$root/build/slimbert}")
shards=$(realpath "${2:-$root/data/shards}")
teacher=$(realpath "${3:-$root/models/teacher-mini}")
threads=${THREADS:-2}
out="$root/bench/out/wid"
mkdir -p "$out"
median() {  # metrics.jsonl -> median tokens/s and MFU of the logged steps after the first two
  /usr/bin/python3 -c "
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if 'tokens_per_s' in l][2:]
print(statistics.median(r['tokens_per_s'] for r in rows), statistics.median(r['mfu'] for r in rows))" "$1"
}
common=(--steps 34 --batch-size 32 --log-every 2 --eval-every 0 --save-every 0 --threads "$threads")
rm -rf "$out/plain" "$out/wid"
"$slimbert" pretrain --init "$teacher" --shards "$shards" --out "$out/plain" "${common[@]}" >/dev/null 2>&1
"$slimbert" wid --teacher "$teacher" --corpus "$shards" --out "$out/wid" --target-hidden 172 --w-step 2 \
  "${common[@]}" >/dev/null 2>&1
read -r plain plain_mfu < <(median "$out/plain/metrics.jsonl")
read -r wid wid_mfu < <(median "$out/wid/metrics.jsonl")
/usr/bin/python3 - "$plain" "$plain_mfu" "$wid" "$wid_mfu" <<'PY'
import sys
plain, pm, wid, wm = map(float, sys.argv[1:])
print(f"plain MLM step: {plain:,.0f} tokens/s (MFU {pm:.0%})")
print(f"WID step:       {wid:,.0f} tokens/s (MFU {wm:.0%}, compactor products included)")
print(f"WID step time / plain step time: {plain / wid:.2f}x (goal <= 1.6x)")
PY
