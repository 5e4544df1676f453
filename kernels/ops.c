/*
 * ops.c: element-wise kernels and paged attention for the CPU backend.
 *
 * Vector paths: AVX-512 (16 lanes) when compiled with __AVX512F__, AVX2+FMA
 * (8 lanes) otherwise, scalar as the last resort. Softmax and SiLU use a
 * vector exp (range reduction to [-ln2/2, ln2/2], degree-6 polynomial,
 * relative error below 2e-7 on the range used).
 */
#include "kernels/ops.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/quant.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---- vector exp ---- */
#if defined(__AVX512F__)
#define VL 16
typedef __m512 vf;
static inline vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
static inline vf v_set1(float x) { return _mm512_set1_ps(x); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline float v_hsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline float v_hmax(vf a) { return _mm512_reduce_max_ps(a); }
static inline vf v_load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline void v_store_f16(uint16_t *p, vf x)
{
	_mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}
static inline vf v_exp(vf x)
{
	x = _mm512_max_ps(_mm512_min_ps(x, v_set1(88.3762626647949f)), v_set1(-87.3365447504019f));
	vf n = _mm512_roundscale_ps(v_mul(x, v_set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
	vf r = v_fma(n, v_set1(-0.693359375f), x);
	r = v_fma(n, v_set1(2.12194440e-4f), r);
	vf p = v_set1(1.f / 720);
	p = v_fma(p, r, v_set1(1.f / 120));
	p = v_fma(p, r, v_set1(1.f / 24));
	p = v_fma(p, r, v_set1(1.f / 6));
	p = v_fma(p, r, v_set1(0.5f));
	p = v_fma(p, r, v_set1(1.0f));
	p = v_fma(p, r, v_set1(1.0f));
	return _mm512_scalef_ps(p, n);
}
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define VL 8
typedef __m256 vf;
static inline vf v_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_store(float *p, vf x) { _mm256_storeu_ps(p, x); }
static inline vf v_set1(float x) { return _mm256_set1_ps(x); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline float v_hsum(vf a)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}
static inline float v_hmax(vf a)
{
	__m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	s = _mm_max_ps(s, _mm_movehl_ps(s, s));
	s = _mm_max_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}
static inline vf v_load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline void v_store_f16(uint16_t *p, vf x)
{
	_mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}
static inline vf v_exp(vf x)
{
	x = _mm256_max_ps(_mm256_min_ps(x, v_set1(88.3762626647949f)), v_set1(-87.3365447504019f));
	vf n = _mm256_round_ps(v_mul(x, v_set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	vf r = v_fma(n, v_set1(-0.693359375f), x);
	r = v_fma(n, v_set1(2.12194440e-4f), r);
	vf p = v_set1(1.f / 720);
	p = v_fma(p, r, v_set1(1.f / 120));
	p = v_fma(p, r, v_set1(1.f / 24));
	p = v_fma(p, r, v_set1(1.f / 6));
	p = v_fma(p, r, v_set1(0.5f));
	p = v_fma(p, r, v_set1(1.0f));
	p = v_fma(p, r, v_set1(1.0f));
	/* 2^n by building the exponent; n in [-126, 127] after the clamp. */
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
	return v_mul(p, _mm256_castsi256_ps(e));
}
#else
#define VL 0
#endif

/* ---- element-wise ---- */
void kern_rmsnorm(const float *x, const float *w, float *y, int n, float eps)
{
	int i = 0;
	float ss = 0;
#if VL
	vf acc = v_set1(0);
	for (; i + VL <= n; i += VL) {
		vf a = v_load(x + i);
		acc = v_fma(a, a, acc);
	}
	ss = v_hsum(acc);
#endif
	for (; i < n; i++)
		ss += x[i] * x[i];
	float s = 1.0f / sqrtf(ss / (float)n + eps);
	i = 0;
#if VL
	vf vs = v_set1(s);
	for (; i + VL <= n; i += VL)
		v_store(y + i, v_mul(v_mul(v_load(x + i), vs), v_load(w + i)));
#endif
	for (; i < n; i++)
		y[i] = x[i] * s * w[i];
}

void kern_add(float *x, const float *y, int n)
{
	int i = 0;
#if VL
	for (; i + VL <= n; i += VL)
		v_store(x + i, v_add(v_load(x + i), v_load(y + i)));
#endif
	for (; i < n; i++)
		x[i] += y[i];
}

void kern_silu_mul(float *g, const float *u, int n)
{
	int i = 0;
#if VL
	vf one = v_set1(1.0f), neg = v_set1(-1.0f);
	for (; i + VL <= n; i += VL) {
		vf a = v_load(g + i);
		vf s = v_div(a, v_add(one, v_exp(v_mul(a, neg))));
		v_store(g + i, v_mul(s, v_load(u + i)));
	}
#endif
	for (; i < n; i++)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_rope(float *x, int n_heads, int hd, const float *cs, int neox)
{
	int half = hd / 2;
	const float *c = cs, *s = cs + half;
	for (int h = 0; h < n_heads; h++) {
		float *v = x + (size_t)h * hd;
		if (neox) {
			for (int i = 0; i < half; i++) {
				float a = v[i], b = v[i + half];
				v[i] = a * c[i] - b * s[i];
				v[i + half] = a * s[i] + b * c[i];
			}
		} else {
			for (int i = 0; i < half; i++) {
				float a = v[2 * i], b = v[2 * i + 1];
				v[2 * i] = a * c[i] - b * s[i];
				v[2 * i + 1] = a * s[i] + b * c[i];
			}
		}
	}
}

void kern_f32_to_f16_row(const float *x, uint16_t *y, int n)
{
	int i = 0;
#if VL
	for (; i + VL <= n; i += VL)
		v_store_f16(y + i, v_load(x + i));
#endif
	for (; i < n; i++)
		y[i] = kern_f32_to_f16(x[i]);
}

/* ---- attention ---- */
static inline float dot_f32_f16(const float *q, const uint16_t *k, int hd)
{
	int i = 0;
	float s = 0;
#if VL
	vf acc = v_set1(0);
	for (; i + VL <= hd; i += VL)
		acc = v_fma(v_load(q + i), v_load_f16(k + i), acc);
	s = v_hsum(acc);
#endif
	for (; i < hd; i++)
		s += q[i] * kern_f16_to_f32(k[i]);
	return s;
}

/* acc = acc * c + p * v */
static inline void scale_axpy_f16(float *acc, float c, float p, const uint16_t *v, int hd)
{
	int i = 0;
#if VL
	vf vc = v_set1(c), vp = v_set1(p);
	for (; i + VL <= hd; i += VL)
		v_store(acc + i, v_fma(vp, v_load_f16(v + i), v_mul(v_load(acc + i), vc)));
#endif
	for (; i < hd; i++)
		acc[i] = acc[i] * c + p * kern_f16_to_f32(v[i]);
}

static inline void exp_sub_inplace(float *s, int n, float m)
{
	int i = 0;
#if VL
	vf vm = v_set1(-m);
	for (; i + VL <= n; i += VL)
		v_store(s + i, v_exp(v_add(v_load(s + i), vm)));
#endif
	for (; i < n; i++)
		s[i] = expf(s[i] - m);
}

void kern_attn(const float *q, int g, int hd, float scale, const uint16_t *k, const uint16_t *v,
	       size_t blk_stride, const int32_t *block_table, int bs, int n_pos, float *out)
{
	float sc[4096];
	float m[64], l[64];
	for (int h = 0; h < g; h++) {
		m[h] = -FLT_MAX;
		l[h] = 0;
		memset(out + (size_t)h * hd, 0, sizeof(float) * (size_t)hd);
	}
	for (int p0 = 0, b = 0; p0 < n_pos; p0 += bs, b++) {
		int n = n_pos - p0 < bs ? n_pos - p0 : bs;
		const uint16_t *kb = k + (size_t)block_table[b] * blk_stride;
		const uint16_t *vb = v + (size_t)block_table[b] * blk_stride;
		for (int h = 0; h < g; h++) {
			float *s = sc + h * bs;
			const float *qh = q + (size_t)h * hd;
			float mx = m[h];
			for (int j = 0; j < n; j++) {
				s[j] = dot_f32_f16(qh, kb + (size_t)j * hd, hd) * scale;
				mx = s[j] > mx ? s[j] : mx;
			}
			float corr = expf(m[h] - mx);
			exp_sub_inplace(s, n, mx);
			float sum = 0;
			for (int j = 0; j < n; j++)
				sum += s[j];
			l[h] = l[h] * corr + sum;
			m[h] = mx;
			float *oh = out + (size_t)h * hd;
			/* first row rescales the accumulator, the rest add */
			scale_axpy_f16(oh, corr, s[0], vb, hd);
			for (int j = 1; j < n; j++)
				scale_axpy_f16(oh, 1.0f, s[j], vb + (size_t)j * hd, hd);
		}
	}
	for (int h = 0; h < g; h++) {
		float inv = l[h] > 0 ? 1.0f / l[h] : 0.0f;
		float *oh = out + (size_t)h * hd;
		for (int i = 0; i < hd; i++)
			oh[i] *= inv;
	}
}

/* Plain two-pass softmax in double precision, written from the definition. */
void kern_attn_ref(const float *q, int g, int hd, float scale, const uint16_t *k, const uint16_t *v,
		   size_t blk_stride, const int32_t *block_table, int bs, int n_pos, float *out)
{
	for (int h = 0; h < g; h++) {
		const float *qh = q + (size_t)h * hd;
		double mx = -1e300, sum = 0;
		for (int p = 0; p < n_pos; p++) {
			const uint16_t *kp = k + (size_t)block_table[p / bs] * blk_stride + (size_t)(p % bs) * hd;
			double d = 0;
			for (int i = 0; i < hd; i++)
				d += (double)qh[i] * kern_f16_to_f32(kp[i]);
			d *= scale;
			mx = d > mx ? d : mx;
		}
		for (int i = 0; i < hd; i++)
			out[(size_t)h * hd + i] = 0;
		double acc[512] = {0};
		for (int p = 0; p < n_pos; p++) {
			const uint16_t *kp = k + (size_t)block_table[p / bs] * blk_stride + (size_t)(p % bs) * hd;
			const uint16_t *vp = v + (size_t)block_table[p / bs] * blk_stride + (size_t)(p % bs) * hd;
			double d = 0;
			for (int i = 0; i < hd; i++)
				d += (double)qh[i] * kern_f16_to_f32(kp[i]);
			double e = exp(d * scale - mx);
			sum += e;
			for (int i = 0; i < hd; i++)
				acc[i] += e * kern_f16_to_f32(vp[i]);
		}
		for (int i = 0; i < hd; i++)
			out[(size_t)h * hd + i] = (float)(acc[i] / sum);
	}
}
