/*
 * cuda-check: the CUDA backend against the CPU backend, its reference.
 *
 *   cuda-check [--gpu N] [--kernels] [--ceilings] [MODEL.gguf ...]
 *
 * --ceilings: the device's measured copy bandwidth and bf16 GEMM peak
 * (cuda_module.h), printed as "ceilings: NAME copy X GB/s gemm Y TFLOP/s".
 * --kernels: RMSNorm, SwiGLU, argmax, the top-64 candidates, bias + RoPE +
 * KV write, and paged attention (each path, against the definition in
 * double) on the device
 * against the CPU kernels (kernels/ops.h), and the fused dequantizing GEMV (Q8_0, Q4_0,
 * Q4_1, Q4_K, Q6_K, BF16, T = 1..8) against dequantize-then-dot in double, on seeded random
 * inputs of awkward sizes, outputs poisoned with NaN before each run.
 * Each MODEL: both backends run the same steps: three sequences of 37, 101
 * and 5 prompt tokens (random ids) prefilled together in chunks of at most
 * 72 tokens (both chunks over 64: tiled attention, the second's tiles of
 * the long sequence with history), their KV blocks scattered over the pool, every position's
 * logits compared; then 6 decode steps of the three, each fed the CPU's
 * greedy token (in turn through step_argmax with logits, without (ids
 * only), step_top with logits and without (candidates only)); then the
 * engine's shapes (only each sequence's last token wants logits) through
 * step, step_argmax without logits and step_top with and without (then
 * the odd rows fetched whole: fetch_rows); then kv_copy of one
 * sequence's blocks and a step over the copies. Batches whose every token
 * wants logits run as CUDA graphs unless LOCUS_CUDA_GRAPHS=0. Per row:
 *   - no NaN or infinity;
 *   - max |cuda - cpu| <= tol * max |cpu|, tol = 3e-2 for F32/F16/BF16
 *     weights, 6e-2 for the quantized types (the CPU multiplies them with
 *     8-bit activations, the GPU with their bf16 conversion);
 *   - the greedy token is the same, or the CPU's logit at the CUDA token
 *     is within tol * max |cpu| of the CPU's best (a near tie), and near
 *     ties are at most 2% of the rows (at least 1);
 *   - the device argmax equals the host argmax of the device's logits;
 *   - the device's candidates (struct kern_top) are kern_top_row of its
 *     logits (or of the rows fetched after the step), exactly; without
 *     logits, each candidate's logit is within tol * max |cpu| of the
 *     CPU's at that id, and so is lse.
 * Exit status: 0 all passed, 1 a check failed, 77 no usable GPU (skip).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>

#include "engine/engine.h"
#include "kernels/cuda/cuda_module.h"
#include "kernels/kernels.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

#define BS 16        /* KV block size */
#define POOL 64      /* KV blocks */
#define MAXB 72      /* max_batch_tokens */
#define NSEQ 3
#define NDEC 6

static int fails;

static void report(int ok, const char *fmt, const char *what, double a, double b)
{
	printf("%s %s: ", ok ? "ok  " : "FAIL", what);
	printf(fmt, a, b);
	putchar('\n');
	if (!ok)
		fails++;
}

static uint64_t rng = 0x5eed1234abcdULL;
static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}
/* The larger of two errors; a NaN, once in, stays (!(e <= w) ? e : w lets
 * the next finite e replace it). */
static double worse(double w, double e)
{
	return isnan(w) || isnan(e) ? NAN : e > w ? e : w;
}

static float frnd(void)
{
	return (float)(rnd() >> 11) / 2097152.0f * 2.0f - 1.0f; /* [-1, 1): 21 of rnd's 32 bits */
}

/* ---- single kernels ---- */
static void gemv_checks(locus_cuda_kernel_check_fn run, int gpu);
static void gemv_x8_checks(locus_cuda_kernel_check_fn run, int gpu);
static void top_checks(locus_cuda_kernel_check_fn run, int gpu);
static void attn_checks(locus_cuda_kernel_check_fn run, int gpu);
static void attn_nan_checks(locus_cuda_kernel_check_fn run, int gpu);
static void qkv_post_checks(locus_cuda_kernel_check_fn run, int gpu);

