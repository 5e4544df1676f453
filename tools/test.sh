#!/usr/bin/env bash
# Every test, from a fresh Debian 12 machine (as root): installs the
# dependencies, fetches the default model, runs cppcheck on the code
# (tools/scripts/lint.sh), then builds and runs the test suite in four builds:
#   release (-O3 -march=native), the whole suite;
#   asan    (AddressSanitizer + UndefinedBehaviorSanitizer, leaks on), the whole suite;
#   avx2    (-march=x86-64-v3), the kernel tests, so the AVX2 paths run too;
#   tsan    (ThreadSanitizer), the concurrent parts: rings, net threads,
#           thread pool, metrics, the engine end to end, and uring-bench.
# Then each libFuzzer target runs for FUZZ_SECONDS (default 60).
#   tools/test.sh [--quick]   --quick: release build only
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
tools/scripts/install-deps.sh
tools/scripts/fetch-model.sh
tools/scripts/py-env.sh >/dev/null   # the openai client for tests/t_engine.py
JOBS=$(nproc)

tools/scripts/lint.sh   # cppcheck, clean or fail
tools/scripts/build.sh release
ctest --test-dir build --output-on-failure -j"$JOBS"
[ $QUICK -eq 1 ] && exit 0

tools/scripts/build.sh asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS"

tools/scripts/build.sh avx2
ctest --test-dir build-avx2 --output-on-failure -j"$JOBS" -R 'test_(quant|ops)'

tools/scripts/build.sh tsan
TSAN_OPTIONS=halt_on_error=1 \
  ctest --test-dir build-tsan --output-on-failure -j"$JOBS" -R 'test_(ring|net|http|metrics|batch)|t_engine|t_uring_bench'

tools/scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
echo "test.sh: all passed"
