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

/* ---- reductions ---- */
int32_t kern_argmax(const float *x, int32_t n)
{
	if (n <= 0)
		return 0;
	/* Pass 1: the maximum (NaN-free lanes win: max(a, b) with a NaN in a
	 * returns b). Pass 2: its first index. */
	float m = x[0] == x[0] ? x[0] : -INFINITY;
	int32_t i = 0;
#if VL
	vf vm = v_set1(m);
	for (; i + VL <= n; i += VL)
		vm = v_max(v_load(x + i), vm);
	m = v_hmax(vm);
#endif
	for (; i < n; i++)
		m = x[i] > m ? x[i] : m;
	for (i = 0; i < n; i++)
		if (x[i] == m)
			return i;
	return 0;
}

/* Whether any of p[0..16) is above thr (false for NaNs). */
static inline bool any_above16(const float *p, float thr)
{
#if defined(__AVX512F__)
	return _mm512_cmp_ps_mask(_mm512_loadu_ps(p), _mm512_set1_ps(thr), _CMP_GT_OQ) != 0;
#elif defined(__AVX2__)
	__m256 t = _mm256_set1_ps(thr);
	return _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(_mm256_loadu_ps(p), t, _CMP_GT_OQ),
					       _mm256_cmp_ps(_mm256_loadu_ps(p + 8), t, _CMP_GT_OQ))) != 0;
#else
	int above = 0;
	for (int j = 0; j < 16; j++)
		above |= p[j] > thr;
	return above;
#endif
}

/* Insertion into a sorted head: O(n) for random rows (most elements lose
 * to the current K-th at once), O(n K) at worst (ascending rows). Once the
 * head is full and its K-th is a number, a block of 16 with none above it
 * is passed over by one vector compare (float order is the keys' order for
 * numbers, and a NaN compares false: it loses, as its key does). */
void kern_top_select(const float *x, int32_t n, struct kern_top *out)
{
	int32_t k = n < KERN_TOP_K ? (n > 0 ? n : 0) : KERN_TOP_K, have = 0;
	uint32_t key[KERN_TOP_K];
	for (int32_t i = 0; i < n; i++) {
		if (have == k && (i & 15) == 0 && i + 16 <= n && out->logit[k - 1] == out->logit[k - 1] &&
		    !any_above16(x + i, out->logit[k - 1])) {
			i += 15;
			continue;
		}
		float v = x[i];
		uint32_t kv = kern_top_key(v);
		if (have == k && kv <= key[k - 1])
			continue; /* not above the K-th (a tie loses: its id is higher) */
		int32_t j = have < k ? have++ : k - 1;
		while (j > 0 && key[j - 1] < kv) {
			key[j] = key[j - 1];
			out->id[j] = out->id[j - 1];
			out->logit[j] = out->logit[j - 1];
			j--;
		}
		key[j] = kv;
		out->id[j] = i;
		out->logit[j] = v;
	}
	out->n = k;
}

void kern_top_row(const float *x, int32_t n, float inv_t, struct kern_top *out)
{
	kern_top_select(x, n, out);
	double m = -INFINITY;
	bool nan = false;
	for (int32_t i = 0; i < n; i++) {
		float v = x[i];
		if (v != v)
			nan = true;
		else if (v > m)
			m = v;
	}
	double sum = 0, sum_t = 0;
	if (!nan && m > -INFINITY)
		for (int32_t i = 0; i < n; i++) {
			sum += exp((double)x[i] - m);
			sum_t += exp(((double)x[i] - m) * inv_t);
		}
	out->lse = nan ? NAN : m > -INFINITY ? (float)(m + log(sum)) : -INFINITY;
	out->lz = nan ? NAN : m > -INFINITY ? (float)log(sum) : -INFINITY;
	out->lz_t = nan ? NAN : m > -INFINITY ? (float)log(sum_t) : -INFINITY;
}

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

void kern_exp_shift(const float *x, float *y, int32_t n, float shift, float scale)
{
	int32_t i = 0;
#if VL
	vf vs = v_set1(-shift), vk = v_set1(scale);
	for (; i + VL <= n; i += VL)
		v_store(y + i, v_exp(v_mul(v_add(v_load(x + i), vs), vk)));
#endif
	for (; i < n; i++)
		y[i] = expf((x[i] - shift) * scale);
}

/* ---- attention ---- */

