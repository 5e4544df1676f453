#!/usr/bin/env bash
# The NUMA experiment: the same serving workload against the engine started
# in several placement modes, interleaved (A B C A B C ...) and repeated, with
# the CPU-side facts of every run, then a report (bench/numa_report.py).
#
#   bench/numa-compare.sh [options]          (--help lists them)
#
# Modes (each a config derived from configs/node0.conf, written to the run
# directory with the plan `engine --check-config` resolves for it):
#   baseline  [numa] pin = off, membind = off, no wrapper: the OS places
#             threads and memory (first touch) as it likes.
#   numactl   the same config under `numactl --cpunodebind=N --membind=N
#             taskset -c CPUS`: the process is confined from outside, threads
#             still float inside the node (the seed lab's way).
#   pinned    [numa] pin = on, membind = strict: the engine pins every thread
#             to its CPU and binds its KV cache and scratch to the node.
#
# Per run: start the engine on a loopback port, wait for GET /health 200,
# warm up, run build/bin/uring-bench (JSON per run), sample per thread
# (/proc/PID/task/*: migrations, context switches, CPU time, last CPU,
# allowed CPUs) before and after the measured part, the machine's CPU time
# (/proc/stat: how much else was running), the nodes' numastat
# counters around it (system-wide) and `numastat -p PID`, `nvidia-smi dmon`
# when there is a GPU, optional competing load (--noise), then SIGTERM and a
# check that the engine exits 0. Everything lands in OUT/day05_runs/; the
# report is OUT/day05_numa_baseline.md with two SVG plots beside it.
#
# Every wait is bounded; a trap stops the engine, the load and dmon on any
# exit, so no process outlives the script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${LOCUS_BIN:-build/bin}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac

usage() {
	cat <<'EOF'
usage: bench/numa-compare.sh [options]
  -n N              requests per run (uring-bench -n; default 50)
  -c C              concurrency (uring-bench -c; default 4)
  -R R              runs per mode, interleaved A B C A B C ... (default 3)
  --max-tokens M    tokens generated per request, EOS ignored (default 64)
  --stream          stream responses, so TTFT and inter-token latency are measured (default)
  --no-stream       whole responses
  --model PATH      GGUF model (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
  --backend B       cpu or null (default cpu; null computes nothing but still needs --model)
  --modes LIST      comma-separated subset of baseline,numactl,pinned (default all three)
  --node N          NUMA node to serve from (default 0)
  --noise KIND      none, cpu or mem: competing load during each measured run (default none)
  --out DIR         where the report goes; raw runs in DIR/day05_runs (default benchmarks)
  --port P          fixed loopback port (default: a free one chosen by the engine)
  --quick           R=2, n=20: a smoke test
  -h, --help        this text
Environment: LOCUS_BIN (default build/bin) holds engine, uring-bench and topo-capture.
EOF
}

N=50 C=4 R=3 MAXTOK=64 STREAM=1 NODE=0 NOISE=none OUT=benchmarks PORT=0 BACKEND=cpu
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODES=baseline,numactl,pinned
QUICK=0
die() {
	echo "numa-compare: $*" >&2
	exit 1
}
need_arg() { [ "$#" -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ "$#" -gt 0 ]; do
	case $1 in
	-n) need_arg "$@"; N=$2; shift ;;
	-c) need_arg "$@"; C=$2; shift ;;
	-R) need_arg "$@"; R=$2; shift ;;
	--max-tokens) need_arg "$@"; MAXTOK=$2; shift ;;
	--stream) STREAM=1 ;;
	--no-stream) STREAM=0 ;;
	--model) need_arg "$@"; MODEL=$2; shift ;;
	--backend) need_arg "$@"; BACKEND=$2; shift ;;
	--modes) need_arg "$@"; MODES=$2; shift ;;
	--node) need_arg "$@"; NODE=$2; shift ;;
	--noise) need_arg "$@"; NOISE=$2; shift ;;
	--out) need_arg "$@"; OUT=$2; shift ;;
	--port) need_arg "$@"; PORT=$2; shift ;;
	--quick) QUICK=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option '$1'" ;;
	esac
	shift
