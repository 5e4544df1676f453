/*
 * quant_ref.c: scalar reference code for the block formats in quant.h:
 * dequantization, the reference quantizers (used to write test models, never
 * on the hot path), activation quantization and the matrix product.
 *
 * Everything here is written straight from the format description, element
 * by element, so that it can stand as the independent check of the SIMD
 * kernels (quant_avx512.c, quant_avx2.c). Speed does not matter here.
 *
 * Threading: all functions are pure; any number of threads may call them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"

/* ---------------------------------------------------------------------- */
/* Weight element decoding: the integer value of element i of a block and
 * the scale (and min) that map it to a real number. */

/* Q4_0 / Q4_1: element i < 16 is the low nibble of qs[i], i >= 16 the high
 * nibble of qs[i - 16]. */
static int nib32(const uint8_t *qs, int i)
{
	return i < 16 ? (qs[i] & 0xF) : (qs[i - 16] >> 4);
}

/* Q4_K: element i of the super-block (0..255); 64-element chunk c holds
 * sub-block 2c in the low nibbles of qs[32c..32c+31], 2c+1 in the high ones. */
static int q4k_elem(const struct blk_q4_k *b, int i)
{
	int c = i / 64, l = i % 64;
	uint8_t v = b->qs[32 * c + (l % 32)];
	return l < 32 ? (v & 0xF) : (v >> 4);
}

/* Q6_K: element i of the super-block as stored (0..63; value is q - 32).
 * Half n (128 elements) uses ql[64n..], qh[32n..]; within it, quarter g
 * (32 elements, l = 0..31) takes its low 4 bits from ql[l + 32(g & 1)]
 * (low nibble for g < 2, high for g >= 2) and bits 4..5 from qh[l] >> 2g. */
static int q6k_elem(const struct blk_q6_k *b, int i)
{
	int n = i / 128, g = (i % 128) / 32, l = i % 32;
	uint8_t lo = b->ql[64 * n + l + 32 * (g & 1)];
	lo = g < 2 ? (lo & 0xF) : (lo >> 4);
	int hi = (b->qh[32 * n + l] >> (2 * g)) & 3;
	return lo | (hi << 4);
}

/* ---------------------------------------------------------------------- */
/* Dequantization */

void kern_dequantize_row_ref(uint32_t type, const void *src, float *dst, int64_t n)
{
	const uint8_t *p = src;

	switch (type) {
	case KERN_TYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		return;
	case KERN_TYPE_F16:
		for (int64_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, p + 2 * i, 2);
			dst[i] = kern_f16_to_f32(h);
		}
		return;
	case KERN_TYPE_BF16:
		for (int64_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, p + 2 * i, 2);
			dst[i] = kern_bf16_to_f32(h);
		}
		return;
	case KERN_TYPE_Q8_0:
		for (int64_t b = 0; b < n / QK8_0; b++) {
			const struct blk_q8_0 *x = (const void *)(p + b * sizeof(*x));
			float d = kern_f16_to_f32(x->d);
			for (int i = 0; i < QK8_0; i++)
				dst[b * QK8_0 + i] = d * x->qs[i];
		}
		return;
	case KERN_TYPE_Q4_0:
		for (int64_t b = 0; b < n / QK4_0; b++) {
			const struct blk_q4_0 *x = (const void *)(p + b * sizeof(*x));
			float d = kern_f16_to_f32(x->d);
			for (int i = 0; i < QK4_0; i++)
				dst[b * QK4_0 + i] = d * (float)(nib32(x->qs, i) - 8);
		}
		return;
	case KERN_TYPE_Q4_1:
		for (int64_t b = 0; b < n / QK4_1; b++) {
			const struct blk_q4_1 *x = (const void *)(p + b * sizeof(*x));
			float d = kern_f16_to_f32(x->d), m = kern_f16_to_f32(x->m);
			for (int i = 0; i < QK4_1; i++)
				dst[b * QK4_1 + i] = d * (float)nib32(x->qs, i) + m;
		}
		return;
	case KERN_TYPE_Q4_K:
		for (int64_t b = 0; b < n / QK_K; b++) {
			const struct blk_q4_k *x = (const void *)(p + b * sizeof(*x));
			float d = kern_f16_to_f32(x->d), dmin = kern_f16_to_f32(x->dmin);
			for (int i = 0; i < QK_K; i++) {
				uint8_t sc, m;
				kern_q4k_scale_min(i / 32, x->scales, &sc, &m);
				dst[b * QK_K + i] = d * sc * (float)q4k_elem(x, i) - dmin * m;
			}
		}
		return;
	case KERN_TYPE_Q6_K:
		for (int64_t b = 0; b < n / QK_K; b++) {
			const struct blk_q6_k *x = (const void *)(p + b * sizeof(*x));
			float d = kern_f16_to_f32(x->d);
			for (int i = 0; i < QK_K; i++)
				dst[b * QK_K + i] = d * x->scales[i / 16] * (float)(q6k_elem(x, i) - 32);
		}
		return;
	default:
		memset(dst, 0, (size_t)n * sizeof(float));
		return;
	}
}

