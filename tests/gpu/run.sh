#!/usr/bin/env bash
# tests/gpu/run.sh: everything a session with a lent GPU checks, in one run
# (about 3.5 minutes on an H100, 3 on an H200, 2026-11-27; bounded at 9). From the repository root:
#
#   here:  tools/scripts/gpu-bundle.sh        programs + their libraries -> build-gpu/bundle
#   there: tests/gpu/run.sh                   (device tool: carry ["build-gpu/bundle"])
#
# The GPU host has CUDA but not our Debian libraries: the programs come
# built from the bundle (each run with LD_LIBRARY_PATH=bundle/lib plus the
# host's CUDA libraries, nothing else is); the bundle's CUDA module is used
# as is where the host's nvcc and chip are the ones it was built with (else
# it is rebuilt there; LOCUS_GPU_REBUILD=1 forces that). The bundle must
# come from these very sources (SRC_HASH), or the run stops at once.
# Steps, each bounded by `timeout`:
#   1. the device and the module;
#   2. cuda-check --kernels --ceilings: single kernels against the CPU's,
#      the copy bandwidth and GEMM peak measured now; kbench --quick;
#   3. cuda-check on synthetic models of every weight type and awkward
#      shapes (made there with mkmodel): every logit of prefill and decode
#      against the CPU backend, with CUDA graphs, the quantized GEMV, split
#      attention and cuBLASLt plans, and without them; the bf16 GEMV at
#      every decode size; and the default's alternatives: f32 activations
#      in the quantized GEMV (LOCUS_CUDA_GEMV_X8=0), no programmatic
#      dependent launch (LOCUS_CUDA_PDL=0), prefill attention on CUDA
#      cores (LOCUS_CUDA_ATTN_MMA=0);
#   4. greedy generation, CPU vs CUDA backend, token ids compared; seeded
#      sampling through the engine, candidates vs whole rows; greedy through
#      the engine, CUDA vs CPU;
#   5. a Llama-3-8B-shaped bf16 model: batch-1 decode (after a warm-up) as
#      a fraction of the measured copy bandwidth, with and without CUDA
#      graphs, without programmatic dependent launch and with cuBLAS only,
#      prefill of 128 tokens, of 2048 with attention on tensor and CUDA
#      cores, the decode step's
#      profile (LOCUS_CUDA_PROFILE=1);
#   6. the engine on that model under uring-bench, pinned and unpinned,
#      greedy and sampled, and the TTFT of a 128-token prompt through it;
#   steps 5-6 are skipped when too little time is left.
# Output in $OUT (or /tmp/locus-gpu): summary.txt, written row by row, and
# logs.tgz with every log. Env: SKIP_8B=1 (steps 5-6 off).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
B=${LOCUS_GPU_BUNDLE:-build-gpu/bundle}
O=${OUT:-/tmp/locus-gpu}
W=$(mktemp -d /tmp/locus-gpu-work.XXXXXX)
L=$W/logs
mkdir -p "$O" "$L" "$W/real"
T0=$(date +%s)
FAILED=0
S=$O/summary.txt
EP=
elapsed() { echo $(($(date +%s) - T0)); }
note() { echo "[$(elapsed)s] $*"; }
row() { echo "| $1 | $2 |" >>"$S"; }
bad() { FAILED=1; row "$1" "FAIL: $2"; note "FAIL $1: $2"; }
# engine_up CONF LOG SECONDS: starts the engine in the background (EP) and
# waits until it says ready; fails when it exits or the time runs out
engine_up() {
	"$BIN/engine" --config "$1" >"$2" 2>&1 &
	EP=$!
	for _ in $(seq 1 $(($3 * 2))); do
		grep -q 'engine: ready' "$2" && return 0
		kill -0 "$EP" 2>/dev/null || return 1
		sleep 0.5
	done
	return 1
}
engine_down() { # SIGTERM, 10 s to drain, then SIGKILL
	kill "$EP" 2>/dev/null
	for _ in $(seq 1 20); do kill -0 "$EP" 2>/dev/null || break; sleep 0.5; done
	kill -9 "$EP" 2>/dev/null
	wait "$EP" 2>/dev/null
	EP=
}
get_metrics() { # PORT FILE: GET /metrics
	{ exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && timeout 5 cat <&3; } >"$2" 2>/dev/null
	exec 3<&-
}
metric() { # FILE LABEL: the logit rows sampled by path LABEL (0 when absent)
	awk -v p="path=\"$2\"" '/^locus:logit_rows_total\{/ && index($0, p) {s += $2} END {print s + 0}' "$1" 2>/dev/null || echo 0
}
prof_sum() { # FILE: the decode lines of a LOCUS_CUDA_PROFILE=1 report, on one line
	awk '/^cuda profile: [0-9]+ decode steps/ {on = 1; printf "%s us: ", $6; next}
	     /^cuda profile: [0-9]+ prefill/ {on = 0}
	     on && /^cuda profile:   / {n = NF; printf "%s %s (%s), ", substr($0, 17, 18), $(n - 2), $n}' "$1" 2>/dev/null |
		sed 's/  */ /g; s/, $//'
}
finish() {
	[ -n "$EP" ] && kill -9 "$EP" 2>/dev/null
	echo "| total | $(elapsed) s |" >>"$S"
	tar czf "$O/logs.tgz" -C "$L" . 2>/dev/null
	cat "$S"
	rm -rf "$W"
}
trap finish EXIT
printf '| check | result |\n|---|---|\n' >"$S"

