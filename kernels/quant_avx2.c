/*
 * quant_avx2.c: kern_matmul for AVX2 + FMA CPUs without AVX-512 VNNI (the
 * x86-64-v3 baseline).
 *
 * Same scheme as quant_avx512.c at half the width: a strip of 8 weight rows
 * is gathered, one chunk of k at a time, into "row lanes" in a stack buffer
 * (lane r of a 256-bit vector holds 4 consecutive u8 weights of row r) and
 * each group of up to 4 tokens runs over it. Without vpdpbusd the products
 * are vpmaddubsw (u8 x s8 -> s16 pairs) then vpmaddwd by ones (-> s32).
 * vpmaddubsw saturates at 32767, hence:
 *   - nibbles (<= 15) sum four quads in 16 bits (4 * 2 * 15 * 127 < 32767);
 *   - Q6_K (<= 63) sums two (2 * 2 * 63 * 127 < 32767);
 *   - Q8_0 is signed: |w| times the activation carrying w's sign (vpsignb),
 *     one quad at a time (2 * 128 * 127 < 32767); its activation offset is
 *     not used.
 * Float weights use f32 FMA on 4 rows x 4 tokens.
 *
 * Batch invariance (quant.h): every output is one running f32 sum over the
 * blocks in order, resumed from y at each chunk of k; the integer parts are
 * exact (no saturation, by the bounds above), so tiles of any size give
 * the same bits.
 *
 * Threading: pure functions of their arguments; the buffer is on the stack.
 */
#include <errno.h>

#include "kernels/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) &&                                         \
	!(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__))
#include <immintrin.h>

#define STRIP_ROWS 8
#define TILE_TOK 4
#define TOK_BLOCK 128
#define CHUNK_BLOCKS 32
#define BLK_VECS 18 /* W[0..7], |W|[0..7] (Q8_0), two scale vectors */
#define BLK_BYTES (BLK_VECS * 32)
#define MAX_ROW_BYTES ((size_t)1 << 27)

struct strip {
	const uint8_t *w; /* row r */
	__m256i idx;	  /* lane i: i * row bytes */
	__m256i m;	  /* rows present: lane all-ones */
};

static inline __m256i gat(const struct strip *s, size_t off)
{
	return _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(s->w + off), s->idx, s->m, 1);
}

static inline __m256 half_to_f32(__m256i v, int hi)
{
	if (hi)
		v = _mm256_srli_epi32(v, 16);
	/* pack the low halves of the 8 lanes into 8 fp16 */
	__m256i p = _mm256_packus_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xFFFF)), _mm256_setzero_si256());
	p = _mm256_permute4x64_epi64(p, 0x08); /* qwords 0 and 2 to the low 128 bits */
	return _mm256_cvtph_ps(_mm256_castsi256_si128(p));
}

static inline __m256i nib_lo(__m256i v)
{
	return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

static inline __m256i nib_hi(__m256i v)
{
	return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
}

#define VEC(buf, i) ((__m256i *)(buf) + (i))
#define SC0 16
#define SC1 17

/* ---- unpacking blocks [b0, b0 + n) of a strip into buf ---- */

static void unpack_q8_0(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int i = 0; i < n; i++, buf += BLK_BYTES) {
		size_t off = (size_t)(b0 + i) * sizeof(struct blk_q8_0);
		for (int q = 0; q < 8; q++) {
			__m256i v = gat(s, off + 2 + 4 * q);
			_mm256_store_si256(VEC(buf, q), v);
			_mm256_store_si256(VEC(buf, 8 + q), _mm256_abs_epi8(v));
		}
		_mm256_store_ps((float *)VEC(buf, SC0), half_to_f32(gat(s, off), 0));
	}
}

static void unpack_q4_0(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int i = 0; i < n; i++, buf += BLK_BYTES) {
		size_t off = (size_t)(b0 + i) * sizeof(struct blk_q4_0);
		for (int j = 0; j < 4; j++) {
			__m256i v = gat(s, off + 2 + 4 * j);
			_mm256_store_si256(VEC(buf, j), nib_lo(v));
			_mm256_store_si256(VEC(buf, 4 + j), nib_hi(v));
		}
		_mm256_store_ps((float *)VEC(buf, SC0), half_to_f32(gat(s, off), 0));
	}
}

