/*
 * test_sampler: sampling, penalties, log-probabilities, stop strings and the
 * KV block allocator.
 * Statistical checks use fixed seeds and bounds of 5 standard deviations,
 * so they are deterministic and far from flaky.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv.h"
#include "engine/sampler.h"
#include "engine/stop.h"
#include "kernels/kernels.h"
#include "tests/check.h"


static struct sampler_scratch g_w; /* sized for the largest vocabulary used here */

static struct sampler_params plain(void)
{
	struct sampler_params p;
	sampler_params_default(&p);
	p.temperature = 1.0f;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.seed = 42;
	return p;
}

static void test_distribution(void)
{
	/* p = softmax(log(w)) = w / sum(w) */
	const float w[5] = {0.5f, 0.3f, 0.1f, 0.06f, 0.04f};
	struct {
		float top_p, min_p, temp;
		int top_k;
		bool allowed[5];
	} cases[] = {
		{1.0f, 0.0f, 1.0f, 0, {1, 1, 1, 1, 1}},
		{0.75f, 0.0f, 1.0f, 0, {1, 1, 0, 0, 0}},
		{1.0f, 0.25f, 1.0f, 0, {1, 1, 0, 0, 0}},
		{1.0f, 0.0f, 1.0f, 3, {1, 1, 1, 0, 0}},
		{0.85f, 0.0f, 1.0f, 0, {1, 1, 1, 0, 0}},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct sampler_params p = plain();
		p.top_p = cases[c].top_p;
		p.min_p = cases[c].min_p;
		p.top_k = cases[c].top_k;
		struct sampler s;
		CHECK(sampler_init(&s, &p, 5) == 0, "init");
		int counts[5] = {0};
		const int N = 20000;
		for (int i = 0; i < N; i++) {
			float logits[5];
			for (int j = 0; j < 5; j++)
				logits[j] = logf(w[j]) + 3.0f; /* shift-invariance */
			int32_t t = sampler_sample(&s, &g_w, logits, NULL, NULL, 0);
			CHECK(t >= 0 && t < 5, "token range");
			if (t >= 0 && t < 5)
				counts[t]++;
		}
		double z = 0;
		for (int j = 0; j < 5; j++)
			z += cases[c].allowed[j] ? w[j] : 0;
		for (int j = 0; j < 5; j++) {
			double pj = cases[c].allowed[j] ? w[j] / z : 0;
			double sd = sqrt(N * pj * (1 - pj)) + 1;
			CHECK(fabs(counts[j] - N * pj) <= 5 * sd, "case %zu token %d: %d draws, expected %.0f", c, j,
			      counts[j], N * pj);
		}
		sampler_free(&s);
	}
}

static void test_greedy_penalty_seed(void)
{
	struct sampler_params p = plain();
	p.temperature = 0;
	p.repeat_penalty = 2.0f;
	p.penalty_last_n = 4;
	struct sampler s;
	CHECK(sampler_init(&s, &p, 4) == 0, "init");
	float l1[4] = {2.0f, 1.5f, -1.0f, 0.0f};
	CHECK(sampler_sample(&s, &g_w, l1, NULL, NULL, 0) == 0, "greedy argmax");
	sampler_accept(&s, 0);
	float l2[4] = {2.0f, 1.5f, -1.0f, 0.0f};
	CHECK(sampler_sample(&s, &g_w, l2, NULL, NULL, 0) == 1, "repeat penalty moves the argmax (2/2 = 1 < 1.5)");
	/* The window forgets: after 4 other tokens, 0 is no longer penalized. */
	for (int i = 0; i < 4; i++)
		sampler_accept(&s, 3);
	float l3[4] = {2.0f, 1.5f, -1.0f, 0.0f};
	CHECK(sampler_sample(&s, &g_w, l3, NULL, NULL, 0) == 0, "penalty window");
	sampler_free(&s);

	/* Same seed, same tokens; another seed, another sequence. */
	int32_t runs[3][64];
	for (int run = 0; run < 3; run++) {
		struct sampler_params q = plain();
		q.seed = run == 2 ? 7 : 99;
		struct sampler t;
		sampler_init(&t, &q, 1000);
		for (int i = 0; i < 64; i++) {
			float lg[1000];
			for (int j = 0; j < 1000; j++)
				lg[j] = (float)((j * 37) % 101) / 20.0f;
			int32_t tok = sampler_sample(&t, &g_w, lg, NULL, NULL, 0);
			runs[run][i] = tok;
		}
		sampler_free(&t);
	}
	CHECK(memcmp(runs[0], runs[1], sizeof(runs[0])) == 0, "same seed must repeat");
	CHECK(memcmp(runs[0], runs[2], sizeof(runs[0])) != 0, "different seeds should differ");
}