/* s[i] = exp(s[i] - m) */
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

/*
 * Scores of up to 4 queries against a converted K^T block (hd x bs floats):
 * s[u][0..bs). Each query sums over d in four interleaved partial sums
 * (d mod 4), added as (p0 + p1) + (p2 + p3): sixteen independent FMA chains
 * for four queries hide the FMA latency, and a query's arithmetic does not
 * depend on which other queries share the call.
 */
static inline void attn_scores(const float *const *qv, int nq, const float *kt, int hd, int bs, float scale,
			       float *const *s)
{
	int j = 0;
#if VL
	for (; j + VL <= bs; j += VL) {
		vf acc[4][4];
		for (int u = 0; u < 4; u++)
			for (int x = 0; x < 4; x++)
				acc[u][x] = v_set1(0);
		int d = 0;
		for (; d + 4 <= hd; d += 4) {
			vf k0 = v_load(kt + (size_t)d * bs + j), k1 = v_load(kt + (size_t)(d + 1) * bs + j);
			vf k2 = v_load(kt + (size_t)(d + 2) * bs + j), k3 = v_load(kt + (size_t)(d + 3) * bs + j);
			for (int u = 0; u < nq; u++) {
				acc[u][0] = v_fma(v_set1(qv[u][d]), k0, acc[u][0]);
				acc[u][1] = v_fma(v_set1(qv[u][d + 1]), k1, acc[u][1]);
				acc[u][2] = v_fma(v_set1(qv[u][d + 2]), k2, acc[u][2]);
				acc[u][3] = v_fma(v_set1(qv[u][d + 3]), k3, acc[u][3]);
			}
		}
		for (; d < hd; d++) {
			vf k0 = v_load(kt + (size_t)d * bs + j);
			for (int u = 0; u < nq; u++)
				acc[u][0] = v_fma(v_set1(qv[u][d]), k0, acc[u][0]);
		}
		for (int u = 0; u < nq; u++) {
			vf t = v_add(v_add(acc[u][0], acc[u][1]), v_add(acc[u][2], acc[u][3]));
			v_store(s[u] + j, v_mul(t, v_set1(scale)));
		}
	}
#endif
	for (; j < bs; j++)
		for (int u = 0; u < nq; u++) {
			float p[4] = {0, 0, 0, 0};
			int d = 0;
			for (; d + 4 <= hd; d += 4)
				for (int x = 0; x < 4; x++)
					p[x] = fmaf(qv[u][d + x], kt[(size_t)(d + x) * bs + j], p[x]);
			for (; d < hd; d++)
				p[0] = fmaf(qv[u][d], kt[(size_t)d * bs + j], p[0]);
			s[u][j] = ((p[0] + p[1]) + (p[2] + p[3])) * scale;
		}
}

/* o = o * c + sum_j p[j] * vb[j]  (vb: n rows of hd floats); even and odd
 * rows go to two chains, added at the end. */
static inline void attn_accumulate(float *o, float c, const float *p, const float *vb, int n, int hd)
{
	int d = 0;
#if VL
	for (; d + 2 * VL <= hd; d += 2 * VL) {
		vf a0 = v_mul(v_load(o + d), v_set1(c)), a1 = v_set1(0);
		vf b0 = v_mul(v_load(o + d + VL), v_set1(c)), b1 = v_set1(0);
		int j = 0;
		for (; j + 2 <= n; j += 2) {
			vf p0 = v_set1(p[j]), p1 = v_set1(p[j + 1]);
			a0 = v_fma(p0, v_load(vb + (size_t)j * hd + d), a0);
			b0 = v_fma(p0, v_load(vb + (size_t)j * hd + d + VL), b0);
			a1 = v_fma(p1, v_load(vb + (size_t)(j + 1) * hd + d), a1);
			b1 = v_fma(p1, v_load(vb + (size_t)(j + 1) * hd + d + VL), b1);
		}
		if (j < n) {
			vf p0 = v_set1(p[j]);
			a0 = v_fma(p0, v_load(vb + (size_t)j * hd + d), a0);
			b0 = v_fma(p0, v_load(vb + (size_t)j * hd + d + VL), b0);
		}
		v_store(o + d, v_add(a0, a1));
		v_store(o + d + VL, v_add(b0, b1));
	}
	for (; d + VL <= hd; d += VL) {
		vf a0 = v_mul(v_load(o + d), v_set1(c)), a1 = v_set1(0);
		int j = 0;
		for (; j + 2 <= n; j += 2) {
			a0 = v_fma(v_set1(p[j]), v_load(vb + (size_t)j * hd + d), a0);
			a1 = v_fma(v_set1(p[j + 1]), v_load(vb + (size_t)(j + 1) * hd + d), a1);
		}
		if (j < n)
			a0 = v_fma(v_set1(p[j]), v_load(vb + (size_t)j * hd + d), a0);
		v_store(o + d, v_add(a0, a1));
	}
#endif
	for (; d < hd; d++) {
		float a0 = o[d] * c, a1 = 0;
		int j = 0;
		for (; j + 2 <= n; j += 2) {
			a0 = fmaf(p[j], vb[(size_t)j * hd + d], a0);
			a1 = fmaf(p[j + 1], vb[(size_t)(j + 1) * hd + d], a1);
		}
		if (j < n)
			a0 = fmaf(p[j], vb[(size_t)j * hd + d], a0);
		o[d] = a0 + a1;
	}
}

