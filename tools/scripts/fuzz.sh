#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for
# SECONDS (default 60) on its seed corpus in tests/fuzz/corpus/<name>/.
# New inputs found go to build-fuzz/corpus/<name>/ (not committed); crashes
# to build-fuzz/crash-<name>-*, and the script fails.
#   tools/scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
shift || true
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENABLE_FUZZING=ON -DLOCUS_WERROR=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  for f in build-fuzz/bin/fuzz_*; do TARGETS+=("$(basename "$f")"); done
fi
for t in "${TARGETS[@]}"; do
  name=${t#fuzz_}
  seeds=tests/fuzz/corpus/$name
  work=build-fuzz/corpus/$name
  mkdir -p "$work"
  [ -d "$seeds" ] || seeds=""
  echo "fuzz: $t for ${SECS}s"
  LOCUS_SRC=$PWD ASAN_OPTIONS=detect_leaks=1 build-fuzz/bin/"$t" -max_total_time="$SECS" -print_final_stats=1 \
    -artifact_prefix="build-fuzz/crash-$name-" "$work" $seeds 2>&1 | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|SUMMARY' || true
  if ls build-fuzz/crash-"$name"-* >/dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls build-fuzz/crash-"$name"-*)" >&2
    exit 1
  fi
done
