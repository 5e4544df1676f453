#!/bin/bash
# t_emit_configs: `topo-capture --emit-configs DIR` writes what serving a
# machine with one engine per NUMA node (or per GPU) behind nginx takes.
#  - this machine: nodeN.conf for each node with cores, nginx-locus.conf and
#    engine@.service; every config passes `engine --check-config`; the unit
#    equals configs/systemd/engine@.service and passes systemd-analyze verify
#    (where it is installed); nginx -t passes, also as a non-root user;
#  - tests/data/topo-2s-8gpu.xml: gpu0.conf..gpu7.conf, GPUs 0-3 on node 0 and
#    4-7 on node 1, each with a share of its node's cores, each passing
#    `engine --check-config --topology XML --assume-cuda` with its GPU on the
#    right node; 8 upstream servers on distinct ports;
#  - synthetic "pack:2 numa:1 core:4 pu:1": node0.conf and node1.conf with the
#    cores the engine computes on (0-2, 4-6; net threads on 3 and 7);
#  - bad input (bad ports, unwritable DIR, --backend cuda without GPU, ...)
#    fails with a message and writes nothing;
#  - end to end (nginx, curl, python3): two engines (null backend) behind the
#    generated nginx: both answer, every response carries X-Locus-Instance,
#    streams pass unbuffered, and a draining engine's share goes to the other.
# Env: LOCUS_SRC, LOCUS_BIN.
set -u
SRC=$(cd "${LOCUS_SRC:-.}" && pwd)
BIN=$(cd "${LOCUS_BIN:-build/bin}" && pwd)
T=$BIN/topo-capture
E=$BIN/engine
XML=$SRC/tests/data/topo-2s-8gpu.xml
SYN="pack:2 numa:1 core:4 pu:1"
if [ ! -x "$T" ] || [ ! -x "$E" ]; then
	echo "skip: topo-capture or engine not built"
	exit 77
