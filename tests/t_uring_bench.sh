#!/bin/bash
# t_uring_bench: uring-bench against a local server with injected delays,
# stalls, streams and faults (tests/t_uring_bench.py; stdlib Python only).
set -u
SRC=${LOCUS_SRC:-.}
exec python3 "$SRC/tests/t_uring_bench.py"
