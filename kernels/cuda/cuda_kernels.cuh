/*
 * cuda_kernels.cuh: the CUDA backend's device kernels and their launchers,
 * shared by the backend (cuda_backend.cu) and its checks and benchmarks
 * (cuda_tools.cu). Everything here has internal linkage: each of the two
 * translation units compiles what it uses (no relocatable device code).
 * Internal to kernels/cuda.
 */
#ifndef LOCUS_KERNELS_CUDA_KERNELS_CUH
#define LOCUS_KERNELS_CUDA_KERNELS_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "alloc/alloc.h"
#include "kernels/backend_impl.h"
#include "kernels/cuda/cuda_module.h"
}

typedef __nv_bfloat16 bf16;

#define WARP 32
#define ATTN_WARPS 4          /* warps per (token, query head); they split the positions */
#define ATTN_MAX_HD 256       /* head size limit of the attention kernel (hd / 32 floats per lane) */
#define GEMM_WORKSPACE (32u << 20)
#define GRAPH_MAX 64          /* decode batches up to this many tokens run as graphs */
#define GRAPH_SLOTS 8         /* buckets 1, 2, 4, ..., 64, and max_batch_tokens when smaller */

/* ---- device kernels ---- */

__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = WARP / 2; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024). */
static __device__ float block_sum(float v, float *sh)
{
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
	v = warp_sum(v);
	if (lane == 0)
		sh[w] = v;
	__syncthreads();
	v = threadIdx.x < nw ? sh[threadIdx.x] : 0.0f;
	if (w == 0)
		v = warp_sum(v);
	if (threadIdx.x == 0)
		sh[0] = v;
	__syncthreads();
	v = sh[0];
	__syncthreads();
	return v;
}

/* x[t] = embedding row tokens[t], bf16 -> f32. */
static __global__ void k_embed(const bf16 *emb, const int32_t *tokens, float *x, int E)
{
	const bf16 *row = emb + (size_t)tokens[blockIdx.x] * E;
	float *o = x + (size_t)blockIdx.x * E;
	for (int i = threadIdx.x; i < E; i += blockDim.x)
		o[i] = __bfloat162float(row[i]);
}

/*
 * Row i: r = x[src] (+ add[src], written back to x when add is given);
 * y[i] = r / sqrt(mean(r^2) + eps) * w, as bf16. src = idx ? idx[i] : i; rows picked
 * by idx (the logit rows) are not written back, so repeated indices are safe.
 */
static __global__ void k_add_rmsnorm(float *x, const float *add, const int32_t *idx, const float *w, bf16 *y, int E,
			      float eps)
{
	__shared__ float sh[32];
	int src = idx ? idx[blockIdx.x] : blockIdx.x;
	float *xr = x + (size_t)src * E;
	const float *ar = add ? add + (size_t)src * E : NULL;
	const bool wb = ar && !idx; /* picked rows are read only: x stays as it is */
	float ss = 0;
	for (int i = threadIdx.x; i < E; i += blockDim.x) {
		float v = ar ? xr[i] + ar[i] : xr[i];
		if (wb)
			xr[i] = v;
		ss += v * v;
	}
	ss = block_sum(ss, sh);
	float r = rsqrtf(ss / (float)E + eps);
	bf16 *yr = y + (size_t)blockIdx.x * E;
	for (int i = threadIdx.x; i < E; i += blockDim.x) {
		float v = ar && !wb ? xr[i] + ar[i] : xr[i]; /* same thread, same i: its own write */
		yr[i] = __float2bfloat16(v * r * w[i]);
	}
}

struct step_meta {
	const int32_t *tokens, *pos, *bt_off, *logit_idx, *bt;
};

/*
 * Token blockIdx.x of the fused QKV output (row stride ld: q, then k, then
 * v): biases, RoPE on q and k (angles in double, as the CPU backend
 * computes its table), q back in place, k and v into the f16 cache. Block
 * y takes heads y * QKV_POST_HEADS .. of the q, k, v heads in that order,
 * so a token's work spreads over several SMs (one block per token left a
 * decode step's 48 heads to one).
 */
#define QKV_POST_HEADS 4
#define QKV_POST_THREADS 128

static __global__ void __launch_bounds__(QKV_POST_THREADS)
	k_qkv_post(float *qkv, int ld, const float *bq, const float *bk, const float *bv, const double *inv_freq,
		   step_meta m, __half *kc, __half *vc, int n_head, int n_kv, int hd, int bs, size_t blk_stride, int neox)
{
	const int t = blockIdx.x, half = hd / 2, qd = n_head * hd, kvd = n_kv * hd;
	float *q = qkv + (size_t)t * ld, *k = q + qd, *v = k + kvd;
	const int32_t p = m.pos[t];
	const int32_t blk = m.bt[m.bt_off[t] + p / bs];
	const size_t base = (size_t)blk * blk_stride + (size_t)(p % bs) * hd;
	const int h0 = blockIdx.y * QKV_POST_HEADS, nrot = n_head + n_kv;
	const int h1 = min(h0 + QKV_POST_HEADS, nrot + n_kv);
	if (h0 < nrot) {
		/* the token's angles (every head shares them), in double as the CPU's */
		__shared__ float s_cos[ATTN_MAX_HD / 2], s_sin[ATTN_MAX_HD / 2];
		for (int i = threadIdx.x; i < half; i += blockDim.x) {
			double sn, cs;
			sincos((double)p * inv_freq[i], &sn, &cs);
			s_cos[i] = (float)cs;
			s_sin[i] = (float)sn;
		}
		__syncthreads(); /* h0 is the same for the whole block */
		/* rotations: (head, pair) items over this block's q and k heads */
		const int hr = min(h1, nrot);
		for (int it = h0 * half + threadIdx.x; it < hr * half; it += blockDim.x) {
			int h = it / half, i = it % half;
			bool isk = h >= n_head;
			float *vec = isk ? k + (size_t)(h - n_head) * hd : q + (size_t)h * hd;
			const float *bias = isk ? bk : bq;
			int hb = isk ? (h - n_head) * hd : h * hd;
			int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
			float a = vec[i0], b = vec[i1];
			if (bias) {
				a += bias[hb + i0];
				b += bias[hb + i1];
			}
			const float cf = s_cos[i], sf = s_sin[i];
			float ra = a * cf - b * sf, rb = a * sf + b * cf;
			if (isk) {
				int kh = h - n_head;
				__half *dst = kc + base + (size_t)kh * bs * hd;
				dst[i0] = __float2half_rn(ra);
				dst[i1] = __float2half_rn(rb);
			} else {
				vec[i0] = ra;
				vec[i1] = rb;
			}
		}
	}
	/* this block's v heads into the cache */
	const int v0 = max(h0, nrot) - nrot, v1 = h1 - nrot;
	for (int i = v0 * hd + threadIdx.x; i < v1 * hd; i += blockDim.x) {
		int h = i / hd, d = i % hd;
		float x = v[i] + (bv ? bv[i] : 0.0f);
		vc[base + (size_t)h * bs * hd + d] = __float2half_rn(x);
	}
}

static inline void qkv_post_launch(float *qkv, int ld, const float *bq, const float *bk, const float *bv,
				   const double *inv_freq, step_meta m, __half *kc, __half *vc, int n_head, int n_kv,
				   int hd, int bs, size_t blk_stride, int neox, int T, cudaStream_t st)
{
	dim3 grid((unsigned)T, (unsigned)((n_head + 2 * n_kv + QKV_POST_HEADS - 1) / QKV_POST_HEADS));
	k_qkv_post<<<grid, QKV_POST_THREADS, 0, st>>>(qkv, ld, bq, bk, bv, inv_freq, m, kc, vc, n_head, n_kv, hd, bs,
							blk_stride, neox);
}

