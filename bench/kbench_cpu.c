/*
 * kbench_cpu: single-threaded microbenchmark of kern_matmul per weight type
 * on the matrix shapes of SmolLM2-135M and Llama-3-8B.
 *
 * Each configuration (type, shape, n_tok) rotates over enough weight
 * buffers that together they exceed the caches we do not want to flatter
 * the numbers (default 64 MiB, -m), warms up, then reports the median of
 * the timed runs: GB/s of weight bytes read and GOP/s (2 * k * rows * n_tok),
 * and the same for the fastest run (less disturbed by other processes).
 * At small shapes the scalar reference is timed once for a speed ratio.
 *
 * -s model instead times the matrix products of a whole SmolLM2-135M forward
 * pass (Q4_1 layers + Q8_0 output, ~96 MB of distinct weights).
 *
 * usage: kbench_cpu [-t Q4_1,Q8_0,...] [-n 1,4,16,64,512] [-s smol|llama|all|model]
 *                   [-m rotate_MiB] [-T seconds_per_config]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/quant.h"

struct shape {
	const char *name;
	int64_t k, rows;
	int llama; /* 1: Llama-3-8B shape */
};

static const struct shape g_shapes[] = {
	{"smol qkvo 576x576", 576, 576, 0},  {"smol kv 576->192", 576, 192, 0},
	{"smol ffn 576->1536", 576, 1536, 0}, {"smol down 1536->576", 1536, 576, 0},
	{"smol out 576->49152", 576, 49152, 0}, {"l3 attn 4096->4096", 4096, 4096, 1},
	{"l3 ffn 4096->14336", 4096, 14336, 1},
};

static const uint32_t g_all_types[] = {KERN_TYPE_Q4_1, KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_K,
				       KERN_TYPE_Q6_K, KERN_TYPE_F16,  KERN_TYPE_BF16, KERN_TYPE_F32};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 88172645463325252ull;
static float rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void *xmalloc(size_t n)
{
	void *p = aligned_alloc(64, (n + 63) / 64 * 64);
	if (!p) {
		fprintf(stderr, "kbench_cpu: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return p;
}

static uint32_t type_by_name(const char *s, size_t n)
{
	for (uint32_t t = 0; t < KERN_TYPE_MAX; t++) {
		const char *name = kern_type_name(t);
		if (name && strlen(name) == n && strncasecmp(name, s, n) == 0 && kern_type_supported(t))
			return t;
	}
	fprintf(stderr, "kbench_cpu: unknown type %.*s\n", (int)n, s);
	exit(2);
}

static void bench_one(uint32_t type, const struct shape *sh, int n_tok, size_t rotate_bytes, double secs)
{
	const int64_t k = sh->k, rows = sh->rows;
	const size_t rs = kern_row_bytes(type, k), wbytes = rs * (size_t)rows;
	if (!rs)
		return; /* k not a multiple of the block (K-quants on k = 576) */
	int nbuf = (int)((rotate_bytes + wbytes - 1) / wbytes);
	if (nbuf < 2)
		nbuf = 2;

	/* weights: one random matrix quantized, copied into every buffer */
	float *src = xmalloc(sizeof(float) * (size_t)k);
	uint8_t **w = malloc(sizeof(*w) * (size_t)nbuf);
	for (int b = 0; b < nbuf; b++)
		w[b] = xmalloc(wbytes);
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t i = 0; i < k; i++)
			src[i] = rnd() * 0.05f;
		kern_quantize_row(type, src, w[0] + (size_t)r * rs, k);
	}
	for (int b = 1; b < nbuf; b++)
		memcpy(w[b], w[0], wbytes);

	const size_t ars = kern_act_row_bytes(type, k);
	uint8_t *act = xmalloc(ars * (size_t)n_tok);
	float *x = xmalloc(sizeof(float) * (size_t)k);
	for (int t = 0; t < n_tok; t++) {
		for (int64_t i = 0; i < k; i++)
			x[i] = rnd();
		kern_act_quantize_row(type, x, act + (size_t)t * ars, k);
	}
	float *y = xmalloc(sizeof(float) * (size_t)rows * (size_t)n_tok);

	/* warm-up, then as many runs as fit in `secs` (3..200) */
	double t0 = now_s();
	kern_matmul(type, w[0], rs, k, act, ars, n_tok, y, rows, 0, rows);
	double one = now_s() - t0;
	int runs = one > 0 ? (int)(secs / one) : 200;
	runs = runs < 3 ? 3 : runs > 200 ? 200 : runs;
	double *ts = malloc(sizeof(double) * (size_t)runs);
	for (int i = 0; i < runs; i++) {
		const uint8_t *wb = w[(i + 1) % nbuf];
		t0 = now_s();
		kern_matmul(type, wb, rs, k, act, ars, n_tok, y, rows, 0, rows);
		ts[i] = now_s() - t0;
	}
	qsort(ts, (size_t)runs, sizeof(double), cmp_double);
	double med = ts[runs / 2], best = ts[0];
	double gbs = (double)wbytes / med * 1e-9;
	double gops = 2.0 * (double)k * (double)rows * n_tok / med * 1e-9;
	printf("%-5s %-22s n_tok %4d  %9.1f us  %7.1f GB/s  %7.1f GOP/s  (best %7.1f GB/s %7.1f GOP/s)",
	       kern_type_name(type), sh->name, n_tok, med * 1e6, gbs, gops, (double)wbytes / best * 1e-9,
	       2.0 * (double)k * (double)rows * n_tok / best * 1e-9);

	if (!sh->llama && rows <= 1536 && n_tok <= 4) {
		t0 = now_s();
		kern_matmul_ref(type, w[0], rs, k, act, ars, n_tok, y, rows, 0, rows);
		double tr = now_s() - t0;
		printf("  (ref x%.0f)", tr / med);
	}
	printf("\n");
	fflush(stdout);

	free(ts), free(y), free(x), free(act), free(src);
	for (int b = 0; b < nbuf; b++)
		free(w[b]);
	free(w);
}

