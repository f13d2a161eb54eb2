#!/usr/bin/env bash
# Forward-latency benchmark: slimbert vs PyTorch eager (Debian python3-torch) vs ONNX Runtime
# (npm onnxruntime-node), same weights, same machine, one run. Each engine is measured at several
# thread settings and compared at its best. Results: bench/out/results.jsonl and a table.
#   bench/inference.sh [BUILD/slimbert] [presets...]     (default: mini base)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
slimbert=$(realpath "${1:-$root/build/slimbert}")
shift || true
presets=("$@")
((${#presets[@]})) || presets=(mini base)
out="$root/bench/out"
mkdir -p "$out"
py=/usr/bin/python3  # Debian's python3 has torch; another python3 may come first on PATH

[[ -f "$root/data/vocab.txt" ]] || "$root/scripts/make-vocab.sh" "$root/data/vocab.txt"
[[ -d "$root/bench/node_modules/onnxruntime-node" ]] ||
  (cd "$root/bench" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund >/dev/null)

$py "$root/bench/torch_bert.py" check "$root/tests/fixtures/hf/model" "$root/tests/fixtures/hf/model/outputs.safetensors"

results="$out/results.jsonl"
: >"$results"
for preset in "${presets[@]}"; do
  model="$out/$preset"
  [[ -f "$model/model.safetensors" ]] || "$slimbert" init "$model" --preset "$preset" --vocab "$root/data/vocab.txt" --seed 0 >/dev/null
  [[ -f "$model/model.onnx" ]] || $py "$root/bench/torch_bert.py" export "$model" "$model/model.onnx" 2>/dev/null
  for batch in 1 8; do
    if [[ $preset == base ]]; then iters=$((batch == 1 ? 12 : 5)); else iters=$((batch == 1 ? 40 : 15)); fi
    tag() { sed "s/^{/{\"preset\":\"$preset\",\"setting\":\"$1\",/" >>"$results"; }
    echo "== $preset batch $batch x 128 ($iters iterations per setting)" >&2
    "$slimbert" bench "$model" --batch $batch --seq 128 --iters $iters --warmup 2 --threads 2 --gemm openblas --json | tag "openblas 2, torch 1"
    "$slimbert" bench "$model" --batch $batch --seq 128 --iters $iters --warmup 2 --threads 2 --gemm openblas --torch-threads --json | tag "torch 2, openblas 1"
    "$slimbert" bench "$model" --batch $batch --seq 128 --iters $iters --warmup 2 --threads 1 --gemm openblas --json | tag "1 thread"
    "$slimbert" bench "$model" --batch $batch --seq 128 --iters $iters --warmup 2 --threads 2 --gemm onednn --json | tag "onednn, torch 2"
    "$slimbert" bench "$model" --batch $batch --seq 128 --iters $iters --warmup 2 --threads 2 --json | tag "auto, threads 2"
    for t in 1 2; do
      "$slimbert" bench "$model" --batch $batch --seq 128 --iters $iters --warmup 2 --threads $t --int8 --json |
        sed 's/^{/{"engine":"slimbert-int8",/' | tag "int8, threads $t"
      $py "$root/bench/torch_bert.py" bench "$model" --batch $batch --seq 128 --threads $t --iters $iters --warmup 2 | tag "torch threads $t"
      $py "$root/bench/torch_bert.py" bench "$model" --batch $batch --seq 128 --threads $t --iters $iters --warmup 2 --int8 | tag "torch threads $t"
      node "$root/bench/ort_bench.js" "$model/model.onnx" --batch $batch --seq 128 --threads $t --iters $iters --warmup 2 | tag "intra-op $t"
    done
  done
done

$py - "$results" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
best = collections.defaultdict(dict)
for r in rows:
    engine = r.get("engine", "slimbert")
    key = (r["preset"], r["batch"])
    if engine not in best[key] or r["p50_ms"] < best[key][engine]["p50_ms"]:
        best[key][engine] = r
print("\nAll settings (p50 ms):")
for r in rows:
    print(f'  {r["preset"]:5} b{r["batch"]:<2} {r.get("engine", "slimbert"):12} {r["setting"]:22} '
          f'p50 {r["p50_ms"]:9.2f}  p90 {r["p90_ms"]:9.2f}  p99 {r["p99_ms"]:9.2f}')
print("\nBest setting per engine, seq 128 (p50 ms; ratio = slimbert / anchor, lower is better):\n")
print("| model | batch | slimbert | PyTorch eager | ONNX Runtime | slimbert / PyTorch | slimbert / ORT |")
print("|---|---:|---:|---:|---:|---:|---:|")
order = sorted(best.items(), key=lambda kv: (kv[0][0] != "mini", kv[0][1]))
for (preset, batch), e in order:
    s, t, o = e["slimbert"], e["pytorch"], e["onnxruntime"]
    print(f'| {preset} | {batch} | {s["p50_ms"]:.2f} ({s["setting"]}) | {t["p50_ms"]:.2f} ({t["setting"]}) | '
          f'{o["p50_ms"]:.2f} ({o["setting"]}) | {s["p50_ms"] / t["p50_ms"]:.2f} | {s["p50_ms"] / o["p50_ms"]:.2f} |')
print("\nint8 (dynamic quantization of the encoder's linear maps), best setting per engine:\n")
print("| model | batch | slimbert int8 | PyTorch int8 (onednn) | ORT fp32 | int8 / ORT fp32 | slimbert int8 / PyTorch int8 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for (preset, batch), e in order:
    s, t, o = e["slimbert-int8"], e["pytorch-int8"], e["onnxruntime"]
    print(f'| {preset} | {batch} | {s["p50_ms"]:.2f} ({s["setting"]}) | {t["p50_ms"]:.2f} ({t["setting"]}) | '
          f'{o["p50_ms"]:.2f} | {s["p50_ms"] / o["p50_ms"]:.2f} | {s["p50_ms"] / t["p50_ms"]:.2f} |')
PY
