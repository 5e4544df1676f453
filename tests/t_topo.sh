#!/bin/bash
# t_topo: topo-capture writes the NUMA lab's topology artifacts.
#  - on this machine: every file present and non-empty, summary.md has the GPU
#    sentences or "No GPU found." with the engine's nodes and cores, which must
#    equal what `engine --check-config` plans for the same settings;
#  - on tests/data/topo-2s-8gpu.xml (2 sockets x 16 cores x 2 PUs, 4 H100 per
#    socket): exactly the 8 sentences "GPU N is on NUMA node X, nearest cores
#    are ..." with each socket's cpuset, the BMC's VGA not counted;
#  - fallbacks when lscpu / numactl / lstopo are missing, nvidia-smi present
#    (a stand-in script) working or failing, the default directory;
#  - bad input (missing or garbage XML, unknown options) exits non-zero with a
#    message, without a crash and without creating the output directory.
# Env: LOCUS_SRC, LOCUS_BIN.
set -u
SRC=$(cd "${LOCUS_SRC:-.}" && pwd)
BIN=$(cd "${LOCUS_BIN:-build/bin}" && pwd)
T=$BIN/topo-capture
XML=$SRC/tests/data/topo-2s-8gpu.xml
if [ ! -x "$T" ]; then
	echo "skip: $T not built"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
check() { # label, command...
	local label=$1
	shift
	if "$@"; then ok "$label"; else bad "$label"; fi
}

files_ok() { # dir: the four files every capture writes, non-empty
	local f
	for f in lscpu_day05.txt numa_day05.txt lstopo_day05.txt summary.md; do
		[ -s "$1/$f" ] || { echo "  missing or empty: $1/$f"; return 1; }
	done
}

# The engine's own plan for the same settings as topo-capture's (default
# config, node = auto): "node N: compute CPUs LIST" -> "NUMA node N, cores LIST", and in a
# CUDA build "node N: GPU G, host CPUs LIST" -> "GPU G on NUMA node N, cores LIST".
"$BIN/mkmodel" -o "$tmp/tiny.gguf" --layers 1 --dim 64 --heads 2 --kv-heads 2 --ffn 128 --type F32 \
	>/dev/null 2>&1 || bad "mkmodel for the engine's plan"
sed -e 's|^path = .*|path = '"$tmp"'/tiny.gguf|' -e 's|^node = .*|node = auto|' \
	-e 's|^type = .*|type = auto|' "$SRC/configs/node0.conf" > "$tmp/auto.conf"
engine_lines() { # [--topology X]: what the engine plans, in topo-capture's words
	"$BIN/engine" --check-config "$tmp/auto.conf" "$@" |
		sed -n -e 's/^node \([0-9]*\): *compute CPUs \([^ ]*\) .*/The engine would use NUMA node \1, cores \2/p' \
			-e 's/^node \([0-9]*\): *GPU \([0-9]*\), host CPUs \([^ ]*\) .*/The engine would use GPU \2 on NUMA node \1, cores \3/p'
}

# ---- this machine ----
out=$tmp/here
if "$T" --out "$out" > "$tmp/stdout" 2> "$tmp/stderr"; then ok "this machine: exit 0"; else
	bad "this machine: exit $? ($(cat "$tmp/stderr"))"; fi
check "this machine: files written" files_ok "$out"
check "this machine: one stdout line per file" \
	test "$(grep -c '^wrote ' "$tmp/stdout")" -eq "$(ls "$out" | wc -l)"
check "this machine: kernel is uname -r" grep -qF -- "- Kernel: $(uname -r) (\`uname -r\`)" "$out/summary.md"
if grep -Eq '^- GPU [0-9]+ is on NUMA node' "$out/summary.md"; then
	check "this machine: GPU sentences" grep -Eq '^- GPU [0-9]+ is on NUMA node [0-9,-]+, nearest cores are [0-9,-]+$' \
		"$out/summary.md"
	n_engine=$("$BIN/engine" --check-config "$tmp/auto.conf" | sed -n 's/^topology:.* \([0-9]*\) NVIDIA GPU.*/\1/p')
	check "this machine: as many GPUs as the engine finds (${n_engine:-0})" \
		test "$(grep -Ec '^- GPU [0-9]+ is on NUMA node' "$out/summary.md")" = "${n_engine:-0}"
else
	check "this machine: No GPU found." grep -qx 'No GPU found.' "$out/summary.md"
	grep '^- The engine would use' "$out/summary.md" | sed 's/^- //' > "$tmp/mine"
	engine_lines > "$tmp/engine"
	if [ -s "$tmp/mine" ] && cmp -s "$tmp/mine" "$tmp/engine"; then
		ok "this machine: engine line(s) = engine --check-config: $(paste -sd';' "$tmp/mine")"
	else
		bad "this machine: engine lines differ: '$(cat "$tmp/mine")' vs engine '$(cat "$tmp/engine")'"
	fi
	check "this machine: sentences on stdout too" grep -qx 'No GPU found.' "$tmp/stdout"
