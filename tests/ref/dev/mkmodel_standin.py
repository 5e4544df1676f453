"""DEV-ONLY stand-in for Locus's tools/mkmodel (needs the pip package `gguf`;
not used by any committed test unless LOCUS_MKMODEL points at it).  Same CLI:

  python3 mkmodel_standin.py -o F.gguf --arch llama|qwen2 --layers 2 --dim 256
      --heads 4 --kv-heads 2 --ffn 512 --ctx 512 --type T [--output-type T|tied]
      [--rope-scaling llama3] --seed S --tokenizer VOCAB.gguf

Random weights: token_embd ~ N(0,1), matrices ~ N(0, 1/n_in), norms 1+0.1 N,
qwen2 q/k/v biases ~ N(0, 0.1).  K-quant types (which gguf-py cannot quantize)
use the simple quantizers below (checked: dequantized error vs the input).  Used to run tests/t_reference.sh
against llama.cpp (tests/ref/dev/generate_llamacpp.sh) to calibrate tolerances
before the real tools existed.
"""

import argparse
import math
import sys

import numpy as np

import gguf

T = gguf.GGMLQuantizationType


def _f16(x):
    return np.asarray(x, dtype=np.float16)


def quantize_q6_k(a):
    """Simple (not llama.cpp's optimized) Q6_K quantizer: per 16-group scale
    max|x|/32, scales to int8 with super-block d = max|scale|/127."""
    n_out, n_in = a.shape
    x = a.reshape(-1, 256).astype(np.float64)
    nb = x.shape[0]
    g = x.reshape(nb, 16, 16)
    amax = np.abs(g).max(axis=2)
    sc = amax / 31.5
    d = _f16(np.abs(sc).max(axis=1) / 127).astype(np.float64)
    dsafe = np.where(d > 0, d, 1)
    isc = np.clip(np.round(sc / dsafe[:, None]), -128, 127).astype(np.int8)
    eff = d[:, None] * isc.astype(np.float64)
    effsafe = np.where(eff > 0, eff, 1)
    q = np.clip(np.round(g / effsafe[:, :, None]), -32, 31).astype(np.int64) + 32  # 0..63
    q = q.reshape(nb, 2, 4, 32)  # half n, k (value group of 32 within the 128), l
    ql = np.zeros((nb, 2, 64), dtype=np.uint8)
    qh = np.zeros((nb, 2, 32), dtype=np.uint8)
    ql[:, :, 0:32] = (q[:, :, 0] & 15) | ((q[:, :, 2] & 15) << 4)
    ql[:, :, 32:64] = (q[:, :, 1] & 15) | ((q[:, :, 3] & 15) << 4)
    qh[:] = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    out = np.zeros((nb, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(nb, 128)
    out[:, 128:192] = qh.reshape(nb, 64)
    out[:, 192:208] = isc.view(np.uint8)
    out[:, 208:210] = _f16(d).view(np.uint8).reshape(nb, 2)
    return out.reshape(n_out, -1)


def quantize_q4_k(a):
    """Simple Q4_K quantizer: per 32 sub-block min/max, 6-bit scales and mins."""
    n_out, n_in = a.shape
    x = a.reshape(-1, 256).astype(np.float64)
    nb = x.shape[0]
    g = x.reshape(nb, 8, 32)
    mn = np.minimum(g.min(axis=2), 0)
    sc = (g.max(axis=2) - mn) / 15
    d = _f16(sc.max(axis=1) / 63).astype(np.float64)
    dmin = _f16((-mn).max(axis=1) / 63).astype(np.float64)
    isc = np.clip(np.round(sc / np.where(d > 0, d, 1)[:, None]), 0, 63).astype(np.int64)
    im = np.clip(np.round(-mn / np.where(dmin > 0, dmin, 1)[:, None]), 0, 63).astype(np.int64)
    eff = d[:, None] * isc
    effm = dmin[:, None] * im
    q = np.clip(np.round((g + effm[:, :, None]) / np.where(eff > 0, eff, 1)[:, :, None]), 0, 15).astype(np.uint8)
    scales = np.zeros((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = (isc[:, 0:4] | ((isc[:, 4:8] >> 4) << 6)).astype(np.uint8)
    scales[:, 4:8] = (im[:, 0:4] | ((im[:, 4:8] >> 4) << 6)).astype(np.uint8)
    scales[:, 8:12] = ((isc[:, 4:8] & 15) | ((im[:, 4:8] & 15) << 4)).astype(np.uint8)
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(nb, 128)
    out = np.zeros((nb, 144), dtype=np.uint8)
    out[:, 0:2] = _f16(d).view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = _f16(dmin).view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = scales
    out[:, 16:144] = qs
    return out.reshape(n_out, -1)


def add_weight(w, rng, name, shape, qtype, std):
    """shape = (n_out, n_in) numpy order."""
    a = (rng.standard_normal(shape) * std).astype(np.float32)
    if qtype in (T.Q4_K, T.Q6_K):
        q = quantize_q4_k(a) if qtype == T.Q4_K else quantize_q6_k(a)
        w.add_tensor(name, q, raw_dtype=qtype)
    elif qtype == T.F32:
        w.add_tensor(name, a)
    else:
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", required=True)
    ap.add_argument("--arch", default="llama")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--type", default="F32")
    ap.add_argument("--output-type", default="tied")
    ap.add_argument("--rope-scaling", default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokenizer", required=True)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    qt = T[a.type]
    kvh = a.kv_heads or a.heads
    hd = a.dim // a.heads
    tok = gguf.GGUFReader(a.tokenizer)
    n_vocab = len(tok.fields["tokenizer.ggml.tokens"].contents())

    w = gguf.GGUFWriter(a.o, a.arch)
    w.add_block_count(a.layers)
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.dim)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(kvh)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hd)
    for f in tok.fields.values():
        if f.name.startswith("tokenizer."):
            vt = f.types[0]
            w.add_key_value(f.name, f.contents(), vt, f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)

    add_weight(w, rng, "token_embd.weight", (n_vocab, a.dim), qt, 1.0)
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(a.dim)).astype(np.float32))
    if a.output_type != "tied":
        add_weight(w, rng, "output.weight", (n_vocab, a.dim), T[a.output_type], 1.0 / math.sqrt(a.dim))
    if a.rope_scaling == "llama3":
        freqs = 1.0 / (10000.0 ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
        ff = []
        for fr in freqs:  # factor 8, low 1, high 4, original context 64 (short, so it bites)
            wl = 2 * math.pi / fr
            old, lo, hi, fac = 64.0, 1.0, 4.0, 8.0
            if wl < old / hi:
                ff.append(1.0)
            elif wl > old / lo:
                ff.append(fac)
            else:
                s = (old / wl - lo) / (hi - lo)
                ff.append(1 / ((1 - s) / fac + s))
        w.add_tensor("rope_freqs.weight", np.array(ff, dtype=np.float32))
    for l in range(a.layers):
        p = "blk.%d." % l
        w.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(a.dim)).astype(np.float32))
        w.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(a.dim)).astype(np.float32))
        s = 1.0 / math.sqrt(a.dim)
        add_weight(w, rng, p + "attn_q.weight", (a.heads * hd, a.dim), qt, s)
        add_weight(w, rng, p + "attn_k.weight", (kvh * hd, a.dim), qt, s)
        add_weight(w, rng, p + "attn_v.weight", (kvh * hd, a.dim), qt, s)
        add_weight(w, rng, p + "attn_output.weight", (a.dim, a.heads * hd), qt, 1.0 / math.sqrt(a.heads * hd))
        add_weight(w, rng, p + "ffn_gate.weight", (a.ffn, a.dim), qt, s)
        add_weight(w, rng, p + "ffn_up.weight", (a.ffn, a.dim), qt, s)
        add_weight(w, rng, p + "ffn_down.weight", (a.dim, a.ffn), qt, 1.0 / math.sqrt(a.ffn))
        if a.arch == "qwen2":
            for n, rows in (("attn_q", a.heads * hd), ("attn_k", kvh * hd), ("attn_v", kvh * hd)):
                w.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(rows)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