done
if [ "$QUICK" = 1 ]; then R=2 N=20; fi
for v in N C R MAXTOK NODE PORT; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
if [ "$N" -lt 1 ] || [ "$C" -lt 1 ] || [ "$R" -lt 1 ] || [ "$MAXTOK" -lt 1 ]; then
	die "-n, -c, -R and --max-tokens must be at least 1"
fi
case $BACKEND in cpu | null) ;; *) die "--backend must be cpu or null" ;; esac
case $NOISE in none | cpu | mem) ;; *) die "--noise must be none, cpu or mem" ;; esac
IFS=, read -ra MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do
	case $m in baseline | numactl | pinned) ;; *) die "unknown mode '$m' (baseline, numactl, pinned)" ;; esac
done
[ "${#MODE_LIST[@]}" -ge 1 ] || die "--modes is empty"

ENGINE=$BIN/engine
BENCH=$BIN/uring-bench
[ -x "$ENGINE" ] || die "$ENGINE is missing (tools/scripts/build.sh release)"
[ -x "$BENCH" ] || die "$BENCH is missing (tools/scripts/build.sh release)"
[ -f "$MODEL" ] || die "model $MODEL is missing (tools/scripts/fetch-model.sh)"
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
MODEL=${MODEL#"$ROOT"/} # the engine runs from the repository root: keep the record short
command -v curl >/dev/null || die "curl is needed (tools/scripts/install-deps.sh)"
NODE_DIR=/sys/devices/system/node/node$NODE
[ -r "$NODE_DIR/cpulist" ] || die "NUMA node $NODE does not exist on this machine"
NODE_CPUS=$(<"$NODE_DIR/cpulist")
if [[ ",$MODES," == *,numactl,* ]]; then
	if ! command -v numactl >/dev/null || ! command -v taskset >/dev/null; then
		die "mode numactl needs numactl and taskset (tools/scripts/install-deps.sh)"
	fi
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUNS=$OUT/day05_runs
rm -rf "$RUNS"
mkdir -p "$RUNS"

# --- processes to clean up ----------------------------------------------
ENGINE_PID="" DMON_PID=""
NOISE_PIDS=()
stop_pid() { # PID SECONDS: TERM, wait up to SECONDS, then KILL; returns its exit status
	local pid=$1 i rc=0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "numa-compare: pid $pid still running after ${2}s, SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || rc=$?
	return "$rc"
}
stop_noise() {
	local p
	for p in "${NOISE_PIDS[@]}"; do stop_pid "$p" 5 || true; done
	NOISE_PIDS=()
}
cleanup() {
	[ -z "$ENGINE_PID" ] || stop_pid "$ENGINE_PID" 10 || true
	[ -z "$DMON_PID" ] || stop_pid "$DMON_PID" 3 || true
	stop_noise
	ENGINE_PID="" DMON_PID=""
}
trap cleanup EXIT
trap 'echo "numa-compare: interrupted" >&2; exit 130' INT TERM

# --- facts about the machine and the lab --------------------------------
# json ARGS...: writes key/value pairs (argv) as a JSON object to stdout;
# values that look like JSON numbers stay numbers.
json_obj() {
	python3 -c '
import json, re, sys
a = sys.argv[1:]
num = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?$")
print(json.dumps({k: (json.loads(v) if num.match(v) else v) for k, v in zip(a[::2], a[1::2])}, indent=1))' "$@"
}

TOPO=absent
if [ -x "$BIN/topo-capture" ]; then
	echo "== topo-capture --out $OUT =="
	if "$BIN/topo-capture" --out "$OUT" >"$RUNS/topo-capture.log" 2>&1; then TOPO=ran; else
		TOPO=failed
		echo "numa-compare: topo-capture failed (see $RUNS/topo-capture.log); going on" >&2
	fi
else
	echo "numa-compare: $BIN/topo-capture is not built; no topology capture (the report says so)"
fi

NOISE_TOOL=none
if [ "$NOISE" != none ]; then
	if command -v stress-ng >/dev/null; then NOISE_TOOL=stress-ng; else
		NOISE_TOOL=fallback
		echo "numa-compare: stress-ng is not installed; --noise $NOISE uses a shell/python busy loop instead" >&2
	fi
fi
GPU=0
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && GPU=1
NCPU=$(nproc)
NODES=$(cd /sys/devices/system/node && echo node[0-9]* | tr ' ' ',')
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
STREAM_ARG=()
[ "$STREAM" = 1 ] && STREAM_ARG=(--stream)

# --- per-mode configs ----------------------------------------------------
# derive_conf PIN MEMBIND: configs/node0.conf with [numa] node, pin and
# membind replaced (listen, model and backend come from the command line).
derive_conf() {
	awk -v node="$NODE" -v pin="$1" -v membind="$2" '
		/^\[/ { sec = $0 }
		sec == "[numa]" && /^node[ \t]*=/ { print "node = " node "    ; numa-compare"; next }
		sec == "[numa]" && /^pin[ \t]*=/ { print "pin = " pin "    ; numa-compare"; next }
		sec == "[numa]" && /^membind[ \t]*=/ { print "membind = " membind "    ; numa-compare"; next }
		{ print }' configs/node0.conf
}
declare -A WRAP
for m in "${MODE_LIST[@]}"; do
	case $m in
	baseline) derive_conf off off >"$RUNS/config_$m.conf"; WRAP[$m]="" ;;
	numactl)
		derive_conf off off >"$RUNS/config_$m.conf"
		WRAP[$m]="numactl --cpunodebind=$NODE --membind=$NODE taskset -c $NODE_CPUS"
		;;
	pinned) derive_conf on strict >"$RUNS/config_$m.conf"; WRAP[$m]="" ;;
	esac
	read -ra wrap <<<"${WRAP[$m]}"
	"${wrap[@]}" "$ENGINE" --check-config "$RUNS/config_$m.conf" --listen "127.0.0.1:$PORT" \
		--model "$MODEL" --backend "$BACKEND" >"$RUNS/plan_$m.txt" 2>&1 ||
		{ cat "$RUNS/plan_$m.txt" >&2; die "engine --check-config refused the $m config"; }
