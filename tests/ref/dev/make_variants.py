"""DEV-ONLY (needs the pip package `gguf`; not run by any test): build variants
of a real model to validate llama_ref.py against llama.cpp on paths a single
model does not exercise.

    python3 tests/ref/dev/make_variants.py SRC.gguf OUTDIR

Writes, from SRC (a llama-arch model, any supported types):
  f32.gguf          every tensor dequantized to F32 (llama.cpp then computes
                    matmuls in f32: only f16-KV / accumulation noise remains)
  f32-llama3.gguf   + rope_freqs.weight computed exactly as llama.cpp's
                    converter does for rope_type "llama3" (factor 8, low 1,
                    high 4, original context 8192)
  f32-qwen2.gguf    architecture renamed to qwen2 (NEOX rope) with random
                    q/k/v biases added
  f32-untied.gguf   output.weight = token_embd.weight + noise
  f32-linear.gguf   rope.scaling.type linear, factor 4
"""

import math
import os
import sys

import numpy as np

import gguf

SKIP = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}


def field_value(f):
    v = f.contents()
    return v


def write(path, src, arch, tensors, extra_kv=None):
    w = gguf.GGUFWriter(path, arch)
    old_arch = src.fields["general.architecture"].contents()
    for f in src.fields.values():
        if f.name in SKIP:
            continue
        name = f.name
        if name.startswith(old_arch + "."):
            name = arch + name[len(old_arch):]
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, field_value(f), vt, sub)
    for k, (v, vt) in (extra_kv or {}).items():
        w.add_key_value(k.replace("{arch}", arch), v, vt)
    for name, arr in tensors:
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", path)


def llama3_factors(base, dim, factor=8.0, low=1.0, high=4.0, old_ctx=8192):
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    lo_wl, hi_wl = old_ctx / low, old_ctx / high
    out = []
    for fr in freqs:
        wl = 2 * math.pi / fr
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            s = (old_ctx / wl - low) / (high - low)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def main(src_path, outdir):
    os.makedirs(outdir, exist_ok=True)
    src = gguf.GGUFReader(src_path)
    arch = src.fields["general.architecture"].contents()
    tensors = []
    for t in src.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        tensors.append((t.name, a.reshape([int(x) for x in reversed(t.shape)])))
    write(os.path.join(outdir, "f32.gguf"), src, arch, tensors)

    n_head = int(src.fields[arch + ".attention.head_count"].contents())
    n_embd = int(src.fields[arch + ".embedding_length"].contents())
    base = float(src.fields[arch + ".rope.freq_base"].contents()) if arch + ".rope.freq_base" in src.fields else 1e4
    ff = llama3_factors(base, n_embd // n_head)
    print("llama3 factors", ff)
    write(os.path.join(outdir, "f32-llama3.gguf"), src, arch, tensors + [("rope_freqs.weight", ff)])

    rng = np.random.default_rng(7)
    biased = []
    for name, a in tensors:
        biased.append((name, a))
        for p in ("attn_q", "attn_k", "attn_v"):
            if name.endswith(p + ".weight"):
                biased.append((name.replace(".weight", ".bias"),
                               (rng.standard_normal(a.shape[0]) * 0.5).astype(np.float32)))
    write(os.path.join(outdir, "f32-qwen2.gguf"), src, "qwen2", biased)

    emb = dict(tensors)["token_embd.weight"]
    untied = tensors + [("output.weight", emb + (rng.standard_normal(emb.shape) * 0.02).astype(np.float32))]
    write(os.path.join(outdir, "f32-untied.gguf"), src, arch, untied)

    write(os.path.join(outdir, "f32-linear.gguf"), src, arch, tensors, {
        "{arch}.rope.scaling.type": ("linear", gguf.GGUFValueType.STRING),
        "{arch}.rope.scaling.factor": (4.0, gguf.GGUFValueType.FLOAT32)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