fi
cd "$SRC" || exit 1
tmp=$(mktemp -d)
pids=()  # nginx and clients: SIGTERM (nginx's master then stops its workers)
epids=() # engines: SIGKILL (one already draining ignores a second SIGTERM)
cleanup() {
	local p
	for p in "${epids[@]}"; do kill -KILL "$p" 2> /dev/null; done
	for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
	for p in "${epids[@]}" "${pids[@]}"; do wait "$p" 2> /dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
check() { # label, command...
	local label=$1
	shift
	if "$@"; then ok "$label"; else bad "$label"; fi
}
key() { # file, key: the value of the first "key = value" line
	sed -n "s/^$2 = //p" "$1" | head -n1
}
in_set() { # "0-3,8" "0-15,32-47": every CPU of the first list is in the second
	python3 - "$1" "$2" <<'EOF'
import sys
def ids(s):
    out = set()
    for part in s.split(','):
        a, _, b = part.partition('-')
        out.update(range(int(a), int(b or a) + 1))
    return out
sys.exit(0 if ids(sys.argv[1]) <= ids(sys.argv[2]) else 1)
EOF
}

# A tiny model with a vocabulary: check-config opens it, the engines serve it.
MODEL=$tmp/tiny.gguf
"$BIN/mkmodel" -o "$MODEL" --layers 1 --dim 64 --heads 2 --kv-heads 2 --ffn 128 --type F32 \
	--tokenizer "$SRC/tests/data/tokenizers/ggml-vocab-llama-spm.gguf" > /dev/null 2>&1 || bad "mkmodel"

# ---- this machine ----
out=$tmp/here
if "$T" --emit-configs "$out" --model "$MODEL" > "$tmp/stdout" 2> "$tmp/stderr"; then ok "this machine: exit 0"; else
	bad "this machine: exit $? ($(cat "$tmp/stderr"))"; fi
# the nodes the engine itself plans with node = auto
sed -e "s|^path = .*|path = $MODEL|" -e 's|^node = .*|node = auto|' -e 's|^type = .*|type = cpu|' \
	configs/node0.conf > "$tmp/auto.conf"
nodes=$("$E" --check-config "$tmp/auto.conf" | sed -n 's/^node \([0-9]*\):.*/\1/p' | paste -sd' ')
want=""
for n in $nodes; do want="$want node$n.conf"; done
got=$(cd "$out" && ls node*.conf 2>/dev/null | paste -sd' ')
check "this machine: configs for nodes '$nodes'" test " $got" = "$want"
check "this machine: nginx-locus.conf and engine@.service" test -s "$out/nginx-locus.conf" -a -s "$out/engine@.service"
check "this machine: one stdout line per file" test "$(grep -c '^wrote ' "$tmp/stdout")" -eq "$(ls "$out" | wc -l)"
check "this machine: systemctl start line" grep -q "^  systemctl start engine@node0" "$tmp/stdout"
check "this machine: nginx command line" grep -qx "  nginx -p $out -c $out/nginx-locus.conf" "$tmp/stdout"
for f in "$out"/node*.conf; do
	n=$(basename "$f" .conf)
	if "$E" --check-config "$f" > "$tmp/plan" 2> "$tmp/err"; then
		ok "this machine: $n.conf passes engine --check-config"
	else
		bad "this machine: $n.conf: $(cat "$tmp/err")"
		continue
	fi
	num=${n#node}
	check "this machine: $n plans node $num only" \
		test "$(sed -n 's/^node \([0-9]*\):.*/\1/p' "$tmp/plan" | paste -sd' ')" = "$num"
	check "this machine: $n instance" grep -qx "instance:  $(hostname | cut -d. -f1 | tr -c 'A-Za-z0-9\n-' -)-$n" "$tmp/plan"
	check "this machine: $n pin on, membind strict, cpu" test "$(key "$f" pin) $(key "$f" membind) $(key "$f" type)" = "on strict cpu"
	check "this machine: $n keeps every documented key" \
		test "$(grep -c '^[a-z_]* =' "$f")" -eq "$(grep -c '^[a-z_]* =' configs/node0.conf)"
done
check "this machine: the unit equals configs/systemd/engine@.service" cmp -s "$out/engine@.service" \
	configs/systemd/engine@.service
# nginx -t, as this user and as an unprivileged one
if command -v nginx > /dev/null; then
	if nginx -t -p "$out" -c "$out/nginx-locus.conf" > "$tmp/ngx" 2>&1; then ok "nginx -t"; else
		bad "nginx -t: $(cat "$tmp/ngx")"; fi
	if [ "$(id -u)" = 0 ] && command -v setpriv > /dev/null; then
		nr=$(mktemp -d)
		chmod 755 "$nr"
		cp "$out/nginx-locus.conf" "$nr/"
		chown -R nobody "$nr"
		if setpriv --reuid=nobody --regid=nogroup --clear-groups nginx -t -p "$nr" -c "$nr/nginx-locus.conf" \
			> "$tmp/ngx" 2>&1; then ok "nginx -t as nobody"; else bad "nginx -t as nobody: $(cat "$tmp/ngx")"; fi
		rm -rf "$nr"
	fi
else
	echo "note: nginx not installed: nginx -t skipped"
fi
if command -v systemd-analyze > /dev/null; then
	# verify wants the ExecStart binary to exist: point it at this build
	mkdir -p "$tmp/unit"
	sed "s|^ExecStart=[^ ]*|ExecStart=$E|" "$out/engine@.service" > "$tmp/unit/engine@node0.service"
	if systemd-analyze verify "$tmp/unit/engine@node0.service" > "$tmp/sd" 2>&1 && ! grep -q . "$tmp/sd"; then
		ok "systemd-analyze verify engine@node0.service"
	else
		bad "systemd-analyze verify: $(cat "$tmp/sd")"
	fi
else
	echo "note: systemd-analyze not installed: the unit is not verified"
fi
check "unit: ExecStart, Restart, KillSignal" grep -q '^ExecStart=/opt/locus/build/bin/engine --config /etc/locus/%i.conf$' \
	"$out/engine@.service"
check "unit: TimeoutStopSec > drain_timeout (30s)" grep -qx 'TimeoutStopSec=45s' "$out/engine@.service"
check "unit: no CPUAffinity, Nice, SystemCallFilter" bash -c "! grep -Eq '^(CPUAffinity|Nice|SystemCallFilter)=' '$out/engine@.service'"

# ---- two sockets, eight GPUs ----
out=$tmp/xml
if "$T" --emit-configs "$out" --model "$MODEL" --topology "$XML" > "$tmp/stdout" 2> "$tmp/stderr"; then
	ok "xml: exit 0"
else
	bad "xml: exit $? ($(cat "$tmp/stderr"))"
fi
check "xml: gpu0.conf .. gpu7.conf, no node configs" \
	test "$(cd "$out" && ls ./*.conf | paste -sd' ')" = "./gpu0.conf ./gpu1.conf ./gpu2.conf ./gpu3.conf ./gpu4.conf ./gpu5.conf ./gpu6.conf ./gpu7.conf ./nginx-locus.conf"
all_cpus=""
for g in 0 1 2 3 4 5 6 7; do
	f=$out/gpu$g.conf
	node=0 node_cpus=0-15,32-47
	if [ $g -ge 4 ]; then node=1 node_cpus=16-31,48-63; fi
	cpus=$(key "$f" cpus)
	check "xml: gpu$g.conf: gpus = $g, node = $node, type cuda, instance" \
		test "$(key "$f" gpus) $(key "$f" node) $(key "$f" type) $(key "$f" instance)" = "$g $node cuda locus-test-2s-8gpu-gpu$g"
	check "xml: gpu$g.conf: cpus $cpus within node $node's $node_cpus" in_set "$cpus" "$node_cpus"
	all_cpus="$all_cpus${all_cpus:+,}$cpus"
	if "$E" --check-config "$f" --topology "$XML" --assume-cuda > "$tmp/plan" 2> "$tmp/err"; then
		ok "xml: gpu$g.conf passes engine --check-config --topology XML --assume-cuda"
		check "xml: gpu$g plans GPU $g on node $node only" \
			test "$(grep -c '^node ' "$tmp/plan") $(sed -n 's/^node \([0-9]*\): *GPU \([0-9]*\),.*/\1 \2/p' "$tmp/plan")" = "1 $node $g"
		net=$(sed -n 's/^net: .* on CPU \([0-9,-]*\) .*/\1/p' "$tmp/plan")
		check "xml: gpu$g's net thread ($net) inside its share ($cpus)" in_set "$net" "$cpus"
	else
		bad "xml: gpu$g.conf: $(cat "$tmp/err")"
	fi
done
# the shares do not overlap: 8 x 4 distinct cores
check "xml: the GPUs' shares are disjoint" test "$(echo "$all_cpus" | python3 -c '
import sys
ids = []
for part in sys.stdin.read().strip().split(","):
    a, _, b = part.partition("-")
    ids += range(int(a), int(b or a) + 1)
print(len(ids) == len(set(ids)) == 32)')" = True
if [ -f "$BIN/liblocus_cuda.so" ]; then
	# a CUDA build plans the GPU without being told to assume one
	check "xml: a CUDA build accepts gpu5.conf without --assume-cuda" \
		"$E" --check-config "$out/gpu5.conf" --topology "$XML"
elif "$E" --check-config "$out/gpu5.conf" --topology "$XML" > /dev/null 2> "$tmp/err"; then
	bad "xml: without --assume-cuda this build refuses cuda"
else
	check "xml: without --assume-cuda: no CUDA backend" grep -q 'this build has no CUDA backend' "$tmp/err"
fi
ports=$(sed -n 's/^ *server 127.0.0.1:\([0-9]*\) max_fails=2 fail_timeout=5s;.*/\1/p' "$out/nginx-locus.conf")
check "xml: nginx upstream: 8 servers, distinct ports 8080-8087" \
	test "$(echo "$ports" | sort -u | paste -sd' ')" = "8080 8081 8082 8083 8084 8085 8086 8087"
check "xml: systemctl start the 8" grep -q "systemctl start engine@gpu0 .* engine@gpu7$" "$tmp/stdout"
if command -v nginx > /dev/null; then
	check "xml: nginx -t" nginx -t -q -p "$out" -c "$out/nginx-locus.conf"
fi
# the same machine served by its CPUs: one config per node
out=$tmp/xml-cpu
"$T" --emit-configs "$out" --model "$MODEL" --topology "$XML" --backend null > /dev/null 2> "$tmp/err"
check "xml --backend null: node0.conf, node1.conf" test "$(cd "$out" 2>/dev/null && ls ./*.conf | paste -sd' ')" = \
	"./nginx-locus.conf ./node0.conf ./node1.conf"
check "xml --backend null: type null, gpus auto" test "$(key "$out/node1.conf" type) $(key "$out/node1.conf" gpus)" = "null auto"
if "$E" --check-config "$out/node1.conf" --topology "$XML" > /dev/null 2> "$tmp/err"; then
	ok "xml --backend null: node1.conf passes check-config"
else
	bad "xml --backend null: node1.conf: $(cat "$tmp/err")"
fi

# ---- synthetic: two nodes of four cores ----
out=$tmp/syn
"$T" --emit-configs "$out" --model "$MODEL" --synthetic "$SYN" --base-port 9000 --lb-port 9100 > "$tmp/stdout" 2> "$tmp/stderr" ||
	bad "synthetic: exit $? ($(cat "$tmp/stderr"))"
check "synthetic: node0.conf cpus 0-2, node1.conf cpus 4-6" \
	test "$(key "$out/node0.conf" cpus) $(key "$out/node1.conf" cpus)" = "0-2 4-6"
check "synthetic: ports 9000, 9001; nginx on 9100" \
	test "$(key "$out/node0.conf" listen) $(key "$out/node1.conf" listen) $(grep -c '^        listen 127.0.0.1:9100;$' "$out/nginx-locus.conf")" = \
	"127.0.0.1:9000 127.0.0.1:9001 1"
for n in 0 1; do
	if "$E" --check-config "$out/node$n.conf" --topology "$SYN" > "$tmp/plan" 2> "$tmp/err"; then
		check "synthetic: node$n plans node $n on cpus $((4 * n))-$((4 * n + 2)), net on CPU $((4 * n + 3)), no warning" \
			test "$(sed -n 's/^node \([0-9]*\): *compute CPUs \([^ ]*\) .*/\1 \2/p' "$tmp/plan") $(sed -n 's/^net: .* on CPU \([0-9]*\) .*/\1/p' "$tmp/plan") $(grep -c '^warnings' "$tmp/plan")" = \
			"$n $((4 * n))-$((4 * n + 2)) $((4 * n + 3)) 0"
	else
		bad "synthetic: node$n.conf: $(cat "$tmp/err")"
	fi
done
check "synthetic: client_max_body_size = max_body (1 MiB)" grep -q '^        client_max_body_size 1048576;$' "$out/nginx-locus.conf"

# ---- bad input ----
touch "$tmp/a-file"
expect_fail() { # label, want (1|2), message pattern, args...
	local label=$1 want=$2 pat=$3
	shift 3
	rm -rf "$tmp/never"
	"$T" --emit-configs "$tmp/never" --model "$MODEL" "$@" > "$tmp/stdout" 2> "$tmp/stderr"
	local rc=$?
	if [ "$rc" -eq "$want" ] && grep -q -- "$pat" "$tmp/stderr" && [ ! -e "$tmp/never" ]; then
		ok "$label: exit $rc, $(head -n1 "$tmp/stderr")"
	else
		bad "$label: exit $rc (want $want), stderr '$(cat "$tmp/stderr")'"
	fi
}
expect_fail "base port 0" 2 "--base-port '0': expected a port 1..65535" --base-port 0
expect_fail "base port 70000" 2 "expected a port" --base-port 70000
expect_fail "base port abc" 2 "expected a port" --base-port abc
expect_fail "lb port -1" 2 "--lb-port '-1'" --lb-port -1
expect_fail "ports past 65535" 1 "ports up to 65536" --synthetic "$SYN" --base-port 65535
expect_fail "lb port among the engines'" 1 "--lb-port 8081 is one of the engines' ports" --synthetic "$SYN" --lb-port 8081
expect_fail "--backend cuda without GPU" 1 "--backend cuda: the topology has no NVIDIA GPU" --backend cuda --synthetic "$SYN"
expect_fail "--backend gpu" 2 "--backend 'gpu': expected auto, cpu, cuda or null" --backend gpu
expect_fail "unknown option" 2 "unknown option '--frobnicate'" --frobnicate
expect_fail "both topologies" 2 "exclude each other" --topology "$XML" --synthetic "$SYN"
expect_fail "missing XML" 1 "missing.xml: No such file" --topology "$tmp/missing.xml"
expect_fail "bad synthetic" 1 "pack:zz" --synthetic "pack:zz"
expect_fail "missing template" 1 "--template $tmp/none.conf: No such file" --template "$tmp/none.conf"
printf '[server]\nlisten = nope\n' > "$tmp/bad.conf"
expect_fail "bad template" 1 "bad.conf:2: \[server\] listen" --template "$tmp/bad.conf"
"$T" --emit-configs "$tmp/a-file/sub" --model "$MODEL" --synthetic "$SYN" > /dev/null 2> "$tmp/stderr"
rc=$?
if [ $rc -eq 1 ] && grep -q 'Not a directory' "$tmp/stderr"; then ok "DIR under a file: exit 1, $(cat "$tmp/stderr")"; else
	bad "DIR under a file: exit $rc, $(cat "$tmp/stderr")"; fi
if [ "$(id -u)" = 0 ] && command -v setpriv > /dev/null; then
	ro=$(mktemp -d)
	chmod 755 "$ro"
	setpriv --reuid=nobody --regid=nogroup --clear-groups "$T" --emit-configs "$ro/sub" --template configs/node0.conf \
		--model /m.gguf --synthetic "$SYN" > /dev/null 2> "$tmp/stderr"
	rc=$?
	if [ $rc -eq 1 ] && grep -q 'Permission denied' "$tmp/stderr" && [ ! -e "$ro/sub" ]; then
		ok "unwritable DIR (as nobody): exit 1, $(cat "$tmp/stderr")"
	elif grep -qi 'permission denied' "$tmp/stderr" && ! grep -q "$ro" "$tmp/stderr"; then
		echo "note: nobody cannot run $T here: unwritable-DIR case skipped"
	else
		bad "unwritable DIR: exit $rc, $(cat "$tmp/stderr")"
	fi
	rm -rf "$ro"
fi
if "$T" --emit-configs x --help | grep -q '^usage: topo-capture --emit-configs'; then ok "--help"; else bad "--help"; fi

# ---- end to end: two engines behind the generated nginx ----
if ! command -v nginx > /dev/null || ! command -v curl > /dev/null || ! command -v python3 > /dev/null; then
	echo "note: nginx, curl or python3 missing: end-to-end part skipped"
	exit $fail
fi
read -r P0 P1 LB < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
out=$tmp/e2e
# nginx for two engines (a two-node topology, so two upstream servers), the
# engines from this machine's node0.conf on the two ports
"$T" --emit-configs "$out" --model "$MODEL" --synthetic "pack:2 numa:1 core:2 pu:1" --backend null \
	--lb-port "$LB" > /dev/null 2>&1 || bad "e2e: emit"
sed -i -e "s/127.0.0.1:8080 /127.0.0.1:$P0 /" -e "s/127.0.0.1:8081 /127.0.0.1:$P1 /" "$out/nginx-locus.conf"
for i in 0 1; do
	port=P$i
	sed -e "s/^listen = .*/listen = 127.0.0.1:${!port}/" -e "s/^instance = .*/instance = e2e-$i/" \
		-e 's/^type = .*/type = null/' -e 's/^null_delay_us = .*/null_delay_us = 20000/' -e 's/^pin = .*/pin = off/' \
		-e 's/^drain_timeout = .*/drain_timeout = 20s/' "$tmp/here/node0.conf" > "$tmp/e$i.conf"
	"$E" --config "$tmp/e$i.conf" 2> "$tmp/e$i.log" &
	epids+=($!)
	eval "E${i}_PID=$!"
done
nginx -p "$out" -c "$out/nginx-locus.conf" -g 'daemon off;' 2> "$tmp/nginx.log" &
pids+=($!)
up() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health" 2> /dev/null | grep -q 200; }
for _ in $(seq 100); do up "$P0" && up "$P1" && up "$LB" && break; sleep 0.1; done
check "e2e: engines and nginx up" up "$LB"
seen=""
for _ in 1 2 3 4 5 6; do
	seen="$seen $(curl -s -D - -o /dev/null "http://127.0.0.1:$LB/health" | tr -d '\r' | sed -n 's/^X-Locus-Instance: //Ip')"
done
check "e2e: both engines answer through nginx ($seen)" test "$(echo $seen | tr ' ' '\n' | sort -u | paste -sd' ')" = "e2e-0 e2e-1"
hdr() { # curl args...: the X-Locus-Instance of the response
	curl -s -D - -o /dev/null "$@" | tr -d '\r' | sed -n 's/^X-Locus-Instance: //Ip'
}
check "e2e: a whole completion carries the header" grep -Eq '^e2e-[01]$' <<< "$(hdr "http://127.0.0.1:$LB/v1/completions" -d '{"prompt":"hi","max_tokens":2}')"
check "e2e: a streamed one too" grep -Eq '^e2e-[01]$' <<< "$(hdr -N "http://127.0.0.1:$LB/v1/completions" -d '{"prompt":"hi","max_tokens":2,"stream":true}')"
check "e2e: a 404 too" grep -Eq '^e2e-[01]$' <<< "$(hdr "http://127.0.0.1:$LB/nope")"
check "e2e: a 400 too" grep -Eq '^e2e-[01]$' <<< "$(hdr "http://127.0.0.1:$LB/v1/completions" -d '{')"
check "e2e: /metrics too (engine 0 direct)" test "$(hdr "http://127.0.0.1:$P0/metrics")" = e2e-0
sed -e "s/^instance = .*/instance =/" "$tmp/e1.conf" > "$tmp/e1-default.conf"
check "e2e: default instance is hostname:port" grep -qx \
	"instance:  $(hostname | cut -d. -f1 | tr -c 'A-Za-z0-9\n._-' -):$P1 (hostname:port)" \
	<<< "$("$E" --check-config "$tmp/e1-default.conf" 2>&1)"
# Server-sent events pass through unbuffered: 40 tokens at 20 ms a step take
# about 0.8 s; the first event must arrive long before the last.
python3 - "$LB" > "$tmp/sse" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
body = b'{"prompt":"hi","max_tokens":40,"ignore_eos":true,"stream":true}'
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
t0 = time.monotonic(); first = None; buf = b""
while b"data: [DONE]" not in buf:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
    if first is None and b"data: {" in buf:
        first = time.monotonic() - t0
end = time.monotonic() - t0
print("first %.3f end %.3f events %d" % (first or -1, end, buf.count(b"data: ")))
EOF
read -r _ first _ end _ events < "$tmp/sse"
check "e2e: SSE unbuffered through nginx (first event ${first}s, last ${end}s, $events events)" \
	python3 -c "import sys; sys.exit(0 if 0 <= $first < $end / 2 and $end > 0.4 and $events >= 10 else 1)"
# Drain: engine 0 gets SIGTERM with a long request in flight; until it exits
# it answers 503, which nginx passes to engine 1 (non_idempotent) and counts
# against it.
curl -s -o /dev/null "http://127.0.0.1:$P0/v1/completions" -d '{"prompt":"hi","max_tokens":150,"ignore_eos":true}' &
pids+=($!)
sleep 0.3
kill -TERM "$E0_PID"
sleep 0.3
codes=""
for _ in $(seq 10); do
	codes="$codes $(curl -s -o /dev/null -w '%{http_code}:' -D "$tmp/h" "http://127.0.0.1:$LB/v1/completions" -d '{"prompt":"hi","max_tokens":2}')$(tr -d '\r' < "$tmp/h" | sed -n 's/^X-Locus-Instance: //Ip')"
done
check "e2e: while engine 0 drains, every POST is answered by engine 1 ($codes )" \
	test "$(echo $codes | tr ' ' '\n' | sort -u | paste -sd' ')" = "200:e2e-1"
check "e2e: engine 0 still draining (its own /health: 503)" \
	test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P0/health")" = 503
exit $fail
