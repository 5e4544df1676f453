/*
 * quant_avx512.c: kern_matmul for CPUs with AVX-512 F/BW/VL and VNNI.
 *
 * Quantized weights are computed 16 rows (a strip) at a time in "row lanes":
 * for each 32-element block, W[q] (q = 0..7) is a 512-bit vector whose lane r
 * holds elements 4q..4q+3 of row r as unsigned bytes, and two vectors hold
 * the per-row f32 scales. One vpdpbusd multiplies W[q] by an activation
 * dword broadcast to all lanes (64 multiply-adds) and a block's integer dot
 * product ends in lane r, where the per-row, per-block scale applies as a
 * plain vector multiply: no horizontal sums anywhere.
 *
 * Getting a strip into row lanes (a transpose) is the price. Two ways:
 *   - full strips of Q4_0 / Q4_1 / Q8_0: 16 row loads and in-register 4x4 or
 *     8x8 dword transposes; the scales come with one 16-lane gather;
 *   - anything else (partial strips, Q4_K, Q6_K): 16-lane gathers of dwords
 *     under a lane mask, which read exactly the block's bytes of the rows
 *     present and nothing past them.
 * Decode (n_tok <= 8, full strips of the simple types) computes straight from
 * the transposed registers ("fused") and prefetches the next strip. Larger
 * batches unpack a chunk of k for a strip into a stack buffer once and run
 * it against every group of 8 tokens (register tile 16 rows x 8 tokens),
 * with the tokens blocked so their activations stay in L2 and the running
 * sums of a strip in L1.
 *
 * Batch invariance (quant.h): fused and buffer paths run the same blk_dot,
 * and the buffer path resumes each output's running sum from y at every
 * chunk after the first, so y does not depend on n_tok or the row split.
 * blk_dot's `split` only reorders the exact integer sums.
 *
 * Float weights (F32/F16/BF16) use f32 FMA on 4 rows x 4 tokens, converting
 * the weights on the fly.
 *
 * Invariants: k is a multiple of the type's block; row stride below
 * MAX_ROW_BYTES (32-bit gather offsets), else -ENOTSUP (caller falls back).
 * Threading: pure functions of their arguments; the buffer is on the stack.
 */
#include <errno.h>

#include "kernels/quant.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#include <immintrin.h>

#define STRIP_ROWS 16
#define TILE_TOK 8			/* tokens per register tile */
#define TOK_BLOCK 128			/* most tokens per pass over W */
#define ACT_L2_BYTES ((size_t)1 << 20)	/* activations of a pass, at most */
#define CHUNK_BLOCKS 32			/* 32-element blocks per strip buffer fill */
#define BLK_VECS 10			/* W[0..7], scale vector 0, scale vector 1 */
#define BLK_BYTES (BLK_VECS * 64)	/* 640 B per unpacked block */
#define MAX_ROW_BYTES ((size_t)1 << 27) /* 15 * row bytes must fit an int32 */

/* I += u8 lanes of w times the s8 dword at p, broadcast. GCC 12 does not fold
 * the broadcast into the instruction (it emits a separate vpbroadcastd, one
 * more shuffle-port uop per 64 MACs), so spell it out. */
static inline __m512i dp_bcast(__m512i acc, __m512i w, const void *p)
{
#if defined(__clang__)
	int32_t v;
	memcpy(&v, p, 4);
	return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(v));
#else
	__asm__("vpdpbusd %[m]%{1to16%}, %[w], %[acc]" : [acc] "+v"(acc) : [w] "v"(w), [m] "m"(*(const int32_t *)p));
	return acc;
#endif
}

static inline __m512i bcast32(const void *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm512_set1_epi32(v);
}

/* f32 of the fp16 in the low (hi = 0) or high (hi = 1) half of each lane */
static inline __m512 half_to_f32(__m512i v, int hi)
{
	if (hi)
		v = _mm512_srli_epi32(v, 16);
	return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
}

static inline __m512i nib_lo(__m512i v)
{
	return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

static inline __m512i nib_hi(__m512i v)
{
	return _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F));
}

/* One block of a strip in row lanes. */
struct wblk {
	__m512i w[8];
	__m512 s0, s1;
};

/* Rows [r, r + 16) of the weight matrix, clipped to r1 by the lane mask. */
struct strip {
	const uint8_t *w; /* row r */
	size_t rs;	  /* row stride, bytes */
	__m512i idx;	  /* lane i: i * rs */
	__mmask16 m;	  /* rows present */
};

static inline __m512i gat(const struct strip *s, size_t off)
{
	return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), s->m, s->idx, s->w + off, 1);
}

/* ---- full strips by loads and transposes ---- */

/* 128-bit loads of rows 0, 4, 8, 12 (from p) into the four lanes */
static inline __m512i load_x4(const uint8_t *p, size_t rs)
{
	__m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
	z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 4 * rs)), 1);
	z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 8 * rs)), 2);
	return _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 12 * rs)), 3);
}

