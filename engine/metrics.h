/*
 * metrics.h: the server's Prometheus metrics, named as vLLM names them with
 * the prefix "locus:" for "vllm:" (a dashboard maps by renaming the prefix),
 * every series labelled model_name="..." as vLLM does, plus Locus's own
 * per-node and per-ring series. GET /metrics writes them with metrics_write
 * in the Prometheus text exposition format (version 0.0.4).
 *
 *   histograms (vLLM's bucket boundaries, seconds)
 *     locus:time_to_first_token_seconds      metrics_observe_ttft
 *     locus:inter_token_latency_seconds      metrics_observe_itl (one per token after the first)
 *     locus:time_per_output_token_seconds    the same observations under vLLM's older name
 *     locus:e2e_request_latency_seconds      metrics_observe_e2e
 *     locus:request_queue_time_seconds       metrics_observe_queue
 *   gauges
 *     locus:num_requests_running, locus:num_requests_waiting   sums over nodes
 *     locus:kv_cache_usage_perc               used / total KV blocks over all nodes (0..1)
 *     locus:node_kv_cache_usage_perc{node}    the same per node
 *     locus:ring_depth{ring,node}             requests queued in a node's ring
 *   counters
 *     locus:prompt_tokens_total, locus:generation_tokens_total, locus:num_preemptions_total
 *     locus:engine_steps_total, locus:engine_step_tokens_total (Locus's own: model steps
 *       and the tokens they fed, so progress through a prefill is visible)
 *     locus:request_success_total{finished_reason="stop|length|abort"}
 *     locus:ring_rejected_total{node}, locus:node_requests_total{node},
 *     locus:node_generation_tokens_total{node}
 *
 * `node` arguments are indexes 0..n_nodes-1 (the serving nodes in plan
 * order); the label value is the NUMA node id set with metrics_set_node_id
 * (default: the index). There is one request ring per node: ring label i is
 * node index i's ring. Out-of-range indexes and a NULL m are ignored, so a
 * component can run without metrics.
 *
 * Threading: every update is a relaxed atomic on the node's own shard
 * (cache-line aligned), callable from any thread (dispatchers, net
 * threads); metrics_write merges the shards at scrape time and may run
 * concurrently with updates. A scrape is not a snapshot: series can be a
 * few updates apart, but each histogram's _count equals its +Inf bucket.
 * Histogram sums are kept in integer nanoseconds (exact, no CAS loops).
 * metrics_init / metrics_set_node_id / metrics_free are set-up calls.
 */
#ifndef LOCUS_ENGINE_METRICS_H
#define LOCUS_ENGINE_METRICS_H

#include <stdint.h>

#include "engine/api.h"

struct metrics_shard;

struct metrics {
	char *model_label; /* model name escaped as a label value */
	int n_nodes;
	struct metrics_shard *shards; /* (n_nodes), each on its own cache lines */
};

/* 0, -EINVAL (n_nodes < 1 or > 1024, NULL name) or -ENOMEM. Invalid UTF-8 in
 * the name is replaced by U+FFFD in the label. */
int metrics_init(struct metrics *m, const char *model_name, int n_nodes);
void metrics_free(struct metrics *m);
/* The "node" label value of node index `node` (its NUMA node id). */
void metrics_set_node_id(struct metrics *m, int node, int numa_node);

/* Latencies in seconds (negative counts as 0, NaN is dropped). */
void metrics_observe_ttft(struct metrics *m, int node, double seconds);
void metrics_observe_itl(struct metrics *m, int node, double seconds);
void metrics_observe_e2e(struct metrics *m, int node, double seconds);
void metrics_observe_queue(struct metrics *m, int node, double seconds);

void metrics_add_prompt_tokens(struct metrics *m, int node, uint64_t n);
void metrics_add_generation_tokens(struct metrics *m, int node, uint64_t n); /* also node_generation_tokens */
void metrics_add_preemptions(struct metrics *m, int node, uint64_t n);
/* One model step that fed n_tokens tokens. */
void metrics_add_step(struct metrics *m, int node, uint64_t n_tokens);
/* How a step's n logits rows were sampled: the backend's argmax alone, its
 * top-K candidates (struct kern_top), the whole rows on the host, or the
 * candidates and then the whole row (the draw reached past them). */
enum metrics_pick {
	METRICS_PICK_ARGMAX,
	METRICS_PICK_TOP,
	METRICS_PICK_ROWS,
	METRICS_PICK_TOP_MISS,
	METRICS_PICK_COUNT
};
void metrics_add_logit_rows(struct metrics *m, int node, enum metrics_pick how, uint64_t n);
/* A request accepted onto the node's ring / refused because it was full. */
void metrics_request_submitted(struct metrics *m, int node);
void metrics_request_rejected(struct metrics *m, int node);
/* A request finished (API_FINISH_NONE is ignored). */
void metrics_request_finished(struct metrics *m, int node, enum api_finish reason);

/* Gauges: the node's current values, set by its dispatcher. */
void metrics_set_requests(struct metrics *m, int node, int64_t running, int64_t waiting);
void metrics_set_kv_blocks(struct metrics *m, int node, int64_t used, int64_t total);
void metrics_set_ring_depth(struct metrics *m, int node, int64_t depth);

/* Appends the exposition text (Content-Type: text/plain; version=0.0.4).
 * 0, or -ENOMEM when the buffer ran out of memory (out->oom). */
int metrics_write(const struct metrics *m, struct api_buf *out);

#endif
