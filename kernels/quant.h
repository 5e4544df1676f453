/*
 * quant.h: block formats of the quantized types and the CPU dot-product
 * kernels (internal to kernels/, also used by tests and benchmarks).
 *
 * Formats (little endian, as in GGUF files; d, m, dmin are IEEE fp16):
 *   Q4_0  32 elems, 18 B: d, qs[16]; x = d * (q - 8); q = low nibbles of
 *         qs[0..15] for elems 0..15, high nibbles for elems 16..31.
 *   Q4_1  32 elems, 20 B: d, m, qs[16]; x = d * q + m (same nibble order).
 *   Q8_0  32 elems, 34 B: d, qs[32] int8; x = d * q.
 *   Q4_K 256 elems, 144 B: d, dmin, scales[12] (8 x 6-bit scale, 8 x 6-bit
 *         min), qs[128]; sub-block j (32 elems): x = d*sc_j*q - dmin*m_j.
 *   Q6_K 256 elems, 210 B: ql[128], qh[64], scales[16] int8, d;
 *         16 sub-blocks of 16: x = d * sc_j * (q - 32), q 6 bits.
 *   F16 / BF16 / F32: plain elements.
 *
 * Matrix products: weights W (rows x k, one of the types above) times
 * activations X (n_tok x k, f32) are computed as
 *     1. kern_act_quantize_row() on each activation row, into the activation
 *        format that pairs with W's type (8-bit blocks with scales for the
 *        quantized types, as the fastest CPU engines do; f32 for float types);
 *     2. kern_matmul() over a range of weight rows: y[t*ldy + r] for
 *        r in [r0, r1), t in [0, n_tok). Each weight block is loaded once per
 *        group of tokens, so a batch reads W once.
 * The caller splits rows across threads. k must be a multiple of the
 * type's block size (checked at model load).
 *
 * The *_ref functions are plain scalar code written straight from the
 * format description; tests compare the SIMD kernels against them.
 *
 * Activation rows (the `act` argument of kern_matmul; produced only by
 * kern_act_quantize_row with the same wtype, act_row_bytes apart):
 *   F32 / F16 / BF16 weights: k f32 values (a copy of the input row).
 *   Quantized weights: k/32 blocks of struct kern_act_q8 (48 B each, below),
 *   block i covering elements 32i..32i+31 of the row:
 *     qs[32]  int8, q = nearest-even(x * (1 / d)), |q| <= 127
 *     d       f32, d = max|x| / 127 (0 for an all-zero block; then q = 0)
 *     s       f32, d * sum(q): the activation sum the Q4_1 and Q4_K mins
 *             multiply (0 for the other types)
 *     off[2]  int32 offsets for weights fed to the integer dot products as
 *             unsigned bytes with a bias: Q4_0 off[0] = -8 * sum(q),
 *             Q8_0 off[0] = -128 * sum(q) (the VNNI kernel feeds w + 128;
 *             the AVX2 kernel ignores it), Q6_K off[0] = -32 * sum(q[0..15]),
 *             off[1] = -32 * sum(q[16..31]) (Q6_K scales change every 16
 *             elements); 0 when unused.
 *   The sums let the SIMD kernels start each block's integer accumulator at
 *   the offset instead of correcting every product. K-quant super-block j
 *   pairs with activation blocks 8j..8j+7.
 *
 * Kernel strategy (x86, details in quant_avx512.c): a strip of 16 weight
 * rows is put in "row lanes" (lane r of a 512-bit vector holds 4 consecutive
 * u8 weights of row r), so one vpdpbusd with a broadcast activation dword
 * does 64 multiply-adds and a block's sum lands in one lane, ready for the
 * per-row scale: no horizontal reductions in the loop. Decode (n_tok <= 8)
 * computes from registers; batches unpack each strip once per chunk of k
 * into a stack buffer shared by all groups of 8 tokens.
 * Callers splitting rows across threads should give each thread a multiple
 * of KERN_MATMUL_ROW_BLOCK rows (any split is correct; a partial strip takes
 * a slower gather path). kern_matmul neither allocates nor keeps state.
 *
 * Batch invariance: y[t*ldy + r] is bitwise the same whatever n_tok is, where
 * token t sits in the batch and how [r0, r1) is split, so a prompt's output
 * does not depend on the prefill chunk size nor a request's on what else is
 * in its batch. Every path computes each output as the same float
 * operations in the same order:
 *   - quantized types: one running f32 accumulator per (row, token) over the
 *     blocks 0..nb-1 in order, per block (I: the exact integer dot, summed
 *     in any order; s0, s1: the weight row's block scales, a: the activation
 *     block)  acc = fma(float(I), s0 * a.d, acc), then for Q4_1 / Q4_K
 *     acc = fma(s1, a.s, acc); Q6_K: v = float(I_lo) * s0,
 *     v = fma(float(I_hi), s1, v), acc = fma(v, a.d, acc). Paths that cut k
 *     into chunks carry the accumulator across them through y (never a
 *     partial sum added at the end);
 *   - float types: per (row, token) one vector of lane sums over k in order
 *     (16 lanes AVX-512, 8 AVX2), then a fixed horizontal sum.
 * The scalar reference (double sums) is invariant too, but does not match
 * the SIMD paths bitwise, and neither do the AVX-512 and AVX2 builds each
 * other for the float types. kern_act_quantize_row is a function of its row
 * alone. tests/test_quant.c checks all of this bit for bit.
 */
#ifndef LOCUS_KERNELS_QUANT_H
#define LOCUS_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