static void unpack_q4_1(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	for (int i = 0; i < n; i++, buf += BLK_BYTES) {
		size_t off = (size_t)(b0 + i) * sizeof(struct blk_q4_1);
		for (int j = 0; j < 4; j++) {
			__m256i v = gat(s, off + 4 + 4 * j);
			_mm256_store_si256(VEC(buf, j), nib_lo(v));
			_mm256_store_si256(VEC(buf, 4 + j), nib_hi(v));
		}
		__m256i dm = gat(s, off);
		_mm256_store_ps((float *)VEC(buf, SC0), half_to_f32(dm, 0));
		_mm256_store_ps((float *)VEC(buf, SC1), half_to_f32(dm, 1));
	}
}

/* Q4_K (n a multiple of 8): scale vectors d*sc_j and -dmin*m_j */
static void unpack_q4_k(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	const __m256i m6 = _mm256_set1_epi32(63), m4 = _mm256_set1_epi32(15), m2 = _mm256_set1_epi32(3);
	for (int sb = 0; sb < n / 8; sb++) {
		size_t off = (size_t)(b0 / 8 + sb) * sizeof(struct blk_q4_k);
		uint8_t *out = buf + (size_t)sb * 8 * BLK_BYTES;
		__m256i dd = gat(s, off);
		__m256 d = half_to_f32(dd, 0), dmin = _mm256_sub_ps(_mm256_setzero_ps(), half_to_f32(dd, 1));
		__m256i s0 = gat(s, off + 4), s1 = gat(s, off + 8), s2 = gat(s, off + 12);
		for (int j = 0; j < 8; j++) {
			__m256i sc, mn;
			if (j < 4) {
				sc = _mm256_and_si256(_mm256_srli_epi32(s0, 8 * j), m6);
				mn = _mm256_and_si256(_mm256_srli_epi32(s1, 8 * j), m6);
			} else {
				int jj = j - 4;
				__m256i h0 = _mm256_and_si256(_mm256_srli_epi32(s0, 8 * jj + 6), m2);
				__m256i h1 = _mm256_and_si256(_mm256_srli_epi32(s1, 8 * jj + 6), m2);
				sc = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(s2, 8 * jj), m4),
						     _mm256_slli_epi32(h0, 4));
				mn = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(s2, 8 * jj + 4), m4),
						     _mm256_slli_epi32(h1, 4));
			}
			uint8_t *ob = out + (size_t)j * BLK_BYTES;
			_mm256_store_ps((float *)VEC(ob, SC0), _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc)));
			_mm256_store_ps((float *)VEC(ob, SC1), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mn)));
		}
		for (int c = 0; c < 4; c++) {
			uint8_t *lo = out + (size_t)(2 * c) * BLK_BYTES, *hi = out + (size_t)(2 * c + 1) * BLK_BYTES;
			for (int q = 0; q < 8; q++) {
				__m256i v = gat(s, off + 16 + 32 * c + 4 * q);
				_mm256_store_si256(VEC(lo, q), nib_lo(v));
				_mm256_store_si256(VEC(hi, q), nib_hi(v));
			}
		}
	}
}

