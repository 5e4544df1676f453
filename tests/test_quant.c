/*
 * test_quant.c: the quantized CPU kernels (kernels/quant.h) against the
 * scalar reference and against double-precision math.
 *
 * For every supported type, on seeded random data of awkward shapes:
 *   1. quantize -> dequantize round trips stay within per-type bounds
 *      (roundtrip_bound: F32 exact, F16 2^-11 and BF16 2^-8 relative, Q8_0
 *      d/2, Q4_0 |d| (clamped end), Q4_1 d/2, Q4_K / Q6_K from the 6- and
 *      8-bit sub-block scale rounding; each plus the fp16 rounding of the
 *      stored scales), and the fast dequantizer equals the reference;
 *   2. kern_act_quantize_row gives the same bytes as the reference and each
 *      element within d/2 of its input;
 *   3. kern_matmul == kern_matmul_ref within 1e-5 of the output's scale
 *      sum_i (|w_i| + max|w| of i's block) * |a_i| (a: the dequantized
 *      activation; the block max covers the min / offset terms): both
 *      compute the same integer dot products, only the order and rounding
 *      of the f32 scale arithmetic differ (float types: f32 vs f64 sums);
 *   4. kern_matmul_ref == double dot of dequantized weights and unquantized
 *      activations within the 8-bit activation error bound
 *      sum_i |w_i| * d_block(i) / 2 (d = max|x| / 127 of i's block);
 *   5. batch invariance: y[t][r] of kern_matmul (and of kern_matmul_ref) is
 *      bitwise the same whether token t is computed alone, in any group of
 *      tokens at any position, or with all of them, and whatever row range
 *      [r0, r1) the row falls in (full or partial strips, any alignment);
 *      kern_act_quantize_row gives the same bytes at any buffer position.
 *      Without it a prompt's output depends on the prefill chunk size and a
 *      request's on what else shares its batch.
 * Weights and activations end right before a PROT_NONE page, so a SIMD loop
 * reading past them crashes; outputs are poisoned with NaN and every element
 * must be written (finite) inside [r0, r1) and untouched outside it.
 *
 * Also the integer half <-> float conversions (kern_f16_to_f32_soft, used
 * where the compiler has no _Float16) against _Float16, where it exists.
 *
 * Exit 0 on success, 1 on the first failure (with a message).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/quant.h"

#define CHECK(cond, ...)                                                                               \
	do {                                                                                           \
		if (!(cond)) {                                                                         \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                            \
			fprintf(stderr, __VA_ARGS__);                                                  \
			fprintf(stderr, "\n");                                                         \
			exit(1);                                                                       \
		}                                                                                      \
	} while (0)

/* ---- deterministic random numbers (xorshift64*) ---- */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rng_u64(void)
{
	g_rng ^= g_rng >> 12;
	g_rng ^= g_rng << 25;
	g_rng ^= g_rng >> 27;
	return g_rng * 2685821657736338717ull;
}

