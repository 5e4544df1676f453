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

/*
 * Programmatic dependent launch (sm_90 and later; the backend's default,
 * LOCUS_CUDA_PDL=0 turns it off): a kernel launched with it (launch(..., pdl)) may be
 * scheduled while the kernel before it on the stream still runs, so its
 * start overlaps that kernel's tail instead of following it by a launch
 * gap. The rule every kernel here keeps, however it was launched:
 *   pdl_trigger() on entry: the next kernel may be scheduled from now on
 *     (it still waits before it touches anything of ours);
 *   pdl_wait() before the first read of memory an earlier kernel writes
 *     and before any write: it returns once the previous kernel has
 *     completed and its writes are visible. Only what no kernel writes
 *     (the weights) may be read before it.
 * No kernel completes before its wait returns, so waiting on the previous
 * kernel waits on every earlier one. Both are no-ops in a kernel launched
 * without the attribute, and on older chips.
 */
__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* A hint to bring the 128-byte line at p into L2 (weights, before pdl_wait). */
__device__ __forceinline__ void prefetch_l2(const void *p)
{
	asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/*
 * Launches kernel k on st, with programmatic dependent launch when pdl
 * (see pdl_wait); errors surface through cudaGetLastError, as a <<<>>>
 * launch's do. Arguments convert to the kernel's parameter types (a bare
 * NULL does not: pass nullptr).
 */
template <typename... P, typename... A>
static inline void launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, bool pdl,
			  A &&...args)
{
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = grid;
	cfg.blockDim = block;
	cfg.dynamicSmemBytes = smem;
	cfg.stream = st;
	cfg.attrs = pdl ? at : NULL;
	cfg.numAttrs = pdl ? 1 : 0;
	(void)cudaLaunchKernelEx(&cfg, k, static_cast<A &&>(args)...);
}

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
	pdl_trigger();
	pdl_wait();
	const bf16 *row = emb + (size_t)tokens[blockIdx.x] * E;
	float *o = x + (size_t)blockIdx.x * E;
	for (int i = threadIdx.x; i < E; i += blockDim.x)
		o[i] = __bfloat162float(row[i]);
}

/*
 * Row i: r = x[src] (+ add[src], written back to x when add is given);
 * y[i] = r / sqrt(mean(r^2) + eps) * w, as bf16. src = idx ? idx[i] : i; rows picked
 * by idx (the logit rows) are not written back, so repeated indices are safe.
 * A decode step's rows are one block each, so the kernel is a chain of
 * memory round trips: the first NORM_PER_THREAD x blockDim.x elements of
 * the row (all of it up to 8192 at 1024 threads) are loaded at once into
 * registers, w before pdl_wait, and written from there; longer rows take
 * the rest in a second, looping pass.
 */
#define NORM_PER_THREAD 8

