#!/usr/bin/env bash
# Serving overhead: the whole engine (HTTP, JSON decoding, tokenization, the
# ring to the node's dispatcher, a scheduler step on the null backend, the
# wake-up back to the net thread, the JSON response) against nginx returning
# a static JSON body of the same size, both driven by wrk on loopback.
# Engine: backend = null, one net thread (plus its dispatcher thread); nginx:
# one worker. Both servers on CPU 0, the client on CPU 1 (taskset). The
# client is uring-bench (CLIENT=uring-bench, default: one thread, io_uring)
# or wrk (CLIENT=wrk, -t1); the same client drives both servers. Interleaved
# rounds; medians; server CPU per request from /proc (user + system).
# A third server, net-hello (the same HTTP layer answering a canned 200-byte
# body, no engine behind it), shows the ceiling of this setup: what the
# client and loopback TCP allow when the server does nothing else. The
# client's own CPU use is reported: a client core near 100% is the limit.
#
#   [CLIENT=uring-bench|wrk] bench/serve-null-vs-nginx.sh [ROUNDS] [SECONDS] [CONNS]   (defaults 5 10 16)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; SECS=${2:-10}; CONNS=${3:-16}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CLIENT=${CLIENT:-uring-bench}
case $CLIENT in
  wrk) command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 77; } ;;
  uring-bench) ;;
  *) echo "CLIENT must be uring-bench or wrk"; exit 2 ;;
esac
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x build/bin/engine ] && [ -x build/bin/uring-bench ] || tools/scripts/build.sh release >/dev/null
TMP=$(mktemp -d)
EPORT=$((21000 + RANDOM % 5000)); NPORT=$((EPORT + 1))
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
cat > "$TMP/engine.conf" <<CONF
[server]
listen = 127.0.0.1:$EPORT
net_threads = 1
[model]
path = $PWD/$MODEL
[backend]
type = null
[numa]
pin = off
[batching]
max_seqs = 64
step_tokens = 512
[kv]
tokens = 65536
[limits]
max_waiting = 1024
CONF
BODYREQ='{"prompt":"Hello","max_tokens":1,"temperature":0}'
cat > "$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODYREQ'
wrk.headers["Content-Type"] = "application/json"
LUA
taskset -c 0 build/bin/engine --config "$TMP/engine.conf" > "$TMP/engine.log" 2>&1 &
PIDS+=($!); EPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$EPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
# nginx returns exactly the body the engine returns for this request.
BODY=$(curl -s -H 'Content-Type: application/json' -d "$BODYREQ" "http://127.0.0.1:$EPORT/v1/completions")
cat > "$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$NPORT;
    location / { default_type application/json; return 200 '$BODY'; }
  }
}
CONF
taskset -c 0 "$NGINX" -c "$TMP/nginx.conf" &
PIDS+=($!); NPID=$!
HPORT=$((EPORT + 2))
build/bin/net-hello --port "$HPORT" --threads 1 --cpu 0 > "$TMP/hello.log" 2>&1 &
PIDS+=($!); HPID=$!
sleep 0.5
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name pid url -> "name req/s p99_ms server_cpu_us errors client_cpu_s"
  local t0 t1 out rps p99 errs ccpu
  t0=$(cpu_ticks "$2")
  TIMEFORMAT='%U %S'
  { time {
  if [ "$CLIENT" = wrk ]; then
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$TMP/post.lua" "$3")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {x = $2; if (x ~ /us$/) v = x / 1000; else if (x ~ /ms$/) v = x + 0; else v = x * 1000; print v}')
    errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {n++} END {print n + 0}')
    echo "$rps $p99 $errs" > "$TMP/one"
  else
    build/bin/uring-bench --url "$3" --prompt Hello --max-tokens 1 -c "$CONNS" --duration "$SECS" --cpus 1 -q \
      --json "$TMP/ub.json" > /dev/null
    read -r rps p99 errs < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))
print(j["throughput"]["req_per_s"], j["latency_ms"]["p99"], j["requests"]["errors"])' "$TMP/ub.json")
    echo "$rps $p99 $errs" > "$TMP/one"
  fi
  } ; } 2> "$TMP/ctime"
  t1=$(cpu_ticks "$2")
  read -r rps p99 errs < "$TMP/one"
  ccpu=$(awk '{print $1 + $2}' "$TMP/ctime")
  echo "$1 $rps $p99 $(( (t1 - t0) * 10000 )) $errs $ccpu" # cpu in us (100 ticks/s)
}
echo "engine body: ${#BODY} bytes"
: > "$TMP/res"
for ((r = 1; r <= ROUNDS; r++)); do
  run engine "$EPID" "http://127.0.0.1:$EPORT/v1/completions" >> "$TMP/res"
  run nginx "$NPID" "http://127.0.0.1:$NPORT/" >> "$TMP/res"
  run net-hello "$HPID" "http://127.0.0.1:$HPORT/v1/completions" >> "$TMP/res"
done
python3 - "$TMP/res" "$SECS" "$CONNS" "$CLIENT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
secs, conns, client = float(sys.argv[2]), sys.argv[3], sys.argv[4]
ms = float
how = f"wrk -t1 -c{conns} -d{int(secs)}s" if client == "wrk" else f"uring-bench -c {conns} --duration {int(secs)}"
print(f"{how}, POST /v1/completions (engine, null backend) vs static JSON (nginx), {len(rows) // 3} rounds\n")
print("| server | requests/s (median) | spread | p99 ms (median) | server CPU us/request | client core busy | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
med = {}
for who in ("engine", "nginx", "net-hello"):
    rs = [float(r[1]) for r in rows if r[0] == who]
    p99 = [ms(r[2]) for r in rows if r[0] == who]
    cpu = [float(r[3]) / (float(r[1]) * secs) for r in rows if r[0] == who]
    busy = [float(r[5]) / secs for r in rows if r[0] == who]
    med[who] = statistics.median(rs)
    errs = sum(int(float(r[4])) for r in rows if r[0] == who)
    print(f"| {who} | {med[who]:,.0f} | {min(rs):,.0f}..{max(rs):,.0f} | {statistics.median(p99):.2f} | "
          f"{statistics.median(cpu):.2f} | {100 * statistics.median(busy):.0f}% | {errs} |")
print(f"\nengine / nginx requests/s: {med['engine'] / med['nginx']:.2f}x")
print(f"ceiling of this setup (net-hello, HTTP layer alone) / nginx: {med['net-hello'] / med['nginx']:.2f}x")
PY
