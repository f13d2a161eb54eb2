#!/usr/bin/env bash
# Fine-tunes a pretrained checkpoint on the four real tasks and writes one report per task.
#   scripts/finetune-tasks.sh MODEL_DIR OUT_DIR [BUILD/slimbert] [extra finetune flags...]
# EPOCHS (default 3 for spam, 1 for the three 20k-example tasks) sets the passes; SEED (0) the
# fine-tuning seed (data order, dropout, classifier init); TASKS (default
# "spam debsec para wngloss") picks tasks; a task whose OUT_DIR/TASK/eval.json exists is not run
# again.
# DISTIL=DIR distils from the fine-tuned teachers DIR/TASK/best (--distil-from; KD_WEIGHT,
# default 1, and --kd-temperature 1). LRS="1e-4 5e-4" is passed on as `finetune --lr 1e-4,5e-4`,
# which trains each rate in OUT_DIR/TASK/lr-LR and keeps the best on dev (test is not looked at)
# as OUT_DIR/TASK/best. Default LRS: 1e-4. With DISTIL, LRS=teacher uses the learning
# rate the teacher of each task was trained with (its eval.json).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=$(realpath "${1:?usage: finetune-tasks.sh MODEL_DIR OUT_DIR}")
out=$(realpath -m "${2:?usage: finetune-tasks.sh MODEL_DIR OUT_DIR}")
slimbert=$(realpath "${3:-$root/build/slimbert}")
shift 3 || shift $#
[[ -d "$root/data/tasks" ]] || "$root/scripts/prepare-data.sh" "$root/data"
lrs=(${LRS:-1e-4})
mkdir -p "$out"
for task in ${TASKS:-spam debsec para wngloss}; do
  [[ -f "$out/$task/eval.json" ]] && continue
  epochs=${EPOCHS:-1}
  [[ $task == spam ]] && epochs=${EPOCHS:-3}
  kd=()
  [[ -n ${DISTIL:-} ]] && kd=(--distil-from "$(realpath "$DISTIL")/$task/best" --kd-weight "${KD_WEIGHT:-1}")
  task_lrs=("${lrs[@]}")
  if [[ ${lrs[*]} == teacher ]]; then
    [[ -n ${DISTIL:-} ]] || { echo "LRS=teacher needs DISTIL=DIR" >&2; exit 2; }
    task_lrs=($(/usr/bin/python3 -c '
import json, sys
lr = json.load(open(sys.argv[1])).get("training", {}).get("lr")
sys.exit(f"{sys.argv[1]}: no training.lr recorded (a report older than that field); give LRS") if lr is None else print(lr)' \
      "$(realpath "$DISTIL")/$task/eval.json"))
  fi
  # One finetune call: with several rates it trains each in $out/$task/lr-<rate> and keeps the
  # best on dev as $out/$task/best and eval.json (ties: the first rate listed).
  dir="$out/$task"
  start=$(date +%s)
  "$slimbert" finetune --model "$model" --task tsv --data "$root/data/tasks/$task" --out "$dir" \
    --epochs $epochs --batch-size 32 --max-length 128 --lr "$(IFS=,; echo "${task_lrs[*]}")" \
    --warmup 0.1 --seed "${SEED:-0}" --log-every 100 "${kd[@]}" "$@" 2>"$dir.log" | tail -n 2
  echo "$task lr ${task_lrs[*]}: $(( $(date +%s) - start )) s" | tee -a "$out-times.txt"
done
/usr/bin/python3 - "$out" ${TASKS:-spam debsec para wngloss} <<'PY'
import json, sys, os
out = sys.argv[1]
print("\n| task | lr | dev main | test main | test accuracy | test F1 / MCC |")
print("|---|---:|---:|---:|---:|---|")
for task in sys.argv[2:]:
    r = json.load(open(os.path.join(out, task, "eval.json")))
    d, t = r["dev"], r["test"]
    extra = f'F1 {t["f1"]:.4f}, MCC {t["mcc"]:.4f}' if "f1" in t else "-"
    lr = r.get("training", {}).get("lr")  # absent in reports written before it was recorded
    lr = f"{lr:g}" if lr is not None else "-"
    print(f'| {task} | {lr} | {d["main"]:.4f} | {t["main"]:.4f} | {t["accuracy"]:.4f} | {extra} |')
PY
