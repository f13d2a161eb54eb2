#!/usr/bin/env bash
# Builds the libFuzzer targets under fuzz/ (clang, ASan + UBSan + _GLIBCXX_ASSERTIONS) and runs
# each for SECONDS, from seeds made from the test fixtures plus the corpus earlier runs grew.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 s each; all targets)
# Prints executions per target and exits non-zero on any finding; a finding's input is kept in
# build-fuzz/findings/ (replay it: build-fuzz/fuzz/fuzz_TARGET FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors config tokenizer tokenizer_json tasks trainer_state request)
BUILD=${FUZZ_BUILD:-build-fuzz}

scripts/install-deps.sh --fuzz
cmake -S . -B "$BUILD" -G Ninja -DSLIMBERT_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  >/dev/null
cmake --build "$BUILD" -j "$(nproc)" >/dev/null

rm -rf "$BUILD/seeds"
python3 fuzz/seeds.py "$BUILD/seeds"
mkdir -p "$BUILD/findings"
status=0
total=0
printf '%-15s %8s %12s %10s %s\n' target seconds executions exec/s result
for t in "${targets[@]}"; do
  corpus="$BUILD/corpus/$t"
  mkdir -p "$corpus"
  log="$BUILD/fuzz-$t.log"
  rc=0
  # Detect leaks too; stop at the first finding and keep its input.
  "$BUILD/fuzz/fuzz_$t" "$corpus" "$BUILD/seeds/$t" -dict=fuzz/formats.dict \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$BUILD/findings/$t-" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  execs=${execs:-0}
  total=$((total + execs))
  result=ok
  if ((rc != 0)); then
    result="FINDING (rc $rc): see $log"
    status=1
  fi
  printf '%-15s %8s %12s %10s %s\n' "$t" "$seconds" "$execs" "$((execs / seconds))" "$result"
done
echo "total executions: $total"
if ((status)); then
  echo "fuzz: findings in $BUILD/findings/:" >&2
  ls "$BUILD/findings" >&2
fi
exit $status
