#!/usr/bin/env bash
# Is uring-bench fast enough not to be the bottleneck? It and wrk (Debian's)
# drive the same nginx (one worker, a 13-byte static body, keep-alive) on
# loopback with the same connections, side by side, interleaved rounds.
# nginx runs on CPU 0, the client on CPU 1 (taskset; --cpus for uring-bench,
# one thread each). Reported per client: requests/s, and requests per
# client CPU-second (user + system of the client process, from bash's
# `time`), which is the per-core figure: it does not depend on which side
# saturates first. Medians over the rounds, with min-max.
#
#   bench/ubench-vs-wrk.sh [ROUNDS] [SECONDS] [CONNS]    (defaults 5 5 64)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; SECS=${2:-5}; CONNS=${3:-64}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 77; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is not installed (apt-get install nginx-light)"; exit 77; }
[ -x build/bin/uring-bench ] || tools/scripts/build.sh release >/dev/null
NCPU=$(nproc)
SCPU=0; CCPU=$(( NCPU > 1 ? 1 : 0 ))
TMP=$(mktemp -d)
PORT=$((26000 + RANDOM % 4000))
NPID=""
cleanup() { [ -n "$NPID" ] && kill "$NPID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
cat > "$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$PORT;
    location / { default_type text/plain; return 200 'Hello, world!'; }
  }
}
CONF
taskset -c "$SCPU" "$NGINX" -c "$TMP/nginx.conf" &
NPID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/"
TIMEFORMAT='%U %S'
run_wrk() {
  local out cpu
  { time taskset -c "$CCPU" wrk -t1 -c"$CONNS" -d"${SECS}s" "$URL" > "$TMP/out" ; } 2> "$TMP/time"
  cpu=$(awk '{print $1 + $2}' "$TMP/time")
  out=$(awk '/Requests\/sec/ {print $2}' "$TMP/out")
  echo "wrk $out $cpu"
}
run_ub() {
  local out cpu
  { time build/bin/uring-bench --endpoint get --url "$URL" -c "$CONNS" -t 1 --cpus "$CCPU" --duration "$SECS" -q \
      --json "$TMP/ub.json" > "$TMP/out" ; } 2> "$TMP/time"
  cpu=$(awk '{print $1 + $2}' "$TMP/time")
  out=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["throughput"]["req_per_s"])' "$TMP/ub.json")
  echo "uring-bench $out $cpu"
}
echo "# nginx 1 worker on CPU $SCPU; clients on CPU $CCPU; $CONNS connections, ${SECS}s, $ROUNDS rounds"
echo "# client req/s client-cpu-s"
: > "$TMP/all"
for r in $(seq 1 "$ROUNDS"); do
  run_wrk | tee -a "$TMP/all"
  run_ub | tee -a "$TMP/all"
done
python3 - "$TMP/all" "$SECS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
secs = float(sys.argv[2])
res = {}
for name, rps, cpu in rows:
    rps, cpu = float(rps), float(cpu)
    per_cpu = rps * secs / cpu if cpu > 0 else float("nan")  # requests per client CPU-second
    res.setdefault(name, []).append((rps, per_cpu))
print("| client | req/s median (min-max) | req per client CPU-second median (min-max) |")
print("|---|---|---|")
med = {}
for name in ("wrk", "uring-bench"):
    v = res[name]
    r = [a for a, _ in v]; c = [b for _, b in v]
    med[name] = (statistics.median(r), statistics.median(c))
    print("| %s | %.0f (%.0f-%.0f) | %.0f (%.0f-%.0f) |" % (name, med[name][0], min(r), max(r), med[name][1], min(c), max(c)))
print("uring-bench / wrk: req/s %.2fx, req per CPU-second %.2fx" % (
    med["uring-bench"][0] / med["wrk"][0], med["uring-bench"][1] / med["wrk"][1]))
PY
