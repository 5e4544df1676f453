#!/usr/bin/env bash
# Static analysis of the project's C code with cppcheck (Debian package):
# warnings, performance and portability checks; fails on any finding.
# Suppressions, each with its reason, are in tools/cppcheck-suppressions.txt.
#   tools/scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cppcheck >/dev/null || { echo "lint: cppcheck is not installed (apt-get install cppcheck)"; exit 1; }
out=$(cppcheck --quiet --enable=warning,performance,portability --std=c11 -I . \
  --suppressions-list=tools/cppcheck-suppressions.txt --error-exitcode=1 \
  alloc engine kernels net bench tools tests 2>&1) || { echo "$out"; echo "lint: cppcheck found problems"; exit 1; }
[ -z "$out" ] || { echo "$out"; echo "lint: cppcheck found problems"; exit 1; }
echo "lint: cppcheck clean"