[ -x "$B/bin/engine" ] || { bad "bundle" "$B/bin/engine missing: run tools/scripts/gpu-bundle.sh and carry $B"; exit 2; }
HASH=$(tools/scripts/src-hash.sh)
if [ "$(cat "$B/SRC_HASH" 2>/dev/null)" != "$HASH" ]; then
	bad "bundle" "built from other sources than this tree: rerun tools/scripts/gpu-bundle.sh before the device call"
	exit 2
fi
# Programs: the real binaries in $W/real (the module goes next to them),
# called through wrappers that give only them the bundle's libraries.
cp "$B/bin/"* "$W/real/"
LIBS="$PWD/$B/lib"
# the host's CUDA libraries, for a bundled module built without its rpath
CUDA_LIB=
if command -v nvcc >/dev/null; then
	for d in lib64 lib; do
		[ -e "$(dirname "$(command -v nvcc)")/../$d/libcublas.so" ] && { CUDA_LIB=$(cd "$(dirname "$(command -v nvcc)")/../$d" && pwd); break; }
	done
fi
[ -n "$CUDA_LIB" ] && LIBS="$LIBS:$CUDA_LIB"
for p in "$B/bin/"*; do
	n=$(basename "$p")
	[ "$n" = liblocus_cuda.so ] && continue
	printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$LIBS" "$W/real/$n" >"$W/$n"
	chmod +x "$W/$n"
done
BIN=$W

# 1. device, module
note "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.current --format=csv,noheader | tee "$L/device.txt"
row "device" "$(head -n1 "$L/device.txt" | cut -d, -f1), sources ${HASH:0:12}"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d .)
HOST_NVCC=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*')
if [ "${LOCUS_GPU_REBUILD:-0}" != 1 ] && [ "$ARCH" = "$(cat "$B/CUDA_ARCH" 2>/dev/null)" ] &&
	[ "$HOST_NVCC" = "$(cat "$B/NVCC" 2>/dev/null)" ] && [ -f "$B/bin/liblocus_cuda.so" ] &&
	! LD_LIBRARY_PATH="$LIBS" ldd "$W/real/liblocus_cuda.so" 2>&1 | grep -q 'not found'; then
	# built for this very chip by the same nvcc: no need to spend a minute of device time
	row "module" "the bundle's: sm_$ARCH, nvcc $HOST_NVCC like this host's (LOCUS_GPU_REBUILD=1 rebuilds it)"
elif [ -n "$HOST_NVCC" ]; then
	note "module: nvcc $HOST_NVCC, sm_$ARCH"
	if timeout 240 nvcc -O3 -std=c++17 -lineinfo -arch="sm_$ARCH" -shared \
		-Xcompiler -fPIC,-Wall,-Wextra,-fno-strict-aliasing -I. kernels/cuda/cuda_backend.cu kernels/cuda/cuda_tools.cu \
		-o "$W/real/liblocus_cuda.so" -L"$CUDA_LIB" -Xlinker -rpath,"$CUDA_LIB" -lcublas -lcublasLt >"$L/nvcc.log" 2>&1; then
		row "module" "built here for sm_$ARCH with $(nvcc --version | grep -o 'release [0-9.]*')"
	else
		cp "$B/bin/liblocus_cuda.so" "$W/real/" 2>/dev/null
		bad "module" "nvcc failed ($(tail -n1 "$L/nvcc.log")): using the bundled one"
	fi
else
	row "module" "no nvcc here: the bundled one"
fi