/* Q6_K (n a multiple of 8): see quant_avx512.c for the bit layout */
static void unpack_q6_k(const struct strip *s, int64_t b0, int n, uint8_t *buf)
{
	const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
	for (int sb = 0; sb < n / 8; sb++) {
		size_t off = (size_t)(b0 / 8 + sb) * sizeof(struct blk_q6_k);
		uint8_t *out = buf + (size_t)sb * 8 * BLK_BYTES;
		__m256 d = half_to_f32(gat(s, off + 206), 1);
		for (int i = 0; i < 4; i++) {
			__m256i sv = gat(s, off + 192 + 4 * i);
			for (int bb = 0; bb < 4; bb++) {
				int j = 4 * i + bb;
				__m256i sc = _mm256_srai_epi32(_mm256_slli_epi32(sv, 24 - 8 * bb), 24);
				uint8_t *ob = out + (size_t)(j / 2) * BLK_BYTES;
				_mm256_store_ps((float *)VEC(ob, SC0 + j % 2), _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc)));
			}
		}
		for (int h = 0; h < 2; h++) {
			for (int q = 0; q < 8; q++) {
				__m256i vh = gat(s, off + 128 + 32 * h + 4 * q);
				for (int g1 = 0; g1 < 2; g1++) {
					__m256i vl = gat(s, off + 64 * h + 32 * g1 + 4 * q);
					for (int g2 = 0; g2 < 2; g2++) {
						int g = g1 + 2 * g2;
						__m256i lo = _mm256_and_si256(g2 ? _mm256_srli_epi32(vl, 4) : vl, m4);
						__m256i hi = 4 - 2 * g >= 0 ? _mm256_slli_epi32(vh, 4 - 2 * g)
									    : _mm256_srli_epi32(vh, 2 * g - 4);
						uint8_t *ob = out + (size_t)(4 * h + g) * BLK_BYTES;
						_mm256_store_si256(VEC(ob, q),
								   _mm256_or_si256(lo, _mm256_and_si256(hi, m30)));
					}
				}
			}
		}
	}
}

/* ---- register tiles ---- */

enum tile_kind { TILE_OFF, TILE_SGN, TILE_MIN, TILE_Q6 };

static inline __m256i bcast32(const void *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm256_set1_epi32(v);
}

/* s16 pair products of quad j (u8 weights) and the activation dword */
static inline __m256i mul_quad(const uint8_t *blk, int j, const int8_t *q)
{
	return _mm256_maddubs_epi16(_mm256_load_si256(VEC(blk, j)), bcast32(q + 4 * j));
}

static inline __attribute__((always_inline)) __m256 blk_dot(enum tile_kind kind, const uint8_t *blk,
							     const struct kern_act_q8 *a, __m256 acc)
{
	const __m256i ones = _mm256_set1_epi16(1);
	const int8_t *q = a->qs;
	const __m256 s0 = _mm256_load_ps((const float *)VEC(blk, SC0));
	if (kind == TILE_Q6) {
		__m256i lo = _mm256_add_epi16(mul_quad(blk, 0, q), mul_quad(blk, 1, q));
		__m256i lo2 = _mm256_add_epi16(mul_quad(blk, 2, q), mul_quad(blk, 3, q));
		__m256i hi = _mm256_add_epi16(mul_quad(blk, 4, q), mul_quad(blk, 5, q));
		__m256i hi2 = _mm256_add_epi16(mul_quad(blk, 6, q), mul_quad(blk, 7, q));
		__m256i il = _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(lo2, ones));
		__m256i ih = _mm256_add_epi32(_mm256_madd_epi16(hi, ones), _mm256_madd_epi16(hi2, ones));
		il = _mm256_add_epi32(il, bcast32(&a->off[0]));
		ih = _mm256_add_epi32(ih, bcast32(&a->off[1]));
		__m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(il), s0);
		v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ih), _mm256_load_ps((const float *)VEC(blk, SC1)), v);
		return _mm256_fmadd_ps(v, _mm256_set1_ps(a->d), acc);
	}
	__m256i I;
	if (kind == TILE_SGN) {
		I = _mm256_setzero_si256();
		for (int j = 0; j < 8; j++) {
			__m256i w = _mm256_load_si256(VEC(blk, j));
			__m256i p = _mm256_maddubs_epi16(_mm256_load_si256(VEC(blk, 8 + j)),
							 _mm256_sign_epi8(bcast32(q + 4 * j), w));
			I = _mm256_add_epi32(I, _mm256_madd_epi16(p, ones));
		}
	} else {
		__m256i p0 = _mm256_add_epi16(_mm256_add_epi16(mul_quad(blk, 0, q), mul_quad(blk, 1, q)),
					      _mm256_add_epi16(mul_quad(blk, 2, q), mul_quad(blk, 3, q)));
		__m256i p1 = _mm256_add_epi16(_mm256_add_epi16(mul_quad(blk, 4, q), mul_quad(blk, 5, q)),
					      _mm256_add_epi16(mul_quad(blk, 6, q), mul_quad(blk, 7, q)));
		I = _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones);
		if (kind == TILE_OFF)
			I = _mm256_add_epi32(I, bcast32(&a->off[0]));
	}
	acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_mul_ps(s0, _mm256_set1_ps(a->d)), acc);
	if (kind == TILE_MIN)
		acc = _mm256_fmadd_ps(_mm256_load_ps((const float *)VEC(blk, SC1)), _mm256_set1_ps(a->s), acc);
	return acc;
}

