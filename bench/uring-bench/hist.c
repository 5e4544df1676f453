/*
 * hist.c: the log-linear histogram of hist.h.
 *
 * Index layout: for v < 2^SUB, idx = v. Otherwise let m be the position of
 * v's top bit and shift = m - (SUB - 1) >= 1; the mantissa v >> shift lies in
 * [2^(SUB-1), 2^SUB), and idx = shift * 2^(SUB-1) + mantissa. Consecutive
 * shifts tile the index space without gaps: shift s covers
 * [(s+1) * HALF, (s+2) * HALF).
 */
#include "hist.h"

#include <math.h>
#include <string.h>

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

unsigned hist_index(uint64_t v)
{
	const uint64_t top = (1ull << HIST_MAX_BITS) - 1;
	if (v > top)
		v = top;
	if (v < (1ull << HIST_SUB_BITS))
		return (unsigned)v;
	unsigned m = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = m - (HIST_SUB_BITS - 1);
	return shift * HIST_HALF + (unsigned)(v >> shift);
}

uint64_t hist_lower(unsigned idx)
{
	if (idx < (1u << HIST_SUB_BITS))
		return idx;
	unsigned shift = idx / HIST_HALF - 1;
	uint64_t mant = idx - shift * HIST_HALF;
	return mant << shift;
}

uint64_t hist_width(unsigned idx)
{
	if (idx < (1u << HIST_SUB_BITS))
		return 1;
	return 1ull << (idx / HIST_HALF - 1);
}

void hist_record_n(struct hist *h, uint64_t v, uint64_t count)
{
	if (!count)
		return;
	h->counts[hist_index(v)] += count;
	h->n += count;
	if (v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	double d = (double)v;
	h->sum += d * (double)count;
	h->sum_sq += d * d * (double)count;
}

void hist_record(struct hist *h, uint64_t v)
{
	hist_record_n(h, v, 1);
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	if (!src->n)
		return;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->n += src->n;
	dst->sum += src->sum;
	dst->sum_sq += src->sum_sq;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

double hist_percentile(const struct hist *h, double p)
{
	if (!h->n)
		return 0;
	if (p <= 0)
		return (double)h->min;
	if (p >= 100)
		return (double)h->max;
	uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->n);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			double w = (double)hist_width(i);
			double v = (double)hist_lower(i) + (w > 1 ? (w - 1) / 2.0 : 0);
			if (v < (double)h->min)
				v = (double)h->min;
			if (v > (double)h->max)
				v = (double)h->max;
			return v;
		}
	}
	return (double)h->max;
}

double hist_mean(const struct hist *h)
{
	return h->n ? h->sum / (double)h->n : 0;
}

double hist_stdev(const struct hist *h)
{
	if (h->n < 2)
		return 0;
	double m = hist_mean(h);
	double var = h->sum_sq / (double)h->n - m * m;
	return var > 0 ? sqrt(var) : 0;
}
