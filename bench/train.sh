#!/usr/bin/env bash
# Training throughput: `slimbert pretrain` (masked-position MLM head) against a PyTorch-eager
# MLM step (Debian python3-torch) on the same mini model, batch and sequence length, with the
# full-vocabulary head (as HF computes it) and with logits at masked positions only.
#   bench/train.sh [BUILD/slimbert] [SHARDS_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
slimbert=$(realpath "${1:-$root/build/slimbert}")
shards=$(realpath "${2:-$root/data/shards}")
py=/usr/bin/python3
out="$root/bench/out/train"
mkdir -p "$out"
[[ -f "$root/data/vocab.txt" ]] || "$root/scripts/make-vocab.sh" "$root/data/vocab.txt"
model="$out/mini-init"
[[ -f "$model/model.safetensors" ]] || "$slimbert" init "$model" --preset mini --vocab "$root/data/vocab.txt" --seed 0 >/dev/null

rm -rf "$out/run"
"$slimbert" pretrain --init "$model" --shards "$shards" --out "$out/run" --steps 14 --batch-size 32 \
  --log-every 2 --eval-every 0 --save-every 0 --threads 2 >/dev/null 2>"$out/slimbert.log"
slim=$($py -c "
import json, statistics
rows = [json.loads(l) for l in open('$out/run/metrics.jsonl') if 'tokens_per_s' in l]
rows = rows[2:]  # the first steps include start-up
print(json.dumps({'engine': 'slimbert', 'tokens_per_s': statistics.median(r['tokens_per_s'] for r in rows),
                  'mfu': statistics.median(r['mfu'] for r in rows)}))")
echo "$slim"
results=("$slim")
for head in full masked; do
  for t in 1 2; do
    r=$($py "$root/bench/torch_bert.py" train "$model" --batch 32 --seq 128 --threads $t --head $head --iters 6 --warmup 2)
    echo "$r"
    results+=("$r")
  done
done
printf '%s\n' "${results[@]}" >"$out/results.jsonl"
$py - "$out/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
s = rows[0]
best = {}
for r in rows[1:]:
    if r["head"] not in best or r["tokens_per_s"] > best[r["head"]]["tokens_per_s"]:
        best[r["head"]] = r
print("\n| engine | head | threads | tokens/s | slimbert / this |")
print("|---|---|---|---:|---:|")
print(f'| slimbert pretrain | masked positions | OpenBLAS 2, torch 1 | {s["tokens_per_s"]:.0f} (MFU {100 * s["mfu"]:.0f}%) | 1.00 |')
for r in rows[1:]:
    print(f'| PyTorch eager | {r["head"]} | torch {r["threads"]} | {r["tokens_per_s"]:.0f} | {s["tokens_per_s"] / r["tokens_per_s"]:.2f} |')
PY