/* The matrix products of one SmolLM2-135M forward pass (30 layers of Q4_1
 * q, k, v, o, gate, up, down, distinct weights, then the 49152-row Q8_0
 * output), n_tok tokens, single thread: the matmul share of a decode step
 * (n_tok 1) or a prefill (the output for the last token only). */
static void bench_model(int n_tok, double secs)
{
	enum { N_LAYER = 30, E = 576, F = 1536, KV = 192, V = 49152 };
	static const int64_t shp[7][2] = {{E, E}, {E, KV}, {E, KV}, {E, E}, {E, F}, {E, F}, {F, E}};
	uint8_t *w[N_LAYER][7], *wout;
	size_t total = 0;
	float *src = xmalloc(sizeof(float) * F);
	for (int l = 0; l < N_LAYER; l++)
		for (int m = 0; m < 7; m++) {
			size_t rs = kern_row_bytes(KERN_TYPE_Q4_1, shp[m][0]);
			w[l][m] = xmalloc(rs * (size_t)shp[m][1]);
			for (int64_t r = 0; r < shp[m][1]; r++) {
				for (int64_t i = 0; i < shp[m][0]; i++)
					src[i] = rnd() * 0.05f;
				kern_quantize_row(KERN_TYPE_Q4_1, src, w[l][m] + (size_t)r * rs, shp[m][0]);
			}
			total += rs * (size_t)shp[m][1];
		}
	size_t rso = kern_row_bytes(KERN_TYPE_Q8_0, E);
	wout = xmalloc(rso * V);
	for (int64_t r = 0; r < V; r++) {
		for (int64_t i = 0; i < E; i++)
			src[i] = rnd() * 0.05f;
		kern_quantize_row(KERN_TYPE_Q8_0, src, wout + (size_t)r * rso, E);
	}
	total += rso * V;

	size_t ars_e = kern_act_row_bytes(KERN_TYPE_Q4_1, E), ars_f = kern_act_row_bytes(KERN_TYPE_Q4_1, F);
	size_t ars_o = kern_act_row_bytes(KERN_TYPE_Q8_0, E);
	uint8_t *act_e = xmalloc(ars_e * (size_t)n_tok), *act_f = xmalloc(ars_f * (size_t)n_tok);
	uint8_t *act_o = xmalloc(ars_o);
	for (int t = 0; t < n_tok; t++) {
		for (int64_t i = 0; i < F; i++)
			src[i] = rnd();
		kern_act_quantize_row(KERN_TYPE_Q4_1, src, act_e + (size_t)t * ars_e, E);
		kern_act_quantize_row(KERN_TYPE_Q4_1, src, act_f + (size_t)t * ars_f, F);
	}
	kern_act_quantize_row(KERN_TYPE_Q8_0, src, act_o, E);
	float *y = xmalloc(sizeof(float) * (size_t)V * (size_t)(n_tok > 1 ? n_tok : 1));

	double ts[64];
	int runs = 0;
	for (double t_end = now_s() + secs; runs < 64 && (runs < 3 || now_s() < t_end);) {
		double t0 = now_s();
		for (int l = 0; l < N_LAYER; l++)
			for (int m = 0; m < 7; m++) {
				int64_t k = shp[m][0], rows = shp[m][1];
				kern_matmul(KERN_TYPE_Q4_1, w[l][m], kern_row_bytes(KERN_TYPE_Q4_1, k), k,
					    k == F ? act_f : act_e, k == F ? ars_f : ars_e, n_tok, y, rows, 0, rows);
			}
		kern_matmul(KERN_TYPE_Q8_0, wout, rso, E, act_o, ars_o, 1, y, V, 0, V);
		ts[runs++] = now_s() - t0;
	}
	qsort(ts, (size_t)runs, sizeof(double), cmp_double);
	printf("model SmolLM2-135M matmuls, n_tok %4d: median %8.2f ms (%7.1f tok/s), best %8.2f ms; %.1f MB of "
	       "weights, %.1f GB/s\n",
	       n_tok, ts[runs / 2] * 1e3, n_tok / ts[runs / 2], ts[0] * 1e3, (double)total / 1e6,
	       (double)total / ts[runs / 2] * 1e-9);
	fflush(stdout);
	for (int l = 0; l < N_LAYER; l++)
		for (int m = 0; m < 7; m++)
			free(w[l][m]);
	free(wout), free(src), free(act_e), free(act_f), free(act_o), free(y);
}

