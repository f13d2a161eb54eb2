#!/usr/bin/env bash
# 2-rank `slimbert pretrain` throughput of two binaries (and of the second with 4 MB gradient
# buckets), alternated for ROUNDS rounds so that the machine's drift hits all alike.
#   bench/dist-ab.sh OLD_SLIMBERT NEW_SLIMBERT [MODEL] [SHARDS] [ROUNDS]
# Prints per run: round, setting, median logged tokens/s after the first line, median
# allreduce_overlap (- where the binary does not log it).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
new=$2
model=${3:-models/teacher-mini}
shards=${4:-data/shards}
rounds=${5:-2}
port=${PORT:-29600}
medians() {
  /usr/bin/python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "tokens_per_s" in l][1:]
ov = [r["allreduce_overlap"] for r in rows if "allreduce_overlap" in r]
print(round(statistics.median(r["tokens_per_s"] for r in rows)),
      round(statistics.median(ov), 2) if ov else "-")' "$1"
}
for round in $(seq "$rounds"); do
  for setting in old new new-4MB; do
    bin=$new
    kb=
    [ "$setting" = old ] && bin=$old
    [ "$setting" = new-4MB ] && kb=4096
    out=$(mktemp -d)
    port=$((port + 1))
    SLIMBERT_DIST_BUCKET_KB=$kb "$bin" launch --nproc 2 --master-port "$port" -- pretrain \
      --init "$model" --shards "$shards" --steps "${STEPS:-24}" --batch-size "${BATCH:-32}" \
      --log-every 4 --eval-every 0 --save-every 0 --out "$out/run" --threads 1 > /dev/null 2>&1
    echo "$round $setting $(medians "$out/run/metrics.jsonl")"
    rm -rf "$out"
  done
done