/* y (8 rows in m, nt tokens) += chunk x tokens. `resume`: y holds the
 * running sums of the earlier chunks, which continue from there, so every
 * output is one f32 sum over the blocks in order (see quant.h, "Batch
 * invariance"). */
static inline __attribute__((always_inline)) void tile(enum tile_kind kind, int nt, const uint8_t *buf, int nblk,
							const uint8_t *act, size_t ars, float *y, int64_t ldy,
							__m256i m, int resume)
{
	__m256 acc[TILE_TOK];
	for (int t = 0; t < nt; t++)
		acc[t] = resume ? _mm256_maskload_ps(y + (int64_t)t * ldy, m) : _mm256_setzero_ps();
	for (int b = 0; b < nblk; b++) {
		const uint8_t *blk = buf + (size_t)b * BLK_BYTES;
		for (int t = 0; t < nt; t++)
			acc[t] = blk_dot(kind, blk, (const struct kern_act_q8 *)(act + (size_t)t * ars) + b, acc[t]);
	}
	for (int t = 0; t < nt; t++)
		_mm256_maskstore_ps(y + (int64_t)t * ldy, m, acc[t]);
}

/* [kind][resume][nt]: resume a compile-time constant in each, as in
 * quant_avx512.c */
typedef void (*tile_fn)(const uint8_t *, int, const uint8_t *, size_t, float *, int64_t, __m256i);
#define TILE_FN(kind, res, nt)                                                                         \
	static void tile_##kind##_##res##_##nt(const uint8_t *buf, int nblk, const uint8_t *act,       \
					       size_t ars, float *y, int64_t ldy, __m256i m)           \
	{                                                                                              \
		tile(kind, nt, buf, nblk, act, ars, y, ldy, m, res);                                   \
	}
#define TILE_FNS(kind, res) TILE_FN(kind, res, 1) TILE_FN(kind, res, 2) TILE_FN(kind, res, 3) TILE_FN(kind, res, 4)
TILE_FNS(TILE_OFF, 0)
TILE_FNS(TILE_OFF, 1)
TILE_FNS(TILE_SGN, 0)
TILE_FNS(TILE_SGN, 1)
TILE_FNS(TILE_MIN, 0)
TILE_FNS(TILE_MIN, 1)
TILE_FNS(TILE_Q6, 0)
TILE_FNS(TILE_Q6, 1)
#define TILE_ROW(kind, res)                                                                            \
	{                                                                                              \
		NULL, tile_##kind##_##res##_1, tile_##kind##_##res##_2, tile_##kind##_##res##_3,       \
			tile_##kind##_##res##_4                                                        \
	}
#define TILE_TABLE(kind) {TILE_ROW(kind, 0), TILE_ROW(kind, 1)}
static const tile_fn g_tiles[4][2][TILE_TOK + 1] = {
	[TILE_OFF] = TILE_TABLE(TILE_OFF),
	[TILE_SGN] = TILE_TABLE(TILE_SGN),
	[TILE_MIN] = TILE_TABLE(TILE_MIN),
	[TILE_Q6] = TILE_TABLE(TILE_Q6),
};

typedef void (*unpack_fn)(const struct strip *, int64_t, int, uint8_t *);