static int kernel_checks(void *mod, int gpu)
{
	locus_cuda_kernel_check_fn run;
	*(void **)&run = dlsym(mod, "locus_cuda_kernel_check");
	if (!run) {
		printf("FAIL the module has no locus_cuda_kernel_check\n");
		fails++;
		return 1;
	}
	static const int sizes[][2] = {{1, 1}, {3, 31}, {2, 33}, {5, 577}, {4, 4099}, {1, 49152}, {3, 128256}, {2, 270001}};
	char err[256];
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		int rows = sizes[si][0], n = sizes[si][1];
		size_t cnt = (size_t)rows * n;
		float *x = malloc(cnt * 2 * 4), *w = malloc((size_t)n * 4), *y = malloc(cnt * 4), *ref = malloc(cnt * 2 * 4);
		int32_t *ids = malloc((size_t)rows * 4);
		if (!x || !w || !y || !ref || !ids) {
			printf("FAIL out of memory\n");
			fails++;
			return 1;
		}
		for (size_t i = 0; i < cnt * 2; i++)
			x[i] = frnd() * 4;
		for (int i = 0; i < n; i++)
			w[i] = 1 + frnd() * 0.1f;
		char what[64];

		/* RMSNorm: bf16 output, so 2^-8 relative per element */
		struct lcu_check_args a = {.kernel = LCU_RMSNORM, .gpu = gpu, .rows = rows, .n = n, .eps = 1e-5f, .x = x,
					   .w = w, .y = y};
		for (size_t i = 0; i < cnt; i++)
			y[i] = NAN;
		int rc = run(&a, err, sizeof(err));
		double worst = 0;
		for (int r = 0; r < rows && !rc; r++) {
			kern_rmsnorm(x + (size_t)r * n, w, ref + (size_t)r * n, n, 1e-5f);
			for (int i = 0; i < n; i++) {
				double e = fabs((double)y[(size_t)r * n + i] - ref[(size_t)r * n + i]) /
					   (fabs(ref[(size_t)r * n + i]) + 1e-6);
				worst = worse(worst, e);
			}
		}
		snprintf(what, sizeof(what), "rmsnorm %dx%d", rows, n);
		report(!rc && worst <= 8e-3, "relative error %.2g (bound %.0e, bf16 output)", what, worst, 8e-3);

		/* add + RMSNorm, the residual written back: x + add exactly (one f32
		 * addition), then the norm of that */
		{
			const float *add = x + cnt;
			float *xo = malloc(cnt * 4), *sum = malloc(cnt * 4);
			if (!xo || !sum) {
				printf("FAIL out of memory\n");
				fails++;
				free(xo), free(sum);
				return 1;
			}
			for (size_t i = 0; i < cnt; i++) {
				y[i] = NAN;
				xo[i] = NAN;
				sum[i] = x[i] + add[i];
			}
			a = (struct lcu_check_args){.kernel = LCU_RMSNORM, .gpu = gpu, .rows = rows, .n = n, .eps = 1e-5f,
						    .x = x, .w = w, .y = y, .add = add, .x_out = xo};
			rc = run(&a, err, sizeof(err));
			worst = 0;
			int wrong = rc ? 1 : memcmp(xo, sum, cnt * 4) != 0;
			for (int r = 0; r < rows && !rc; r++) {
				kern_rmsnorm(sum + (size_t)r * n, w, ref + (size_t)r * n, n, 1e-5f);
				for (int i = 0; i < n; i++) {
					double e = fabs((double)y[(size_t)r * n + i] - ref[(size_t)r * n + i]) /
						   (fabs(ref[(size_t)r * n + i]) + 1e-6);
					worst = worse(worst, e);
				}
			}
			snprintf(what, sizeof(what), "add + rmsnorm %dx%d", rows, n);
			report(!rc && !wrong && worst <= 8e-3,
			       "relative error %.2g (bound %.0e, bf16 output); the residual written back is x + add", what,
			       worst, 8e-3);
			if (wrong && !rc)
				printf("     the residual written back is not x + add\n");
			if (rc)
				printf("     %s\n", err);
			free(xo), free(sum);
		}

		/* SwiGLU: gu rows are [gate | up] */
		a = (struct lcu_check_args){.kernel = LCU_SWIGLU, .gpu = gpu, .rows = rows, .n = n, .x = x, .y = y};
		for (size_t i = 0; i < cnt; i++)
			y[i] = NAN;
		rc = run(&a, err, sizeof(err));
		worst = 0;
		for (int r = 0; r < rows && !rc; r++) {
			float *g = ref + (size_t)r * n;
			memcpy(g, x + (size_t)r * 2 * n, (size_t)n * 4);
			kern_silu_mul(g, x + (size_t)r * 2 * n + n, n);
			for (int i = 0; i < n; i++) {
				double e = fabs((double)y[(size_t)r * n + i] - g[i]) / (fabs(g[i]) + 1e-6);
				worst = worse(worst, e);
			}
		}
		snprintf(what, sizeof(what), "swiglu %dx%d", rows, n);
		report(!rc && worst <= 8e-3, "relative error %.2g (bound %.0e, bf16 output)", what, worst, 8e-3);

		/* argmax, with ties, NaNs and an all-NaN row */
		for (int r = 0; r < rows; r++) {
			float *xr = x + (size_t)r * n;
			if (n > 8) {
				xr[n / 3] = 9;
				xr[n - 2] = 9; /* tie: the first wins */
				xr[n / 2] = NAN;
			}
			if (r == 2)
				for (int i = 0; i < n; i++)
					xr[i] = NAN;
		}
		a = (struct lcu_check_args){.kernel = LCU_ARGMAX, .gpu = gpu, .rows = rows, .n = n, .x = x, .ids = ids};
		memset(ids, 0xff, (size_t)rows * 4);
		rc = run(&a, err, sizeof(err));
		int bad = rc ? rows : 0;
		for (int r = 0; r < rows && !rc; r++)
			bad += ids[r] != kern_argmax(x + (size_t)r * n, n);
		snprintf(what, sizeof(what), "argmax %dx%d", rows, n);
		report(!bad, "%.0f of %.0f rows differ from kern_argmax", what, bad, rows);
		if (rc)
			printf("     %s\n", err);
		free(x), free(w), free(y), free(ref), free(ids);
	}
	gemv_checks(run, gpu);
	top_checks(run, gpu);
	attn_checks(run, gpu);
	attn_nan_checks(run, gpu);
	qkv_post_checks(run, gpu);
	gemv_x8_checks(run, gpu); /* last: not yet run on a GPU, so a fault here costs no other check */
	return 0;
}

/*
 * Bias + RoPE + KV write (k_qkv_post) against the CPU's kern_rope with the
 * table the CPU backend builds (cos and sin in double, rounded to f32):
 * q within 1e-5 of its head's largest value, k and v (read back from the
 * f16 cache) within 2e-3 relative + 1e-4 (an f16 ulp either way). Both
 * pair layouts, with and without biases, GQA, positions 0..4095, two
 * bases (10000 and 500000).
 */
static void qkv_post_checks(locus_cuda_kernel_check_fn run, int gpu)
{
	static const struct {
		int nh, nkv, hd, neox, bias;
		double base;
	} cs[] = {{4, 4, 64, 0, 0, 10000}, {6, 2, 128, 1, 1, 500000}, {8, 1, 96, 0, 1, 10000}, {2, 2, 32, 1, 0, 1e6}};
	static const int32_t pos[] = {0, 1, 17, 1000, 4095};
	const int T = 5;
	char err[256], what[96];
	for (size_t ci = 0; ci < sizeof(cs) / sizeof(cs[0]); ci++) {
		const int NH = cs[ci].nh, NKV = cs[ci].nkv, HD = cs[ci].hd, qd = NH * HD, kvd = NKV * HD;
		const int ld = qd + 2 * kvd;
		float *x = malloc((size_t)T * ld * 4), *y = malloc((size_t)T * ld * 4), *ref = malloc((size_t)T * ld * 4);
		float *b = malloc((size_t)ld * 4), *tab = malloc((size_t)HD * 4);
		double *inv = malloc((size_t)HD / 2 * sizeof(double));
		if (!x || !y || !ref || !b || !tab || !inv) {
			printf("FAIL out of memory\n");
			fails++;
			free(x), free(y), free(ref), free(b), free(tab), free(inv);
			return;
		}
		for (size_t i = 0; i < (size_t)T * ld; i++)
			x[i] = frnd() * 3;
		for (int i = 0; i < ld; i++)
			b[i] = frnd() * 0.5f;
		for (int i = 0; i < HD / 2; i++)
			inv[i] = pow(cs[ci].base, -2.0 * i / HD);
		for (int t = 0; t < T; t++) {
			float *r = ref + (size_t)t * ld;
			memcpy(r, x + (size_t)t * ld, (size_t)ld * 4);
			for (int i = 0; i < ld && cs[ci].bias; i++)
				r[i] += b[i];
			for (int i = 0; i < HD / 2; i++) {
				double ang = (double)pos[t] * inv[i];
				tab[i] = (float)cos(ang);
				tab[HD / 2 + i] = (float)sin(ang);
			}
			kern_rope(r, NH, HD, tab, cs[ci].neox);
			kern_rope(r + qd, NKV, HD, tab, cs[ci].neox);
			for (int i = qd; i < ld; i++)
				r[i] = kern_f16_to_f32(kern_f32_to_f16(r[i]));
		}
		for (size_t i = 0; i < (size_t)T * ld; i++)
			y[i] = NAN;
		struct lcu_check_args a = {.kernel = LCU_QKV_POST, .gpu = gpu, .rows = T, .n = ld, .x = x, .y = y,
					   .n_head = NH, .n_kv = NKV, .hd = HD, .pos = pos, .inv_freq = inv,
					   .neox = cs[ci].neox, .bq = cs[ci].bias ? b : NULL,
					   .bk = cs[ci].bias ? b + qd : NULL, .bv = cs[ci].bias ? b + qd + kvd : NULL};
		int rc = run(&a, err, sizeof(err));
		double wq = 0, wkv = 0;
		for (int t = 0; t < T && !rc; t++) {
			const float *g = y + (size_t)t * ld, *r = ref + (size_t)t * ld;
			for (int h = 0; h < NH; h++) {
				double mx = 1e-6;
				for (int d = 0; d < HD; d++)
					mx = fmax(mx, fabs(r[h * HD + d]));
				for (int d = 0; d < HD; d++) {
					double e = fabs((double)g[h * HD + d] - r[h * HD + d]) / mx;
					wq = worse(wq, e);
				}
			}
			for (int i = qd; i < ld; i++) {
				double e = fabs((double)g[i] - r[i]) / (2e-3 * fabs(r[i]) + 1e-4);
				wkv = worse(wkv, e);
			}
		}
		snprintf(what, sizeof(what), "qkv_post heads %d/%d x %d, %s pairs%s", NH, NKV, HD, cs[ci].neox ? "neox" : "adjacent",
			 cs[ci].bias ? ", biases" : "");
		report(!rc && wq <= 1e-5 && wkv <= 1, "q error %.2g (bound 1e-5), k/v error %.2f of the f16 bound", what, wq,
		       wkv);
		if (rc)
			printf("     %s\n", err);
		free(x), free(y), free(ref), free(b), free(tab), free(inv);
	}
}

