#!/usr/bin/env bash
# t_cuda: the CUDA backend against the CPU backend (tools/cuda-check) on two
# small synthetic models, plus the single-kernel checks. Skips (77) where
# the build has no CUDA module or the machine no usable GPU; the full GPU
# run is tests/gpu/run.sh.
set -uo pipefail
BIN=${LOCUS_BIN:-build/bin}
W=$(mktemp -d /tmp/locus-t-cuda.XXXXXX)
trap 'rm -rf "$W"' EXIT
"$BIN/cuda-check" --kernels >"$W/probe.txt" 2>&1
rc=$?
if [ $rc -eq 77 ]; then
	cat "$W/probe.txt"
	exit 77
fi
for t in Q8_0 BF16; do
	"$BIN/mkmodel" -o "$W/$t.gguf" --layers 2 --dim 320 --heads 5 --kv-heads 1 --ffn 864 --vocab 3001 --type $t \
		>/dev/null 2>&1 || { echo "FAIL mkmodel $t"; exit 1; }
done
"$BIN/cuda-check" --kernels "$W/Q8_0.gguf" "$W/BF16.gguf"