static int matmul_quant(uint32_t wtype, const void *w, size_t rs, int64_t k, const void *act, size_t ars,
			int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	unpack_fn unpack;
	enum tile_kind kind;
	switch (wtype) {
	case KERN_TYPE_Q8_0: unpack = unpack_q8_0; kind = TILE_SGN; break;
	case KERN_TYPE_Q4_0: unpack = unpack_q4_0; kind = TILE_OFF; break;
	case KERN_TYPE_Q4_1: unpack = unpack_q4_1; kind = TILE_MIN; break;
	case KERN_TYPE_Q4_K: unpack = unpack_q4_k; kind = TILE_MIN; break;
	case KERN_TYPE_Q6_K: unpack = unpack_q6_k; kind = TILE_Q6; break;
	default: return -ENOTSUP;
	}
	if (rs > MAX_ROW_BYTES)
		return -ENOTSUP;

	_Alignas(32) uint8_t buf[CHUNK_BLOCKS * BLK_BYTES];
	const int64_t nb = k / 32;
	struct strip s;
	s.idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)rs));
	/* token blocks whose activations stay in L2; a strip's chunks back to
	 * back so its running sums in y stay in L1 */
	int tb = (int)(((size_t)1 << 20) / ((size_t)nb * sizeof(struct kern_act_q8))) & ~(TILE_TOK - 1);
	tb = tb < TILE_TOK ? TILE_TOK : tb > TOK_BLOCK ? TOK_BLOCK : tb;
	for (int t0 = 0; t0 < n_tok; t0 += tb) {
		int t1 = n_tok - t0 < tb ? n_tok : t0 + tb;
		for (int64_t r = r0; r < r1; r += STRIP_ROWS) {
			int nr = r1 - r < STRIP_ROWS ? (int)(r1 - r) : STRIP_ROWS;
			s.w = (const uint8_t *)w + (size_t)r * rs;
			s.m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
			for (int64_t cb = 0; cb < nb; cb += CHUNK_BLOCKS) {
				int nblk = nb - cb < CHUNK_BLOCKS ? (int)(nb - cb) : CHUNK_BLOCKS;
				const uint8_t *ac = (const uint8_t *)act + (size_t)cb * sizeof(struct kern_act_q8);
				unpack(&s, cb, nblk, buf);
				for (int t = t0; t < t1; t += TILE_TOK) {
					int nt = t1 - t < TILE_TOK ? t1 - t : TILE_TOK;
					g_tiles[kind][cb > 0][nt](buf, nblk, ac + (size_t)t * ars, ars,
								  y + (int64_t)t * ldy + r, ldy, s.m);
				}
			}
		}
	}
	return 0;
}

/* ---- float weights: 4 rows x 4 tokens of f32 FMA ---- */