static void test_logprobs_and_large_vocab(void)
{
	const int V = 50000;
	float *lg = malloc(sizeof(float) * V), *raw = malloc(sizeof(float) * V);
	uint64_t r = 5;
	for (int i = 0; i < V; i++) {
		r = r * 6364136223846793005ull + 1442695040888963407ull;
		raw[i] = (float)((r >> 40) % 10000) / 1000.0f; /* 0..10 */
	}
	double mx = 0, z = 0;
	for (int i = 0; i < V; i++)
		mx = raw[i] > mx ? raw[i] : mx;
	for (int i = 0; i < V; i++)
		z += exp(raw[i] - mx);
	/* Nucleus by a full sort, to check the incremental top-p. */
	float *sorted = malloc(sizeof(float) * V);
	memcpy(sorted, raw, sizeof(float) * V);
	int cmp(const void *x, const void *y);
	qsort(sorted, V, sizeof(float), cmp);
	double cum = 0, thr = 0;
	for (int i = 0; i < V; i++) {
		cum += exp(sorted[i] - mx) / z;
		if (cum >= 0.9) {
			thr = sorted[i];
			break;
		}
	}
	struct sampler_params p = plain();
	p.top_p = 0.9f;
	struct sampler s;
	sampler_init(&s, &p, V);
	for (int it = 0; it < 200; it++) {
		memcpy(lg, raw, sizeof(float) * V);
		float lp;
		struct sampler_logprob top[5];
		int32_t t = sampler_sample(&s, &g_w, lg, &lp, top, 5);
		CHECK(raw[t] >= thr, "token %d (logit %g) outside the 0.9 nucleus (threshold %g)", t, raw[t], thr);
		double ref = raw[t] - mx - log(z);
		CHECK(fabs(lp - ref) < 1e-4, "logprob %g vs %g", lp, ref);
		CHECK(raw[top[0].token] == sorted[0] && top[0].logprob >= top[4].logprob, "top logprobs sorted");
	}
	sampler_free(&s);
	free(lg);
	free(raw);
	free(sorted);
	const char *field = NULL;
	p.top_p = 0;
	CHECK(sampler_params_check(&p, &field) == -EINVAL && !strcmp(field, "top_p"), "top_p 0 refused");
	p = plain();
	p.temperature = NAN;
	CHECK(sampler_params_check(&p, &field) == -EINVAL && !strcmp(field, "temperature"), "NaN temperature refused");
}

/*
 * The whole-row draw (top_k off: the head of 64, the tail by buckets)
 * against a reference written here from the definition: every token sorted
 * by logit (ties by lower id), top_p's nucleus by cumulative softmax in
 * double, min_p, then the inverse CDF at the sampler's own next uniform
 * (xoshiro256**, read from s.rng before each draw). Rows of 20000 logits:
 * an LM-like tail over shuffled ids, quantized so ties cross buckets, a few
 * -inf (never drawn). Sums differ from the reference's only by rounding
 * (float weights, another order): at most 2 of 2000 draws may differ, none
 * may pick a -inf token or one outside the reference's set.
 */
static uint64_t ref_next(uint64_t *s)
{
	uint64_t r = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = s[3] << 45 | s[3] >> 19;
	return r;
}

static const float *g_ref_x;
static int ref_cmp(const void *a, const void *b)
{
	int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
	float x = g_ref_x[i], y = g_ref_x[j];
	if (x != y)
		return x > y ? -1 : 1;
	return i < j ? -1 : 1;
}

