#!/usr/bin/env bash
# tests/gpu/run.sh: everything a session with a lent GPU checks, in one run
# (planned for under 8 minutes on an H100). Run from the repository root:
#
#   here:            tools/scripts/gpu-bundle.sh      (programs + their libraries)
#   on the GPU host: tests/gpu/run.sh                 (carry build-gpu/bundle)
#
# The GPU host has CUDA but not our Debian libraries: the programs come
# built from the bundle (LD_LIBRARY_PATH=bundle/lib); the CUDA module is
# rebuilt here with this host's nvcc so it matches its driver (the bundled
# one is the fallback). Steps, each bounded by `timeout`:
#   1. the device and the module;
#   2. cuda-check --kernels --ceilings: single kernels against the CPU's,
#      the copy bandwidth and GEMM peak measured now;
#   2b. kbench --quick: every kernel path on Llama-3-8B shapes, with its
#      fraction of the ceilings (kbench.txt);
#   3. cuda-check on synthetic models of every weight type and awkward
#      shapes (mkmodel, made here): every logit of prefill and decode
#      against the CPU backend;
#   4. greedy generation, CPU vs CUDA backend, token ids compared;
#   5. a Llama-3-8B-shaped bf16 model: batch-1 decode and prefill timing
#      from generate, as a fraction of the measured copy bandwidth;
#   6. the engine on that model under uring-bench, pinned and unpinned;
#   7. a summary table, last.
# Output: $OUT (or /tmp/locus-gpu) gets every log and summary.txt.
# Env: LOCUS_GPU_BUNDLE (default build-gpu/bundle), SKIP_8B=1 (steps 5-6 off).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
B=${LOCUS_GPU_BUNDLE:-build-gpu/bundle}
O=${OUT:-/tmp/locus-gpu}
W=$(mktemp -d /tmp/locus-gpu-work.XXXXXX)
mkdir -p "$O"
export LD_LIBRARY_PATH="$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T0=$(date +%s)
SUM=()
FAILED=0
note() { echo "[$(($(date +%s) - T0))s] $*"; }
row() { SUM+=("$1|$2"); }
bad() { FAILED=1; row "$1" "FAIL: $2"; note "FAIL $1: $2"; }
cleanup() { pkill -f "$W/engine" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT

[ -x "$B/bin/engine" ] || { echo "run.sh: $B/bin/engine missing: run tools/scripts/gpu-bundle.sh first and carry $B"; exit 2; }
cp -r "$B/bin/." "$W/"
BIN=$W

# 1. device, module
note "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current --format=csv,noheader | tee "$O/device.txt"
GPU_NAME=$(head -n1 "$O/device.txt" | cut -d, -f1)
row "device" "$GPU_NAME ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
if command -v nvcc >/dev/null; then
	ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
	note "module: nvcc $(nvcc --version | grep -o 'release [0-9.]*'), sm_$ARCH"
	if timeout 240 nvcc -O3 -std=c++17 -lineinfo -arch="sm_$ARCH" -shared -Xcompiler -fPIC,-Wall,-Wextra -I. \
		kernels/cuda/cuda_backend.cu -o "$W/liblocus_cuda.so" -lcublas >"$O/nvcc.log" 2>&1; then
		row "module" "built here for sm_$ARCH"
	else
		cp "$B/bin/liblocus_cuda.so" "$W/" 2>/dev/null
		row "module" "nvcc failed (see nvcc.log): the bundled one"
	fi
else
	row "module" "no nvcc: the bundled one"
fi

# 2. kernels and ceilings
note "kernels"
timeout 120 "$BIN/cuda-check" --kernels --ceilings >"$O/kernels.txt" 2>&1
rc=$?
grep -E '^(ok|FAIL|skip|ceilings)' "$O/kernels.txt" | head -40
if [ $rc -eq 0 ]; then row "kernel checks" "$(grep -c '^ok' "$O/kernels.txt") passed"; else bad "kernel checks" "rc $rc"; fi
CEIL=$(grep '^ceilings:' "$O/kernels.txt")
COPY=$(echo "$CEIL" | sed -n 's/.* copy \([0-9.]*\) GB\/s.*/\1/p')
PEAK=$(echo "$CEIL" | sed -n 's/.* gemm \([0-9.]*\) TFLOP.*/\1/p')
row "ceilings" "copy ${COPY:-?} GB/s, bf16 GEMM ${PEAK:-?} TFLOP/s"

note "kbench"
timeout 150 "$BIN/kbench" --quick >"$O/kbench.txt" 2>&1
rc=$?
cat "$O/kbench.txt" | head -80
if [ $rc -eq 0 ]; then
	row "kbench" "$(grep -c '^[a-z|]' "$O/kbench.txt") lines in kbench.txt; decode GEMV (T=1) of gate|up: $(awk '/^gate\|up/ && $3 == 1 {print $7 " GB/s, " $8 " of copy"}' "$O/kbench.txt")"
else
	bad "kbench" "rc $rc"
fi

# 3. synthetic models, every type and awkward shapes
note "models"
TOK=tests/data/tokenizers/ggml-vocab-llama-spm.gguf
mk() { local name=$1; shift; timeout 60 "$BIN/mkmodel" -o "$W/$name.gguf" "$@" >/dev/null 2>&1 || bad "mkmodel $name" "$*"; }
SMALL=(--layers 2 --dim 320 --heads 5 --kv-heads 1 --ffn 864 --vocab 3001)
KQ=(--layers 2 --dim 512 --heads 8 --kv-heads 2 --ffn 1280 --vocab 3001)
for t in F32 F16 BF16 Q8_0 Q4_0 Q4_1; do mk "s-$t" "${SMALL[@]}" --type "$t"; done
for t in Q4_K Q6_K; do mk "k-$t" "${KQ[@]}" --type "$t"; done
mk qwen2-q8 --arch qwen2 --layers 2 --dim 384 --heads 6 --kv-heads 2 --ffn 1024 --vocab 3001 --type Q8_0
mk tied-f16 "${SMALL[@]}" --type F16 --output-type tied
mk l3-bf16 --layers 2 --dim 512 --heads 4 --kv-heads 1 --ffn 1536 --rope-base 500000 --rope-scaling llama3 --type BF16 --tokenizer "$TOK"
timeout 300 "$BIN/cuda-check" "$W"/s-*.gguf "$W"/k-*.gguf "$W/qwen2-q8.gguf" "$W/tied-f16.gguf" "$W/l3-bf16.gguf" \
	>"$O/models.txt" 2>&1
rc=$?
grep -E '^(ok|FAIL|skip| )' "$O/models.txt" | head -40
if [ $rc -eq 0 ]; then row "backend vs CPU" "$(grep -c '^ok' "$O/models.txt") models, every logit within tolerance (decode as CUDA graphs)";
else bad "backend vs CPU" "rc $rc (models.txt)"; fi
LOCUS_CUDA_GRAPHS=0 timeout 120 "$BIN/cuda-check" "$W/s-Q8_0.gguf" "$W/l3-bf16.gguf" >"$O/models-nographs.txt" 2>&1
rc=$?
if [ $rc -eq 0 ]; then row "backend vs CPU, graphs off" "2 models, every logit within tolerance";
else bad "backend vs CPU, graphs off" "rc $rc (models-nographs.txt)"; fi

# 4. greedy generation, token ids
note "greedy"
for m in s-Q8_0 l3-bf16; do
	for be in cpu cuda; do
		timeout 60 "$BIN/generate" -m "$W/$m.gguf" --prompt-ids 1,300,301,302,303,304,305 -n 32 --temp 0 --ids \
			--backend "$be" >"$O/greedy-$m-$be.txt" 2>"$O/greedy-$m-$be.err"
	done
	if [ ! -s "$O/greedy-$m-cpu.txt" ] || [ ! -s "$O/greedy-$m-cuda.txt" ]; then
		bad "greedy $m" "no output: $(tail -qn1 "$O/greedy-$m-cpu.err" "$O/greedy-$m-cuda.err" | tr '\n' ' ')"
	elif cmp -s "$O/greedy-$m-cpu.txt" "$O/greedy-$m-cuda.txt"; then
		row "greedy $m" "32 tokens identical"
	else
		read -ra a <"$O/greedy-$m-cpu.txt"; read -ra b <"$O/greedy-$m-cuda.txt"
		i=0; while [ $i -lt ${#a[@]} ] && [ "${a[$i]}" = "${b[$i]:-}" ]; do i=$((i + 1)); done
		row "greedy $m" "differ from token $i (cpu ${a[$i]:-none}, cuda ${b[$i]:-none}): a near tie or a bug, see cuda-check"
	fi
done

# 5. Llama-3-8B-shaped bf16
if [ "${SKIP_8B:-0}" != 1 ]; then
	note "8B-shaped model"
	M8=$W/l3-8b.gguf
	timeout 200 "$BIN/mkmodel" -o "$M8" --layers 32 --dim 4096 --heads 32 --kv-heads 8 --ffn 14336 --vocab 128256 \
		--rope-base 500000 --type BF16 >/dev/null 2>&1 || bad "mkmodel 8B" "failed or timed out"
	if [ -f "$M8" ]; then
		P=$(seq -s, 1000 1127) # 128 prompt tokens
		timeout 180 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 128 --temp 0 --ignore-eos --ids --backend cuda -v \
			>/dev/null 2>"$O/8b-generate.txt"
		WB=$(sed -n 's/.* \([0-9.]*\) MiB weights.*/\1/p' "$O/8b-generate.txt" | head -n1)
		DEC=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$O/8b-generate.txt")
		PRE=$(sed -n 's/.*prefill: [0-9]* tokens in \([0-9.]*\) ms.*/\1/p' "$O/8b-generate.txt")
		if [ $(($(date +%s) - T0)) -lt 300 ]; then
			LOCUS_CUDA_GRAPHS=0 timeout 120 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 128 --temp 0 --ignore-eos --ids \
				--backend cuda -v >/dev/null 2>"$O/8b-generate-nographs.txt"
			DEC0=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$O/8b-generate-nographs.txt")
			row "8B decode, graphs off" "${DEC0:-?} tok/s"
		fi
		if [ -n "$DEC" ] && [ -n "$WB" ]; then
			BW=$(awk -v w="$WB" -v t="$DEC" 'BEGIN { printf "%.0f", w * 1048576 * t / 1e9 }')
			FR=$(awk -v b="$BW" -v c="${COPY:-0}" 'BEGIN { if (c > 0) printf "%.0f%%", 100 * b / c; else print "?" }')
			row "8B decode, batch 1" "$DEC tok/s = $BW GB/s of weights, $FR of the copy bandwidth (target 85%)"
			row "8B prefill, 128 tokens" "${PRE:-?} ms (TTFT target 15 ms)"
		else
			bad "8B generate" "no timing (8b-generate.txt)"
		fi
		# 6. engine, pinned and unpinned
		for pin in on off; do
			cat >"$W/e-$pin.conf" <<-EOF
			[server]
			listen = 127.0.0.1:18181
			[model]
			path = $M8
			ctx = 4096
			[backend]
			type = cuda
			[numa]
			node = auto
			pin = $pin
			[batching]
			max_seqs = 16
			[kv]
			memory = 4GiB
			EOF
			"$BIN/engine" --config "$W/e-$pin.conf" >"$O/engine-$pin.log" 2>&1 &
			EP=$!
			for _ in $(seq 1 240); do
				curl -sf http://127.0.0.1:18181/health >/dev/null 2>&1 && break
				kill -0 $EP 2>/dev/null || break
				sleep 0.5
			done
			timeout 120 "$BIN/uring-bench" --url http://127.0.0.1:18181 -n 64 -c 8 --max-tokens 64 --ignore-eos \
				--stream --warmup 8 >"$O/bench-$pin.txt" 2>&1 || bad "uring-bench pin=$pin" "see bench-$pin.txt"
			kill $EP 2>/dev/null
			wait $EP 2>/dev/null
			f=$O/bench-$pin.txt
			TPS=$(sed -n 's/.*, \([0-9.]*\) tokens\/s.*/\1/p' "$f")
			row "engine pin=$pin, c=8, 64 tokens" "${TPS:-?} tok/s; ms: latency p99 $(awk '$1 == "latency" {print $6}' "$f"), TTFT p50 $(awk '$1 == "ttft" {print $3}' "$f"), ITL p50 $(awk '$1 == "itl" {print $3}' "$f")"
		done
	fi
fi

# 7. summary
{
	echo "| check | result |"
	echo "|---|---|"
	for r in "${SUM[@]}"; do echo "| ${r%%|*} | ${r#*|} |"; done
	echo
	echo "total $(($(date +%s) - T0)) s"
} | tee "$O/summary.txt"
exit $FAILED