/*
 * Paged causal attention on the device, each path (one block per token
 * and head; split along the positions and merged; by tiles) against the
 * definition in double, with K and V rounded to f16 as the cache holds
 * them. Head shapes 64, 128 (GQA 4), 96 (GQA 3), 32 (one KV head); a
 * prefill-like batch (45 tokens from position 0 and 30 after a history of
 * 37) and a decode-like one (single tokens at positions 300 and 5, a
 * 20-token chunk after 100), blocks of 16 scattered over the cache.
 * Per (token, head): max |gpu - ref| <= 1e-2 max |ref| (bf16 output).
 */
/* Random attention inputs: K (f16 values in [-2, 2)) and V ([-1, 1)) for
 * the whole cache, q (f32 in [-2, 2)). */
static void attn_data(float *k, float *v, size_t cache_n, float *q, size_t qn)
{
	for (size_t i = 0; i < cache_n; i++) {
		k[i] = kern_f16_to_f32(kern_f32_to_f16(frnd() * 2));
		v[i] = kern_f16_to_f32(kern_f32_to_f16(frnd()));
	}
	for (size_t i = 0; i < qn; i++)
		q[i] = frnd() * 2;
}

/* Causal attention by its definition, in double: token t (position pos[t],
 * its sequence's block table at bt + bto[t]) and head h over positions
 * 0..pos[t] of the paged cache (block, kv head, position in block, dim);
 * w holds at least max(pos) + 1 scores. ref: T x (NH * HD). */
static void attn_definition(const float *q, const float *k, const float *v, int T, int NH, int NKV, int HD, int BSZ,
			    const int32_t *pos, const int32_t *bto, const int32_t *bt, double *w, double *ref)
{
	const int n = NH * HD;
	const size_t blk_stride = (size_t)NKV * BSZ * HD;
	for (int t = 0; t < T; t++)
		for (int h = 0; h < NH; h++) {
			const int kvh = h / (NH / NKV);
			const float *qv = q + (size_t)t * n + (size_t)h * HD;
			double mx = -INFINITY, z = 0;
			for (int p = 0; p <= pos[t]; p++) {
				const float *kr = k + (size_t)bt[bto[t] + p / BSZ] * blk_stride + (size_t)kvh * BSZ * HD +
						  (size_t)(p % BSZ) * HD;
				double sc = 0;
				for (int d = 0; d < HD; d++)
					sc += (double)qv[d] * kr[d];
				w[p] = sc / sqrt((double)HD);
				mx = w[p] > mx ? w[p] : mx;
			}
			for (int p = 0; p <= pos[t]; p++)
				z += (w[p] = exp(w[p] - mx));
			for (int d = 0; d < HD; d++) {
				double o = 0;
				for (int p = 0; p <= pos[t]; p++)
					o += w[p] * v[(size_t)bt[bto[t] + p / BSZ] * blk_stride + (size_t)kvh * BSZ * HD +
						      (size_t)(p % BSZ) * HD + d];
				ref[(size_t)t * n + (size_t)h * HD + d] = o / z;
			}
		}
}

static void attn_checks(locus_cuda_kernel_check_fn run, int gpu)
{
	static const struct {
		int nh, nkv, hd;
	} heads[] = {{4, 4, 64}, {8, 2, 128}, {6, 2, 96}, {4, 1, 32}, {16, 1, 64}, {12, 1, 64}}; /* 16, 12 heads a kv head */
	static const struct {
		int n, hist[3], len[3];
	} batches[] = {{2, {0, 37, 0}, {45, 30, 0}}, {3, {300, 5, 100}, {1, 1, 20}}};
	static const char *const path_name[] = {"whole", "split", "tiled", "tensor cores"};
	const int BSZ = 16;
	char err[256], what[96];
	for (size_t hi = 0; hi < sizeof(heads) / sizeof(heads[0]); hi++)
		for (size_t bi = 0; bi < sizeof(batches) / sizeof(batches[0]); bi++) {
			const int NH = heads[hi].nh, NKV = heads[hi].nkv, HD = heads[hi].hd, n = NH * HD;
			int T = 0, n_bt = 0;
			for (int s = 0; s < batches[bi].n; s++) {
				T += batches[bi].len[s];
				n_bt += (batches[bi].hist[s] + batches[bi].len[s] + BSZ - 1) / BSZ;
			}
			const int n_blocks = n_bt + 5;
			const size_t blk_stride = (size_t)NKV * BSZ * HD, cache_n = (size_t)n_blocks * blk_stride;
			float *k = malloc(cache_n * 4), *v = malloc(cache_n * 4), *q = malloc((size_t)T * n * 4);
			float *y = malloc((size_t)T * n * 4), *y2 = malloc((size_t)T * n * 4), *ref2 = malloc((size_t)T * n * 4);
			double *ref = malloc((size_t)T * n * sizeof(double)), *w = malloc(((size_t)400) * sizeof(double));
			int32_t *pos = malloc((size_t)T * 4), *bto = malloc((size_t)T * 4), *bt = malloc((size_t)n_blocks * 4);
			if (!k || !v || !q || !y || !y2 || !ref2 || !ref || !w || !pos || !bto || !bt) {
				printf("FAIL out of memory\n");
				fails++;
				free(k), free(v), free(q), free(y), free(y2), free(ref2), free(ref), free(w), free(pos), free(bto), free(bt);
				return;
			}
			attn_data(k, v, cache_n, q, (size_t)T * n);
			for (int i = 0; i < n_blocks; i++)
				bt[i] = i;
			for (int i = n_blocks - 1; i > 0; i--) { /* scattered blocks */
				int j = (int)(rnd() % (uint32_t)(i + 1));
				int32_t x = bt[i];
				bt[i] = bt[j];
				bt[j] = x;
			}
			int t = 0, off = 0;
			for (int s = 0; s < batches[bi].n; s++) {
				for (int i = 0; i < batches[bi].len[s]; i++, t++) {
					pos[t] = batches[bi].hist[s] + i;
					bto[t] = off;
				}
				off += (batches[bi].hist[s] + batches[bi].len[s] + BSZ - 1) / BSZ;
			}
			attn_definition(q, k, v, T, NH, NKV, HD, BSZ, pos, bto, bt, w, ref);
			for (int path = LCU_ATTN_WHOLE; path <= LCU_ATTN_MMA; path++) {
				if ((path == LCU_ATTN_SPLIT && T > 64) || (path == LCU_ATTN_TILED && (HD > 128 || HD % 8)) ||
				    (path == LCU_ATTN_MMA && (HD > 128 || HD % 16)))
					continue;
				for (size_t i = 0; i < (size_t)T * n; i++)
					y[i] = NAN;
				struct lcu_check_args a = {.kernel = LCU_ATTN, .gpu = gpu, .rows = T, .n = n, .x = q, .y = y,
							   .n_head = NH, .n_kv = NKV, .hd = HD, .bs = BSZ,
							   .n_blocks = n_blocks, .n_bt = n_blocks, .pos = pos, .bt_off = bto,
							   .bt = bt, .k = k, .v = v, .attn = (enum lcu_attn)path};
				int rc = run(&a, err, sizeof(err));
				if (path == LCU_ATTN_MMA && rc == -ENODEV) {
					printf("skip attention on tensor cores: %s\n", err);
					continue;
				}
				/* no atomics, no reduction order left to chance: a second run
				 * gives the same bits (a race in shared memory would not) */
				int ndiff = 0;
				if (!rc) {
					memcpy(ref2, y, (size_t)T * n * 4);
					a.y = y2;
					rc = run(&a, err, sizeof(err));
					for (size_t i = 0; !rc && i < (size_t)T * n; i++)
						ndiff += memcmp(&y2[i], &ref2[i], 4) != 0;
				}
				double worst = 0;
				int wt = 0, wh = 0, wd = 0, nbad = 0; /* where the worst is; rows over the bound */
				for (t = 0; t < T && !rc; t++)
					for (int h = 0; h < NH; h++) {
						double scale = 1e-3, e = 0;
						int ed = 0;
						for (int d = 0; d < HD; d++) {
							size_t i = (size_t)t * n + (size_t)h * HD + d;
							scale = fmax(scale, fabs(ref[i]));
							double x = fabs(y[i] - ref[i]);
							if (!isnan(e) && !(x <= e))
								e = x, ed = d; /* a NaN stays */
						}
						e /= scale;
						nbad += !(e <= 1e-2);
						if (!isnan(worst) && !(e <= worst))
							worst = e, wt = t, wh = h, wd = ed;
					}
				snprintf(what, sizeof(what), "attention %s, %d tokens, heads %d/%d x %d", path_name[path], T, NH,
					 NKV, HD);
				if (ndiff)
					printf("FAIL attention %s, %d tokens: %d of %d outputs differ between two runs on the same input\n",
					       path_name[path], T, ndiff, T * n), fails++;
				report(!rc && worst <= 1e-2, "relative error %.2g (bound %.0e, bf16 output)", what, worst, 1e-2);
				if (rc)
					printf("     %s\n", err);
				else if (!(worst <= 1e-2)) {
					size_t i = (size_t)wt * n + (size_t)wh * HD + wd;
					printf("     %d of %d (token, head) rows over; worst: token %d (position %d), head %d, "
					       "element %d: %g, want %g\n", nbad, T * NH, wt, pos[wt], wh, wd, y[i], ref[i]);
				}
			}
			free(k), free(v), free(q), free(y), free(y2), free(ref2), free(ref), free(w), free(pos), free(bto), free(bt);
		}
}