fi
if command -v nvidia-smi >/dev/null && nvidia-smi topo -m >/dev/null 2>&1; then
	check "this machine: nvidia-smi topo -m captured" test -s "$out/nvidia_smi_topo_day05.txt"
else
	check "this machine: no nvidia-smi file" test ! -e "$out/nvidia_smi_topo_day05.txt"
	check "this machine: summary says so" grep -q 'nvidia-smi: .*no nvidia_smi_topo_day05.txt' "$out/summary.md"
fi
# The PU count against lscpu where the process sees every CPU (no cgroup limit).
if command -v lscpu >/dev/null; then
	n_lscpu=$(lscpu -p=CPU | grep -vc '^#')
	if [ "$n_lscpu" = "$(nproc)" ]; then
		check "this machine: $n_lscpu PUs as lscpu" grep -q "PUs (hardware threads): $n_lscpu\b" "$out/summary.md"
	fi
	check "this machine: lscpu -e output" grep -q '^CPU ' "$out/lscpu_day05.txt"
fi

# ---- fallbacks: no lscpu, numactl, lstopo on PATH; a working stand-in nvidia-smi ----
mkdir -p "$tmp/fakebin"
printf '#!/bin/sh\necho "        GPU0    CPU Affinity    NUMA Affinity"\necho "GPU0     X      0-1             0"\n' \
	> "$tmp/fakebin/nvidia-smi"
chmod +x "$tmp/fakebin/nvidia-smi"
out=$tmp/nocmd
if PATH=$tmp/fakebin "$T" --out "$out" > "$tmp/stdout" 2> "$tmp/stderr"; then ok "fallbacks: exit 0"; else
	bad "fallbacks: exit $? ($(cat "$tmp/stderr"))"; fi
check "fallbacks: files written" files_ok "$out"
check "fallbacks: lscpu from hwloc" grep -q '^# lscpu not found: the same facts from hwloc' "$out/lscpu_day05.txt"
check "fallbacks: lscpu table" grep -Eq '^ +0 +[0-9]+ +[0-9]+ +[0-9]+ ' "$out/lscpu_day05.txt"
check "fallbacks: numactl from libnuma or hwloc" grep -Eq '^# numactl not found: the same facts from (libnuma|hwloc)' \
	"$out/numa_day05.txt"
check "fallbacks: numa facts" grep -Eq '^node [0-9]+ cpus:' "$out/numa_day05.txt"
check "fallbacks: lstopo tree" grep -q '^Machine' "$out/lstopo_day05.txt"
check "fallbacks: stand-in nvidia-smi captured" grep -q 'CPU Affinity' "$out/nvidia_smi_topo_day05.txt"
printf '#!/bin/sh\necho "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."\nexit 9\n' \
	> "$tmp/fakebin/nvidia-smi"
if PATH=$tmp/fakebin "$T" --out "$out" > /dev/null 2>&1; then
	check "fallbacks: failing nvidia-smi leaves no file" test ! -e "$out/nvidia_smi_topo_day05.txt"
	check "fallbacks: failing nvidia-smi in the summary" grep -q 'nvidia-smi topo -m` failed (exit 9)' "$out/summary.md"
else
	bad "fallbacks: failing nvidia-smi: exit $?"
fi
mkdir -p "$tmp/cwd"
if (cd "$tmp/cwd" && "$T" > /dev/null 2>&1) && files_ok "$tmp/cwd/benchmarks"; then ok "default directory benchmarks/"; else
	bad "default directory benchmarks/"; fi

# ---- the two-socket, eight-GPU topology file ----
out=$tmp/xml
mkdir -p "$out" && echo stale > "$out/nvidia_smi_topo_day05.txt"
if "$T" --out "$out" --topology "$XML" > "$tmp/stdout" 2> "$tmp/stderr"; then ok "xml: exit 0"; else
	bad "xml: exit $? ($(cat "$tmp/stderr"))"; fi
check "xml: files written" files_ok "$out"
check "xml: no nvidia-smi file (not run, stale one removed)" test ! -e "$out/nvidia_smi_topo_day05.txt"
cat > "$tmp/expect" <<'EOF'
GPU 0 is on NUMA node 0, nearest cores are 0-15,32-47
GPU 1 is on NUMA node 0, nearest cores are 0-15,32-47
GPU 2 is on NUMA node 0, nearest cores are 0-15,32-47
GPU 3 is on NUMA node 0, nearest cores are 0-15,32-47
GPU 4 is on NUMA node 1, nearest cores are 16-31,48-63
GPU 5 is on NUMA node 1, nearest cores are 16-31,48-63
GPU 6 is on NUMA node 1, nearest cores are 16-31,48-63
GPU 7 is on NUMA node 1, nearest cores are 16-31,48-63
EOF
grep -E '^- GPU [0-9]+ is on NUMA node' "$out/summary.md" | sed 's/^- //' > "$tmp/got"
if cmp -s "$tmp/got" "$tmp/expect"; then ok "xml: the 8 GPU sentences"; else
	bad "xml: GPU sentences:"; diff "$tmp/expect" "$tmp/got"; fi
