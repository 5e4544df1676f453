/*
 * test_ops: the CPU backend's element-wise and attention kernels against
 * scalar references on random inputs of awkward sizes.
 * Tolerances: rmsnorm, add, rope 1e-5 relative (same arithmetic, different
 * summation order); silu 2e-6 relative (vector exp, <2e-7 rel error, times
 * a few ulps); attention 2e-4 relative to max |out| (online vs two-pass
 * softmax in f32 vs double, f16 K/V identical on both sides), and bitwise
 * equal whether a token is computed alone or in a tile.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "tests/check.h"


static uint64_t g_rng = 0x1234567;
static float frand(void) /* [-1, 1) */
{
	g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
	return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void test_rmsnorm(void)
{
	int sizes[] = {1, 3, 15, 16, 17, 33, 576, 1000};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		int n = sizes[k];
		float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
		double ss = 0;
		for (int i = 0; i < n; i++) {
			x[i] = frand() * 3;
			w[i] = 1 + frand() * 0.5f;
			ss += (double)x[i] * x[i];
			y[i] = NAN;
		}
		kern_rmsnorm(x, w, y, n, 1e-5f);
		double s = 1.0 / sqrt(ss / n + 1e-5);
		for (int i = 0; i < n; i++) {
			double ref = x[i] * s * w[i];
			CHECK(fabs(y[i] - ref) <= 1e-5 * fabs(ref) + 1e-6, "rmsnorm n=%d i=%d %g vs %g", n, i, y[i], ref);
		}
		free(x);
		free(w);
		free(y);
	}
}

static void test_silu_add(void)
{
	int n = 1537;
	float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *g0 = malloc(sizeof(float) * n);
	for (int i = 0; i < n; i++) {
		g[i] = g0[i] = frand() * 20; /* covers exp over/underflow regions */
		u[i] = frand();
	}
	kern_silu_mul(g, u, n);
	for (int i = 0; i < n; i++) {
		double ref = g0[i] / (1.0 + exp(-(double)g0[i])) * u[i];
		CHECK(fabs(g[i] - ref) <= 2e-6 * fabs(ref) + 1e-7, "silu i=%d x=%g: %g vs %g", i, g0[i], g[i], ref);
	}
	for (int i = 0; i < n; i++)
		g[i] = g0[i];
	kern_add(g, u, n);
	for (int i = 0; i < n; i++)
		CHECK(g[i] == g0[i] + u[i], "add i=%d", i);
	free(g);
	free(u);
	free(g0);
}

static void test_rope(void)
{
	int hd = 64, nh = 3;
	float x[192], x0[192], cs[64];
	for (int i = 0; i < hd / 2; i++) {
		double a = 17 * pow(10000.0, -2.0 * i / hd);
		cs[i] = (float)cos(a);
		cs[hd / 2 + i] = (float)sin(a);
	}
	for (int neox = 0; neox < 2; neox++) {
		for (int i = 0; i < nh * hd; i++)
			x[i] = x0[i] = frand();
		kern_rope(x, nh, hd, cs, neox);
		for (int h = 0; h < nh; h++)
			for (int i = 0; i < hd / 2; i++) {
				int a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
				double xa = x0[h * hd + a], xb = x0[h * hd + b];
				double ra = xa * cs[i] - xb * cs[hd / 2 + i], rb = xa * cs[hd / 2 + i] + xb * cs[i];
				CHECK(fabs(x[h * hd + a] - ra) < 1e-6 && fabs(x[h * hd + b] - rb) < 1e-6, "rope neox=%d h=%d i=%d",
				      neox, h, i);
			}
		/* Rotation preserves the norm of each pair. */
	}
}

/* Tiles of several tokens with causal limits; scrambled block tables;
 * K stored transposed per block. Also checks that a query's output does not
 * depend on the tile it is computed in (bitwise). */
