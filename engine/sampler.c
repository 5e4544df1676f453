/*
 * sampler.c: penalties, top-k / top-p / min-p truncation, temperature and
 * a seeded draw. Nothing sorts the whole row: top-k by partial selection,
 * top-p and the draw over the 64 largest and then buckets of the rest
 * (whole_row_draw), so a step costs a few passes over n_vocab.
 */
#include "engine/sampler.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "alloc/alloc.h"
#include "kernels/kernels.h"

/* whole_row_draw's buckets of 1/32 nat below a row's maximum */
#define TAIL_BUCKETS 1024
#define BUCKETS_PER_NAT 32.0f

void sampler_params_default(struct sampler_params *p)
{
	*p = (struct sampler_params){
		.temperature = 0.8f,
		.top_k = 40,
		.top_p = 0.95f,
		.min_p = 0.05f,
		.repeat_penalty = 1.0f,
		.freq_penalty = 0.0f,
		.presence_penalty = 0.0f,
		.penalty_last_n = 64,
		.seed = 0,
	};
}

int sampler_params_check(const struct sampler_params *p, const char **field)
{
#define BAD(cond, name)              \
	do {                         \
		if (cond) {          \
			*field = name; \
			return -EINVAL; \
		}                    \
	} while (0)
	BAD(!(p->temperature >= -1e-6f && p->temperature <= 100.0f), "temperature");
	BAD(p->top_k < 0 || p->top_k > (1 << 24), "top_k");
	BAD(!(p->top_p > 0.0f && p->top_p <= 1.0f), "top_p");
	BAD(!(p->min_p >= 0.0f && p->min_p <= 1.0f), "min_p");
	BAD(!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 100.0f), "repetition_penalty");
	BAD(!(p->freq_penalty >= -2.0f && p->freq_penalty <= 2.0f), "frequency_penalty");
	BAD(!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f), "presence_penalty");
	BAD(p->penalty_last_n < 0 || p->penalty_last_n > (1 << 20), "penalty_last_n");
