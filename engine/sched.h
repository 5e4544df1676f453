/*
 * sched.h: requests in flight and the per-node dispatcher that runs them.
 *
 * A struct gen_req is made by a net thread (prompt tokenized, limits
 * checked), pushed onto a node's ring, and from then on belongs to that
 * node's dispatcher until the dispatcher marks it finished; after that the
 * net thread alone uses and frees it. What crosses between the two while it
 * runs: `cancelled` (net -> dispatcher, atomic) and the output section
 * (dispatcher -> net, under `mu`), announced through the notify callback.
 *
 * The dispatcher (one thread per node, pinned to the node's first compute
 * CPU, which is also compute thread 0 of the backend) loops: take new
 * requests from the ring, drop cancelled or expired ones, admit waiting
 * requests FCFS while sequences and KV blocks allow, build one step (one
 * token of every decoding sequence, then prefill chunks under the token
 * budget), preempt the newest sequence (its KV recomputed later) when the
 * KV pool runs out, run the backend, sample, detokenize, match stop strings,
 * publish the new output.
 */
#ifndef LOCUS_ENGINE_SCHED_H
#define LOCUS_ENGINE_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/api.h"
#include "engine/kv.h"
#include "engine/metrics.h"
#include "engine/ring.h"
#include "engine/sampler.h"
#include "engine/stop.h"
#include "engine/tokenizer.h"
#include "kernels/kernels.h"

/* One generated token as the net thread sees it. */
struct gen_token {
	int32_t id;
	float logprob;
	uint32_t text_off, text_len;   /* its emitted text in gen_req.text */
	uint32_t piece_off, piece_len; /* its own bytes in gen_req.pieces */
	int32_t top_off;               /* first of n_top entries in gen_req.top (logprobs) */
	int32_t n_top;
};

struct gen_req {
	/* ---- input: written by the net thread before the push ---- */
	struct api_request api;
	const int32_t *prompt;      /* (n_prompt) token ids */
	int64_t n_prompt;
	int64_t max_tokens;         /* resolved: >= 1, prompt + max_tokens <= ctx */
	int net_thread;
	uint64_t conn_id;
	int node;
	double t_arrival;           /* seconds, CLOCK_MONOTONIC */
	double deadline;            /* 0: none */
	struct alloc_arena arena;   /* request-lifetime strings (api, prompt) */
	char id[40];
	int64_t created;

	/* ---- net -> dispatcher ---- */
	_Atomic int cancelled;

	/* ---- dispatcher -> net, under mu ---- */
	pthread_mutex_t mu;
	struct gen_token *toks;
	int64_t n_toks, cap_toks;
	char *text;
	size_t text_len, cap_text;
	char *pieces;
	size_t pieces_len, cap_pieces;
	struct sampler_logprob *top;
	char *top_pieces;           /* piece text of each top entry, 32 bytes apiece (truncated) */
	int64_t n_top, cap_top;
	bool finished;
	enum api_finish finish;
	struct api_error error;     /* error.status != 0: failed (e.g. 503 when aborted by shutdown) */
	int64_t prompt_tokens, completion_tokens;
	bool notify_pending;        /* already queued to the net thread */

	/* ---- net thread only ---- */
	int64_t n_sent;             /* tokens already written to the client */
	size_t text_sent;           /* bytes of text already written */
	int64_t chars_sent;         /* characters of it (logprobs text_offset) */
	bool stream_open;           /* SSE response headers sent */
	bool started_chunks;        /* first chunk (chat: with the role) sent */
	bool aborted;               /* the client went away */
};

/* Allocates a request with its arena and mutex. */
struct gen_req *gen_req_new(void);
void gen_req_free(struct gen_req *r);

struct sched_config {
	int max_seqs;
	int step_tokens;
	int prefill_chunk;
	int64_t ctx;
	int max_waiting;
};

struct dispatcher;

/* Called by the dispatcher when r has new output (or finished); at most once
 * between two net-side takes (notify_pending). Runs on the dispatcher thread.
 * It need not wake anyone: after each step (and before sleeping) the
 * dispatcher calls notify_flush once if it notified anything, so the
 * receiving threads are woken once per step, not once per request. */
typedef void (*sched_notify_fn)(struct gen_req *r, void *user_data);
typedef void (*sched_flush_fn)(int ix, void *user_data);

struct dispatcher_init {
	int node;                 /* NUMA node, for memory */
	int ix;                   /* index among the server's nodes: the metrics shard */
	const int *cpus;          /* pin the dispatcher (and compute thread 0) to cpus[0]; NULL: unpinned */
	int n_cpus;
	kern_backend_t *be;       /* opened on this node by the caller */
	int32_t n_kv_blocks;
	int kv_block_size;
	const tok_vocab_t *vocab;
	int32_t n_vocab;
	struct sched_config cfg;
	size_t ring_slots;
	enum alloc_policy membind;
	struct metrics *metrics;
	sched_notify_fn notify;
	sched_flush_fn notify_flush; /* optional; called with ix */
	void *notify_user;
};

int dispatcher_start(struct dispatcher **out, const struct dispatcher_init *in, char *err, size_t errlen);
/* Submits r (any thread). 0, -ENOSPC (ring full) or -EBUSY (waiting queue
 * full). wake = false leaves the wake-up to a later dispatcher_kick, so that
 * a net thread wakes the dispatcher once for all the requests of its turn. */
int dispatcher_submit(struct dispatcher *d, struct gen_req *r, bool wake);
/* Wakes the dispatcher (after quiet submits, or to see a cancellation promptly). */
void dispatcher_kick(struct dispatcher *d);
/* Stops: requests still running are finished with `abort` and notified. */
void dispatcher_stop(struct dispatcher *d);
/* Requests queued or running on this node (for load balancing and /metrics). */
int dispatcher_load(struct dispatcher *d);
size_t dispatcher_ring_depth(struct dispatcher *d);
int dispatcher_node(const struct dispatcher *d);

/* Test hooks: blocks of the KV pool in use (0 when idle), and steps run. */
int32_t dispatcher_kv_used(struct dispatcher *d);
uint64_t dispatcher_steps(struct dispatcher *d);

#endif
