#!/usr/bin/env bash
# Serving benchmark: Locus's engine (CPU backend) against llama.cpp's
# llama-server, same model, same threads, same prompts and lengths, driven
# by the same client (bench/loadgen.py), in interleaved rounds (L C L C ...).
#
#   bench/serve-vs-llamacpp.sh [-m MODEL] [-t THREADS] [-c CONCURRENCY] [-n REQUESTS] [-N MAX_TOKENS] [-R ROUNDS]
#
# llama-server is built from the llama-cpp-python sdist as in
# bench/compare-llamacpp.sh (every SIMD extension but AMX, which crashes on
# this VM), with -np equal to the concurrency (one slot per client) and
# continuous batching. Requests: temperature 0, ignore_eos, max_tokens fixed,
# so both servers generate exactly the same number of tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=$(nproc); CONC=4; N=40; MAXTOK=64; ROUNDS=3
while getopts "m:t:c:n:N:R:" o; do
  case $o in
    m) MODEL=$OPTARG ;; t) THREADS=$OPTARG ;; c) CONC=$OPTARG ;; n) N=$OPTARG ;;
    N) MAXTOK=$OPTARG ;; R) ROUNDS=$OPTARG ;; *) exit 2 ;;
  esac
done
LCPP_VER=0.3.36
CACHE=.cache/llamacpp
LS=$CACHE/build/bin/llama-server
if [ ! -x "$LS" ]; then
  bench/compare-llamacpp.sh -R 0 >/dev/null 2>&1 || true   # fetches and configures llama.cpp
  cmake -S "$CACHE/llama_cpp_python-$LCPP_VER/vendor/llama.cpp" -B "$CACHE/build" -DLLAMA_BUILD_SERVER=ON >/dev/null
  cmake --build "$CACHE/build" -j"$(nproc)" --target llama-server >/dev/null
fi
[ -x build/bin/engine ] || tools/scripts/build.sh release >/dev/null
PY=python3
TMP=$(mktemp -d)
LPORT=$((20000 + RANDOM % 10000)); CPORT=$((LPORT + 1))
cat > "$TMP/locus.conf" <<CONF
[server]
listen = 127.0.0.1:$LPORT
net_threads = 1
[model]
path = $PWD/$MODEL
[backend]
type = cpu
threads = $THREADS
[numa]
pin = off
[batching]
max_seqs = $CONC
[kv]
tokens = 16384
CONF
build/bin/engine --config "$TMP/locus.conf" > "$TMP/locus.log" 2>&1 &
LPID=$!
"$LS" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -c 16384 -np "$CONC" --port "$CPORT" --host 127.0.0.1 \
  > "$TMP/llama.log" 2>&1 &
CPID=$!
trap 'kill $LPID $CPID 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
for p in $LPORT $CPORT; do
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$p/health" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
# warm up both (page cache, slots, thread pools)
for p in $LPORT $CPORT; do
  $PY bench/loadgen.py --url "http://127.0.0.1:$p" -n $((2 * CONC)) -c "$CONC" --max-tokens 16 >/dev/null || true
done
OUT=.cache/serve-$(date +%Y%m%d-%H%M%S).jsonl
mkdir -p .cache
: > "$OUT"
for ((r = 1; r <= ROUNDS; r++)); do
  for who in locus llama.cpp; do
    port=$LPORT; [ $who = llama.cpp ] && port=$CPORT
    for mode in "" "--stream"; do
      res=$($PY bench/loadgen.py --url "http://127.0.0.1:$port" -n "$N" -c "$CONC" --max-tokens "$MAXTOK" $mode || true)
      echo "{\"server\":\"$who\",\"round\":$r,\"stream\":$([ -n "$mode" ] && echo true || echo false),\"res\":$res}" >> "$OUT"
    done
  done
done
$PY - "$OUT" "$CONC" "$N" "$MAXTOK" "$THREADS" <<'PYEOF'
import json, statistics, sys
path, conc, n, maxtok, threads = sys.argv[1:6]
rows = [json.loads(l) for l in open(path)]
print(f"concurrency {conc}, {n} requests x {maxtok} tokens per round, {threads} threads, raw data {path}\n")
print("| mode | metric | Locus (median) | spread | llama.cpp (median) | spread | Locus / llama.cpp |")
print("|---|---|---:|---:|---:|---:|---:|")
for stream in (False, True):
    for key, label in (("out_tok_s", "output tokens/s"), ("lat_p50_ms", "p50 latency ms"), ("lat_p95_ms", "p95 latency ms"),
                       ("ttft_p50_ms", "TTFT p50 ms")):
        if key.startswith("ttft") and not stream:
            continue
        vals = {}
        for who in ("locus", "llama.cpp"):
            vals[who] = [r["res"][key] for r in rows if r["server"] == who and r["stream"] == stream and key in r["res"]]
        if not all(vals.values()):
            continue
        a, b = statistics.median(vals["locus"]), statistics.median(vals["llama.cpp"])
        print(f"| {'stream' if stream else 'whole'} | {label} | {a:.1f} | {min(vals['locus']):.1f}..{max(vals['locus']):.1f} | "
              f"{b:.1f} | {min(vals['llama.cpp']):.1f}..{max(vals['llama.cpp']):.1f} | {a / b:.2f}x |")
errs = sum(r["res"]["errors"] for r in rows)
print(f"\nerrors: {errs}")
PYEOF