/*
 * A NaN in V (a value that overflowed upstream) on every attention path:
 * the tokens whose positions include it must get NaN where the definition
 * does (the poisoned dimension; the others may be NaN too: the tensor-core
 * path turns the whole position into NaN), and every other output must be
 * finite and within the usual bound. One sequence of 40 new tokens, so the
 * poisoned position (21) lies inside a tile of this step's tokens, with
 * earlier tokens of the same tile that must not see it; 4 query heads a kv
 * head, kv head 0 poisoned, kv head 1 clean.
 */
static void attn_nan_checks(locus_cuda_kernel_check_fn run, int gpu)
{
	static const char *const path_name[] = {"whole", "split", "tiled", "tensor cores"};
	const int T = 40, NH = 8, NKV = 2, HD = 64, BSZ = 16, n = NH * HD, n_bt = (T + BSZ - 1) / BSZ;
	const int n_blocks = n_bt + 2, PBAD = 21, DBAD = 5;
	const size_t blk_stride = (size_t)NKV * BSZ * HD, cache_n = (size_t)n_blocks * blk_stride;
	float *k = malloc(cache_n * 4), *v = malloc(cache_n * 4), *q = malloc((size_t)T * n * 4);
	float *y = malloc((size_t)T * n * 4);
	double *ref = malloc((size_t)T * n * sizeof(double)), w[64];
	int32_t pos[40], bto[40], bt[8];
	char err[256], what[96];
	if (!k || !v || !q || !y || !ref) {
		printf("FAIL out of memory\n");
		fails++;
		free(k), free(v), free(q), free(y), free(ref);
		return;
	}
	attn_data(k, v, cache_n, q, (size_t)T * n);
	for (int i = 0; i < n_blocks; i++)
		bt[i] = n_blocks - 1 - i; /* not in order */
	for (int t = 0; t < T; t++)
		pos[t] = t, bto[t] = 0;
	/* kv head 0's V at position PBAD, dimension DBAD */
	const size_t bad = (size_t)bt[PBAD / BSZ] * blk_stride + (size_t)(PBAD % BSZ) * HD + DBAD;
	v[bad] = NAN;
	attn_definition(q, k, v, T, NH, NKV, HD, BSZ, pos, bto, bt, w, ref); /* NaN where it reaches */
	for (int path = LCU_ATTN_WHOLE; path <= LCU_ATTN_MMA; path++) {
		for (size_t i = 0; i < (size_t)T * n; i++)
			y[i] = 0; /* not NaN: a NaN must come from the kernel */
		struct lcu_check_args a = {.kernel = LCU_ATTN, .gpu = gpu, .rows = T, .n = n, .x = q, .y = y, .n_head = NH,
					   .n_kv = NKV, .hd = HD, .bs = BSZ, .n_blocks = n_blocks, .n_bt = n_blocks,
					   .pos = pos, .bt_off = bto, .bt = bt, .k = k, .v = v, .attn = (enum lcu_attn)path};
		int rc = run(&a, err, sizeof(err));
		if (path == LCU_ATTN_MMA && rc == -ENODEV) {
			printf("skip attention on tensor cores, NaN in V: %s\n", err);
			continue;
		}
		int hidden = 0, leaked = 0; /* NaN the definition has that the output lacks; NaN or error where it has none */
		double worst = 0;
		for (int t = 0; t < T && !rc; t++)
			for (int h = 0; h < NH; h++) {
				const bool sees = pos[t] >= PBAD && h / (NH / NKV) == 0;
				double scale = 1e-3, e = 0;
				for (int d = 0; d < HD; d++) {
					size_t i = (size_t)t * n + (size_t)h * HD + d;
					if (isnan(ref[i])) {
						hidden += !isnan(y[i]);
						continue;
					}
					if (sees && isnan(y[i]))
						continue; /* allowed: the position's other dimensions */
					scale = fmax(scale, fabs(ref[i]));
					double x = fabs(y[i] - ref[i]);
					e = worse(e, x);
				}
				e /= scale;
				leaked += !(e <= 1e-2);
				worst = worse(worst, e);
			}
		snprintf(what, sizeof(what), "attention %s, NaN in V at position %d", path_name[path], PBAD);
		printf("%s %-60s %d NaN outputs hidden, %d rows wrong or NaN that must not be (worst error %.2g, bound 1e-2)\n",
		       !rc && !hidden && !leaked ? "ok  " : "FAIL", what, hidden, leaked, worst);
		if (rc || hidden || leaked)
			fails++;
		if (rc)
			printf("     %s\n", err);
	}
	free(k), free(v), free(q), free(y), free(ref);
}