static void test_whole_row_draw(void)
{
	const int V = 20000;
	const struct {
		float temp, top_p, min_p;
	} cases[] = {{1.0f, 1.0f, 0.0f},  {0.7f, 0.9f, 0.0f},   {1.3f, 0.95f, 0.01f},
		     {0.8f, 1.0f, 0.002f}, {2.0f, 0.5f, 0.0f},   {1.0f, 0.99f, 0.0f}};
	float *x = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
	int32_t *ord = malloc(sizeof(int32_t) * V), *perm = malloc(sizeof(int32_t) * V);
	double *wt = malloc(sizeof(double) * V);
	uint64_t r = 7;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct sampler_params p = plain();
		p.temperature = cases[c].temp;
		p.top_p = cases[c].top_p;
		p.min_p = cases[c].min_p;
		p.seed = 500 + c;
		struct sampler s;
		sampler_init(&s, &p, V);
		int diff = 0, bad = 0, tail = 0, n = V;
		float lmax = 0;
		double tot = 0;
		for (int it = 0; it < 2000; it++) {
			if (it % 50 == 0) { /* a new row every 50 draws */
				for (int i = 0; i < V; i++)
					perm[i] = i;
				for (int i = V - 1; i > 0; i--) {
					r = r * 6364136223846793005ull + 1442695040888963407ull;
					int j = (int)((r >> 33) % (uint64_t)(i + 1));
					int32_t t = perm[i];
					perm[i] = perm[j];
					perm[j] = t;
				}
				double slope = 0.6 + 0.1 * (it / 50 % 8); /* from flat to peaked */
				for (int k = 0; k < V; k++)
					x[perm[k]] = roundf((float)(-slope * log(k + 1.0)) * 64) / 64 + 5;
				for (int k = 0; k < 7; k++)
					x[perm[V - 1 - k * 997]] = -INFINITY;
				/* the reference's set and weights for this row */
				for (int i = 0; i < V; i++)
					ord[i] = i;
				g_ref_x = x;
				qsort(ord, (size_t)V, sizeof(int32_t), ref_cmp);
				lmax = x[ord[0]];
				n = V;
				if (p.top_p < 1.0f) {
					double z = 0, cum = 0;
					for (int i = 0; i < V; i++)
						z += exp((double)x[ord[i]] - lmax);
					for (int i = 0; i < V; i++) {
						cum += exp((double)x[ord[i]] - lmax) / z;
						if (cum >= p.top_p) {
							n = i + 1;
							break;
						}
					}
				}
				if (p.min_p > 0.0f) {
					float thr = lmax + logf(p.min_p);
					int m = 0;
					while (m < n && x[ord[m]] >= thr)
						m++;
					n = m;
				}
				tot = 0;
				for (int i = 0; i < n; i++) {
					wt[i] = exp((double)(x[ord[i]] - lmax) / p.temperature);
					tot += wt[i];
				}
			}
			double acc = 0;
			uint64_t g[4];
			memcpy(g, s.rng, sizeof(g));
			double u = (double)(ref_next(g) >> 11) * (1.0 / 9007199254740992.0) * tot;
			int want = ord[n - 1], rank = n - 1;
			for (int i = 0; i < n; i++) {
				acc += wt[i];
				if (u < acc) {
					want = ord[i];
					rank = i;
					break;
				}
			}
			memcpy(lg, x, sizeof(float) * V);
			int32_t got = sampler_sample(&s, &g_w, lg, NULL, NULL, 0);
			diff += got != want;
			bool in = false;
			for (int i = 0; i < n && !in; i++)
				in = ord[i] == got;
			bad += !in || !(x[got] > -INFINITY);
			tail += rank >= KERN_TOP_K;
		}
		CHECK(diff <= 2 && bad == 0, "case %zu: %d of 2000 draws differ from the reference, %d outside its set", c,
		      diff, bad);
		CHECK(tail > 0, "case %zu: no draw reached past the 64 largest (the tail is untested)", c);
		sampler_free(&s);
	}
	free(x);
	free(lg);
	free(ord);
	free(perm);
	free(wt);
}

/*
 * sampler_sample_top against sampler_sample: two samplers with one seed,
 * one fed whole rows, the other the rows' struct kern_top, and the whole
 * row only where sampler_top_covers says the candidates do not decide (as
 * the dispatcher does); over 300 steps of random rows (ties included) they
 * must pick the same tokens, with log-probabilities within 1e-5 (lse in
 * f32 vs double) and the same top entries. A row the candidates do not
 * decide must leave the generator untouched (sampler_sample_top -1, and
 * the next draws still agree). With top_k off, both outcomes must occur.
 * sampler_top_ok must refuse what the candidates can never decide.
 */
