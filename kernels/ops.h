/*
 * ops.h: the CPU backend's element-wise and attention kernels (internal to
 * kernels/; tests use them too). Each has a vector path (AVX-512 or AVX2,
 * picked at compile time) and a scalar path; kern_ops_ref_* are the plain
 * scalar versions the tests compare against.
 */
#ifndef LOCUS_KERNELS_OPS_H
#define LOCUS_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

/* y = x / sqrt(mean(x^2) + eps) * w */
void kern_rmsnorm(const float *x, const float *w, float *y, int n, float eps);
/* x += y */
void kern_add(float *x, const float *y, int n);
/* g = silu(g) * u, silu(a) = a / (1 + exp(-a)) */
void kern_silu_mul(float *g, const float *u, int n);
/* Rotates n_heads heads of size hd in place. cs holds cos[hd/2] then sin[hd/2]
 * for this position. neox: pairs (i, i + hd/2); otherwise (2i, 2i+1). */
void kern_rope(float *x, int n_heads, int hd, const float *cs, int neox);
void kern_f32_to_f16_row(const float *x, uint16_t *y, int n);

/*
 * Paged attention for the query heads that share one KV head, for n_tok
 * tokens of one sequence (a tile): query head j of token i is the hd floats
 * at q + i * q_stride + j * hd (j < g), and sees positions [0, n_pos[i]).
 *   out[i][j] = sum_p softmax_p(scale * q[i][j] . k[p]) v[p]
 * Cache blocks hold bs positions, f16. Position p lives in physical block
 * b = block_table[p / bs], row r = p % bs:
 *   K block (transposed): k + b * blk_stride + d * bs + r   (hd x bs)
 *   V block:              v + b * blk_stride + r * hd + d   (bs x hd)
 * so one vector of K^T gives the scores of bs positions at once.
 * Online softmax per block: memory does not grow with the context. Each
 * query's arithmetic is the same whatever tile it is computed in, so the
 * result does not depend on how tokens are batched.
 * Limits (checked by the backend at open): hd <= 512, bs * hd <= 8192.
 */
void kern_attn(const float *q, size_t q_stride, int n_tok, int g, int hd, float scale, const int32_t *n_pos,
	       const uint16_t *k, const uint16_t *v, size_t blk_stride, const int32_t *block_table, int bs,
	       float *out, size_t out_stride);
/* The same from the definition: two passes, double precision, one query at a time. */
void kern_attn_ref(const float *q, size_t q_stride, int n_tok, int g, int hd, float scale, const int32_t *n_pos,
		   const uint16_t *k, const uint16_t *v, size_t blk_stride, const int32_t *block_table, int bs,
		   float *out, size_t out_stride);

#endif
