#!/usr/bin/env bash
# Builds slimbert for NVIDIA GPUs against the CUDA libtorch inside a pip PyTorch (Debian's
# libtorch is CPU-only):
#   scripts/build-cuda.sh [BUILD_DIR (build-cuda)] [DEPS_PREFIX]
# DEPS_PREFIX: a prefix holding nlohmann-json, CLI11, utf8proc and GoogleTest where they are not
# installed system-wide (e.g. Debian packages unpacked with dpkg -x). Then every command takes
# `--device cuda`, and the GPU parity tests (`--gtest_filter='*Gpu*:Device.*'`) run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cuda}
prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
[[ -n ${2:-} ]] && prefix="$prefix;$2"
# GoogleTest built from source with libtorch's flags: an installed one may use another C++ ABI.
gtest=${GTEST_SOURCE:-}
for d in "${2:-/nonexistent}/src/googletest" /usr/src/googletest; do
  [[ -z $gtest && -f $d/CMakeLists.txt ]] && gtest=$d
done
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  ${gtest:+-DSLIMBERT_GTEST_SOURCE="$gtest"} ${CMAKE_ARGS:-}
cmake --build "$build" -j "$(nproc)"
