"""Vectorized numpy dequantization of GGML tensor types, for the reference.

Written from the GGML block layouts (ggml-common.h block_* structs and the
scalar dequantize_row_* loops in ggml-quants.c, read as the format
specification), independently of Locus's kernels.  All multi-byte fields are
little-endian; `half` is IEEE binary16.

Block layouts (elements per block / bytes per block):
  F32   1 / 4     BF16  1 / 2 (upper half of an f32)     F16  1 / 2
  Q8_0  32 / 34   { half d; int8 qs[32]; }                x = d*q
  Q4_0  32 / 18   { half d; u8 qs[16]; }                  x[j] = d*((qs[j]&15)-8),
                                                          x[j+16] = d*((qs[j]>>4)-8)
  Q4_1  32 / 20   { half d; half m; u8 qs[16]; }          x[j] = d*(qs[j]&15)+m, x[j+16] = d*(qs[j]>>4)+m
  Q4_K  256 / 144 { half d; half dmin; u8 scales[12]; u8 qs[128]; }
                  8 sub-blocks of 32 with 6-bit scale sc and min m packed in
                  scales[12]; sub-block s takes nibble (s&1 ? high : low) of
                  qs[32*(s/2) .. +32]; x = d*sc*q - dmin*m
  Q6_K  256 / 210 { u8 ql[128]; u8 qh[64]; int8 scales[16]; half d; }
                  each 128-half n: q(l+32k) = 4 bits of ql (k=0,1 low nibble of
                  ql[l], ql[l+32]; k=2,3 high nibbles) | 2 bits of qh[l] at
                  shift 2k, minus 32; x = d*scales[e/16]*q

Arithmetic follows the C loops' float32 operation order (e.g. (d*sc)*q - dmin*m),
so results are bit-identical to a faithful scalar C dequantizer.
"""

import numpy as np

# ggml_type id -> (name, elements per block, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    30: ("BF16", 1, 2),
}

TYPE_IDS = {v[0]: k for k, v in GGML_TYPES.items()}


def type_name(t):
    return GGML_TYPES[t][0] if t in GGML_TYPES else "type%d" % t


def type_nbytes(t, ne):
    """Bytes of a tensor of type t and shape ne (rows are ne[0] elements and
    must hold whole blocks)."""
    if t not in GGML_TYPES:
        raise ValueError("unknown ggml type %d" % t)
    _, bs, ts = GGML_TYPES[t]
    if not ne:
        return ts
    if ne[0] % bs:
        raise ValueError("row length %d is not a multiple of the %s block size %d"
                         % (ne[0], GGML_TYPES[t][0], bs))
    n = 1
    for d in ne:
        n *= d
    return n // bs * ts


def _blocks(raw, n_elements, bs, ts):
    raw = np.asarray(raw, dtype=np.uint8)
    nb = n_elements // bs
    if n_elements % bs or raw.size < nb * ts:
        raise ValueError("bad size: %d elements, %d bytes, block %d/%d" % (n_elements, raw.size, bs, ts))
    return raw[:nb * ts].reshape(nb, ts)


def _f16(blocks, off):
    """Column of halves at byte offset off of each block -> float32 (nb, 1)."""
    return np.ascontiguousarray(blocks[:, off:off + 2]).view("<f2").astype(np.float32)


def _deq_f32(raw, n):
    return np.ascontiguousarray(raw[:4 * n]).view("<f4").astype(np.float32)


def _deq_f16(raw, n):
    return np.ascontiguousarray(raw[:2 * n]).view("<f2").astype(np.float32)


def _deq_bf16(raw, n):
    u = np.ascontiguousarray(raw[:2 * n]).view("<u2").astype(np.uint32) << 16
    return u.view(np.float32)


def _deq_q8_0(raw, n):
    b = _blocks(raw, n, 32, 34)
    d = _f16(b, 0)
    q = b[:, 2:34].view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)


