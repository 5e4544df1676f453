#!/usr/bin/python3
"""Compare two logits dumps (raw float32, (n_tokens, n_vocab) row-major):
a TEST (the C engine) against a REFERENCE (llama_ref.py, or another engine run).

Per position t, with a = test row and b = reference row:
  rel    = ||a - b||_2 / ||b||_2
  maxabs = max_i |a_i - b_i| / rms(b)     (scale-free: logits of random synthetic
                                           models have arbitrary scale)
  argmax = argmax(a) == argmax(b); a mismatch is tolerated only when the
           reference's top-1/top-2 gap is < 2 * maxabs tolerance * rms(b)
           (a near tie that the allowed error can flip)
Every position must pass; the worst position is printed either way.

Tolerances (TOLERANCES below; the reasoning and measurements are in
tests/ref/README.md).  Measured on mkmodel's 2-layer dim-256 models as run by
tests/t_reference.sh, with llama.cpp standing in for the engine:
  F32 F16 BF16  rel 2e-3, maxabs 2e-2 rms.  Weights are exact; the engine keeps
                f32 activations and an f16 KV cache.  f16 K/V alone: rel up to
                4.3e-4 (reference with --emulate-f16-kv); llama.cpp, which also
                rounds Q (and, for F16 weights, activations) to f16: up to 1.2e-3.
  Q8_0 Q4_0 Q4_1
                rel 3e-2, maxabs 0.15 rms.  8-bit activations per 32-block over
                2 layers x 7 matmuls + the output matmul: rel 1.4-1.7e-2 (both
                --emulate-q8-act and llama.cpp); ~2x margin.
  Q4_K Q6_K     rel 4e-2, maxabs 0.2 rms.  As above with 32-blocks; an engine
                that uses one activation scale per 256 (GGML's Q8_K, as
                llama.cpp does) measured 2.5e-2.
  tight         rel 1e-3, maxabs 1e-2 rms: two runs of one engine on float
                weights that differ only in micro-batching (--ubatch 1 vs one
                chunk).  Differences: f32 accumulation order, and at most the
                f16 rounding of the current chunk's K/V (<= 4.3e-4).
  tight-q       rel 1e-2, maxabs 5e-2 rms: the same for quantized weights.  8-bit
                activation rounding is discontinuous: one rounding flipped by a
                1e-7 accumulation-order difference moves the logits by ~1e-3
                (measured up to 2.6e-3 for 1e-7 noise on q and k).  If the two
                paths differ in K/V precision (fresh f32 vs the f16 cache) the
                flips add up to ~1.9e-2 and this check fails on purpose.
Sensitivity (reference vs itself with one detail changed, same models):
  rope layout NORM<->NEOX 0.4-0.7; qwen2 biases dropped 0.21; kq scale +1% 8e-3;
  rope_freqs ignored 3.5e-3 at 22 positions but 1.4e-2 at 128 (hence the long
  prompt of the llama3 case); rms eps x10 3e-4 (not detected, harmless).

Usage:
  compare.py --type Q4_0 --n-vocab N TEST.f32 REF.f32 [--label NAME]
  compare.py --type tight|tight-q --n-vocab N A.f32 B.f32
  compare.py --rel-tol X --abs-tol Y ...   (override the table)
Exit status 0 when every position passes, 1 otherwise, 2 on bad input.
"""

import argparse
import sys

import numpy as np

# type -> (rel tolerance, maxabs tolerance as a fraction of rms(ref))
TOLERANCES = {
    "F32": (2e-3, 2e-2),
    "F16": (2e-3, 2e-2),
    "BF16": (2e-3, 2e-2),
    "Q8_0": (3e-2, 0.15),
    "Q4_0": (3e-2, 0.15),
    "Q4_1": (3e-2, 0.15),
    "Q4_K": (4e-2, 0.2),
    "Q6_K": (4e-2, 0.2),
    "tight": (1e-3, 1e-2),
    "tight-q": (1e-2, 5e-2),
}


def load(path, n_vocab):
    a = np.fromfile(path, dtype="<f4")
    if n_vocab <= 0 or a.size == 0 or a.size % n_vocab:
        raise ValueError("%s: %d floats is not a whole number of rows of %d" % (path, a.size, n_vocab))
    return a.reshape(-1, n_vocab).astype(np.float64)


