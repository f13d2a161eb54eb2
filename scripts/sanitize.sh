#!/usr/bin/env bash
# The whole test suite built with AddressSanitizer + UndefinedBehaviorSanitizer and the standard
# library's assertions (_GLIBCXX_ASSERTIONS), in build-asan/. Any report fails the run.
#   scripts/sanitize.sh [ctest arguments...]      e.g. scripts/sanitize.sh -R Tokenizer
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SANITIZE_BUILD:-build-asan}
scripts/install-deps.sh
# -O1: sanitized code at -O3 takes twice as long to compile for no gain in what is found.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DSLIMBERT_SANITIZE=address,undefined >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
supp=$(pwd)/tests/sanitizers
# libtorch is not instrumented: its allocations that live until exit are not ours to report.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:check_initialization_order=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
export SLIMBERT_SANITIZED=1
cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