static void test_sample_from_top(void)
{
	const struct {
		float temp, top_p, min_p;
		int top_k, n_top, V;
		bool both; /* top_k off: expect draws decided by the candidates and draws that need the row */
	} cases[] = {
		{0.0f, 1.0f, 0.0f, 0, 5, 50000, false},    {0.9f, 0.95f, 0.05f, 40, 3, 50000, false},
		{1.5f, 1.0f, 0.0f, 64, 20, 50000, false},  {0.5f, 0.5f, 0.0f, 1, 0, 50000, false},
		{2.0f, 0.99f, 0.01f, 10, -1, 50000, false}, {1.0f, 0.8f, 0.2f, 64, 1, 50000, false},
		/* top_k off: the draw over the whole row, the top_p nucleus, the min_p set */
		{1.0f, 1.0f, 0.0f, 0, 2, 50000, true},     {0.5f, 1.0f, 0.0f, 0, -1, 50000, true},
		{0.8f, 0.3f, 0.0f, 0, 1, 50000, true},     {1.2f, 1.0f, 0.3f, 0, -1, 50000, true},
		{0.7f, 0.9f, 0.1f, 0, 4, 50000, true},
		/* a vocabulary no larger than the candidates: they are the whole row */
		{1.0f, 1.0f, 0.0f, 0, 3, 40, false},       {0.9f, 0.7f, 0.05f, 40, -1, 40, false},
		{1.1f, 0.9f, 0.0f, 0, -1, 64, false},
	};
	float *lg = malloc(sizeof(float) * 50000), *raw = malloc(sizeof(float) * 50000);
	uint64_t r = 99;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const int V = cases[c].V;
		struct sampler_params p = plain();
		p.temperature = cases[c].temp;
		p.top_p = cases[c].top_p;
		p.min_p = cases[c].min_p;
		p.top_k = cases[c].top_k;
		p.seed = 1000 + c;
		struct sampler a, b;
		struct sampler_scratch w;
		sampler_scratch_init(&w, V);
		sampler_init(&a, &p, V);
		sampler_init(&b, &p, V);
		CHECK(sampler_top_ok(&b), "case %zu: candidates should do", c);
		int n_top = cases[c].n_top, diff = 0, lp_bad = 0, covered = 0, refused = 0;
		for (int it = 0; it < 300; it++) {
			for (int i = 0; i < V; i++) {
				r = r * 6364136223846793005ull + 1442695040888963407ull;
				/* peaked rows with ties: 2000 levels, a few tokens above by 0..10 (the
				 * candidates' share of the mass goes from ~0.1% to ~99%) */
				raw[i] = (float)((r >> 40) % 2000) / 200.0f + ((r >> 20) % 997 == 0 ? (float)(it % 6) * 2 : 0.0f);
			}
			struct kern_top t;
			kern_top_row(raw, V, p.temperature > 0 ? 1.0f / p.temperature : 1.0f, &t);
			memcpy(lg, raw, sizeof(float) * V);
			float la = 0, lb = 0;
			struct sampler_logprob ta[20], tb[20];
			int32_t xa = sampler_sample(&a, &w, lg, n_top >= 0 ? &la : NULL, ta, n_top), xb;
			if (sampler_top_covers(&b, &w, &t)) {
				covered++;
				xb = sampler_sample_top(&b, &w, &t, n_top >= 0 ? &lb : NULL, tb, n_top);
			} else {
				uint64_t before[4];
				memcpy(before, b.rng, sizeof(before));
				refused += sampler_sample_top(&b, &w, &t, NULL, tb, 0) == -1 && !memcmp(before, b.rng, sizeof(before));
				memcpy(lg, raw, sizeof(float) * V);
				xb = sampler_sample(&b, &w, lg, n_top >= 0 ? &lb : NULL, tb, n_top);
			}
			diff += xa != xb;
			lp_bad += fabsf(la - lb) > 1e-5f;
			for (int i = 0; i < n_top; i++)
				lp_bad += ta[i].token != tb[i].token || fabsf(ta[i].logprob - tb[i].logprob) > 1e-5f;
		}
		CHECK(diff == 0, "case %zu: %d of 300 tokens differ between whole rows and candidates", c, diff);
		CHECK(lp_bad == 0, "case %zu: %d log-probabilities differ by more than 1e-5", c, lp_bad);
		CHECK(refused == 300 - covered, "case %zu: %d of %d rows the candidates do not decide touched the generator",
		      c, 300 - covered - refused, 300 - covered);
		if (cases[c].both)
			CHECK(covered > 0 && covered < 300, "case %zu: %d of 300 draws decided by the candidates", c, covered);
		else
			CHECK(covered == 300, "case %zu: only %d of 300 draws decided by the candidates", c, covered);
		sampler_free(&a);
		sampler_free(&b);
		sampler_scratch_free(&w);
	}
	free(lg);
	free(raw);
	struct sampler s;
	struct sampler_params p = plain();
	p.top_k = KERN_TOP_K + 1;
	sampler_init(&s, &p, 50000);
	CHECK(!sampler_top_ok(&s), "top_k above the candidates needs whole rows");
	sampler_free(&s);
	p.top_k = 10;
	p.presence_penalty = 0.5f;
	sampler_init(&s, &p, 50000);
	CHECK(!sampler_top_ok(&s), "penalties need whole rows");
	sampler_free(&s);
}