/* T[j] lane i = dword j of the 16 bytes at p + i * rs (i = 0..15). */
static inline void transpose_16x4(const uint8_t *p, size_t rs, __m512i T[4])
{
	__m512i z0 = load_x4(p, rs), z1 = load_x4(p + rs, rs);
	__m512i z2 = load_x4(p + 2 * rs, rs), z3 = load_x4(p + 3 * rs, rs);
	__m512i t0 = _mm512_unpacklo_epi32(z0, z1), t1 = _mm512_unpackhi_epi32(z0, z1);
	__m512i t2 = _mm512_unpacklo_epi32(z2, z3), t3 = _mm512_unpackhi_epi32(z2, z3);
	T[0] = _mm512_unpacklo_epi64(t0, t2);
	T[1] = _mm512_unpackhi_epi64(t0, t2);
	T[2] = _mm512_unpacklo_epi64(t1, t3);
	T[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* T[j] lane i = dword j of the 32 bytes at p + i * rs (i = 0..15). */
static inline void transpose_16x8(const uint8_t *p, size_t rs, __m512i T[8])
{
	__m512i y[8], a[8], b[8];
	for (int i = 0; i < 8; i++) /* lane halves: row i, row i + 8 */
		y[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + i * rs))),
					  _mm256_loadu_si256((const __m256i *)(p + (i + 8) * rs)), 1);
	for (int i = 0; i < 8; i += 2) {
		a[i] = _mm512_unpacklo_epi32(y[i], y[i + 1]);
		a[i + 1] = _mm512_unpackhi_epi32(y[i], y[i + 1]);
	}
	for (int i = 0; i < 8; i += 4) {
		b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
		b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
		b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
		b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
	}
	/* b[j] (j < 4) 128-bit lanes: rows 0-3 dword j, rows 0-3 dword 4+j,
	 * rows 8-11 dword j, rows 8-11 dword 4+j; b[4+j] the same for rows 4-7,
	 * 12-15. Interleave the lanes of b[j] and b[4+j]. */
	const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
	const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
	for (int j = 0; j < 4; j++) {
		T[j] = _mm512_permutex2var_epi64(b[j], lo, b[4 + j]);
		T[4 + j] = _mm512_permutex2var_epi64(b[j], hi, b[4 + j]);
	}
}

/* Block b of a full strip starting at p. dm: gather offsets of the rows. */
static inline void full_q8_0(const uint8_t *p, size_t rs, __m512i idx, int64_t b, struct wblk *o)
{
	const uint8_t *blk = p + (size_t)b * sizeof(struct blk_q8_0);
	__m512i T[8];
	transpose_16x8(blk + 2, rs, T);
	/* w + 128 as u8; the activation offset -128 * sum(q) undoes it */
	for (int q = 0; q < 8; q++)
		o->w[q] = _mm512_xor_si512(T[q], _mm512_set1_epi8((char)0x80));
	o->s0 = half_to_f32(_mm512_i32gather_epi32(idx, blk, 1), 0);
	o->s1 = _mm512_setzero_ps();
}

static inline void full_q4_0(const uint8_t *p, size_t rs, __m512i idx, int64_t b, struct wblk *o)
{
	const uint8_t *blk = p + (size_t)b * sizeof(struct blk_q4_0);
	__m512i T[4];
	transpose_16x4(blk + 2, rs, T);
	for (int j = 0; j < 4; j++) {
		o->w[j] = nib_lo(T[j]);
		o->w[j + 4] = nib_hi(T[j]);
	}
	o->s0 = half_to_f32(_mm512_i32gather_epi32(idx, blk, 1), 0);
	o->s1 = _mm512_setzero_ps();
}

static inline void full_q4_1(const uint8_t *p, size_t rs, __m512i idx, int64_t b, struct wblk *o)
{
	const uint8_t *blk = p + (size_t)b * sizeof(struct blk_q4_1);
	__m512i T[4];
	transpose_16x4(blk + 4, rs, T);
	for (int j = 0; j < 4; j++) {
		o->w[j] = nib_lo(T[j]);
		o->w[j + 4] = nib_hi(T[j]);
	}
	__m512i dm = _mm512_i32gather_epi32(idx, blk, 1);
	o->s0 = half_to_f32(dm, 0);
	o->s1 = half_to_f32(dm, 1);
}

/* ---- any strip by masked gathers, into the buffer ---- */

static inline void put_blk(uint8_t *buf, const struct wblk *o)
{
	__m512i *W = (__m512i *)buf;
	for (int q = 0; q < 8; q++)
		_mm512_store_si512(&W[q], o->w[q]);
	_mm512_store_ps(&W[8], o->s0);
	_mm512_store_ps(&W[9], o->s1);
}

static void gather_q8_0(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int i = 0; i < n; i++, buf += BLK_BYTES) {
		size_t off = (size_t)(b0 + i) * sizeof(struct blk_q8_0);
		struct wblk o;
		for (int q = 0; q < 8; q++)
			o.w[q] = _mm512_xor_si512(gat(s, off + 2 + 4 * q), _mm512_set1_epi8((char)0x80));
		o.s0 = half_to_f32(gat(s, off), 0);
		o.s1 = _mm512_setzero_ps();
		put_blk(buf, &o);
	}
}

