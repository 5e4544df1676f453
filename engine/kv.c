/*
 * kv.c: block allocator (a stack of free ids: O(1) take and give back),
 * growable per-sequence block tables, and the step builder.
 */
#include "engine/kv.h"

#include <errno.h>
#include <string.h>

#include "alloc/alloc.h"

int kv_pool_init(struct kv_pool *p, int32_t n_blocks, int block_size)
{
	memset(p, 0, sizeof(*p));
	if (n_blocks < 1 || block_size < 1)
		return -EINVAL;
	p->free_ids = alloc_array((size_t)n_blocks, sizeof(int32_t));
	if (!p->free_ids)
		return -ENOMEM;
	p->n_blocks = n_blocks;
	p->block_size = block_size;
	/* Lowest ids on top, so a fresh pool hands out 0, 1, 2, ... */
	for (int32_t i = 0; i < n_blocks; i++)
		p->free_ids[i] = n_blocks - 1 - i;
	p->n_free = n_blocks;
	return 0;
}

void kv_pool_free(struct kv_pool *p)
{
	alloc_free(p->free_ids);
	memset(p, 0, sizeof(*p));
}

void kv_seq_init(struct kv_seq *s)
{
	memset(s, 0, sizeof(*s));
}

int kv_seq_reserve(struct kv_pool *p, struct kv_seq *s, int64_t n_pos)
{
	if (n_pos < 0 || n_pos > (int64_t)p->n_blocks * p->block_size)
		return -ENOSPC;
	int32_t need = kv_blocks_for(p, n_pos);
	if (need <= s->n_blocks)
		return 0;
	if (need - s->n_blocks > p->n_free)
		return -ENOSPC;
	if (need > s->cap) {
		int32_t cap = s->cap ? s->cap : 8;
		while (cap < need)
			cap *= 2;
		int32_t *nb = alloc_array((size_t)cap, sizeof(int32_t));
		if (!nb)
			return -ENOMEM;
		if (s->n_blocks)
			memcpy(nb, s->blocks, (size_t)s->n_blocks * sizeof(int32_t));
		alloc_free(s->blocks);
		s->blocks = nb;
		s->cap = cap;
	}
	while (s->n_blocks < need)
		s->blocks[s->n_blocks++] = p->free_ids[--p->n_free];
	return 0;
}

void kv_seq_release(struct kv_pool *p, struct kv_seq *s)
{
	while (s->n_blocks > 0)
		p->free_ids[p->n_free++] = s->blocks[--s->n_blocks];
	s->n_pos = 0;
}

void kv_seq_free(struct kv_pool *p, struct kv_seq *s)
{
	kv_seq_release(p, s);
	alloc_free(s->blocks);
	memset(s, 0, sizeof(*s));
}

int batch_init(struct batch *b, int32_t cap_tokens, int32_t cap_seqs)
{
	memset(b, 0, sizeof(*b));
	if (cap_tokens < 1 || cap_seqs < 1)
		return -EINVAL;
	b->tokens = alloc_array((size_t)cap_tokens, sizeof(int32_t));
	b->pos = alloc_array((size_t)cap_tokens, sizeof(int32_t));
	b->seq_idx = alloc_array((size_t)cap_tokens, sizeof(int32_t));
	b->logit_idx = alloc_array((size_t)cap_tokens, sizeof(int32_t));
	b->seqs = alloc_array((size_t)cap_seqs, sizeof(struct kern_seq));
	if (!b->tokens || !b->pos || !b->seq_idx || !b->logit_idx || !b->seqs) {
		batch_free(b);
		return -ENOMEM;
	}
	b->cap_tokens = cap_tokens;
	b->cap_seqs = cap_seqs;
	batch_clear(b);
	return 0;
}

void batch_free(struct batch *b)
{
	alloc_free(b->tokens);
	alloc_free(b->pos);
	alloc_free(b->seq_idx);
	alloc_free(b->logit_idx);
	alloc_free(b->seqs);
	memset(b, 0, sizeof(*b));
}

void batch_clear(struct batch *b)
{
	b->kb = (struct kern_batch){
		.tokens = b->tokens,
		.pos = b->pos,
		.seq_idx = b->seq_idx,
		.seqs = b->seqs,
		.logit_idx = b->logit_idx,
	};
}

int batch_add_seq(struct batch *b, const struct kv_seq *s)
{
	if (b->kb.n_seqs >= b->cap_seqs)
		return -ENOSPC;
	b->seqs[b->kb.n_seqs] = (struct kern_seq){.block_table = s->blocks, .n_blocks = s->n_blocks};
	return b->kb.n_seqs++;
}

int batch_add_token(struct batch *b, int seq, int32_t token, int32_t pos, bool want_logits)
{
	int32_t i = b->kb.n_tokens;
	if (i >= b->cap_tokens)
		return -ENOSPC;
	b->tokens[i] = token;
	b->pos[i] = pos;
	b->seq_idx[i] = seq;
	if (want_logits)
		b->logit_idx[b->kb.n_logits++] = i;
	b->kb.n_tokens++;
	return i;
}
