#!/usr/bin/env bash
# A hash of every source file that goes into the programs and the CUDA
# module (no .git needed, so it works on a copied tree).
#   tools/scripts/src-hash.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
find alloc kernels engine net tools bench -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name 'CMakeLists.txt' \) \
	-print0 | LC_ALL=C sort -z | LC_ALL=C xargs -0 sha256sum | sha256sum | cut -d' ' -f1
