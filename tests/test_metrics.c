/*
 * test_metrics.c: engine/metrics.h: values become exact exposition lines,
 * histograms are cumulative with +Inf == _count, updates from two threads
 * are all counted, label values are escaped, bad indexes are ignored.
 *
 * LOCUS_METRICS_DUMP=file writes one scrape there (for checking with
 * another parser, e.g. prometheus_client's).
 */
#include "engine/metrics.h"

#include "tests/check.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; p && *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && memcmp(p, line, n) == 0)
			return true;
		p = e ? e + 1 : NULL;
	}
	return false;
}

#define LINE(text, line) CHECK(has_line((text), (line)), "missing line: %s", (line))

/* Every line is a comment or "name{labels} value"; buckets never decrease
 * and _count equals the +Inf bucket. */
static void check_structure(const char *text)
{
	char prev_name[128] = "";
	unsigned long long prev = 0, inf = 0;
	int lines = 0;
	for (const char *p = text; *p;) {
		const char *e = strchr(p, '\n');
		CHECK(e != NULL, "unterminated last line");
		if (!e)
			return;
		lines++;
		if (*p != '#') {
			const char *sp = memchr(p, ' ', (size_t)(e - p));
			CHECK(sp && sp[1] != ' ' && sp + 1 < e, "bad line: %.*s", (int)(e - p), p);
			CHECK(strncmp(p, "locus:", 6) == 0, "bad name: %.*s", (int)(e - p), p);
			const char *brace = memchr(p, '{', (size_t)(e - p));
			CHECK(brace && strncmp(brace, "{model_name=\"", 13) == 0, "no model_name: %.*s", (int)(e - p),
			      p);
			char *end;
			double v = strtod(sp + 1, &end);
			CHECK(end == e && isfinite(v) && v >= 0, "bad value: %.*s", (int)(e - p), p);
			const char *b = strstr(p, "_bucket{");
			if (b && b < e) {
				char name[128];
				snprintf(name, sizeof(name), "%.*s", (int)(b - p), p);
				if (strcmp(name, prev_name) != 0)
					prev = 0;
				snprintf(prev_name, sizeof(prev_name), "%s", name);
				CHECK((unsigned long long)v >= prev, "bucket decreases: %.*s", (int)(e - p), p);
				prev = (unsigned long long)v;
				if (strstr(p, "le=\"+Inf\"") && strstr(p, "le=\"+Inf\"") < e)
					inf = prev;
			}
			const char *c = strstr(p, "_count{");
			if (c && c < e)
				CHECK((unsigned long long)v == inf, "_count %llu != +Inf bucket %llu",
				      (unsigned long long)v, inf);
		}
		p = e + 1;
	}
	CHECK(lines > 100, "only %d lines", lines);
}