# 2. kernels, ceilings, kbench
note "kernels"
timeout 120 "$BIN/cuda-check" --kernels --ceilings >"$L/kernels.txt" 2>&1
rc=$?
grep -E '^(ok|FAIL|skip|ceilings)' "$L/kernels.txt" | head -30
if [ $rc -eq 0 ]; then row "kernel checks" "$(grep -c '^ok' "$L/kernels.txt") passed"; else bad "kernel checks" "rc $rc: $(grep -m1 -E '^(FAIL|skip)' "$L/kernels.txt")"; fi
CEIL=$(grep '^ceilings:' "$L/kernels.txt")
COPY=$(echo "$CEIL" | sed -n 's/.* copy \([0-9.]*\) GB\/s.*/\1/p')
PEAK=$(echo "$CEIL" | sed -n 's/.* gemm \([0-9.]*\) TFLOP.*/\1/p')
row "ceilings" "copy ${COPY:-?} GB/s (read + write), bf16 GEMM ${PEAK:-?} TFLOP/s (8192^3, random data)"
note "kbench"
timeout 150 "$BIN/kbench" --quick >"$L/kbench.txt" 2>&1
rc=$?
head -n 70 "$L/kbench.txt"
if [ $rc -eq 0 ]; then
	row "kbench (kbench.txt in logs)" "gate|up at T=1: cuBLAS bf16 $(awk '/^gate\|up/ && $3 == 1 {print $4 " us, " $7 " GB/s"}' "$L/kbench.txt"); Q4_1 GEMV $(awk '/^Q4_1 gate\|up/ && $4 == 1 {print $5 " us, " $6 " GB/s, " $7 " of copy"}' "$L/kbench.txt"), int8-activation $(awk '/^Q4_1 x8 gate\|up/ && $5 == 1 {print $6 " us, " $8 " of copy"}' "$L/kbench.txt"); at T=8: cuBLAS $(awk '/^gate\|up/ && $3 == 8 {print $4}' "$L/kbench.txt") us, Q4_1 GEMV $(awk '/^Q4_1 gate\|up/ && $4 == 8 {print $5}' "$L/kbench.txt") us; T=2048 GEMM: $(awk '/^gate\|up/ && $3 == 2048 {print $5 " TFLOP/s, " $6 " of peak"}' "$L/kbench.txt")"
	lay() { awk -v f="$1" 'index($0, f) == 1 {print $(NF - 2) " us, " $NF " of copy"; exit}' "$L/kbench.txt"; }
	row "kbench: one 8B decode layer, bf16, back to back" "10 kernels $(lay '10 kernels'); gate|up+swiglu fused $(lay '9 kernels (gate'); and programmatic dependent launch $(lay '9 kernels, programmatic')"
	row "kbench: gate|up then SwiGLU at T=1, two kernels vs one" "$(awk '$2 == "GEMV" && $5 == 1 {printf "%s %s us, ", $1, $6} $2 == "fused" && $3 == 1 {printf "fused %s us; ", $4}' "$L/kbench.txt" | sed 's/; $//')"
else
	bad "kbench" "rc $rc: $(tail -n1 "$L/kbench.txt")"
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
mk hd96-f16 --layers 2 --dim 384 --heads 4 --kv-heads 2 --ffn 1024 --vocab 3001 --type F16 # head size 96
mk hd32-q8 --layers 2 --dim 256 --heads 8 --kv-heads 4 --ffn 768 --vocab 3001 --type Q8_0  # head size 32
mk l3-bf16 --layers 2 --dim 512 --heads 4 --kv-heads 1 --ffn 1536 --rope-base 500000 --rope-scaling llama3 --type BF16 --tokenizer "$TOK"
timeout 300 "$BIN/cuda-check" "$W"/s-*.gguf "$W"/k-*.gguf "$W"/hd*.gguf "$W/qwen2-q8.gguf" "$W/tied-f16.gguf" "$W/l3-bf16.gguf" \
	>"$L/models.txt" 2>&1
rc=$?
grep -E '^(ok|FAIL|skip| )' "$L/models.txt" | head -40
NLT=$(grep -c 'cuBLASLt' "$L/models.txt")
[ "$NLT" -gt 0 ] && row "cuBLASLt fallbacks" "$NLT lines in models.txt, e.g. $(grep -m1 'cuBLASLt' "$L/models.txt")"
if grep -q 'graphs off' "$L/models.txt"; then
	bad "CUDA graphs" "$(grep -m1 'graphs off' "$L/models.txt")"
fi
DEFS=$(grep -m1 -o 'decode GEMV activations.*' "$L/models.txt")
if [ $rc -eq 0 ]; then row "backend vs CPU" "$(grep -c '^ok' "$L/models.txt") models, every logit within tolerance (decode as CUDA graphs; ${DEFS:-defaults ?})"
else bad "backend vs CPU" "rc $rc (models.txt)"; fi
# variant "VAR=v ..." LOG LABEL WHAT MODEL...: cuda-check of the models with
# those switches, every logit against the CPU; a failed graph capture fails too
variant() {
	local ev=$1 log=$2 label=$3 what=$4 rc
	shift 4
	env $ev timeout 120 "$BIN/cuda-check" "$@" >"$L/$log" 2>&1
	rc=$?
	grep -q 'graphs off' "$L/$log" && bad "CUDA graphs, $ev" "$(grep -m1 'graphs off' "$L/$log")"
	if [ $rc -eq 0 ]; then row "$label" "$what, every logit within tolerance"
	else bad "$label" "rc $rc ($log)"; fi
}
variant "LOCUS_CUDA_GRAPHS=0 LOCUS_CUDA_GEMV=0 LOCUS_CUDA_ATTN_SPLIT=0 LOCUS_CUDA_ATTN_TILED=0 LOCUS_CUDA_LT=0 LOCUS_CUDA_PDL=0" \
	models-plain.txt "backend vs CPU, graphs, GEMV, split and tiled attention, cuBLASLt, PDL off" "3 models" \
	"$W/s-Q8_0.gguf" "$W/s-Q4_1.gguf" "$W/l3-bf16.gguf"