/*
 * One block's softmax numerators: *mx = max(m_prev, s[0..n)), s[r] =
 * exp(s[r] - *mx), *sum = their sum. On the vector path the rows past n up
 * to the next vector are set to -FLT_MAX first (their exp is below 1e-37 and
 * never used as a weight); s must have room for them (bs % VL == 0).
 */
static inline void softmax_block(float *s, int n, int bs, float m_prev, float *mx_out, float *sum_out)
{
	float mx = m_prev, sum = 0;
#if VL
	if (bs % VL == 0) {
		int nv = (n + VL - 1) / VL * VL;
		for (int r = n; r < nv; r++)
			s[r] = -FLT_MAX;
		vf vm = v_set1(m_prev);
		for (int r = 0; r < nv; r += VL)
			vm = v_max(vm, v_load(s + r));
		mx = v_hmax(vm);
		exp_sub_inplace(s, nv, mx);
		vf acc = v_set1(0);
		for (int r = 0; r < nv; r += VL)
			acc = v_add(acc, v_load(s + r));
		*mx_out = mx;
		*sum_out = v_hsum(acc);
		return;
	}
#endif
	for (int r = 0; r < n; r++)
		mx = s[r] > mx ? s[r] : mx;
	exp_sub_inplace(s, n, mx);
	for (int r = 0; r < n; r++)
		sum += s[r];
	*mx_out = mx;
	*sum_out = sum;
}

static inline void f16_to_f32_row(const uint16_t *x, float *y, int n)
{
	int i = 0;
#if VL
	for (; i + VL <= n; i += VL)
		v_store(y + i, v_load_f16(x + i));
#endif
	for (; i < n; i++)
		y[i] = kern_f16_to_f32(x[i]);
}

