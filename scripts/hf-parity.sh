#!/usr/bin/env bash
# Builds the inputs of the transformers parity check (scripts/hf_parity.py):
#   scripts/hf-parity.sh OUT [PARA_CLASSIFIER (runs/ft-teacher/para/best)]
# OUT/models/NAME: checkpoints as slimbert writes them — the committed MLM teacher, WID students
# (dim and head strategies) after a short run and their merge, a classifier fine-tuned on the para task, that
# classifier rewired by DynaBERT and exported at (0.5, 0.75) with `pruned_heads` and with the
# dropped heads zeroed (`--heads zeroed`, the form transformers 5 loads), and a random
# regression model, and tiny RoBERTa and XLM-RoBERTa models. OUT/texts.jsonl: test sentences (pairs, accents, CJK, long words, padding);
# OUT/NAME.ids.jsonl: slimbert's token ids; OUT/NAME.inputs.safetensors and
# OUT/NAME.outputs.safetensors: the padded batch and every output of `slimbert forward`.
# scripts/hf_parity.py OUT then loads each model and tokenizer with transformers and compares.
# Environment: SLIMBERT (build/slimbert), DEVICE (cpu; cuda runs every slimbert step on the GPU),
# SHARDS (data/shards: MLM shards for the WID run).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: hf-parity.sh OUT [CLASSIFIER_DIR]}
s=${SLIMBERT:-build/slimbert}
mkdir -p "$out/models"
models=$out/models
threads=(--threads 2 --device "${DEVICE:-cpu}")

rm -rf "$models"/*
cp -r models/teacher-mini "$models/mlm"
# Both strategies: dim keeps 4 heads of 40 dims (the attention scale folded into the queries),
# head keeps 2 whole heads of 64.
for spec in "dim 160 wid-student" "head 128 wid-student-head"; do
  read -r strategy hidden name <<<"$spec"
  $s wid --teacher models/teacher-mini --corpus "${SHARDS:-data/shards}" --out "$out/wid-run" \
    --target-hidden "$hidden" --strategy "$strategy" --steps 24 --w-step 1 --batch-size 8 \
    --log-every 12 --eval-every 24 --eval-batches 2 --save-every 24 "${threads[@]}" 2>&1 | tail -n 2
  cp -r "$out/wid-run/student" "$models/$name"
  rm -rf "$out/wid-run"
done
classifier=${2:-runs/ft-teacher/para/best}
[[ -f $classifier/config.json ]] ||
  { echo "no fine-tuned para classifier at $classifier (scripts/finetune-tasks.sh)" >&2; exit 1; }
cp -r "$classifier" "$models/classifier"
$s dynabert rewire --model "$models/classifier" --task tsv --data data/tasks/para \
  --examples 64 --out "$out/rewired" "${threads[@]}" 2>&1 | tail -n 1
$s dynabert export --model "$out/rewired" --width 0.5 --depth 0.75 --out "$models/dynabert-w0.5-d0.75"
$s dynabert export --model "$out/rewired" --width 0.5 --depth 0.75 --heads zeroed \
  --out "$models/dynabert-w0.5-d0.75-zeroed"
rm -rf "$out/rewired"
$s init "$models/regression" --preset tiny --labels 1 --seed 4 --vocab models/teacher-mini/vocab.txt
# The other families: tiny random RoBERTa (byte-level BPE) and XLM-RoBERTa (SentencePiece Unigram)
# models with both heads and their tokenizer.json.
$s init "$models/roberta" --preset tiny --model-type roberta --labels 3 --max-positions 128 \
  --seed 11 --tokenizer tests/fixtures/tokenizers/roberta-tiny.json
$s init "$models/xlm-roberta" --preset tiny --model-type xlm-roberta --labels 3 \
  --max-positions 128 --seed 11 --tokenizer tests/fixtures/tokenizers/xlmr-unigram.json

cat > "$out/texts.jsonl" <<'EOF'
{"text": "The quick brown fox jumps over the lazy dog."}
{"text": "Héllo, WORLD! naïve café — 東京 is big; don't panic.", "text_pair": "Is this a paraphrase?"}
{"text": "supercalifragilisticexpialidocious antidisestablishmentarianism"}
{"text": "Prices rose 3.5% in Q4 (vs. 2.1%) — see https://example.org/a?b=c&d=e"}
{"text": "In the beginning God created the heaven and the earth.", "text_pair": "In the beginning, God created the heavens and the earth."}
{"text": "Ünïcödé ÀÉÎÕÜ ßtraße straße \t tabs\nnewline   spaces"}
{"text": "a"}
EOF
for dir in "$models"/*/; do
  name=$(basename "$dir")
  $s tokenize "$dir" --jsonl < "$out/texts.jsonl" > "$out/$name.ids.jsonl"
  # Pad the batch to its longest row: the attention mask covers padding as HF's collator does.
  /usr/bin/python3 - "$out/$name.ids.jsonl" "$out/$name.inputs.safetensors" "$dir/config.json" <<'PY'
import json, struct, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
pad_id = json.load(open(sys.argv[3])).get("pad_token_id", 0)  # RoBERTa pads with 1
L = max(len(r["input_ids"]) for r in rows)
def pad(v, value=0): return v + [value] * (L - len(v))
tensors = {
    "input_ids": [pad(r["input_ids"], pad_id) for r in rows],
    "token_type_ids": [pad(r["token_type_ids"]) for r in rows],
    "attention_mask": [pad([1] * len(r["input_ids"])) for r in rows],
}
header, blobs, offset = {}, [], 0
for name, m in tensors.items():
    data = b"".join(struct.pack("<%dq" % L, *row) for row in m)
    header[name] = {"dtype": "I64", "shape": [len(m), L], "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
  $s forward "$dir" --inputs "$out/$name.inputs.safetensors" --out "$out/$name.outputs.safetensors" \
    "${threads[@]}" 2>/dev/null
done
ls "$models"