int main(int argc, char **argv)
{
	uint32_t types[16];
	int n_types = 0;
	int ntoks[16] = {1, 4, 16, 64, 512}, n_ntok = 5;
	int which = 2; /* 0 smol, 1 llama, 2 all */
	size_t rotate = (size_t)64 << 20;
	double secs = 0.2;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v) {
			fprintf(stderr, "usage: see the header of bench/kbench_cpu.c\n");
			return 2;
		}
		i++;
		if (strcmp(a, "-t") == 0) {
			for (const char *p = v; *p && n_types < 16;) {
				size_t n = strcspn(p, ",");
				types[n_types++] = type_by_name(p, n);
				p += n + (p[n] == ',');
			}
		} else if (strcmp(a, "-n") == 0) {
			n_ntok = 0;
			for (const char *p = v; *p && n_ntok < 16;) {
				ntoks[n_ntok++] = atoi(p);
				p += strcspn(p, ",");
				p += *p == ',';
			}
		} else if (strcmp(a, "-s") == 0) {
			which = strcmp(v, "smol") == 0    ? 0
				: strcmp(v, "llama") == 0 ? 1
				: strcmp(v, "model") == 0 ? 3
							  : 2;
		} else if (strcmp(a, "-m") == 0) {
			rotate = (size_t)atol(v) << 20;
		} else if (strcmp(a, "-T") == 0) {
			secs = atof(v);
		} else {
			fprintf(stderr, "kbench_cpu: unknown option %s\n", a);
			return 2;
		}
	}
	if (!n_types) {
		n_types = (int)(sizeof(g_all_types) / sizeof(g_all_types[0]));
		memcpy(types, g_all_types, sizeof(g_all_types));
	}

	printf("kbench_cpu: simd %s, single thread, weights rotated over >= %zu MiB\n", kern_simd_name(),
	       rotate >> 20);
	if (which == 3) {
		for (int ni = 0; ni < n_ntok; ni++)
			bench_model(ntoks[ni], secs * 10);
		return 0;
	}
	for (int ti = 0; ti < n_types; ti++)
		for (size_t si = 0; si < sizeof(g_shapes) / sizeof(g_shapes[0]); si++) {
			if (which != 2 && g_shapes[si].llama != which)
				continue;
			for (int ni = 0; ni < n_ntok; ni++)
				bench_one(types[ti], &g_shapes[si], ntoks[ni], rotate, secs);
		}
	return 0;
}