/*
 * Paged causal attention: block (token, query head, split), ATTN_WARPS
 * warps. With nsplit > 1 (steps of few tokens, so few blocks: decode, and
 * small prefill chunks) the token's
 * positions are cut in nsplit contiguous ranges, one per block, as
 * flash-decoding does; the ranges follow each token's own length, so the
 * grid does not depend on it (CUDA graphs keep working as contexts grow).
 * In a block, warp w takes positions w, w + ATTN_WARPS, ... of the range
 * with its own online softmax; the warps' results are merged at the end.
 * Lane l holds dimensions l, l + 32, ... of the query and the accumulator.
 * nsplit == 1: the output, bf16 (it feeds the output projection);
 * nsplit > 1: the block's (max, sum, unnormalized accumulator) in part,
 * for k_attn_merge.
 */
#define ATTN_SPLITS 16        /* ranges per token */
#define ATTN_SPLIT_MAX_T 64   /* steps of at most this many tokens split their attention */
#define ATTN_MIN_RANGE 16     /* positions per range at least (the rest of the ranges stay empty) */

static __global__ void k_attention(const float *qkv, int ld, step_meta m, const __half *kc, const __half *vc,
				   int n_head, int n_kv, int hd, int bs, size_t blk_stride, float scale, bf16 *out,
				   int out_ld, int nsplit, float *part)
{
	__shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS];
	__shared__ float sacc[ATTN_WARPS][ATTN_MAX_HD];
	const int t = blockIdx.x, h = blockIdx.y, lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
	const int kvh = h / (n_head / n_kv), nd = hd / WARP;
	const float *q = qkv + (size_t)t * ld + (size_t)h * hd;
	float qr[ATTN_MAX_HD / WARP], acc[ATTN_MAX_HD / WARP];
#pragma unroll
	for (int j = 0; j < ATTN_MAX_HD / WARP; j++) {
		qr[j] = j < nd ? q[lane + j * WARP] * scale : 0.0f;
		acc[j] = 0;
	}
	float mx = -INFINITY, l = 0;
	const int32_t n_pos = m.pos[t] + 1;
	const int32_t *bt = m.bt + m.bt_off[t];
	int32_t len = (n_pos + nsplit - 1) / nsplit;
	len = len < ATTN_MIN_RANGE ? ATTN_MIN_RANGE : len; /* short contexts: fewer, fuller ranges */
	const int32_t p0 = (int32_t)blockIdx.z * len;
	const int32_t p1 = p0 + len < n_pos ? p0 + len : n_pos;
	/* Two positions per iteration, their K and V rows loaded before any
	 * use: a warp's positions are a chain of dependent loads otherwise
	 * (decode is latency-bound at short contexts). Same order of updates. */
	for (int32_t p = p0 + w; p < p1; p += 2 * ATTN_WARPS) {
		const bool two = p + ATTN_WARPS < p1; /* the same for the whole warp */
		float kv[2][ATTN_MAX_HD / WARP], vv[2][ATTN_MAX_HD / WARP];
#pragma unroll
		for (int u = 0; u < 2; u++) {
			const int32_t pu = u && two ? p + ATTN_WARPS : p;
			size_t off = (size_t)bt[pu / bs] * blk_stride + (size_t)kvh * bs * hd + (size_t)(pu % bs) * hd;
			const __half *kr = kc + off, *vr = vc + off;
#pragma unroll
			for (int j = 0; j < ATTN_MAX_HD / WARP; j++) {
				kv[u][j] = j < nd ? __half2float(kr[lane + j * WARP]) : 0.0f;
				vv[u][j] = j < nd ? __half2float(vr[lane + j * WARP]) : 0.0f;
			}
		}
		float s[2] = {0, 0};
#pragma unroll
		for (int u = 0; u < 2; u++) {
#pragma unroll
			for (int j = 0; j < ATTN_MAX_HD / WARP; j++)
				s[u] += qr[j] * kv[u][j];
			s[u] = warp_sum(s[u]);
		}
#pragma unroll
		for (int u = 0; u < 2; u++) {
			if (u && !two)
				break;
			float nm = fmaxf(mx, s[u]);
			float corr = __expf(mx - nm), e = __expf(s[u] - nm);
			l = l * corr + e;
#pragma unroll
			for (int j = 0; j < ATTN_MAX_HD / WARP; j++)
				acc[j] = acc[j] * corr + e * vv[u][j];
			mx = nm;
		}
	}
	if (lane == 0) {
		sm[w] = mx;
		sl[w] = l;
	}
#pragma unroll
	for (int j = 0; j < ATTN_MAX_HD / WARP; j++)
		if (j < nd)
			sacc[w][lane + j * WARP] = acc[j];
	__syncthreads();
	if (w != 0)
		return;
	float gm = -INFINITY;
	for (int i = 0; i < ATTN_WARPS; i++)
		gm = fmaxf(gm, sm[i]);
	float gl = 0;
	float f[ATTN_WARPS];
	for (int i = 0; i < ATTN_WARPS; i++) {
		/* a warp with no position has l = 0 exactly; a NaN l (a poisoned
		 * position was read) is != 0 and reaches the output */
		f[i] = sl[i] != 0 ? __expf(sm[i] - gm) : 0.0f;
		gl += sl[i] * f[i];
	}
	if (nsplit > 1) {
		/* this range's share; an empty range has gl = 0 and weighs nothing */
		float *pp = part + (((size_t)t * n_head + h) * nsplit + blockIdx.z) * (hd + 2);
		if (lane == 0) {
			pp[0] = gm;
			pp[1] = gl;
		}
		for (int j = 0; j < nd; j++) {
			int d = lane + j * WARP;
			float s = 0;
			for (int i = 0; i < ATTN_WARPS; i++)
				s += sacc[i][d] * f[i];
			pp[2 + d] = s;
		}
		return;
	}
	bf16 *o = out + (size_t)t * out_ld + (size_t)h * hd;
	for (int j = 0; j < nd; j++) {
		int d = lane + j * WARP;
		float s = 0;
		for (int i = 0; i < ATTN_WARPS; i++)
			s += sacc[i][d] * f[i];
		o[d] = __float2bfloat16(s / gl);
	}
}

/* Merges the nsplit ranges of block (token, head): out = sum_z acc_z e^(m_z - M) / sum_z l_z e^(m_z - M). */
static __global__ void k_attn_merge(const float *part, int n_head, int nsplit, int hd, bf16 *out, int out_ld)
{
	const int t = blockIdx.x, h = blockIdx.y;
	const float *pp = part + ((size_t)t * n_head + h) * nsplit * (hd + 2);
	float gm = -INFINITY;
	/* empty ranges have l == 0 exactly; a NaN l is kept, so poison shows */
	for (int z = 0; z < nsplit; z++)
		if (pp[(size_t)z * (hd + 2) + 1] != 0)
			gm = fmaxf(gm, pp[(size_t)z * (hd + 2)]);
	float gl = 0;
	for (int z = 0; z < nsplit; z++) {
		const float *q = pp + (size_t)z * (hd + 2);
		if (q[1] != 0)
			gl += q[1] * __expf(q[0] - gm);
	}
	bf16 *o = out + (size_t)t * out_ld + (size_t)h * hd;
	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float s = 0;
		for (int z = 0; z < nsplit; z++) {
			const float *q = pp + (size_t)z * (hd + 2);
			if (q[1] != 0)
				s += q[2 + d] * __expf(q[0] - gm);
		}
		o[d] = __float2bfloat16(s / gl);
	}
}

#define ATTN_TILE_Q 16       /* queries per tile: consecutive tokens of one sequence */
#define ATTN_TILE_K 32       /* positions per chunk of K and V in shared memory */
#define ATTN_TILE_THREADS 128 /* 8 per query: each owns hd / 8 output dimensions */
#define ATTN_TILE_MAX_HD 128