/* 8 weights from p (n < 8: the first n, zero-filled, without reading more) */
static inline __m256 load_w8(uint32_t wtype, const uint8_t *p, int n)
{
	if (n < 8) {
		float tmp[8] = {0};
		for (int i = 0; i < n; i++) {
			uint16_t h;
			if (wtype == KERN_TYPE_F32) {
				memcpy(&tmp[i], p + 4 * i, 4);
				continue;
			}
			memcpy(&h, p + 2 * i, 2);
			tmp[i] = wtype == KERN_TYPE_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
		}
		return _mm256_loadu_ps(tmp);
	}
	switch (wtype) {
	case KERN_TYPE_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
	case KERN_TYPE_BF16:
		return _mm256_castsi256_ps(
			_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
	default:
		return _mm256_loadu_ps((const float *)p);
	}
}

static inline __m256 load_x8(const float *p, int n)
{
	if (n < 8) {
		float tmp[8] = {0};
		memcpy(tmp, p, (size_t)n * sizeof(float));
		return _mm256_loadu_ps(tmp);
	}
	return _mm256_loadu_ps(p);
}

static float hsum(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) void ftile(uint32_t wtype, int nr, int nt, const uint8_t *w,
							 size_t rs, int64_t k, const float *x, size_t xs, float *y,
							 int64_t ldy)
{
	const int es = wtype == KERN_TYPE_F32 ? 4 : 2;
	__m256 acc[4][4];
	for (int i = 0; i < nr; i++)
		for (int t = 0; t < nt; t++)
			acc[i][t] = _mm256_setzero_ps();
	for (int64_t e = 0; e < k; e += 8) {
		int n = k - e >= 8 ? 8 : (int)(k - e);
		__m256 wv[4], xv[4];
		for (int i = 0; i < nr; i++)
			wv[i] = load_w8(wtype, w + (size_t)i * rs + (size_t)e * es, n);
		for (int t = 0; t < nt; t++)
			xv[t] = load_x8(x + (size_t)t * xs + e, n);
		for (int i = 0; i < nr; i++)
			for (int t = 0; t < nt; t++)
				acc[i][t] = _mm256_fmadd_ps(wv[i], xv[t], acc[i][t]);
	}
	for (int i = 0; i < nr; i++)
		for (int t = 0; t < nt; t++)
			y[(int64_t)t * ldy + i] = hsum(acc[i][t]);
}

#define FTILE_FN(nr, nt)                                                                               \
	static void ftile_##nr##_##nt(uint32_t wtype, const uint8_t *w, size_t rs, int64_t k, const float *x, \
				      size_t xs, float *y, int64_t ldy)                                \
	{                                                                                              \
		ftile(wtype, nr, nt, w, rs, k, x, xs, y, ldy);                                         \
	}
#define FTILE_ROW(nr) FTILE_FN(nr, 1) FTILE_FN(nr, 2) FTILE_FN(nr, 3) FTILE_FN(nr, 4)
FTILE_ROW(1)
FTILE_ROW(2)
FTILE_ROW(3)
FTILE_ROW(4)
typedef void (*ftile_fn)(uint32_t, const uint8_t *, size_t, int64_t, const float *, size_t, float *, int64_t);
static const ftile_fn g_ftiles[5][5] = {
	[1] = {NULL, ftile_1_1, ftile_1_2, ftile_1_3, ftile_1_4},
	[2] = {NULL, ftile_2_1, ftile_2_2, ftile_2_3, ftile_2_4},
	[3] = {NULL, ftile_3_1, ftile_3_2, ftile_3_3, ftile_3_4},
	[4] = {NULL, ftile_4_1, ftile_4_2, ftile_4_3, ftile_4_4},
};

int kern_matmul_avx2(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		     size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	if (wtype != KERN_TYPE_F32 && wtype != KERN_TYPE_F16 && wtype != KERN_TYPE_BF16)
		return matmul_quant(wtype, w, w_row_bytes, k, act, act_row_bytes, n_tok, y, ldy, r0, r1);
	const size_t xs = act_row_bytes / sizeof(float);
	/* tokens in blocks whose activations (f32) stay in L2 */
	int tb = (int)(((size_t)256 << 10) / (act_row_bytes ? act_row_bytes : 1)) & ~3;
	tb = tb < 4 ? 4 : tb;
	for (int t0 = 0; t0 < n_tok; t0 += tb) {
		int t1 = n_tok - t0 < tb ? n_tok : t0 + tb;
		for (int64_t r = r0; r < r1; r += 4) {
			int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
			for (int t = t0; t < t1; t += 4) {
				int nt = t1 - t < 4 ? t1 - t : 4;
				g_ftiles[nr][nt](wtype, (const uint8_t *)w + (size_t)r * w_row_bytes, w_row_bytes, k,
						 (const float *)act + (size_t)t * xs, xs, y + (int64_t)t * ldy + r, ldy);
			}
		}
	}
	return 0;
}

#else

int kern_matmul_avx2(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		     size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	(void)wtype, (void)w, (void)w_row_bytes, (void)k, (void)act, (void)act_row_bytes;
	(void)n_tok, (void)y, (void)ldy, (void)r0, (void)r1;
	return -ENOTSUP;
}

#endif
