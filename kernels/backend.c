/*
 * backend.c: the backend-independent half of kern_backend_*: argument
 * validation (a malformed batch is an error, never an out-of-bounds access
 * inside a backend) and dispatch through the ops table.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "kernels/backend_impl.h"

int kern_rope_inv_freq(const struct kern_weights *w, double *out, const char *who, char *errbuf, size_t errlen)
{
	const struct kern_hparams *hp = &w->hp;
	const float *ff = w->rope_freqs.data;
	for (int i = 0; i < hp->head_dim / 2; i++) {
		double f = pow((double)hp->rope_freq_base, -2.0 * i / hp->n_rot) * hp->rope_freq_scale;
		if (ff) {
			if (!(ff[i] > 0)) {
				snprintf(errbuf, errlen, "%s: rope_freqs[%d] = %g is not positive", who, i, ff[i]);
				return -EINVAL;
			}
			f /= ff[i];
		}
		out[i] = f;
	}
	return 0;
}

const char *kern_backend_name(const kern_backend_t *be)
{
	return be->ops->name;
}

static int batch_check(const kern_backend_t *be, const struct kern_batch *b)
{
	const struct kern_hparams *hp = &be->w->hp;
	if (b->n_tokens < 1 || b->n_tokens > be->max_batch_tokens || b->n_seqs < 1 || b->n_seqs > b->n_tokens ||
	    b->n_logits < 0 || b->n_logits > b->n_tokens)
		return -EINVAL;
	for (int32_t s = 0; s < b->n_seqs; s++)
		if (b->seqs[s].n_blocks < 0 || (b->seqs[s].n_blocks > 0 && !b->seqs[s].block_table))
			return -EINVAL;
	for (int32_t i = 0; i < b->n_tokens; i++) {
		int32_t s = b->seq_idx[i];
		if (b->tokens[i] < 0 || b->tokens[i] >= hp->n_vocab || s < 0 || s >= b->n_seqs || b->pos[i] < 0)
			return -EINVAL;
		int64_t blk = b->pos[i] / be->kv_block_size;
		if (blk >= b->seqs[s].n_blocks)
			return -ERANGE;
		/* Blocks up to this position must all be valid ids. */
		int32_t id = b->seqs[s].block_table[blk];
		if (id < 0 || id >= be->n_kv_blocks)
			return -EINVAL;
	}
	for (int32_t s = 0; s < b->n_seqs; s++)
		for (int32_t j = 0; j < b->seqs[s].n_blocks; j++)
			if (b->seqs[s].block_table[j] < 0 || b->seqs[s].block_table[j] >= be->n_kv_blocks)
				return -EINVAL;
	for (int32_t i = 0; i < b->n_logits; i++)
		if (b->logit_idx[i] < 0 || b->logit_idx[i] >= b->n_tokens ||
		    (b->inv_temp && !(b->inv_temp[i] > 0.0f && b->inv_temp[i] <= FLT_MAX)))
			return -EINVAL;
	return 0;
}

int kern_backend_step(kern_backend_t *be, const struct kern_batch *b, float *logits)
{
	int rc = batch_check(be, b);
	if (rc)
		return rc;
	return be->ops->step(be, b, logits);
}

int kern_backend_step_argmax(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax)
{
	int rc = batch_check(be, b);
	if (rc)
		return rc;
	if (be->ops->step_argmax)
		return be->ops->step_argmax(be, b, logits, argmax);
	if (!logits)
		return -EINVAL;
	rc = be->ops->step(be, b, logits);
	if (rc)
		return rc;
	const int32_t V = be->w->hp.n_vocab;
	for (int32_t i = 0; i < b->n_logits; i++)
		argmax[i] = kern_argmax(logits + (size_t)i * V, V);
	return 0;
}

bool kern_backend_argmax_only(const kern_backend_t *be)
{
	return be->ops->step_argmax != NULL;
}

int kern_backend_step_top(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax,
			  struct kern_top *top)
{
	if (be->ops->step_top) {
		int rc = batch_check(be, b);
		return rc ? rc : be->ops->step_top(be, b, logits, argmax, top);
	}
	if (!logits)
		return -EINVAL;
	int rc = kern_backend_step_argmax(be, b, logits, argmax);
	if (rc)
		return rc;
	const int32_t V = be->w->hp.n_vocab;
	for (int32_t i = 0; i < b->n_logits; i++)
		kern_top_row(logits + (size_t)i * V, V, b->inv_temp ? b->inv_temp[i] : 1.0f, &top[i]);
	return 0;
}

bool kern_backend_top_native(const kern_backend_t *be)
{
	return be->ops->step_top != NULL;
}

int kern_backend_fetch_rows(kern_backend_t *be, const int32_t *rows, int32_t n, float *logits)
{
	if (!be->ops->step_top || n <= 0)
		return 0;
	if (!be->ops->fetch_rows || !logits)
		return -EINVAL;
	for (int32_t i = 0; i < n; i++)
		if (rows[i] < 0 || rows[i] >= be->max_batch_tokens)
			return -EINVAL;
	return be->ops->fetch_rows(be, rows, n, logits);
}

int kern_backend_kv_copy(kern_backend_t *be, int32_t src_block, int32_t dst_block)
{
	if (src_block < 0 || dst_block < 0 || src_block >= be->n_kv_blocks || dst_block >= be->n_kv_blocks)
		return -EINVAL;
	if (!be->ops->kv_copy)
		return -ENOTSUP;
	return be->ops->kv_copy(be, src_block, dst_block);
}

size_t kern_backend_mem_bytes(const kern_backend_t *be)
{
	return be->ops->mem_bytes ? be->ops->mem_bytes(be) : 0;
}

void kern_backend_close(kern_backend_t *be)
{
	if (be)
		be->ops->close(be);
}
