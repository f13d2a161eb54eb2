#!/usr/bin/env bash
# Data-parallel scaling of `slimbert pretrain` on this machine: tokens/s of `launch --nproc N`
# (cores/N threads each) against 1 rank with cores/N threads (scaling efficiency) and 1 rank with
# all the cores (the same hardware), same global batch and steps.
#   bench/scaling.sh [SLIMBERT] [MODEL] [SHARDS] [N]
# Prints one line per setting: the median of the logged tokens/s after the first log line.
set -euo pipefail
cd "$(dirname "$0")/.."
s=${1:-build/slimbert}
model=${2:-models/teacher-mini}
shards=${3:-data/shards}
n=${4:-2}
cores=$(nproc)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
args=(pretrain --init "$model" --shards "$shards" --steps "${STEPS:-24}" --batch-size "${BATCH:-32}"
  --log-every 4 --eval-every 0 --save-every 0)
median() {  # FILE [KEY]: the median of KEY (tokens/s) over the log lines after the first
  /usr/bin/python3 -c '
import json, statistics, sys
key = sys.argv[2]
rows = [json.loads(l) for l in open(sys.argv[1]) if key in l]
m = statistics.median(r[key] for r in rows[1:]) if rows[1:] else None
print("n/a" if m is None else round(m) if key == "tokens_per_s" else round(m, 2))' "$1" \
    "${2:-tokens_per_s}"
}
per=$((cores / n > 0 ? cores / n : 1))
"$s" "${args[@]}" --out "$out/one" --threads "$per" > /dev/null 2>&1
one=$(median "$out/one/metrics.jsonl")
"$s" "${args[@]}" --out "$out/all" --threads "$cores" > /dev/null 2>&1
all=$(median "$out/all/metrics.jsonl")
"$s" launch --nproc "$n" --master-port "${PORT:-29531}" -- "${args[@]}" --out "$out/many" \
  --threads "$per" > /dev/null 2>&1
many=$(median "$out/many/metrics.jsonl")
overlap=$(median "$out/many/metrics.jsonl" allreduce_overlap)
ratio() { /usr/bin/python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "1 rank x $per thread(s): $one tokens/s"
echo "1 rank x $cores thread(s): $all tokens/s"
echo "$n ranks x $per thread(s): $many tokens/s; scaling efficiency $(ratio "$many" "$((n * one))")" \
  "(against $n x the 1-rank rate), $(ratio "$many" "$all")x one rank on all $cores cores"
echo "gradient all-reduce started during backward: $overlap of the gradients (rank 0)"
