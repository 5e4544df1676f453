#!/usr/bin/env bash
# What does the load balancer add? Two engines (backend = null, one net
# thread each, not pinned) behind nginx with the configuration
# `topo-capture --emit-configs` generates (least_conn, keep-alive to the
# upstreams, unbuffered), and uring-bench measuring, side by side in the
# same run, interleaved rounds:
#   direct:   one engine, straight
#   both:     both engines, straight (uring-bench --url twice)
#   balancer: both engines through nginx
# Reports p50, p99 and req/s medians (min-max) per path and the balancer's
# added latency (balancer - direct). Closed loop, -c 8, 1-token requests,
# so what is measured is the serving path, not inference.
#
#   bench/balancer-latency.sh [ROUNDS] [SECONDS] [CONNS]    (defaults 5 5 8)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-8}
BIN=${LOCUS_BIN:-build/bin}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is not installed (apt-get install nginx-light)"; exit 77; }
[ -f "$MODEL" ] || { echo "no model at $MODEL (tools/scripts/fetch-model.sh)"; exit 77; }
TMP=$(mktemp -d)
BASE=$((30000 + RANDOM % 2000)); LB=$((BASE + 100))
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
# nginx configuration for two engines, as generated for a two-node machine
"$BIN/topo-capture" --emit-configs "$TMP/lb" --synthetic "pack:2 numa:1 core:2 pu:1" --backend null \
  --model "$PWD/$MODEL" --base-port "$BASE" --lb-port "$LB" > "$TMP/emit.log"
grep -c "server 127.0.0.1:" "$TMP/lb/nginx-locus.conf" | grep -qx 2 || { echo "expected 2 upstreams"; exit 1; }
for i in 0 1; do
  cat > "$TMP/e$i.conf" <<CONF
[server]
listen = 127.0.0.1:$((BASE + i))
net_threads = 1
instance = bench-$i
[model]
path = $PWD/$MODEL
[backend]
type = null
[numa]
pin = off
[batching]
max_seqs = 64
[kv]
tokens = 65536
[limits]
max_waiting = 1024
CONF
  "$BIN/engine" --config "$TMP/e$i.conf" > "$TMP/e$i.log" 2>&1 &
  PIDS+=($!)
done
"$NGINX" -p "$TMP/lb" -c "$TMP/lb/nginx-locus.conf" -g "daemon off;" > "$TMP/nginx.log" 2>&1 &
PIDS+=($!)
for port in "$BASE" "$((BASE + 1))" "$LB"; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "port $port did not come up"; cat "$TMP"/*.log; exit 1; }
done
UB=("$BIN/uring-bench" --prompt Hello --max-tokens 1 -c "$CONNS" --duration "$SECS" --warmup 100 -q)
: > "$TMP/all"
for r in $(seq 1 "$ROUNDS"); do
  for path in direct both balancer; do
    case $path in
      direct) urls=(--url "http://127.0.0.1:$BASE") ;;
      both) urls=(--url "http://127.0.0.1:$BASE" --url "http://127.0.0.1:$((BASE + 1))") ;;
      balancer) urls=(--url "http://127.0.0.1:$LB") ;;
    esac
    "${UB[@]}" "${urls[@]}" --json "$TMP/$path-$r.json" > /dev/null
    echo "$path $TMP/$path-$r.json" >> "$TMP/all"
  done
done
python3 - "$TMP/all" "$CONNS" "$SECS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    path, f = line.split()
    runs.setdefault(path, []).append(json.load(open(f)))
def col(path, f):
    return [f(j) for j in runs[path]]
print("closed loop, %s connections, %s s per run, %d rounds (medians, min-max)" % (sys.argv[2], sys.argv[3],
      len(runs["direct"])))
print("| path | p50 ms | p99 ms | req/s | errors | instances (last round) |")
print("|---|---|---|---|---|---|")
med = {}
for p in ("direct", "both", "balancer"):
    p50 = col(p, lambda j: j["latency_ms"]["p50"]); p99 = col(p, lambda j: j["latency_ms"]["p99"])
    rps = col(p, lambda j: j["throughput"]["req_per_s"]); err = col(p, lambda j: j["requests"]["errors"])
    med[p] = (statistics.median(p50), statistics.median(p99))
    print("| %s | %.3f (%.3f-%.3f) | %.3f (%.3f-%.3f) | %.0f (%.0f-%.0f) | %d | %s |" % (
        p, med[p][0], min(p50), max(p50), med[p][1], min(p99), max(p99), statistics.median(rps), min(rps), max(rps),
        sum(err), json.dumps(runs[p][-1].get("instances", {}))))
print("balancer - direct: p50 %+.3f ms, p99 %+.3f ms; balancer - both: p50 %+.3f ms, p99 %+.3f ms" % (
    med["balancer"][0] - med["direct"][0], med["balancer"][1] - med["direct"][1],
    med["balancer"][0] - med["both"][0], med["balancer"][1] - med["both"][1]))
PY
