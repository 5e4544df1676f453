/*
 * null_backend.c: a backend that computes nothing. Each logits row is -10
 * everywhere but 10 at one id chosen from the token's position, so sampling
 * is deterministic and cheap; it never picks the first 32 ids (where the
 * special tokens of most vocabularies live), so requests run to max_tokens.
 * An optional per-step sleep stands in for compute time.
 */
#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "alloc/alloc.h"
#include "kernels/backend_impl.h"

struct null_backend {
	struct kern_backend base;
	int delay_us;
};

/* The id the null backend "predicts" for a token at position pos. */
static int32_t null_peak(int32_t V, int32_t pos)
{
	return V > 64 ? 32 + (int32_t)(((uint32_t)pos * 2654435761u) % (uint32_t)(V - 32)) : V - 1;
}

static void null_sleep(const struct null_backend *nb)
{
	if (nb->delay_us > 0) {
		struct timespec ts = {nb->delay_us / 1000000, (long)(nb->delay_us % 1000000) * 1000};
		nanosleep(&ts, NULL);
	}
}

static int null_step_argmax(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax)
{
	const struct null_backend *nb = (const struct null_backend *)be;
	const int32_t V = be->w->hp.n_vocab;
	for (int32_t i = 0; i < b->n_logits; i++) {
		int32_t peak = null_peak(V, b->pos[b->logit_idx[i]]);
		if (argmax)
			argmax[i] = peak;
		if (logits) {
			float *row = logits + (size_t)i * V;
			for (int32_t v = 0; v < V; v++)
				row[v] = -10.0f;
			row[peak] = 10.0f;
		}
	}
	null_sleep(nb);
	return 0;
}

static int null_step(kern_backend_t *be, const struct kern_batch *b, float *logits)
{
	return null_step_argmax(be, b, logits, NULL);
}

static void null_close(kern_backend_t *be)
{
	alloc_free(be);
}

static const struct kern_backend_ops null_ops = {
	.name = "null",
	.step = null_step,
	.step_argmax = null_step_argmax,
	.close = null_close,
};

kern_backend_t *kern_backend_null_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
				       int delay_us, char *errbuf, size_t errlen)
{
	if (cfg->kv_block_size < 1 || cfg->n_kv_blocks < 1 || cfg->max_batch_tokens < 1 || w->hp.n_vocab < 1 ||
	    delay_us < 0) {
		snprintf(errbuf, errlen, "null backend: bad configuration");
		return NULL;
	}
	struct null_backend *nb = alloc_zmem(sizeof(*nb));
	if (!nb) {
		snprintf(errbuf, errlen, "null backend: out of memory");
		return NULL;
	}
	nb->base = (struct kern_backend){
		.ops = &null_ops,
		.w = w,
		.n_kv_blocks = cfg->n_kv_blocks,
		.kv_block_size = cfg->kv_block_size,
		.max_batch_tokens = cfg->max_batch_tokens,
	};
	nb->delay_us = delay_us;
	return &nb->base;
}