static void test_values(void)
{
	struct metrics m;
	CHECK(metrics_init(&m, "smol", 2) == 0, "init");
	metrics_set_node_id(&m, 1, 3);

	metrics_observe_ttft(&m, 0, 0.001);  /* on a boundary: le="0.001" */
	metrics_observe_ttft(&m, 1, 0.003);  /* le="0.005" */
	metrics_observe_ttft(&m, 1, 0.5);    /* le="0.5" */
	metrics_observe_ttft(&m, 0, 3000.0); /* only +Inf */
	metrics_observe_ttft(&m, 0, -1.0);   /* counts as 0 */
	metrics_observe_ttft(&m, 0, NAN);    /* dropped */
	metrics_observe_itl(&m, 0, 0.02);
	metrics_observe_itl(&m, 1, 0.02);
	metrics_observe_e2e(&m, 1, 1.25);
	metrics_observe_queue(&m, 0, 0.0);
	metrics_add_prompt_tokens(&m, 0, 100);
	metrics_add_prompt_tokens(&m, 1, 23);
	metrics_add_generation_tokens(&m, 0, 7);
	metrics_add_generation_tokens(&m, 1, 5);
	metrics_add_preemptions(&m, 1, 2);
	metrics_add_step(&m, 0, 128);
	metrics_add_step(&m, 1, 3);
	metrics_add_step(&m, 1, 1);
	metrics_request_submitted(&m, 0);
	metrics_request_submitted(&m, 0);
	metrics_request_submitted(&m, 1);
	metrics_request_rejected(&m, 1);
	metrics_request_finished(&m, 0, API_FINISH_STOP);
	metrics_request_finished(&m, 1, API_FINISH_STOP);
	metrics_request_finished(&m, 1, API_FINISH_LENGTH);
	metrics_request_finished(&m, 1, API_FINISH_NONE);
	metrics_set_requests(&m, 0, 3, 1);
	metrics_set_requests(&m, 1, 2, 0);
	metrics_set_kv_blocks(&m, 0, 10, 100);
	metrics_set_kv_blocks(&m, 1, 90, 100);
	metrics_set_ring_depth(&m, 0, 4);
	metrics_set_ring_depth(&m, 1, 0);
	/* ignored: out-of-range nodes and no registry at all */
	metrics_observe_ttft(&m, 2, 1.0);
	metrics_observe_ttft(&m, -1, 1.0);
	metrics_add_prompt_tokens(&m, 9, 1000);
	metrics_add_prompt_tokens(NULL, 0, 1000);
	metrics_set_node_id(NULL, 0, 1);

	struct api_buf b = {0};
	CHECK(metrics_write(&m, &b) == 0, "write");
	const char *t = b.p;

	static const char ttft_block[] =
	    "# HELP locus:time_to_first_token_seconds Histogram of time to first token in seconds.\n"
	    "# TYPE locus:time_to_first_token_seconds histogram\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.001\"} 2\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.005\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.01\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.02\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.04\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.06\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.08\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.1\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.25\"} 3\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.5\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"0.75\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"1.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"2.5\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"5.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"7.5\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"10.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"20.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"40.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"80.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"160.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"640.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"2560.0\"} 4\n"
	    "locus:time_to_first_token_seconds_bucket{model_name=\"smol\",le=\"+Inf\"} 5\n"
	    "locus:time_to_first_token_seconds_sum{model_name=\"smol\"} 3000.504\n"
	    "locus:time_to_first_token_seconds_count{model_name=\"smol\"} 5\n";
	CHECK(strncmp(t, ttft_block, sizeof(ttft_block) - 1) == 0, "ttft block:\n%.*s", (int)sizeof(ttft_block), t);

	LINE(t, "# TYPE locus:inter_token_latency_seconds histogram");
	LINE(t, "locus:inter_token_latency_seconds_bucket{model_name=\"smol\",le=\"0.01\"} 0");
	LINE(t, "locus:inter_token_latency_seconds_bucket{model_name=\"smol\",le=\"0.025\"} 2");
	LINE(t, "locus:inter_token_latency_seconds_bucket{model_name=\"smol\",le=\"80.0\"} 2");
	LINE(t, "locus:inter_token_latency_seconds_sum{model_name=\"smol\"} 0.04");
	LINE(t, "locus:inter_token_latency_seconds_count{model_name=\"smol\"} 2");
	LINE(t, "# TYPE locus:time_per_output_token_seconds histogram");
	LINE(t, "locus:time_per_output_token_seconds_bucket{model_name=\"smol\",le=\"0.025\"} 2");
	LINE(t, "locus:time_per_output_token_seconds_count{model_name=\"smol\"} 2");
	LINE(t, "locus:e2e_request_latency_seconds_bucket{model_name=\"smol\",le=\"1.0\"} 0");
	LINE(t, "locus:e2e_request_latency_seconds_bucket{model_name=\"smol\",le=\"1.5\"} 1");
	LINE(t, "locus:e2e_request_latency_seconds_bucket{model_name=\"smol\",le=\"7680.0\"} 1");
	LINE(t, "locus:e2e_request_latency_seconds_sum{model_name=\"smol\"} 1.25");
	LINE(t, "locus:request_queue_time_seconds_bucket{model_name=\"smol\",le=\"0.3\"} 1");
	LINE(t, "locus:request_queue_time_seconds_sum{model_name=\"smol\"} 0");
	LINE(t, "# HELP locus:num_requests_running Number of requests in model execution batches.");
	LINE(t, "# TYPE locus:num_requests_running gauge");
	LINE(t, "locus:num_requests_running{model_name=\"smol\"} 5");
	LINE(t, "locus:num_requests_waiting{model_name=\"smol\"} 1");
	LINE(t, "# TYPE locus:kv_cache_usage_perc gauge");
	LINE(t, "locus:kv_cache_usage_perc{model_name=\"smol\"} 0.5");
	LINE(t, "# TYPE locus:prompt_tokens_total counter");
	LINE(t, "locus:prompt_tokens_total{model_name=\"smol\"} 123");
	LINE(t, "locus:generation_tokens_total{model_name=\"smol\"} 12");
	LINE(t, "# TYPE locus:request_success_total counter");
	LINE(t, "locus:request_success_total{model_name=\"smol\",finished_reason=\"stop\"} 2");
	LINE(t, "locus:request_success_total{model_name=\"smol\",finished_reason=\"length\"} 1");
	LINE(t, "locus:request_success_total{model_name=\"smol\",finished_reason=\"abort\"} 0");
	LINE(t, "locus:num_preemptions_total{model_name=\"smol\"} 2");
	LINE(t, "locus:engine_steps_total{model_name=\"smol\"} 3");
	LINE(t, "locus:engine_step_tokens_total{model_name=\"smol\"} 132");
	LINE(t, "locus:node_kv_cache_usage_perc{model_name=\"smol\",node=\"0\"} 0.1");
	LINE(t, "locus:node_kv_cache_usage_perc{model_name=\"smol\",node=\"3\"} 0.9");
	LINE(t, "# TYPE locus:ring_depth gauge");
	LINE(t, "locus:ring_depth{model_name=\"smol\",ring=\"0\",node=\"0\"} 4");
	LINE(t, "locus:ring_depth{model_name=\"smol\",ring=\"1\",node=\"3\"} 0");
	LINE(t, "# TYPE locus:ring_rejected_total counter");
	LINE(t, "locus:ring_rejected_total{model_name=\"smol\",node=\"0\"} 0");
	LINE(t, "locus:ring_rejected_total{model_name=\"smol\",node=\"3\"} 1");
	LINE(t, "locus:node_requests_total{model_name=\"smol\",node=\"0\"} 2");
	LINE(t, "locus:node_requests_total{model_name=\"smol\",node=\"3\"} 1");
	LINE(t, "locus:node_generation_tokens_total{model_name=\"smol\",node=\"0\"} 7");
	LINE(t, "locus:node_generation_tokens_total{model_name=\"smol\",node=\"3\"} 5");
	check_structure(t);

	const char *dump = getenv("LOCUS_METRICS_DUMP");
	if (dump && *dump) {
		FILE *f = fopen(dump, "w");
		if (f) {
			fwrite(b.p, 1, b.n, f);
			fclose(f);
		}
	}
	/* a full KV pool reads 1, an empty registry 0 */
	metrics_set_kv_blocks(&m, 0, 100, 100);
	metrics_set_kv_blocks(&m, 1, 100, 100);
	api_buf_reset(&b);
	metrics_write(&m, &b);
	LINE(b.p, "locus:kv_cache_usage_perc{model_name=\"smol\"} 1");
	api_buf_free(&b);
	metrics_free(&m);
}

