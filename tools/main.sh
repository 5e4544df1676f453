#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine (as root): installs the
# dependencies, builds, fetches the default model, shows it answering one
# question, then runs the NUMA experiment: the serving engine under three
# placement modes (baseline: OS scheduling; numactl: confined from outside;
# pinned: the engine's own pinning and strict membind), 3 interleaved runs
# each of 50 streamed requests at concurrency 4, measured by uring-bench
# (bench/numa-compare.sh). It ends with the report's table and its path,
# benchmarks/day05_numa_baseline.md (raw runs in benchmarks/day05_runs/).
# A few minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/scripts/install-deps.sh
tools/scripts/build.sh release
tools/scripts/fetch-model.sh
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
PROMPT=${PROMPT:-"What is the capital of France? Answer in one sentence."}
echo "== generate --chat (greedy) =="
build/bin/generate --model "$MODEL" --chat --prompt "$PROMPT" -n 64 --temp 0 -v
echo
echo "== the NUMA experiment: bench/numa-compare.sh (-n 50 -c 4, 3 runs per mode) =="
bench/numa-compare.sh --model "$MODEL" --out benchmarks
REPORT=benchmarks/day05_numa_baseline.md
echo
echo "== results (median over runs, (min-max) across runs) =="
sed -n '/^| Mode | Concurrency |/,/^$/p' "$REPORT"
echo "report: $REPORT"