static void test_attn(void)
{
	int hds[] = {64, 40, 128, 6};
	int gs[] = {1, 3, 4, 7};
	int bss[] = {16, 1, 5, 32};
	int max_pos = 333;
	for (int ci = 0; ci < 4; ci++) {
		int hd = hds[ci], g = gs[ci], bs = bss[ci];
		int n_blocks = (max_pos + bs - 1) / bs + 3;
		size_t stride = (size_t)bs * hd * 2; /* room for two kv heads per block; the test uses the first */
		uint16_t *k = malloc(sizeof(uint16_t) * stride * n_blocks), *v = malloc(sizeof(uint16_t) * stride * n_blocks);
		for (size_t i = 0; i < stride * n_blocks; i++) {
			k[i] = kern_f32_to_f16(frand() * 2);
			v[i] = kern_f32_to_f16(frand());
		}
		int32_t *table = malloc(sizeof(int32_t) * n_blocks);
		for (int i = 0; i < n_blocks; i++) /* scrambled physical order */
			table[i] = (i * 7 + 3) % n_blocks;
		int n_tok = 4;
		size_t qs = (size_t)g * hd * 2; /* token stride wider than the group */
		float *q = malloc(sizeof(float) * qs * n_tok), *o = malloc(sizeof(float) * qs * n_tok);
		float *r = malloc(sizeof(float) * qs * n_tok), *o1 = malloc(sizeof(float) * qs);
		for (size_t i = 0; i < qs * n_tok; i++)
			q[i] = frand();
		int32_t npos_sets[][4] = {{1, 2, 3, 4}, {14, 15, 16, 17}, {97, 98, 99, 100}, {330, 331, 332, 333}, {5, 5, 5, 5}};
		for (size_t pi = 0; pi < sizeof(npos_sets) / sizeof(npos_sets[0]); pi++) {
			const int32_t *np = npos_sets[pi];
			for (size_t i = 0; i < qs * n_tok; i++)
				o[i] = NAN;
			kern_attn(q, qs, n_tok, g, hd, 1.0f / sqrtf((float)hd), np, k, v, stride, table, bs, o, qs);
			kern_attn_ref(q, qs, n_tok, g, hd, 1.0f / sqrtf((float)hd), np, k, v, stride, table, bs, r, qs);
			for (int t = 0; t < n_tok; t++) {
				float mx = 0;
				for (int i = 0; i < g * hd; i++)
					mx = fmaxf(mx, fabsf(r[t * qs + i]));
				for (int i = 0; i < g * hd; i++) {
					float a = o[t * qs + i], b = r[t * qs + i];
					CHECK(isfinite(a) && fabsf(a - b) <= 2e-4f * mx + 1e-6f,
					      "attn hd=%d g=%d bs=%d n_pos=%d i=%d: %g vs %g", hd, g, bs, np[t], i, a, b);
				}
				/* The same token alone gives the same bits. */
				kern_attn(q + t * qs, qs, 1, g, hd, 1.0f / sqrtf((float)hd), np + t, k, v, stride, table, bs, o1, qs);
				CHECK(memcmp(o1, o + t * qs, sizeof(float) * (size_t)g * hd) == 0,
				      "attn hd=%d g=%d bs=%d: token %d differs alone vs in a tile", hd, g, bs, t);
			}
		}
		free(k);
		free(v);
		free(table);
		free(q);
		free(o);
		free(r);
		free(o1);
	}
}

/* kern_argmax: first index of the maximum, NaNs never win, any length. */
static void test_argmax(void)
{
	int sizes[] = {1, 2, 15, 16, 17, 100, 49152, 50257};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		int n = sizes[k];
		float *x = malloc(sizeof(float) * n);
		for (int trial = 0; trial < 20; trial++) {
			for (int i = 0; i < n; i++)
				x[i] = frand() * 10;
			int want = (int)((unsigned)(trial * 7919 + n) % (unsigned)n);
			x[want] = 20.0f;
			if (n > 3 && trial % 3 == 0) { /* a tie later on, and NaNs */
				x[n - 1] = 20.0f;
				x[0] = want == 0 ? 20.0f : NAN;
			}
			int got = kern_argmax(x, n);
			int ref = 0;
			for (int i = 1; i < n; i++)
				if (x[i] > x[ref] || (x[ref] != x[ref] && x[i] == x[i]))
					ref = i;
			CHECK(got == ref && got == want, "argmax n=%d trial=%d: %d, expected %d", n, trial, got, want);
		}
		free(x);
	}
	float nans[3] = {NAN, NAN, NAN};
	CHECK(kern_argmax(nans, 3) == 0, "argmax of NaNs is 0");
}

/* Sort order of the brute force below: key descending, then id ascending. */
static const float *g_top_x;
static int top_cmp(const void *a, const void *b)
{
	int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
	uint32_t ki = kern_top_key(g_top_x[i]), kj = kern_top_key(g_top_x[j]);
	if (ki != kj)
		return ki > kj ? -1 : 1;
	return i < j ? -1 : 1;
}

/*
 * kern_top_row against a full sort of the row (qsort by kern_top_key, then
 * id), its lse, lz and lz_t (at an inverse temperature from 0.5 to 4) against
 * log(sum(exp)) in long double: random rows, rows
 * of few distinct values (ties across the 64th place), NaNs, signed zeros
 * and -inf, ascending rows, rows shorter than 64.
 */