void kern_attn(const float *q, size_t q_stride, int n_tok, int g, int hd, float scale, const int32_t *n_pos,
	       const uint16_t *k, const uint16_t *v, size_t blk_stride, const int32_t *block_table, int bs,
	       float *out, size_t out_stride)
{
	float kt[8192], vb[8192], sc[256 * 32];
	float m[256], l[256]; /* per query: running max and sum */
	const float *qp[256];
	float *op[256], *sp[256];
	int nq = n_tok * g, max_pos = 0;
	for (int i = 0; i < n_tok; i++) {
		max_pos = n_pos[i] > max_pos ? n_pos[i] : max_pos;
		for (int j = 0; j < g; j++) {
			int qi = i * g + j;
			qp[qi] = q + (size_t)i * q_stride + (size_t)j * hd;
			op[qi] = out + (size_t)i * out_stride + (size_t)j * hd;
			m[qi] = -FLT_MAX;
			l[qi] = 0;
			memset(op[qi], 0, sizeof(float) * (size_t)hd);
		}
	}
	/* Blocks are processed in chunks of C positions (several blocks when
	 * they are small), so the per-chunk softmax bookkeeping is amortized
	 * over up to 64 positions. Chunks start at multiples of C from position
	 * 0: a query's arithmetic depends on its position only. */
	int nbc = 64 / bs > 0 ? 64 / bs : 1;
	while (nbc > 1 && nbc * bs * hd > 8192)
		nbc--;
	const int C = nbc * bs;
	const int sstride = C;
	const int rows = 8192 / sstride; /* score rows that fit in sc */
	for (int p0 = 0, b0 = 0; p0 < max_pos; p0 += C, b0 += nbc) {
		int nc = max_pos - p0 < C ? max_pos - p0 : C; /* rows any query of the tile uses */
		for (int bi = 0; bi * bs < nc; bi++) {
			const uint16_t *kb = k + (size_t)block_table[b0 + bi] * blk_stride;
			const uint16_t *vv = v + (size_t)block_table[b0 + bi] * blk_stride;
			int nr = nc - bi * bs < bs ? nc - bi * bs : bs;
			for (int d = 0; d < hd; d++)
				f16_to_f32_row(kb + (size_t)d * bs, kt + (size_t)d * C + (size_t)bi * bs, bs);
			f16_to_f32_row(vv, vb + (size_t)bi * bs * hd, nr * hd);
		}
		/* Rows of K^T past the last block of the chunk hold stale values;
		 * their scores are computed and never used. Zero them once so no
		 * NaN can appear there. */
		for (int bi = (nc + bs - 1) / bs; bi < nbc; bi++)
			for (int d = 0; d < hd; d++)
				memset(kt + (size_t)d * C + (size_t)bi * bs, 0, sizeof(float) * (size_t)bs);
		/* Scores of the queries that see this chunk, four at a time. */
		int na = 0;
		const float *qa[256];
		int ia[256];
		for (int qi = 0; qi < nq; qi++)
			if (n_pos[qi / g] > p0) {
				qa[na] = qp[qi];
				ia[na] = qi;
				sp[na] = sc + (size_t)(na % rows) * sstride;
				na++;
			}
		for (int u0 = 0; u0 < na;) {
			int chunk = na - u0 < rows ? na - u0 : rows;
			for (int u = u0; u < u0 + chunk; u += 4)
				attn_scores(qa + u, u0 + chunk - u < 4 ? u0 + chunk - u : 4, kt, hd, C, scale, sp + u);
			for (int u = u0; u < u0 + chunk; u++) {
				int qi = ia[u];
				float *sr = sp[u];
				int n = n_pos[qi / g] - p0 < C ? n_pos[qi / g] - p0 : C; /* rows this query sees */
				float mx, sum;
				softmax_block(sr, n, C, m[qi], &mx, &sum);
				float corr = expf(m[qi] - mx);
				l[qi] = l[qi] * corr + sum;
				m[qi] = mx;
				attn_accumulate(op[qi], corr, sr, vb, n, hd);
			}
			u0 += chunk;
		}
	}
	for (int qi = 0; qi < nq; qi++) {
		float inv = l[qi] > 0 ? 1.0f / l[qi] : 0.0f;
		int d = 0;
#if VL
		for (; d + VL <= hd; d += VL)
			v_store(op[qi] + d, v_mul(v_load(op[qi] + d), v_set1(inv)));
#endif
		for (; d < hd; d++)
			op[qi][d] *= inv;
	}
}

void kern_attn_ref(const float *q, size_t q_stride, int n_tok, int g, int hd, float scale, const int32_t *n_pos,
		   const uint16_t *k, const uint16_t *v, size_t blk_stride, const int32_t *block_table, int bs,
		   float *out, size_t out_stride)
{
	for (int i = 0; i < n_tok; i++)
		for (int j = 0; j < g; j++) {
			const float *qh = q + (size_t)i * q_stride + (size_t)j * hd;
			float *oh = out + (size_t)i * out_stride + (size_t)j * hd;
			double mx = -1e300, sum = 0, acc[512] = {0};
			for (int pass = 0; pass < 2; pass++)
				for (int p = 0; p < n_pos[i]; p++) {
					size_t base = (size_t)block_table[p / bs] * blk_stride;
					int r = p % bs;
					double d = 0;
					for (int x = 0; x < hd; x++)
						d += (double)qh[x] * kern_f16_to_f32(k[base + (size_t)x * bs + r]);
					d *= scale;
					if (pass == 0) {
						mx = d > mx ? d : mx;
						continue;
					}
					double e = exp(d - mx);
					sum += e;
					for (int x = 0; x < hd; x++)
						acc[x] += e * kern_f16_to_f32(v[base + (size_t)r * hd + x]);
				}
			for (int x = 0; x < hd; x++)
				oh[x] = (float)(acc[x] / sum);
		}
}