/*
 * Top-K candidates (the sampling path that keeps logits on the device)
 * against kern_top_row: the same ids in the same order, the same logits
 * bit for bit (they are copies), lse, lz and lz_t (at inverse temperatures
 * from 0.5 to 20) within 1e-4 + 1e-5 |lse| (f32 sums on the device, double
 * on the host). Rows: random, few distinct values
 * (ties across the threshold: the lowest ids must win), NaNs (lse NaN,
 * never a candidate while enough numbers remain), zeros of both signs and
 * -inf, ascending (the worst case of the host's insertion).
 */
static void top_checks(locus_cuda_kernel_check_fn run, int gpu)
{
	static const int sizes[][2] = {{1, 1},     {2, 31},     {6, 40},      {3, 64},
				       {5, 65},    {6, 577},    {6, 4099},    {6, 49152}, {6, 128256}, {6, 270001}};
	char err[256], what[64];
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		int rows = sizes[si][0], n = sizes[si][1];
		float *x = malloc((size_t)rows * n * 4), inv_t[6] = {1.0f / 0.7f, 1.0f, 20.0f, 0.5f, 1.0f / 1.3f, 1.25f};
		struct kern_top *got = malloc((size_t)rows * sizeof(*got)), ref;
		if (!x || !got) {
			printf("FAIL out of memory\n");
			fails++;
			free(x), free(got);
			return;
		}
		for (int r = 0; r < rows; r++) {
			float *xr = x + (size_t)r * n;
			for (int i = 0; i < n; i++) {
				switch (r) {
				case 1: xr[i] = (float)(rnd() % 7); break;                  /* ties */
				case 3: xr[i] = i % 5 == 0 ? NAN : frnd() * 8; break;       /* NaNs */
				case 4: xr[i] = i % 3 == 0 ? -0.0f : i % 3 == 1 ? 0.0f : -INFINITY; break;
				case 5: xr[i] = (float)i * 1e-3f - 20; break;               /* ascending */
				default: xr[i] = frnd() * 16; break;
				}
			}
		}
		memset(got, 0xff, (size_t)rows * sizeof(*got));
		struct lcu_check_args a = {
		    .kernel = LCU_TOP, .gpu = gpu, .rows = rows, .n = n, .x = x, .w = inv_t, .top = got};
		int rc = run(&a, err, sizeof(err));
		int bad = rc ? rows : 0;
		double worst = 0;
		for (int r = 0; r < rows && !rc; r++) {
			kern_top_row(x + (size_t)r * n, n, inv_t[r], &ref);
			const struct kern_top *g = &got[r];
			bool ok = g->n == ref.n;
			for (int i = 0; ok && i < ref.n; i++)
				ok = g->id[i] == ref.id[i] && !memcmp(&g->logit[i], &ref.logit[i], 4);
			const float gs[3] = {g->lse, g->lz, g->lz_t}, rs[3] = {ref.lse, ref.lz, ref.lz_t};
			for (int j = 0; j < 3; j++) {
				if (isnan(rs[j]) || isinf(rs[j])) {
					ok = ok && (isnan(rs[j]) ? isnan(gs[j]) : gs[j] == rs[j]);
				} else {
					double e = fabs((double)gs[j] - rs[j]) / (1e-4 + 1e-5 * fabs(rs[j]));
					ok = ok && e <= 1;
					worst = e > worst ? e : worst;
				}
			}
			if (!ok && !bad)
				printf("     row %d: n %d/%d, first ids %d/%d, lse %.6g/%.6g, lz_t %.6g/%.6g\n", r, g->n,
				       ref.n, g->id[0], ref.id[0], g->lse, ref.lse, g->lz_t, ref.lz_t);
			bad += !ok;
		}
		snprintf(what, sizeof(what), "top-%d %dx%d", KERN_TOP_K, rows, n);
		report(!bad, "%.0f rows differ from kern_top_row; lse, lz, lz_t error %.2f of the bound", what, bad, worst);
		if (rc)
			printf("     %s\n", err);
		free(x), free(got);
	}
}

static float bf16_round(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	u += 0x7fffu + ((u >> 16) & 1); /* nearest even; the inputs here are finite */
	u &= 0xffff0000u;
	memcpy(&f, &u, 4);
	return f;
}

/* Sets environment variable name to val for a while; what was there
 * before (NULL: unset), for env_restore. */
static char *env_force(const char *name, const char *val)
{
	const char *prev = getenv(name);
	char *saved = prev ? strdup(prev) : NULL;
	setenv(name, val, 1);
	return saved;
}

static void env_restore(const char *name, char *saved)
{
	if (saved)
		setenv(name, saved, 1);
	else
		unsetenv(name);
	free(saved);
}

/*
 * One GEMV case: rows x k weights of type, T tokens, against the
 * dequantized rows times x in double. x as the kernel sees it: rounded to
 * bf16, and with x8 (the int8-activation GEMV) then quantized per 32 as the
 * CPU backend quantizes it (kern_act_quantize_row_ref), so only the
 * kernel's f32 sums differ: bound 1e-5 of sum |w x|, 1e-4 without x8.
 * glu: 2 x rows rows, gate then up, and the output h = silu(g) u rounded
 * to bf16: bound 2^-8 |h| (the rounding) plus what the sums' bounds move h
 * by (|dh/dg| <= 1.1 |u|, dh/du = silu(g)) plus 1e-6 |h| (__expf).
 */
