#!/bin/bash
# t_scaleout: two engines behind the generated nginx configuration, under
# uring-bench: spread, streaming, SIGKILL of one instance, restart
# (tests/t_scaleout.py; stdlib Python, nginx from Debian).
set -u
SRC=${LOCUS_SRC:-.}
exec python3 "$SRC/tests/t_scaleout.py"