variant LOCUS_CUDA_GEMV_BF16=1 models-gemv-bf16.txt "backend vs CPU, bf16 GEMV on decode" "3 float models" \
	"$W/s-F16.gguf" "$W/hd96-f16.gguf" "$W/l3-bf16.gguf"
variant LOCUS_CUDA_GEMV_X8=0 models-gemv-x8-off.txt "backend vs CPU, f32-activation GEMV (LOCUS_CUDA_GEMV_X8=0)" \
	"4 models (Q8_0, Q4_0, Q4_1)" "$W/s-Q8_0.gguf" "$W/s-Q4_0.gguf" "$W/s-Q4_1.gguf" "$W/qwen2-q8.gguf"
variant LOCUS_CUDA_PDL=0 models-pdl-off.txt "backend vs CPU, no programmatic dependent launch (LOCUS_CUDA_PDL=0)" \
	"6 models" "$W/s-BF16.gguf" "$W/s-Q8_0.gguf" "$W/s-Q4_1.gguf" "$W/k-Q4_K.gguf" "$W/qwen2-q8.gguf" "$W/l3-bf16.gguf"
variant LOCUS_CUDA_ATTN_MMA=0 models-mma-off.txt "backend vs CPU, prefill attention on CUDA cores (LOCUS_CUDA_ATTN_MMA=0)" \
	"4 models (head sizes 64, 96, 32, 128)" "$W/s-F16.gguf" "$W/hd96-f16.gguf" "$W/hd32-q8.gguf" "$W/l3-bf16.gguf"

