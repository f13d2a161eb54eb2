#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, a pip PyTorch and transformers: builds slimbert against the
# CUDA libtorch, runs the GPU parity tests and the whole suite, and checks our checkpoints with
# transformers, slimbert running on the GPU:
#   scripts/gpu-check.sh OUT [DEPS_PREFIX]
# Needs data/tasks/para (scripts/prepare-data.sh). Logs and reports go to OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: gpu-check.sh OUT [DEPS_PREFIX]}")
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cxx11 abi", torch.compiled_with_cxx11_abi(), "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"
start=$(date +%s)
scripts/build-cuda.sh build-cuda "${2:-}" > "$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; exit 1; }
echo "build: $(($(date +%s) - start)) s, $(grep -c warning "$out/build.log") warnings"
start=$(date +%s)
# One process per test (ctest), few threads each: the CPU halves of the parity tests share cores.
(cd build-cuda && OMP_NUM_THREADS=2 ctest -R 'Device|Gpu' -j 4 --output-on-failure > "$out/gpu-tests.log" 2>&1)
echo "GPU tests: rc $?, $(($(date +%s) - start)) s"; grep -E "Test +#|tests passed|Failure|Expected|actual|error" "$out/gpu-tests.log" | head -n 40
s=build-cuda/slimbert
# The para teacher (scripts/finetune-tasks.sh's recipe), then transformers parity on the GPU.
start=$(date +%s)
TASKS=para scripts/finetune-tasks.sh models/teacher-mini runs/ft-teacher "$s" --device cuda \
  > "$out/teacher.log" 2>&1
echo "para teacher: $(($(date +%s) - start)) s"; tail -n 3 "$out/teacher.log"
# Verses as documents (a blank line after each), so that some land in the validation split.
cut -f1 data/tasks/para/train.tsv | head -n 4000 | sed 's/$/\n/' > /tmp/para-text.txt
$s data shards /tmp/para-text.txt --tokenizer models/teacher-mini --out /tmp/para-shards > /dev/null 2>&1
SLIMBERT=$s DEVICE=cuda SHARDS=/tmp/para-shards scripts/hf-parity.sh /tmp/hf runs/ft-teacher/para/best \
  > "$out/hf-parity-gen.log" 2>&1 || tail -n 20 "$out/hf-parity-gen.log"
python3 scripts/hf_parity.py /tmp/hf --json "$out/hf-parity.json" 2>"$out/hf-parity.err" | tee "$out/hf-parity.md"
tail -n 5 "$out/hf-parity.err"
# The whole suite on this libtorch (CPU tests included), bounded by FULL_SUITE_S seconds.
start=$(date +%s)
(cd build-cuda && OMP_NUM_THREADS=1 timeout "${FULL_SUITE_S:-300}" ctest -j "$(nproc)" --timeout 200 > "$out/ctest.log" 2>&1)
echo "full suite: rc $?, $(($(date +%s) - start)) s"; grep -E "tests passed|tests failed|\*\*\*Failed|Timeout" "$out/ctest.log" | head -n 20