static float rng_uniform(void) /* [-1, 1) */
{
	return (float)((double)(rng_u64() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float rng_normal(void)
{
	float s = 0;
	for (int i = 0; i < 4; i++)
		s += rng_uniform();
	return s * 0.866f;
}

/* Values like model weights and activations: a per-row scale, a per-block
 * scale, rare outliers; `zero_block` >= 0 zeroes that 32-element block. */
static void fill_random(float *x, int64_t n, float scale, int64_t zero_block)
{
	float bs = 1;
	for (int64_t i = 0; i < n; i++) {
		if (i % 32 == 0)
			bs = 0.25f + fabsf(rng_uniform()) * 1.5f;
		float v = rng_normal() * scale * bs;
		if ((rng_u64() & 255) == 0)
			v *= 12; /* outlier */
		if (zero_block >= 0 && i / 32 == zero_block)
			v = 0;
		x[i] = v;
	}
}

/* ---- buffers that end right before a PROT_NONE page ---- */
struct guarded {
	void *map;
	size_t map_len;
	void *p;
};

static void *guard_alloc(struct guarded *g, size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t len = (n + page - 1) / page * page + page;
	g->map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(g->map != MAP_FAILED, "mmap %zu", len);
	g->map_len = len;
	CHECK(mprotect((uint8_t *)g->map + len - page, page, PROT_NONE) == 0, "mprotect");
	g->p = (uint8_t *)g->map + len - page - n;
	return g->p;
}

static void guard_free(struct guarded *g)
{
	munmap(g->map, g->map_len);
}

static bool is_float_type(uint32_t t)
{
	return t == KERN_TYPE_F32 || t == KERN_TYPE_F16 || t == KERN_TYPE_BF16;
}

static const uint32_t g_types[] = {KERN_TYPE_F32,  KERN_TYPE_F16,  KERN_TYPE_BF16, KERN_TYPE_Q8_0,
				   KERN_TYPE_Q4_0, KERN_TYPE_Q4_1, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K};

/* ---- 1. round trips ---- */

/* Bound on |x - dequant(quant(x))| for element i, from the stored block. */
static double roundtrip_bound(uint32_t type, const float *x, const uint8_t *q, int64_t i)
{
	switch (type) {
	case KERN_TYPE_F32:
		return 0;
	case KERN_TYPE_F16: /* half an ulp of 11 bits, or the subnormal step */
		return fabs(x[i]) * 0x1p-11 + 0x1p-25;
	case KERN_TYPE_BF16:
		return fabs(x[i]) * 0x1p-8;
	case KERN_TYPE_Q8_0: { /* d/2, plus d's own fp16 rounding times 127 */
		const struct blk_q8_0 *b = (const void *)(q + (i / 32) * sizeof(*b));
		double d = kern_f16_to_f32(b->d);
		return d * (0.5 + 127 * 0x1p-11) + 1e-30;
	}
	case KERN_TYPE_Q4_0: { /* |d|/2; the +8|d| end is clamped to q = 15: |d| */
		const struct blk_q4_0 *b = (const void *)(q + (i / 32) * sizeof(*b));
		return fabs(kern_f16_to_f32(b->d)) * (1 + 16 * 0x1p-11) + 1e-30;
	}
	case KERN_TYPE_Q4_1: { /* d/2 plus fp16 rounding of d (x15) and m */
		const struct blk_q4_1 *b = (const void *)(q + (i / 32) * sizeof(*b));
		double d = kern_f16_to_f32(b->d), m = kern_f16_to_f32(b->m);
		return d * (0.5 + 16 * 0x1p-11) + fabs(m) * 0x1p-11 + 1e-30;
	}
	case KERN_TYPE_Q4_K: {
		/* sub-block scale D = d*sc is within d/2 of the wanted range/15, so
		 * a clamped end is off by up to 15 * d/2; the min by dmin/2 */
		const struct blk_q4_k *b = (const void *)(q + (i / 256) * sizeof(*b));
		uint8_t sc, m;
		kern_q4k_scale_min((int)(i % 256) / 32, b->scales, &sc, &m);
		double d = kern_f16_to_f32(b->d), dmin = kern_f16_to_f32(b->dmin);
		return (0.5 * d * sc + 7.5 * d + 0.5 * dmin + 64 * dmin * 0x1p-11) * 1.01 + 1e-30;
	}
	case KERN_TYPE_Q6_K: { /* D/2 plus 31 * d/2 from the 8-bit scale rounding */
		const struct blk_q6_k *b = (const void *)(q + (i / 256) * sizeof(*b));
		double d = kern_f16_to_f32(b->d);
		return (0.5 * d * fabs((double)b->scales[(i % 256) / 16]) + 15.5 * d) * 1.01 + 1e-30;
	}
	}
	return 0;
}

static void test_roundtrip(uint32_t type)
{
	const int64_t n = 256 * 12;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	size_t bytes = kern_row_bytes(type, n);
	uint8_t *q = malloc(bytes);
	fill_random(x, n, 0.7f, 5);
	x[7] = 3e-7f; /* tiny values next to big ones */
	kern_quantize_row(type, x, q, n);
	kern_dequantize_row(type, q, y, n);
	double err2 = 0, x2 = 0;
	for (int64_t i = 0; i < n; i++) {
		double e = fabs((double)x[i] - y[i]);
		double bound = roundtrip_bound(type, x, q, i);
		CHECK(isfinite(y[i]) && e <= bound, "%s round trip elem %ld: x=%g y=%g err=%g bound=%g",
		      kern_type_name(type), (long)i, x[i], y[i], e, bound);
		err2 += e * e;
		x2 += (double)x[i] * x[i];
	}
	/* the fast dequantizer must match the reference exactly */
	float *z = malloc(n * sizeof(float));
	kern_dequantize_row_ref(type, q, z, n);
	CHECK(memcmp(y, z, n * sizeof(float)) == 0, "%s dequantize != ref", kern_type_name(type));
	printf("  %-5s round trip: rel rms err %.2e\n", kern_type_name(type), sqrt(err2 / x2));
	free(x), free(y), free(z), free(q);
}

/* ---- 2. activation quantization ---- */

static void test_act_quantize(uint32_t type)
{
	const int64_t k = 2816;
	float *x = malloc(k * sizeof(float));
	fill_random(x, k, 2.0f, 3);
	x[100] = 1e-30f; /* a block with huge range */
	size_t ab = kern_act_row_bytes(type, k);
	CHECK(ab == (is_float_type(type) ? (size_t)k * 4 : (size_t)k / 32 * sizeof(struct kern_act_q8)),
	      "act row bytes");
	uint8_t *a = malloc(ab), *b = malloc(ab);
	memset(a, 0x5A, ab);
	memset(b, 0xA5, ab);
	kern_act_quantize_row(type, x, a, k);
	kern_act_quantize_row_ref(type, x, b, k);
	CHECK(memcmp(a, b, ab) == 0, "%s act quantize != ref", kern_type_name(type));
	if (!is_float_type(type)) {
		const struct kern_act_q8 *blk = (const void *)a;
		for (int64_t i = 0; i < k; i++) {
			const struct kern_act_q8 *p = &blk[i / 32];
			double e = fabs((double)p->qs[i % 32] * p->d - x[i]);
			CHECK(e <= p->d * 0.5000001 + 1e-38, "%s act elem %ld err %g d %g", kern_type_name(type),
			      (long)i, e, p->d);
		}
	}
	free(x), free(a), free(b);
}

/* ---- 3 and 4. matrix products ---- */

struct mm_case {
	int64_t rows, k;
	int n_tok;
	int64_t r0, r1;
};

/* Dequantized activation element i of token row a. */
static double act_deq(uint32_t type, const uint8_t *a, int64_t i)
{
	if (is_float_type(type)) {
		float v;
		memcpy(&v, a + 4 * i, 4);
		return v;
	}
	const struct kern_act_q8 *b = (const struct kern_act_q8 *)a + i / 32;
	return (double)b->qs[i % 32] * b->d;
}

static void run_matmul(uint32_t type, const struct mm_case *c, double *worst1, double *worst2)
{
	const int64_t rows = c->rows, k = c->k;
	const int nt = c->n_tok;
	const size_t rs = kern_row_bytes(type, k);
	const size_t ars = kern_act_row_bytes(type, k);
	const int64_t ldy = rows + 3;

	struct guarded gw, ga, gy, gr;
	uint8_t *w = guard_alloc(&gw, rs * rows);
	uint8_t *act = guard_alloc(&ga, ars * nt);
	float *y = guard_alloc(&gy, sizeof(float) * ldy * nt);
	float *yr = guard_alloc(&gr, sizeof(float) * ldy * nt);

	float *wf = malloc(sizeof(float) * k * rows); /* dequantized weights */
	float *x = malloc(sizeof(float) * k * nt);
	float *tmp = malloc(sizeof(float) * k);
	for (int64_t r = 0; r < rows; r++) {
		fill_random(tmp, k, 0.05f + 0.02f * (float)(r % 7), r == 2 ? k / 64 : -1);
		kern_quantize_row(type, tmp, w + r * rs, k);
		kern_dequantize_row_ref(type, w + r * rs, wf + r * k, k);
	}
	for (int t = 0; t < nt; t++) {
		fill_random(x + t * k, k, t == 1 ? 30.0f : 1.0f, t == 0 ? k / 32 - 1 : -1);
		kern_act_quantize_row(type, x + t * k, act + t * ars, k);
	}

	for (int64_t i = 0; i < ldy * nt; i++)
		y[i] = yr[i] = NAN;
	kern_matmul(type, w, rs, k, act, ars, nt, y, ldy, c->r0, c->r1);
	kern_matmul_ref(type, w, rs, k, act, ars, nt, yr, ldy, c->r0, c->r1);

	for (int t = 0; t < nt; t++) {
		const uint8_t *at = act + t * ars;
		for (int64_t r = 0; r < ldy; r++) {
			float v = y[t * ldy + r], vr = yr[t * ldy + r];
			if (r < c->r0 || r >= c->r1) {
				CHECK(isnan(v) && isnan(vr), "%s: y[%d][%ld] outside [%ld,%ld) was written",
				      kern_type_name(type), t, (long)r, (long)c->r0, (long)c->r1);
				continue;
			}
			CHECK(isfinite(v) && isfinite(vr), "%s: y[%d][%ld] not written/finite (%g, ref %g)",
			      kern_type_name(type), t, (long)r, v, vr);
			/* scale: sum of |terms| the kernels add, bounded per element
			 * by (|w_i| + max|w| of its block) * |a_i| (the max covers
			 * the min / offset terms of Q4_0, Q4_1, Q4_K, Q6_K) */
			const float *wr = wf + r * k;
			const float *xt = x + t * k;
			double scale = 0, exact = 0, aerr = 0, bmax = 0;
			for (int64_t i = 0; i < k; i++) {
				if (!is_float_type(type) && i % 32 == 0) {
					bmax = 0;
					for (int j = 0; j < 32; j++)
						bmax = fmax(bmax, fabs(wr[i + j]));
				}
				double ad = act_deq(type, at, i);
				scale += (fabs(wr[i]) + bmax) * fabs(ad);
				exact += (double)wr[i] * xt[i];
				if (!is_float_type(type))
					aerr += fabs(wr[i]) * ((const struct kern_act_q8 *)at)[i / 32].d * 0.5;
			}
			double tol1 = 1e-5 * scale + 1e-30;
			double e1 = fabs((double)v - vr);
			CHECK(e1 <= tol1, "%s rows %ld k %ld nt %d: kern_matmul y[%d][%ld]=%.9g ref %.9g (err %g > %g)",
			      kern_type_name(type), (long)rows, (long)k, nt, t, (long)r, v, vr, e1, tol1);
			double tol2 = aerr * 1.0001 + 1e-5 * scale + 1e-30;
			double e2 = fabs((double)vr - exact);
			CHECK(e2 <= tol2, "%s rows %ld k %ld nt %d: ref y[%d][%ld]=%.9g exact %.9g (err %g > %g)",
			      kern_type_name(type), (long)rows, (long)k, nt, t, (long)r, vr, exact, e2, tol2);
			if (scale > 0 && e1 / scale > *worst1)
				*worst1 = e1 / scale;
			if (scale > 0 && e2 / scale > *worst2)
				*worst2 = e2 / scale;
		}
	}
	free(wf), free(x), free(tmp);
	guard_free(&gw), guard_free(&ga), guard_free(&gy), guard_free(&gr);
}

static void test_matmul(uint32_t type)
{
	const int be = kern_type_block_elems(type);
	static const int64_t rows_list[] = {1, 3, 5, 17, 32, 67}; /* 32: full strips up to the guard */
	static const int ntok_list[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 33};
	int64_t k_list[16];
	int nk = 0;
	for (int i = 1; i <= 5; i++)
		k_list[nk++] = i * (be == 1 ? 1 : be);
	if (be == 1) {
		k_list[nk++] = 17;
		k_list[nk++] = 33;
	}
	k_list[nk++] = 576;
	k_list[nk++] = 1536;
	k_list[nk++] = 2816;

	double worst1 = 0, worst2 = 0;
	int n_cases = 0;
	for (int ik = 0; ik < nk; ik++) {
		int64_t k = k_list[ik];
		if (k % be)
			continue;
		for (size_t ir = 0; ir < sizeof(rows_list) / sizeof(rows_list[0]); ir++) {
			for (size_t it = 0; it < sizeof(ntok_list) / sizeof(ntok_list[0]); it++) {
				int64_t rows = rows_list[ir];
				int nt = ntok_list[it];
				/* big k: a sample of the shapes keeps the run short */
				if (k >= 576 && (ir + it + ik) % 3 != 0)
					continue;
				struct mm_case c = {rows, k, nt, 0, rows};
				run_matmul(type, &c, &worst1, &worst2);
				n_cases++;
			}
		}
	}
	/* row sub-ranges: strip boundaries, single rows, remainders */
	static const int64_t ranges[][2] = {{5, 40}, {16, 48}, {66, 67}, {0, 1}, {17, 34}, {3, 67}};
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		for (int nt = 1; nt <= 9; nt += 4) {
			struct mm_case c = {67, be == 1 ? 67 : 2 * be, nt, ranges[i][0], ranges[i][1]};
			run_matmul(type, &c, &worst1, &worst2);
			c.k = be == 1 ? 576 : (be == 32 ? 1536 : 1024);
			run_matmul(type, &c, &worst1, &worst2);
			n_cases += 2;
		}
	}
	/* more tokens than one token block of the kernels (128) */
	struct mm_case big = {20, 2 * (be == 1 ? 32 : be), 130, 0, 20};
	run_matmul(type, &big, &worst1, &worst2);
	/* long rows: several chunks of k and token blocks smaller than n_tok */
	struct mm_case lng = {20, 8192, 90, 0, 20};
	run_matmul(type, &lng, &worst1, &worst2);
	n_cases += 2;
	printf("  %-5s matmul: %d cases, max err/scale simd-vs-ref %.1e, ref-vs-f64 %.1e\n", kern_type_name(type),
	       n_cases, worst1, worst2);
}

/* ---- 5. batch invariance ---- */

/* got must equal want bit for bit (all tokens, all rows). */
static void check_same(uint32_t type, const char *name, const char *how, const struct mm_case *c,
		       const float *want, const float *got, int64_t ldy)
{
	for (int t = 0; t < c->n_tok; t++)
		for (int64_t r = 0; r < c->rows; r++) {
			const float *a = want + (int64_t)t * ldy + r, *b = got + (int64_t)t * ldy + r;
			uint32_t ua, ub;
			memcpy(&ua, a, 4);
			memcpy(&ub, b, 4);
			CHECK(ua == ub,
			      "%s batch invariance of %s, rows %ld k %ld n_tok %d: y[%d][%ld] = %.9g (0x%08x) "
			      "computed %s, %.9g (0x%08x) all at once",
			      kern_type_name(type), name, (long)c->rows, (long)c->k, c->n_tok, t, (long)r, *b, ub,
			      how, *a, ua);
		}
}

typedef void (*matmul_fn)(uint32_t, const void *, size_t, int64_t, const void *, size_t, int, float *, int64_t,
			  int64_t, int64_t);

/* Tokens [0, n_tok) in consecutive groups of sizes cycling through `sizes`
 * (0-terminated), rows [r0, r1), into y. */
static void matmul_groups(matmul_fn mm, uint32_t type, const uint8_t *w, size_t rs, int64_t k, const uint8_t *act,
			  size_t ars, int n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1, const int *sizes)
{
	for (int t = 0, i = 0; t < n_tok; i = sizes[i + 1] ? i + 1 : 0) {
		int n = n_tok - t < sizes[i] ? n_tok - t : sizes[i];
		mm(type, w, rs, k, act + (size_t)t * ars, ars, n, y + (int64_t)t * ldy, ldy, r0, r1);
		t += n;
	}
}

static void run_invariance(uint32_t type, const struct mm_case *c, matmul_fn mm, const char *name)
{
	const int64_t rows = c->rows, k = c->k;
	const int nt = c->n_tok;
	const size_t rs = kern_row_bytes(type, k), ars = kern_act_row_bytes(type, k);
	const int64_t ldy = rows + 5;
	struct guarded gw, ga;
	uint8_t *w = guard_alloc(&gw, rs * rows);
	uint8_t *act = guard_alloc(&ga, ars * nt);
	float *x = malloc(sizeof(float) * (k + 1));
	for (int64_t r = 0; r < rows; r++) {
		fill_random(x, k, 0.05f + 0.02f * (float)(r % 5), r == 1 ? k / 64 : -1);
		kern_quantize_row(type, x, w + r * rs, k);
	}
	uint8_t *a2 = malloc(ars + 64);
	for (int t = 0; t < nt; t++) {
		fill_random(x + 1, k, t % 3 == 1 ? 20.0f : 1.0f, t == 2 ? k / 32 - 1 : -1);
		kern_act_quantize_row(type, x + 1, act + t * ars, k);
		/* the same row from another address into another one */
		memmove(x, x + 1, sizeof(float) * k);
		kern_act_quantize_row(type, x, a2 + 4, k);
		CHECK(memcmp(act + t * ars, a2 + 4, ars) == 0, "%s act quantize depends on the address",
		      kern_type_name(type));
	}
	free(a2);

	size_t ny = (size_t)ldy * nt;
	float *full = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny);
	for (size_t i = 0; i < ny; i++)
		full[i] = NAN;
	mm(type, w, rs, k, act, ars, nt, full, ldy, 0, rows);

	/* each token alone */
	for (size_t i = 0; i < ny; i++)
		y[i] = NAN;
	static const int one[] = {1, 0};
	matmul_groups(mm, type, w, rs, k, act, ars, nt, y, ldy, 0, rows, one);
	check_same(type, name, "one token at a time", c, full, y, ldy);

	/* odd groups: [0,3) [3,8) [8,10) [10,19) [19,20) [20,28) [28,32) ... */
	static const int odd[] = {3, 5, 2, 9, 1, 8, 4, 16, 7, 0};
	matmul_groups(mm, type, w, rs, k, act, ars, nt, y, ldy, 0, rows, odd);
	check_same(type, name, "in token groups 3,5,2,9,1,8,4,16,7", c, full, y, ldy);

	/* odd row splits (strip-aligned or not), all tokens, then odd groups */
	static const int64_t cuts[] = {0, 5, 16, 21, 22, 37, 48, 50};
	static const int pairs[] = {2, 6, 1, 0};
	for (int g = 0; g < 2; g++) {
		for (size_t i = 0; i < ny; i++)
			y[i] = NAN;
		int64_t prev = 0;
		for (size_t i = 1; i <= sizeof(cuts) / sizeof(cuts[0]) && prev < rows; i++) {
			int64_t cut = i < sizeof(cuts) / sizeof(cuts[0]) && cuts[i] < rows ? cuts[i] : rows;
			if (g == 0)
				mm(type, w, rs, k, act, ars, nt, y, ldy, prev, cut);
			else
				matmul_groups(mm, type, w, rs, k, act, ars, nt, y, ldy, prev, cut, pairs);
			prev = cut;
		}
		check_same(type, name, g ? "in row ranges cut at 5,16,21,22,37,48,50 and token groups 2,6,1"
					 : "in row ranges cut at 5,16,21,22,37,48,50",
			   c, full, y, ldy);
	}
	/* single rows */
	for (size_t i = 0; i < ny; i++)
		y[i] = NAN;
	for (int64_t r = 0; r < rows; r++)
		mm(type, w, rs, k, act, ars, nt, y, ldy, r, r + 1);
	check_same(type, name, "one row at a time", c, full, y, ldy);

	free(full), free(y), free(x);
	guard_free(&gw), guard_free(&ga);
}

static void test_batch_invariance(uint32_t type)
{
	const int be = kern_type_block_elems(type);
	static const int64_t rows_list[] = {1, 7, 16, 17, 67};
	int n_cases = 0;
	for (size_t ir = 0; ir < sizeof(rows_list) / sizeof(rows_list[0]); ir++) {
		int64_t ks[2] = {be == 1 ? 17 : be, be == 1 ? 67 : 3 * be};
		for (int ik = 0; ik < 2; ik++) {
			struct mm_case c = {rows_list[ir], ks[ik], ir % 2 ? 40 : 19, 0, 0};
			run_invariance(type, &c, kern_matmul, "kern_matmul");
			run_invariance(type, &c, kern_matmul_ref, "kern_matmul_ref");
			n_cases += 2;
		}
	}
	/* model shapes: one or several chunks of k in the batched path */
	static const int64_t k_list[] = {576, 1536, 2816, 8192};
	for (size_t ik = 0; ik < sizeof(k_list) / sizeof(k_list[0]); ik++) {
		if (k_list[ik] % be)
			continue;
		struct mm_case c = {k_list[ik] == 8192 ? 37 : 67, k_list[ik], k_list[ik] == 8192 ? 24 : 40, 0, 0};
		run_invariance(type, &c, kern_matmul, "kern_matmul");
		n_cases++;
	}
	/* more tokens than a token block of the kernels */
	struct mm_case big = {21, 4096, 140, 0, 0};
	run_invariance(type, &big, kern_matmul, "kern_matmul");
	n_cases++;
	printf("  %-5s batch invariance: %d cases bitwise equal\n", kern_type_name(type), n_cases);
}

/* The integer half <-> float conversions (used where the compiler has no
 * _Float16): known values everywhere; where _Float16 exists, bitwise equal
 * to it on every half and on a sweep of floats (every 4099th bit pattern,
 * NaNs, subnormals and the rounding ties among them, plus random ones). */
static void test_f16_soft(void)
{
	static const struct {
		float x;
		uint16_t h;
		int exact; /* x is the half itself: back to x */
	} known[] = {{1.0f, 0x3c00, 1},		 {-2.0f, 0xc000, 1},	   {65504.0f, 0x7bff, 1},
		     {65519.99f, 0x7bff, 0},	 {65520.0f, 0x7c00, 0},	   {0x1p-24f, 0x0001, 1},
		     {0x1p-25f, 0x0000, 0},	 {0x1.8p-25f, 0x0001, 0},   {0x1.8p-24f, 0x0002, 0},
		     {0x1p-14f, 0x0400, 1},	 {-0.0f, 0x8000, 1},	   {INFINITY, 0x7c00, 1},
		     {-INFINITY, 0xfc00, 1},	 {0.333251953125f, 0x3555, 1}, {1.0009765625f, 0x3c01, 1},
		     {1.00048828125f, 0x3c00, 0}};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		uint16_t h = kern_f32_to_f16_soft(known[i].x);
		CHECK(h == known[i].h, "f32 -> f16 of %a: 0x%04x, expected 0x%04x", (double)known[i].x, h, known[i].h);
		float back = kern_f16_to_f32_soft(known[i].h);
		CHECK(!known[i].exact || !memcmp(&back, &known[i].x, 4), "f16 -> f32 of 0x%04x: %a", known[i].h,
		      (double)back);
	}
	CHECK(kern_f16_to_f32_soft(0x0001) == 0x1p-24f && kern_f16_to_f32_soft(0x03ff) == 1023 * 0x1p-24f,
	      "f16 -> f32 of subnormals");
	CHECK(isnan(kern_f16_to_f32_soft(0x7e00)) && isnan(kern_f16_to_f32_soft(0x7c01)), "f16 -> f32 of NaNs");
	CHECK((kern_f32_to_f16_soft(NAN) & 0x7e00) == 0x7e00, "f32 -> f16 of NaN: quiet");
#ifdef __FLT16_MAX__
	for (uint32_t h = 0; h < 65536; h++) {
		float a = kern_f16_to_f32_soft((uint16_t)h), b = kern_f16_to_f32((uint16_t)h);
		CHECK(!memcmp(&a, &b, 4), "f16 -> f32 of 0x%04x: %a, _Float16 gives %a", h, (double)a, (double)b);
	}
	for (uint64_t i = 0; i < (1ull << 32); i += 4099) {
		uint32_t u = (uint32_t)i;
		float x;
		memcpy(&x, &u, 4);
		CHECK(kern_f32_to_f16_soft(x) == kern_f32_to_f16(x), "f32 -> f16 of 0x%08x", u);
	}
	for (int i = 0; i < 1000000; i++) {
		uint32_t u = (uint32_t)rng_u64();
		float x;
		memcpy(&x, &u, 4);
		CHECK(kern_f32_to_f16_soft(x) == kern_f32_to_f16(x), "f32 -> f16 of 0x%08x", u);
	}
	printf("test_quant: integer half conversions equal _Float16's\n");
#else
	printf("test_quant: no _Float16 here: integer half conversions checked on known values only\n");
#endif
}

int main(void)
{
	printf("test_quant: simd path %s\n", kern_simd_name());
	test_f16_soft();
	for (size_t i = 0; i < sizeof(g_types) / sizeof(g_types[0]); i++) {
		uint32_t t = g_types[i];
		test_roundtrip(t);
		test_act_quantize(t);
		test_matmul(t);
		test_batch_invariance(t);
	}
	printf("test_quant: ok\n");
	return 0;
}