# 4. greedy generation, token ids
note "greedy"
for m in s-Q8_0 l3-bf16; do
	for be in cpu cuda; do
		timeout 60 "$BIN/generate" -m "$W/$m.gguf" --prompt-ids 1,300,301,302,303,304,305 -n 32 --temp 0 --ids \
			--backend "$be" >"$L/greedy-$m-$be.txt" 2>"$L/greedy-$m-$be.err"
	done
	if [ ! -s "$L/greedy-$m-cpu.txt" ] || [ ! -s "$L/greedy-$m-cuda.txt" ]; then
		bad "greedy $m" "no output: $(tail -qn1 "$L/greedy-$m-cpu.err" "$L/greedy-$m-cuda.err" | tr '\n' ' ')"
	elif cmp -s "$L/greedy-$m-cpu.txt" "$L/greedy-$m-cuda.txt"; then
		row "greedy $m" "32 tokens identical"
	else
		read -ra a <"$L/greedy-$m-cpu.txt"; read -ra b <"$L/greedy-$m-cuda.txt"
		i=0; while [ $i -lt ${#a[@]} ] && [ "${a[$i]}" = "${b[$i]:-}" ]; do i=$((i + 1)); done
		row "greedy $m" "differ from token $i (cpu ${a[$i]:-none}, cuda ${b[$i]:-none}): a near tie or a bug, see cuda-check"
	fi
done

# 4b. sampled through the engine: the device's candidates (and the rows fetched
# after them) against whole rows (LOCUS_SAMPLE_FROM_TOP=0), the same seeded
# requests one at a time, so both engines compute the same logits. An untied
# output makes the rows flat enough that many draws land past the 64 (with
# tied embeddings a random model repeats its last token).
note "sampled: candidates vs whole rows"
mk samp-bf16 --layers 2 --dim 512 --heads 4 --kv-heads 1 --ffn 1536 --type BF16 --output-type BF16 --tokenizer "$TOK"
post() { # port, JSON body: the response, headers and body
	{ exec 4<>"/dev/tcp/127.0.0.1/$1" &&
		printf 'POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
			"${#2}" "$2" >&4 && timeout 20 cat <&4; } 2>/dev/null
	exec 4<&-
}
PIDS='"prompt":[1,300,301,302,303,304,305],"max_tokens":32,"ignore_eos":true'
REQS=("{$PIDS,\"temperature\":1,\"seed\":11}" "{$PIDS,\"temperature\":0.8,\"top_p\":0.9,\"seed\":12}"
	"{$PIDS,\"temperature\":0.7,\"min_p\":0.05,\"seed\":13}" "{$PIDS,\"temperature\":0.9,\"top_k\":40,\"logprobs\":2,\"seed\":14}")
printf '[server]\nlisten = 127.0.0.1:18182\n[model]\npath = %s\n[backend]\ntype = cuda\n[numa]\npin = off\n[kv]\nmemory = 256MiB\n' \
	"$W/samp-bf16.gguf" >"$W/e-s.conf"
for mode in top whole; do
	if [ $mode = top ]; then FT=; else FT=0; fi
	: >"$L/sampled-$mode.txt"
	if LOCUS_SAMPLE_FROM_TOP=$FT engine_up "$W/e-s.conf" "$L/engine-s-$mode.log" 30; then
		for r in "${REQS[@]}"; do
			post 18182 "$r" | grep -o '"text":"\([^"\\]\|\\.\)*"' >>"$L/sampled-$mode.txt"
		done
		get_metrics 18182 "$L/metrics-s-$mode.txt"
	fi
	engine_down
done
NT=$(metric "$L/metrics-s-top.txt" top)
NM=$(metric "$L/metrics-s-top.txt" top_miss)
NW=$(metric "$L/metrics-s-whole.txt" rows)
if [ "$(wc -l <"$L/sampled-top.txt")" -ne 4 ] || [ "$(wc -l <"$L/sampled-whole.txt")" -ne 4 ]; then
	bad "sampled, candidates vs whole rows" "not 4 answers each (engine-s-*.log, sampled-*.txt)"
elif ! cmp -s "$L/sampled-top.txt" "$L/sampled-whole.txt"; then
	bad "sampled, candidates vs whole rows" "texts differ (sampled-top.txt, sampled-whole.txt)"
elif [ "$NT" -gt 0 ] && [ "$NM" -gt 0 ] && [ "$NW" -ge 128 ]; then
	row "sampled, candidates vs whole rows (samp-bf16, 4 x 32 tokens)" "same texts; $NT rows from the top-64 alone, $NM fetched after them; the other engine $NW whole rows"
else
	bad "sampled, candidates vs whole rows" "paths: top $NT, top_miss $NM, whole $NW (expected top > 0, top_miss > 0, whole >= 128)"
fi

# 4c. greedy through the engine with its staging bound to the GPU's node and
# registered (the argmax kernel writes the ids straight into it): the CUDA
# engine's text against the CPU engine's
GREQ="{$PIDS,\"temperature\":0}"
for be in cuda cpu; do
	printf '[server]\nlisten = 127.0.0.1:18183\n[model]\npath = %s\n[backend]\ntype = %s\n[numa]\nnode = auto\npin = on\n[kv]\nmemory = 256MiB\n' \
		"$W/samp-bf16.gguf" "$be" >"$W/e-g-$be.conf"
	: >"$L/greedy-engine-$be.txt"
	if engine_up "$W/e-g-$be.conf" "$L/engine-g-$be.log" 30; then
		post 18183 "$GREQ" | grep -o '"text":"\([^"\\]\|\\.\)*"' >"$L/greedy-engine-$be.txt"
	fi
	engine_down
done
STG=$(grep -o 'host staging[^;]*' "$L/engine-g-cuda.log" | head -n1)
if [ ! -s "$L/greedy-engine-cuda.txt" ] || [ ! -s "$L/greedy-engine-cpu.txt" ]; then
	bad "greedy through the engine, CUDA vs CPU" "no answer (engine-g-*.log)"
elif cmp -s "$L/greedy-engine-cuda.txt" "$L/greedy-engine-cpu.txt"; then
	row "greedy through the engine, CUDA vs CPU (samp-bf16, 32 tokens)" "same text; ${STG:-staging ?}"
else
	bad "greedy through the engine, CUDA vs CPU" "texts differ (greedy-engine-*.txt; a near tie or a bug); ${STG:-staging ?}"
fi

# 4d. a Llama-3.2-1B-shaped Q4_1 model: batch-1 decode by default (the
# quantized GEMV with int8 activations, programmatic dependent launch),
# without PDL (LOCUS_CUDA_PDL=0: the same arithmetic, so the same ids),
# with f32 activations as well (LOCUS_CUDA_GEMV_X8=0, the default before
# 2026-11-27), and on the bf16 copies (LOCUS_CUDA_GEMV=0: k_gemv_bf16)
note "1B-shaped Q4_1"
mk q1b --layers 16 --dim 2048 --heads 32 --kv-heads 8 --ffn 8192 --vocab 128256 --rope-base 500000 --type Q4_1
if [ -f "$W/q1b.gguf" ]; then
	Q1=
	for v in default nopdl f32act bf16; do
		case $v in
		default) EV= ;;
		nopdl) EV=LOCUS_CUDA_PDL=0 ;;
		f32act) EV="LOCUS_CUDA_PDL=0 LOCUS_CUDA_GEMV_X8=0" ;;
		bf16) EV="LOCUS_CUDA_PDL=0 LOCUS_CUDA_GEMV=0" ;;
		esac
		env $EV timeout 60 "$BIN/generate" -m "$W/q1b.gguf" --prompt-ids "$(seq -s, 1000 1063)" -n 128 --temp 0 \
			--ignore-eos --ids --backend cuda -v --warmup >"$L/q1b-$v.ids" 2>"$L/q1b-$v.txt"
		D=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$L/q1b-$v.txt")
		Q1="$Q1${Q1:+, }$v ${D:-?} tok/s"
	done
	WQ=$(sed -n 's/.* \([0-9.]*\) MiB weights.*/\1/p' "$L/q1b-default.txt" | head -n1)
	if [ -s "$L/q1b-default.ids" ] && cmp -s "$L/q1b-default.ids" "$L/q1b-nopdl.ids"; then Q1="$Q1; nopdl: the same ids as default"
	else Q1="$Q1; nopdl: ids DIFFER from the default's (q1b-*.ids)"; FAILED=1; fi
	cmp -s "$L/q1b-default.ids" "$L/q1b-f32act.ids" && Q1="$Q1; f32act: the same ids" || Q1="$Q1; f32act: other ids (other rounding)"
	row "1B-shaped Q4_1 decode, batch 1 (${WQ:-?} MiB as stored)" "$Q1"
