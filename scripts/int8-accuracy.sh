#!/usr/bin/env bash
# The int8 accuracy table of docs/RESULTS.md: on each task, a teacher fine-tuned from the mini
# model, its DynaBERT model (rewire -> stage 1 -> stage 2), and each scored fp32 and --int8 at
# (1, 1) and (0.5, 0.5) on dev and test.
#   scripts/int8-accuracy.sh [TASK...]        (default: spam debsec para wngloss)
# Environment: THREADS (1), MAX_TRAIN (5000: a seeded subset of each training set for the
# teacher), STAGE_TRAIN (MAX_TRAIN: the same for the DynaBERT stages), EPOCHS (1), OUT
# (runs/int8). Finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
s=${SLIMBERT:-build/slimbert}
out=${OUT:-runs/int8}
run=(--threads "${THREADS:-1}")
loop=(--max-length 128 --batch-size 32 --epochs "${EPOCHS:-1}" --log-every 50 "${run[@]}")
teacher_loop=("${loop[@]}" --max-train-examples "${MAX_TRAIN:-5000}")
stage_loop=("${loop[@]}" --max-train-examples "${STAGE_TRAIN:-${MAX_TRAIN:-5000}}")
mkdir -p "$out"
for task in ${@:-spam debsec para wngloss}; do
  data=(--task tsv --data data/tasks/$task)
  o=$out/$task
  lr=5e-4
  [[ $task == para ]] && lr=2e-4
  [[ -f $o-teacher/best/config.json ]] ||
    $s finetune --model models/teacher-mini --out $o-teacher --lr $lr --warmup 0.1 --seed 0 \
      "${data[@]}" "${teacher_loop[@]}" 2> $o-teacher.log | tail -n 1
  [[ -f $o-rewired/config.json ]] ||
    $s dynabert rewire --model $o-teacher/best --out $o-rewired "${data[@]}" "${run[@]}"
  [[ -f $o-w/best/config.json ]] ||
    $s dynabert train-width --model $o-rewired --teacher $o-teacher/best --out $o-w --lr 1e-4 \
      "${data[@]}" "${stage_loop[@]}" 2> $o-w.log | tail -n 1
  [[ -f $o-wd/best/config.json ]] ||
    $s dynabert train --model $o-w/best --teacher $o-w/best --out $o-wd --lr 1e-4 \
      "${data[@]}" "${stage_loop[@]}" 2> $o-wd.log | tail -n 1
  for m in teacher wd; do
    for shape in "1 1" "0.5 0.5"; do
      set -- $shape
      [[ $m == teacher && $1 != 1 ]] && continue
      for q in fp32 int8; do
        f=$o-eval-$m-w$1-d$2-$q.json
        [[ -s $f ]] && continue
        flag=()
        [[ $q == int8 ]] && flag=(--int8)
        $s eval $o-$m/best "${data[@]}" --splits dev,test --max-length 128 --width $1 --depth $2 \
          "${flag[@]}" --json "${run[@]}" > $f.tmp && mv $f.tmp $f
      done
    done
  done
done