/*
 * Prefill attention, tiled (flash-attention style, causal): block (tile,
 * head) takes the tile's queries (tokens tiles[x] .. tiles[x + 1] - 1, at
 * consecutive positions of one sequence) through the sequence's positions
 * 0 .. the last query's in chunks of ATTN_TILE_K: K and V of a chunk are
 * read once from the paged cache for all the tile's queries (the
 * per-token kernel reads them once per query), scores masked causally,
 * softmax online per query. Positions up to the tile's last were all
 * written (history, or this step's k_qkv_post), so a masked score weighs
 * a finite value by 0; a NaN read reaches the output. hd a multiple of 8,
 * at most ATTN_TILE_MAX_HD.
 */
static __global__ void __launch_bounds__(ATTN_TILE_THREADS)
	k_attn_tile(const float *qkv, int ld, step_meta m, const int32_t *tiles, const __half *kc, const __half *vc,
		    int n_head, int n_kv, int hd, int bs, size_t blk_stride, float scale, bf16 *out, int out_ld)
{
	__shared__ float qs[ATTN_TILE_Q][ATTN_TILE_MAX_HD];
	__shared__ float ks[ATTN_TILE_K][ATTN_TILE_MAX_HD + 1]; /* +1: the score loop's lanes hit distinct banks */
	__shared__ float vs[ATTN_TILE_K][ATTN_TILE_MAX_HD];
	__shared__ float ss[ATTN_TILE_Q][ATTN_TILE_K + 1]; /* +1: a warp's 4 queries read distinct banks */
	const int tid = threadIdx.x, h = blockIdx.y, kvh = h / (n_head / n_kv);
	const int t0 = tiles[blockIdx.x], nq = tiles[blockIdx.x + 1] - t0;
	const int32_t p0 = m.pos[t0], plast = p0 + nq - 1;
	const int32_t *bt = m.bt + m.bt_off[t0];
	const int nd = hd / 8, qi = tid / 8, l8 = tid % 8;
	for (int i = tid; i < ATTN_TILE_Q * hd; i += ATTN_TILE_THREADS) {
		int q = i / hd, d = i % hd;
		qs[q][d] = q < nq ? qkv[(size_t)(t0 + q) * ld + (size_t)h * hd + d] * scale : 0.0f;
	}
	float acc[ATTN_TILE_MAX_HD / 8];
#pragma unroll
	for (int j = 0; j < ATTN_TILE_MAX_HD / 8; j++)
		acc[j] = 0;
	float mx = -INFINITY, l = 0;
	for (int32_t c0 = 0; c0 <= plast; c0 += ATTN_TILE_K) {
		__syncthreads(); /* qs written (first chunk); the last chunk's readers done */
		for (int i = tid; i < ATTN_TILE_K * hd; i += ATTN_TILE_THREADS) {
			int kk = i / hd, d = i % hd;
			int32_t p = c0 + kk;
			float kv = 0.0f, vv = 0.0f;
			if (p <= plast) {
				size_t off = (size_t)bt[p / bs] * blk_stride + (size_t)kvh * bs * hd + (size_t)(p % bs) * hd + d;
				kv = __half2float(kc[off]);
				vv = __half2float(vc[off]);
			}
			ks[kk][d] = kv;
			vs[kk][d] = vv;
		}
		__syncthreads();
		for (int i = tid; i < ATTN_TILE_Q * ATTN_TILE_K; i += ATTN_TILE_THREADS) {
			int q = i / ATTN_TILE_K, kk = i % ATTN_TILE_K;
			float sc = -INFINITY;
			if (q < nq && c0 + kk <= p0 + q) {
				sc = 0.0f;
				for (int d = 0; d < hd; d++)
					sc += qs[q][d] * ks[kk][d];
			}
			ss[q][kk] = sc;
		}
		__syncthreads();
		if (qi < nq) {
			/* position 0 is in every query's range: the first chunk's
			 * maximum is finite unless its scores are NaN */
			float cm = -INFINITY;
			for (int kk = 0; kk < ATTN_TILE_K; kk++)
				cm = fmaxf(cm, ss[qi][kk]);
			float nm = fmaxf(mx, cm), corr = __expf(mx - nm);
			l *= corr;
#pragma unroll
			for (int j = 0; j < ATTN_TILE_MAX_HD / 8; j++)
				acc[j] *= corr;
			for (int kk = 0; kk < ATTN_TILE_K; kk++) {
				float e = __expf(ss[qi][kk] - nm);
				if (e == 0.0f)
					continue; /* masked (or negligible): never 0 * an f16 infinity */
				l += e;
#pragma unroll
				for (int j = 0; j < ATTN_TILE_MAX_HD / 8; j++)
					if (j < nd)
						acc[j] += e * vs[kk][l8 + 8 * j];
			}
			mx = nm;
		}
	}
	if (qi < nq) {
		bf16 *o = out + (size_t)(t0 + qi) * out_ld + (size_t)h * hd;
#pragma unroll
		for (int j = 0; j < ATTN_TILE_MAX_HD / 8; j++)
			if (j < nd)
				o[l8 + 8 * j] = __float2bfloat16(acc[j] / l);
	}
}

static inline bool attn_tile_ok(int hd)
{
	return hd % 8 == 0 && hd <= ATTN_TILE_MAX_HD;
}

/* Tiles of T tokens (token t of sequence seq[t] at position pos[t]): runs
 * of consecutive positions of one sequence, at most ATTN_TILE_Q tokens
 * each; tl[0..n] (n + 1 entries) are their first tokens, then T. Returns n. */
static inline int attn_tiles(int32_t T, const int32_t *seq, const int32_t *pos, int32_t *tl)
{
	int n = 0;
	for (int32_t t = 0; t < T; t++)
		if (t == 0 || seq[t] != seq[t - 1] || pos[t] != pos[t - 1] + 1 || t - tl[n - 1] == ATTN_TILE_Q)
			tl[n++] = t;
	tl[n] = T;
	return n;
}

/* Attention for T tokens: by tiles when tiles are given (steps of more than
 * ATTN_SPLIT_MAX_T tokens), else one block per token and head, split along
 * the positions when T is small and part (ATTN_SPLIT_MAX_T x n_head x
 * ATTN_SPLITS x (hd + 2) floats) is given. */
static inline void attention(const float *qkv, int ld, step_meta m, const __half *kc, const __half *vc, int n_head,
			     int n_kv, int hd, int bs, size_t blk_stride, bf16 *out, int out_ld, int T, float *part,
			     const int32_t *tiles, int n_tiles, cudaStream_t st)
{
	if (tiles && n_tiles > 0) {
		k_attn_tile<<<dim3(n_tiles, n_head), ATTN_TILE_THREADS, 0, st>>>(
			qkv, ld, m, tiles, kc, vc, n_head, n_kv, hd, bs, blk_stride, 1.0f / sqrtf((float)hd), out, out_ld);
		return;
	}
	const int ns = part && T <= ATTN_SPLIT_MAX_T ? ATTN_SPLITS : 1;
	k_attention<<<dim3(T, n_head, ns), ATTN_WARPS * WARP, 0, st>>>(qkv, ld, m, kc, vc, n_head, n_kv, hd, bs,
									blk_stride, 1.0f / sqrtf((float)hd), out,
									out_ld, ns, part);
	if (ns > 1)
		k_attn_merge<<<dim3(T, n_head), 128, 0, st>>>(part, n_head, ns, hd, out, out_ld);
}

/* h[t][i] = silu(gu[t][i]) * gu[t][F + i], bf16. */
static __global__ void k_swiglu(const float *gu, bf16 *h, int F, int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		int64_t t = i / F, j = i % F;
		float g = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
		h[i] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
	}
}

/*
 * Argmax and the top-64 candidates of logits rows, in two passes: the
 * segments of every row in parallel (SEL_SEG entries each, at most
 * SEL_MAX_SEG segments; 63 blocks for a 128k vocabulary), then one block per
 * row merges its segments' results. One block per whole row left most of
 * the GPU idle and read the row seven times from one SM (kbench measured
 * 736 us for the top-64 of one 128k row, 36 us for its argmax).
 */
