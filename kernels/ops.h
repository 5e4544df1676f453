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
 * Attention of a group of g query heads that share one KV head, for one
 * token that sees positions [0, n_pos) of its sequence:
 *   out[h] = sum_p softmax_p(scale * q[h] . k[p]) v[p]
 * K/V are f16 in blocks of bs positions: position p lives in physical block
 * block_table[p / bs], row p % bs, at k + block * blk_stride + row * hd.
 * Online softmax per block (no buffer proportional to the context).
 * q: (g, hd) f32, out: (g, hd) f32. Requires g * bs <= 4096.
 */
void kern_attn(const float *q, int g, int hd, float scale, const uint16_t *k, const uint16_t *v,
	       size_t blk_stride, const int32_t *block_table, int bs, int n_pos, float *out);
void kern_attn_ref(const float *q, int g, int hd, float scale, const uint16_t *k, const uint16_t *v,
		   size_t blk_stride, const int32_t *block_table, int bs, int n_pos, float *out);

#endif
