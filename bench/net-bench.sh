#!/usr/bin/env bash
# net-bench: the locus_net front end (bench/net-hello.c, io_uring and epoll
# backends) against nginx, both answering GET / with the same 200-byte JSON
# body, driven by wrk on loopback. One net thread / one nginx worker.
#
#   bench/net-bench.sh [ROUNDS] [SECONDS] [CONNS]     (defaults 5 10 64)
#
# Needs the Debian packages wrk and nginx (apt-get install wrk nginx-light)
# and a built build/bin/net-hello (LOCUS_BIN=... for another build dir).
# The servers run on CPU 0 and wrk on CPU 1 (taskset), so client and server
# never share a core; runs are interleaved (uring, epoll, nginx, uring, ...)
# and each figure is the median over ROUNDS runs. nginx gets
# keepalive_requests 10000000 so that, like net-hello, it never closes a
# wrk connection on its own (its default of 1000 would add reconnects).
set -euo pipefail
cd "$(dirname "$0")/.."
# PIPELINE=N (env): wrk sends N pipelined requests per write (a Lua script),
# which takes most of the client's per-request cost away, so the servers
# rather than wrk become the limit; default 1 (plain wrk).
PIPELINE=${PIPELINE:-1}
ROUNDS=${1:-5}
SECS=${2:-10}
CONNS=${3:-64}
BIN=${LOCUS_BIN:-build/bin}
SRV_CPU=${SRV_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
command -v wrk >/dev/null || { echo "net-bench: wrk not installed (apt-get install wrk)"; exit 77; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "net-bench: nginx not installed (apt-get install nginx-light)"; exit 77; }
[ -x "$BIN/net-hello" ] || { echo "net-bench: $BIN/net-hello not built"; exit 77; }

BODY='{"id":"hello-0001","object":"chat.completion","model":"locus-bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hi from locus."},"finish_reason":"stop"}],"usage":{"total_tokens":7}}'
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:18091;
    location / {
      default_type application/json;
      return 200 '$BODY';
    }
  }
}
EOF

taskset -c "$SRV_CPU" "$BIN/net-hello" --port 18092 --cpu "$SRV_CPU" >"$TMP/uring.log" 2>&1 &
PIDS+=($!)
PID_URING=$!
taskset -c "$SRV_CPU" "$BIN/net-hello" --port 18093 --cpu "$SRV_CPU" --epoll >"$TMP/epoll.log" 2>&1 &
PIDS+=($!)
PID_EPOLL=$!
taskset -c "$SRV_CPU" "$NGINX" -c "$TMP/nginx.conf" -p "$TMP" 2>"$TMP/nginx.err" &
PIDS+=($!)
PID_NGINX=$!
sleep 1
for p in 18091 18092 18093; do
  n=$(curl -s "http://127.0.0.1:$p/" | wc -c)
  [ "$n" = 200 ] || { echo "net-bench: port $p answered $n bytes, want 200"; cat "$TMP"/*.log "$TMP/nginx.err"; exit 1; }
done
grep -h "^net:" "$TMP/uring.log" "$TMP/epoll.log" || true

# p99 from wrk --latency in ms
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v); print v} else {sub(/s/,"",v); print v*1000}}'; }
# server CPU time (user + system, all threads) in clock ticks
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
WRK_SCRIPT=()
if [ "$PIPELINE" -gt 1 ]; then
  cat >"$TMP/pipeline.lua" <<LUA
init = function(args)
  local r = {}
  for i = 1, $PIPELINE do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
LUA
  WRK_SCRIPT=(-s "$TMP/pipeline.lua")
fi
run() { # name port pid
  t0=$(ticks "$3")
  out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "${WRK_SCRIPT[@]}" "http://127.0.0.1:$2/")
  t1=$(ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  nreq=$(echo "$out" | awk '/requests in/ {print $1}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}' | to_ms)
  err=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  # server CPU microseconds per request: the server's cost whoever is the bottleneck
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$nreq" 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
  busy=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$SECS" 'BEGIN {printf "%.0f", 100 * d / hz / s}')
  echo "$1 $rps $p99 $cpu $busy" >>"$TMP/results"
  printf '  %-8s %10s req/s  p99 %8s ms  server %6s us/req, %3s%% of its core  %s\n' "$1" "$rps" "$p99" "$cpu" "$busy" "$err"
}
echo "net-bench: $ROUNDS rounds x ${SECS}s, wrk -t1 -c$CONNS (pipeline $PIPELINE) on CPU $WRK_CPU, servers on CPU $SRV_CPU"
taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:18092/" >/dev/null # warm-up
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run io_uring 18092 "$PID_URING"
  run epoll 18093 "$PID_EPOLL"
  run nginx 18091 "$PID_NGINX"
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "| server | requests/s (median) | p99 ms (median) | server CPU us/request (median) | server core busy % | req/s vs nginx | CPU/req vs nginx |"
echo "|---|---:|---:|---:|---:|---:|---:|"
NG=$(awk '$1 == "nginx" {print $2}' "$TMP/results" | median)
NGC=$(awk '$1 == "nginx" {print $4}' "$TMP/results" | median)
for s in io_uring epoll nginx; do
  rps=$(awk -v s=$s '$1 == s {print $2}' "$TMP/results" | median)
  p99=$(awk -v s=$s '$1 == s {print $3}' "$TMP/results" | median)
  cpu=$(awk -v s=$s '$1 == s {print $4}' "$TMP/results" | median)
  busy=$(awk -v s=$s '$1 == s {print $5}' "$TMP/results" | median)
  ratio=$(awk -v a="$rps" -v b="$NG" 'BEGIN {printf "%.2fx", a / b}')
  cratio=$(awk -v a="$cpu" -v b="$NGC" 'BEGIN {printf "%.2fx", a / b}')
  echo "| $s | $rps | $p99 | $cpu | $busy | $ratio | $cratio |"
done
