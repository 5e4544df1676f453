#!/usr/bin/env bash
# Configures and builds one flavour of Locus.
#   tools/scripts/build.sh [release|asan|avx2|tsan] [extra cmake args...]
#     release: -O3 -march=native (build/)
#     asan:    ASan + UBSan, -O1 -g, -march=native (build-asan/)
#     avx2:    release code for x86-64-v3, exercises the AVX2 kernel paths (build-avx2/)
#     tsan:    ThreadSanitizer (build-tsan/)
set -euo pipefail
cd "$(dirname "$0")/../.."
FLAVOUR=${1:-release}
shift || true
case "$FLAVOUR" in
  release) DIR=build;      ARGS=(-DCMAKE_BUILD_TYPE=Release) ;;
  asan)    DIR=build-asan; ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOCUS_SANITIZE=ON -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g") ;;
  avx2)    DIR=build-avx2; ARGS=(-DCMAKE_BUILD_TYPE=Release -DLOCUS_ARCH=x86-64-v3) ;;
  tsan)    DIR=build-tsan; ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOCUS_TSAN=ON) ;;
  *) echo "build.sh: unknown flavour '$FLAVOUR'" >&2; exit 2 ;;
esac
cmake -S . -B "$DIR" -DLOCUS_WERROR=ON "${ARGS[@]}" "$@" >/dev/null
cmake --build "$DIR" -j"$(nproc)"
echo "build: $DIR ok"