static void gather_q4_0(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int i = 0; i < n; i++, buf += BLK_BYTES) {
		size_t off = (size_t)(b0 + i) * sizeof(struct blk_q4_0);
		struct wblk o;
		for (int j = 0; j < 4; j++) {
			__m512i v = gat(s, off + 2 + 4 * j);
			o.w[j] = nib_lo(v);
			o.w[j + 4] = nib_hi(v);
		}
		o.s0 = half_to_f32(gat(s, off), 0);
		o.s1 = _mm512_setzero_ps();
		put_blk(buf, &o);
	}
}

static void gather_q4_1(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int i = 0; i < n; i++, buf += BLK_BYTES) {
		size_t off = (size_t)(b0 + i) * sizeof(struct blk_q4_1);
		struct wblk o;
		for (int j = 0; j < 4; j++) {
			__m512i v = gat(s, off + 4 + 4 * j);
			o.w[j] = nib_lo(v);
			o.w[j + 4] = nib_hi(v);
		}
		__m512i dm = gat(s, off);
		o.s0 = half_to_f32(dm, 0);
		o.s1 = half_to_f32(dm, 1);
		put_blk(buf, &o);
	}
}

/* ---- K-quants: super-blocks (8 blocks of 32) into the buffer ---- */

/* Q4_K header: d, dmin in dd; the 12 scale bytes in s0..s2. Scale vector 0
 * of block j is d*sc_j, vector 1 is -dmin*m_j. */
static inline void q4k_hdr(uint8_t *out, __m512i dd, __m512i s0, __m512i s1, __m512i s2)
{
	const __m512i m6 = _mm512_set1_epi32(63), m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3);
	__m512 d = half_to_f32(dd, 0), dmin = _mm512_sub_ps(_mm512_setzero_ps(), half_to_f32(dd, 1));
	for (int j = 0; j < 8; j++) {
		__m512i sc, mn;
		if (j < 4) {
			sc = _mm512_and_si512(_mm512_srli_epi32(s0, 8 * j), m6);
			mn = _mm512_and_si512(_mm512_srli_epi32(s1, 8 * j), m6);
		} else {
			int jj = j - 4;
			__m512i h0 = _mm512_and_si512(_mm512_srli_epi32(s0, 8 * jj + 6), m2);
			__m512i h1 = _mm512_and_si512(_mm512_srli_epi32(s1, 8 * jj + 6), m2);
			sc = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 8 * jj), m4), _mm512_slli_epi32(h0, 4));
			mn = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(s2, 8 * jj + 4), m4),
					     _mm512_slli_epi32(h1, 4));
		}
		uint8_t *ob = out + (size_t)j * BLK_BYTES;
		_mm512_store_ps(ob + 8 * 64, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
		_mm512_store_ps(ob + 9 * 64, _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mn)));
	}
}

/* Q4_K chunk c (qs[32c..32c+31], dword q in v[q]): low nibbles are block
 * 2c, high nibbles block 2c+1. */
static inline void q4k_chunk(uint8_t *out, int c, const __m512i v[8])
{
	__m512i *Wl = (__m512i *)(out + (size_t)(2 * c) * BLK_BYTES);
	__m512i *Wh = (__m512i *)(out + (size_t)(2 * c + 1) * BLK_BYTES);
	for (int q = 0; q < 8; q++) {
		_mm512_store_si512(&Wl[q], nib_lo(v[q]));
		_mm512_store_si512(&Wh[q], nib_hi(v[q]));
	}
}

static void gather_q4_k(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int sb = 0; sb < n / 8; sb++) {
		size_t off = (size_t)(b0 / 8 + sb) * sizeof(struct blk_q4_k);
		uint8_t *out = buf + (size_t)sb * 8 * BLK_BYTES;
		q4k_hdr(out, gat(s, off), gat(s, off + 4), gat(s, off + 8), gat(s, off + 12));
		for (int c = 0; c < 4; c++) {
			__m512i v[8];
			for (int q = 0; q < 8; q++)
				v[q] = gat(s, off + 16 + 32 * c + 4 * q);
			q4k_chunk(out, c, v);
		}
	}
}

static void full_q4_k(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int sb = 0; sb < n / 8; sb++) {
		const uint8_t *blk = s->w + (size_t)(b0 / 8 + sb) * sizeof(struct blk_q4_k);
		uint8_t *out = buf + (size_t)sb * 8 * BLK_BYTES;
		__m512i h[4], v[8];
		transpose_16x4(blk, s->rs, h); /* d|dmin, scale bytes 0-3, 4-7, 8-11 */
		q4k_hdr(out, h[0], h[1], h[2], h[3]);
		for (int c = 0; c < 4; c++) {
			transpose_16x8(blk + 16 + 32 * c, s->rs, v);
			q4k_chunk(out, c, v);
		}
	}
}

