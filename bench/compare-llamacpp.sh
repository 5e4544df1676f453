#!/usr/bin/env bash
# Side-by-side CPU benchmark: Locus (build/bin/llm-bench) against llama.cpp's
# llama-bench on the same model, threads and machine, in interleaved rounds
# (L C L C ...), so drift in machine load hits both alike.
#
#   bench/compare-llamacpp.sh [-m MODEL] [-t THREADS] [-p 512] [-n 128] [-R rounds] [-r reps]
#
# llama.cpp comes from the PyPI sdist of llama-cpp-python (vendor/llama.cpp),
# built once into .cache/llamacpp with every x86 SIMD extension this CPU has,
# except AMX: ggml's AMX path crashes on this VM (SIGSEGV in
# ggml_backend_amx_mul_mat), so GGML_NATIVE is off and the flags are explicit.
# Output: a markdown table (median over all rounds x reps, min..max spread)
# and the raw JSON lines in .cache/compare-*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=$(nproc)
PP=512; TG=128; ROUNDS=3; REPS=3
while getopts "m:t:p:n:R:r:" o; do
  case $o in
    m) MODEL=$OPTARG ;; t) THREADS=$OPTARG ;; p) PP=$OPTARG ;; n) TG=$OPTARG ;;
    R) ROUNDS=$OPTARG ;; r) REPS=$OPTARG ;; *) exit 2 ;;
  esac
done
LCPP_VER=0.3.36
CACHE=.cache/llamacpp
LB=$CACHE/build/bin/llama-bench
if [ ! -x "$LB" ]; then
  mkdir -p "$CACHE"
  python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$CACHE" "llama-cpp-python==$LCPP_VER"
  tar -xzf "$CACHE/llama_cpp_python-$LCPP_VER.tar.gz" -C "$CACHE"
  SRC=$CACHE/llama_cpp_python-$LCPP_VER/vendor/llama.cpp
  flags=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  has() { grep -qw "$1" /proc/cpuinfo; }
  has avx && flags+=(-DGGML_AVX=ON); has avx2 && flags+=(-DGGML_AVX2=ON); has fma && flags+=(-DGGML_FMA=ON)
  has f16c && flags+=(-DGGML_F16C=ON); has bmi2 && flags+=(-DGGML_BMI2=ON); has avx_vnni && flags+=(-DGGML_AVX_VNNI=ON)
  has avx512f && flags+=(-DGGML_AVX512=ON); has avx512vbmi && flags+=(-DGGML_AVX512_VBMI=ON)
  has avx512_vnni && flags+=(-DGGML_AVX512_VNNI=ON); has avx512_bf16 && flags+=(-DGGML_AVX512_BF16=ON)
  cmake -S "$SRC" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_SERVER=OFF "${flags[@]}" >/dev/null
  cmake --build "$CACHE/build" -j"$(nproc)" --target llama-bench >/dev/null
fi
[ -x build/bin/llm-bench ] || tools/scripts/build.sh release >/dev/null
OUT=.cache/compare-$(date +%Y%m%d-%H%M%S).jsonl
: > "$OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  build/bin/llm-bench -m "$MODEL" -t "$THREADS" -p "$PP" -n "$TG" -b 1,4 -r "$REPS" --json |
    sed 's/^/{"engine":"locus","round":'"$r"',"rec":/; s/$/}/' >> "$OUT"
  "$LB" -m "$MODEL" -t "$THREADS" -p "$PP" -n "$TG" -r "$REPS" -o jsonl 2>/dev/null |
    sed 's/^/{"engine":"llama.cpp","round":'"$r"',"rec":/; s/$/}/' >> "$OUT"
done
python3 - "$OUT" "$MODEL" "$THREADS" "$TG" <<'PYEOF'
import json, statistics, sys
path, model, threads, tg = sys.argv[1:5]
res = {}
for line in open(path):
    d = json.loads(line); rec = d["rec"]; eng = d["engine"]
    if eng == "locus":
        test = rec["test"]
        # per-rep figures are not in the JSON: use the median and the extremes of each round
        vals = [rec["median_tps"], rec["min_tps"], rec["max_tps"]]
        res.setdefault((eng, test), []).append(vals)
    else:
        test = ("pp%d" % rec["n_prompt"]) if rec["n_gen"] == 0 else ("tg%d" % rec["n_gen"])
        samples = rec.get("samples_ts") or [rec["avg_ts"]]
        res.setdefault((eng, test), []).append([statistics.median(samples), min(samples), max(samples)])
def summary(k):
    rows = res.get(k)
    if not rows: return None
    meds = [r[0] for r in rows]
    return statistics.median(meds), min(r[1] for r in rows), max(r[2] for r in rows), len(rows)
print(f"model {model}, {threads} threads, raw data {path}\n")
print("| test | Locus t/s (median) | spread | llama.cpp t/s (median) | spread | Locus / llama.cpp |")
print("|---|---:|---:|---:|---:|---:|")
tests = sorted({t for (_, t) in res}, key=lambda t: (not t.startswith("pp"), t))
for t in tests:
    a, b = summary(("locus", t)), summary(("llama.cpp", t))
    fa = f"{a[0]:.1f} | {a[1]:.1f}..{a[2]:.1f}" if a else "- | -"
    fb = f"{b[0]:.1f} | {b[1]:.1f}..{b[2]:.1f}" if b else "- | -"
    ratio = f"{a[0]/b[0]:.2f}x" if a and b else "-"
    print(f"| {t} | {fa} | {fb} | {ratio} |")
one, four = summary(("locus", "tg" + tg)), summary(("locus", "tg%s x4" % tg))
if one and four:
    print(f"\nbatched decode, 4 sequences: {four[0]:.1f} t/s aggregate = {four[0]/one[0]:.2f}x single-stream ({one[0]:.1f} t/s)")
PYEOF
