#!/usr/bin/env bash
# The whole test suite built with AddressSanitizer + UndefinedBehaviorSanitizer and the standard
# library's assertions (_GLIBCXX_ASSERTIONS), in build-asan/. Any report fails the run.
#   scripts/sanitize.sh [test binary arguments...]   e.g. --gtest_filter='Tokenizer*'
# The test binary runs as one process per core, each a shard of the tests (not a process per
# test as under ctest): a sanitized libtorch takes seconds to start, and 150 starts cost minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SANITIZE_BUILD:-build-asan}
scripts/install-deps.sh
# -O0 -g1 (line tables for the reports): the instrumented torch headers make this build twice
# as slow as the release one; optimising it would cost a fifth more for nothing the sanitizers need.
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1" -DSLIMBERT_SANITIZE=address,undefined >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
supp=$(pwd)/tests/sanitizers
# libtorch is not instrumented: its allocations that live until exit are not ours to report.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:check_initialization_order=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
# The AVX2 kernels of OpenBLAS, as under ctest (tests/CMakeLists.txt): the training golden's bits.
export OPENBLAS_CORETYPE=Haswell
shards=$(nproc)
cd "$BUILD"
pids=()
for ((i = 0; i < shards; ++i)); do
  GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i timeout 1800 ./tests/slimbert_tests \
    --gtest_brief=1 "$@" >"sanitize-shard-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for ((i = 0; i < shards; ++i)); do
  rc=0
  wait "${pids[$i]}" || rc=$?
  summary=$(grep -E '^\[  (PASSED|FAILED)  \]' "sanitize-shard-$i.log" | head -3 | tr '\n' ' ')
  echo "sanitize: shard $((i + 1))/$shards: rc $rc ${summary:-(no summary: see $BUILD/sanitize-shard-$i.log)}"
  if ((rc != 0)); then
    status=1
    tail -n 60 "sanitize-shard-$i.log"
  fi
done
exit $status