/* Q6_K header: d and the 16 int8 scales (dwords sv[0..3]); block j/2 gets
 * d*sc_j in scale vector j%2. */
static inline void q6k_hdr(uint8_t *out, __m512 d, const __m512i sv[4])
{
	for (int j = 0; j < 16; j++) {
		__m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(sv[j / 4], 24 - 8 * (j % 4)), 24);
		uint8_t *ob = out + (size_t)(j / 2) * BLK_BYTES + (size_t)(8 + j % 2) * 64;
		_mm512_store_ps(ob, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sc)));
	}
}

/* Q6_K quad q of blocks 4h+g1 and 4h+g1+2: block 4h+g (half h, quarter g)
 * takes its low 4 bits from ql[64h + 32(g&1) + l] (nibble g>>1: vl) and
 * bits 4..5 from qh[32h + l] >> 2g (vh). */
static inline void q6k_quad(uint8_t *out, int h, int g1, int q, __m512i vl, __m512i vh)
{
	const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
	for (int g2 = 0; g2 < 2; g2++) {
		int g = g1 + 2 * g2;
		__m512i lo = _mm512_and_si512(g2 ? _mm512_srli_epi32(vl, 4) : vl, m4);
		__m512i hi = 4 - 2 * g >= 0 ? _mm512_slli_epi32(vh, 4 - 2 * g) : _mm512_srli_epi32(vh, 2 * g - 4);
		__m512i *W = (__m512i *)(out + (size_t)(4 * h + g) * BLK_BYTES);
		_mm512_store_si512(&W[q], _mm512_or_si512(lo, _mm512_and_si512(hi, m30)));
	}
}

static void gather_q6_k(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int sb = 0; sb < n / 8; sb++) {
		size_t off = (size_t)(b0 / 8 + sb) * sizeof(struct blk_q6_k);
		uint8_t *out = buf + (size_t)sb * 8 * BLK_BYTES;
		/* d is at bytes 208..209: the dword at 206 ends exactly there */
		__m512i sv[4];
		for (int i = 0; i < 4; i++)
			sv[i] = gat(s, off + 192 + 4 * i);
		q6k_hdr(out, half_to_f32(gat(s, off + 206), 1), sv);
		for (int h = 0; h < 2; h++)
			for (int q = 0; q < 8; q++) {
				__m512i vh = gat(s, off + 128 + 32 * h + 4 * q);
				for (int g1 = 0; g1 < 2; g1++)
					q6k_quad(out, h, g1, q, gat(s, off + 64 * h + 32 * g1 + 4 * q), vh);
			}
	}
}

static void full_q6_k(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int sb = 0; sb < n / 8; sb++) {
		size_t off = (size_t)(b0 / 8 + sb) * sizeof(struct blk_q6_k);
		const uint8_t *blk = s->w + off;
		uint8_t *out = buf + (size_t)sb * 8 * BLK_BYTES;
		__m512i sv[4], vh[8], vl[8];
		transpose_16x4(blk + 192, s->rs, sv);
		q6k_hdr(out, half_to_f32(gat(s, off + 206), 1), sv);
		for (int h = 0; h < 2; h++) {
			transpose_16x8(blk + 128 + 32 * h, s->rs, vh);
			for (int g1 = 0; g1 < 2; g1++) {
				transpose_16x8(blk + 64 * h + 32 * g1, s->rs, vl);
				for (int q = 0; q < 8; q++)
					q6k_quad(out, h, g1, q, vl[q], vh[q]);
			}
		}
	}
}

/* ---- the dot products of one block and one token ---- */

enum tile_kind {
	TILE_OFF, /* Q8_0, Q4_0: integer offset from the activation, one scale */
	TILE_MIN, /* Q4_1, Q4_K: scale and min */
	TILE_Q6,  /* Q6_K: offsets and scales per 16 elements */
};

/* acc += block x token. split: two integer accumulation chains (shorter
 * latency when few tokens run side by side; integer sums are exact, so the
 * result is the same bit for bit). Every path must use this one formula. */
static inline __attribute__((always_inline)) __m512 blk_dot(enum tile_kind kind, int split, const __m512i *w,
							     __m512 s0, __m512 s1, const struct kern_act_q8 *a,
							     __m512 acc)
{
	const int8_t *q = a->qs;
	if (kind == TILE_Q6) {
		__m512i lo = bcast32(&a->off[0]), hi = bcast32(&a->off[1]);
		for (int j = 0; j < 4; j++) {
			lo = dp_bcast(lo, w[j], q + 4 * j);
			hi = dp_bcast(hi, w[4 + j], q + 16 + 4 * j);
		}
		__m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), s0);
		v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), s1, v);
		return _mm512_fmadd_ps(v, _mm512_set1_ps(a->d), acc);
	}
	__m512i I = kind == TILE_OFF ? bcast32(&a->off[0]) : _mm512_setzero_si512();
	if (split) {
		__m512i J = _mm512_setzero_si512();
		for (int j = 0; j < 4; j++) {
			I = dp_bcast(I, w[j], q + 4 * j);
			J = dp_bcast(J, w[4 + j], q + 16 + 4 * j);
		}
		I = _mm512_add_epi32(I, J);
	} else {
		for (int j = 0; j < 8; j++)
			I = dp_bcast(I, w[j], q + 4 * j);
	}
	acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I), _mm512_mul_ps(s0, _mm512_set1_ps(a->d)), acc);
	if (kind == TILE_MIN)
		acc = _mm512_fmadd_ps(s1, _mm512_set1_ps(a->s), acc);
	return acc;
}