#define SEL_SEG 2048
#define SEL_MAX_SEG 64
#define SEL_PART_THREADS 256
#define TOP_MERGE_THREADS 1024

static inline __host__ __device__ int sel_segments(int n)
{
	int s = (n + SEL_SEG - 1) / SEL_SEG;
	return s < 1 ? 1 : s > SEL_MAX_SEG ? SEL_MAX_SEG : s;
}

/* kern_top_key (kernels.h) on the device: NaN lowest, -0 equal to +0. */
__device__ __forceinline__ uint32_t top_key(float v)
{
	if (v != v)
		return 0;
	uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
	return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* Argmax order as one number: the larger value, then the lower index; a
 * NaN loses to everything, so an all-NaN row gives index 0 (kern_argmax). */
__device__ __forceinline__ unsigned long long amax_key(float v, int i)
{
	return (unsigned long long)top_key(v) << 32 | (uint32_t)~(uint32_t)i;
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v)
{
	for (int o = WARP / 2; o > 0; o >>= 1) {
		unsigned long long u = __shfl_xor_sync(0xffffffffu, v, o);
		v = u > v ? u : v;
	}
	return v;
}

/* part[row][segment] = the segment's best amax_key (0 when empty); block
 * (row, segment): rows on x, whose limit (2^31 - 1) is past any batch */
static __global__ void __launch_bounds__(SEL_PART_THREADS) k_argmax_part(const float *x, int n, int S,
									  unsigned long long *part)
{
	__shared__ unsigned long long red[SEL_PART_THREADS / WARP];
	const int seg = (n + S - 1) / S, lo = blockIdx.y * seg, hi = min(n, lo + seg);
	const float *r = x + (size_t)blockIdx.x * n;
	unsigned long long best = 0;
	for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
		unsigned long long k = amax_key(r[i], i);
		best = k > best ? k : best;
	}
	best = warp_max_u64(best);
	if (threadIdx.x % WARP == 0)
		red[threadIdx.x / WARP] = best;
	__syncthreads();
	if (threadIdx.x < WARP) {
		best = threadIdx.x < blockDim.x / WARP ? red[threadIdx.x] : 0;
		best = warp_max_u64(best);
		if (threadIdx.x == 0)
			part[(size_t)blockIdx.x * S + blockIdx.y] = best;
	}
}

/* out[row] = the first index of the row's maximum; NaNs never win (0 when all are NaN). One warp per row. */
static __global__ void k_argmax_merge(const unsigned long long *part, int S, int32_t *out)
{
	unsigned long long best = 0;
	for (int s = threadIdx.x; s < S; s += WARP) {
		unsigned long long k = part[(size_t)blockIdx.x * S + s];
		best = k > best ? k : best;
	}
	best = warp_max_u64(best);
	if (threadIdx.x == 0)
		out[blockIdx.x] = best ? (int32_t)~(uint32_t)best : 0;
}

/* A segment's candidates: its KERN_TOP_K largest (fewer when shorter), in
 * the order block_top leaves them, and the sums the merge needs. */
struct top_part {
	float m;     /* the NaN-free maximum (-inf when none) */
	float sum;   /* sum of exp(x - m) */
	float sum_t; /* sum of exp((x - m) inv_t) */
	float nan;   /* 1 when the segment holds a NaN */
	int32_t n, pad_[3];
	int32_t id[KERN_TOP_K];
	float v[KERN_TOP_K];
};

/* Shared state of block_top. */
struct sel_smem {
	uint32_t hist[256];
	uint32_t prefix, kk;
	int wgt[32], weq[32];
	int ngt, neq;
};

/*
 * The K largest by top_key of the n entries get(i, &v, &id) (false: no
 * entry at i) that a block holds, ties going to the lower i, into
 * out_id/out_v[0, K): first those above the K-th key, in order of i, then
 * the first entries equal to it, in order of i. The K-th largest key is
 * found a byte per pass (four passes, a 256-bin histogram of the keys that
 * match the bytes found so far); a compaction in order of i takes the
 * winners. K is at most the number of entries. Every thread calls it.
 */
template <typename G>
__device__ void block_top(int n, int K, G get, struct sel_smem *s, int32_t *out_id, float *out_v)
{
	const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP, nw = blockDim.x / WARP;
	uint32_t prefix = 0, mask = 0, kk = (uint32_t)K;
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (int i = tid; i < 256; i += blockDim.x)
			s->hist[i] = 0;
		__syncthreads();
		/* Real logits share few top bytes: lanes with the same bin add
		 * once for the warp (__match_any_sync), not 32 times on one address. */
		for (int base = 0; base < n; base += blockDim.x) {
			int i = base + tid, id = 0;
			float v = 0;
			bool ok = i < n && get(i, &v, &id);
			uint32_t k = ok ? top_key(v) : 0;
			bool in = ok && (k & mask) == prefix;
			uint32_t bin = in ? (k >> shift) & 255u : 256u + (uint32_t)lane; /* outsiders: alone */
			unsigned peers = __match_any_sync(0xffffffffu, bin);
			if (in && lane == __ffs(peers) - 1)
				atomicAdd(&s->hist[bin], (uint32_t)__popc(peers));
		}
		__syncthreads();
		if (w == 0) {
			/* Lane l holds bins 255 - 8l down to 248 - 8l; the bin where
			 * the count from the top reaches kk (bin 0 at the latest). */
			uint32_t c[8], tot = 0;
#pragma unroll
			for (int j = 0; j < 8; j++) {
				c[j] = s->hist[255 - 8 * lane - j];
				tot += c[j];
			}
			uint32_t incl = tot;
			for (int o = 1; o < WARP; o <<= 1) {
				uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
				if (lane >= o)
					incl += y;
			}
			unsigned hit = __ballot_sync(0xffffffffu, incl >= kk);
			if (lane == (hit ? __ffs(hit) - 1 : WARP - 1)) {
				uint32_t cum = incl - tot;
				int b = 255 - 8 * lane;
				for (int j = 0; j < 8; j++, b--) {
					if (cum + c[j] >= kk || b == 0)
						break;
					cum += c[j];
				}
				s->prefix = prefix | (uint32_t)b << shift;
				s->kk = kk - cum;
			}
		}
		__syncthreads();
		prefix = s->prefix;
		kk = s->kk;
		mask |= 255u << shift;
	}

	/* compaction in order of i: the K - kk keys above the threshold, then
	 * the first kk equal to it */
	if (tid == 0) {
		s->ngt = 0;
		s->neq = 0;
	}
	__syncthreads();
	const unsigned below = (1u << lane) - 1u;
	for (int base = 0; base < n; base += blockDim.x) {
		int i = base + tid, id = 0;
		float v = 0;
		bool ok = i < n && get(i, &v, &id);
		uint32_t k = ok ? top_key(v) : 0;
		bool gt = ok && k > prefix, eq = ok && k == prefix;
		unsigned bg = __ballot_sync(0xffffffffu, gt), be = __ballot_sync(0xffffffffu, eq);
		if (lane == 0) {
			s->wgt[w] = __popc(bg);
			s->weq[w] = __popc(be);
		}
		__syncthreads();
		int og = s->ngt + __popc(bg & below), oe = s->neq + __popc(be & below);
		for (int j = 0; j < w; j++) {
			og += s->wgt[j];
			oe += s->weq[j];
		}
		int at = gt ? og : eq && oe < (int)kk ? K - (int)kk + oe : -1;
		if (at >= 0) {
			out_id[at] = id;
			out_v[at] = v;
		}
		__syncthreads();
		if (tid == 0)
			for (int j = 0; j < nw; j++) {
				s->ngt += s->wgt[j];
				s->neq += s->weq[j];
			}
		__syncthreads();
	}
}