static void gemv_check(locus_cuda_kernel_check_fn run, int gpu, uint32_t type, int rows, int k, int T, bool x8,
		       bool glu)
{
	char err[256], what[96];
	const int wrows = glu ? 2 * rows : rows;
	const double tol = x8 ? 1e-5 : 1e-4;
	size_t rb = kern_row_bytes(type, k);
	uint8_t *qw = malloc((size_t)wrows * rb);
	float *w = malloc((size_t)k * 4), *x = malloc((size_t)T * k * 4), *y = malloc((size_t)T * rows * 4);
	double *wd = malloc((size_t)wrows * k * sizeof(double)), *xd = malloc((size_t)T * k * sizeof(double));
	struct kern_act_q8 *aq = malloc((size_t)(k / 32 + 1) * sizeof(*aq));
	if (!qw || !w || !x || !y || !wd || !xd || !aq) {
		printf("FAIL out of memory\n");
		fails++;
		goto out;
	}
	for (int r = 0; r < wrows; r++) {
		for (int i = 0; i < k; i++)
			w[i] = frnd();
		kern_quantize_row(type, w, qw + (size_t)r * rb, k);
		kern_dequantize_row(type, qw + (size_t)r * rb, w, k);
		for (int i = 0; i < k; i++)
			wd[(size_t)r * k + i] = w[i];
	}
	for (size_t i = 0; i < (size_t)T * k; i++)
		x[i] = frnd() * 2;
	for (int t = 0; t < T; t++) {
		for (int i = 0; i < k; i++)
			w[i] = (float)bf16_round(x[(size_t)t * k + i]);
		if (x8)
			kern_act_quantize_row_ref(type, w, aq, k);
		for (int i = 0; i < k; i++)
			xd[(size_t)t * k + i] = x8 ? (double)aq[i / 32].d * aq[i / 32].qs[i % 32] : w[i];
	}
	for (size_t i = 0; i < (size_t)T * rows; i++)
		y[i] = NAN;
	struct lcu_check_args a = {.kernel = LCU_GEMV, .gpu = gpu, .rows = rows, .n = k, .x = x, .y = y,
				   .qtype = type, .T = T, .qw = qw, .q_row_bytes = rb, .glu = glu};
	int rc = run(&a, err, sizeof(err));
	double worst = 0;
	for (int t = 0; t < T && !rc; t++)
		for (int r = 0; r < rows; r++) {
			double ref[2] = {0, 0}, mag[2] = {0, 0};
			for (int j = 0; j < (glu ? 2 : 1); j++)
				for (int i = 0; i < k; i++) {
					double p = wd[((size_t)j * rows + r) * k + i] * xd[(size_t)t * k + i];
					ref[j] += p;
					mag[j] += fabs(p);
				}
			double got = y[(size_t)t * rows + r], e;
			if (glu) {
				double g = ref[0], u = ref[1], sg = g / (1 + exp(-g)), h = sg * u;
				double bound = ldexp(1, -8) * fabs(h) + 1e-6 * fabs(h) +
					       (1.1 * fabs(u) * tol * mag[0] + fabs(sg) * tol * mag[1]) * (1 + ldexp(1, -8)) +
					       1e-30;
				e = fabs(got - h) / bound;
			} else {
				e = fabs(got - ref[0]) / (mag[0] + 1e-30);
			}
			worst = worse(worst, e);
		}
	snprintf(what, sizeof(what), "gemv %s%s%s %dx%d, T=%d", glu ? "glu " : "", x8 ? "x8 " : "", kern_type_name(type),
		 rows, k, T);
	if (glu)
		report(!rc && worst <= 1, "error %.2g of its bound (bf16 rounding + the sums' %.0e of sum |w x|)", what,
		       worst, tol);
	else if (x8)
		report(!rc && worst <= 1e-5, "error %.2g of sum |w x_q| (bound %.0e; x quantized as the CPU does)", what,
		       worst, 1e-5);
	else
		report(!rc && worst <= 1e-4, "error %.2g of sum |w x| (bound %.0e, f32 accumulation)", what, worst, 1e-4);
	if (rc)
		printf("     %s\n", err);
out:
	free(qw), free(w), free(x), free(y), free(wd), free(xd), free(aq);
}

/* The decode path's fused GEMV (k_gemv_q, k_gemv_bf16), every type. */
static void gemv_checks(locus_cuda_kernel_check_fn run, int gpu)
{
	static const uint32_t types[] = {KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K,
					 KERN_TYPE_BF16};
	static const int shapes[][3] = {{1, 32, 1},     {7, 96, 3},    {33, 4096, 8}, {5, 14336, 2},
					{130, 576, 5},  {3, 256, 1},   {17, 768, 4}};
	char *saved = env_force("LOCUS_CUDA_GEMV_X8", "0");
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++)
		for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
			if (shapes[si][1] % kern_type_block_elems(types[ti]) == 0) /* K-quants: whole super-blocks */
				gemv_check(run, gpu, types[ti], shapes[si][0], shapes[si][1], shapes[si][2], false, false);
	/* the gate|up GEMV with its SwiGLU, at the 1-2 tokens it takes */
	static const int glu_shapes[][3] = {{1, 32, 1}, {7, 96, 2}, {37, 4096, 1}, {5, 14336, 2}, {130, 576, 1}};
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++)
		for (size_t si = 0; si < sizeof(glu_shapes) / sizeof(glu_shapes[0]); si++)
			if (glu_shapes[si][1] % kern_type_block_elems(types[ti]) == 0)
				gemv_check(run, gpu, types[ti], glu_shapes[si][0], glu_shapes[si][1], glu_shapes[si][2],
					   false, true);
	env_restore("LOCUS_CUDA_GEMV_X8", saved);
}

/* The int8-activation GEMV (LOCUS_CUDA_GEMV_X8=1) on Q8_0, Q4_0, Q4_1 rows
 * at 1-2 tokens. */
static void gemv_x8_checks(locus_cuda_kernel_check_fn run, int gpu)
{
	static const uint32_t types[] = {KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1};
	static const int shapes[][3] = {{1, 32, 1}, {7, 96, 2}, {33, 4096, 1}, {5, 14336, 2}, {130, 576, 2}, {17, 768, 1}};
	char *saved = env_force("LOCUS_CUDA_GEMV_X8", "1");
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++)
		for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++)
			for (int glu = 0; glu < 2; glu++)
				gemv_check(run, gpu, types[ti], shapes[si][0], shapes[si][1], shapes[si][2], true, glu);
	env_restore("LOCUS_CUDA_GEMV_X8", saved);
}

/* ---- whole steps ---- */
struct seqs {
	int32_t len[NSEQ];
	int32_t *ids[NSEQ];
	int32_t bt[NSEQ][POOL];
	int32_t nb[NSEQ];
	int32_t done[NSEQ]; /* positions fed */
};

static int is_float_type(uint32_t t)
{
	return t == KERN_TYPE_F32 || t == KERN_TYPE_F16 || t == KERN_TYPE_BF16;
}

/* How the CUDA side of a step is run. */
enum mode {
	M_BOTH, /* step_argmax with logits: logits and device argmax compared */
	M_STEP, /* step (cuda_step): logits only */
	M_IDS,  /* step_argmax with logits NULL (the engine's greedy path): ids only */
	M_TOP,  /* step_top with logits: the device's candidates against kern_top_row of its logits */
	M_TOPONLY, /* step_top with logits NULL (the engine's sampling path): candidates against the CPU's logits */
};

struct tally {
	double worst;
	int rows, bad, ties;
};

static struct kern_top g_top[MAXB];
static float g_inv_t[MAXB]; /* the step_top rows' inverse temperatures: 1 / (0.25 .. 2) */

/* The device's candidates of row r (M_TOP, M_TOPONLY), 1 if they pass:
 * with the device's logits g, exactly kern_top_row(g) (lse, lz and lz_t at
 * inverse temperature inv_t within 1e-4 + 1e-5 |lse|); without them,
 * against the CPU's c with the logits tolerance tol_abs: distinct ids,
 * each logit within tol_abs of the CPU's at its id, in order, none far
 * below the CPU's 64th best, no CPU candidate left out that is far above
 * the device's last, lse within tol_abs, lz within 2 tol_abs and lz_t
 * within 2 inv_t tol_abs (each term's exponent moves by at most that). */
