/*
 * hist.h: a log-linear latency histogram (the HDR histogram layout), for
 * uring-bench's per-thread recorders.
 *
 * Values are unsigned integers (uring-bench records nanoseconds). Values
 * below 2^HIST_SUB_BITS get a bucket each (exact); above, every power of two
 * is split into 2^(HIST_SUB_BITS-1) equal buckets, so a bucket is never
 * wider than 2^-(HIST_SUB_BITS-1) of its lower bound. A percentile is
 * reported as its bucket's midpoint: relative error at most
 * HIST_REL_ERROR = 2^-HIST_SUB_BITS (0.098% with 10 bits). min, max, sum and
 * the sum of squares are exact.
 *
 * Recording is O(1) and allocation-free; one recorder per thread, merged at
 * the end (hist_merge). Not thread-safe: each hist has one writer.
 */
#ifndef LOCUS_BENCH_HIST_H
#define LOCUS_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 10
#define HIST_HALF     (1u << (HIST_SUB_BITS - 1))
/* values up to 2^HIST_MAX_BITS - 1 (about 36 minutes in ns); larger ones are clamped */
#define HIST_MAX_BITS  41
#define HIST_BUCKETS   ((HIST_MAX_BITS - HIST_SUB_BITS + 2) * HIST_HALF)
#define HIST_REL_ERROR (1.0 / (double)(1u << HIST_SUB_BITS))

struct hist {
	uint64_t n;
	uint64_t min, max;
	double sum, sum_sq;
	uint64_t counts[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
/* Records v `count` times (the same value, e.g. one gap split over k tokens). */
void hist_record_n(struct hist *h, uint64_t v, uint64_t count);
void hist_merge(struct hist *dst, const struct hist *src);
/* The value at percentile p in [0, 100]: the smallest recorded value whose
 * rank is >= ceil(p/100 * n) (p = 0 gives min, p = 100 gives max), as its
 * bucket's midpoint clamped to [min, max]. 0 when empty. */
double hist_percentile(const struct hist *h, double p);
double hist_mean(const struct hist *h);
double hist_stdev(const struct hist *h);

/* Bucket arithmetic, exposed for tests. */
unsigned hist_index(uint64_t v);
uint64_t hist_lower(unsigned idx);
uint64_t hist_width(unsigned idx);

#endif
