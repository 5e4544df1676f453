/*
 * quant.c: entry points of the quantized CPU kernels: activation row size
 * and quantization, matrix product dispatch to the SIMD path compiled in
 * (chosen at build time by -march: AVX-512 VNNI, else AVX2, else the scalar
 * reference), and dequantization of rows (embedding lookups).
 *
 * The SIMD activation quantizer performs the same float operations in the
 * same order as kern_act_quantize_row_ref (max of |x|, d = amax / 127,
 * id = 1 / d, round-to-nearest-even of x * id), so both give identical bytes.
 *
 * Threading: pure functions; any number of threads may call them.
 */
#include <errno.h>
#include <math.h>

#include "kernels/quant.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define QUANT_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__)
#define QUANT_AVX2 1
#include <immintrin.h>
#endif

static bool is_float_type(uint32_t t)
{
	return t == KERN_TYPE_F32 || t == KERN_TYPE_F16 || t == KERN_TYPE_BF16;
}

size_t kern_act_row_bytes(uint32_t wtype, int64_t k)
{
	if (is_float_type(wtype))
		return (size_t)k * sizeof(float);
	return (size_t)(k / 32) * sizeof(struct kern_act_q8);
}

#if QUANT_AVX512 || QUANT_AVX2
/* Type-specific fields of an activation block from its integer sums. */
static void act_fill(uint32_t wtype, struct kern_act_q8 *a, float d, int sum_lo, int sum_hi)
{
	a->d = d;
	a->s = 0;
	a->off[0] = a->off[1] = 0;
	switch (wtype) {
	case KERN_TYPE_Q4_1:
	case KERN_TYPE_Q4_K:
		a->s = d * (float)(sum_lo + sum_hi);
		break;
	case KERN_TYPE_Q4_0:
		a->off[0] = -8 * (sum_lo + sum_hi);
		break;
	case KERN_TYPE_Q8_0:
		a->off[0] = -128 * (sum_lo + sum_hi);
		break;
	case KERN_TYPE_Q6_K:
		a->off[0] = -32 * sum_lo;
		a->off[1] = -32 * sum_hi;
		break;
	default:
		break;
	}
}

#endif

#if QUANT_AVX512
static void act_quantize_q8(uint32_t wtype, const float *x, struct kern_act_q8 *a, int64_t nb)
{
	const __m512 sign = _mm512_set1_ps(-0.0f);
	for (int64_t b = 0; b < nb; b++, x += 32) {
		__m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
		__m512 mx = _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1));
		float amax = _mm512_reduce_max_ps(mx);
		float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
		__m512 vid = _mm512_set1_ps(id);
		/* cvtps rounds to nearest even (default MXCSR), like nearbyintf */
		__m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
		__m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
		const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
		q0 = _mm512_min_epi32(_mm512_max_epi32(q0, lo), hi);
		q1 = _mm512_min_epi32(_mm512_max_epi32(q1, lo), hi);
		_mm_storeu_si128((__m128i *)a[b].qs, _mm512_cvtepi32_epi8(q0));
		_mm_storeu_si128((__m128i *)(a[b].qs + 16), _mm512_cvtepi32_epi8(q1));
		act_fill(wtype, &a[b], d, _mm512_reduce_add_epi32(q0), _mm512_reduce_add_epi32(q1));
	}
}
#elif QUANT_AVX2
static int hsum8(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
	return _mm_cvtsi128_si32(s);
}

static void act_quantize_q8(uint32_t wtype, const float *x, struct kern_act_q8 *a, int64_t nb)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	for (int64_t b = 0; b < nb; b++, x += 32) {
		__m256 v[4];
		__m256 mx = _mm256_setzero_ps();
		for (int i = 0; i < 4; i++) {
			v[i] = _mm256_loadu_ps(x + 8 * i);
			mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
		}
		__m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
		m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
		m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
		float amax = _mm_cvtss_f32(m4);
		float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
		__m256 vid = _mm256_set1_ps(id);
		__m256i q[4];
		for (int i = 0; i < 4; i++) {
			q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], vid));
			q[i] = _mm256_min_epi32(_mm256_max_epi32(q[i], _mm256_set1_epi32(-127)), _mm256_set1_epi32(127));
		}
		/* packs interleave 128-bit lanes; the permute restores element order */
		__m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
		__m256i p = _mm256_packs_epi16(p01, p23);
		p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
		_mm256_storeu_si256((__m256i *)a[b].qs, p);
		act_fill(wtype, &a[b], d, hsum8(_mm256_add_epi32(q[0], q[1])), hsum8(_mm256_add_epi32(q[2], q[3])));
	}
}
#endif

void kern_act_quantize_row(uint32_t wtype, const float *x, void *dst, int64_t k)
{
#if QUANT_AVX512 || QUANT_AVX2
	if (!is_float_type(wtype)) {
		act_quantize_q8(wtype, x, dst, k / 32);
		return;
	}
#endif
	kern_act_quantize_row_ref(wtype, x, dst, k);
}

void kern_matmul(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		 size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	if (n_tok <= 0 || r1 <= r0)
		return;
#if QUANT_AVX512
	if (kern_matmul_avx512(wtype, w, w_row_bytes, k, act, act_row_bytes, n_tok, y, ldy, r0, r1) == 0)
		return;
#elif QUANT_AVX2
	if (kern_matmul_avx2(wtype, w, w_row_bytes, k, act, act_row_bytes, n_tok, y, ldy, r0, r1) == 0)
		return;
#endif
	kern_matmul_ref(wtype, w, w_row_bytes, k, act, act_row_bytes, n_tok, y, ldy, r0, r1);
}

void kern_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
	/* One row per token (embedding lookup): the scalar code, which the
	 * compiler vectorizes for the plain types, is far from the hot path. */
	kern_dequantize_row_ref(type, src, dst, n);
}

const char *kern_simd_name(void)
{
#if QUANT_AVX512
	return "avx512vnni";
#elif QUANT_AVX2
	return "avx2";
#else
	return "scalar";
#endif
}
