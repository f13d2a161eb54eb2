#!/usr/bin/env bash
# Makes tests/fixtures/families/{roberta,xlm-roberta}: a tiny random model of each family (with
# RoBERTa's byte-level BPE and an XLM-R Unigram tokenizer.json), and its outputs.safetensors from
# the op-by-op modeling_roberta reference (Debian python3-torch).
#   tests/reference/make_family_fixtures.sh [build/slimbert]
set -euo pipefail
cd "$(dirname "$0")/../.."
slimbert=${1:-build/slimbert}
for family in roberta xlm-roberta; do
  tokenizer=tests/fixtures/tokenizers/roberta-tiny.json
  [[ $family == xlm-roberta ]] && tokenizer=tests/fixtures/tokenizers/xlmr-unigram.json
  out=tests/fixtures/families/$family
  rm -rf "$out"
  "$slimbert" init "$out" --preset tiny --model-type "$family" --tokenizer "$tokenizer" \
    --labels 3 --max-positions 32 --seed 11
  /usr/bin/python3 tests/reference/modeling_roberta.py "$out"
done