def compare(a, b, rel_tol, abs_tol):
    """Returns (ok, rows) where rows are per-position dicts."""
    rows = []
    ok = True
    for t in range(b.shape[0]):
        x, y = a[t], b[t]
        rms = float(np.sqrt(np.mean(y * y)))
        nb = float(np.linalg.norm(y))
        d = x - y
        rel = float(np.linalg.norm(d)) / nb if nb > 0 else float(np.linalg.norm(d))
        maxabs = float(np.max(np.abs(d)))
        maxabs_n = maxabs / rms if rms > 0 else maxabs
        ia, ib = int(np.argmax(x)), int(np.argmax(y))
        srt = np.sort(y)
        gap = float(srt[-1] - srt[-2]) if y.size > 1 else float("inf")
        near_tie = gap < 2 * abs_tol * rms
        finite = bool(np.all(np.isfinite(x)))
        r_ok = finite and rel <= rel_tol and maxabs_n <= abs_tol and (ia == ib or near_tie)
        ok = ok and r_ok
        rows.append(dict(t=t, rel=rel, maxabs=maxabs, maxabs_n=maxabs_n, argmax_a=ia, argmax_b=ib,
                         near_tie=near_tie, finite=finite, ok=r_ok))
    return ok, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description="compare logits dumps")
    ap.add_argument("test")
    ap.add_argument("ref")
    ap.add_argument("--n-vocab", type=int, required=True)
    ap.add_argument("--type", default="F32", help="tolerance row: " + " ".join(TOLERANCES))
    ap.add_argument("--rel-tol", type=float)
    ap.add_argument("--abs-tol", type=float)
    ap.add_argument("--label", default="")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every position")
    args = ap.parse_args(argv)

    if args.type not in TOLERANCES:
        print("compare.py: unknown type %r (known: %s)" % (args.type, " ".join(TOLERANCES)), file=sys.stderr)
        return 2
    rel_tol, abs_tol = TOLERANCES[args.type]
    if args.rel_tol is not None:
        rel_tol = args.rel_tol
    if args.abs_tol is not None:
        abs_tol = args.abs_tol
    try:
        a = load(args.test, args.n_vocab)
        b = load(args.ref, args.n_vocab)
    except (OSError, ValueError) as e:
        print("compare.py: %s" % e, file=sys.stderr)
        return 2
    label = args.label or "%s vs %s" % (args.test, args.ref)
    if a.shape != b.shape:
        print("FAIL %s: shape %s vs reference %s" % (label, a.shape, b.shape))
        return 1

    ok, rows = compare(a, b, rel_tol, abs_tol)
    worst = max(rows, key=lambda r: (not r["ok"], r["rel"]))
    n_arg = sum(r["argmax_a"] != r["argmax_b"] for r in rows)
    summary = ("%s %s [%s]: %d positions, worst rel %.3g (tol %.3g) at t=%d, max|diff| %.3g = %.3g rms "
               "(tol %.3g), argmax mismatches %d" % (
                   "ok  " if ok else "FAIL", label, args.type, len(rows), worst["rel"], rel_tol, worst["t"],
                   max(r["maxabs"] for r in rows), max(r["maxabs_n"] for r in rows), abs_tol, n_arg))
    print(summary)
    shown = 0
    n_bad = sum(not r["ok"] for r in rows)
    for r in rows:
        if not args.verbose and (r["ok"] or shown >= 10):
            continue
        shown += 1
        why = []
        if not r["finite"]:
            why.append("non-finite logits")
        if r["rel"] > rel_tol:
            why.append("rel %.3g > %.3g" % (r["rel"], rel_tol))
        if r["maxabs_n"] > abs_tol:
            why.append("max|diff| %.3g rms > %.3g" % (r["maxabs_n"], abs_tol))
        if r["argmax_a"] != r["argmax_b"] and not r["near_tie"]:
            why.append("argmax %d != reference %d (not a near tie)" % (r["argmax_a"], r["argmax_b"]))
        print("   t=%-3d rel=%.3e maxabs=%.3e (%.3g rms) argmax %d/%d%s %s" % (
            r["t"], r["rel"], r["maxabs"], r["maxabs_n"], r["argmax_a"], r["argmax_b"],
            " (near tie)" if r["near_tie"] and r["argmax_a"] != r["argmax_b"] else "",
            "; ".join(why)))
    if not args.verbose and n_bad > shown:
        print("   ... %d more failing positions (-v prints all)" % (n_bad - shown))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
