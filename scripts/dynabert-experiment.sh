#!/usr/bin/env bash
# The DynaBERT quality experiment of docs/RESULTS.md for one task:
#   scripts/dynabert-experiment.sh TASK     (spam, debsec, para or wngloss)
# rewire -> stage 1 (DynaBERT_W) -> stage 2 (DynaBERT), 1 epoch each at lr 1e-4; baseline (b):
# every other grid shape exported from the rewired teacher and fine-tuned on the labels separately
# with the same data and budget; then one grid report of DynaBERT, DynaBERT_W, rewired-only
# slicing (baseline a) and the separate models. Needs the fine-tuned teacher
# (scripts/finetune-tasks.sh models/teacher-mini runs/ft-teacher). Finished steps are skipped.
# Environment:
#   THREADS     threads per command (2)
#   DEVICE      where models run: cpu (default) or cuda (a CUDA build: scripts/build-cuda.sh)
#   SLIMBERT    the program (build/slimbert)
#   EPOCHS      epochs per stage and per separate model (1)
#   MAX_TRAIN   training examples, a seeded subset (0 = all)
#   TEACHER     the fine-tuned teacher (runs/ft-teacher/TASK/best; e.g. a fine-tuned WID student)
#   SEPARATE    0 skips baseline (b)
#   STAGE3      1: also stage 3, every sub-network fine-tuned on the labels for EPOCHS
#   AUG         1: the stages train on the subset plus AUG_N (4) rewrites per example
#               from `slimbert dynabert augment`
#   OUT         prefix of every output (runs/dyna-exp/TASK)
set -euo pipefail
cd "$(dirname "$0")/.."
task=${1:?usage: dynabert-experiment.sh TASK}
s=${SLIMBERT:-build/slimbert}
threads=${THREADS:-2}
max_train=${MAX_TRAIN:-0}
out=${OUT:-runs/dyna-exp/$task}
mkdir -p "$(dirname "$out")"
t=${TEACHER:-runs/ft-teacher/$task/best}
data=data/tasks/$task
log() { echo "$1: $(($(date +%s) - start)) s" >> "$out-times.txt"; }
run=(--threads "$threads" --device "${DEVICE:-cpu}")
loop=(--max-length 128 --batch-size 32 --epochs "${EPOCHS:-1}" --lr 1e-4 --log-every 50 "${run[@]}")
labelled=(--task tsv --data $data --max-train-examples "$max_train" "${loop[@]}")
start=$(date +%s)
[[ -f $out-rewired/config.json ]] ||
  $s dynabert rewire --model $t --task tsv --data $data --out $out-rewired "${run[@]}"
log rewire
stage=("${labelled[@]}")
if [[ ${AUG:-0} == 1 ]]; then
  start=$(date +%s)
  [[ -f $out-aug/train.jsonl ]] ||
    $s dynabert augment --mlm models/teacher-mini --task tsv --data $data --out $out-aug \
      --max-examples "$max_train" --per-example "${AUG_N:-4}" "${run[@]}"
  log augment
  # The augmented set already holds the subset: the stages read all of it.
  stage=(--task jsonl --data $out-aug --max-train-examples 0 "${loop[@]}")
fi
start=$(date +%s)
[[ -f $out-w/best/config.json ]] ||
  $s dynabert train-width --model $out-rewired --teacher $t --out $out-w "${stage[@]}"
log train-width
start=$(date +%s)
[[ -f $out-wd/best/config.json ]] ||
  $s dynabert train --model $out-w/best --teacher $out-w/best --out $out-wd "${stage[@]}"
log train
stage3=()
if [[ ${STAGE3:-0} == 1 ]]; then
  start=$(date +%s)
  [[ -f $out-ft/best/config.json ]] ||
    $s dynabert finetune --model $out-wd/best --out $out-ft "${labelled[@]}"
  log finetune
  stage3=(--model "DynaBERT + stage 3=$out-ft/best")
fi
start=$(date +%s)
separate=()
[[ ${SEPARATE:-1} == 1 ]] && separate=(--separate "separate=$out-separate")
for d in 1 0.75 0.5; do
  [[ ${SEPARATE:-1} == 1 ]] || break
  for w in 1 0.75 0.5 0.25; do
    [[ $w == 1 && $d == 1 ]] && continue  # that shape is the teacher itself
    name=w${w}_d${d}
    [[ -f $out-separate/$name/best/config.json ]] && continue
    $s dynabert export --model $out-rewired --width $w --depth $d --out $out-separate-init/$name
    $s finetune --model $out-separate-init/$name --out $out-separate/$name --warmup 0.1 --seed 0 \
      "${labelled[@]}" 2> "$out-separate-$name.log" | tail -n 1
  done
done
log separate
start=$(date +%s)
$s dynabert grid --model "DynaBERT=$out-wd/best" "${stage3[@]}" --model "DynaBERT_W=$out-w/best" \
  --model "rewired only=$out-rewired" "${separate[@]}" \
  --task tsv --data $data --latency-iters 10 --out $out-grid "${run[@]}"
log grid