/* Pass 1: part[row][segment], the segment's candidates and sums at the
 * row's inverse temperature inv_t[row] (1 when inv_t is NULL); block
 * (row, segment). */
static __global__ void __launch_bounds__(SEL_PART_THREADS) k_top_part(const float *x, int n, const float *inv_t, int S,
								       struct top_part *part)
{
	__shared__ struct sel_smem s;
	__shared__ float red[SEL_PART_THREADS / WARP];
	const int seg = (n + S - 1) / S, lo = blockIdx.y * seg, len = max(0, min(n - lo, seg));
	const float *r = x + (size_t)blockIdx.x * n + lo;
	struct top_part *p = part + (size_t)blockIdx.x * S + blockIdx.y;
	const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP, nw = blockDim.x / WARP;

	float m = -INFINITY, nan = 0;
	for (int i = tid; i < len; i += blockDim.x) {
		float v = r[i];
		if (v != v)
			nan = 1;
		else
			m = fmaxf(m, v);
	}
	for (int o = WARP / 2; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	if (lane == 0)
		red[w] = m;
	__syncthreads();
	m = -INFINITY;
	for (int j = 0; j < nw; j++)
		m = fmaxf(m, red[j]);
	__syncthreads();
	nan = block_sum(nan, red);
	const float it = inv_t ? inv_t[blockIdx.x] : 1.0f;
	float sum = 0, sum_t = 0;
	if (nan == 0 && m > -INFINITY)
		for (int i = tid; i < len; i += blockDim.x) {
			sum += expf(r[i] - m);
			sum_t += expf((r[i] - m) * it);
		}
	sum = block_sum(sum, red);
	sum_t = block_sum(sum_t, red);
	const int K = len < KERN_TOP_K ? len : KERN_TOP_K;
	block_top(
	    len, K,
	    [=](int i, float *v, int *id) {
		    *v = r[i];
		    *id = lo + i;
		    return true;
	    },
	    &s, p->id, p->v);
	if (tid == 0) {
		p->m = m;
		p->sum = sum;
		p->sum_t = sum_t;
		p->nan = nan;
		p->n = K;
	}
}

/*
 * Pass 2, one block per row: its KERN_TOP_K largest entries by top_key,
 * ties by lower id, sorted, its log-sum-exp and the sums relative to its
 * maximum (lz, and lz_t at the row's inverse temperature) as kern_top_row
 * computes them (the host samples from these; see sampler_sample_top).
 * Segment s's candidates precede segment s + 1's, and within a segment
 * equal keys come in id order, so block_top's "ties in order of i" is
 * "ties by lower id" here too.
 */
static __global__ void __launch_bounds__(TOP_MERGE_THREADS) k_top_merge(const struct top_part *part, int S, int n,
									 const float *inv_t, struct kern_top *out)
{
	__shared__ struct sel_smem s;
	__shared__ int32_t ci[KERN_TOP_K];
	__shared__ float cv[KERN_TOP_K];
	const struct top_part *pp = part + (size_t)blockIdx.x * S;
	struct kern_top *o = out + blockIdx.x;
	const int tid = threadIdx.x, K = n < KERN_TOP_K ? n : KERN_TOP_K;
	if (tid < WARP) {
		/* the row's sums from the segments' (S <= 64: two per lane) */
		float m = -INFINITY, nan = 0;
		for (int j = tid; j < S; j += WARP) {
			m = fmaxf(m, pp[j].m);
			nan += pp[j].nan;
		}
		for (int d = WARP / 2; d > 0; d >>= 1) {
			m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, d));
			nan += __shfl_xor_sync(0xffffffffu, nan, d);
		}
		const float it = inv_t ? inv_t[blockIdx.x] : 1.0f;
		float sum = 0, sum_t = 0;
		if (nan == 0 && m > -INFINITY)
			for (int j = tid; j < S; j += WARP)
				if (pp[j].m > -INFINITY) {
					sum += pp[j].sum * expf(pp[j].m - m);
					sum_t += pp[j].sum_t * expf((pp[j].m - m) * it);
				}
		sum = warp_sum(sum);
		sum_t = warp_sum(sum_t);
		if (tid == 0) {
			o->n = K > 0 ? K : 0;
			o->lse = nan != 0 ? NAN : m > -INFINITY ? m + logf(sum) : -INFINITY;
			o->lz = nan != 0 ? NAN : m > -INFINITY ? logf(sum) : -INFINITY;
			o->lz_t = nan != 0 ? NAN : m > -INFINITY ? logf(sum_t) : -INFINITY;
		}
	}
	if (K <= 0)
		return;
	block_top(
	    S * KERN_TOP_K, K,
	    [=](int i, float *v, int *id) {
		    const struct top_part *q = pp + i / KERN_TOP_K;
		    const int j = i % KERN_TOP_K;
		    if (j >= q->n)
			    return false;
		    *v = q->v[j];
		    *id = q->id[j];
		    return true;
	    },
	    &s, ci, cv);
	__syncthreads();
	/* placed by rank: larger key first, then lower id */
	if (tid < K) {
		uint32_t k = top_key(cv[tid]);
		int32_t id = ci[tid];
		int rank = 0;
		for (int j = 0; j < K; j++) {
			uint32_t kj = top_key(cv[j]);
			rank += kj > k || (kj == k && ci[j] < id);
		}
		o->id[rank] = id;
		o->logit[rank] = cv[tid];
	}
}

/* Device scratch the two selections need for rows rows of n logits. */
static inline size_t sel_scratch_bytes(int rows, int n)
{
	return (size_t)rows * sel_segments(n) * sizeof(struct top_part);
}

/* out[rows]: each row's argmax (kern_argmax's), through scratch. */
static inline void argmax_launch(const float *x, int n, int rows, void *scratch, int32_t *out, cudaStream_t st)
{
	const int S = sel_segments(n);
	k_argmax_part<<<dim3(rows, S), SEL_PART_THREADS, 0, st>>>(x, n, S, (unsigned long long *)scratch);
	k_argmax_merge<<<rows, WARP, 0, st>>>((const unsigned long long *)scratch, S, out);
}

/* out[rows]: each row's candidates (kern_top_row's), through scratch. */
static inline void top_launch(const float *x, int n, const float *inv_t, int rows, void *scratch, struct kern_top *out,
			      cudaStream_t st)
{
	const int S = sel_segments(n);
	k_top_part<<<dim3(rows, S), SEL_PART_THREADS, 0, st>>>(x, n, inv_t, S, (struct top_part *)scratch);
	k_top_merge<<<rows, TOP_MERGE_THREADS, 0, st>>>((const struct top_part *)scratch, S, n, inv_t, out);
}

/*
 * Fused dequantizing matrix-vector product for small batches (decode):
 * y[t][row] = sum_k x[t][k] * dequant(w[row])[k] for t < T <= NT, read
 * straight from the quantized rows, so a decode step reads 4.5-8.5 bits
 * per weight instead of bf16's 16. A warp computes GEMV_ROWS rows; four
 * lanes share a 32-weight block, eight weights each, so a warp's x loads
 * are 512 contiguous bytes (16 per lane) and its weight loads 8
 * consecutive blocks; each x load serves every row of the warp. f32
 * accumulation, x in bf16 as the GEMMs see it.
 */
#define GEMV_MAX_T 8    /* the kernels' limit (cuda-check, kbench) */
#define GEMV_Q_MAX_T 2  /* the backend's: cuBLAS on the bf16 copies is faster from 3 tokens (kbench, H100) */
#define GEMV_BF16_MAX_T 2 /* the backend's k_gemv_bf16 instead of cuBLAS for unquantized rows: kbench on
			   * an H100, Llama-3-8B shapes: ahead at 1 token (86-103% of the copy bandwidth), 5% ahead
			   * over a layer at 2, behind at 4 */
#define GEMV_WARPS 4
#define GEMV_ROWS 2

