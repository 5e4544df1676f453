#!/usr/bin/python3
"""Independent numpy reference forward pass for Llama-family GGUF models
(general.architecture `llama` or `qwen2`), used to check Locus's C engine.

Written from the model definition as llama.cpp computes it (src/models/llama.cpp,
src/models/qwen2.cpp, llama-graph.cpp build_norm/build_ffn/build_attn, ggml rope),
never from Locus's code.  Debian's /usr/bin/python3 + numpy only.

Precision: weights are dequantized exactly (float32 values, see quants_ref.py)
and the whole forward pass runs in float64 with no KV-cache or activation
rounding, so the reference is the "ideal" result the C engine approximates.
Optional --emulate-* flags add the C engine's roundings for diagnosis.

Model (per token position p, x a row vector of n_embd):
  x = token_embd[token]
  per layer:  h = rmsnorm(x) * attn_norm         rmsnorm(x) = x / sqrt(mean(x^2) + eps)
              q,k,v = Wq h (+bq), Wk h (+bk), Wv h (+bv)    (or one fused attn_qkv)
              rope(q), rope(k) per head at position p
              attention per query head j over kv head j // (n_head/n_head_kv),
                causal, scale 1/sqrt(head_dim) (llama: {arch}.attention.scale if set)
              x += Wo concat(heads) (+bo)
              h = rmsnorm(x) * ffn_norm
              x += Wdown (silu(Wgate h (+b)) * (Wup h (+b))) (+b)
  logits = Wout (rmsnorm(x) * output_norm) (+ output.bias); Wout absent => token_embd
RoPE: theta_i = p * freq_scale * base^(-2i/n_rot) / ff_i for i < n_rot/2, where
  freq_scale = 1/{arch}.rope.scaling.factor for scaling type `linear` (1 for
  `none` or no factor) and ff_i = rope_freqs.weight[i] (Llama-3 scaling: the
  converter bakes the per-dimension frequency divisors into that tensor; llama
  arch only, qwen2 ignores it).  `llama` rotates adjacent pairs (x[2i], x[2i+1])
  (GGML "NORM"); `qwen2` rotates (x[i], x[i + n_rot/2]) (GGML "NEOX");
  (a, b) -> (a cos - b sin, a sin + b cos).

CLI:
  llama_ref.py --model M.gguf --tokens 1,2,3 --out logits.f32
      raw float32 (n_tokens, n_vocab) row-major, every position
  llama_ref.py --model M.gguf --tokens 1,2,3 --greedy 8
      print 8 greedily generated token ids (argmax, recomputed in full each step)
  llama_ref.py --model M.gguf --dump-tensor NAME --out t.f32
      dequantized tensor, raw float32 row-major (ne reversed: ne[0] innermost)
  llama_ref.py --model M.gguf --random-tokens N --seed S
      print N seeded random token ids in [1, n_vocab)
  --info prints a one-line model summary (hyperparameters, rope, tensor types)
"""

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gguf_ref import GGUFFile  # noqa: E402
from quants_ref import type_name  # noqa: E402

ROPE_NORM, ROPE_NEOX = "norm", "neox"
ARCH_ROPE = {"llama": ROPE_NORM, "qwen2": ROPE_NEOX}
F32_TYPES = {0, 1, 30}  # F32, F16, BF16: the C engine keeps f32 activations for these


def _kv(g, key, default=None, required=False):
    if key in g.metadata:
        return g.metadata[key]
    if required:
        raise SystemExit("missing metadata key %s" % key)
    return default


