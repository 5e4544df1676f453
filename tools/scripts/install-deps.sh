#!/usr/bin/env bash
# Installs the Debian 12 packages Locus builds, tests and benchmarks with.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  liburing-dev libnuma-dev libhwloc-dev libmimalloc-dev libcjson-dev libinih-dev libpcre2-dev libcmocka-dev
  clang libclang-rt-14-dev cppcheck
  python3 python3-numpy python3-pip python3-venv
  numactl hwloc-nox util-linux
  # stress-ng: the competing load of bench/numa-compare.sh --noise cpu|mem
  # (stress-ng --cpu / --vm), so the NUMA experiment can show what pinning and
  # membind do for the engine when other work shares its cores and memory.
  stress-ng
  curl wrk nginx-light
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