fi
rm -f "$W/q1b.gguf"

# 5. Llama-3-8B-shaped bf16 (about 16 GB: in memory when /dev/shm has room)
if [ "${SKIP_8B:-0}" = 1 ]; then
	row "8B-shaped model" "skipped (SKIP_8B=1)"
elif [ "$(elapsed)" -gt 330 ]; then
	row "8B-shaped model" "skipped: $(elapsed) s gone, not enough left"
else
	note "8B-shaped model"
	D=$W
	[ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')" -gt 20000000 ] 2>/dev/null && D=/dev/shm
	if [ "$(df -Pk "$D" | awk 'NR == 2 {print $4}')" -lt 18000000 ]; then
		bad "8B-shaped model" "less than 18 GB free in $D"
	else
		M8=$D/locus-l3-8b.$$.gguf
		trap 'rm -f "$M8"; finish' EXIT
		if ! timeout 200 "$BIN/mkmodel" -o "$M8" --layers 32 --dim 4096 --heads 32 --kv-heads 8 --ffn 14336 --ctx 8192 \
			--vocab 128256 --rope-base 500000 --type BF16 >"$L/8b-mkmodel.txt" 2>&1; then
			rm -f "$M8"
			bad "mkmodel 8B" "failed or timed out"
		fi
	fi
	if [ -f "${M8:-}" ]; then
		P=$(seq -s, 1000 1127) # 128 prompt tokens
		timeout 150 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 128 --temp 0 --ignore-eos --ids --backend cuda -v \
			--warmup >"$L/8b.ids" 2>"$L/8b-generate.txt"
		grep -q 'graphs off' "$L/8b-generate.txt" && bad "CUDA graphs, 8B" "$(grep -m1 'graphs off' "$L/8b-generate.txt")"
		WB=$(sed -n 's/.* \([0-9.]*\) MiB weights.*/\1/p' "$L/8b-generate.txt" | head -n1)
		DEC=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$L/8b-generate.txt")
		PRE=$(sed -n 's/.*prefill: [0-9]* tokens in \([0-9.]*\) ms.*/\1/p' "$L/8b-generate.txt")
		if [ -n "$DEC" ] && [ -n "$WB" ]; then
			BW=$(awk -v w="$WB" -v t="$DEC" 'BEGIN { printf "%.0f", w * 1048576 * t / 1e9 }')
			FR=$(awk -v b="$BW" -v c="${COPY:-0}" 'BEGIN { if (c > 0) printf "%.1f%%", 100 * b / c; else print "?" }')
			row "8B decode, batch 1, graphs" "$DEC tok/s = $BW GB/s of weights, $FR of the copy bandwidth (target 85%); $(grep -m1 -o 'programmatic dependent launch [a-z]*' "$L/8b-generate.txt")"
			row "8B prefill, 128 tokens" "${PRE:-?} ms after a warm-up (TTFT target 15 ms)"
		else
			bad "8B generate" "no timing: $(tail -n2 "$L/8b-generate.txt" | tr '\n' ' ')"
		fi
		if [ "$(elapsed)" -lt 370 ]; then
			LOCUS_CUDA_PDL=0 timeout 90 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 128 --temp 0 --ignore-eos \
				--ids --backend cuda -v --warmup >"$L/8b-pdl.ids" 2>"$L/8b-generate-pdl.txt"
			DECP=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$L/8b-generate-pdl.txt")
			if [ -n "$DECP" ] && [ -n "$WB" ]; then
				BWP=$(awk -v w="$WB" -v t="$DECP" 'BEGIN { printf "%.0f", w * 1048576 * t / 1e9 }')
				FRP=$(awk -v b="$BWP" -v c="${COPY:-0}" 'BEGIN { if (c > 0) printf "%.1f%%", 100 * b / c; else print "?" }')
				# the same arithmetic in another schedule: the same greedy ids
				if [ -s "$L/8b.ids" ] && cmp -s "$L/8b.ids" "$L/8b-pdl.ids"; then SAME="the same 128 ids as with it"
				else SAME="ids DIFFER from the run with it (8b.ids, 8b-pdl.ids)"; FAILED=1; fi
				grep -q 'graphs off' "$L/8b-generate-pdl.txt" && bad "CUDA graphs, 8B, LOCUS_CUDA_PDL=0" "$(grep -m1 'graphs off' "$L/8b-generate-pdl.txt")"
				row "8B decode, batch 1, graphs, no programmatic dependent launch (LOCUS_CUDA_PDL=0)" "$DECP tok/s = $BWP GB/s, $FRP of the copy bandwidth; $SAME"
			else
				bad "8B generate, LOCUS_CUDA_PDL=0" "no timing: $(tail -n2 "$L/8b-generate-pdl.txt" | tr '\n' ' ')"
			fi
		fi
		if [ "$(elapsed)" -lt 370 ]; then
			# a 2048-token prompt in one step: attention by tiles on CUDA cores
			# (LOCUS_CUDA_ATTN_MMA=0) and on tensor cores (the default)
			P2=$(seq -s, 1000 3047)
			for am in 0 1; do
				LOCUS_CUDA_ATTN_MMA=$am timeout 90 "$BIN/generate" -m "$M8" --prompt-ids "$P2" -n 4 --temp 0 \
					--ignore-eos --ids --backend cuda -v --warmup --ubatch 2048 >"$L/8b-p2048-mma$am.ids" \
					2>"$L/8b-p2048-mma$am.txt"
			done
			PA=$(sed -n 's/.*prefill: [0-9]* tokens in \([0-9.]*\) ms.*/\1/p' "$L/8b-p2048-mma0.txt")
			PB=$(sed -n 's/.*prefill: [0-9]* tokens in \([0-9.]*\) ms.*/\1/p' "$L/8b-p2048-mma1.txt")
			[ -n "$PA" ] || bad "8B prefill 2048, LOCUS_CUDA_ATTN_MMA=0" "no timing: $(tail -n1 "$L/8b-p2048-mma0.txt")"
			[ -n "$PB" ] || bad "8B prefill 2048, tensor cores" "no timing: $(tail -n1 "$L/8b-p2048-mma1.txt")"
			if [ -s "$L/8b-p2048-mma0.ids" ] && cmp -s "$L/8b-p2048-mma0.ids" "$L/8b-p2048-mma1.ids"; then SAME="the same 4 ids"
			else SAME="ids differ (f16 scores on tensor cores: a near tie or a bug, see the attention checks)"; fi
			row "8B prefill, 2048 tokens in one step" "attention on CUDA cores (LOCUS_CUDA_ATTN_MMA=0) ${PA:-?} ms, on $(grep -m1 -o 'prefill attention on [a-zA-Z ]*' "$L/8b-p2048-mma1.txt" | sed 's/prefill attention on //') (the default) ${PB:-?} ms; $SAME"
		fi
		if [ "$(elapsed)" -lt 380 ]; then
			LOCUS_CUDA_GRAPHS=0 timeout 90 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 128 --temp 0 --ignore-eos \
				--ids --backend cuda -v --warmup >/dev/null 2>"$L/8b-generate-nographs.txt"
			DEC0=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$L/8b-generate-nographs.txt")
			row "8B decode, batch 1, no graphs" "${DEC0:-?} tok/s"
		fi
		if [ "$(elapsed)" -lt 400 ]; then
			# cuBLAS for every matrix product (the default takes our GEMV on the bf16 rows at 1-2 tokens)
			LOCUS_CUDA_GEMV_BF16=0 timeout 90 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 128 --temp 0 --ignore-eos \
				--ids --backend cuda -v --warmup >/dev/null 2>"$L/8b-generate-cublas.txt"
			DEC1=$(sed -n 's/.*decode: [0-9]* steps in [0-9.]* ms (\([0-9.]*\) tok\/s).*/\1/p' "$L/8b-generate-cublas.txt")
			row "8B decode, batch 1, graphs, cuBLAS only (LOCUS_CUDA_GEMV_BF16=0)" "${DEC1:-?} tok/s"
		fi
		# where a decode step's GPU time goes (LOCUS_CUDA_PROFILE=1: events
		# between the operations, inside the graph), as it runs and cuBLAS only
		for gv in 2 0; do
			[ "$(elapsed)" -lt 420 ] || break
			LOCUS_CUDA_PROFILE=1 LOCUS_CUDA_GEMV_BF16=$gv timeout 90 "$BIN/generate" -m "$M8" --prompt-ids "$P" -n 64 \
				--temp 0 --ignore-eos --ids --backend cuda -v --warmup >/dev/null 2>"$L/8b-profile-gemv$gv.txt"
			row "8B decode step profile, $([ $gv = 0 ] && echo 'cuBLAS only' || echo 'default') (us per step)" "$(prof_sum "$L/8b-profile-gemv$gv.txt")"
		done
		# 6. engine, pinned and unpinned
		for pin in on off; do
			if [ "$(elapsed)" -gt 430 ]; then
				row "engine pin=$pin" "skipped: $(elapsed) s gone"
				continue
			fi
			cat >"$W/e-$pin.conf" <<-EOF
			[server]
			listen = 127.0.0.1:18181
			[model]
			path = $M8
			ctx = 2048
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
			if engine_up "$W/e-$pin.conf" "$L/engine-$pin.log" 90; then
				timeout 100 "$BIN/uring-bench" --url http://127.0.0.1:18181 -n 64 -c 8 --max-tokens 64 --ignore-eos \
					--stream --warmup 8 >"$L/bench-$pin.txt" 2>&1 || bad "uring-bench pin=$pin" "see bench-$pin.txt"
				f=$L/bench-$pin.txt
				TPS=$(sed -n 's/.*, \([0-9.]*\) tokens\/s.*/\1/p' "$f")
				row "engine pin=$pin, c=8, 64 tokens" "${TPS:-?} tok/s; ms: latency p99 $(awk '$1 == "latency" {print $6}' "$f"), TTFT p50 $(awk '$1 == "ttft" {print $3}' "$f"), ITL p50 $(awk '$1 == "itl" {print $3}' "$f")"
				if [ "$pin" = on ]; then
					# TTFT through the server, one request at a time: 128-token
					# prompts of ids (uring-bench --prompt-len), max_tokens 1
					timeout 60 "$BIN/uring-bench" --url http://127.0.0.1:18181 --prompt-len 128 -n 20 -c 1 \
						--max-tokens 1 --stream --warmup 2 >"$L/ttft-128.txt" 2>&1 || bad "uring-bench TTFT" "see ttft-128.txt"
					row "engine pin=on, TTFT of a 128-token prompt, one request at a time (uring-bench --prompt-len 128, 20 requests)" \
						"ms: p50 $(awk '$1 == "ttft" {print $3}' "$L/ttft-128.txt"), p99 $(awk '$1 == "ttft" {print $6}' "$L/ttft-128.txt"), max $(awk '$1 == "ttft" {print $7}' "$L/ttft-128.txt") (target 15 ms)"
					# sampled: rows leave the device as their 64 best logits (logit_rows_total{path="top"})
					timeout 60 "$BIN/uring-bench" --url http://127.0.0.1:18181 -n 32 -c 8 --max-tokens 64 --ignore-eos \
						--temperature 0.8 --top-k 40 >"$L/bench-sampled.txt" 2>&1 || bad "uring-bench sampled" "see bench-sampled.txt"
					STPS=$(sed -n 's/.*, \([0-9.]*\) tokens\/s.*/\1/p' "$L/bench-sampled.txt")
					get_metrics 18181 "$L/metrics-pin-on.txt"
					NTOP=$(metric "$L/metrics-pin-on.txt" top)
					NROW=$(metric "$L/metrics-pin-on.txt" rows)
					if [ "$NTOP" -gt 0 ] && [ "$NROW" -eq 0 ]; then
						row "engine pin=on, sampled (T 0.8, top-k 40), c=8" "${STPS:-?} tok/s; $NTOP rows sampled from the device's top-64, $NROW fetched whole"
					else
						bad "engine pin=on, sampled" "logit rows: top ${NTOP:-?}, whole ${NROW:-?} (expected top > 0, whole 0; metrics-pin-on.txt)"
					fi
					# OpenAI's defaults (T 1, top_k and top_p off): candidates first, the row
					# fetched when the draw lands past them (path="top_miss"; a random-weights
					# model's rows are flat, so most do here)
					timeout 60 "$BIN/uring-bench" --url http://127.0.0.1:18181 -n 32 -c 8 --max-tokens 64 --ignore-eos \
						--temperature 1 >"$L/bench-sampled-t1.txt" 2>&1 || bad "uring-bench sampled T 1" "see bench-sampled-t1.txt"
					DTPS=$(sed -n 's/.*, \([0-9.]*\) tokens\/s.*/\1/p' "$L/bench-sampled-t1.txt")
					get_metrics 18181 "$L/metrics-pin-on-t1.txt"
					NTOP2=$(metric "$L/metrics-pin-on-t1.txt" top)
					NMISS=$(metric "$L/metrics-pin-on-t1.txt" top_miss)
					NROW2=$(metric "$L/metrics-pin-on-t1.txt" rows)
					NTOP1=$((NTOP2 - NTOP)) # this run's
					NT1=$((NTOP1 + NMISS))
					if [ "$NT1" -ge $((32 * 64)) ] && [ "$NROW2" -eq 0 ]; then
						row "engine pin=on, sampled (T 1, no top-k/top-p), c=8" "${DTPS:-?} tok/s; of $NT1 rows, $NTOP1 sampled from the top-64 alone, ${NMISS:-?} fetched whole after them"
					else
						bad "engine pin=on, sampled T 1" "logit rows: top $NTOP1, top_miss ${NMISS:-?}, whole ${NROW2:-?} (expected top + top_miss >= 2048, whole 0; metrics-pin-on-t1.txt)"
					fi
				fi
			else
				bad "engine pin=$pin" "not ready: $(tail -n1 "$L/engine-$pin.log")"
			fi
			engine_down
			grep -q 'graphs off' "$L/engine-$pin.log" && bad "CUDA graphs, engine" "$(grep -m1 'graphs off' "$L/engine-$pin.log")"
		done
		rm -f "$M8"
	fi
fi
exit $FAILED