static void test_top(void)
{
	int sizes[] = {1, 5, 63, 64, 65, 1000, 49152};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		int n = sizes[k];
		float *x = malloc(sizeof(float) * n);
		int32_t *ord = malloc(sizeof(int32_t) * n);
		for (int kind = 0; kind < 5; kind++) {
			for (int i = 0; i < n; i++) {
				switch (kind) {
				case 0: x[i] = frand() * 12; break;
				case 1: x[i] = (float)(int)(frand() * 4); break; /* 7 values, -0 among them */
				case 2: x[i] = i % 4 == 1 ? NAN : frand() * 3; break;
				case 3: x[i] = i % 3 == 0 ? -0.0f : i % 3 == 1 ? 0.0f : -INFINITY; break;
				default: x[i] = (float)i * 0.01f - 5; break;
				}
			}
			struct kern_top t;
			memset(&t, 0xff, sizeof(t));
			const float inv_t = 0.5f + (float)((k + kind) % 8) * 0.5f;
			kern_top_row(x, n, inv_t, &t);
			for (int i = 0; i < n; i++)
				ord[i] = i;
			g_top_x = x;
			qsort(ord, (size_t)n, sizeof(int32_t), top_cmp);
			int want_n = n < KERN_TOP_K ? n : KERN_TOP_K, bad = 0;
			CHECK(t.n == want_n, "top n=%d kind=%d: %d candidates, expected %d", n, kind, t.n, want_n);
			for (int i = 0; i < want_n && t.n == want_n; i++)
				bad += t.id[i] != ord[i] || memcmp(&t.logit[i], &x[ord[i]], sizeof(float)) != 0;
			CHECK(bad == 0, "top n=%d kind=%d: %d of %d candidates differ from the sort", n, kind, bad, want_n);
			bool nan = false;
			long double m = -INFINITY, sum = 0, sum_t = 0;
			for (int i = 0; i < n; i++) {
				nan |= x[i] != x[i];
				if (x[i] > m)
					m = x[i];
			}
			for (int i = 0; i < n && !nan && m > -INFINITY; i++) {
				sum += expl((long double)x[i] - m);
				sum_t += expl(((long double)x[i] - m) * inv_t);
			}
			if (nan) {
				CHECK(isnan(t.lse) && isnan(t.lz) && isnan(t.lz_t), "top n=%d kind=%d: lse %g, lz_t %g, expected NaN", n, kind,
				      t.lse, t.lz_t);
			} else if (!(m > -INFINITY)) {
				CHECK(t.lse == -INFINITY && t.lz == -INFINITY && t.lz_t == -INFINITY, "top n=%d kind=%d: lse %g, lz_t %g, expected -inf",
				      n, kind, t.lse, t.lz_t);
			} else {
				double want = (double)(m + logl(sum)), want_z = (double)logl(sum), want_t = (double)logl(sum_t);
				CHECK(fabs(t.lz - want_z) <= 1e-6 * (1 + fabs(want_z)), "top n=%d kind=%d: lz %.9g, expected %.9g",
				      n, kind, t.lz, want_z);
				CHECK(fabs(t.lse - want) <= 1e-6 * (1 + fabs(want)), "top n=%d kind=%d: lse %.9g, expected %.9g", n,
				      kind, t.lse, want);
				CHECK(fabs(t.lz_t - want_t) <= 1e-6 * (1 + fabs(want_t)),
				      "top n=%d kind=%d: lz_t %.9g at 1/T %g, expected %.9g", n, kind, t.lz_t, inv_t, want_t);
			}
		}
		free(x);
		free(ord);
	}
}

/*
 * kern_exp_shift against exp in double: random arguments (x - shift) * scale
 * from -80 to +10, every length from 1 to 40 (the vector body and its
 * tail) and a long one; relative error at most 1e-6 against exp of the
 * argument as float arithmetic rounds it (float exp is ~1e-7).
 */
static void test_exp_shift(void)
{
	float x[1000], y[1000];
	double worst = 0;
	for (int n = 1; n <= 1000; n = n < 40 ? n + 1 : 1000) {
		float shift = frand() * 4, scale = 0.5f + (frand() + 1) * 1.5f;
		for (int i = 0; i < n; i++)
			x[i] = shift + (float)(-80 + 90 * (frand() + 1) / 2) / scale;
		for (int i = 0; i < n; i++)
			y[i] = NAN; /* poisoned */
		kern_exp_shift(x, y, n, shift, scale);
		for (int i = 0; i < n; i++) {
			float a = (x[i] - shift) * scale; /* the argument as the kernel rounds it */
			double want = exp((double)a);
			double e = fabs(y[i] - want) / want;
			worst = e > worst || e != e ? e : worst;
		}
		if (n == 1000)
			break;
	}
	CHECK(worst <= 1e-6, "kern_exp_shift: relative error %.3g (bound 1e-6)", worst);
}

int main(void)
{
	test_exp_shift();
	test_argmax();
	test_top();
	test_rmsnorm();
	test_silu_add();
	test_rope();
	test_attn();
	return check_status("test_ops");
}
