#!/usr/bin/env bash
# Forward-latency benchmark: slimbert vs PyTorch eager (Debian python3-torch) vs ONNX Runtime
# (npm onnxruntime-node), fp32 and dynamic int8 each, same weights, same machine, one run. Each
# engine is measured at several thread settings and compared at its best, at the same precision;
# each point's achieved GFLOP/s is set against the machine's measured GEMM peak
# (`slimbert gemm-peak`). Results: bench/out/results.jsonl and two tables.
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
# The machine's GEMM rate per engine, the limit each point's achieved rate is set against.
for t in 1 2; do "$slimbert" gemm-peak --threads $t --json; done >"$out/peak.jsonl"
# (batch, seq): query-like single short inputs, then the long ones.
points=("1 16" "1 32" "1 128" "8 128")
for preset in "${presets[@]}"; do
  model="$out/$preset"
  [[ -f "$model/model.safetensors" ]] || "$slimbert" init "$model" --preset "$preset" --vocab "$root/data/vocab.txt" --seed 0 >/dev/null
  [[ -f "$model/model.onnx" ]] || $py "$root/bench/torch_bert.py" export "$model" "$model/model.onnx" 2>/dev/null
  # ONNX Runtime's own dynamic int8, checked against its fp32 graph before it is timed.
  [[ -f "$model/model-int8.onnx" ]] || $py "$root/bench/ort_int8.py" "$model/model.onnx" "$model/model-int8.onnx"
  node "$root/bench/ort_bench.js" "$model/model-int8.onnx" --compare "$model/model.onnx" --batch 2 --seq 64 --threads 2 >"$out/$preset-int8-check.json"
  for point in "${points[@]}"; do
    read -r batch seq <<<"$point"
    work=$((batch * seq))
    if [[ $preset == base ]]; then iters=$((work <= 32 ? 60 : work <= 128 ? 12 : 5)); else iters=$((work <= 32 ? 200 : work <= 128 ? 40 : 15)); fi
    tag() { sed "s/^{/{\"preset\":\"$preset\",\"setting\":\"$1\",/" >>"$results"; }
    run() { "$slimbert" bench "$model" --batch $batch --seq $seq --iters $iters --warmup 3 --json "$@"; }
    echo "== $preset batch $batch x $seq ($iters iterations per setting)" >&2
    run --threads 2 --gemm openblas | tag "openblas 2, torch 1"
    run --threads 2 --gemm openblas --torch-threads | tag "torch 2, openblas 1"
    run --threads 1 --gemm openblas | tag "openblas, 1 thread"
    for t in 1 2; do
      run --threads $t --gemm onednn | tag "onednn, threads $t"
      run --threads $t --int8 | sed 's/^{/{"engine":"slimbert-int8",/' | tag "int8, threads $t"
      $py "$root/bench/torch_bert.py" bench "$model" --batch $batch --seq $seq --threads $t --iters $iters --warmup 3 | tag "torch threads $t"
      $py "$root/bench/torch_bert.py" bench "$model" --batch $batch --seq $seq --threads $t --iters $iters --warmup 3 --int8 | tag "torch threads $t"
      node "$root/bench/ort_bench.js" "$model/model.onnx" --batch $batch --seq $seq --threads $t --iters $iters --warmup 3 | tag "intra-op $t"
      node "$root/bench/ort_bench.js" "$model/model-int8.onnx" --batch $batch --seq $seq --threads $t --iters $iters --warmup 3 |
        sed 's/"engine":"onnxruntime"/"engine":"onnxruntime-int8"/' | tag "intra-op $t"
    done
  done
done

$py - "$results" "$out/peak.jsonl" "$out" "${presets[@]}" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1])]
peaks = [json.loads(l) for l in open(sys.argv[2])]
out, presets = sys.argv[3], sys.argv[4:]
fp32_peak = max(max(p["openblas_fp32_gflop_per_s"], p["onednn_fp32_gflop_per_s"]) for p in peaks)
int8_peak = max(p["int8_gflop_per_s"] for p in peaks)
best = collections.defaultdict(dict)
gflop = {}  # GFLOP per forward of each point (slimbert's count: encoder products + attention)
for r in rows:
    engine = r.get("engine", "slimbert")
    key = (r["preset"], r["batch"], r["seq"])
    if engine.startswith("slimbert"):
        gflop[key] = r["gflop_per_s"] * r["p50_ms"] / 1e3
    if engine not in best[key] or r["p50_ms"] < best[key][engine]["p50_ms"]:
        best[key][engine] = r
print("\nAll settings (p50 ms):")
for r in rows:
    print(f'  {r["preset"]:5} b{r["batch"]:<2} s{r["seq"]:<4} {r.get("engine", "slimbert"):16} {r["setting"]:22} '
          f'p50 {r["p50_ms"]:9.3f}  p90 {r["p90_ms"]:9.3f}  p99 {r["p99_ms"]:9.3f}')
for p in presets:
    check = json.load(open(f"{out}/{p}-int8-check.json"))
    print(f'\nORT int8 ({p}) against ORT fp32: min cosine {check["min_cosine"]:.5f}, '
          f'max abs diff {check["max_abs_diff"]:.4f} ({100 * check["relative_to_max"]:.2f}% of the largest value)')
print(f"\nGEMM peak here (best of 1 and 2 threads, 1024^3): fp32 {fp32_peak:.0f} GFLOP/s, int8 {int8_peak:.0f} GOP/s")
order = sorted(best, key=lambda k: (presets.index(k[0]) if k[0] in presets else 9, k[1], k[2]))
def rate(key, r, peak):
    g = gflop[key] / (r["p50_ms"] / 1e3)
    return f'{g:.0f} ({100 * g / peak:.0f}%)'
for title, mine, anchors, peak in [
        ("fp32", "slimbert", [("ONNX Runtime fp32", "onnxruntime"), ("PyTorch eager", "pytorch")], fp32_peak),
        ("int8", "slimbert-int8", [("ONNX Runtime int8", "onnxruntime-int8"), ("PyTorch int8", "pytorch-int8")], int8_peak)]:
    print(f"\n{title}: best setting per engine, p50 ms; ratio = slimbert / anchor (lower is better); "
          f"GFLOP/s achieved (share of the {title} GEMM peak)\n")
    print(f"| model | batch x seq | slimbert {title} | {anchors[0][0]} | {anchors[1][0]} | slimbert / ORT | slimbert / PyTorch | slimbert GFLOP/s | ORT GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in order:
        e = best[key]
        s, o, t = e[mine], e[anchors[0][1]], e[anchors[1][1]]
        print(f'| {key[0]} | {key[1]} x {key[2]} | {s["p50_ms"]:.3f} ({s["setting"]}) | {o["p50_ms"]:.3f} ({o["setting"]}) | '
              f'{t["p50_ms"]:.3f} | **{s["p50_ms"] / o["p50_ms"]:.2f}** | {s["p50_ms"] / t["p50_ms"]:.2f} | '
              f'{rate(key, s, peak)} | {rate(key, o, peak)} |')
PY