/* ---- buffer path: unpacked chunk x up to 8 tokens ---- */

/* y (16 rows in m, nt tokens) += chunk x tokens. `resume`: y holds the
 * running sums of the earlier chunks, which continue from there (not a
 * partial sum added at the end: see "Batch invariance" above), and the
 * store leaves the running sums there for the next chunk. */
static inline __attribute__((always_inline)) void tile(enum tile_kind kind, int nt, const uint8_t *buf, int nblk,
							const uint8_t *act, size_t ars, float *y, int64_t ldy,
							__mmask16 m, int resume)
{
	__m512 acc[TILE_TOK];
#pragma GCC unroll 8
	for (int t = 0; t < nt; t++)
		acc[t] = resume ? _mm512_maskz_loadu_ps(m, y + (int64_t)t * ldy) : _mm512_setzero_ps();
	for (int b = 0; b < nblk; b++) {
		const __m512i *W = (const __m512i *)(buf + (size_t)b * BLK_BYTES);
		__m512i w[8];
		for (int j = 0; j < 8; j++)
			w[j] = _mm512_load_si512(&W[j]);
		__m512 s0 = _mm512_load_ps(&W[8]), s1 = _mm512_load_ps(&W[9]);
#pragma GCC unroll 8
		for (int t = 0; t < nt; t++)
			acc[t] = blk_dot(kind, nt <= 2, w, s0, s1,
					 (const struct kern_act_q8 *)(act + (size_t)t * ars) + b, acc[t]);
	}
#pragma GCC unroll 8
	for (int t = 0; t < nt; t++)
		_mm512_mask_storeu_ps(y + (int64_t)t * ldy, m, acc[t]);
}

/* [kind][resume][nt]: resume is a compile-time constant in each (a runtime
 * select measured 3-5% slower on 49152 x 576, n_tok 512) */
typedef void (*tile_fn)(const uint8_t *, int, const uint8_t *, size_t, float *, int64_t, __mmask16);

#define TILE_FN(kind, res, nt)                                                                         \
	static void tile_##kind##_##res##_##nt(const uint8_t *buf, int nblk, const uint8_t *act,       \
					       size_t ars, float *y, int64_t ldy, __mmask16 m)         \
	{                                                                                              \
		tile(kind, nt, buf, nblk, act, ars, y, ldy, m, res);                                   \
	}
#define TILE_FNS(kind, res)                                                                            \
	TILE_FN(kind, res, 1)                                                                          \
	TILE_FN(kind, res, 2)                                                                          \
	TILE_FN(kind, res, 3)                                                                          \
	TILE_FN(kind, res, 4)                                                                          \
	TILE_FN(kind, res, 5)                                                                          \
	TILE_FN(kind, res, 6)                                                                          \
	TILE_FN(kind, res, 7)                                                                          \
	TILE_FN(kind, res, 8)
TILE_FNS(TILE_OFF, 0)
TILE_FNS(TILE_OFF, 1)
TILE_FNS(TILE_MIN, 0)
TILE_FNS(TILE_MIN, 1)
TILE_FNS(TILE_Q6, 0)
TILE_FNS(TILE_Q6, 1)

#define TILE_ROW(kind, res)                                                                            \
	{                                                                                              \
		NULL, tile_##kind##_##res##_1, tile_##kind##_##res##_2, tile_##kind##_##res##_3,       \
			tile_##kind##_##res##_4, tile_##kind##_##res##_5, tile_##kind##_##res##_6,     \
			tile_##kind##_##res##_7, tile_##kind##_##res##_8                               \
	}
#define TILE_TABLE(kind) {TILE_ROW(kind, 0), TILE_ROW(kind, 1)}
static const tile_fn g_tiles[3][2][TILE_TOK + 1] = {
	[TILE_OFF] = TILE_TABLE(TILE_OFF),
	[TILE_MIN] = TILE_TABLE(TILE_MIN),
	[TILE_Q6] = TILE_TABLE(TILE_Q6),
};

/* ---- fused path: full strips of Q8_0 / Q4_0 / Q4_1, up to 8 tokens ---- */

/* y rows [0, 16) of nt tokens = strip at p times the activations. A later
 * strip (pf, NULL if none) is prefetched into L2 along the way: its rows are
 * contiguous, so a linear walk of 16 * rs bytes spread over the nb blocks
 * (measured: ~30% more bandwidth from DRAM than the hardware prefetchers
 * alone, which do not follow the 16-row column walk). */