__device__ __forceinline__ float f16_at(const uint8_t *p) /* 2-byte aligned */
{
	return __half2float(*(const __half *)p);
}

/* Weights sub*8 .. sub*8+7 of the row's 32-weight unit b, in the CPU's
 * layouts (kernels/quant_ref.c). Q4_0/Q4_1: element i < 16 is the low
 * nibble of qs[i], i >= 16 the high one of qs[i-16]. K-quants: unit b is
 * sub-block j = b % 8 of super-block b / 8 (256 weights). */
template <uint32_t TYPE> __device__ __forceinline__ void dequant8(const uint8_t *wr, int b, int sub, float *v)
{
	if (TYPE == KERN_TYPE_Q4_K) {
		/* 144 bytes: d, dmin, scales[12] (6-bit scale and min per sub-block), qs[128];
		 * element i: qs[32 (i / 64) + i % 32], low nibble when i % 64 < 32 */
		const uint8_t *blk = wr + (size_t)(b >> 3) * 144;
		const int j = b & 7;
		const float d = f16_at(blk), dmin = f16_at(blk + 2);
		const uint8_t *sc = blk + 4;
		int s6, m6;
		if (j < 4) {
			s6 = sc[j] & 63;
			m6 = sc[j + 4] & 63;
		} else {
			s6 = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
			m6 = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
		}
		const float ds = d * (float)s6, dm = dmin * (float)m6;
		const uint8_t *qs = blk + 16 + 32 * (j >> 1) + sub * 8;
		const int sh = (j & 1) * 4;
#pragma unroll
		for (int i = 0; i < 8; i++)
			v[i] = ds * (float)((qs[i] >> sh) & 15) - dm;
	} else if (TYPE == KERN_TYPE_Q6_K) {
		/* 210 bytes: ql[128], qh[64], scales[16] (int8, one per 16 weights), d;
		 * element i: half n = i / 128, quarter g = i % 128 / 32, l = i % 32:
		 * low 4 bits from ql[64n + l + 32 (g & 1)] (high nibble for g >= 2),
		 * bits 4-5 from qh[32n + l] >> 2g; value d * scale * (q - 32) */
		const uint8_t *blk = wr + (size_t)(b >> 3) * 210;
		const int j = b & 7, n = j >> 2, g = j & 3, l0 = sub * 8;
		const float d = f16_at(blk + 208);
		const float ds = d * (float)((const int8_t *)(blk + 192))[2 * j + (sub >> 1)];
		const uint8_t *ql = blk + 64 * n + 32 * (g & 1) + l0, *qh = blk + 128 + 32 * n + l0;
		const int lsh = g < 2 ? 0 : 4;
#pragma unroll
		for (int i = 0; i < 8; i++) {
			int q = ((ql[i] >> lsh) & 15) | (((qh[i] >> (2 * g)) & 3) << 4);
			v[i] = ds * (float)(q - 32);
		}
	} else if (TYPE == KERN_TYPE_Q8_0) {
		/* 34-byte blocks: 2-byte aligned, so the 8 quants come as 4 halves' worth */
		const uint8_t *blk = wr + (size_t)b * 34;
		const float d = f16_at(blk);
		const uint16_t *q16 = (const uint16_t *)(blk + 2 + sub * 8);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const uint16_t u = q16[i];
			v[2 * i] = d * (float)(int8_t)(u & 0xff);
			v[2 * i + 1] = d * (float)(int8_t)(u >> 8);
		}
	} else if (TYPE == KERN_TYPE_Q4_0) {
		const uint8_t *blk = wr + (size_t)b * 18;
		const float d = f16_at(blk);
		const uint16_t *q16 = (const uint16_t *)(blk + 2 + (sub & 1) * 8);
		const int sh = (sub >> 1) * 4;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const uint32_t u = (uint32_t)q16[i] >> sh;
			v[2 * i] = d * (float)((int)(u & 15) - 8);
			v[2 * i + 1] = d * (float)((int)((u >> 8) & 15) - 8);
		}
	} else { /* Q4_1: 20-byte blocks, 4-byte aligned */
		const uint8_t *blk = wr + (size_t)b * 20;
		const float2 dm = __half22float2(*(const __half2 *)blk);
		const uint32_t *q32 = (const uint32_t *)(blk + 4 + (sub & 1) * 8);
		const uint32_t q0 = q32[0], q1 = q32[1];
		const int sh = (sub >> 1) * 4;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			v[i] = dm.x * (float)((q0 >> (8 * i + sh)) & 15) + dm.y;
			v[4 + i] = dm.x * (float)((q1 >> (8 * i + sh)) & 15) + dm.y;
		}
	}
}

template <uint32_t TYPE, int NT>
static __global__ void k_gemv_q(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
				int ldy)
{
	const int lane = threadIdx.x % WARP, sub = lane & 3;
	const int row0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / WARP) * GEMV_ROWS;
	if (row0 >= rows)
		return; /* the whole warp */
	float acc[GEMV_ROWS][NT];
#pragma unroll
	for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
		for (int t = 0; t < NT; t++)
			acc[r][t] = 0;
	/* single-token steps of the 32-weight block types: a few blocks' loads in
	 * flight at once (kbench, H100: 3-11% faster; the K-quants, whose
	 * dequantization needs more registers, ran up to 27% slower unrolled) */
	constexpr int UNROLL = NT == 1 && (TYPE == KERN_TYPE_Q8_0 || TYPE == KERN_TYPE_Q4_0 || TYPE == KERN_TYPE_Q4_1) ? 4 : 1;
#pragma unroll UNROLL
	for (int b = lane >> 2; b < k / 32; b += WARP / 4) {
		float xv[NT][8];
#pragma unroll
		for (int t = 0; t < NT; t++) {
			if (t < T) {
				/* 8 bf16, 16-byte aligned: rows of k (a multiple of 32) on 256-byte aligned bases */
				uint4 raw = *(const uint4 *)(x + (size_t)t * k + (size_t)b * 32 + sub * 8);
				const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&raw;
#pragma unroll
				for (int j = 0; j < 4; j++) {
					float2 f = __bfloat1622float2(h2[j]);
					xv[t][2 * j] = f.x;
					xv[t][2 * j + 1] = f.y;
				}
			}
		}
#pragma unroll
		for (int r = 0; r < GEMV_ROWS; r++) {
			if (row0 + r < rows) {
				float v[8];
				dequant8<TYPE>(w + (size_t)(row0 + r) * row_bytes, b, sub, v);
#pragma unroll
				for (int t = 0; t < NT; t++) {
					if (t < T) {
						float s = 0;
#pragma unroll
						for (int i = 0; i < 8; i++)
							s += v[i] * xv[t][i];
						acc[r][t] += s;
					}
				}
			}
		}
	}
#pragma unroll
	for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
		for (int t = 0; t < NT; t++) {
			float a = warp_sum(acc[r][t]);
			if (lane == 0 && t < T && row0 + r < rows)
				y[(size_t)t * ldy + row0 + r] = a;
		}
}

/*
 * The GEMV on bf16 rows (the backend's own copies), for T <= NT tokens: a
 * warp per row, each lane 8 weights (16 bytes) per load, U loads in flight
 * before any is used, so a warp keeps U x 512 bytes of the row on their
 * way (a long row, such as down's 14336, is otherwise a chain of round
 * trips); x comes from L1, the weights stream past it (ld.global.cs).
 * k a multiple of 8.
 */
#define GEMV16_WARPS 8

__device__ __forceinline__ void bf16x8(uint4 raw, float *f)
{
	const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&raw;
#pragma unroll
	for (int j = 0; j < 4; j++) {
		float2 v = __bfloat1622float2(h2[j]);
		f[2 * j] = v.x;
		f[2 * j + 1] = v.y;
	}
}

