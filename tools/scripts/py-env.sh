#!/usr/bin/env bash
# Creates .cache/venv (Debian's python3 with its site packages, so numpy is
# there too) and installs the Python packages the integration tests use:
# the official `openai` client from PyPI. Idempotent. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.cache/venv
OPENAI=openai==1.99.9
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV" >&2
fi
if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$OPENAI" >&2
fi
echo "$PWD/$VENV/bin/python"
