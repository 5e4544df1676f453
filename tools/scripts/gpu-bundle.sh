#!/usr/bin/env bash
# Builds what tests/gpu/run.sh needs on a GPU machine that has CUDA but not
# our Debian libraries: the programs (x86-64-v3, so any recent x86 server
# runs them; glibc 2.34 or newer) and the shared libraries they load, in
# build-gpu/bundle/{bin,lib} (about 8 MiB). The CUDA module is rebuilt on
# the GPU machine with its own nvcc, so it matches that machine's driver;
# the one built here is the fallback.
#   tools/scripts/gpu-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DLOCUS_ARCH=x86-64-v3 -DLOCUS_WERROR=ON >/dev/null
cmake --build build-gpu -j"$(nproc)" >/dev/null
B=build-gpu/bundle
rm -rf "$B"
mkdir -p "$B/bin" "$B/lib"
PROGS=(engine generate mkmodel cuda-check kbench kbench_cpu uring-bench topo-capture)
for p in "${PROGS[@]}"; do cp build-gpu/bin/"$p" "$B/bin/"; done
[ -f build-gpu/bin/liblocus_cuda.so ] && cp build-gpu/bin/liblocus_cuda.so "$B/bin/"
# Every library the programs load, but glibc's own and CUDA's.
for p in "${PROGS[@]}"; do ldd build-gpu/bin/"$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
	grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcudart|libcublas[^/]*)\.so' |
	while read -r lib; do cp -L "$lib" "$B/lib/"; done
# What the bundle was built from: tests/gpu/run.sh refuses to run on a tree
# whose sources differ (programs and the module it rebuilds must agree).
tools/scripts/src-hash.sh >"$B/SRC_HASH"
# The module's chip and compiler: run.sh uses it as is where both match.
grep -m1 '^LOCUS_CUDA_ARCH:' build-gpu/CMakeCache.txt | cut -d= -f2 >"$B/CUDA_ARCH" || true
nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' >"$B/NVCC" || true
echo "gpu-bundle: $(du -sh "$B" | cut -f1) in $B (sources $(cut -c1-12 "$B/SRC_HASH")): $(ls "$B/lib" | tr '\n' ' ')"