static inline __attribute__((always_inline)) void fused(uint32_t wtype, int nt, const uint8_t *p, size_t rs,
							 __m512i idx, int64_t nb, const uint8_t *act, size_t ars,
							 float *y, int64_t ldy, const uint8_t *pf)
{
	const enum tile_kind kind = wtype == KERN_TYPE_Q4_1 ? TILE_MIN : TILE_OFF;
	const size_t pf_step = 16 * rs / (size_t)nb;
	__m512 acc[TILE_TOK];
#pragma GCC unroll 8
	for (int t = 0; t < nt; t++)
		acc[t] = _mm512_setzero_ps();
	for (int64_t b = 0; b < nb; b++) {
		if (pf) {
			const uint8_t *q = pf + (size_t)b * pf_step;
			for (size_t o = 0; o < pf_step; o += 64)
				_mm_prefetch((const char *)(q + o), _MM_HINT_T1);
		}
		struct wblk o;
		if (wtype == KERN_TYPE_Q8_0)
			full_q8_0(p, rs, idx, b, &o);
		else if (wtype == KERN_TYPE_Q4_0)
			full_q4_0(p, rs, idx, b, &o);
		else
			full_q4_1(p, rs, idx, b, &o);
#pragma GCC unroll 8
		for (int t = 0; t < nt; t++)
			acc[t] = blk_dot(kind, nt <= 2, o.w, o.s0, o.s1,
					 (const struct kern_act_q8 *)(act + (size_t)t * ars) + b, acc[t]);
	}
#pragma GCC unroll 8
	for (int t = 0; t < nt; t++)
		_mm512_storeu_ps(y + (int64_t)t * ldy, acc[t]);
}

typedef void (*fused_fn)(const uint8_t *, size_t, __m512i, int64_t, const uint8_t *, size_t, float *, int64_t,
			 const uint8_t *);
#define FUSED_FN(name, type, nt)                                                                       \
	static void fused_##name##_##nt(const uint8_t *p, size_t rs, __m512i idx, int64_t nb,          \
					const uint8_t *act, size_t ars, float *y, int64_t ldy,         \
					const uint8_t *pf)                                             \
	{                                                                                              \
		fused(type, nt, p, rs, idx, nb, act, ars, y, ldy, pf);                                 \
	}
#define FUSED_FNS(name, type)                                                                          \
	FUSED_FN(name, type, 1) FUSED_FN(name, type, 2) FUSED_FN(name, type, 3) FUSED_FN(name, type, 4) \
		FUSED_FN(name, type, 5) FUSED_FN(name, type, 6) FUSED_FN(name, type, 7)                 \
			FUSED_FN(name, type, 8)
FUSED_FNS(q8_0, KERN_TYPE_Q8_0)
FUSED_FNS(q4_0, KERN_TYPE_Q4_0)
FUSED_FNS(q4_1, KERN_TYPE_Q4_1)
#define FUSED_TABLE(name)                                                                              \
	{                                                                                              \
		NULL, fused_##name##_1, fused_##name##_2, fused_##name##_3, fused_##name##_4,          \
			fused_##name##_5, fused_##name##_6, fused_##name##_7, fused_##name##_8        \
	}
static const fused_fn g_fused_q8_0[] = FUSED_TABLE(q8_0);
static const fused_fn g_fused_q4_0[] = FUSED_TABLE(q4_0);
static const fused_fn g_fused_q4_1[] = FUSED_TABLE(q4_1);

/* ---- drivers ---- */

/* Prefetch into L2 bytes [off, off + len) of rows [0, nr) at p. */
static void prefetch_rows(const uint8_t *p, size_t rs, int64_t nr, size_t off, size_t len)
{
	for (int64_t i = 0; i < nr; i++)
		for (size_t o = 0; o < len; o += 64)
			_mm_prefetch((const char *)(p + (size_t)i * rs + off + o), _MM_HINT_T1);
}

typedef void (*gather_fn)(const struct strip *, int64_t, int, uint8_t *);

struct qtype {
	gather_fn gather;      /* any strip */
	gather_fn full;	       /* full strips, NULL: unpack_full */
	enum tile_kind kind;
	const fused_fn *fused; /* decode from registers, NULL: none */
};

/* Blocks [cb, cb + nblk) of a full strip of Q8_0 / Q4_0 / Q4_1 into buf. */
static void unpack_full(uint32_t wtype, const struct strip *s, int64_t cb, int nblk, uint8_t *buf)
{
	for (int i = 0; i < nblk; i++) {
		struct wblk o;
		if (wtype == KERN_TYPE_Q8_0)
			full_q8_0(s->w, s->rs, s->idx, cb + i, &o);
		else if (wtype == KERN_TYPE_Q4_0)
			full_q4_0(s->w, s->rs, s->idx, cb + i, &o);
		else
			full_q4_1(s->w, s->rs, s->idx, cb + i, &o);
		put_blk(buf + (size_t)i * BLK_BYTES, &o);
	}
}

