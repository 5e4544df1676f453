/*
 * core.c: opening a model with its vocabulary and backend, and feeding one
 * sequence through the backend in chunks.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc/alloc.h"
#include "engine/engine.h"

void engine_opts_default(struct engine_opts *o)
{
	*o = (struct engine_opts){
		.n_threads = 0,
		.numa_node = -1,
		.kv_block_size = 16,
		.kv_tokens = 4096,
		.max_batch_tokens = 512,
	};
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int engine_core_load(struct engine_core *c, const struct engine_opts *o, char *err, size_t errlen)
{
	double t0 = now_ms();
	memset(c, 0, sizeof(*c));
	c->opts = *o;
	int rc = model_load(o->model_path, o->populate ? MODEL_LOAD_POPULATE : 0, &c->model, err, errlen);
	if (rc)
		return rc;
	c->vocab = tok_vocab_load(c->model->gguf, err, errlen);
	if (!c->vocab) {
		engine_core_close(c);
		return -EINVAL;
	}
	if (tok_n_vocab(c->vocab) > c->model->w.hp.n_vocab) {
		snprintf(err, errlen, "model: the vocabulary has %d tokens but the embedding only %d rows",
			 tok_n_vocab(c->vocab), c->model->w.hp.n_vocab);
		engine_core_close(c);
		return -EINVAL;
	}
	c->load_ms = now_ms() - t0;
	return 0;
}

int engine_core_start(struct engine_core *c, int64_t kv_tokens, char *err, size_t errlen)
{
	double t0 = now_ms();
	const struct engine_opts *o = &c->opts;
	int bs = o->kv_block_size > 0 ? o->kv_block_size : 16;
	int64_t blocks = (kv_tokens + bs - 1) / bs;
	if (blocks < 1 || blocks > INT32_MAX) {
		snprintf(err, errlen, "engine: KV capacity of %lld tokens is out of range", (long long)kv_tokens);
		return -EINVAL;
	}
	struct kern_backend_config bc = {
		.n_threads = o->n_threads,
		.cpus = o->cpus,
		.n_cpus = o->n_cpus,
		.numa_node = o->numa_node,
		.kv_block_size = bs,
		.n_kv_blocks = (int32_t)blocks,
		.max_batch_tokens = o->max_batch_tokens,
		.gpu = o->gpu,
	};
	c->be = o->cuda ? kern_backend_cuda_open(&c->model->w, &bc, err, errlen)
			: kern_backend_cpu_open(&c->model->w, &bc, err, errlen);
	if (!c->be)
		return -EINVAL;
	if (kv_pool_init(&c->kv, (int32_t)blocks, bs) ||
	    batch_init(&c->batch, o->max_batch_tokens, o->max_batch_tokens)) {
		snprintf(err, errlen, "engine: out of memory");
		return -ENOMEM;
	}
	c->load_ms += now_ms() - t0;
	return 0;
}

int engine_core_open(struct engine_core *c, const struct engine_opts *o, char *err, size_t errlen)
{
	int rc = engine_core_load(c, o, err, errlen);
	if (rc)
		return rc;
	rc = engine_core_start(c, o->kv_tokens, err, errlen);
	if (rc)
		engine_core_close(c);
	return rc;
}

void engine_core_close(struct engine_core *c)
{
	batch_free(&c->batch);
	kv_pool_free(&c->kv);
	kern_backend_close(c->be);
	tok_vocab_free(c->vocab);
	model_free(c->model);
	memset(c, 0, sizeof(*c));
}

int engine_seq_feed(struct engine_core *c, struct kv_seq *s, const int32_t *tokens, int64_t n, float *logits_last,
		    float *logits_all)
{
	const int32_t V = c->model->w.hp.n_vocab;
	if (n < 1)
		return -EINVAL;
	int rc = kv_seq_reserve(&c->kv, s, s->n_pos + n);
	if (rc)
		return rc;
	for (int64_t i = 0; i < n;) {
		int64_t chunk = n - i < c->opts.max_batch_tokens ? n - i : c->opts.max_batch_tokens;
		batch_clear(&c->batch);
		int si = batch_add_seq(&c->batch, s);
		for (int64_t j = 0; j < chunk; j++) {
			bool last = i + j == n - 1;
			batch_add_token(&c->batch, si, tokens[i + j], (int32_t)(s->n_pos + j), logits_all || last);
		}
		float *out = logits_all ? logits_all + (size_t)i * V : logits_last;
		rc = kern_backend_step(c->be, &c->batch.kb, out);
		if (rc)
			return rc;
		s->n_pos += (int32_t)chunk;
		i += chunk;
	}
	if (logits_all && logits_last)
		memcpy(logits_last, logits_all + (size_t)(n - 1) * V, (size_t)V * sizeof(float));
	return 0;
}

int engine_seq_step_argmax(struct engine_core *c, struct kv_seq *s, int32_t token, float *logits, int32_t *next)
{
	int rc = kv_seq_reserve(&c->kv, s, s->n_pos + 1);
	if (rc)
		return rc;
	batch_clear(&c->batch);
	int si = batch_add_seq(&c->batch, s);
	batch_add_token(&c->batch, si, token, s->n_pos, true);
	rc = kern_backend_step_argmax(c->be, &c->batch.kb, kern_backend_argmax_only(c->be) ? NULL : logits, next);
	if (rc)
		return rc;
	s->n_pos++;
	return 0;
}
