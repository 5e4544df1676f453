/*
 * metrics.c: the metrics registry of metrics.h: per-node shards of relaxed
 * atomics, merged into the Prometheus text format at scrape time.
 *
 * Bucket boundaries are vLLM's (vllm/v1/metrics/loggers.py): TTFT 22
 * boundaries from 1 ms to 2560 s, the per-token pair 19 from 10 ms to 80 s,
 * request latencies 21 from 0.3 s to 7680 s. `le` values are written as
 * Python's prometheus_client writes them ("0.001", "1.0", "+Inf") so that
 * queries selecting a bucket by its label work unchanged.
 *
 * Threading: see metrics.h. Shards are written only through atomics; the
 * labels (model_label, node ids) are written at set-up only.
 */
#include "engine/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 24
#define MAX_NODES   1024

enum hist_id { H_TTFT, H_ITL, H_E2E, H_QUEUE, H_COUNT };

struct hist_def {
	const char *name;
	const char *help;
	const double *bounds;
	int n_bounds;
};

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
                                     1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double token_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                      0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double request_bounds[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                        30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct hist_def hist_defs[H_COUNT] = {
    [H_TTFT] = {"time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttft_bounds,
                N(ttft_bounds)},
    [H_ITL] = {"inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", token_bounds,
               N(token_bounds)},
    [H_E2E] = {"e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", request_bounds,
               N(request_bounds)},
    [H_QUEUE] = {"request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", request_bounds,
                 N(request_bounds)},
};

struct hist {
	_Atomic uint64_t count[MAX_BUCKETS + 1]; /* per bucket, not cumulative; [n_bounds] is (last, +Inf) */
	_Atomic uint64_t sum_ns;
};

enum { FIN_STOP, FIN_LENGTH, FIN_ABORT, FIN_COUNT };
static const char *const fin_name[FIN_COUNT] = {"stop", "length", "abort"};

struct metrics_shard {
	alignas(64) struct hist hist[H_COUNT];
	_Atomic uint64_t prompt_tokens, generation_tokens, preemptions;
	_Atomic uint64_t steps, step_tokens;
	_Atomic uint64_t logit_rows[METRICS_PICK_COUNT];
	_Atomic uint64_t finished[FIN_COUNT];
	_Atomic int64_t running, waiting, kv_used, kv_total;
	alignas(64) _Atomic uint64_t node_requests, ring_rejected; /* net threads */
	_Atomic int64_t ring_depth;
	int node_id;
};

/* ---- set-up ---- */

/* Label value escaping (\\, \", \n); invalid UTF-8 becomes U+FFFD. */
static char *escape_label(const char *s)
{
	size_t n = strlen(s), cap = 3 * n + 1, o = 0;
	char *out = alloc_mem(cap);
	if (!out)
		return NULL;
	size_t i = 0;
	while (i < n) {
		size_t ok = api_utf8_valid(s + i, n - i);
		for (size_t j = i; j < i + ok; j++) {
			char c = s[j];
			if (c == '\\' || c == '"' || c == '\n') {
				out[o++] = '\\';
				out[o++] = c == '\n' ? 'n' : c;
			} else {
				out[o++] = c;
			}
		}
		i += ok;
		if (i < n) { /* one bad byte at a time: at most 3 output bytes each */
			memcpy(out + o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

int metrics_init(struct metrics *m, const char *model_name, int n_nodes)
{
	*m = (struct metrics){0};
	if (!model_name || n_nodes < 1 || n_nodes > MAX_NODES)
		return -EINVAL;
	m->model_label = escape_label(model_name);
	m->shards = alloc_aligned((size_t)n_nodes * sizeof(struct metrics_shard), 64);
	if (!m->model_label || !m->shards) {
		metrics_free(m);
		return -ENOMEM;
	}
	memset(m->shards, 0, (size_t)n_nodes * sizeof(struct metrics_shard));
	for (int i = 0; i < n_nodes; i++)
		m->shards[i].node_id = i;
	m->n_nodes = n_nodes;
	return 0;
}

void metrics_free(struct metrics *m)
{
	alloc_free(m->model_label);
	alloc_free(m->shards);
	*m = (struct metrics){0};
}

static struct metrics_shard *shard(struct metrics *m, int node)
{
	if (!m || node < 0 || node >= m->n_nodes)
		return NULL;
	return &m->shards[node];
}

void metrics_set_node_id(struct metrics *m, int node, int numa_node)
{
	struct metrics_shard *s = shard(m, node);
	if (s)
		s->node_id = numa_node;
}

/* ---- updates ---- */

static void observe(struct metrics *m, int node, enum hist_id h, double seconds)
{
	struct metrics_shard *s = shard(m, node);
	if (!s || isnan(seconds))
		return;
	if (seconds < 0)
		seconds = 0;
	const struct hist_def *d = &hist_defs[h];
	int b = 0;
	while (b < d->n_bounds && seconds > d->bounds[b])
		b++;
	double ns = seconds * 1e9;
	atomic_fetch_add_explicit(&s->hist[h].count[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->hist[h].sum_ns, ns < 1e18 ? (uint64_t)llround(ns) : UINT64_C(1000000000000000000),
	                          memory_order_relaxed);
}

void metrics_observe_ttft(struct metrics *m, int node, double seconds)
{
	observe(m, node, H_TTFT, seconds);
}

void metrics_observe_itl(struct metrics *m, int node, double seconds)
{
	observe(m, node, H_ITL, seconds);
}

void metrics_observe_e2e(struct metrics *m, int node, double seconds)
{
	observe(m, node, H_E2E, seconds);
}

void metrics_observe_queue(struct metrics *m, int node, double seconds)
{
	observe(m, node, H_QUEUE, seconds);
}

#define ADD(field, v)                                                                                                  \
	do {                                                                                                           \
		struct metrics_shard *s_ = shard(m, node);                                                             \
		if (s_)                                                                                                \
			atomic_fetch_add_explicit(&s_->field, (v), memory_order_relaxed);                              \
	} while (0)

void metrics_add_prompt_tokens(struct metrics *m, int node, uint64_t n)
{
	ADD(prompt_tokens, n);
}

void metrics_add_generation_tokens(struct metrics *m, int node, uint64_t n)
{
	ADD(generation_tokens, n);
}

void metrics_add_preemptions(struct metrics *m, int node, uint64_t n)
{
	ADD(preemptions, n);
}

void metrics_add_step(struct metrics *m, int node, uint64_t n_tokens)
{
	ADD(steps, 1);
	ADD(step_tokens, n_tokens);
}

void metrics_add_logit_rows(struct metrics *m, int node, enum metrics_pick how, uint64_t n)
{
	if ((unsigned)how < METRICS_PICK_COUNT && n)
		ADD(logit_rows[how], n);
}

void metrics_request_submitted(struct metrics *m, int node)
{
	ADD(node_requests, 1);
}

void metrics_request_rejected(struct metrics *m, int node)
{
	ADD(ring_rejected, 1);
}

void metrics_request_finished(struct metrics *m, int node, enum api_finish reason)
{
	switch (reason) {
	case API_FINISH_STOP:
		ADD(finished[FIN_STOP], 1);
		break;
	case API_FINISH_LENGTH:
		ADD(finished[FIN_LENGTH], 1);
		break;
	case API_FINISH_ABORT:
		ADD(finished[FIN_ABORT], 1);
		break;
	default:
		break;
	}
}

#define SET(field, v)                                                                                                  \
	do {                                                                                                           \
		struct metrics_shard *s_ = shard(m, node);                                                             \
		if (s_)                                                                                                \
			atomic_store_explicit(&s_->field, (v), memory_order_relaxed);                                  \
	} while (0)

void metrics_set_requests(struct metrics *m, int node, int64_t running, int64_t waiting)
{
	SET(running, running);
	SET(waiting, waiting);
}

void metrics_set_kv_blocks(struct metrics *m, int node, int64_t used, int64_t total)
{
	SET(kv_used, used);
	SET(kv_total, total);
}

void metrics_set_ring_depth(struct metrics *m, int node, int64_t depth)
{
	SET(ring_depth, depth);
}

/* ---- exposition ---- */

#define LD(p) atomic_load_explicit((p), memory_order_relaxed)

/* The shortest text that reads back as v; "+Inf"/"-Inf"/"NaN" as Prometheus
 * spells them; le_style adds ".0" to integral values (Python's repr). */
static void put_double(struct api_buf *b, double v, bool le_style)
{
	if (isnan(v)) {
		api_buf_put(b, "NaN", 3);
		return;
	}
	if (isinf(v)) {
		api_buf_put(b, v > 0 ? "+Inf" : "-Inf", 4);
		return;
	}
	/* the fewest significant digits that read back as v, then positional
	 * notation for exponents -4..15 as Python's repr */
	char tmp[48];
	int prec = 1;
	for (; prec < 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	int k = snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
	const char *e = strchr(tmp, 'e');
	int x = e ? atoi(e + 1) : 0;
	if (x >= -4 && x < 16)
		k = snprintf(tmp, sizeof(tmp), "%.*f", prec - 1 - x > 0 ? prec - 1 - x : 0, v);
	bool frac = false;
	for (int i = 0; i < k; i++) {
		if (tmp[i] == ',')
			tmp[i] = '.';
		if (tmp[i] == '.' || tmp[i] == 'e')
			frac = true;
	}
	api_buf_put(b, tmp, (size_t)k);
	if (le_style && !frac)
		api_buf_put(b, ".0", 2);
}

static void put_header(struct api_buf *b, const char *name, const char *type, const char *help)
{
	api_buf_printf(b, "# HELP locus:%s %s\n# TYPE locus:%s %s\n", name, help, name, type);
}

/* locus:<name>{model_name="..."<extra>} */
static void put_series(struct api_buf *b, const struct metrics *m, const char *name, const char *extra)
{
	api_buf_printf(b, "locus:%s{model_name=\"%s\"%s} ", name, m->model_label, extra ? extra : "");
}

static void put_u64(struct api_buf *b, uint64_t v)
{
	api_buf_printf(b, "%" PRIu64 "\n", v);
}

static void put_i64(struct api_buf *b, int64_t v)
{
	api_buf_printf(b, "%" PRId64 "\n", v);
}

static void write_hist(struct api_buf *b, const struct metrics *m, enum hist_id h, const char *name, const char *help)
{
	const struct hist_def *d = &hist_defs[h];
	uint64_t count[MAX_BUCKETS + 1] = {0}, sum_ns = 0;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct hist *hs = &m->shards[i].hist[h];
		for (int j = 0; j <= d->n_bounds; j++)
			count[j] += LD(&hs->count[j]);
		sum_ns += LD(&hs->sum_ns);
	}
	put_header(b, name, "histogram", help);
	uint64_t cum = 0;
	for (int j = 0; j <= d->n_bounds; j++) {
		cum += count[j];
		api_buf_printf(b, "locus:%s_bucket{model_name=\"%s\",le=\"", name, m->model_label);
		if (j < d->n_bounds)
			put_double(b, d->bounds[j], true);
		else
			api_buf_put(b, "+Inf", 4);
		api_buf_put(b, "\"} ", 3);
		put_u64(b, cum);
	}
	api_buf_printf(b, "locus:%s_sum{model_name=\"%s\"} ", name, m->model_label);
	put_double(b, (double)sum_ns / 1e9, false);
	api_buf_put(b, "\n", 1);
	api_buf_printf(b, "locus:%s_count{model_name=\"%s\"} ", name, m->model_label);
	put_u64(b, cum);
}

/* A counter or gauge summed over the nodes; `off` is the field's offset. */
static uint64_t sum_u64(const struct metrics *m, size_t off)
{
	uint64_t v = 0;
	for (int i = 0; i < m->n_nodes; i++)
		v += LD((const _Atomic uint64_t *)((const char *)&m->shards[i] + off));
	return v;
}

static int64_t sum_i64(const struct metrics *m, size_t off)
{
	int64_t v = 0;
	for (int i = 0; i < m->n_nodes; i++)
		v += LD((const _Atomic int64_t *)((const char *)&m->shards[i] + off));
	return v;
}

static void write_total(struct api_buf *b, const struct metrics *m, const char *name, const char *help, size_t off)
{
	put_header(b, name, "counter", help);
	put_series(b, m, name, NULL);
	put_u64(b, sum_u64(m, off));
}

static void write_gauge(struct api_buf *b, const struct metrics *m, const char *name, const char *help, size_t off)
{
	put_header(b, name, "gauge", help);
	put_series(b, m, name, NULL);
	put_i64(b, sum_i64(m, off));
}

static double kv_usage(int64_t used, int64_t total)
{
	if (total <= 0 || used <= 0)
		return 0.0;
	return used >= total ? 1.0 : (double)used / (double)total;
}

/* Per-node series: one line per node with {node="<id>"}. */
static void write_per_node_u64(struct api_buf *b, const struct metrics *m, const char *name, const char *help,
                               size_t off)
{
	put_header(b, name, "counter", help);
	for (int i = 0; i < m->n_nodes; i++) {
		char extra[32];
		snprintf(extra, sizeof(extra), ",node=\"%d\"", m->shards[i].node_id);
		put_series(b, m, name, extra);
		put_u64(b, LD((const _Atomic uint64_t *)((const char *)&m->shards[i] + off)));
	}
}

#define OFF(field) offsetof(struct metrics_shard, field)

int metrics_write(const struct metrics *m, struct api_buf *out)
{
	if (!m || !m->shards)
		return -EINVAL;
	write_hist(out, m, H_TTFT, "time_to_first_token_seconds", hist_defs[H_TTFT].help);
	write_hist(out, m, H_ITL, "inter_token_latency_seconds", hist_defs[H_ITL].help);
	/* vLLM emits its older name beside the new one with identical data. */
	write_hist(out, m, H_ITL, "time_per_output_token_seconds",
	           "Histogram of time per output token in seconds (same observations as "
	           "locus:inter_token_latency_seconds).");
	write_hist(out, m, H_E2E, "e2e_request_latency_seconds", hist_defs[H_E2E].help);
	write_hist(out, m, H_QUEUE, "request_queue_time_seconds", hist_defs[H_QUEUE].help);

	write_gauge(out, m, "num_requests_running", "Number of requests in model execution batches.", OFF(running));
	write_gauge(out, m, "num_requests_waiting", "Number of requests waiting to be processed.", OFF(waiting));
	put_header(out, "kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
	put_series(out, m, "kv_cache_usage_perc", NULL);
	put_double(out, kv_usage(sum_i64(m, OFF(kv_used)), sum_i64(m, OFF(kv_total))), false);
	api_buf_put(out, "\n", 1);

	write_total(out, m, "prompt_tokens_total", "Number of prefill tokens processed.", OFF(prompt_tokens));
	write_total(out, m, "generation_tokens_total", "Number of generation tokens processed.",
	            OFF(generation_tokens));
	put_header(out, "request_success_total", "counter", "Count of successfully processed requests.");
	for (int f = 0; f < FIN_COUNT; f++) {
		char extra[40];
		snprintf(extra, sizeof(extra), ",finished_reason=\"%s\"", fin_name[f]);
		put_series(out, m, "request_success_total", extra);
		put_u64(out, sum_u64(m, OFF(finished) + (size_t)f * sizeof(_Atomic uint64_t)));
	}
	write_total(out, m, "num_preemptions_total", "Cumulative number of preemption from the engine.",
	            OFF(preemptions));
	write_total(out, m, "engine_steps_total", "Model steps run (one batch forward each).", OFF(steps));
	write_total(out, m, "engine_step_tokens_total", "Tokens fed to the model over all steps (prefill and decode).",
	            OFF(step_tokens));
	static const char *const pick_name[METRICS_PICK_COUNT] = {"argmax", "top", "rows", "top_miss"};
	put_header(out, "logit_rows_total", "counter",
	           "Logits rows sampled, by what left the backend: argmax (the token id), top (the 64 best "
	           "logits), rows (the whole vocabulary), top_miss (the 64 best, then the whole row: the draw "
	           "reached past them).");
	for (int k = 0; k < METRICS_PICK_COUNT; k++) {
		char extra[32];
		snprintf(extra, sizeof(extra), ",path=\"%s\"", pick_name[k]);
		put_series(out, m, "logit_rows_total", extra);
		put_u64(out, sum_u64(m, OFF(logit_rows) + (size_t)k * sizeof(_Atomic uint64_t)));
	}

	put_header(out, "node_kv_cache_usage_perc", "gauge", "KV-cache usage of a NUMA node's pool (0..1).");
	for (int i = 0; i < m->n_nodes; i++) {
		char extra[32];
		snprintf(extra, sizeof(extra), ",node=\"%d\"", m->shards[i].node_id);
		put_series(out, m, "node_kv_cache_usage_perc", extra);
		put_double(out, kv_usage(LD(&m->shards[i].kv_used), LD(&m->shards[i].kv_total)), false);
		api_buf_put(out, "\n", 1);
	}
	put_header(out, "ring_depth", "gauge", "Requests queued in a node's request ring.");
	for (int i = 0; i < m->n_nodes; i++) {
		char extra[48];
		snprintf(extra, sizeof(extra), ",ring=\"%d\",node=\"%d\"", i, m->shards[i].node_id);
		put_series(out, m, "ring_depth", extra);
		put_i64(out, LD(&m->shards[i].ring_depth));
	}
	write_per_node_u64(out, m, "ring_rejected_total", "Requests refused because a node's request ring was full.",
	                   OFF(ring_rejected));
	write_per_node_u64(out, m, "node_requests_total", "Requests submitted to a NUMA node.", OFF(node_requests));
	write_per_node_u64(out, m, "node_generation_tokens_total", "Tokens generated on a NUMA node.",
	                   OFF(generation_tokens));
	return out->oom ? -ENOMEM : 0;
}
