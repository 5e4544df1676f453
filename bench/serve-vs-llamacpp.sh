#!/usr/bin/env bash
# Serving benchmark: Locus's engine (CPU backend) against llama.cpp's
# llama-server, same model, same threads, same prompts and lengths, driven
# by the same client (build/bin/uring-bench), in interleaved rounds
# (L C L C ...), whole and streamed responses.
#
#   bench/serve-vs-llamacpp.sh [-m MODEL] [-t THREADS] [-c CONCURRENCY] [-n REQUESTS] [-N MAX_TOKENS]
#                              [-R ROUNDS] [-w WARMUP]
#
# llama-server is built from the llama-cpp-python sdist as in
# bench/compare-llamacpp.sh (every SIMD extension but AMX, which crashes on
# this VM), with -np equal to the concurrency (one slot per client) and
# continuous batching. Requests (uring-bench's built-in prompt list, used
# round robin): temperature 0, ignore_eos, max_tokens fixed, so both servers
# generate exactly the same number of tokens; the script checks that every
# request succeeded and that each server reported N x MAX_TOKENS output
# tokens, and fails otherwise. Each run is closed loop with CONCURRENCY
# keep-alive connections, after WARMUP unrecorded requests (default: one per
# connection) on the same connections (llama-server closes the connection
# after every streamed response; uring-bench then reconnects, see
# bench/uring-bench/proto.c). Output: a markdown table (medians
# over the rounds, min..max, Locus / llama.cpp) and uring-bench's JSON of
# every run in .cache/serve-DATE/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=$(nproc); CONC=4; N=40; MAXTOK=64; ROUNDS=3; WARMUP=
while getopts "m:t:c:n:N:R:w:" o; do
  case $o in
    m) MODEL=$OPTARG ;; t) THREADS=$OPTARG ;; c) CONC=$OPTARG ;; n) N=$OPTARG ;;
    N) MAXTOK=$OPTARG ;; R) ROUNDS=$OPTARG ;; w) WARMUP=$OPTARG ;; *) exit 2 ;;
  esac
done
WARMUP=${WARMUP:-$CONC}
LCPP_VER=0.3.36
CACHE=.cache/llamacpp
LS=$CACHE/build/bin/llama-server
if [ ! -x "$LS" ]; then
  bench/compare-llamacpp.sh -R 0 >/dev/null 2>&1 || true   # fetches and configures llama.cpp
  cmake -S "$CACHE/llama_cpp_python-$LCPP_VER/vendor/llama.cpp" -B "$CACHE/build" -DLLAMA_BUILD_SERVER=ON >/dev/null
  cmake --build "$CACHE/build" -j"$(nproc)" --target llama-server >/dev/null
fi
[ -x build/bin/engine ] && [ -x build/bin/uring-bench ] || tools/scripts/build.sh release >/dev/null
UB=build/bin/uring-bench
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
  up=0
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$p/health" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.2
  done
  if [ $up = 0 ]; then
    echo "server on port $p did not come up; logs:" >&2
    tail -20 "$TMP/locus.log" "$TMP/llama.log" >&2
    exit 1
  fi
done
OUT=.cache/serve-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
# One uring-bench run; fails the script unless all N requests succeeded and
# N x MAX_TOKENS output tokens were reported.
bench() { # name port json_file extra-args...
  local who=$1 port=$2 json=$3; shift 3
  if ! "$UB" -q --url "http://127.0.0.1:$port" -n "$N" -c "$CONC" --max-tokens "$MAXTOK" --temperature 0 \
      --ignore-eos --json "$json" "$@" > "$json.txt" 2>&1; then
    echo "uring-bench against $who failed:" >&2; cat "$json.txt" >&2; exit 1
  fi
  python3 - "$json" "$N" "$MAXTOK" "$who" <<'PYEOF' || { cat "$json.txt" >&2; exit 1; }
import json, sys
path, n, maxtok, who = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
d = json.load(open(path))
ok, err, toks = d["requests"]["ok"], d["requests"]["errors"], d["throughput"]["output_tokens"]
if ok != n or err:
    sys.exit(f"{who}: {ok} of {n} requests succeeded, {err} errors {json.dumps(d['errors'])} ({path})")
if toks != n * maxtok:
    sys.exit(f"{who}: {toks} output tokens reported, expected {n * maxtok} ({path})")
PYEOF
}
# warm up both (page cache, slots, thread pools)
for who in locus llama.cpp; do
  port=$LPORT; [ $who = llama.cpp ] && port=$CPORT
  "$UB" -q --url "http://127.0.0.1:$port" -n "$CONC" -c "$CONC" --warmup $((2 * CONC)) --max-tokens 16 \
    --ignore-eos > /dev/null 2>&1 || true
