#!/usr/bin/env bash
# Fine-tunes a pretrained checkpoint on the four real tasks and writes one report per task.
#   scripts/finetune-tasks.sh MODEL_DIR OUT_DIR [BUILD/slimbert] [extra finetune flags...]
# EPOCHS (default 3 for spam, 1 for the three 20k-example tasks) sets the passes; TASKS (default
# "spam debsec para wngloss") picks tasks; a task whose OUT_DIR/TASK/eval.json exists is not run
# again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=$(realpath "${1:?usage: finetune-tasks.sh MODEL_DIR OUT_DIR}")
out=$(realpath -m "${2:?usage: finetune-tasks.sh MODEL_DIR OUT_DIR}")
slimbert=$(realpath "${3:-$root/build/slimbert}")
shift 3 || shift $#
[[ -d "$root/data/tasks" ]] || "$root/scripts/prepare-data.sh" "$root/data"
for task in ${TASKS:-spam debsec para wngloss}; do
  [[ -f "$out/$task/eval.json" ]] && continue
  epochs=${EPOCHS:-1}
  [[ $task == spam ]] && epochs=${EPOCHS:-3}
  start=$(date +%s)
  "$slimbert" finetune --model "$model" --task tsv --data "$root/data/tasks/$task" --out "$out/$task" \
    --epochs $epochs --batch-size 32 --max-length 128 --lr 1e-4 --warmup 0.1 --seed 0 --log-every 100 "$@" \
    2>"$out-$task.log" | tail -n 1
  echo "$task: $(( $(date +%s) - start )) s" | tee -a "$out-times.txt"
done
/usr/bin/python3 - "$out" ${TASKS:-spam debsec para wngloss} <<'PY'
import json, sys, os
out = sys.argv[1]
print("\n| task | dev main | test main | test accuracy | test F1 / MCC |")
print("|---|---:|---:|---:|---|")
for task in sys.argv[2:]:
    r = json.load(open(os.path.join(out, task, "eval.json")))
    d, t = r["dev"], r["test"]
    extra = f'F1 {t["f1"]:.4f}, MCC {t["mcc"]:.4f}' if "f1" in t else "-"
    print(f'| {task} | {d["main"]:.4f} | {t["main"]:.4f} | {t["accuracy"]:.4f} | {extra} |')
PY