done

node_mem() { # node0:KiB,node1:KiB (each node's MemTotal)
	local n out=""
	for n in /sys/devices/system/node/node[0-9]*; do
		out+="${out:+,}${n##*/}:$(awk '/MemTotal/ {print $4}' "$n/meminfo")"
	done
	echo "$out"
}
rel() { echo "${1//$ROOT\//}"; } # paths under the repository, relative to it (for the record)
engine_cmd() {                    # MODE PORT: the engine's command line, one string (for the record)
	rel "${WRAP[$1]:+${WRAP[$1]} }$ENGINE --config $RUNS/config_$1.conf --listen 127.0.0.1:$2 --model $MODEL --backend $BACKEND"
}

json_obj date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	dirty "$(git status --porcelain -uno -- . ":(exclude)$(rel "$OUT")" 2>/dev/null | grep -q . && echo yes || echo no)" \
	cpu_model "$CPU_MODEL" kernel "$(uname -r)" ncpu "$NCPU" online_cpus "$(</sys/devices/system/cpu/online)" \
	numa_nodes "$NODES" node "$NODE" node_cpus "$NODE_CPUS" mem_total_kib "$(awk '/^MemTotal/{print $2}' /proc/meminfo)" node_mem_kib "$(node_mem)" \
	n "$N" c "$C" R "$R" max_tokens "$MAXTOK" stream "$STREAM" model "$(rel "$MODEL")" backend "$BACKEND" modes "$MODES" \
	noise "$NOISE" noise_tool "$NOISE_TOOL" gpu "$GPU" topo_capture "$TOPO" out "$(rel "$OUT")" \
	bench_cmd "$(rel "$BENCH") --url http://127.0.0.1:PORT --endpoint completions -n $N -c $C --max-tokens $MAXTOK --ignore-eos ${STREAM_ARG[*]} --warmup 4 --json RUN.json" \
	script_cmd "bench/numa-compare.sh -n $N -c $C -R $R --max-tokens $MAXTOK $([ "$STREAM" = 1 ] && echo --stream || echo --no-stream) --backend $BACKEND --modes $MODES --node $NODE --noise $NOISE --out $(rel "$OUT")" \
	cmd_baseline "$(engine_cmd baseline PORT)" cmd_numactl "$(engine_cmd numactl PORT)" cmd_pinned "$(engine_cmd pinned PORT)" \
	>"$RUNS/lab.json"

