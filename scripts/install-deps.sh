#!/usr/bin/env bash
# Installs everything slimbert needs to build and test, idempotently.
#   scripts/install-deps.sh          build + test dependencies (Debian packages)
#   scripts/install-deps.sh --bench  also the benchmark anchors (python3-torch, npm onnxruntime-node)
#   scripts/install-deps.sh --fuzz   also clang and libFuzzer (the fuzz targets, scripts/fuzz.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ ccache pkg-config
  libtorch-dev libopenblas0-pthread  # libtorch; OpenBLAS makes its matmuls ~35x faster than reference BLAS
  nlohmann-json3-dev libutf8proc-dev libcli11-dev libcpp-httplib-dev libgloo-dev
  libonig-dev  # Oniguruma, the regex engine of HF tokenizers: tokenizer.json patterns
  libdnnl-dev  # oneDNN's headers: fp32 products called directly (--gemm onednn)
  libonnx-dev libprotobuf-dev  # ONNX's protobuf schema: export-onnx
  libgtest-dev libgmock-dev curl)
bench=0
[[ "${1:-}" == "--bench" ]] && bench=1
((bench)) && packages+=(python3-torch python3-onnx)  # anchors: PyTorch, ORT int8 rewrite
[[ "${1:-}" == "--fuzz" ]] && packages+=(clang libclang-rt-14-dev python3)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js + npm (for the vocabulary package, and ONNX Runtime in benchmarks): the machine may
# already have them from another source, whose nodejs conflicts with Debian's npm package.
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The client tests' references (tests/clients/package-lock.json): the OpenAI and HuggingFace
# clients, ajv for TEI's schemas, ONNX Runtime.
if [[ ! -d tests/clients/node_modules/openai ]]; then
  (cd tests/clients && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund >/dev/null)
fi

if ((bench)) && [[ ! -d bench/node_modules/onnxruntime-node ]]; then
  # The default post-install step downloads GPU binaries and fails offline; the CPU build ships in the package.
  (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund onnxruntime-node@1 >/dev/null)
fi