int cmp(const void *x, const void *y)
{
	float a = *(const float *)x, b = *(const float *)y;
	return a < b ? 1 : a > b ? -1 : 0;
}

static void test_stop(void)
{
	struct stop_matcher m;
	char out[512];
	stop_init(&m);
	stop_add(&m, "STOP", 4);
	stop_add(&m, "\n\n", 2);
	size_t n = stop_feed(&m, "hello S", 7, out);
	CHECK(n == 6 && !memcmp(out, "hello ", 6), "holds a possible prefix");
	n = stop_feed(&m, "TO", 2, out);
	CHECK(n == 0, "still a prefix");
	n = stop_feed(&m, "P and more", 10, out);
	CHECK(n == 0 && m.hit, "stop string across three feeds");
	n = stop_feed(&m, "x", 1, out);
	CHECK(n == 0, "nothing after a hit");

	stop_init(&m);
	stop_add(&m, "STOP", 4);
	n = stop_feed(&m, "ST", 2, out);
	n += stop_feed(&m, "ART", 3, out + n);
	CHECK(n == 5 && !memcmp(out, "START", 5) && !m.hit, "false prefix released: %.*s", (int)n, out);
	n = stop_feed(&m, "xxSTO", 5, out);
	n += stop_flush(&m, out + n);
	CHECK(n == 5 && !memcmp(out, "xxSTO", 5), "flush releases the held prefix");
	CHECK(stop_add(&m, "", 0) == -EINVAL, "empty stop refused");
}

static void test_kv(void)
{
	struct kv_pool p;
	CHECK(kv_pool_init(&p, 10, 16) == 0, "pool");
	struct kv_seq a, b;
	kv_seq_init(&a);
	kv_seq_init(&b);
	CHECK(kv_seq_reserve(&p, &a, 100) == 0 && a.n_blocks == 7, "7 blocks for 100 positions");
	CHECK(kv_seq_reserve(&p, &b, 64) == -ENOSPC && b.n_blocks == 0 && p.n_free == 3, "no partial grab");
	CHECK(kv_seq_reserve(&p, &b, 48) == 0 && p.n_free == 0, "exact fit");
	bool seen[10] = {0};
	for (int i = 0; i < a.n_blocks; i++)
		seen[a.blocks[i]] = true;
	for (int i = 0; i < b.n_blocks; i++) {
		CHECK(!seen[b.blocks[i]], "block shared between sequences");
		seen[b.blocks[i]] = true;
	}
	kv_seq_release(&p, &a);
	CHECK(p.n_free == 7 && a.n_blocks == 0, "release");
	kv_seq_free(&p, &a);
	kv_seq_free(&p, &b);
	CHECK(p.n_free == 10, "all back");
	kv_pool_free(&p);
}

int main(void)
{
	if (sampler_scratch_init(&g_w, 50000))
		return 1;
	test_distribution();
	test_greedy_penalty_seed();
	test_logprobs_and_large_vocab();
	test_whole_row_draw();
	test_sample_from_top();
	test_stop();
	test_kv();
	sampler_scratch_free(&g_w);
	return check_status("test_sampler");
}