static __global__ void k_add_rmsnorm(float *x, const float *add, const int32_t *idx, const float *w, bf16 *y, int E,
				     float eps)
{
	__shared__ float sh[32];
	pdl_trigger();
	const int nt = blockDim.x, tid = threadIdx.x;
	float wv[NORM_PER_THREAD], v[NORM_PER_THREAD];
#pragma unroll
	for (int j = 0; j < NORM_PER_THREAD; j++)
		wv[j] = tid + j * nt < E ? w[tid + j * nt] : 0.0f;
	pdl_wait();
	int src = idx ? idx[blockIdx.x] : blockIdx.x;
	float *xr = x + (size_t)src * E;
	const float *ar = add ? add + (size_t)src * E : NULL;
	const bool wb = ar && !idx; /* picked rows are read only: x stays as it is */
	float ss = 0;
#pragma unroll
	for (int j = 0; j < NORM_PER_THREAD; j++) {
		const int i = tid + j * nt;
		v[j] = i < E ? (ar ? xr[i] + ar[i] : xr[i]) : 0.0f;
		ss += v[j] * v[j];
	}
	/* the rest of a long row: written back now, read again below */
	for (int i = tid + NORM_PER_THREAD * nt; i < E; i += nt) {
		float r = ar ? xr[i] + ar[i] : xr[i];
		if (wb)
			xr[i] = r;
		ss += r * r;
	}
	ss = block_sum(ss, sh);
	const float r = rsqrtf(ss / (float)E + eps);
	bf16 *yr = y + (size_t)blockIdx.x * E;
#pragma unroll
	for (int j = 0; j < NORM_PER_THREAD; j++) {
		const int i = tid + j * nt;
		if (i < E) {
			if (wb)
				xr[i] = v[j];
			yr[i] = __float2bfloat16(v[j] * r * wv[j]);
		}
	}
	for (int i = tid + NORM_PER_THREAD * nt; i < E; i += nt) {
		float v2 = ar && !wb ? xr[i] + ar[i] : xr[i]; /* same thread, same i: its own write */
		yr[i] = __float2bfloat16(v2 * r * w[i]);
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
	pdl_trigger();
	pdl_wait();
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
				   int hd, int bs, size_t blk_stride, int neox, int T, cudaStream_t st, bool pdl = false)
{
	dim3 grid((unsigned)T, (unsigned)((n_head + 2 * n_kv + QKV_POST_HEADS - 1) / QKV_POST_HEADS));
	launch(k_qkv_post, grid, dim3(QKV_POST_THREADS), 0, st, pdl, qkv, ld, bq, bk, bv, inv_freq, m, kc, vc, n_head,
	       n_kv, hd, bs, blk_stride, neox);
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
#define ATTN_UNROLL 4         /* positions a warp loads at once */
static_assert(ATTN_SPLITS <= WARP, "k_attn_merge reads a range per lane");

static __global__ void k_attention(const float *qkv, int ld, step_meta m, const __half *kc, const __half *vc,
				   int n_head, int n_kv, int hd, int bs, size_t blk_stride, float scale, bf16 *out,
				   int out_ld, int nsplit, float *part)
{
	__shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS];
	__shared__ float sacc[ATTN_WARPS][ATTN_MAX_HD];
	pdl_trigger();
	pdl_wait();
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
	/* ATTN_UNROLL positions per iteration, their block-table entries, then
	 * their K and V rows, loaded before any use: a warp's positions are a
	 * chain of dependent loads otherwise (decode is latency-bound at short
	 * contexts). The same order of updates as one at a time. */
	for (int32_t p = p0 + w; p < p1; p += ATTN_UNROLL * ATTN_WARPS) {
		const int nu = min(ATTN_UNROLL, (int)((p1 - p + ATTN_WARPS - 1) / ATTN_WARPS)); /* the whole warp's */
		int32_t blk[ATTN_UNROLL];
#pragma unroll
		for (int u = 0; u < ATTN_UNROLL; u++)
			blk[u] = bt[(u < nu ? p + u * ATTN_WARPS : p) / bs];
		float kv[ATTN_UNROLL][ATTN_MAX_HD / WARP], vv[ATTN_UNROLL][ATTN_MAX_HD / WARP];
#pragma unroll
		for (int u = 0; u < ATTN_UNROLL; u++) {
			const int32_t pu = u < nu ? p + u * ATTN_WARPS : p;
			size_t off = (size_t)blk[u] * blk_stride + (size_t)kvh * bs * hd + (size_t)(pu % bs) * hd;
			const __half *kr = kc + off, *vr = vc + off;
#pragma unroll
			for (int j = 0; j < ATTN_MAX_HD / WARP; j++) {
				kv[u][j] = j < nd ? __half2float(kr[lane + j * WARP]) : 0.0f;
				vv[u][j] = j < nd ? __half2float(vr[lane + j * WARP]) : 0.0f;
			}
		}
		float s[ATTN_UNROLL];
#pragma unroll
		for (int u = 0; u < ATTN_UNROLL; u++) {
			s[u] = 0;
#pragma unroll
			for (int j = 0; j < ATTN_MAX_HD / WARP; j++)
				s[u] += qr[j] * kv[u][j];
			s[u] = warp_sum(s[u]);
		}
#pragma unroll
		for (int u = 0; u < ATTN_UNROLL; u++) {
			if (u >= nu)
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

/*
 * Merges the nsplit (<= ATTN_SPLITS) ranges of block (token, head):
 * out = sum_z acc_z e^(m_z - M) / sum_z l_z e^(m_z - M). The first warp
 * reads every range's (m, l) at once, a lane each, and reduces them with
 * shuffles; then each output dimension's nsplit loads are independent and
 * in flight together (a loop over the ranges per thread was three chains
 * of nsplit round trips to L2, several microseconds per layer of a decode
 * step). Empty ranges have l == 0 exactly and count for nothing; a NaN l
 * is kept, so poison shows.
 */
static __global__ void k_attn_merge(const float *part, int n_head, int nsplit, int hd, bf16 *out, int out_ld)
{
	__shared__ float wz[ATTN_SPLITS];
	__shared__ float sgl;
	pdl_trigger();
	pdl_wait();
	const int t = blockIdx.x, h = blockIdx.y;
	const float *pp = part + ((size_t)t * n_head + h) * nsplit * (hd + 2);
	if (threadIdx.x < WARP) {
		const int z = threadIdx.x;
		const bool used = z < nsplit && pp[(size_t)z * (hd + 2) + 1] != 0;
		const float mz = used ? pp[(size_t)z * (hd + 2)] : -INFINITY, lz = used ? pp[(size_t)z * (hd + 2) + 1] : 0.0f;
		float gm = mz;
		for (int o = WARP / 2; o > 0; o >>= 1)
			gm = fmaxf(gm, __shfl_xor_sync(0xffffffffu, gm, o));
		const float f = used ? __expf(mz - gm) : 0.0f;
		const float gl = warp_sum(lz * f);
		if (z < ATTN_SPLITS)
			wz[z] = used ? f : -1.0f; /* -1: skipped */
		if (z == 0)
			sgl = gl;
	}
	__syncthreads();
	bf16 *o = out + (size_t)t * out_ld + (size_t)h * hd;
	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float s = 0;
#pragma unroll
		for (int z = 0; z < ATTN_SPLITS; z++)
			if (z < nsplit && wz[z] >= 0.0f)
				s += pp[(size_t)z * (hd + 2) + 2 + d] * wz[z];
		o[d] = __float2bfloat16(s / sgl);
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
	pdl_trigger();
	pdl_wait();
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

/*
 * Prefill attention on tensor cores (sm_80+, the backend's default where
 * the head size fits; LOCUS_CUDA_ATTN_MMA=0: k_attn_tile): the same tiles (up to
 * ATTN_TILE_Q consecutive tokens of one sequence) and the same causal
 * online softmax, flash-attention-2 style. Block (tile, kv head, group
 * part): its warps are query heads sharing that kv head (GQA), so each
 * ATTN_MMA_K-position chunk of K and V is read from the paged cache once
 * for all of them, as f16 into shared memory. A warp holds its 16 queries
 * (scaled, f16) as mma A fragments; per chunk S = Q K^T and O += P V are
 * mma.sync m16n8k16 (f16 in, f32 accumulate), S, the softmax and O stay
 * in registers in the mma's fragment layout (lane: group g = lane / 4
 * holds rows g and g + 8, t = lane % 4 columns 2t, 2t + 1 of each 8).
 * Rows past the tile's queries repeat its last one and are not written.
 * Positions past the tile's last are read as 0 (they may be unwritten);
 * a NaN read reaches the output. hd a multiple of 16, at most 128.
 */
#define ATTN_MMA_K 32     /* positions per chunk */
#define ATTN_MMA_MAX_HD 128
#define ATTN_MMA_HEADS 8  /* query heads (warps) per block, at most */
static_assert(ATTN_TILE_Q == 16, "a tile is one m16 fragment of queries");

__device__ __forceinline__ uint32_t half2_bits(float lo, float hi)
{
	__half2 h = __floats2half2_rn(lo, hi); /* lo in the low 16 bits */
	return *(uint32_t *)&h;
}

__device__ __forceinline__ uint32_t half2_bits(__half lo, __half hi)
{
	__half2 h = __halves2half2(lo, hi);
	return *(uint32_t *)&h;
}

/* c += a (16x16, row) . b (16x8, col), f16 in, f32 accumulate */
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
		     "{%8, %9}, {%0, %1, %2, %3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	__trap(); /* never launched there: attn_mma_ok */
#endif
}

static __global__ void __launch_bounds__(ATTN_MMA_HEADS *WARP)
	k_attn_mma(const float *qkv, int ld, step_meta m, const int32_t *tiles, const __half *kc, const __half *vc,
		   int n_head, int n_kv, int hd, int bs, size_t blk_stride, float scale, bf16 *out, int out_ld, int hb)
{
	/* +8 halves a row: the fragment reads of a warp hit distinct banks */
	__shared__ __align__(16) __half ks[ATTN_MMA_K][ATTN_MMA_MAX_HD + 8];
	__shared__ __align__(16) __half vs[ATTN_MMA_K][ATTN_MMA_MAX_HD + 8];
	pdl_trigger();
	pdl_wait();
	const int kvh = blockIdx.y, grp = n_head / n_kv, w = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	const int g = lane >> 2, tq = lane & 3, hi = blockIdx.z * hb + w; /* the warp's head in the group */
	const bool active = hi < grp; /* the last part's spare warps only help load */
	const int h = kvh * grp + hi;
	const int t0 = tiles[blockIdx.x], nq = tiles[blockIdx.x + 1] - t0;
	const int32_t p0 = m.pos[t0], plast = p0 + nq - 1;
	const int32_t *bt = m.bt + m.bt_off[t0];
	const int r0 = min(g, nq - 1), r1 = min(g + 8, nq - 1);
	const int32_t lim0 = p0 + r0, lim1 = p0 + r1; /* the last position each row sees */
	uint32_t qa[ATTN_MMA_MAX_HD / 16][4];
#pragma unroll
	for (int kk = 0; kk < ATTN_MMA_MAX_HD / 16; kk++) {
		qa[kk][0] = qa[kk][1] = qa[kk][2] = qa[kk][3] = 0;
		if (active && kk < hd / 16) {
			const float *q0 = qkv + (size_t)(t0 + r0) * ld + (size_t)h * hd + kk * 16 + 2 * tq;
			const float *q1 = qkv + (size_t)(t0 + r1) * ld + (size_t)h * hd + kk * 16 + 2 * tq;
			qa[kk][0] = half2_bits(q0[0] * scale, q0[1] * scale);
			qa[kk][1] = half2_bits(q1[0] * scale, q1[1] * scale);
			qa[kk][2] = half2_bits(q0[8] * scale, q0[9] * scale);
			qa[kk][3] = half2_bits(q1[8] * scale, q1[9] * scale);
		}
	}
	float o[ATTN_MMA_MAX_HD / 8][4];
#pragma unroll
	for (int n = 0; n < ATTN_MMA_MAX_HD / 8; n++)
		o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0;
	float mx0 = -INFINITY, mx1 = -INFINITY, l0 = 0, l1 = 0; /* rows g, g + 8; l: this lane's columns */
	const int per = hd / 8;                                  /* 16-byte pieces of a K or V row */
	for (int32_t c0 = 0; c0 <= plast; c0 += ATTN_MMA_K) {
		__syncthreads(); /* the last chunk's readers are done */
		for (int i = threadIdx.x; i < ATTN_MMA_K * per; i += blockDim.x) {
			const int kk = i / per, d8 = (i % per) * 8;
			const int32_t p = c0 + kk;
			uint4 kq = make_uint4(0, 0, 0, 0), vq = make_uint4(0, 0, 0, 0);
			if (p <= plast) {
				const size_t off = (size_t)bt[p / bs] * blk_stride + (size_t)kvh * bs * hd + (size_t)(p % bs) * hd + d8;
				kq = *(const uint4 *)(kc + off);
				vq = *(const uint4 *)(vc + off);
				/* a masked position weighs 0, but 0 x inf is NaN in the mma: a
				 * non-finite V of this step's later tokens would reach the
				 * earlier ones. Its V zeroed and its K made NaN instead, the
				 * mask keeps it from the rows that do not see it and the rows
				 * that do get NaN, as the definition says. */
				const uint32_t vw[4] = {vq.x, vq.y, vq.z, vq.w};
				bool bad = false;
#pragma unroll
				for (int j = 0; j < 4; j++)
					bad |= (vw[j] & 0x7c00u) == 0x7c00u || (vw[j] & 0x7c000000u) == 0x7c000000u;
				if (p > p0 && bad) {
					vq = make_uint4(0, 0, 0, 0);
					kq = make_uint4(0x7e007e00u, 0x7e007e00u, 0x7e007e00u, 0x7e007e00u);
				}
			}
			*(uint4 *)&ks[kk][d8] = kq;
			*(uint4 *)&vs[kk][d8] = vq;
		}
		__syncthreads();
		if (!active)
			continue;
		/* S = Q K^T, four tiles of 8 positions */
		float s[ATTN_MMA_K / 8][4];
#pragma unroll
		for (int j = 0; j < ATTN_MMA_K / 8; j++) {
			s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0;
#pragma unroll
			for (int kk = 0; kk < ATTN_MMA_MAX_HD / 16; kk++)
				if (kk < hd / 16)
					mma_16816(s[j], qa[kk], *(const uint32_t *)&ks[j * 8 + g][kk * 16 + 2 * tq],
						  *(const uint32_t *)&ks[j * 8 + g][kk * 16 + 2 * tq + 8]);
		}
		/* causal mask, the chunk's row maxima (over the 4 lanes of a row) */
		float cm0 = mx0, cm1 = mx1;
#pragma unroll
		for (int j = 0; j < ATTN_MMA_K / 8; j++)
#pragma unroll
			for (int e = 0; e < 2; e++) {
				const int32_t p = c0 + j * 8 + 2 * tq + e;
				s[j][e] = p <= lim0 ? s[j][e] : -INFINITY;
				s[j][2 + e] = p <= lim1 ? s[j][2 + e] : -INFINITY;
				cm0 = fmaxf(cm0, s[j][e]);
				cm1 = fmaxf(cm1, s[j][2 + e]);
			}
#pragma unroll
		for (int x = 1; x <= 2; x <<= 1) {
			cm0 = fmaxf(cm0, __shfl_xor_sync(0xffffffffu, cm0, x));
			cm1 = fmaxf(cm1, __shfl_xor_sync(0xffffffffu, cm1, x));
		}
		/* position 0 is in every row's first chunk: the maxima are finite
		 * unless scores are NaN */
		const float corr0 = __expf(mx0 - cm0), corr1 = __expf(mx1 - cm1);
		mx0 = cm0;
		mx1 = cm1;
		l0 *= corr0;
		l1 *= corr1;
#pragma unroll
		for (int n = 0; n < ATTN_MMA_MAX_HD / 8; n++) {
			o[n][0] *= corr0;
			o[n][1] *= corr0;
			o[n][2] *= corr1;
			o[n][3] *= corr1;
		}
		/* P = e^(S - max) as the A fragments of P V: tile 2i holds keys
		 * 16i + 2t.., tile 2i + 1 keys 16i + 8 + 2t.. */
		uint32_t pa[ATTN_MMA_K / 16][4];
#pragma unroll
		for (int j = 0; j < ATTN_MMA_K / 8; j++) {
			const float e0 = __expf(s[j][0] - cm0), e1 = __expf(s[j][1] - cm0);
			const float e2 = __expf(s[j][2] - cm1), e3 = __expf(s[j][3] - cm1);
			l0 += e0 + e1;
			l1 += e2 + e3;
			pa[j / 2][(j & 1) * 2] = half2_bits(e0, e1);
			pa[j / 2][(j & 1) * 2 + 1] = half2_bits(e2, e3);
		}
		/* O += P V */
#pragma unroll
		for (int kk = 0; kk < ATTN_MMA_K / 16; kk++) {
			const int k0 = kk * 16 + 2 * tq;
#pragma unroll
			for (int n = 0; n < ATTN_MMA_MAX_HD / 8; n++)
				if (n < hd / 8)
					mma_16816(o[n], pa[kk], half2_bits(vs[k0][n * 8 + g], vs[k0 + 1][n * 8 + g]),
						  half2_bits(vs[k0 + 8][n * 8 + g], vs[k0 + 9][n * 8 + g]));
		}
	}
	if (!active)
		return;
#pragma unroll
	for (int x = 1; x <= 2; x <<= 1) {
		l0 += __shfl_xor_sync(0xffffffffu, l0, x);
		l1 += __shfl_xor_sync(0xffffffffu, l1, x);
	}
	bf16 *o0 = out + (size_t)(t0 + g) * out_ld + (size_t)h * hd + 2 * tq;
	bf16 *o1 = out + (size_t)(t0 + g + 8) * out_ld + (size_t)h * hd + 2 * tq;
#pragma unroll
	for (int n = 0; n < ATTN_MMA_MAX_HD / 8; n++) {
		if (n >= hd / 8)
			break;
		if (g < nq)
			*(__nv_bfloat162 *)(o0 + n * 8) = __floats2bfloat162_rn(o[n][0] / l0, o[n][1] / l0);
		if (g + 8 < nq)
			*(__nv_bfloat162 *)(o1 + n * 8) = __floats2bfloat162_rn(o[n][2] / l1, o[n][3] / l1);
	}
}

/* Whether k_attn_mma takes head size hd (the chip and the module's target
 * are attn_mma_runs' to check). */
static inline bool attn_mma_ok(int hd)
{
	return hd % 16 == 0 && hd <= ATTN_MMA_MAX_HD;
}

/* Whether device gpu is of compute capability cc (80, 90, ...) or later
 * and kernel k's code in this module was built for it or later: PTX of an
 * older target, compiled for the chip at load, lacks what cc brought. */
template <typename... P> static inline bool runs_at(int gpu, int cc, void (*k)(P...))
{
	int major = 0;
	cudaFuncAttributes fa;
	bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, gpu) == cudaSuccess &&
		  major >= cc / 10 && cudaFuncGetAttributes(&fa, k) == cudaSuccess && fa.ptxVersion >= cc;
	(void)cudaGetLastError();
	return ok;
}

/* Whether device gpu can run k_attn_mma (sm_80: its mma is a trap before). */
static inline bool attn_mma_runs(int gpu)
{
	return runs_at(gpu, 80, k_attn_mma);
}

/* Whether device gpu can take programmatic dependent launch as the kernels
 * use it (sm_90: code for an older target has no waits). */
static inline bool pdl_runs(int gpu)
{
	return runs_at(gpu, 90, k_add_rmsnorm);
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
 * ATTN_SPLIT_MAX_T tokens; on tensor cores with mma), else one block per token and head, split along
 * the positions when T is small and part (ATTN_SPLIT_MAX_T x n_head x
 * ATTN_SPLITS x (hd + 2) floats) is given. */
static inline void attention(const float *qkv, int ld, step_meta m, const __half *kc, const __half *vc, int n_head,
			     int n_kv, int hd, int bs, size_t blk_stride, bf16 *out, int out_ld, int T, float *part,
			     const int32_t *tiles, int n_tiles, cudaStream_t st, bool pdl = false, bool mma = false)
{
	const float scale = 1.0f / sqrtf((float)hd);
	if (tiles && n_tiles > 0 && mma) {
		const int grp = n_head / n_kv, hb = grp < ATTN_MMA_HEADS ? grp : ATTN_MMA_HEADS;
		launch(k_attn_mma, dim3(n_tiles, n_kv, (grp + hb - 1) / hb), dim3(hb * WARP), 0, st, pdl, qkv, ld, m, tiles,
		       kc, vc, n_head, n_kv, hd, bs, blk_stride, scale, out, out_ld, hb);
		return;
	}
	if (tiles && n_tiles > 0) {
		launch(k_attn_tile, dim3(n_tiles, n_head), dim3(ATTN_TILE_THREADS), 0, st, pdl, qkv, ld, m, tiles, kc, vc,
		       n_head, n_kv, hd, bs, blk_stride, scale, out, out_ld);
		return;
	}
	const int ns = part && T <= ATTN_SPLIT_MAX_T ? ATTN_SPLITS : 1;
	launch(k_attention, dim3(T, n_head, ns), dim3(ATTN_WARPS * WARP), 0, st, pdl, qkv, ld, m, kc, vc, n_head, n_kv,
	       hd, bs, blk_stride, scale, out, out_ld, ns, part);
	if (ns > 1)
		launch(k_attn_merge, dim3(T, n_head), dim3(128), 0, st, pdl, part, n_head, ns, hd, out, out_ld);
}

/* silu(g) * u: k_swiglu's, and the GLU GEMVs' (cuda_gemv.cuh) */
__device__ __forceinline__ float swiglu1(float g, float u)
{
	return g / (1.0f + __expf(-g)) * u;
}

/* h[t][i] = silu(gu[t][i]) * gu[t][F + i], bf16. */
static __global__ void k_swiglu(const float *gu, bf16 *h, int F, int64_t n)
{
	pdl_trigger();
	pdl_wait();
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		int64_t t = i / F, j = i % F;
		h[i] = __float2bfloat16(swiglu1(gu[t * 2 * F + j], gu[t * 2 * F + F + j]));
	}
}

static inline void swiglu_launch(const float *gu, bf16 *h, int F, int T, cudaStream_t st, bool pdl = false)
{
	const int64_t n = (int64_t)T * F;
	const unsigned blocks = (unsigned)((n + 255) / 256 < 65535 ? (n + 255) / 256 : 65535);
	launch(k_swiglu, dim3(blocks), dim3(256), 0, st, pdl, gu, h, F, n);
}

/* argmax and the top-64 candidates; the decode GEMVs */
#include "kernels/cuda/cuda_select.cuh"
#include "kernels/cuda/cuda_gemv.cuh"

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
