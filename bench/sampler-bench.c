/*
 * sampler-bench: host cost of one sampled token, from a whole logits row
 * (sampler_sample: what the CPU backend does, and a GPU backend when the
 * row must cross PCIe) against from the row's 64 top candidates
 * (sampler_top_covers + sampler_sample_top, and the whole row when they do
 * not decide: what the dispatcher does with a GPU backend), side by side in
 * one run, with the share of draws the candidates decide.
 *
 * Rows (n_vocab logits, 32 distinct rows rotated so the caches do not
 * flatter): "zipf", logit = -1.1 ln(rank) + noise over shuffled ids (an
 * LM-like tail); "peaked", 2000 levels with 1 token in 997 raised by 6;
 * "flat", the 2000 levels alone (top_p's worst case: a nucleus of most of
 * the vocabulary). Each cell: median and spread of 9 runs of 64 draws.
 *
 * usage: sampler-bench [-V n_vocab] (default 49152, SmolLM2's)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sampler.h"
#include "kernels/kernels.h"

#define ROWS 32
#define RUNS 9
#define DRAWS 64

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t g_r = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
	g_r = g_r * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(g_r >> 11) * (1.0 / 9007199254740992.0);
}

static void make_row(float *x, int V, int kind, int32_t *perm)
{
	if (kind == 0) {
		for (int i = 0; i < V; i++)
			perm[i] = i;
		for (int i = V - 1; i > 0; i--) {
			int j = (int)(urand() * (i + 1));
			int32_t t = perm[i];
			perm[i] = perm[j];
			perm[j] = t;
		}
		for (int r = 0; r < V; r++)
			x[perm[r]] = (float)(-1.1 * log(r + 1.0) + 0.3 * urand() + 12);
	} else {
		for (int i = 0; i < V; i++) {
			uint64_t u = (uint64_t)(urand() * 9007199254740992.0);
			x[i] = (float)(u % 2000) / 200.0f + (kind == 1 && u % 997 == 0 ? 6.0f : 0.0f);
		}
	}
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int V = 49152;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-V") && i + 1 < argc) {
			V = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: sampler-bench [-V n_vocab]\n");
			return 2;
		}
	}
	if (V < 65 || V > (1 << 24)) {
		fprintf(stderr, "sampler-bench: -V must be 65..16777216\n");
		return 2;
	}
	static const struct {
		const char *name;
		float temp, top_p, min_p;
		int top_k, logprobs; /* logprobs < 0: none */
	} cases[] = {
	    {"T 1 (OpenAI defaults)", 1.0f, 1.0f, 0.0f, 0, -1},
	    {"T 0.8, top_p 0.9", 0.8f, 0.9f, 0.0f, 0, -1},
	    {"T 0.8, top_p 0.95", 0.8f, 0.95f, 0.0f, 0, -1},
	    {"T 0.7, min_p 0.1", 0.7f, 1.0f, 0.1f, 0, -1},
	    {"T 0.8, top_k 40, top_p 0.95", 0.8f, 0.95f, 0.05f, 40, -1},
	    {"T 0.8, top_k 40, logprobs 5", 0.8f, 1.0f, 0.0f, 40, 5},
	};
	float lp;
	struct sampler_logprob top[20];
	static const char *const kinds[] = {"zipf", "peaked", "flat"};
	float *rows = malloc(sizeof(float) * (size_t)V * ROWS), *work = malloc(sizeof(float) * (size_t)V);
	int32_t *perm = malloc(sizeof(int32_t) * (size_t)V);
	struct kern_top *tops = malloc(sizeof(struct kern_top) * ROWS);
	struct sampler_scratch w;
	if (!rows || !work || !perm || !tops || sampler_scratch_init(&w, V)) {
		fprintf(stderr, "sampler-bench: out of memory\n");
		return 1;
	}
	printf("sampler-bench: n_vocab %d, %d draws x %d runs per cell, us per token (median [min..max])\n", V, DRAWS,
	       RUNS);
	printf("%-8s %-29s %24s %24s %7s %9s\n", "rows", "parameters", "whole row", "candidates (+ misses)",
	       "ratio", "decided");
	for (int kind = 0; kind < 3; kind++) {
		for (int r = 0; r < ROWS; r++)
			make_row(rows + (size_t)r * V, V, kind, perm);
		for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
			struct sampler_params p;
			sampler_params_default(&p);
			p.temperature = cases[c].temp;
			p.top_p = cases[c].top_p;
			p.min_p = cases[c].min_p;
			p.top_k = cases[c].top_k;
			p.seed = 42;
			for (int r = 0; r < ROWS; r++)
				kern_top_row(rows + (size_t)r * V, V, 1.0f / p.temperature, &tops[r]);
			double t_whole[RUNS], t_top[RUNS];
			long decided = 0, total = 0;
			for (int run = 0; run < RUNS; run++) {
				struct sampler a, b;
				if (sampler_init(&a, &p, V) || sampler_init(&b, &p, V)) {
					fprintf(stderr, "sampler-bench: sampler_init failed\n");
					return 1;
				}
				double t0 = now_s();
				for (int d = 0; d < DRAWS; d++) {
					memcpy(work, rows + (size_t)(d % ROWS) * V, sizeof(float) * (size_t)V);
					sampler_sample(&a, &w, work, cases[c].logprobs >= 0 ? &lp : NULL, top,
						       cases[c].logprobs);
				}
				double t1 = now_s();
				for (int d = 0; d < DRAWS; d++) {
					const struct kern_top *t = &tops[d % ROWS];
					if (sampler_top_covers(&b, &w, t)) {
						sampler_sample_top(&b, &w, t, cases[c].logprobs >= 0 ? &lp : NULL, top,
								   cases[c].logprobs);
						decided++;
					} else {
						memcpy(work, rows + (size_t)(d % ROWS) * V, sizeof(float) * (size_t)V);
						sampler_sample(&b, &w, work, cases[c].logprobs >= 0 ? &lp : NULL, top,
							       cases[c].logprobs);
					}
					total++;
				}
				double t2 = now_s();
				/* the whole-row side's copy of the row is part of its cost, as
				 * on the CPU backend's dispatcher (the sampler modifies it) */
				t_whole[run] = (t1 - t0) / DRAWS * 1e6;
				t_top[run] = (t2 - t1) / DRAWS * 1e6;
				sampler_free(&a);
				sampler_free(&b);
			}
			qsort(t_whole, RUNS, sizeof(double), cmp_d);
			qsort(t_top, RUNS, sizeof(double), cmp_d);
			char a[64], b[64];
			snprintf(a, sizeof(a), "%.1f [%.1f..%.1f]", t_whole[RUNS / 2], t_whole[0], t_whole[RUNS - 1]);
			snprintf(b, sizeof(b), "%.2f [%.2f..%.2f]", t_top[RUNS / 2], t_top[0], t_top[RUNS - 1]);
			printf("%-8s %-29s %24s %24s %6.1fx %8.0f%%\n", kinds[kind], cases[c].name, a, b,
			       t_whole[RUNS / 2] / (t_top[RUNS / 2] > 0 ? t_top[RUNS / 2] : 1e-9),
			       100.0 * (double)decided / (double)total);
		}
	}
	sampler_scratch_free(&w);
	free(rows);
	free(work);
	free(perm);
	free(tops);
	return 0;
}
