#!/bin/bash
# t_numa_compare: smoke test of the NUMA experiment (bench/numa-compare.sh
# --quick on the null backend) and of bench/numa_report.py's decision rule.
#  - the lab runs end to end: 3 modes x 2 runs, each engine exits 0;
#  - the report exists, has the results table with one row per mode, and
#    both SVG plots parse as XML;
#  - the decision rule: overlapping ranges -> "no difference", disjoint
#    ranges -> a difference, on crafted values and on a crafted run
#    directory; the chance figures 2/C(2R,R) for R = 3 and 5.
# Needs build/bin/uring-bench (skips without it). Uses the default model when
# fetched, else a tiny random one made by mkmodel (the null backend computes
# nothing, but the engine still loads a model for its vocabulary).
set -euo pipefail
SRC=${LOCUS_SRC:-.}
BIN=${LOCUS_BIN:-$SRC/build/bin}
cd "$SRC"
for b in engine uring-bench; do
	if [ ! -x "$BIN/$b" ]; then
		echo "skip: $BIN/$b is not built"
		exit 77
	fi
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() {
	echo "FAIL $*"
	exit 1
}

M=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$M" ]; then
	M=$TMP/tiny.gguf
	"$BIN/mkmodel" -o "$M" --layers 2 --dim 256 --heads 4 --kv-heads 2 --ffn 512 --type Q8_0 \
		--tokenizer tests/data/tokenizers/ggml-vocab-llama-spm.gguf >/dev/null || fail "mkmodel"
fi

LOCUS_BIN=$BIN bench/numa-compare.sh --quick --backend null --model "$M" --out "$TMP/out" >"$TMP/lab.log" 2>&1 ||
	{ cat "$TMP/lab.log"; fail "numa-compare.sh --quick --backend null exited non-zero"; }
REPORT=$TMP/out/day05_numa_baseline.md
[ -s "$REPORT" ] || fail "no report at $REPORT"
grep -qxF '| Mode | Concurrency | Avg Latency (ms) | p95 Latency (ms) | Throughput | Notes |' "$REPORT" ||
	fail "the report lacks the results table header"
for m in baseline numactl pinned; do
	grep -q "^| $m | 4 | " "$REPORT" || fail "no table row for mode $m"
	n=$(find "$TMP/out/day05_runs" -name "*_${m}_r*.json" ! -name '*.meta.json' | wc -l)
	[ "$n" = 2 ] || fail "mode $m: $n run files, expected 2"
done
for svg in day05_latency_percentiles.svg day05_throughput.svg; do
	grep -qF "]($svg)" "$REPORT" || fail "the report does not link $svg"
done
echo "ok   the lab ran 3 modes x 2 runs and wrote the report with its table"

python3 - "$TMP/out" <<'EOF' || fail "report checks"
import glob, json, os, shutil, subprocess, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
sys.path.insert(0, "bench")
import numa_report as nr

def check(cond, what):
    if not cond:
        print("FAIL", what)
        sys.exit(1)
    print("ok  ", what)

for svg in ("day05_latency_percentiles.svg", "day05_throughput.svg"):
    root = ET.parse(os.path.join(out, svg)).getroot()
    check(root.tag.endswith("svg") and len(root) > 5, "%s parses as XML with content" % svg)

# the rule on values
check(nr.verdict([1, 2, 3], [2.5, 3.5, 4])[0] is False, "overlapping ranges: no difference")
check(nr.verdict([1, 2, 3], [3.1, 4, 5])[0] is True, "disjoint ranges: a difference")
check(nr.verdict([3.1, 4, 5], [1, 2, 3])[0] is True, "disjoint ranges, the other way: a difference")
check(nr.verdict([1, 2, 3], [3, 4, 5])[0] is False, "ranges touching at one value overlap")
check(abs(nr.p_disjoint(3, 3) - 0.1) < 1e-12 and abs(nr.p_disjoint(5, 5) - 2 / 252) < 1e-12,
      "chance of disjoint ranges: 2/C(6,3) = 10%, 2/C(10,5) = 0.8%")

# the rule in the report, on crafted run directories
runs = os.path.join(out, "day05_runs")
def crafted(name, tok_s):
    d = os.path.join(out, name, "day05_runs")
    shutil.copytree(runs, d)
    for p in glob.glob(os.path.join(d, "*_r*.json")):
        if p.endswith(".meta.json"):
            continue
        js = json.load(open(p))
        mode = os.path.basename(p).split("_")[1]
        rep = int(os.path.basename(p).split("_r")[-1].split(".")[0])
        js["throughput"]["output_tokens_per_s"] = tok_s(mode, rep)
        json.dump(js, open(p, "w"))
    md = os.path.join(out, name, "report.md")
    subprocess.run([sys.executable, "bench/numa_report.py", d, "--out", md], check=True, stdout=subprocess.DEVNULL)
    txt = open(md).read()
    print("\n".join("     " + l for l in txt.splitlines() if l.startswith("- throughput:")))
    return txt

txt = crafted("same", lambda mode, rep: 100.0 + rep)            # every mode 101, 102
check("- throughput: 1.00x of baseline (median 101.5 vs 101.5 tok/s) — no difference beyond run-to-run noise"
      in txt, "report: identical ranges -> no difference")
txt = crafted("apart", lambda mode, rep: (300.0 if mode == "pinned" else 100.0) + rep)
check("- throughput: pinned higher (2.97x" in txt and "a difference by the rule" in txt,
      "report: disjoint ranges -> pinned higher, a difference")
check("33.3%" in txt, "report: the chance for R = 2 (33.3%) is printed")
EOF
echo "PASS t_numa_compare"