def _nibbles(qs):
    """(nb, 16) bytes -> (nb, 32) values: low nibbles then high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def _deq_q4_0(raw, n):
    b = _blocks(raw, n, 32, 18)
    d = _f16(b, 0)
    q = _nibbles(b[:, 2:18]) - np.float32(8)
    return (q * d).reshape(-1)


def _deq_q4_1(raw, n):
    b = _blocks(raw, n, 32, 20)
    d = _f16(b, 0)
    m = _f16(b, 2)
    q = _nibbles(b[:, 4:20])
    return (q * d + m).reshape(-1)


def _deq_q5_0(raw, n):
    # { half d; u8 qh[4]; u8 qs[16]; }: 5th bit of element j in bit j of qh (u32 LE)
    b = _blocks(raw, n, 32, 22)
    d = _f16(b, 0)
    qh = np.ascontiguousarray(b[:, 2:6]).view("<u4")  # (nb, 1)
    hbits = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.float32)
    q = _nibbles(b[:, 6:22]) + hbits * 16 - np.float32(16)
    return (q * d).reshape(-1)


def _deq_q5_1(raw, n):
    # { half d; half m; u8 qh[4]; u8 qs[16]; }
    b = _blocks(raw, n, 32, 24)
    d = _f16(b, 0)
    m = _f16(b, 2)
    qh = np.ascontiguousarray(b[:, 4:8]).view("<u4")
    hbits = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.float32)
    q = _nibbles(b[:, 8:24]) + hbits * 16
    return (q * d + m).reshape(-1)


def _k4_scales(sc):
    """Unpack Q4_K/Q5_K 12-byte scales (nb, 12) -> (sc, m) each (nb, 8) uint8.
    j < 4:  sc = q[j] & 63,  m = q[j+4] & 63
    j >= 4: sc = (q[j+4] & 15) | (q[j-4] >> 6) << 4,  m = (q[j+4] >> 4) | (q[j] >> 6) << 4"""
    s = np.empty((sc.shape[0], 8), dtype=np.uint8)
    m = np.empty((sc.shape[0], 8), dtype=np.uint8)
    s[:, 0:4] = sc[:, 0:4] & 63
    m[:, 0:4] = sc[:, 4:8] & 63
    s[:, 4:8] = (sc[:, 8:12] & 0x0F) | ((sc[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)
    return s, m


def _deq_q4_k(raw, n):
    b = _blocks(raw, n, 256, 144)
    nb = b.shape[0]
    d = _f16(b, 0)
    dmin = _f16(b, 2)
    s, m = _k4_scales(b[:, 4:16])
    d1 = d * s.astype(np.float32)        # (nb, 8), d*sc exact in f32
    m1 = dmin * m.astype(np.float32)
    qs = b[:, 16:144].reshape(nb, 4, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(nb, 8, 32).astype(np.float32)
    return (d1[:, :, None] * q - m1[:, :, None]).reshape(-1)


def _deq_q6_k(raw, n):
    b = _blocks(raw, n, 256, 210)
    nb = b.shape[0]
    ql = b[:, 0:128].reshape(nb, 2, 64)
    qh = b[:, 128:192].reshape(nb, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)  # (nb, 16)
    d = _f16(b, 208)
    lo_a, lo_b = ql[:, :, 0:32], ql[:, :, 32:64]
    q = np.stack([
        (lo_a & 0x0F) | (((qh >> 0) & 3) << 4),
        (lo_b & 0x0F) | (((qh >> 2) & 3) << 4),
        (lo_a >> 4) | (((qh >> 4) & 3) << 4),
        (lo_b >> 4) | (((qh >> 6) & 3) << 4),
    ], axis=2).reshape(nb, 16, 16).astype(np.float32) - np.float32(32)
    ds = d * sc  # (nb, 16): scale of each 16-element group
    return (ds[:, :, None] * q).reshape(-1)


_DEQUANT = {
    0: _deq_f32,
    1: _deq_f16,
    2: _deq_q4_0,
    3: _deq_q4_1,
    6: _deq_q5_0,
    7: _deq_q5_1,
    8: _deq_q8_0,
    12: _deq_q4_k,
    14: _deq_q6_k,
    30: _deq_bf16,
}


def dequantize(raw, ggml_type, n_elements):
    """Dequantize n_elements values of ggml_type from uint8 array raw -> flat float32."""
    fn = _DEQUANT.get(ggml_type)
    if fn is None:
        raise NotImplementedError("dequantization of %s is not implemented in the reference"
                                  % type_name(ggml_type))
    out = fn(np.asarray(raw, dtype=np.uint8), n_elements)
    assert out.dtype == np.float32 and out.size == n_elements, (out.dtype, out.size, n_elements)
    return out
