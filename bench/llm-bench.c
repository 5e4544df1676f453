/*
 * llm-bench: prefill and decode throughput of the CPU backend, like
 * llama-bench: pp<N> (a prompt of N random tokens in one sequence), tg<N>
 * (N decode steps of one sequence from an empty context) and, with -b B,
 * batched decode (B sequences decoding N steps in lockstep, one step per
 * token of every sequence: aggregate tokens/s).
 *
 *   llm-bench -m M.gguf [-p 512] [-n 128] [-b 1,4] [-t 2] [-r 5] [--json]
 *
 * Each test runs once to warm up, then -r times; the table gives the median
 * and the min..max spread of the repetitions. Token ids are random (seeded)
 * as in llama-bench; sampling is not timed (there is none).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"

#define MAX_LIST 8

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_list(const char *s, int *out, int max)
{
	int n = 0;
	while (*s && n < max) {
		char *end;
		long v = strtol(s, &end, 10);
		if (end == s || v < 0 || v > 1 << 20)
			return -1;
		out[n++] = (int)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return n;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static uint64_t g_rng = 88172645463325252ull;
static int32_t rand_tok(int32_t n_vocab)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return (int32_t)(g_rng % (uint64_t)n_vocab);
}

/* One prefill of n_prompt tokens; returns seconds. */
static double run_pp(struct engine_core *c, int n_prompt, float *logits)
{
	struct kv_seq s;
	kv_seq_init(&s);
	int32_t *toks = malloc(sizeof(int32_t) * (size_t)n_prompt);
	for (int i = 0; i < n_prompt; i++)
		toks[i] = rand_tok(c->model->w.hp.n_vocab);
	double t0 = now_s();
	int rc = engine_seq_feed(c, &s, toks, n_prompt, logits, NULL);
	double dt = now_s() - t0;
	kv_seq_free(&c->kv, &s);
	free(toks);
	return rc ? -1 : dt;
}

/* n_gen decode steps of n_seq sequences in lockstep; returns seconds. */
static double run_tg(struct engine_core *c, int n_seq, int n_gen, float *logits)
{
	struct kv_seq *s = calloc((size_t)n_seq, sizeof(*s));
	int rc = 0;
	for (int i = 0; i < n_seq && !rc; i++) {
		kv_seq_init(&s[i]);
		rc = kv_seq_reserve(&c->kv, &s[i], n_gen);
	}
	double t0 = now_s();
	for (int step = 0; step < n_gen && !rc; step++) {
		batch_clear(&c->batch);
		for (int i = 0; i < n_seq; i++) {
			int si = batch_add_seq(&c->batch, &s[i]);
			batch_add_token(&c->batch, si, rand_tok(c->model->w.hp.n_vocab), step, true);
		}
		rc = kern_backend_step(c->be, &c->batch.kb, logits);
	}
	double dt = now_s() - t0;
	for (int i = 0; i < n_seq; i++)
		kv_seq_free(&c->kv, &s[i]);
	free(s);
	return rc ? -1 : dt;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: llm-bench -m M.gguf [-p N] [-n N] [-b B1,B2] [-t T1,T2] [-r R] [--json]\n"
		   "  -p N    prompt tokens for pp (default 512; 0 = skip)\n"
		   "  -n N    decode steps for tg (default 128; 0 = skip)\n"
		   "  -b LIST sequences decoding together (default 1)\n"
		   "  -t LIST threads (default: all allowed CPUs)\n"
		   "  -r R    repetitions after one warm-up (default 5)\n"
		   "  --json  one JSON object per line instead of the table\n");
}

int main(int argc, char **argv)
{
	const char *model = NULL;
	int pp = 512, tg = 128, reps = 5, json = 0;
	int bl[MAX_LIST] = {1}, nb = 1, tl[MAX_LIST] = {0}, nt = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "llm-bench: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "-m"))
			model = v;
		else if (!strcmp(a, "-p"))
			pp = atoi(v);
		else if (!strcmp(a, "-n"))
			tg = atoi(v);
		else if (!strcmp(a, "-r"))
			reps = atoi(v);
		else if (!strcmp(a, "-b")) {
			if ((nb = parse_list(v, bl, MAX_LIST)) < 1) {
				fprintf(stderr, "llm-bench: bad -b list\n");
				return 2;
			}
		} else if (!strcmp(a, "-t")) {
			if ((nt = parse_list(v, tl, MAX_LIST)) < 1) {
				fprintf(stderr, "llm-bench: bad -t list\n");
				return 2;
			}
		} else {
			fprintf(stderr, "llm-bench: unknown option %s\n", a);
			return 2;
		}
	}
	if (!model || reps < 1 || pp < 0 || tg < 0) {
		usage(stderr);
		return 2;
	}
	int max_b = 1;
	for (int i = 0; i < nb; i++)
		max_b = bl[i] > max_b ? bl[i] : max_b;
	if (!json)
		printf("| model | threads | test | t/s (median) | spread (min..max) | runs |\n|---|---:|---|---:|---:|---:|\n");
	for (int ti = 0; ti < nt; ti++) {
		struct engine_opts o;
		engine_opts_default(&o);
		o.model_path = model;
		o.n_threads = tl[ti];
		o.max_batch_tokens = pp > max_b ? pp : max_b;
		o.kv_tokens = (int64_t)(pp > tg ? pp : tg) * max_b + 64 * max_b;
		struct engine_core c;
		char err[512];
		if (engine_core_open(&c, &o, err, sizeof(err))) {
			fprintf(stderr, "llm-bench: %s\n", err);
			return 1;
		}
		float *logits = malloc(sizeof(float) * (size_t)c.model->w.hp.n_vocab * (size_t)max_b);
		int threads = tl[ti] > 0 ? tl[ti] : -1;
		for (int test = 0; test <= nb; test++) {
			int B = test == 0 ? 0 : bl[test - 1];
			if ((test == 0 && pp == 0) || (test > 0 && tg == 0))
				continue;
			double *ts = malloc(sizeof(double) * (size_t)reps);
			for (int r = -1; r < reps; r++) {
				double dt = test == 0 ? run_pp(&c, pp, logits) : run_tg(&c, B, tg, logits);
				if (dt < 0) {
					fprintf(stderr, "llm-bench: step failed\n");
					return 1;
				}
				if (r >= 0)
					ts[r] = (test == 0 ? pp : (double)tg * B) / dt;
			}
			qsort(ts, (size_t)reps, sizeof(double), cmp_d);
			double med = reps % 2 ? ts[reps / 2] : (ts[reps / 2 - 1] + ts[reps / 2]) / 2;
			char name[32];
			if (test == 0)
				snprintf(name, sizeof(name), "pp%d", pp);
			else if (B == 1)
				snprintf(name, sizeof(name), "tg%d", tg);
			else
				snprintf(name, sizeof(name), "tg%d x%d", tg, B);
			if (json)
				printf("{\"model\":\"%s\",\"threads\":%d,\"test\":\"%s\",\"median_tps\":%.2f,\"min_tps\":%.2f,"
				       "\"max_tps\":%.2f,\"runs\":%d}\n",
				       c.model->name, threads, name, med, ts[0], ts[reps - 1], reps);
			else
				printf("| %s | %d | %s | %.2f | %.2f..%.2f | %d |\n", c.model->name, threads, name, med, ts[0],
				       ts[reps - 1], reps);
			fflush(stdout);
			free(ts);
		}
		free(logits);
		engine_core_close(&c);
	}
	return 0;
}