template <int NT, int U>
static __global__ void __launch_bounds__(GEMV16_WARPS *WARP)
	k_gemv_bf16(const bf16 *w, int rows, int k, const bf16 *x, int T, float *y, int ldy)
{
	const int lane = threadIdx.x % WARP, row = blockIdx.x * GEMV16_WARPS + threadIdx.x / WARP;
	if (row >= rows)
		return; /* the whole warp */
	const uint4 *wr = (const uint4 *)(w + (size_t)row * k);
	const int n8 = k / 8;
	float acc[NT];
#pragma unroll
	for (int t = 0; t < NT; t++)
		acc[t] = 0;
	int c = lane;
	for (; c + (U - 1) * WARP < n8; c += U * WARP) {
		uint4 wv[U];
#pragma unroll
		for (int u = 0; u < U; u++)
			wv[u] = __ldcs(wr + c + u * WARP);
#pragma unroll
		for (int u = 0; u < U; u++) {
			float wf[8];
			bf16x8(wv[u], wf);
#pragma unroll
			for (int t = 0; t < NT; t++) {
				if (t < T) {
					float xf[8];
					bf16x8(*(const uint4 *)(x + (size_t)t * k + (size_t)(c + u * WARP) * 8), xf);
#pragma unroll
					for (int i = 0; i < 8; i++)
						acc[t] += wf[i] * xf[i];
				}
			}
		}
	}
	for (; c < n8; c += WARP) {
		float wf[8];
		bf16x8(__ldcs(wr + c), wf);
#pragma unroll
		for (int t = 0; t < NT; t++) {
			if (t < T) {
				float xf[8];
				bf16x8(*(const uint4 *)(x + (size_t)t * k + (size_t)c * 8), xf);
#pragma unroll
				for (int i = 0; i < 8; i++)
					acc[t] += wf[i] * xf[i];
			}
		}
	}
#pragma unroll
	for (int t = 0; t < NT; t++) {
		float a = warp_sum(acc[t]);
		if (lane == 0 && t < T)
			y[(size_t)t * ldy + row] = a;
	}
}

static inline void gemv_bf16_launch(const bf16 *w, int rows, int k, const bf16 *x, int T, float *y, int ldy,
				    cudaStream_t st)
{
	unsigned blocks = (unsigned)((rows + GEMV16_WARPS - 1) / GEMV16_WARPS), th = GEMV16_WARPS * WARP;
	if (T <= 1)
		k_gemv_bf16<1, 8><<<blocks, th, 0, st>>>(w, rows, k, x, T, y, ldy);
	else if (T <= 2)
		k_gemv_bf16<2, 2><<<blocks, th, 0, st>>>(w, rows, k, x, T, y, ldy);
	else if (T <= 4)
		k_gemv_bf16<4, 2><<<blocks, th, 0, st>>>(w, rows, k, x, T, y, ldy);
	else
		k_gemv_bf16<8, 2><<<blocks, th, 0, st>>>(w, rows, k, x, T, y, ldy);
}

template <uint32_t TYPE>
static inline void gemv_launch(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
			       int ldy, cudaStream_t st)
{
	const int per_block = GEMV_WARPS * GEMV_ROWS;
	unsigned blocks = (unsigned)((rows + per_block - 1) / per_block), th = GEMV_WARPS * WARP;
	if (T <= 1)
		k_gemv_q<TYPE, 1><<<blocks, th, 0, st>>>(w, row_bytes, rows, k, x, T, y, ldy);
	else if (T <= 2)
		k_gemv_q<TYPE, 2><<<blocks, th, 0, st>>>(w, row_bytes, rows, k, x, T, y, ldy);
	else if (T <= 4)
		k_gemv_q<TYPE, 4><<<blocks, th, 0, st>>>(w, row_bytes, rows, k, x, T, y, ldy);
	else
		k_gemv_q<TYPE, 8><<<blocks, th, 0, st>>>(w, row_bytes, rows, k, x, T, y, ldy);
}

/* The fused GEMV for type qtype; false when the type has none. */
static inline bool gemv_q(uint32_t qtype, const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T,
			  float *y, int ldy, cudaStream_t st)
{
	switch (qtype) {
	case KERN_TYPE_Q8_0:
		gemv_launch<KERN_TYPE_Q8_0>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_Q4_0:
		gemv_launch<KERN_TYPE_Q4_0>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_Q4_1:
		gemv_launch<KERN_TYPE_Q4_1>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_Q4_K:
		gemv_launch<KERN_TYPE_Q4_K>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_Q6_K:
		gemv_launch<KERN_TYPE_Q6_K>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_BF16:
		(void)row_bytes; /* k * 2 */
		gemv_bf16_launch((const bf16 *)w, rows, k, x, T, y, ldy, st);
		return true;
	default:
		return false;
	}
}

/*
 * The GEMV with int8 activations, for Q8_0, Q4_0 and Q4_1 rows at 1-2
 * tokens (LOCUS_CUDA_GEMV_X8=1, until a GPU run has set it against
 * k_gemv_q). A block first quantizes the T rows of x into shared memory as
 * the CPU backend quantizes its activations (kern_act_quantize_row_ref:
 * per 32, d = max|x| / 127, q = x / d to nearest even, at most 127), then a
 * lane takes one whole 32-weight block of a row per step: its quants as
 * 32-bit words, 8 dp4a against x's, one float combination per block,
 *   Q8_0  d_w d_x sum(w_q x_q)
 *   Q4_0  d_w d_x (sum(w_q x_q) - 8 sum(x_q))
 *   Q4_1  d_w d_x sum(w_q x_q) + m_w d_x sum(x_q),
 * and no conversion per weight: k_gemv_q, which dequantizes each weight to
 * f32, is bound by instructions on the 4-bit types (kbench, H100: 19-55% of
 * the copy bandwidth). Blocks of GEMVX_WARPS warps, GEMVX_ROWS rows each;
 * shared memory T k + T k / 4 bytes (k up to 19660 at 2 tokens).
 */
#define GEMVX_WARPS 8
#define GEMVX_ROWS 2
#define GEMVX_MAX_T 2
#define GEMVX_SMEM_MAX (48 * 1024)

/* Bytes of x's quantized copy for T tokens of k. */
static inline __host__ __device__ size_t gemvx_smem(int T, int k)
{
	return (size_t)T * k + (size_t)T * (k / 32) * sizeof(float2);
}

/* 4 bytes from a 2-byte aligned address */
__device__ __forceinline__ int ld_i32_a2(const uint8_t *p)
{
	const uint16_t *h = (const uint16_t *)p;
	return (int)((uint32_t)h[0] | (uint32_t)h[1] << 16);
}

template <uint32_t TYPE, int NT>
static __global__ void __launch_bounds__(GEMVX_WARPS *WARP)
	k_gemv_x8(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y, int ldy)
{
	extern __shared__ __align__(16) uint8_t gx_smem[];
	const int nb = k / 32;
	int8_t *xq = (int8_t *)gx_smem;                       /* [NT][k] */
	float2 *xs = (float2 *)(gx_smem + (size_t)NT * k);     /* [NT][nb]: d, sum of the block's quants */
	for (int i = threadIdx.x; i < T * nb; i += blockDim.x) {
		const int t = i / nb, b = i % nb;
		const uint4 *xp = (const uint4 *)(x + (size_t)t * k + (size_t)b * 32);
		float v[32];
#pragma unroll
		for (int j = 0; j < 4; j++)
			bf16x8(xp[j], v + 8 * j);
		float amax = 0;
#pragma unroll
		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(v[j]));
		const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
		int sum = 0;
		uint32_t pk[8];
#pragma unroll
		for (int j = 0; j < 8; j++) {
			uint32_t word = 0;
#pragma unroll
			for (int u = 0; u < 4; u++) {
				const int q = max(-127, min(127, __float2int_rn(v[4 * j + u] * id)));
				sum += q;
				word |= (uint32_t)(q & 0xff) << (8 * u);
			}
			pk[j] = word;
		}
		uint4 *dst = (uint4 *)(xq + (size_t)t * k + (size_t)b * 32);
		dst[0] = make_uint4(pk[0], pk[1], pk[2], pk[3]);
		dst[1] = make_uint4(pk[4], pk[5], pk[6], pk[7]);
		xs[t * nb + b] = make_float2(d, (float)sum);
	}
	__syncthreads();
	const int lane = threadIdx.x % WARP;
	const int row0 = (blockIdx.x * GEMVX_WARPS + threadIdx.x / WARP) * GEMVX_ROWS;
	if (row0 >= rows)
		return; /* the whole warp, after the block's only barrier */
	float acc[GEMVX_ROWS][NT];