struct worker {
	struct metrics *m;
	int node;
};

#define ITERS 200000

static void *work(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < ITERS; i++) {
		metrics_observe_itl(w->m, 0, 0.05); /* both threads on node 0's shard: contended */
		metrics_add_generation_tokens(w->m, w->node, 1);
		metrics_request_finished(w->m, 0, (i & 1) ? API_FINISH_LENGTH : API_FINISH_STOP);
		if ((i & 1023) == 0) {
			struct api_buf b = {0}; /* scrapes run beside the updates */
			metrics_write(w->m, &b);
			api_buf_free(&b);
		}
	}
	return NULL;
}

static void test_threads(void)
{
	struct metrics m;
	CHECK(metrics_init(&m, "m", 2) == 0, "init");
	pthread_t th[2];
	struct worker w[2] = {{&m, 0}, {&m, 1}};
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, work, &w[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	struct api_buf b = {0};
	metrics_write(&m, &b);
	LINE(b.p, "locus:inter_token_latency_seconds_count{model_name=\"m\"} 400000");
	LINE(b.p, "locus:inter_token_latency_seconds_bucket{model_name=\"m\",le=\"0.05\"} 400000");
	LINE(b.p, "locus:inter_token_latency_seconds_bucket{model_name=\"m\",le=\"0.025\"} 0");
	LINE(b.p, "locus:inter_token_latency_seconds_sum{model_name=\"m\"} 20000");
	LINE(b.p, "locus:generation_tokens_total{model_name=\"m\"} 400000");
	LINE(b.p, "locus:node_generation_tokens_total{model_name=\"m\",node=\"0\"} 200000");
	LINE(b.p, "locus:node_generation_tokens_total{model_name=\"m\",node=\"1\"} 200000");
	LINE(b.p, "locus:request_success_total{model_name=\"m\",finished_reason=\"stop\"} 200000");
	LINE(b.p, "locus:request_success_total{model_name=\"m\",finished_reason=\"length\"} 200000");
	check_structure(b.p);
	api_buf_free(&b);
	metrics_free(&m);
}

static void test_labels(void)
{
	struct metrics m;
	CHECK(metrics_init(&m,
	                   "a\"b\\c\nd\xff"
	                   "e/\xc3\xa9",
	                   1) == 0,
	      "init");
	struct api_buf b = {0};
	metrics_write(&m, &b);
	LINE(b.p, "locus:prompt_tokens_total{model_name=\"a\\\"b\\\\c\\nd\xef\xbf\xbd"
	          "e/\xc3\xa9\"} 0");
	CHECK(api_utf8_valid(b.p, b.n) == b.n, "exposition is UTF-8");
	api_buf_free(&b);
	metrics_free(&m);

	CHECK(metrics_init(&m, NULL, 1) == -EINVAL, "NULL name");
	CHECK(metrics_init(&m, "m", 0) == -EINVAL, "no nodes");
	CHECK(metrics_init(&m, "m", 100000) == -EINVAL, "too many nodes");
	metrics_free(&m); /* harmless after a failed init */
	b = (struct api_buf){0};
	CHECK(metrics_write(NULL, &b) == -EINVAL, "write NULL");
	api_buf_free(&b);
}

int main(void)
{
	test_values();
	test_threads();
	test_labels();
	return check_status("test_metrics");
}