static int matmul_quant(uint32_t wtype, const void *w, size_t rs, int64_t k, const void *act, size_t ars,
			int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	struct qtype qt;
	switch (wtype) {
	case KERN_TYPE_Q8_0: qt = (struct qtype){gather_q8_0, NULL, TILE_OFF, g_fused_q8_0}; break;
	case KERN_TYPE_Q4_0: qt = (struct qtype){gather_q4_0, NULL, TILE_OFF, g_fused_q4_0}; break;
	case KERN_TYPE_Q4_1: qt = (struct qtype){gather_q4_1, NULL, TILE_MIN, g_fused_q4_1}; break;
	case KERN_TYPE_Q4_K: qt = (struct qtype){gather_q4_k, full_q4_k, TILE_MIN, NULL}; break;
	case KERN_TYPE_Q6_K: qt = (struct qtype){gather_q6_k, full_q6_k, TILE_Q6, NULL}; break;
	default: return -ENOTSUP;
	}
	if (rs > MAX_ROW_BYTES)
		return -ENOTSUP;

	const int64_t nb = k / 32;
	const size_t bb = (size_t)kern_type_block_bytes(wtype), bpb = (size_t)kern_type_block_elems(wtype) / 32;
	const uint8_t *w8 = w, *a8 = act;
	struct strip s;
	s.rs = rs;
	s.idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
				   _mm512_set1_epi32((int)rs));

	/* decode: full strips straight from registers, no buffer */
	int64_t r = r0;
	if (n_tok <= TILE_TOK && qt.fused) {
		for (; r + STRIP_ROWS <= r1; r += STRIP_ROWS) {
			const uint8_t *pf = r + 3 * STRIP_ROWS <= r1 ? w8 + (size_t)(r + 2 * STRIP_ROWS) * rs : NULL;
			qt.fused[n_tok](w8 + (size_t)r * rs, rs, s.idx, nb, a8, ars, y + r, ldy, pf);
		}
		if (r == r1)
			return 0;
	}

	/* Batches: token blocks small enough for their activations to stay in
	 * L2 (each re-reads W); within one, a strip's chunks run back to back
	 * so the running sums in y stay in L1 between chunks. */
	_Alignas(64) uint8_t buf[CHUNK_BLOCKS * BLK_BYTES];
	int tb = (int)(ACT_L2_BYTES / ((size_t)nb * sizeof(struct kern_act_q8))) & ~(TILE_TOK - 1);
	tb = tb < TILE_TOK ? TILE_TOK : tb > TOK_BLOCK ? TOK_BLOCK : tb;
	for (int t0 = 0; t0 < n_tok; t0 += tb) {
		int t1 = n_tok - t0 < tb ? n_tok : t0 + tb;
		for (int64_t rr = r; rr < r1; rr += STRIP_ROWS) {
			int64_t nr = r1 - rr < STRIP_ROWS ? r1 - rr : STRIP_ROWS;
			s.w = w8 + (size_t)rr * rs;
			s.m = (__mmask16)((1u << nr) - 1);
			for (int64_t cb = 0; cb < nb; cb += CHUNK_BLOCKS) {
				int nblk = nb - cb < CHUNK_BLOCKS ? (int)(nb - cb) : CHUNK_BLOCKS;
				if (rr + STRIP_ROWS < r1) { /* the next strip, while this one computes */
					int64_t nr2 = r1 - rr - STRIP_ROWS;
					prefetch_rows(s.w + STRIP_ROWS * rs, rs, nr2 < STRIP_ROWS ? nr2 : STRIP_ROWS,
						      (size_t)cb / bpb * bb, (size_t)nblk / bpb * bb);
				}
				if (nr < STRIP_ROWS)
					qt.gather(&s, cb, nblk, buf);
				else if (qt.full)
					qt.full(&s, cb, nblk, buf);
				else
					unpack_full(wtype, &s, cb, nblk, buf);
				const uint8_t *ac = a8 + (size_t)cb * sizeof(struct kern_act_q8);
				for (int t = t0; t < t1; t += TILE_TOK) {
					int nt = t1 - t < TILE_TOK ? t1 - t : TILE_TOK;
					g_tiles[qt.kind][cb > 0][nt](buf, nblk, ac + (size_t)t * ars, ars,
								     y + (int64_t)t * ldy + rr, ldy, s.m);
				}
			}
		}
	}
	return 0;
}

/* ---- float weights: 4 rows x 4 tokens of f32 FMA ---- */

static inline __attribute__((always_inline)) __m512 load_w16(uint32_t wtype, const uint8_t *p, __mmask16 m)
{
	switch (wtype) {
	case KERN_TYPE_F16:
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
	case KERN_TYPE_BF16:
		return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
	default:
		return _mm512_maskz_loadu_ps(m, p);
	}
}

/* acc[i][t] += 16 elements from e (lanes in m) of row i and token t */
#define FTILE_STEP(m)                                                                      \
	do {                                                                               \
		__m512 wv[4], xv[4];                                                       \
		for (int i = 0; i < nr; i++)                                               \
			wv[i] = load_w16(wtype, w + (size_t)i * rs + (size_t)e * es, m);  \
		for (int t = 0; t < nt; t++)                                               \
			xv[t] = _mm512_maskz_loadu_ps(m, x + (size_t)t * xs + e);          \
		for (int i = 0; i < nr; i++)                                               \
			for (int t = 0; t < nt; t++)                                       \
				acc[i][t] = _mm512_fmadd_ps(wv[i], xv[t], acc[i][t]);      \
	} while (0)

