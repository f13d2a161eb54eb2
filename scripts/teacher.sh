#!/usr/bin/env bash
# The recipe of the committed `mini` teacher (models/teacher-mini): real data, shards, a random
# mini BERT with the bert-base-uncased vocabulary, MLM pretraining within ~90 minutes on the
# 2-core CI machine, then the fp16 model with its recipe, data checksums and training log.
#   scripts/teacher.sh [BUILD/slimbert]
# Resumable: run it again after an interruption and pretraining continues from its checkpoint.
# DEVICE=cuda pretrains on a GPU (a CUDA build as the argument, scripts/build-cuda.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
slimbert=$(realpath "${1:-$root/build/slimbert}")
cd "$root"

scripts/prepare-data.sh data
[[ -f data/shards/shards.json ]] || "$slimbert" data shards data/corpus/*.txt --tokenizer data --out data/shards --threads 2
[[ -f data/teacher-init/model.safetensors ]] || "$slimbert" init data/teacher-init --preset mini --vocab data/vocab.txt --seed 0

resume=()
[[ -d runs/teacher-mini/checkpoints ]] && resume=(--resume)
start=$(date +%s)
"$slimbert" pretrain --init data/teacher-init --shards data/shards --out runs/teacher-mini \
  --steps 3000 --batch-size 32 --lr 5e-4 --warmup 0.06 --clip 1.0 --seed 0 \
  --log-every 25 --eval-every 250 --eval-batches 20 --save-every 250 --keep-last 2 --fp16-final \
  --device "${DEVICE:-cpu}" "${resume[@]}" \
  2>&1 | tee -a runs/teacher-mini.log
echo "pretraining wall time this run: $(( $(date +%s) - start )) s" | tee -a runs/teacher-mini.log

dest=models/teacher-mini
rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
cp runs/teacher-mini/model/* "$dest.tmp/"
cp runs/teacher-mini/metrics.jsonl "$dest.tmp/training-metrics.jsonl"
cp data/manifest.json "$dest.tmp/data-manifest.json"
cp data/shards/shards.json "$dest.tmp/shards.json"
sha256sum data/shards/*.bin | sed "s|data/shards/||" > "$dest.tmp/shards.sha256"
cat > "$dest.tmp/RECIPE.md" <<MD
# teacher-mini

A BERT mini (L4/H256/A4/I1024, bert-base-uncased vocabulary) pretrained by slimbert with MLM on the
offline corpus of \`scripts/prepare-data.sh\` (data-manifest.json: counts and sha256 of every file;
shards.sha256: the packed training data). Made by \`scripts/teacher.sh\`:

    slimbert pretrain --init data/teacher-init --shards data/shards --out runs/teacher-mini \\
      --steps 3000 --batch-size 32 --lr 5e-4 --warmup 0.06 --clip 1.0 --seed 0 --fp16-final

Weights are stored in float16 (\`--fp16-final\`); slimbert and transformers load them as float32.
training-metrics.jsonl is the run's log (loss, learning rate, tokens/s, MFU, validation).
MD
rm -rf "$dest" && mv "$dest.tmp" "$dest"
du -sh "$dest"
