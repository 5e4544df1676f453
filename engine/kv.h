/*
 * kv.h: the KV cache's block allocator and sequences' block tables, and a
 * builder for backend steps (struct kern_batch).
 *
 * The backend stores K/V in a pool of fixed-size blocks (block_size tokens
 * each); which physical blocks a sequence uses is decided here. A sequence
 * grows a block at a time and returns all its blocks when it ends, so many
 * sequences of different lengths share one pool without fragmentation.
 *
 * Threading: a pool and its sequences belong to one thread (the dispatcher).
 */
#ifndef LOCUS_ENGINE_KV_H
#define LOCUS_ENGINE_KV_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/kernels.h"

struct kv_pool {
	int32_t n_blocks;
	int block_size;
	int32_t n_free;
	int32_t *free_ids; /* (n_blocks) stack of free block ids */
};

struct kv_seq {
	int32_t *blocks;   /* (cap) physical block ids */
	int32_t n_blocks;
	int32_t cap;
	int32_t n_pos;     /* positions computed so far */
};

int kv_pool_init(struct kv_pool *p, int32_t n_blocks, int block_size);
void kv_pool_free(struct kv_pool *p);
/* Blocks needed to hold n_pos positions. */
static inline int32_t kv_blocks_for(const struct kv_pool *p, int64_t n_pos)
{
	return (int32_t)((n_pos + p->block_size - 1) / p->block_size);
}

void kv_seq_init(struct kv_seq *s);
/* Makes room for positions [0, n_pos). 0, -ENOSPC (pool exhausted: nothing
 * is taken), -ENOMEM. */
int kv_seq_reserve(struct kv_pool *p, struct kv_seq *s, int64_t n_pos);
/* Returns every block to the pool and empties the sequence. */
void kv_seq_release(struct kv_pool *p, struct kv_seq *s);
void kv_seq_free(struct kv_pool *p, struct kv_seq *s);

/* ---- step builder ---- */
struct batch {
	int32_t cap_tokens, cap_seqs;
	struct kern_batch kb;   /* views of the arrays below */
	int32_t *tokens, *pos, *seq_idx, *logit_idx;
	struct kern_seq *seqs;
};

int batch_init(struct batch *b, int32_t cap_tokens, int32_t cap_seqs);
void batch_free(struct batch *b);
void batch_clear(struct batch *b);
/* Adds a sequence; returns its index in the step or -ENOSPC. */
int batch_add_seq(struct batch *b, const struct kv_seq *s);
/* Adds a token of sequence `seq` (an index from batch_add_seq); returns the
 * token index or -ENOSPC. want_logits requests its logits row. */
int batch_add_token(struct batch *b, int seq, int32_t token, int32_t pos, bool want_logits);

#endif
