#!/usr/bin/env bash
# The DynaBERT spam pipeline of docs/RESULTS.md: rewire, stage 1, stage 2 (1 epoch each, lr 1e-4),
# then the grid of DynaBERT, DynaBERT_W and rewired-only slicing. Needs the fine-tuned spam teacher
# (scripts/finetune-tasks.sh models/teacher-mini runs/ft-teacher).
set -euo pipefail
cd "$(dirname "$0")/.."
s=build/slimbert
out=runs/dyna-exp/spam
mkdir -p runs/dyna-exp
t=runs/ft-teacher/spam/best
common=(--task tsv --data data/tasks/spam --max-length 128 --batch-size 32 --epochs 1 --lr 1e-4 --log-every 25 --threads 2)
start=$(date +%s)
[[ -f $out-rewired/config.json ]] || $s dynabert rewire --model $t --task tsv --data data/tasks/spam --out $out-rewired --threads 2
echo "rewire: $(($(date +%s) - start)) s" >> $out-times.txt
start=$(date +%s)
[[ -f $out-w/best/config.json ]] || $s dynabert train-width --model $out-rewired --teacher $t --out $out-w "${common[@]}"
echo "train-width: $(($(date +%s) - start)) s" >> $out-times.txt
start=$(date +%s)
[[ -f $out-wd/best/config.json ]] || $s dynabert train --model $out-w/best --teacher $out-w/best --out $out-wd "${common[@]}"
echo "train: $(($(date +%s) - start)) s" >> $out-times.txt
start=$(date +%s)
$s dynabert grid --model "DynaBERT=$out-wd/best" --model "DynaBERT_W=$out-w/best" --model "rewired only=$out-rewired" \
  --task tsv --data data/tasks/spam --latency-iters 10 --out $out-grid --threads 2
echo "grid: $(($(date +%s) - start)) s" >> $out-times.txt