grep '^GPU ' "$tmp/stdout" > "$tmp/got"
check "xml: the 8 GPU sentences on stdout" cmp -s "$tmp/got" "$tmp/expect"
check "xml: not \"No GPU found.\"" bash -c "! grep -q 'No GPU found' '$out/summary.md'"
check "xml: BMC VGA not counted" grep -q 'Display controller, not counted as a GPU: PCI 0000:03:00.0' "$out/summary.md"
check "xml: says where the facts come from" grep -q "from topology file $XML" "$out/summary.md"
check "xml: machine facts" grep -q 'Sockets: 2, cores: 32, PUs (hardware threads): 64 (2 per core)' "$out/summary.md"
check "xml: node 1" grep -q 'node 1: cpus 16-31,48-63, memory 256.0 GiB' "$out/summary.md"
check "xml: CPU model" grep -q 'CPU: Intel(R) Xeon(R) Gold 6444Y' "$out/summary.md"
check "xml: lscpu facts from hwloc" grep -Eq '^ +48 +1 +1 +16 +1 +yes' "$out/lscpu_day05.txt"
check "xml: distances" grep -Eq '^ +1: +21 +10' "$out/numa_day05.txt"
grep '^- The engine would use' "$out/summary.md" | sed 's/^- //' > "$tmp/mine"
engine_lines --topology "$XML" > "$tmp/engine"
if [ -s "$tmp/mine" ] && cmp -s "$tmp/mine" "$tmp/engine"; then ok "xml: engine lines = engine --check-config"; else
	bad "xml: engine lines '$(cat "$tmp/mine")' vs engine '$(cat "$tmp/engine")'"; fi
out=$tmp/xml-nocmd
if PATH=/nonexistent "$T" --out "$out" --topology "$XML" > /dev/null 2>&1 &&
	grep -q '^          PCI 0000:db:00.0 \[10de:2330\] class 0302 .*\[near NUMA node 1, cpus 16-31,48-63\]' \
		"$out/lstopo_day05.txt" && grep -q 'Co-Processor "cuda7"' "$out/lstopo_day05.txt"; then
	ok "xml: own lstopo tree with PCI locality"
else
	bad "xml: own lstopo tree"
fi

# ---- a synthetic topology: no GPU, one engine line per node ----
out=$tmp/syn
if "$T" --out "$out" --synthetic "pack:2 numa:1 core:4 pu:1" > "$tmp/stdout" 2>&1 &&
	grep -qx 'No GPU found.' "$tmp/stdout" &&
	grep -qx 'The engine would use NUMA node 0, cores 0-2' "$tmp/stdout" &&
	grep -qx 'The engine would use NUMA node 1, cores 4-7' "$tmp/stdout" && files_ok "$out"; then
	ok "synthetic: No GPU found. + one engine line per node"
else
	bad "synthetic: $(cat "$tmp/stdout")"
fi

# ---- bad input ----
printf 'not <xml at all\n' > "$tmp/garbage.xml"
printf '<?xml version="1.0"?>\n<topology version="2.0"><object type="Machine" cpuset="0xzz"/></topology>\n' \
	> "$tmp/broken.xml"
touch "$tmp/a-file"
expect_fail() { # label, want (1|2), message pattern, args...
	local label=$1 want=$2 pat=$3
	shift 3
	rm -rf "$tmp/never"
	"$T" --out "$tmp/never" "$@" > "$tmp/stdout" 2> "$tmp/stderr"
	local rc=$?
	if [ "$rc" -eq "$want" ] && grep -q -- "$pat" "$tmp/stderr" && [ ! -e "$tmp/never" ]; then
		ok "$label: exit $rc, $(head -n1 "$tmp/stderr")"
	else
		bad "$label: exit $rc (want $want), stderr '$(cat "$tmp/stderr")'"
	fi
}
expect_fail "missing file" 1 "missing.xml: No such file" --topology "$tmp/missing.xml"
expect_fail "garbage XML" 1 "garbage.xml" --topology "$tmp/garbage.xml"
expect_fail "broken XML" 1 "broken.xml" --topology "$tmp/broken.xml"
expect_fail "bad synthetic" 1 "pack:zz" --synthetic "pack:zz"
expect_fail "unknown option" 2 "unknown option '--frobnicate'" --frobnicate
expect_fail "stray argument" 2 "unknown argument" stray
expect_fail "option without value" 2 "needs a value" --topology
expect_fail "both topologies" 2 "exclude each other" --topology "$XML" --synthetic "pack:2 pu:1"
expect_fail "not *.xml" 2 "expected an hwloc XML file" --topology "$tmp/a-file"
"$T" --out "$tmp/a-file/sub" --synthetic "pack:1 pu:1" > /dev/null 2> "$tmp/stderr"
rc=$?
if [ $rc -eq 1 ] && grep -q 'Not a directory' "$tmp/stderr"; then ok "--out under a file: exit 1, $(cat "$tmp/stderr")"; else
	bad "--out under a file: exit $rc"; fi
if "$T" --help | grep -q '^usage: topo-capture'; then ok "--help"; else bad "--help"; fi

exit $fail
