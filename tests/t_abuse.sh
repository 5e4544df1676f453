#!/bin/bash
# t_abuse: overload at 3x capacity, idle connections up to max_conns,
# descriptor exhaustion, SIGTERM and SIGKILL under load (tests/t_abuse.py).
set -u
SRC=${LOCUS_SRC:-.}
exec python3 "$SRC/tests/t_abuse.py"
