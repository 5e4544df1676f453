/*
 * engine.h: the engine module's entry point. Parts:
 *   engine/gguf.h       GGUF reader/writer
 *   engine/model.h      model loading (struct kern_weights from a GGUF)
 *   engine/tokenizer.h  tokenizers and the streaming detokenizer
 *   engine/chat.h       chat templates
 *   engine/sampler.h    sampling
 *   engine/stop.h       stop strings
 *   engine/kv.h         KV block allocator and step builder
 * and here, struct engine_core: a model, its vocabulary, a backend and the
 * KV block pool, opened together; plus helpers that run one sequence
 * (prefill in chunks, then decode), used by the tools and benchmarks.
 *
 * Threading: an engine_core is driven by one thread at a time.
 */
#ifndef LOCUS_ENGINE_ENGINE_H
#define LOCUS_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "engine/kv.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/stop.h"
#include "engine/tokenizer.h"
#include "kernels/kernels.h"

struct engine_opts {
	const char *model_path;
	int n_threads;        /* <= 0: all allowed CPUs */
	const int *cpus;      /* pin workers; NULL: no pinning */
	int n_cpus;
	int numa_node;        /* -1: no binding */
	int kv_block_size;    /* default 16 */
	int64_t kv_tokens;    /* KV pool capacity in tokens (all sequences) */
	int max_batch_tokens; /* tokens per step (prefill chunk) */
	bool populate;        /* pre-fault the model mapping */
	bool cuda;            /* the CUDA backend (on device gpu) instead of the CPU's */
	int gpu;
};

void engine_opts_default(struct engine_opts *o);

struct engine_core {
	struct model *model;
	tok_vocab_t *vocab;
	kern_backend_t *be;
	struct kv_pool kv;
	struct batch batch;
	struct engine_opts opts;
	double load_ms; /* model + vocab + backend */
};

/* Model, vocabulary and backend in one call (kv_tokens from opts). */
int engine_core_open(struct engine_core *c, const struct engine_opts *o, char *err, size_t errlen);
/* The same in two steps, for callers that size the KV pool after
 * tokenizing: load the model and vocabulary, then start the backend. */
int engine_core_load(struct engine_core *c, const struct engine_opts *o, char *err, size_t errlen);
int engine_core_start(struct engine_core *c, int64_t kv_tokens, char *err, size_t errlen);
void engine_core_close(struct engine_core *c);

/*
 * Feeds tokens[0..n) to sequence s (positions s->n_pos ...), in chunks of
 * max_batch_tokens. logits_last (n_vocab) receives the last token's logits;
 * logits_all, when not NULL, every token's (n, n_vocab). 0 or -errno
 * (-ENOSPC: the KV pool is full).
 */
int engine_seq_feed(struct engine_core *c, struct kv_seq *s, const int32_t *tokens, int64_t n, float *logits_last,
		    float *logits_all);
/*
 * Feeds one token to s and sets *next to the argmax of its logits, picked
 * by the backend where it can do so without handing the logits out (the
 * CUDA backend: only the id crosses PCIe), as the engine serves greedy
 * requests; otherwise through logits (n_vocab floats of scratch). 0 or -errno.
 */
int engine_seq_step_argmax(struct engine_core *c, struct kv_seq *s, int32_t token, float *logits, int32_t *next);

#endif