#define QK4_0 32
#define QK4_1 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

struct blk_q4_0 {
	uint16_t d;
	uint8_t qs[QK4_0 / 2];
};
struct blk_q4_1 {
	uint16_t d, m;
	uint8_t qs[QK4_1 / 2];
};
struct blk_q8_0 {
	uint16_t d;
	int8_t qs[QK8_0];
};
struct blk_q4_k {
	uint16_t d, dmin;
	uint8_t scales[K_SCALE_SIZE];
	uint8_t qs[QK_K / 2];
};
struct blk_q6_k {
	uint8_t ql[QK_K / 2];
	uint8_t qh[QK_K / 4];
	int8_t scales[QK_K / 16];
	uint16_t d;
};
_Static_assert(sizeof(struct blk_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(struct blk_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(struct blk_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(struct blk_q4_k) == 144, "q4_k layout");
_Static_assert(sizeof(struct blk_q6_k) == 210, "q6_k layout");

/* ---- scalar conversions ---- */

/* IEEE half <-> float in integer arithmetic, for compilers without
 * _Float16 on the target (clang 14 on x86 has it only with AVX512-FP16):
 * the same results as the hardware conversions (round to nearest even,
 * subnormals, infinities, NaNs quieted); test_quant checks them against
 * _Float16 where both exist. */
static inline float kern_f16_to_f32_soft(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
	if (e == 0x1f) {
		u = sign | 0x7f800000u | m << 13 | (m ? 0x400000u : 0); /* inf; NaN, quiet */
	} else if (e) {
		u = sign | (e + 112) << 23 | m << 13;
	} else if (m) { /* subnormal: m 2^-24, normalized */
		int s = 0;
		while (!(m & 0x400u)) {
			m <<= 1;
			s++;
		}
		u = sign | (uint32_t)(113 - s) << 23 | (m & 0x3ffu) << 13;
	} else {
		u = sign;
	}
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline uint16_t kern_f32_to_f16_soft(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
	if (a > 0x7f800000u) /* NaN: quiet, the top of the payload kept */
		return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
	if (a >= 0x477ff000u) /* 65520 and up (and inf) round to inf */
		return (uint16_t)(sign | 0x7c00u);
	if (a >= 0x38800000u) { /* normal half: rebias, round 23 -> 10 bits to nearest even */
		uint32_t r = a - 0x38000000u;
		r += 0x0fffu + ((r >> 13) & 1u);
		return (uint16_t)(sign | r >> 13);
	}
	/* below 2^-14: a subnormal half, units of 2^-24, to nearest even */
	const uint32_t e = a >> 23;
	if (e < 102) /* below 2^-25: rounds to zero (2^-25 itself is a tie to even 0) */
		return (uint16_t)sign;
	const uint32_t m = (a & 0x7fffffu) | 0x800000u, sh = 126 - e; /* value = m 2^-sh units, sh 14..24 */
	uint32_t q = m >> sh;
	const uint32_t rem = m & ((1u << sh) - 1), half = 1u << (sh - 1);
	if (rem > half || (rem == half && (q & 1u)))
		q++;
	return (uint16_t)(sign | q);
}

#ifdef __FLT16_MAX__
static inline float kern_f16_to_f32(uint16_t h)
{
	_Float16 f;
	memcpy(&f, &h, 2);
	return (float)f;
}
static inline uint16_t kern_f32_to_f16(float x)
{
	_Float16 f = (_Float16)x; /* round to nearest even */
	uint16_t h;
	memcpy(&h, &f, 2);
	return h;
}
#else
static inline float kern_f16_to_f32(uint16_t h)
{
	return kern_f16_to_f32_soft(h);
}
static inline uint16_t kern_f32_to_f16(float x)
{
	return kern_f32_to_f16_soft(x);
}
#endif
static inline float kern_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}
static inline uint16_t kern_f32_to_bf16(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet NaN */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
	return (uint16_t)(u >> 16);
}

/* Q4_K: unpack 6-bit scale and min of sub-block j (0..7). */
static inline void kern_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		*m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
	}
}

/* ---- activation rows ---- */
#define KERN_MATMUL_ROW_BLOCK 16

struct kern_act_q8 {
	int8_t qs[32];
	float d;
	float s;
	int32_t off[2];
};
_Static_assert(sizeof(struct kern_act_q8) == 48, "act block layout");

/* Bytes of one activation row of k elements paired with weights of wtype. */
size_t kern_act_row_bytes(uint32_t wtype, int64_t k);
void kern_act_quantize_row(uint32_t wtype, const float *x, void *dst, int64_t k);
/* Same result, plain scalar code (the SIMD version must match it exactly). */
void kern_act_quantize_row_ref(uint32_t wtype, const float *x, void *dst, int64_t k);

/* ---- matrix products ---- */
void kern_matmul(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		 size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1);
/* Same contract, plain scalar code. */
void kern_matmul_ref(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		     size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1);

/* Scalar reference conversions (kern_dequantize_row may be vectorized). */
void kern_dequantize_row_ref(uint32_t type, const void *src, float *dst, int64_t n);

/* Name of the SIMD path compiled in ("avx512vnni", "avx2", "scalar"). */
const char *kern_simd_name(void);

/* ISA back ends of kern_matmul (quant_avx512.c, quant_avx2.c), compiled in
 * only when the target has the instructions: return 0 when they computed the
 * product, -ENOTSUP for a type they do not handle. */
int kern_matmul_avx512(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		       size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1);
int kern_matmul_avx2(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		     size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1);

#endif