done
for ((r = 1; r <= ROUNDS; r++)); do
  for who in locus llama.cpp; do
    port=$LPORT; [ $who = llama.cpp ] && port=$CPORT
    bench $who $port "$OUT/$who-r$r-whole.json" --warmup "$WARMUP"
    bench $who $port "$OUT/$who-r$r-stream.json" --warmup "$WARMUP" --stream
  done
done
python3 - "$OUT" "$CONC" "$N" "$MAXTOK" "$THREADS" "$ROUNDS" "$WARMUP" <<'PYEOF'
import json, statistics, sys
out, conc, n, maxtok, threads, rounds, warmup = sys.argv[1:8]
runs = {}
for who in ("locus", "llama.cpp"):
    for mode in ("whole", "stream"):
        runs[who, mode] = [json.load(open(f"{out}/{who}-r{r}-{mode}.json")) for r in range(1, int(rounds) + 1)]
print(f"uring-bench, closed loop, concurrency {conc}, {n} requests x {maxtok} tokens per run (+{warmup} warm-up), "
      f"{threads} threads, {rounds} rounds, raw data {out}/\n")
print("| mode | metric | Locus (median) | spread | llama.cpp (median) | spread | Locus / llama.cpp |")
print("|---|---|---:|---:|---:|---:|---:|")
metrics = [("throughput", "output_tokens_per_s", "output tokens/s"), ("throughput", "req_per_s", "requests/s"),
           ("latency_ms", "avg", "latency avg ms"), ("latency_ms", "p50", "latency p50 ms"),
           ("latency_ms", "p95", "latency p95 ms"), ("latency_ms", "p99", "latency p99 ms"),
           ("ttft_ms", "p50", "TTFT p50 ms"), ("ttft_ms", "p95", "TTFT p95 ms"),
           ("itl_ms", "p50", "ITL p50 ms"), ("itl_ms", "p95", "ITL p95 ms"),
           ("tpot_ms", "p50", "TPOT p50 ms"), ("tpot_ms", "p95", "TPOT p95 ms")]
for mode in ("whole", "stream"):
    for grp, key, label in metrics:
        if grp in ("ttft_ms", "itl_ms", "tpot_ms") and mode == "whole":
            continue
        v = {who: [d[grp][key] for d in runs[who, mode]] for who in ("locus", "llama.cpp")}
        a, b = statistics.median(v["locus"]), statistics.median(v["llama.cpp"])
        f = "%.2f" if key == "req_per_s" else "%.1f"
        rng = lambda xs: (f + ".." + f) % (min(xs), max(xs))
        ratio = f"{a / b:.2f}x" if b else "-"
        print(f"| {mode} | {label} | {f % a} | {rng(v['locus'])} | {f % b} | {rng(v['llama.cpp'])} | {ratio} |")
# ITL is the gap between content events, divided over the tokens an event carries only where the
# server says how many (logprobs); with one visible token per event a run has N x (MAX_TOKENS - 1)
# samples. Fewer: some events carried several tokens, or tokens rendered no text (no event). TPOT,
# (last - first content event) / (usage tokens - 1) per request, does not depend on that.
want = int(n) * (int(maxtok) - 1)
got = {who: [d["itl_ms"]["count"] for d in runs[who, "stream"]] for who in ("locus", "llama.cpp")}
if all(set(g) == {want} for g in got.values()):
    print(f"\none token per streamed event on both servers ({want} inter-token samples per run)")
else:
    print(f"\ninter-token samples per run (one per content event after the first; {want} if every token "
          f"had its own event): " + ", ".join(f"{w} {g}" for w, g in got.items()))
PYEOF