static int check_top(const struct kern_top *t, const float *c, const float *g, int32_t V, float inv_t, double tol_abs,
		     int r)
{
	struct kern_top ref;
	kern_top_row(g ? g : c, V, inv_t, &ref);
	int ok = t->n == ref.n;
	for (int i = 0; ok && i < t->n; i++) {
		if (g)
			ok = t->id[i] == ref.id[i] && !memcmp(&t->logit[i], &ref.logit[i], 4);
		else
			ok = t->id[i] >= 0 && t->id[i] < V && fabs((double)t->logit[i] - c[t->id[i]]) <= tol_abs &&
			     (i == 0 || t->logit[i] <= t->logit[i - 1]) && c[t->id[i]] >= ref.logit[ref.n - 1] - 2 * tol_abs;
		for (int j = 0; ok && !g && j < i; j++)
			ok = t->id[j] != t->id[i];
	}
	for (int i = 0; ok && !g && i < ref.n; i++) {
		int found = 0;
		for (int j = 0; j < t->n && !found; j++)
			found = t->id[j] == ref.id[i];
		ok = found || ref.logit[i] <= t->logit[t->n - 1] + 2 * tol_abs;
	}
	double lse_tol = g ? 1e-4 + 1e-5 * fabs(ref.lse) : tol_abs;
	double lz_tol = g ? 1e-4 + 1e-5 * fabs(ref.lz) : 2 * tol_abs;
	double lz_t_tol = g ? 1e-4 + 1e-5 * fabs(ref.lz_t) : 2 * inv_t * tol_abs;
	ok = ok && fabs((double)t->lse - ref.lse) <= lse_tol && fabs((double)t->lz - ref.lz) <= lz_tol &&
	     fabs((double)t->lz_t - ref.lz_t) <= lz_t_tol;
	if (!ok)
		printf("     row %d: candidates differ (n %d/%d, first %d/%d, lse %.6g/%.6g, lz_t %.6g/%.6g)%s\n", r, t->n,
		       ref.n, t->id[0], ref.id[0], t->lse, ref.lse, t->lz_t, ref.lz_t, g ? "" : " from the CPU's");
	return ok;
}

/* Runs one batch on both backends and compares every logit row. */
static void compare_step(kern_backend_t *cpu, kern_backend_t *gpu, const struct kern_batch *b0, int32_t V, float tol,
			 enum mode mode, float *lc, float *lg, int32_t *ids, struct tally *ty)
{
	struct kern_batch bt = *b0; /* step_top rows at their own temperatures */
	const struct kern_batch *b = &bt;
	for (int32_t r = 0; r < bt.n_logits && mode >= M_TOP; r++)
		g_inv_t[r] = 1.0f / (0.25f + 0.25f * (float)(r % 8));
	bt.inv_temp = mode >= M_TOP ? g_inv_t : NULL;
	const int have_lg = mode != M_IDS && mode != M_TOPONLY;
	for (size_t i = 0; i < (size_t)b->n_logits * V; i++)
		lc[i] = lg[i] = NAN; /* poison */
	for (int32_t r = 0; r < b->n_logits; r++)
		ids[r] = -1;
	memset(g_top, 0xff, sizeof(g_top));
	int rc1 = kern_backend_step(cpu, b, lc);
	int rc2 = mode == M_STEP ? kern_backend_step(gpu, b, lg)
		  : mode >= M_TOP ? kern_backend_step_top(gpu, b, have_lg ? lg : NULL, ids, g_top)
				  : kern_backend_step_argmax(gpu, b, have_lg ? lg : NULL, ids);
	/* candidates only: the odd rows fetched whole afterwards, as the
	 * dispatcher does for rows the candidates cannot serve */
	int32_t odd[MAXB], n_odd = 0;
	for (int32_t r = 1; r < b->n_logits && mode == M_TOPONLY; r += 2)
		odd[n_odd++] = r;
	if (!rc2 && n_odd)
		rc2 = kern_backend_fetch_rows(gpu, odd, n_odd, lg);
	ty->rows += b->n_logits;
	if (rc1 || rc2) {
		printf("FAIL step: cpu %d, cuda %d\n", rc1, rc2);
		fails++;
		ty->bad += b->n_logits;
		return;
	}
	for (int32_t r = 0; r < b->n_logits; r++) {
		const float *c = lc + (size_t)r * V, *g = lg + (size_t)r * V;
		const int row_lg = have_lg || (mode == M_TOPONLY && r % 2);
		double scale = 0, err = 0;
		int finite = 1;
		for (int32_t i = 0; i < V; i++) {
			scale = fmax(scale, fabs(c[i]));
			if (!isfinite(c[i]) || (row_lg && !isfinite(g[i])))
				finite = 0;
			if (row_lg)
				err = fmax(err, fabs((double)g[i] - c[i]));
		}
		double rel = finite ? err / (scale > 0 ? scale : 1) : INFINITY;
		int32_t ac = kern_argmax(c, V);
		int32_t ag = mode == M_IDS ? ids[r] : mode == M_TOPONLY ? g_top[r].id[0] : kern_argmax(g, V);
		int ok = finite && rel <= tol && ag >= 0 && ag < V && (mode == M_STEP || mode == M_IDS || ids[r] == ag);
		if (ok && mode >= M_TOP)
			ok = check_top(&g_top[r], c, row_lg ? g : NULL, V, g_inv_t[r], tol * scale, r);
		/* A different greedy token passes only as a near tie on the CPU's
		 * side; ties are counted and bounded by the caller. */
		if (ok && ac != ag) {
			if (c[ac] - c[ag] <= tol * scale)
				ty->ties++;
			else
				ok = 0;
		}
		if (!(rel <= ty->worst))
			ty->worst = rel;
		if (!ok && ty->bad < 3)
			printf("     row %d: relative error %.3g, greedy cpu %d cuda %d (device argmax %d)\n", r, rel, ac, ag,
			       ids[r]);
		ty->bad += !ok;
	}
}