#pragma unroll
	for (int r = 0; r < GEMVX_ROWS; r++)
#pragma unroll
		for (int t = 0; t < NT; t++)
			acc[r][t] = 0;
#pragma unroll 2
	for (int b = lane; b < nb; b += WARP) {
		int xw[NT][8];
		float2 xd[NT];
#pragma unroll
		for (int t = 0; t < NT; t++) {
			if (t < T) {
				const int4 *xp = (const int4 *)(xq + (size_t)t * k + (size_t)b * 32);
				const int4 lo = xp[0], hi = xp[1];
				xw[t][0] = lo.x, xw[t][1] = lo.y, xw[t][2] = lo.z, xw[t][3] = lo.w;
				xw[t][4] = hi.x, xw[t][5] = hi.y, xw[t][6] = hi.z, xw[t][7] = hi.w;
				xd[t] = xs[t * nb + b];
			}
		}
#pragma unroll
		for (int r = 0; r < GEMVX_ROWS; r++) {
			if (row0 + r >= rows)
				break;
			const uint8_t *wr = w + (size_t)(row0 + r) * row_bytes;
			if (TYPE == KERN_TYPE_Q8_0) {
				const uint8_t *blk = wr + (size_t)b * 34; /* d, then 32 int8: 2-byte aligned */
				const float dw = f16_at(blk);
				int wq[8];
#pragma unroll
				for (int j = 0; j < 8; j++)
					wq[j] = ld_i32_a2(blk + 2 + 4 * j);
#pragma unroll
				for (int t = 0; t < NT; t++) {
					if (t < T) {
						int is = 0;
#pragma unroll
						for (int j = 0; j < 8; j++)
							is = __dp4a(wq[j], xw[t][j], is);
						acc[r][t] += dw * xd[t].x * (float)is;
					}
				}
			} else {
				/* Q4_0 (18 bytes: d, 16 of quants) or Q4_1 (20: d, m, 16 of
				 * quants): byte i holds element i (low nibble) and i + 16 */
				const bool q41 = TYPE == KERN_TYPE_Q4_1;
				const uint8_t *blk = wr + (size_t)b * (q41 ? 20 : 18);
				float dw, mw = 0;
				int qw[4];
				if (q41) {
					const float2 dm = __half22float2(*(const __half2 *)blk);
					dw = dm.x;
					mw = dm.y;
#pragma unroll
					for (int j = 0; j < 4; j++)
						qw[j] = *(const int *)(blk + 4 + 4 * j);
				} else {
					dw = f16_at(blk);
#pragma unroll
					for (int j = 0; j < 4; j++)
						qw[j] = ld_i32_a2(blk + 2 + 4 * j);
				}
#pragma unroll
				for (int t = 0; t < NT; t++) {
					if (t < T) {
						int is = 0;
#pragma unroll
						for (int j = 0; j < 4; j++) {
							is = __dp4a(qw[j] & 0x0f0f0f0f, xw[t][j], is);
							is = __dp4a((int)(((uint32_t)qw[j] >> 4) & 0x0f0f0f0fu), xw[t][4 + j], is);
						}
						acc[r][t] += q41 ? dw * xd[t].x * (float)is + mw * xd[t].x * xd[t].y
								 : dw * xd[t].x * ((float)is - 8.0f * xd[t].y);
					}
				}
			}
		}
	}
#pragma unroll
	for (int r = 0; r < GEMVX_ROWS; r++)
#pragma unroll
		for (int t = 0; t < NT; t++) {
			float a = warp_sum(acc[r][t]);
			if (lane == 0 && t < T && row0 + r < rows)
				y[(size_t)t * ldy + row0 + r] = a;
		}
}

template <uint32_t TYPE>
static inline void gemv_x8_launch(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
				  int ldy, cudaStream_t st)
{
	const int per_block = GEMVX_WARPS * GEMVX_ROWS;
	unsigned blocks = (unsigned)((rows + per_block - 1) / per_block), th = GEMVX_WARPS * WARP;
	if (T <= 1)
		k_gemv_x8<TYPE, 1><<<blocks, th, gemvx_smem(1, k), st>>>(w, row_bytes, rows, k, x, T, y, ldy);
	else
		k_gemv_x8<TYPE, 2><<<blocks, th, gemvx_smem(2, k), st>>>(w, row_bytes, rows, k, x, T, y, ldy);
}

/* The int8-activation GEMV for type qtype; false when it has none for
 * this type, T or k (the caller then takes gemv_q). */
static inline bool gemv_x8(uint32_t qtype, const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T,
			   float *y, int ldy, cudaStream_t st)
{
	if (T < 1 || T > GEMVX_MAX_T || k % 32 || gemvx_smem(T <= 1 ? 1 : 2, k) > GEMVX_SMEM_MAX)
		return false;
	switch (qtype) {
	case KERN_TYPE_Q8_0:
		gemv_x8_launch<KERN_TYPE_Q8_0>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_Q4_0:
		gemv_x8_launch<KERN_TYPE_Q4_0>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	case KERN_TYPE_Q4_1:
		gemv_x8_launch<KERN_TYPE_Q4_1>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	default:
		return false;
	}
}

/* Types whose GGUF rows get a quantized copy for the GEMV. */
static inline bool gemv_type(uint32_t t)
{
	return t == KERN_TYPE_Q8_0 || t == KERN_TYPE_Q4_0 || t == KERN_TYPE_Q4_1 || t == KERN_TYPE_Q4_K ||
	       t == KERN_TYPE_Q6_K;
}

/* ... and the GEMV's types: those, and the bf16 copies every matrix has. */
static inline bool gemv_any(uint32_t t)
{
	return gemv_type(t) || t == KERN_TYPE_BF16;
}

/* Bytes of a row of k weights of a GEMV type (k a multiple of its block). */
static inline size_t gemv_row_bytes(uint32_t t, size_t k)
{
	switch (t) {
	case KERN_TYPE_Q8_0:
		return k / 32 * 34;
	case KERN_TYPE_Q4_0:
		return k / 32 * 18;
	case KERN_TYPE_Q4_1:
		return k / 32 * 20;
	case KERN_TYPE_Q4_K:
		return k / 256 * 144;
	case KERN_TYPE_Q6_K:
		return k / 256 * 210;
	case KERN_TYPE_BF16:
		return k * 2;
	default:
		return 0;
	}
}

static inline size_t gemv_block(uint32_t t)
{
	return t == KERN_TYPE_Q4_K || t == KERN_TYPE_Q6_K ? 256 : 32;
}

/* ---- host helpers both files use ---- */

#define CU(call, what)                                                                          \
	do {                                                                                    \
		cudaError_t e_ = (call);                                                        \
		if (e_ != cudaSuccess) {                                                        \
			snprintf(errbuf, errlen, "cuda backend: %s: %s", what, cudaGetErrorString(e_)); \
			goto err;                                                               \
		}                                                                               \
	} while (0)

static inline uint16_t f32_to_bf16_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
	u += 0x7fffu + ((u >> 16) & 1);          /* round to nearest even */
	return (uint16_t)(u >> 16);
}

static inline int norm_threads(int E)
{
	int t = (E + 31) / 32 * 32;
	return t > 1024 ? 1024 : t < 64 ? 64 : t;
}

#endif
