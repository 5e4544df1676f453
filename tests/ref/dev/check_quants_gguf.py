"""DEV-ONLY cross-check (not run by any test): compares tests/ref/quants_ref.py
and gguf_ref.py against the pip package `gguf` (gguf-py), which the committed
reference must not depend on.  Run with a python that has gguf installed:

    python3 tests/ref/dev/check_quants_gguf.py [MODEL.gguf ...]

1. random blocks (random bytes, scale fields replaced by finite halves) of every
   type the reference dequantizes: max abs diff and bit-exactness vs
   gguf.quants.dequantize;
2. for each model file given: the header (metadata, tensor infos) vs
   gguf.GGUFReader, and every tensor dequantized by both.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gguf  # noqa: E402  (dev-only dependency)
from gguf_ref import GGUFFile  # noqa: E402
from quants_ref import GGML_TYPES, TYPE_IDS, dequantize  # noqa: E402

# byte offsets of half-precision scale fields inside each block
HALF_FIELDS = {
    "Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
    "Q4_K": [0, 2], "Q6_K": [208],
}


def random_blocks(name, nb, rng):
    _, bs, ts = GGML_TYPES[TYPE_IDS[name]]
    if name in ("F32",):
        return rng.standard_normal(nb * bs).astype("<f4").view(np.uint8), nb * bs
    if name == "F16":
        return rng.standard_normal(nb * bs).astype("<f2").view(np.uint8), nb * bs
    if name == "BF16":
        return rng.integers(0, 256, nb * 2, dtype=np.uint8), nb
    b = rng.integers(0, 256, (nb, ts), dtype=np.uint8)
    for off in HALF_FIELDS[name]:
        h = (rng.standard_normal(nb) * 0.05).astype("<f2").view(np.uint8).reshape(nb, 2)
        b[:, off:off + 2] = h
    return b.reshape(-1), nb * bs


def check_random():
    rng = np.random.default_rng(1234)
    worst = 0.0
    for name in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"]:
        raw, n = random_blocks(name, 4096, rng)
        mine = dequantize(raw, TYPE_IDS[name], n)
        qt = gguf.GGMLQuantizationType[name]
        theirs = gguf.quants.dequantize(raw.reshape(1, -1), qt).reshape(-1).astype(np.float32)
        both_nan = np.isnan(mine) & np.isnan(theirs)
        with np.errstate(invalid="ignore"):
            diff = np.where(both_nan, 0.0, np.abs(mine.astype(np.float64) - theirs))
        md = float(np.nanmax(diff))
        bitexact = np.array_equal(mine.view(np.uint32)[~both_nan], theirs.view(np.uint32)[~both_nan])
        print("random %-5s n=%7d  max|diff|=%.3g  bit-exact=%s" % (name, n, md, bitexact))
        worst = max(worst, md)
    return worst


def check_file(path):
    mine = GGUFFile(path)
    r = gguf.GGUFReader(path)
    n_bad = 0
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        v = f.contents()
        w = mine.metadata[f.name]
        if isinstance(w, np.ndarray):
            ok = np.array_equal(np.asarray(v), w)
        else:
            ok = (v == w) or (isinstance(v, float) and abs(v - w) <= 1e-7 * abs(v))
        if not ok:
            n_bad += 1
            print("  metadata mismatch", f.name, str(v)[:80], str(w)[:80])
    if len(r.fields) - 3 != len(mine.metadata):
        print("  metadata count differs", len(r.fields) - 3, len(mine.metadata))
        n_bad += 1
    worst = 0.0
    for t in r.tensors:
        ti = mine.tensors[t.name]
        if list(map(int, t.shape)) != ti.ne or int(t.tensor_type) != ti.ggml_type \
                or int(t.data_offset) != ti.abs_offset:
            n_bad += 1
            print("  tensor info mismatch", t.name)
        theirs = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        a = mine.tensor(t.name).reshape(-1)
        d = float(np.max(np.abs(a.astype(np.float64) - theirs))) if a.size else 0.0
        worst = max(worst, d)
    types = sorted({mine.tensors[n].ggml_type for n in mine.tensors})
    print("file %s: %d kv, %d tensors, types %s, header mismatches %d, max|deq diff| %.3g" % (
        os.path.basename(path), len(mine.metadata), len(mine.tensors),
        [GGML_TYPES[t][0] for t in types], n_bad, worst))
    return n_bad, worst


if __name__ == "__main__":
    w = check_random()
    bad = 0
    for p in sys.argv[1:]:
        nb, d = check_file(p)
        bad += nb
        w = max(w, d)
    print("worst max|diff| %.3g, header mismatches %d" % (w, bad))
    sys.exit(0 if w == 0.0 and bad == 0 else 1)
