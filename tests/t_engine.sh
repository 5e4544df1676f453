#!/bin/bash
# t_engine: runs tests/t_engine.py with the project's Python environment
# (Debian python3 + the openai package, made by tools/scripts/py-env.sh).
set -u
SRC=${LOCUS_SRC:-.}
PY=$("$SRC/tools/scripts/py-env.sh") || { echo "FAIL cannot set up the Python environment"; exit 1; }
exec "$PY" "$SRC/tests/t_engine.py"