class Model:
    def __init__(self, path, emulate_f16_kv=False, emulate_q8_act=False):
        self.g = g = GGUFFile(path)
        self.arch = arch = _kv(g, "general.architecture", required=True)
        if arch not in ARCH_ROPE:
            raise SystemExit("unsupported architecture %r (llama, qwen2)" % arch)
        self.rope_layout = ARCH_ROPE[arch]
        self.n_layer = int(_kv(g, arch + ".block_count", required=True))
        self.n_embd = int(_kv(g, arch + ".embedding_length", required=True))
        self.n_ff = int(_kv(g, arch + ".feed_forward_length", required=True))
        self.n_head = int(_kv(g, arch + ".attention.head_count", required=True))
        self.n_head_kv = int(_kv(g, arch + ".attention.head_count_kv", self.n_head))
        self.eps = float(_kv(g, arch + ".attention.layer_norm_rms_epsilon", required=True))
        self.head_dim = int(_kv(g, arch + ".attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(_kv(g, arch + ".attention.value_length", self.n_embd // self.n_head))
        if self.head_dim != self.head_dim_v:
            raise SystemExit("key_length != value_length is not supported")
        self.n_rot = int(_kv(g, arch + ".rope.dimension_count", self.head_dim))
        if self.n_rot % 2 or self.n_rot > self.head_dim:
            raise SystemExit("bad rope.dimension_count %d" % self.n_rot)
        if self.n_head % self.n_head_kv:
            raise SystemExit("head_count %d not a multiple of head_count_kv %d" % (self.n_head, self.n_head_kv))
        self.freq_base = float(_kv(g, arch + ".rope.freq_base", 10000.0))
        scaling = _kv(g, arch + ".rope.scaling.type", "linear")
        factor = float(_kv(g, arch + ".rope.scaling.factor", _kv(g, arch + ".rope.scale_linear", 0.0)))
        if scaling == "none":
            self.freq_scale = 1.0
        elif scaling == "linear":
            self.freq_scale = 1.0 if factor == 0.0 else 1.0 / factor
        else:
            raise SystemExit("rope scaling type %r is not implemented in the reference" % scaling)
        self.freq_factors = None
        if arch == "llama" and "rope_freqs.weight" in g.tensors:
            ff = g.tensor("rope_freqs.weight").astype(np.float64).reshape(-1)
            if ff.size != self.n_rot // 2:
                raise SystemExit("rope_freqs.weight has %d elements, want %d" % (ff.size, self.n_rot // 2))
            self.freq_factors = ff
        self.kq_scale = 1.0 / math.sqrt(self.head_dim)
        if arch == "llama":
            s = float(_kv(g, arch + ".attention.scale", 0.0))
            if s != 0.0:
                self.kq_scale = s
        self.emulate_f16_kv = emulate_f16_kv
        self.emulate_q8_act = emulate_q8_act
        self._cache = {}
        tok = g.tensors.get("token_embd.weight")
        if tok is None:
            raise SystemExit("missing token_embd.weight")
        self.n_vocab = tok.ne[1]
        self.out_name = "output.weight" if "output.weight" in g.tensors else "token_embd.weight"

    # -- weights ---------------------------------------------------------
    def has(self, name):
        return name in self.g.tensors

    def w(self, name):
        """Dequantized float32 tensor (cached)."""
        a = self._cache.get(name)
        if a is None:
            a = self._cache[name] = self.g.tensor(name)
        return a

    def vec(self, name):
        return self.w(name).astype(np.float64).reshape(-1)

    def matmul(self, x, name):
        """x (T, n_in) float64 @ W^T for GGUF weight ne=[n_in, n_out] -> (T, n_out)."""
        t = self.g.tensors[name]
        if self.emulate_q8_act and t.ggml_type not in F32_TYPES:
            x = q8_roundtrip(x)
        return x @ self.w(name).T.astype(np.float64)

    def linear(self, x, prefix):
        y = self.matmul(x, prefix + ".weight")
        if self.has(prefix + ".bias"):
            y = y + self.vec(prefix + ".bias")
        return y

    # -- ops -------------------------------------------------------------
    def rmsnorm(self, x, weight_name):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.eps) * self.vec(weight_name)

    def rope(self, x, pos):
        """x (T, n_heads, head_dim); pos (T,) positions."""
        half = self.n_rot // 2
        inv = self.freq_base ** (-2.0 * np.arange(half, dtype=np.float64) / self.n_rot)
        if self.freq_factors is not None:
            inv = inv / self.freq_factors
        theta = pos.astype(np.float64)[:, None] * self.freq_scale * inv[None, :]  # (T, half)
        c = np.cos(theta)[:, None, :]
        s = np.sin(theta)[:, None, :]
        out = x.copy()
        if self.rope_layout == ROPE_NORM:
            a, b = x[:, :, 0:self.n_rot:2], x[:, :, 1:self.n_rot:2]
            out[:, :, 0:self.n_rot:2] = a * c - b * s
            out[:, :, 1:self.n_rot:2] = a * s + b * c
        else:
            a, b = x[:, :, 0:half], x[:, :, half:self.n_rot]
            out[:, :, 0:half] = a * c - b * s
            out[:, :, half:self.n_rot] = a * s + b * c
        return out

    def attention(self, l, h, pos):
        T = h.shape[0]
        p = "blk.%d." % l
        nq, nk, hd = self.n_head, self.n_head_kv, self.head_dim
        if self.has(p + "attn_qkv.weight"):
            qkv = self.linear(h, p + "attn_qkv")
            q, k, v = qkv[:, :nq * hd], qkv[:, nq * hd:(nq + nk) * hd], qkv[:, (nq + nk) * hd:]
            for name, part in (("attn_q", 0), ("attn_k", 1), ("attn_v", 2)):
                if self.has(p + name + ".bias") and not self.has(p + "attn_qkv.bias"):
                    b = self.vec(p + name + ".bias")
                    if part == 0:
                        q = q + b
                    elif part == 1:
                        k = k + b
                    else:
                        v = v + b
        else:
            q = self.linear(h, p + "attn_q")
            k = self.linear(h, p + "attn_k")
            v = self.linear(h, p + "attn_v")
        q = self.rope(q.reshape(T, nq, hd), pos)
        k = self.rope(k.reshape(T, nk, hd), pos)
        v = v.reshape(T, nk, hd)
        if self.emulate_f16_kv:
            k = k.astype(np.float16).astype(np.float64)
            v = v.astype(np.float16).astype(np.float64)
        group = nq // nk
        kk = np.repeat(k, group, axis=1)  # (T, nq, hd): query head j -> kv head j // group
        vv = np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, kk) * self.kq_scale  # (nq, T, T)
        mask = pos[None, :] > pos[:, None]  # key position s after query position t
        scores = np.where(mask[None, :, :], -np.inf, scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        e = np.exp(scores)
        prob = e / e.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", prob, vv).reshape(T, nq * hd)
        return self.linear(o, p + "attn_output")

    def ffn(self, l, h):
        p = "blk.%d." % l
        g = self.linear(h, p + "ffn_gate")
        u = self.linear(h, p + "ffn_up")
        return self.linear(silu(g) * u, p + "ffn_down")

    def forward(self, tokens, last_only=False):
        """tokens: list of ids at positions 0..T-1 -> logits (T or 1, n_vocab) float64."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise SystemExit("need at least one token")
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise SystemExit("token id out of range [0, %d)" % self.n_vocab)
        pos = np.arange(tokens.size)
        x = self.w("token_embd.weight")[tokens].astype(np.float64)
        for l in range(self.n_layer):
            p = "blk.%d." % l
            x = x + self.attention(l, self.rmsnorm(x, p + "attn_norm.weight"), pos)
            x = x + self.ffn(l, self.rmsnorm(x, p + "ffn_norm.weight"))
        if last_only:
            x = x[-1:]
        h = self.rmsnorm(x, "output_norm.weight")
        logits = self.matmul(h, self.out_name)
        if self.has("output.bias"):
            logits = logits + self.vec("output.bias")
        return logits

    def describe(self):
        types = {}
        for t in self.g.tensors.values():
            types[type_name(t.ggml_type)] = types.get(type_name(t.ggml_type), 0) + 1
        return ("arch=%s layers=%d embd=%d ff=%d heads=%d/%d head_dim=%d n_rot=%d rope=%s "
                "base=%g freq_scale=%g rope_freqs=%s eps=%g vocab=%d output=%s types=%s" % (
                    self.arch, self.n_layer, self.n_embd, self.n_ff, self.n_head, self.n_head_kv,
                    self.head_dim, self.n_rot, self.rope_layout, self.freq_base, self.freq_scale,
                    self.freq_factors is not None, self.eps, self.n_vocab, self.out_name, types))


def silu(x):
    return x / (1.0 + np.exp(-x))


def q8_roundtrip(x):
    """Emulate 8-bit activation quantization: per 32-element block of each row,
    d = max|x| / 127 (kept in f32), q = round-half-away(x / d), x' = q * d."""
    T, n = x.shape
    if n % 32:
        return x
    b = x.reshape(T, n // 32, 32).astype(np.float32)
    amax = np.abs(b).max(axis=-1, keepdims=True)
    d = amax / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), np.float32(0))
    v = b * inv
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return (q * d).reshape(T, n).astype(np.float64)


def parse_ids(s):
    try:
        return [int(t) for t in s.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise SystemExit("bad token list %r" % s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--out", help="output .f32 file")
    ap.add_argument("--greedy", type=int, default=0, help="generate N tokens greedily, print ids")
    ap.add_argument("--dump-tensor", metavar="NAME", help="dequantize one tensor to --out")
    ap.add_argument("--emulate-f16-kv", action="store_true", help="round K and V to f16 (as a f16 KV cache)")
    ap.add_argument("--emulate-q8-act", action="store_true",
                    help="round inputs of quantized-weight matmuls to 8 bits per 32-block")
    ap.add_argument("--info", action="store_true", help="print the model summary")
    ap.add_argument("--random-tokens", type=int, metavar="N",
                    help="print N seeded random token ids in [1, n_vocab) and exit")
    ap.add_argument("--seed", type=int, default=1, help="seed for --random-tokens")
    a = ap.parse_args(argv)

    t0 = time.time()
    m = Model(a.model, a.emulate_f16_kv, a.emulate_q8_act)
    if a.info:
        print(m.describe())
    if a.random_tokens:
        ids = np.random.default_rng(a.seed).integers(1, m.n_vocab, a.random_tokens)
        print(",".join(str(int(t)) for t in ids))
        return 0
    if a.dump_tensor:
        if not a.out:
            raise SystemExit("--dump-tensor needs --out")
        if a.dump_tensor not in m.g.tensors:
            raise SystemExit("no tensor %r" % a.dump_tensor)
        t = m.g.tensors[a.dump_tensor]
        m.w(a.dump_tensor).astype("<f4").tofile(a.out)
        print("%s: %s ne=%s -> %s (%d floats)" % (t.name, type_name(t.ggml_type), t.ne, a.out,
                                                 t.n_elements), file=sys.stderr)
        return 0
    if not a.tokens:
        if a.info:
            return 0
        raise SystemExit("--tokens is required")
    tokens = parse_ids(a.tokens)
    t1 = time.time()
    if a.out:
        logits = m.forward(tokens)
        logits.astype("<f4").tofile(a.out)
        print("llama_ref: %d tokens x %d vocab -> %s; load %.2fs, forward %.2fs" % (
            len(tokens), m.n_vocab, a.out, t1 - t0, time.time() - t1), file=sys.stderr)
    if a.greedy:
        seq = list(tokens)
        gen = []
        for _ in range(a.greedy):
            nxt = int(np.argmax(m.forward(seq, last_only=True)[0]))
            gen.append(nxt)
            seq.append(nxt)
        print(",".join(str(t) for t in gen))
        print("llama_ref: greedy %d tokens in %.2fs" % (a.greedy, time.time() - t1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