#undef BAD
	return 0;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t *s)
{
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

/* Uniform in [0, 1). */
static double rng_uniform(uint64_t *s)
{
	return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_scratch_init(struct sampler_scratch *w, int32_t n_vocab)
{
	memset(w, 0, sizeof(*w));
	if (n_vocab < 1)
		return -EINVAL;
	w->n_vocab = n_vocab;
	w->prob = alloc_array((size_t)n_vocab, sizeof(float));
	w->raw = alloc_array((size_t)n_vocab, sizeof(float));
	w->idx = alloc_array((size_t)n_vocab, sizeof(int32_t));
	w->mark = alloc_array((size_t)n_vocab, 1);
	w->sortbuf = alloc_array((size_t)n_vocab * 2, sizeof(uint64_t));
	w->prob1 = alloc_array((size_t)n_vocab, sizeof(float));
	w->bkt = alloc_array((size_t)n_vocab, sizeof(uint16_t));
	w->bsum = alloc_array(2 * TAIL_BUCKETS, sizeof(double));
	if (!w->prob || !w->raw || !w->idx || !w->mark || !w->sortbuf || !w->prob1 || !w->bkt || !w->bsum) {
		sampler_scratch_free(w);
		return -ENOMEM;
	}
	return 0;
}

void sampler_scratch_free(struct sampler_scratch *w)
{
	alloc_free(w->prob);
	alloc_free(w->raw);
	alloc_free(w->idx);
	alloc_free(w->mark);
	alloc_free(w->sortbuf);
	alloc_free(w->prob1);
	alloc_free(w->bkt);
	alloc_free(w->bsum);
	memset(w, 0, sizeof(*w));
}

int sampler_init(struct sampler *s, const struct sampler_params *p, int32_t n_vocab)
{
	memset(s, 0, sizeof(*s));
	const char *f;
	if (n_vocab < 1 || sampler_params_check(p, &f))
		return -EINVAL;
	s->p = *p;
	if (s->p.temperature < 1e-5f)
		s->p.temperature = 0.0f; /* greedy, as the API's rule; 1/T stays finite */
	s->n_vocab = n_vocab;
	uint64_t seed = p->seed;
	for (int i = 0; i < 4; i++)
		s->rng[i] = splitmix64(&seed);
	bool pen = p->penalty_last_n > 0 &&
		   (p->repeat_penalty != 1.0f || p->freq_penalty != 0.0f || p->presence_penalty != 0.0f);
	if (pen) {
		s->hist = alloc_array((size_t)p->penalty_last_n, sizeof(int32_t));
		s->counts = alloc_array((size_t)n_vocab, sizeof(uint16_t));
		if (!s->hist || !s->counts) {
			sampler_free(s);
			return -ENOMEM;
		}
	}
	return 0;
}

void sampler_free(struct sampler *s)
{
	alloc_free(s->hist);
	alloc_free(s->counts);
	memset(s, 0, sizeof(*s));
}

void sampler_accept(struct sampler *s, int32_t token)
{
	if (!s->counts || token < 0 || token >= s->n_vocab)
		return;
	int32_t n = s->p.penalty_last_n;
	if (s->n_hist == n) {
		int32_t old = s->hist[s->hist_head];
		s->counts[old]--;
	} else {
		s->n_hist++;
	}
	s->hist[s->hist_head] = token;
	s->hist_head = (s->hist_head + 1) % n;
	if (s->counts[token] < UINT16_MAX)
		s->counts[token]++;
}

static void apply_penalties(struct sampler *s, uint8_t *mark, float *logits)
{
	if (!s->counts)
		return;
	int32_t cap = s->p.penalty_last_n, n = s->n_hist;
	int32_t start = (s->hist_head - n + cap) % cap;
	/* Each distinct token once; mark[] is cleared again on the way out. */
	for (int32_t i = 0; i < n; i++) {
		int32_t t = s->hist[(start + i) % cap];
		if (mark[t])
			continue;
		mark[t] = 1;
		float c = (float)s->counts[t];
		float l = logits[t];
		if (s->p.repeat_penalty != 1.0f)
			l = l > 0 ? l / s->p.repeat_penalty : l * s->p.repeat_penalty;
		l -= c * s->p.freq_penalty + s->p.presence_penalty;
		logits[t] = l;
	}
	for (int32_t i = 0; i < n; i++)
		mark[s->hist[(start + i) % cap]] = 0;
}

static int32_t argmax(const float *x, int32_t n)
{
	return kern_argmax(x, n);
}

/* The order of candidates: larger value first, ties by lower id, NaN last
 * (kern_top_key's order, that of the CUDA backend's top-K selection, so
 * both paths pick the same tokens). */
static inline bool before(const float *val, int32_t a, int32_t b)
{
	float x = val[a], y = val[b];
	if (x != x || y != y)
		return y != y && (x == x || a < b);
	return x > y || (x == y && a < b);
}

/* Sorts idx[0..n) in `before` order: an LSD radix sort of (~key, id), a
 * byte per pass, the 8 histograms counted in one read, passes over a byte
 * that all share skipped (the ids' high bytes, usually). tmp: 2n. */
static void radix_sort_top(int32_t *idx, int32_t n, const float *val, uint64_t *tmp)
{
	uint64_t *a = tmp, *b = tmp + n;
	uint32_t cnt[8][256];
	memset(cnt, 0, sizeof(cnt));
	for (int32_t i = 0; i < n; i++) {
		uint64_t c = (uint64_t)~kern_top_key(val[idx[i]]) << 32 | (uint32_t)idx[i];
		a[i] = c;
		for (int d = 0; d < 8; d++)
			cnt[d][(c >> (8 * d)) & 255]++;
	}
	for (int d = 0; d < 8; d++) {
		const int shift = 8 * d;
		if (cnt[d][(a[0] >> shift) & 255] == (uint32_t)n)
			continue;
		uint32_t at = 0;
		for (int v = 0; v < 256; v++) {
			uint32_t c = cnt[d][v];
			cnt[d][v] = at;
			at += c;
		}
		for (int32_t i = 0; i < n; i++)
			b[cnt[d][(a[i] >> shift) & 255]++] = a[i];
		uint64_t *t = a;
		a = b;
		b = t;
	}
	for (int32_t i = 0; i < n; i++)
		idx[i] = (int32_t)(uint32_t)a[i];
}

/* Moves the k first of idx[0..n) in that order to idx[0..k), sorted:
 * quickselect to partition (none when k = n), then a shell sort of the
 * head, or the radix sort when it is long (tmp: 2k). */
static void select_top(int32_t *idx, int32_t n, int32_t k, const float *val, uint64_t *tmp)
{
	if (k > n)
		k = n;
	int32_t lo = 0, hi = k < n ? n - 1 : 0;
	while (lo < hi) {
		int32_t pivot = idx[lo + (hi - lo) / 2];
		int32_t i = lo, j = hi;
		while (i <= j) {
			while (before(val, idx[i], pivot))
				i++;
			while (before(val, pivot, idx[j]))
				j--;
			if (i <= j) {
				int32_t t = idx[i];
				idx[i++] = idx[j];
				idx[j--] = t;
			}
		}
		if (k - 1 <= j)
			hi = j;
		else if (k - 1 >= i)
			lo = i;
		else
			break;
	}
	if (k > 256) {
		radix_sort_top(idx, k, val, tmp);
		return;
	}
	for (int32_t gap = k / 2 > 0 ? k / 2 : 1;; gap = gap / 2 > 0 ? gap / 2 : 1) {
		for (int32_t i = gap; i < k; i++) {
			int32_t t = idx[i], j = i;
			while (j >= gap && before(val, t, idx[j - gap])) {
				idx[j] = idx[j - gap];
				j -= gap;
			}
			idx[j] = t;
		}
		if (gap == 1)
			break;
	}
}

/* A token's weight in a draw, exp((v - lmax) * inv_t): one definition in
 * float for whole rows and candidates, so both add the same numbers. */
static inline float weight(float v, float lmax, float inv_t)
{
	return expf((v - lmax) * inv_t);
}

/* log(sum(exp(x))) in double. */
static double logsumexp(const float *x, int32_t n, float mx)
{
	double sum = 0;
	for (int32_t i = 0; i < n; i++)
		sum += exp((double)x[i] - mx);
	return sum > 0 ? mx + log(sum) : -INFINITY; /* n = 0: the log of an empty sum */
}

/* The same for a whole row, with the terms from kern_exp_shift (float,
 * vectorized) summed in double; NaN when a logit is; logsumexp itself when
 * the maximum is not finite. */
static double row_logsumexp(struct sampler_scratch *w, const float *x, int32_t V)
{
	float mx = x[argmax(x, V)];
	if (!isfinite(mx))
		return logsumexp(x, V, mx);
	kern_exp_shift(x, w->prob1, V, mx, 1.0f);
	double sum = 0;
	bool nan = false;
	for (int32_t i = 0; i < V; i++) {
		nan |= x[i] != x[i];
		if (x[i] > -INFINITY) /* kern_exp_shift gives ~1e-38 for -inf */
			sum += w->prob1[i];
	}
	return nan ? NAN : sum > 0 ? mx + log(sum) : -INFINITY; /* sum >= 1: the maximum's own term */
}

/*
 * The head of a draw from a whole row: t's sorted candidates, max lmax. The
 * whole-row draw and the candidates' path both run these, so they do the
 * same arithmetic entry for entry.
 */
/* top_p's cut within the head for a row of mass z (at temperature 1): the
 * entries kept, or -1 with *cum the head's share when it holds less. */
static int32_t head_top_p(const struct kern_top *t, float lmax, double z, float top_p, double *cum)
{
	double c = 0;
	for (int32_t i = 0; i < t->n; i++) {
		c += weight(t->logit[i], lmax, 1.0f) / z;
		if (c >= top_p)
			return i + 1;
	}
	*cum = c;
	return -1;
}

/* min_p over the head's first n: how many pass (a prefix: sorted, NaN-free;
 * at least the maximum). */
static int32_t head_min_p(const struct kern_top *t, int32_t n, float thr)
{
	int32_t m = 0;
	while (m < n && t->logit[m] >= thr)
		m++;
	return m > 0 ? m : 1;
}

/* The head's first n weights at 1/inv_t into wt; returns their sum. */
static double head_weights(const struct kern_top *t, int32_t n, float lmax, float inv_t, float *wt)
{
	double tot = 0;
	for (int32_t i = 0; i < n; i++) {
		wt[i] = weight(t->logit[i], lmax, inv_t);
		tot += wt[i];
	}
	return tot;
}

/*
 * A draw from a whole row (top_k off) walks its tokens from the largest
 * logit down, ties by lower id: the candidates of a struct kern_top are
 * that order's head, so they decide alone every draw that lands among them
 * (sampler_top_covers). whole_row_draw does it without sorting the row:
 * the head is the row's kern_top_select, the rest (the tail) falls in
 * buckets of 1/32 nat below the maximum, summed in one pass; only the
 * buckets where top_p's cut and the draw land are sorted. The head's
 * arithmetic is that of the candidates' path, entry for entry.
 */

/* The bucket of a tail logit v <= lmax: 0 for the largest; monotone. */
static inline int tail_bucket(float v, float lmax)
{
	float d = (lmax - v) * BUCKETS_PER_NAT;
	return d < (float)(TAIL_BUCKETS - 1) ? (int)d : TAIL_BUCKETS - 1;
}

/* The tail's entries of bucket b with a logit >= thr, into idx in the
 * draw's order; returns their number. */
static int32_t bucket_entries(struct sampler_scratch *w, const float *x, int32_t V, int b, float thr)
{
	int32_t m = 0;
	for (int32_t i = 0; i < V; i++)
		if (w->bkt[i] == b && x[i] >= thr)
			w->idx[m++] = i;
	select_top(w->idx, m, m, x, w->sortbuf);
	return m;
}

/* The last entry with a logit >= thr among bucket b's first m (all: -1),
 * or -1. */
static int32_t bucket_last(struct sampler_scratch *w, const float *x, int32_t V, int b, int32_t m, float thr)
{
	int32_t n = bucket_entries(w, x, V, b, m < 0 ? thr : -INFINITY), last = -1;
	for (int32_t j = 0; j < n && (m < 0 || j < m); j++)
		if (x[w->idx[j]] >= thr)
			last = w->idx[j];
	return last;
}

/*
 * Truncation and the draw over idx[0..n), sorted in descending order of
 * val (token ids into the logits, or positions into a struct kern_top's
 * list). Returns the chosen entry of idx.
 */
static int32_t truncate_draw(struct sampler *s, struct sampler_scratch *w, const float *val, int32_t n)
{
	float lmax = val[w->idx[0]];
	if (s->p.top_p < 1.0f) {
		double z = 0, cum = 0;
		for (int32_t i = 0; i < n; i++)
			z += weight(val[w->idx[i]], lmax, 1.0f);
		for (int32_t i = 0; i < n; i++) {
			cum += weight(val[w->idx[i]], lmax, 1.0f) / z;
			if (cum >= s->p.top_p) {
				n = i + 1;
				break;
			}
		} /* not reached (rounding): everything is kept */
	}
	if (s->p.min_p > 0.0f) {
		float thr = lmax + logf(s->p.min_p);
		int32_t m = 0;
		for (int32_t i = 0; i < n; i++)
			if (val[w->idx[i]] >= thr)
				w->idx[m++] = w->idx[i];
		n = m > 0 ? m : 1; /* the maximum always passes; guard against NaN */
	}
	double tot = 0;
	float inv_t = 1.0f / s->p.temperature;
	for (int32_t i = 0; i < n; i++) {
		float e = weight(val[w->idx[i]], lmax, inv_t);
		w->prob[i] = e;
		tot += e;
	}
	double u = rng_uniform(s->rng) * tot, acc = 0;
	for (int32_t i = 0; i < n; i++) {
		acc += w->prob[i];
		if (u < acc)
			return w->idx[i];
	}
	return w->idx[n - 1];
}

static int32_t whole_row_draw(struct sampler *s, struct sampler_scratch *w, const float *x)
{
	const int32_t V = s->n_vocab;
	struct kern_top t;
	kern_top_select(x, V, &t);
	const int32_t K = t.n;
	const float lmax = t.logit[0];
	if (K == V || !isfinite(lmax) || !(t.logit[K - 1] == t.logit[K - 1])) {
		/* all in the head, or NaN / infinite logits: sort the row */
		for (int32_t i = 0; i < V; i++)
			w->idx[i] = i;
		select_top(w->idx, V, V, x, w->sortbuf);
		return truncate_draw(s, w, x, V);
	}
	const float inv_t = 1.0f / s->p.temperature;
	const bool want_p = s->p.top_p < 1.0f;
	const float thr = s->p.min_p > 0.0f ? lmax + logf(s->p.min_p) : -INFINITY;
	if (!want_p && t.logit[K - 1] < thr) {
		/* min_p keeps a part of the head alone: no tail to weigh */
		memcpy(w->idx, t.id, (size_t)K * sizeof(int32_t));
		return truncate_draw(s, w, x, K);
	}
	double *z1b = w->bsum, *ztb = w->bsum + TAIL_BUCKETS; /* per bucket: weights at 1, at 1/T (>= thr) */
	memset(w->bsum, 0, 2 * TAIL_BUCKETS * sizeof(double));
	kern_exp_shift(x, w->prob, V, lmax, inv_t);
	if (want_p && inv_t != 1.0f)
		kern_exp_shift(x, w->prob1, V, lmax, 1.0f);
	const float *p1 = inv_t != 1.0f ? w->prob1 : w->prob;
	for (int32_t i = 0; i < K; i++)
		w->mark[t.id[i]] = 1;
	for (int32_t i = 0; i < V; i++) {
		float v = x[i];
		if (w->mark[i] || !(v > -INFINITY)) {
			w->bkt[i] = UINT16_MAX; /* the head; -inf and NaN weigh nothing */
			continue;
		}
		int b = tail_bucket(v, lmax);
		w->bkt[i] = (uint16_t)b;
		if (want_p)
			z1b[b] += p1[i];
		if (v >= thr)
			ztb[b] += w->prob[i];
	}
	for (int32_t i = 0; i < K; i++)
		w->mark[t.id[i]] = 0;

	/* top_p: the set is the head's first hn, the tail's buckets below bc
	 * and the first mc of bucket bc in the draw's order (mc < 0: none) */
	int32_t hn = K, mc = -1;
	int bc = TAIL_BUCKETS;
	if (want_p) {
		double z = 0, cum = 0;
		for (int32_t i = 0; i < K; i++)
			z += weight(t.logit[i], lmax, 1.0f);
		for (int b = 0; b < TAIL_BUCKETS; b++)
			z += z1b[b];
		int32_t cut = head_top_p(&t, lmax, z, s->p.top_p, &cum);
		if (cut > 0) {
			hn = cut;
			bc = 0;
		}
		for (int b = 0; b < TAIL_BUCKETS && cut < 0; b++) {
			if (cum + z1b[b] / z < s->p.top_p) {
				cum += z1b[b] / z;
				continue;
			}
			int32_t m = bucket_entries(w, x, V, b, -INFINITY), j = 0;
			while (j < m) {
				cum += p1[w->idx[j++]] / z;
				if (cum >= s->p.top_p)
					break;
			}
			bc = b;
			mc = j;
			cut = 0;
		}
		/* not cut (rounding): keep everything */
	}
	/* min_p: a prefix of the head; in the tail the weights >= thr only */
	const int32_t hk = head_min_p(&t, hn, thr);

	/* the draw */
	float hw[KERN_TOP_K];
	double tot = head_weights(&t, hk, lmax, inv_t, hw), part = 0;
	for (int b = 0; b < bc; b++)
		tot += ztb[b];
	if (mc > 0) {
		int32_t m = bucket_entries(w, x, V, bc, -INFINITY);
		for (int32_t j = 0; j < mc && j < m; j++)
			if (x[w->idx[j]] >= thr)
				part += w->prob[w->idx[j]];
		tot += part;
	}
	double u = rng_uniform(s->rng) * tot, acc = 0;
	for (int32_t i = 0; i < hk; i++) {
		acc += hw[i];
		if (u < acc)
			return t.id[i];
	}
	for (int b = 0; b < bc; b++) {
		if (ztb[b] == 0 || u >= acc + ztb[b]) {
			acc += ztb[b];
			continue;
		}
		int32_t m = bucket_entries(w, x, V, b, thr);
		for (int32_t j = 0; j < m; j++) {
			acc += w->prob[w->idx[j]];
			if (u < acc)
				return w->idx[j];
		}
		return m > 0 ? w->idx[m - 1] : t.id[hk - 1]; /* rounding: the bucket's last */
	}
	if (part > 0) {
		int32_t m = bucket_entries(w, x, V, bc, -INFINITY);
		for (int32_t j = 0; j < mc && j < m; j++) {
			if (x[w->idx[j]] < thr)
				continue;
			acc += w->prob[w->idx[j]];
			if (u < acc)
				return w->idx[j];
		}
	}
	/* rounding: the set's last entry */
	if (part > 0) {
		int32_t last = bucket_last(w, x, V, bc, mc, thr);
		if (last >= 0)
			return last;
	}
	for (int b = bc < TAIL_BUCKETS ? bc - 1 : TAIL_BUCKETS - 1; b >= 0; b--)
		if (ztb[b] > 0) {
			int32_t last = bucket_last(w, x, V, b, -1, thr);
			if (last >= 0)
				return last;
		}
	return t.id[hk - 1];
}

int32_t sampler_sample(struct sampler *s, struct sampler_scratch *w, float *logits, float *chosen_lp,
		       struct sampler_logprob *top, int n_top)
{
	const int32_t V = s->n_vocab;
	if (n_top > 20)
		n_top = 20;
	bool want_lp = chosen_lp != NULL;
	double lse = 0;
	if (want_lp) {
		memcpy(w->raw, logits, (size_t)V * sizeof(float));
		lse = row_logsumexp(w, w->raw, V);
		if (n_top > 0) { /* n_top <= 20: the first of the candidates */
			struct kern_top t;
			kern_top_select(w->raw, V, &t);
			if (n_top > t.n)
				n_top = t.n;
			for (int i = 0; i < n_top; i++)
				top[i] = (struct sampler_logprob){t.id[i], (float)(t.logit[i] - lse)};
		}
	}
	apply_penalties(s, w->mark, logits);

	int32_t tok;
	if (s->p.temperature <= 0.0f) {
		tok = argmax(logits, V);
	} else if (s->p.top_k > 0 && s->p.top_k < V) {
		if (s->p.top_k <= KERN_TOP_K) { /* the same entries in the same order, in one pass */
			struct kern_top t;
			kern_top_select(logits, V, &t);
			memcpy(w->idx, t.id, (size_t)s->p.top_k * sizeof(int32_t));
		} else {
			for (int32_t i = 0; i < V; i++)
				w->idx[i] = i;
			select_top(w->idx, V, s->p.top_k, logits, w->sortbuf);
		}
		tok = truncate_draw(s, w, logits, s->p.top_k);
	} else {
		tok = whole_row_draw(s, w, logits);
	}
	if (want_lp)
		*chosen_lp = (float)(w->raw[tok] - lse);
	return tok;
}

bool sampler_top_ok(const struct sampler *s)
{
	if (s->counts)
		return false;
	return s->p.temperature <= 0.0f || s->p.top_k <= 0 || s->p.top_k >= s->n_vocab || s->p.top_k <= KERN_TOP_K;
}

/*
 * truncate_draw over a whole row (top_k off) seen through its candidates
 * c, with the generator state rng: the chosen position in c, or -1 when
 * the truncation or the draw reaches past them. Each step is the whole
 * row's arithmetic on the same entries (the candidates are the head of
 * whole_row_draw's order), except for the two sums over the whole row,
 * which come from c (lz, lz_t) when it holds fewer entries than the row:
 * those differ from the host's by rounding (~1e-6 relative from a device),
 * so where top_p's cumulative mass ends within that of top_p, the nucleus
 * may differ by its last token (and so every draw from it), and a draw
 * within that of a boundary between two tokens may pick the other.
 */
static int32_t top_whole_draw(const struct sampler *s, struct sampler_scratch *w, const struct kern_top *c,
			      uint64_t *rng)
{
	const int32_t K = c->n;
	const bool all = K == s->n_vocab; /* the candidates are the whole row */
	if (K < 1 || !isfinite(c->logit[0]) || !isfinite(c->lse) || !isfinite(c->lz) || !isfinite(c->lz_t))
		return -1; /* NaN or infinite logits: the whole row decides */
	float lmax = c->logit[0];
	int32_t n = K;  /* entries of the draw among the candidates */
	bool past = !all; /* the draw also covers the entries past them */
	if (s->p.top_p < 1.0f) {
		double z = 0, cum;
		if (all)
			for (int32_t i = 0; i < K; i++)
				z += weight(c->logit[i], lmax, 1.0f);
		else
			z = exp((double)c->lz);
		int32_t cut = head_top_p(c, lmax, z, s->p.top_p, &cum);
		if (cut < 0 && !all)
			return -1; /* the nucleus is larger than the candidates */
		if (cut > 0) {
			n = cut;
			past = false;
		}
	}
	if (s->p.min_p > 0.0f) {
		float thr = lmax + logf(s->p.min_p);
		if (past && c->logit[K - 1] >= thr)
			return -1; /* entries past the candidates may pass the filter */
		past = false;
		n = head_min_p(c, n, thr);
	}
	double tot = head_weights(c, n, lmax, 1.0f / s->p.temperature, w->prob);
	if (past)
		tot = exp((double)c->lz_t); /* the whole row's sum at this temperature */
	double u = rng_uniform(rng) * tot, acc = 0;
	for (int32_t i = 0; i < n; i++) {
		acc += w->prob[i];
		if (u < acc)
			return i;
	}
	return past ? -1 : n - 1;
}

bool sampler_top_covers(const struct sampler *s, struct sampler_scratch *w, const struct kern_top *c)
{
	if (!sampler_top_ok(s) || c->n < 1)
		return false;
	if (s->p.temperature <= 0.0f || (s->p.top_k > 0 && s->p.top_k < s->n_vocab))
		return true;
	uint64_t peek[4];
	memcpy(peek, s->rng, sizeof(peek));
	return top_whole_draw(s, w, c, peek) >= 0;
}

int32_t sampler_sample_top(struct sampler *s, struct sampler_scratch *w, const struct kern_top *c, float *chosen_lp,
			   struct sampler_logprob *top, int n_top)
{
	if (!sampler_top_covers(s, w, c))
		return -1;
	int32_t pos = 0;
	if (s->p.temperature > 0.0f) {
		if (s->p.top_k > 0 && s->p.top_k < s->n_vocab) {
			for (int32_t i = 0; i < s->p.top_k; i++)
				w->idx[i] = i;
			pos = truncate_draw(s, w, c->logit, s->p.top_k);
		} else {
			pos = top_whole_draw(s, w, c, s->rng);
		}
	}
	if (n_top > 20)
		n_top = 20;
	if (n_top > c->n)
		n_top = c->n;
	for (int i = 0; i < n_top; i++)
		top[i] = (struct sampler_logprob){c->id[i], c->logit[i] - c->lse};
	if (chosen_lp)
		*chosen_lp = c->logit[pos] - c->lse;
	return c->id[pos];
}