static inline __attribute__((always_inline)) void ftile(uint32_t wtype, int nr, int nt, const uint8_t *w,
							 size_t rs, int64_t k, const float *x, size_t xs, float *y,
							 int64_t ldy)
{
	const int es = wtype == KERN_TYPE_F32 ? 4 : 2;
	__m512 acc[4][4];
	for (int i = 0; i < nr; i++)
		for (int t = 0; t < nt; t++)
			acc[i][t] = _mm512_setzero_ps();
	int64_t e = 0;
	for (; e + 16 <= k; e += 16)
		FTILE_STEP(0xFFFF);
	if (e < k) {
		__mmask16 m = (__mmask16)((1u << (k - e)) - 1);
		FTILE_STEP(m);
	}
	for (int i = 0; i < nr; i++)
		for (int t = 0; t < nt; t++)
			y[(int64_t)t * ldy + i] = _mm512_reduce_add_ps(acc[i][t]);
}

typedef void (*ftile_fn)(const uint8_t *, size_t, int64_t, const float *, size_t, float *, int64_t);
#define FTILE_FN(ty, nr, nt)                                                                  \
	static void ftile_##ty##_##nr##_##nt(const uint8_t *w, size_t rs, int64_t k,          \
					     const float *x, size_t xs, float *y, int64_t ldy) \
	{                                                                                     \
		ftile(KERN_TYPE_##ty, nr, nt, w, rs, k, x, xs, y, ldy);                       \
	}
#define FTILE_FNS(ty)                                                                         \
	FTILE_FN(ty, 4, 1)                                                                    \
	FTILE_FN(ty, 4, 2)                                                                    \
	FTILE_FN(ty, 4, 3)                                                                    \
	FTILE_FN(ty, 4, 4)                                                                    \
	FTILE_FN(ty, 1, 1)                                                                    \
	FTILE_FN(ty, 1, 2)                                                                    \
	FTILE_FN(ty, 1, 3)                                                                    \
	FTILE_FN(ty, 1, 4)
FTILE_FNS(F32)
FTILE_FNS(F16)
FTILE_FNS(BF16)
/* [type: F32, F16, BF16][rows: 1 or 4][tokens] */
#define FTILE_TABLE(ty)                                                                         \
	{                                                                                       \
		{NULL, ftile_##ty##_1_1, ftile_##ty##_1_2, ftile_##ty##_1_3, ftile_##ty##_1_4}, \
		{NULL, ftile_##ty##_4_1, ftile_##ty##_4_2, ftile_##ty##_4_3, ftile_##ty##_4_4}, \
	}
static const ftile_fn g_ftiles[3][2][5] = {FTILE_TABLE(F32), FTILE_TABLE(F16), FTILE_TABLE(BF16)};

static void matmul_float(uint32_t wtype, const void *w, size_t rs, int64_t k, const void *act, size_t ars,
			 int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	const ftile_fn(*tiles)[5] = g_ftiles[wtype == KERN_TYPE_F32 ? 0 : wtype == KERN_TYPE_F16 ? 1 : 2];
	const size_t xs = ars / sizeof(float);
	/* tokens in blocks whose activations (f32) stay in L2 */
	int tb = (int)(((size_t)256 << 10) / (ars ? ars : 1)) & ~3;
	tb = tb < 4 ? 4 : tb;
	for (int t0 = 0; t0 < n_tok; t0 += tb) {
		int t1 = n_tok - t0 < tb ? n_tok : t0 + tb;
		for (int64_t r = r0; r < r1;) {
			int four = r1 - r >= 4;
			for (int t = t0; t < t1; t += 4) {
				int nt = t1 - t < 4 ? t1 - t : 4;
				tiles[four][nt]((const uint8_t *)w + (size_t)r * rs, rs, k,
						(const float *)act + (size_t)t * xs, xs, y + (int64_t)t * ldy + r, ldy);
			}
			r += four ? 4 : 1;
		}
	}
}

int kern_matmul_avx512(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		       size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	if (wtype == KERN_TYPE_F32 || wtype == KERN_TYPE_F16 || wtype == KERN_TYPE_BF16) {
		matmul_float(wtype, w, w_row_bytes, k, act, act_row_bytes, n_tok, y, ldy, r0, r1);
		return 0;
	}
	return matmul_quant(wtype, w, w_row_bytes, k, act, act_row_bytes, n_tok, y, ldy, r0, r1);
}

#else

int kern_matmul_avx512(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		       size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	(void)wtype, (void)w, (void)w_row_bytes, (void)k, (void)act, (void)act_row_bytes;
	(void)n_tok, (void)y, (void)ldy, (void)r0, (void)r1;
	return -ENOTSUP;
}

#endif