# --- sampling --------------------------------------------------------------
# snap_threads PID FILE: one line per thread of PID (threads may come and go
# while we read: a vanished one is skipped).
snap_threads() {
	local t tid comm st rest f mig allowed vol nonvol
	printf 'tid\tcomm\tcpus_allowed\tlast_cpu\tutime_ticks\tstime_ticks\tnr_migrations\tvoluntary_ctxt_switches\tnonvoluntary_ctxt_switches\n' >"$2"
	for t in /proc/"$1"/task/*; do
		tid=${t##*/}
		comm=$(<"$t/comm") 2>/dev/null || continue
		st=$(<"$t/stat") 2>/dev/null || continue
		rest=${st##*) }                  # fields from 3 on (comm may hold blanks)
		read -ra f <<<"$rest"
		mig=$(awk '/^se.nr_migrations/ {print $3}' "$t/sched" 2>/dev/null || true)
		allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' "$t/status" 2>/dev/null || true)
		vol=$(awk '/^voluntary_ctxt_switches:/ {print $2}' "$t/status" 2>/dev/null || true)
		nonvol=$(awk '/^nonvoluntary_ctxt_switches:/ {print $2}' "$t/status" 2>/dev/null || true)
		[ -n "$vol" ] || continue
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tid" "$comm" "$allowed" "${f[36]}" "${f[11]}" "${f[12]}" \
			"${mig:-NA}" "$vol" "$nonvol" >>"$2"
	done
}
snap_numastat() { # FILE: node, counter, value (system-wide counters of every node)
	local n
	: >"$1"
	for n in /sys/devices/system/node/node[0-9]*; do
		awk -v node="${n##*node}" '{print node "\t" $1 "\t" $2}' "$n/numastat" >>"$1"
	done
}