/* ---------------------------------------------------------------------- */
/* Reference quantizers: round to nearest, max-abs (or min/max) scales. */

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static int rnd(float x)
{
	return (int)nearbyintf(x);
}

static void quantize_q8_0(const float *x, struct blk_q8_0 *y)
{
	float amax = 0;
	for (int i = 0; i < QK8_0; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
	y->d = kern_f32_to_f16(d);
	for (int i = 0; i < QK8_0; i++)
		y->qs[i] = (int8_t)clampi(rnd(x[i] * id), -127, 127);
}

static void quantize_q4_0(const float *x, struct blk_q4_0 *y)
{
	float amax = 0, max = 0; /* max: the value of largest magnitude, signed */
	for (int i = 0; i < QK4_0; i++) {
		if (fabsf(x[i]) > amax) {
			amax = fabsf(x[i]);
			max = x[i];
		}
	}
	float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
	y->d = kern_f32_to_f16(d);
	for (int i = 0; i < QK4_0 / 2; i++) {
		int q0 = clampi(rnd(x[i] * id) + 8, 0, 15);
		int q1 = clampi(rnd(x[i + 16] * id) + 8, 0, 15);
		y->qs[i] = (uint8_t)(q0 | (q1 << 4));
	}
}

static void quantize_q4_1(const float *x, struct blk_q4_1 *y)
{
	float mn = x[0], mx = x[0];
	for (int i = 1; i < QK4_1; i++) {
		mn = fminf(mn, x[i]);
		mx = fmaxf(mx, x[i]);
	}
	float d = (mx - mn) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
	y->d = kern_f32_to_f16(d);
	y->m = kern_f32_to_f16(mn);
	for (int i = 0; i < QK4_1 / 2; i++) {
		int q0 = clampi(rnd((x[i] - mn) * id), 0, 15);
		int q1 = clampi(rnd((x[i + 16] - mn) * id), 0, 15);
		y->qs[i] = (uint8_t)(q0 | (q1 << 4));
	}
}

/* Q4_K: per sub-block j, x ~ d*sc_j*q - dmin*m_j with m_j covering the
 * sub-block minimum (clamped to <= 0) and sc_j its range over 15; the 8
 * scales and 8 mins are then quantized to 6 bits against d and dmin. */
static void quantize_q4_k(const float *x, struct blk_q4_k *y)
{
	float scale[8], mins[8], max_scale = 0, max_min = 0;
	for (int j = 0; j < 8; j++) {
		float mn = 0, mx = x[32 * j];
		for (int i = 0; i < 32; i++) {
			mn = fminf(mn, x[32 * j + i]);
			mx = fmaxf(mx, x[32 * j + i]);
		}
		scale[j] = (mx - mn) / 15.0f;
		mins[j] = -mn;
		max_scale = fmaxf(max_scale, scale[j]);
		max_min = fmaxf(max_min, mins[j]);
	}
	float d = max_scale / 63.0f, dmin = max_min / 63.0f;
	y->d = kern_f32_to_f16(d);
	y->dmin = kern_f32_to_f16(dmin);
	float d16 = kern_f16_to_f32(y->d), dmin16 = kern_f16_to_f32(y->dmin);
	uint8_t sc[8], m[8];
	for (int j = 0; j < 8; j++) {
		sc[j] = (uint8_t)(d16 != 0 ? clampi(rnd(scale[j] / d16), 0, 63) : 0);
		m[j] = (uint8_t)(dmin16 != 0 ? clampi(rnd(mins[j] / dmin16), 0, 63) : 0);
	}
	for (int j = 0; j < 4; j++) {
		y->scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
		y->scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
		y->scales[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
	}
	uint8_t q[QK_K];
	for (int j = 0; j < 8; j++) {
		float ds = d16 * sc[j], dm = dmin16 * m[j];
		for (int i = 0; i < 32; i++)
			q[32 * j + i] = (uint8_t)(ds != 0 ? clampi(rnd((x[32 * j + i] + dm) / ds), 0, 15) : 0);
	}
	for (int c = 0; c < 4; c++)
		for (int l = 0; l < 32; l++)
			y->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

/* Q6_K: per 16-element sub-block, symmetric scale max|x|/31; the 16 scales
 * are quantized to int8 against d = max scale / 127. */
static void quantize_q6_k(const float *x, struct blk_q6_k *y)
{
	float scale[16], max_scale = 0;
	for (int j = 0; j < 16; j++) {
		float amax = 0;
		for (int i = 0; i < 16; i++)
			amax = fmaxf(amax, fabsf(x[16 * j + i]));
		scale[j] = amax / 31.0f;
		max_scale = fmaxf(max_scale, scale[j]);
	}
	float d = max_scale / 127.0f;
	y->d = kern_f32_to_f16(d);
	float d16 = kern_f16_to_f32(y->d);
	uint8_t q[QK_K];
	for (int j = 0; j < 16; j++) {
		int sc = d16 != 0 ? clampi(rnd(scale[j] / d16), -127, 127) : 0;
		y->scales[j] = (int8_t)sc;
		float ds = d16 * sc;
		for (int i = 0; i < 16; i++) {
			int v = ds != 0 ? clampi(rnd(x[16 * j + i] / ds), -32, 31) : 0;
			q[16 * j + i] = (uint8_t)(v + 32);
		}
	}
	for (int n = 0; n < 2; n++) {
		for (int l = 0; l < 32; l++) {
			const uint8_t *qq = q + 128 * n + l;
			y->ql[64 * n + l] = (uint8_t)((qq[0] & 0xF) | ((qq[64] & 0xF) << 4));
			y->ql[64 * n + l + 32] = (uint8_t)((qq[32] & 0xF) | ((qq[96] & 0xF) << 4));
			y->qh[32 * n + l] = (uint8_t)((qq[0] >> 4) | ((qq[32] >> 4) << 2) | ((qq[64] >> 4) << 4) |
						     ((qq[96] >> 4) << 6));
		}
	}
}

void kern_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
	uint8_t *p = dst;

	switch (type) {
	case KERN_TYPE_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		return;
	case KERN_TYPE_F16:
		for (int64_t i = 0; i < n; i++) {
			uint16_t h = kern_f32_to_f16(src[i]);
			memcpy(p + 2 * i, &h, 2);
		}
		return;
	case KERN_TYPE_BF16:
		for (int64_t i = 0; i < n; i++) {
			uint16_t h = kern_f32_to_bf16(src[i]);
			memcpy(p + 2 * i, &h, 2);
		}
		return;
	case KERN_TYPE_Q8_0:
		for (int64_t b = 0; b < n / QK8_0; b++)
			quantize_q8_0(src + b * QK8_0, (void *)(p + b * sizeof(struct blk_q8_0)));
		return;
	case KERN_TYPE_Q4_0:
		for (int64_t b = 0; b < n / QK4_0; b++)
			quantize_q4_0(src + b * QK4_0, (void *)(p + b * sizeof(struct blk_q4_0)));
		return;
	case KERN_TYPE_Q4_1:
		for (int64_t b = 0; b < n / QK4_1; b++)
			quantize_q4_1(src + b * QK4_1, (void *)(p + b * sizeof(struct blk_q4_1)));
		return;
	case KERN_TYPE_Q4_K:
		for (int64_t b = 0; b < n / QK_K; b++)
			quantize_q4_k(src + b * QK_K, (void *)(p + b * sizeof(struct blk_q4_k)));
		return;
	case KERN_TYPE_Q6_K:
		for (int64_t b = 0; b < n / QK_K; b++)
			quantize_q6_k(src + b * QK_K, (void *)(p + b * sizeof(struct blk_q6_k)));
		return;
	default:
		return;
	}
}

/* ---------------------------------------------------------------------- */
/* Activation quantization (layout documented in quant.h). */

void kern_act_quantize_row_ref(uint32_t wtype, const float *x, void *dst, int64_t k)
{
	if (wtype == KERN_TYPE_F32 || wtype == KERN_TYPE_F16 || wtype == KERN_TYPE_BF16) {
		memcpy(dst, x, (size_t)k * sizeof(float));
		return;
	}
	struct kern_act_q8 *a = dst;
	for (int64_t b = 0; b < k / 32; b++, x += 32) {
		struct kern_act_q8 blk;
		memset(&blk, 0, sizeof(blk));
		float amax = 0;
		for (int i = 0; i < 32; i++)
			amax = fmaxf(amax, fabsf(x[i]));
		float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
		int sum_lo = 0, sum_hi = 0;
		for (int i = 0; i < 32; i++) {
			int q = clampi(rnd(x[i] * id), -127, 127);
			blk.qs[i] = (int8_t)q;
			if (i < 16)
				sum_lo += q;
			else
				sum_hi += q;
		}
		blk.d = d;
		switch (wtype) {
		case KERN_TYPE_Q4_1:
		case KERN_TYPE_Q4_K:
			blk.s = d * (float)(sum_lo + sum_hi);
			break;
		case KERN_TYPE_Q4_0:
			blk.off[0] = -8 * (sum_lo + sum_hi);
			break;
		case KERN_TYPE_Q8_0:
			blk.off[0] = -128 * (sum_lo + sum_hi);
			break;
		case KERN_TYPE_Q6_K:
			blk.off[0] = -32 * sum_lo;
			blk.off[1] = -32 * sum_hi;
			break;
		default:
			break;
		}
		memcpy(&a[b], &blk, sizeof(blk));
	}
}

/* ---------------------------------------------------------------------- */
/* Matrix product, one (row, token) dot at a time, accumulated in double:
 * per 32-element block, integer dot of weight and activation values, then
 * the block's scales. */

static int dot32(const int *wq, const int8_t *aq, int n)
{
	int s = 0;
	for (int i = 0; i < n; i++)
		s += wq[i] * aq[i];
	return s;
}

static double dot_row_quant(uint32_t wtype, const uint8_t *w, int64_t k, const struct kern_act_q8 *a)
{
	double sum = 0;
	int q[QK_K];

	switch (wtype) {
	case KERN_TYPE_Q8_0:
		for (int64_t b = 0; b < k / 32; b++) {
			const struct blk_q8_0 *x = (const void *)(w + b * sizeof(*x));
			for (int i = 0; i < 32; i++)
				q[i] = x->qs[i];
			sum += (double)kern_f16_to_f32(x->d) * a[b].d * dot32(q, a[b].qs, 32);
		}
		break;
	case KERN_TYPE_Q4_0:
		for (int64_t b = 0; b < k / 32; b++) {
			const struct blk_q4_0 *x = (const void *)(w + b * sizeof(*x));
			for (int i = 0; i < 32; i++)
				q[i] = nib32(x->qs, i) - 8;
			sum += (double)kern_f16_to_f32(x->d) * a[b].d * dot32(q, a[b].qs, 32);
		}
		break;
	case KERN_TYPE_Q4_1:
		for (int64_t b = 0; b < k / 32; b++) {
			const struct blk_q4_1 *x = (const void *)(w + b * sizeof(*x));
			for (int i = 0; i < 32; i++)
				q[i] = nib32(x->qs, i);
			sum += (double)kern_f16_to_f32(x->d) * a[b].d * dot32(q, a[b].qs, 32) +
			       (double)kern_f16_to_f32(x->m) * a[b].s;
		}
		break;
	case KERN_TYPE_Q4_K:
		for (int64_t b = 0; b < k / QK_K; b++) {
			const struct blk_q4_k *x = (const void *)(w + b * sizeof(*x));
			double d = kern_f16_to_f32(x->d), dmin = kern_f16_to_f32(x->dmin);
			for (int i = 0; i < QK_K; i++)
				q[i] = q4k_elem(x, i);
			for (int j = 0; j < 8; j++) {
				const struct kern_act_q8 *ab = &a[b * 8 + j];
				uint8_t sc, m;
				kern_q4k_scale_min(j, x->scales, &sc, &m);
				sum += d * sc * ab->d * dot32(q + 32 * j, ab->qs, 32) - dmin * m * ab->s;
			}
		}
		break;
	case KERN_TYPE_Q6_K:
		for (int64_t b = 0; b < k / QK_K; b++) {
			const struct blk_q6_k *x = (const void *)(w + b * sizeof(*x));
			double d = kern_f16_to_f32(x->d);
			for (int i = 0; i < QK_K; i++)
				q[i] = q6k_elem(x, i) - 32;
			for (int j = 0; j < 16; j++) {
				const struct kern_act_q8 *ab = &a[b * 8 + j / 2];
				sum += d * x->scales[j] * ab->d * dot32(q + 16 * j, ab->qs + 16 * (j % 2), 16);
			}
		}
		break;
	default:
		break;
	}
	return sum;
}

static double dot_row_float(uint32_t wtype, const uint8_t *w, int64_t k, const float *x)
{
	double sum = 0;
	for (int64_t i = 0; i < k; i++) {
		float v;
		uint16_t h;
		if (wtype == KERN_TYPE_F32) {
			memcpy(&v, w + 4 * i, 4);
		} else {
			memcpy(&h, w + 2 * i, 2);
			v = wtype == KERN_TYPE_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
		}
		sum += (double)v * x[i];
	}
	return sum;
}

void kern_matmul_ref(uint32_t wtype, const void *w, size_t w_row_bytes, int64_t k, const void *act,
		     size_t act_row_bytes, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	const bool is_float = wtype == KERN_TYPE_F32 || wtype == KERN_TYPE_F16 || wtype == KERN_TYPE_BF16;

	for (int t = 0; t < n_tok; t++) {
		const void *a = (const uint8_t *)act + (size_t)t * act_row_bytes;
		for (int64_t r = r0; r < r1; r++) {
			const uint8_t *wr = (const uint8_t *)w + (size_t)r * w_row_bytes;
			double v = is_float ? dot_row_float(wtype, wr, k, a) : dot_row_quant(wtype, wr, k, a);
			y[(int64_t)t * ldy + r] = (float)v;
		}
	}
}
