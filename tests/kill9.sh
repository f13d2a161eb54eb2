#!/usr/bin/env bash
# Runs that survive kill -9: each training command is killed with SIGKILL at a random moment
# (checkpoints are written every step or every epoch, so many kills land inside a write),
# resumed with --resume until it finishes, and its final weights compared bit for bit with an
# uninterrupted run of the same command.
#   tests/kill9.sh SLIMBERT WORKDIR [KILLS] [COMMANDS]
# KILLS: trials per command (default 3; docs/RELIABILITY.md records a 20-trial run). COMMANDS:
# any of pretrain wid finetune dyna-width dyna-train dyna-finetune (default: all). Prints one
# line per trial and exits non-zero when any final model differs. RANDOM_SEED fixes the moments.
set -euo pipefail
slimbert=$(realpath "${1:?usage: kill9.sh SLIMBERT WORKDIR [KILLS] [COMMANDS]}")
work=${2:?usage: kill9.sh SLIMBERT WORKDIR [KILLS] [COMMANDS]}
kills=${3:-3}
commands=${4:-pretrain wid finetune dyna-width dyna-train dyna-finetune}
RANDOM=${RANDOM_SEED:-$$}
rm -rf "$work"  # references are made by this build, never reused
mkdir -p "$work"
work=$(realpath "$work")
cd "$work"

# A tiny world: a vocabulary of 40 words, a corpus of recurring sentences, a two-class task.
mkdir -p world/task
{
  printf '%s\n' '[PAD]' '[UNK]' '[CLS]' '[SEP]' '[MASK]' . ,
  for i in $(seq 0 39); do echo "w$i"; done
} > world/vocab.txt
for d in $(seq 0 199); do
  echo "doc$d"  # distinct documents (an [UNK] each), so that some are held out for validation
  for s in 0 1 2; do
    k=$(((d + s) % 5 * 6))
    echo "w$k w$((k + 1)) w$((k + 2)) w$((k + 3)) w$((k + 4)) w$((k + 5)) ."
  done
  echo
done > world/corpus.txt
for split in train:120 dev:40; do
  n=${split#*:}
  {
    printf 'sentence\tlabel\n'
    for i in $(seq 1 "$n"); do
      low=0 words=""
      for k in 1 2 3 4 5 6; do
        w=$(((i * 7 + k * 13 + k * i) % 20))
        ((w < 10)) && low=$((low + 1))
        words="$words w$w"
      done
      ((low > 3)) && label=low || label=high
      printf '%s\t%s\n' "${words# }" "$label"
    done
  } > "world/task/${split%:*}.tsv"
done
t=(--threads 1)
"$slimbert" init world/init --preset tiny --vocab world/vocab.txt --max-positions 64 "${t[@]}" > /dev/null
"$slimbert" data shards world/corpus.txt --tokenizer world/init --out world/shards --seq 32 \
  --validation-fraction 0.1 "${t[@]}" > /dev/null
"$slimbert" finetune --model world/init --task tsv --data world/task --out world/teacher \
  --epochs 2 --batch-size 16 --max-length 16 --lr 1e-3 "${t[@]}" > /dev/null 2>&1

task=(--task tsv --data world/task --epochs 3 --batch-size 16 --max-length 16 --lr 1e-3 --keep-last 2)
args_of() {
  case $1 in
    pretrain) echo pretrain --init world/init --shards world/shards --steps 30 --batch-size 8 \
      --lr 3e-3 --save-every 1 --keep-last 2 --eval-every 10 --eval-batches 2 ;;
    wid) echo wid --teacher world/init --corpus world/shards --target-hidden 16 --w-step 1 \
      --steps 24 --batch-size 8 --save-every 1 --keep-last 2 --eval-every 12 --eval-batches 2 ;;
    finetune) echo finetune --model world/init "${task[@]}" ;;
    dyna-width) echo dynabert train-width --model world/teacher/best --teacher world/teacher/best \
      --widths 1,0.5 "${task[@]}" ;;
    dyna-train) echo dynabert train --model world/teacher/best --teacher world/teacher/best \
      --widths 1,0.5 --depths 1,0.5 "${task[@]}" ;;
    dyna-finetune) echo dynabert finetune --model world/teacher/best --widths 1,0.5 \
      --depths 1,0.5 "${task[@]}" ;;
    *) echo "kill9.sh: unknown command $1" >&2; exit 2 ;;
  esac
}
final_of() {  # the file that holds a run's final weights
  case $1 in
    wid) echo "$2/student/model.safetensors" ;;
    *) echo "$2/model/model.safetensors" ;;
  esac
}

# Waits until run directory $1 has a metrics file (start-up is over, training begins) or
# process $2 has exited; prints the time in ns.
wait_for_training() {
  while [[ ! -f $1/metrics.jsonl ]] && kill -0 "$2" 2> /dev/null; do sleep 0.01; done
  date +%s%N
}

failed=0
mkdir -p runs
for c in $commands; do
  read -r -a args <<< "$(args_of "$c")"
  ref=runs/$c-ref
  "$slimbert" "${args[@]}" --out "$ref" --threads 1 > /dev/null 2> "$ref.log" &
  pid=$!
  started=$(wait_for_training "$ref" "$pid")
  wait "$pid" || { echo "$c: the uninterrupted run failed: $work/$ref.log" >&2; exit 1; }
  ms=$((($(date +%s%N) - started) / 1000000))  # training time, after start-up
  same=0
  for trial in $(seq 1 "$kills"); do
    out=runs/$c-$trial
    for attempt in 1 2 3 4 5; do
      rm -rf "$out" "$out.log"
      "$slimbert" "${args[@]}" --out "$out" --threads 1 > /dev/null 2>> "$out.log" &
      pid=$!
      wait_for_training "$out" "$pid" > /dev/null
      delay=$((RANDOM % ms))
      sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
      # A run that finished first is tried again with another moment.
      kill -9 "$pid" 2> /dev/null && break
      wait "$pid" 2> /dev/null || true
    done
    wait "$pid" 2> /dev/null || true
    # Resumed until a run exits 0 (a kill after the last checkpoint still leaves eval.json or
    # the merge to do; resuming a finished run writes its final files again).
    resumes=0 resumed=0
    while ((resumes < 3)); do
      resumes=$((resumes + 1))
      "$slimbert" "${args[@]}" --out "$out" --threads 1 --resume > /dev/null 2>> "$out.log" &&
        resumed=1 && break
    done
    if ((!resumed)); then
      failed=1
      verdict="RESUME FAILED 3 times (log: $work/$out.log)"
    elif cmp -s "$(final_of "$c" "$ref")" "$(final_of "$c" "$out")"; then
      same=$((same + 1))
      verdict=identical
    else
      failed=1
      verdict="DIFFERENT (log: $work/$out.log)"
    fi
    echo "$c trial $trial: killed ${delay} of ${ms} ms into training, $resumes resume(s): $verdict"
  done
  echo "$c: $same of $kills bit-identical"
done
exit $failed