start_noise() {
	local i mem_kib
	[ "$NOISE" != none ] || return 0
	if [ "$NOISE_TOOL" = stress-ng ]; then
		if [ "$NOISE" = cpu ]; then
			stress-ng --cpu "$NCPU" --timeout 3600s --quiet >/dev/null 2>&1 &
		else
			stress-ng --vm 1 --vm-bytes 25% --timeout 3600s --quiet >/dev/null 2>&1 &
		fi
		NOISE_PIDS+=("$!")
	elif [ "$NOISE" = cpu ]; then
		for ((i = 0; i < NCPU; i++)); do
			bash -c 'while :; do :; done' &
			NOISE_PIDS+=("$!")
		done
	else
		# one process writing a quarter of RAM over and over, like stress-ng --vm 1 --vm-bytes 25%
		mem_kib=$(awk '/^MemTotal/{print $2}' /proc/meminfo)
		python3 -c 'import sys
b = bytearray(int(sys.argv[1]) * 1024 // 4)
while True:
    for i in range(0, len(b), 4096): b[i] = (b[i] + 1) & 255' "$mem_kib" &
		NOISE_PIDS+=("$!")
	fi
}

wait_ready() { # LOG: sets PORT_USED; bounded waits for the port and /health 200
	local log=$1 i code
	PORT_USED=$PORT
	for ((i = 0; i < 300; i++)); do
		kill -0 "$ENGINE_PID" 2>/dev/null || { tail -20 "$log" >&2; die "the engine exited during start-up"; }
		if [ "$PORT" = 0 ]; then
			PORT_USED=$(sed -n 's/^engine: listening on [^ ]*:\([0-9][0-9]*\),.*/\1/p' "$log" 2>/dev/null | head -1) || true
			PORT_USED=${PORT_USED:-0}
		fi
		if [ "$PORT_USED" != 0 ]; then
			code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT_USED/health" || true)
			[ "$code" = 200 ] && return 0
		fi
		sleep 0.2
	done
	tail -20 "$log" >&2
	die "the engine did not answer GET /health with 200 within 60 s"
}

# --- the runs --------------------------------------------------------------
TOTAL=$((R * ${#MODE_LIST[@]}))
echo "numa-compare: ${#MODE_LIST[@]} modes (${MODES}) x $R runs, -n $N -c $C --max-tokens $MAXTOK, backend $BACKEND, noise $NOISE -> $RUNS"
idx=0
for ((rep = 1; rep <= R; rep++)); do
	for mode in "${MODE_LIST[@]}"; do
		idx=$((idx + 1))
		name=$(printf '%02d_%s_r%d' "$idx" "$mode" "$rep")
		base=$RUNS/$name
		read -ra wrap <<<"${WRAP[$mode]}"
		: >"$base.engine.log" # exists before the background job opens it (wait_ready reads it at once)
		"${wrap[@]}" "$ENGINE" --config "$RUNS/config_$mode.conf" --listen "127.0.0.1:$PORT" \
			--model "$MODEL" --backend "$BACKEND" >"$base.engine.log" 2>&1 &
		ENGINE_PID=$!
		wait_ready "$base.engine.log"
		url=http://127.0.0.1:$PORT_USED
		# warm-up: one request through the whole path (uring-bench adds --warmup 4)
		curl -s -o /dev/null --max-time 60 "$url/v1/completions" -H 'Content-Type: application/json' \
			-d '{"prompt": "Hello", "max_tokens": 8, "temperature": 0}' || die "warm-up request to $url failed"
		if [ "$GPU" = 1 ]; then
			nvidia-smi dmon -s pucvmt -d 1 -o TD >"$base.dmon.log" 2>&1 &
			DMON_PID=$!
		fi
		start_noise
		snap_threads "$ENGINE_PID" "$base.threads_pre.tsv"
		snap_numastat "$base.numastat_pre.tsv"
		head -1 /proc/stat >"$base.procstat_pre.txt" # the whole machine's CPU time: is anything else running?
		t0=$(date +%s.%N)
		brc=0
		timeout 900 "$BENCH" --url "$url" --endpoint completions -n "$N" -c "$C" --max-tokens "$MAXTOK" \
			--ignore-eos "${STREAM_ARG[@]}" --warmup 4 --json "$base.json" >"$base.bench.log" 2>&1 || brc=$?
		t1=$(date +%s.%N)
		head -1 /proc/stat >"$base.procstat_post.txt"
		snap_numastat "$base.numastat_post.tsv"
		snap_threads "$ENGINE_PID" "$base.threads_post.tsv"
		if command -v numastat >/dev/null; then numastat -p "$ENGINE_PID" >"$base.numastat_p.txt" 2>&1 || true; fi
		stop_noise
		if [ -n "$DMON_PID" ]; then stop_pid "$DMON_PID" 3 || true; DMON_PID=""; fi
		erc=0
		epid=$ENGINE_PID
		stop_pid "$ENGINE_PID" 40 || erc=$?
		ENGINE_PID=""
		json_obj name "$name" mode "$mode" rep "$rep" index "$idx" pid "$epid" port "$PORT_USED" \
			engine_cmd "$(engine_cmd "$mode" "$PORT_USED")" engine_exit "$erc" bench_exit "$brc" \
			bench_start "$t0" bench_end "$t1" noise "$NOISE" noise_tool "$NOISE_TOOL" >"$base.meta.json"
		summary=$(grep -m1 -E '^ *wall ' "$base.bench.log") || summary=$(sed -n '$p' "$base.bench.log")
		echo "  [$idx/$TOTAL] $mode run $rep: bench exit $brc, engine exit $erc; $summary"
		if [ "$brc" != 0 ] || [ ! -s "$base.json" ]; then
			tail -20 "$base.bench.log" >&2
			die "uring-bench failed in $name"
		fi
		[ "$erc" = 0 ] || { tail -20 "$base.engine.log" >&2; die "the engine exited $erc after SIGTERM in $name"; }
	done
done

# one dmon log per mode, as the lab's naming has them (baseline and pinned)
if [ "$GPU" = 1 ]; then
	for mode in "${MODE_LIST[@]}"; do
		cat "$RUNS"/*_"$mode"_r*.dmon.log >"$OUT/nvidia_dmon_${mode}_day05.log" 2>/dev/null || true
	done
fi

python3 bench/numa_report.py "$RUNS" --out "$OUT/day05_numa_baseline.md"