static void model_check(const char *path, int gpu)
{
	struct engine_opts o;
	engine_opts_default(&o);
	o.model_path = path;
	struct engine_core core = {0};
	char err[512];
	if (engine_core_load(&core, &o, err, sizeof(err))) {
		printf("FAIL %s: %s\n", path, err);
		fails++;
		return;
	}
	const struct kern_weights *w = &core.model->w;
	const int32_t V = w->hp.n_vocab;
	struct kern_backend_config bc = {.n_threads = 0, .numa_node = -1, .kv_block_size = BS, .n_kv_blocks = POOL,
					 .max_batch_tokens = MAXB, .gpu = gpu};
	kern_backend_t *cpu = kern_backend_cpu_open(w, &bc, err, sizeof(err));
	kern_backend_t *cu = cpu ? kern_backend_cuda_open(w, &bc, err, sizeof(err)) : NULL;
	float tol = is_float_type(w->layers[0].wq.type) && is_float_type(w->output.type) ? 3e-2f : 6e-2f;
	float *lc = malloc((size_t)MAXB * V * 4), *lg = malloc((size_t)MAXB * V * 4);
	int32_t tok[MAXB], pos[MAXB], sidx[MAXB], li[MAXB], ids[MAXB];
	struct seqs sq = {.len = {37, 101, 5}};
	if (!cpu || !cu || !lc || !lg) {
		printf("FAIL %s: %s\n", path, cpu && cu ? "out of memory" : err);
		fails++;
		goto out;
	}
	/* blocks: a shuffled pool, so no sequence's blocks are contiguous */
	int32_t perm[POOL];
	for (int i = 0; i < POOL; i++)
		perm[i] = i;
	for (int i = POOL - 1; i > 0; i--) {
		int j = (int)(rnd() % (uint32_t)(i + 1));
		int32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	int next = 0;
	for (int s = 0; s < NSEQ; s++) {
		int need = (sq.len[s] + NDEC + BS - 1) / BS;
		sq.nb[s] = need;
		for (int j = 0; j < need; j++)
			sq.bt[s][j] = perm[next++];
		sq.ids[s] = malloc((size_t)(sq.len[s] + NDEC) * 4);
		if (!sq.ids[s]) {
			fails++;
			goto out;
		}
		for (int i = 0; i < sq.len[s]; i++)
			sq.ids[s][i] = (int32_t)(rnd() % (uint32_t)V);
	}
	struct kern_seq ks[NSEQ];
	for (int s = 0; s < NSEQ; s++)
		ks[s] = (struct kern_seq){sq.bt[s], sq.nb[s]};
	struct tally ty = {0, 0, 0, 0};
	int steps = 0;
	/* prefill: chunks of up to MAXB tokens across the sequences, every logit */
	for (;;) {
		int n = 0;
		for (int s = 0; s < NSEQ && n < MAXB; s++)
			while (sq.done[s] < sq.len[s] && n < MAXB) {
				tok[n] = sq.ids[s][sq.done[s]];
				pos[n] = sq.done[s]++;
				sidx[n] = s;
				li[n] = n;
				n++;
			}
		if (!n)
			break;
		struct kern_batch b = {n, tok, pos, sidx, NSEQ, ks, n, li, NULL};
		compare_step(cpu, cu, &b, V, tol, M_BOTH, lc, lg, ids, &ty);
		steps++;
		/* the CPU's greedy token of each sequence's last prompt position */
		for (int i = 0; i < n; i++)
			if (pos[i] == sq.len[sidx[i]] - 1)
				sq.ids[sidx[i]][sq.len[sidx[i]]] = kern_argmax(lc + (size_t)i * V, V);
	}
	for (int d = 0; d < NDEC; d++) {
		for (int s = 0; s < NSEQ; s++) {
			tok[s] = sq.ids[s][sq.done[s]];
			pos[s] = sq.done[s]++;
			sidx[s] = s;
			li[s] = s;
		}
		struct kern_batch b = {NSEQ, tok, pos, sidx, NSEQ, ks, NSEQ, li, NULL};
		static const enum mode dm[4] = {M_BOTH, M_IDS, M_TOP, M_TOPONLY};
		compare_step(cpu, cu, &b, V, tol, dm[d % 4], lc, lg, ids, &ty);
		steps++;
		for (int s = 0; s < NSEQ; s++)
			if (sq.done[s] < sq.len[s] + NDEC)
				sq.ids[s][sq.done[s]] = kern_argmax(lc + (size_t)s * V, V);
	}
	/* The engine's shapes: the last 8 prompt tokens of each sequence again
	 * (same tokens at the same positions: the KV they write is unchanged),
	 * logits of each sequence's last token only, through step (logits),
	 * step_argmax without logits (ids) and step_top with and without. */
	for (int mode = M_STEP; mode <= M_TOPONLY; mode++) {
		int n = 0, nl = 0;
		for (int s = 0; s < NSEQ; s++) {
			int k = sq.len[s] < 8 ? sq.len[s] : 8;
			for (int i = sq.len[s] - k; i < sq.len[s]; i++) {
				tok[n] = sq.ids[s][i];
				pos[n] = i;
				sidx[n] = s;
				n++;
			}
			li[nl++] = n - 1;
		}
		struct kern_batch b = {n, tok, pos, sidx, NSEQ, ks, nl, li, NULL};
		compare_step(cpu, cu, &b, V, tol, (enum mode)mode, lc, lg, ids, &ty);
		steps++;
	}
	/* kv_copy: sequence 0's blocks copied to fresh ones on both sides, then
	 * its last position again through the copies. */
	{
		int32_t bt2[POOL];
		int rc = 0;
		for (int j = 0; j < sq.nb[0]; j++) {
			bt2[j] = perm[next++];
			rc |= kern_backend_kv_copy(cpu, sq.bt[0][j], bt2[j]) | kern_backend_kv_copy(cu, sq.bt[0][j], bt2[j]);
		}
		struct kern_seq k2 = {bt2, sq.nb[0]};
		int32_t p = sq.done[0] - 1, t0 = sq.ids[0][p], s0 = 0, l0 = 0;
		struct kern_batch b = {1, &t0, &p, &s0, 1, &k2, 1, &l0, NULL};
		if (rc) {
			printf("FAIL kv_copy: %d\n", rc);
			ty.bad++;
		} else {
			compare_step(cpu, cu, &b, V, tol, M_BOTH, lc, lg, ids, &ty);
		}
		steps++;
	}
	char what[600];
	snprintf(what, sizeof(what), "%s (%s weights, %d steps, %d logit rows)", path, kern_type_name(w->layers[0].wq.type),
		 steps, ty.rows);
	int max_ties = ty.rows / 50 > 1 ? ty.rows / 50 : 1;
	int ok = !ty.bad && ty.ties <= max_ties;
	printf("%s %s: worst relative error %.3g (tol %.0e), %d rows failed, %d greedy near-ties (at most %d)\n",
	       ok ? "ok  " : "FAIL", what, ty.worst, tol, ty.bad, ty.ties, max_ties);
	fails += !ok;
out:
	for (int s = 0; s < NSEQ; s++)
		free(sq.ids[s]);
	free(lc);
	free(lg);
	kern_backend_close(cu);
	kern_backend_close(cpu);
	engine_core_close(&core);
}

int main(int argc, char **argv)
{
	int gpu = 0, kernels = 0, ceilings = 0, first = 1;
	for (; first < argc && argv[first][0] == '-'; first++) {
		if (!strcmp(argv[first], "--gpu") && first + 1 < argc) {
			gpu = atoi(argv[++first]);
		} else if (!strcmp(argv[first], "--kernels")) {
			kernels = 1;
		} else if (!strcmp(argv[first], "--ceilings")) {
			ceilings = 1;
		} else {
			fprintf(stderr, "usage: cuda-check [--gpu N] [--kernels] [--ceilings] [MODEL.gguf ...]\n");
			return argv[first][1] == 'h' || !strcmp(argv[first], "--help") ? 0 : 2;
		}
	}
	char err[512];
	void *mod = kern_cuda_module(err, sizeof(err));
	if (!mod) {
		printf("skip: %s\n", err);
		return 77;
	}
	/* A GPU at all? A tiny kernel run: no device (or too old a driver) is
	 * a skip; a module that loads but cannot run its kernels is a failure. */
	{
		locus_cuda_kernel_check_fn run;
		*(void **)&run = dlsym(mod, "locus_cuda_kernel_check");
		float x = 1;
		int32_t id = -1;
		struct lcu_check_args a = {.kernel = LCU_ARGMAX, .gpu = gpu, .rows = 1, .n = 1, .x = &x, .ids = &id};
		int rc = run ? run(&a, err, sizeof(err)) : -ENOSYS;
		if (rc == -ENODEV) {
			printf("skip: %s\n", err);
			return 77;
		}
		if (rc || id != 0) {
			printf("FAIL the CUDA module cannot run a kernel: %s\n", run ? err : "no locus_cuda_kernel_check");
			return 1;
		}
	}
	if (kernels)
		kernel_checks(mod, gpu);
	if (ceilings) {
		locus_cuda_ceilings_fn ce;
		*(void **)&ce = dlsym(mod, "locus_cuda_ceilings");
		struct lcu_ceilings c;
		if (!ce || ce(gpu, &c, err, sizeof(err))) {
			printf("FAIL ceilings: %s\n", ce ? err : "no locus_cuda_ceilings in the module");
			fails++;
		} else {
			printf("ceilings: %s copy %.0f GB/s gemm %.1f TFLOP/s\n", c.name, c.copy_gbps, c.gemm_tflops);
		}
	}
	for (int i = first; i < argc; i++)
		model_check(argv[i], gpu);
	printf("cuda-check: %s\n", fails ? "FAILED" : "ok");
	return fails ? 1 : 0;
}
