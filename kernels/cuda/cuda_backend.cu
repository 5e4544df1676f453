/*
 * cuda_backend.cu: the Llama-family forward pass on one NVIDIA GPU.
 *
 * Built as a module (liblocus_cuda.so, next to the programs) that
 * kernels/cuda_loader.c opens with dlopen, so a binary built with CUDA runs
 * on machines without a GPU or the CUDA libraries. The few host functions
 * it shares with the CPU backend (dequantization, NUMA mappings) come from
 * the loader as a table (locus_cuda_init).
 *
 * Weights: every matrix is converted at load to bf16 on the device (any
 * GGUF type the CPU backend reads: dequantized row by row on the host, then
 * rounded to bf16); Q/K/V rows are concatenated into one matrix, and gate
 * and up into another, so each takes one GEMM. Norms, biases stay f32.
 * Q8_0, Q4_0, Q4_1, Q4_K and Q6_K matrices are also kept as they are in
 * the file: steps of up to GEMV_MAX_T tokens (decode) multiply them with a
 * fused dequantizing GEMV that reads 4.5-8.5 bits per weight instead of 16
 * (LOCUS_CUDA_GEMV=0: bf16 and cuBLAS only).
 *
 * A step (all on one stream, one host synchronization at the end):
 *   embed -> per layer [ add + rmsnorm -> GEMM qkv -> bias + rope + KV write
 *   -> attention -> GEMM o -> add + rmsnorm -> GEMM gate|up -> swiglu ->
 *   GEMM down ] -> add + rmsnorm of the rows that want logits -> GEMM
 *   logits -> argmax on the device (only ids cross PCIe when the caller
 *   does not want the logits themselves), and for step_top each row's 64
 *   best logits and log-sum-exp (k_top), from which the host samples.
 * Matrix products: cuBLASLt, bf16 inputs, f32 accumulation and output, with
 * an explicit workspace; each shape's layouts and heuristic algorithm are
 * found once and cached (LOCUS_CUDA_LT=0, or a shape without one:
 * cublasGemmEx). Activations feeding a GEMM are bf16; the residual
 * stream, norms, softmax and RoPE are f32.
 *
 * KV cache: f16, like the CPU backend's, laid out
 *     (layer, block, kv_head, block_size, head_dim)
 * for K and V alike: a warp reads one position's head as contiguous halves.
 *
 * Host staging (the batch description in, token ids out) is pinned memory
 * mapped on the GPU's NUMA node (cfg->numa_node), first touched by the
 * calling (pinned) dispatcher thread, then registered with CUDA; if binding
 * or registration is refused the backend says so on stderr and uses
 * cudaHostAlloc.
 *
 * Decode steps (every token wants its logits, at most GRAPH_MAX tokens) run
 * as CUDA graphs, one per batch-size bucket (powers of two, capped at
 * max_batch_tokens), captured the second time a bucket is seen (the first
 * runs eagerly: cuBLAS and the kernels are loaded outside a capture): the batch is padded to the
 * bucket with tokens that write to a spare KV block nobody reads
 * (LOCUS_CUDA_GRAPHS=0 turns graphs off; a failed capture does too, and
 * says so). NVTX ranges mark the host side of each step.
 *
 * Attention in steps of up to 64 tokens (decode) is split along the
 * positions into up to 16 ranges per token and merged, as flash-decoding
 * does (LOCUS_CUDA_ATTN_SPLIT=0: one block per token and head).
 *
 * Steps of more than 64 tokens (prefill) take attention a tile at a time
 * instead (k_attn_tile): up to 16 consecutive tokens of one sequence
 * share each 32-position chunk of K and V loaded into shared memory,
 * online softmax per query, causal mask inside the chunk
 * (LOCUS_CUDA_ATTN_TILED=0: the per-token kernel). CUDA cores, not tensor
 * cores: a first tiled version.
 */
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

static struct lcu_host host; /* from the loader, before any other entry point */

extern "C" void locus_cuda_init(const struct lcu_host *h)
{
	host = *h;
}

extern "C" int locus_cuda_abi(void)
{
	return LCU_ABI;
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
__device__ float block_sum(float v, float *sh)
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
__global__ void k_embed(const bf16 *emb, const int32_t *tokens, float *x, int E)
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
__global__ void k_add_rmsnorm(float *x, const float *add, const int32_t *idx, const float *w, bf16 *y, int E,
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
 * computes its table), q back in place, k and v into the f16 cache.
 */
__global__ void k_qkv_post(float *qkv, int ld, const float *bq, const float *bk, const float *bv,
			   const double *inv_freq, step_meta m, __half *kc, __half *vc, int n_head, int n_kv, int hd,
			   int bs, size_t blk_stride, int neox)
{
	const int t = blockIdx.x, half = hd / 2, qd = n_head * hd, kvd = n_kv * hd;
	float *q = qkv + (size_t)t * ld, *k = q + qd, *v = k + kvd;
	const int32_t p = m.pos[t];
	const int32_t blk = m.bt[m.bt_off[t] + p / bs];
	const size_t base = (size_t)blk * blk_stride + (size_t)(p % bs) * hd;
	/* rotations: (head, pair) items over q heads then k heads */
	for (int it = threadIdx.x; it < (n_head + n_kv) * half; it += blockDim.x) {
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
		double s, c;
		sincos((double)p * inv_freq[i], &s, &c);
		float cf = (float)c, sf = (float)s;
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
	for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
		int h = i / hd, d = i % hd;
		float x = v[i] + (bv ? bv[i] : 0.0f);
		vc[base + (size_t)h * bs * hd + d] = __float2half_rn(x);
	}
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
#define ATTN_MIN_RANGE 64     /* positions per range at least (the rest of the ranges stay empty) */

__global__ void k_attention(const float *qkv, int ld, step_meta m, const __half *kc, const __half *vc, int n_head,
			    int n_kv, int hd, int bs, size_t blk_stride, float scale, bf16 *out, int out_ld, int nsplit,
			    float *part)
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
	for (int32_t p = p0 + w; p < p1; p += ATTN_WARPS) {
		size_t off = (size_t)bt[p / bs] * blk_stride + (size_t)kvh * bs * hd + (size_t)(p % bs) * hd;
		const __half *kr = kc + off, *vr = vc + off;
		float s = 0;
#pragma unroll
		for (int j = 0; j < ATTN_MAX_HD / WARP; j++)
			if (j < nd)
				s += qr[j] * __half2float(kr[lane + j * WARP]);
		s = warp_sum(s);
		float nm = fmaxf(mx, s);
		float corr = __expf(mx - nm), e = __expf(s - nm);
		l = l * corr + e;
#pragma unroll
		for (int j = 0; j < ATTN_MAX_HD / WARP; j++)
			if (j < nd)
				acc[j] = acc[j] * corr + e * __half2float(vr[lane + j * WARP]);
		mx = nm;
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
__global__ void k_attn_merge(const float *part, int n_head, int nsplit, int hd, bf16 *out, int out_ld)
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
__global__ void __launch_bounds__(ATTN_TILE_THREADS)
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

static bool attn_tile_ok(int hd)
{
	return hd % 8 == 0 && hd <= ATTN_TILE_MAX_HD;
}

/* Tiles of a batch: runs of consecutive positions of one sequence, at
 * most ATTN_TILE_Q tokens each; tl[0..n] (n + 1 entries) are their first
 * tokens, then the batch's end. Returns n. */
static int attn_tiles(const struct kern_batch *b, int32_t *tl)
{
	int n = 0;
	for (int32_t t = 0; t < b->n_tokens; t++)
		if (t == 0 || b->seq_idx[t] != b->seq_idx[t - 1] || b->pos[t] != b->pos[t - 1] + 1 ||
		    t - tl[n - 1] == ATTN_TILE_Q)
			tl[n++] = t;
	tl[n] = b->n_tokens;
	return n;
}

/* Attention for T tokens: by tiles when tiles are given (steps of more than
 * ATTN_SPLIT_MAX_T tokens), else one block per token and head, split along
 * the positions when T is small and part (ATTN_SPLIT_MAX_T x n_head x
 * ATTN_SPLITS x (hd + 2) floats) is given. */
static void attention(const float *qkv, int ld, step_meta m, const __half *kc, const __half *vc, int n_head, int n_kv,
		      int hd, int bs, size_t blk_stride, bf16 *out, int out_ld, int T, float *part, const int32_t *tiles,
		      int n_tiles, cudaStream_t st)
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
__global__ void k_swiglu(const float *gu, bf16 *h, int F, int64_t n)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		int64_t t = i / F, j = i % F;
		float g = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
		h[i] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
	}
}

/* out[row] = the first index of the row's maximum; NaNs never win (0 when all are NaN). */
__global__ void k_argmax(const float *x, int n, int32_t *out)
{
	__shared__ float sv[32];
	__shared__ int si[32];
	const float *r = x + (size_t)blockIdx.x * n;
	float bv = -INFINITY;
	int bi = -1;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float v = r[i];
		if (v > bv || (bi < 0 && v == v)) { /* strictly greater keeps the first index per thread */
			bv = v;
			bi = i;
		}
	}
	/* reduce (value, index): larger value, then smaller index; -1 loses */
	for (int o = WARP / 2; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
			bv = ov;
			bi = oi;
		}
	}
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
	if (lane == 0) {
		sv[w] = bv;
		si[w] = bi;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		for (int i = 1; i < (int)(blockDim.x / WARP); i++)
			if (si[i] >= 0 && (si[0] < 0 || sv[i] > sv[0] || (sv[i] == sv[0] && si[i] < si[0]))) {
				sv[0] = sv[i];
				si[0] = si[i];
			}
		out[blockIdx.x] = si[0] < 0 ? 0 : si[0];
	}
}

/* kern_top_key (kernels.h) on the device: NaN lowest, -0 equal to +0. */
__device__ __forceinline__ uint32_t top_key(float v)
{
	if (v != v)
		return 0;
	uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
	return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

#define TOP_THREADS 1024

/*
 * Each block one logits row: its KERN_TOP_K largest entries by top_key,
 * ties by lower id, sorted, and its log-sum-exp, as kern_top_row computes
 * them (the host then samples from these; see sampler_sample_top). The
 * K-th largest key is found byte by byte (4 passes, a 256-bin histogram
 * of the keys that match the bytes found so far); a compaction in id
 * order takes the keys above it and the lowest ids among those equal to
 * it; the <= 64 winners are placed by rank. Seven reads of the row in all,
 * from L2 when the logits were just written.
 */
__global__ void __launch_bounds__(TOP_THREADS) k_top(const float *x, int n, struct kern_top *out)
{
	__shared__ float red[TOP_THREADS / WARP];
	__shared__ uint32_t hist[256];
	__shared__ uint32_t s_prefix, s_kk;
	__shared__ int wgt[TOP_THREADS / WARP], weq[TOP_THREADS / WARP];
	__shared__ int s_ngt, s_neq;
	__shared__ uint32_t ck[KERN_TOP_K];
	__shared__ int32_t ci[KERN_TOP_K];
	__shared__ float cv[KERN_TOP_K];
	const float *r = x + (size_t)blockIdx.x * n;
	struct kern_top *o = out + blockIdx.x;
	const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP, nw = blockDim.x / WARP;
	const int K = n < KERN_TOP_K ? n : KERN_TOP_K;

	/* log-sum-exp: the NaN-free maximum, then the sum */
	float m = -INFINITY, nan = 0;
	for (int i = tid; i < n; i += blockDim.x) {
		float v = r[i];
		if (v != v)
			nan = 1;
		else
			m = fmaxf(m, v);
	}
	for (int o2 = WARP / 2; o2 > 0; o2 >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o2));
	if (lane == 0)
		red[w] = m;
	__syncthreads();
	m = -INFINITY;
	for (int j = 0; j < nw; j++)
		m = fmaxf(m, red[j]);
	__syncthreads();
	nan = block_sum(nan, red);
	float sum = 0;
	if (nan == 0 && m > -INFINITY)
		for (int i = tid; i < n; i += blockDim.x)
			sum += expf(r[i] - m);
	sum = block_sum(sum, red);
	if (K <= 0) {
		if (tid == 0) {
			o->n = 0;
			o->lse = -INFINITY;
		}
		return;
	}

	/* the K-th largest key, a byte per pass; kk: how many keys equal to it to take */
	uint32_t prefix = 0, mask = 0, kk = (uint32_t)K;
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (int i = tid; i < 256; i += blockDim.x)
			hist[i] = 0;
		__syncthreads();
		/* Real logits share few top bytes: lanes with the same bin add
		 * once for the warp (__match_any_sync), not 32 times on one address. */
		for (int base = 0; base < n; base += blockDim.x) {
			int i = base + tid;
			uint32_t k = i < n ? top_key(r[i]) : 0;
			bool in = i < n && (k & mask) == prefix;
			uint32_t bin = in ? (k >> shift) & 255u : 256u + (uint32_t)lane; /* outsiders: alone */
			unsigned peers = __match_any_sync(0xffffffffu, bin);
			if (in && lane == __ffs(peers) - 1)
				atomicAdd(&hist[bin], (uint32_t)__popc(peers));
		}
		__syncthreads();
		if (tid == 0) {
			uint32_t cum = 0;
			int b = 255;
			for (; b > 0 && cum + hist[b] < kk; b--)
				cum += hist[b];
			s_prefix = prefix | (uint32_t)b << shift;
			s_kk = kk - cum;
		}
		__syncthreads();
		prefix = s_prefix;
		kk = s_kk;
		mask |= 255u << shift;
	}

	/* compaction in id order: all keys above the threshold (K - kk of
	 * them), then the first kk equal to it */
	if (tid == 0) {
		s_ngt = 0;
		s_neq = 0;
	}
	__syncthreads();
	const unsigned below = (1u << lane) - 1u;
	for (int base = 0; base < n; base += blockDim.x) {
		int i = base + tid;
		float v = i < n ? r[i] : 0.0f;
		uint32_t k = i < n ? top_key(v) : 0;
		bool gt = i < n && k > prefix, eq = i < n && k == prefix;
		unsigned bg = __ballot_sync(0xffffffffu, gt), be = __ballot_sync(0xffffffffu, eq);
		if (lane == 0) {
			wgt[w] = __popc(bg);
			weq[w] = __popc(be);
		}
		__syncthreads();
		int og = s_ngt + __popc(bg & below), oe = s_neq + __popc(be & below);
		for (int j = 0; j < w; j++) {
			og += wgt[j];
			oe += weq[j];
		}
		int at = gt ? og : eq && oe < (int)kk ? K - (int)kk + oe : -1;
		if (at >= 0) {
			ck[at] = k;
			ci[at] = i;
			cv[at] = v;
		}
		__syncthreads();
		if (tid == 0)
			for (int j = 0; j < nw; j++) {
				s_ngt += wgt[j];
				s_neq += weq[j];
			}
		__syncthreads();
	}

	/* placed by rank: larger key first, then lower id */
	if (tid < K) {
		uint32_t k = ck[tid];
		int32_t id = ci[tid];
		int rank = 0;
		for (int j = 0; j < K; j++)
			rank += ck[j] > k || (ck[j] == k && ci[j] < id);
		o->id[rank] = id;
		o->logit[rank] = cv[tid];
	}
	if (tid == 0) {
		o->n = K;
		o->lse = nan != 0 ? NAN : m > -INFINITY ? m + logf(sum) : -INFINITY;
	}
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
#define GEMV_MAX_T 8
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
	if (TYPE == KERN_TYPE_BF16) {
		/* the backend's own bf16 rows: 8 weights in one 16-byte load */
		uint4 raw = *(const uint4 *)(wr + (size_t)b * 64 + sub * 16);
		const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&raw;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			float2 f = __bfloat1622float2(h2[j]);
			v[2 * j] = f.x;
			v[2 * j + 1] = f.y;
		}
	} else if (TYPE == KERN_TYPE_Q4_K) {
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
		const uint8_t *blk = wr + (size_t)b * 34;
		const float d = f16_at(blk);
		const int8_t *q = (const int8_t *)(blk + 2 + sub * 8);
#pragma unroll
		for (int i = 0; i < 8; i++)
			v[i] = d * (float)q[i];
	} else if (TYPE == KERN_TYPE_Q4_0) {
		const uint8_t *blk = wr + (size_t)b * 18;
		const float d = f16_at(blk);
		const uint8_t *qs = blk + 2 + (sub & 1) * 8;
		const int sh = (sub >> 1) * 4;
#pragma unroll
		for (int i = 0; i < 8; i++)
			v[i] = d * (float)(((qs[i] >> sh) & 15) - 8);
	} else { /* Q4_1 */
		const uint8_t *blk = wr + (size_t)b * 20;
		const float d = f16_at(blk), m = f16_at(blk + 2);
		const uint8_t *qs = blk + 4 + (sub & 1) * 8;
		const int sh = (sub >> 1) * 4;
#pragma unroll
		for (int i = 0; i < 8; i++)
			v[i] = d * (float)((qs[i] >> sh) & 15) + m;
	}
}

template <uint32_t TYPE, int NT>
__global__ void k_gemv_q(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y, int ldy)
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

template <uint32_t TYPE>
static void gemv_launch(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y, int ldy,
			cudaStream_t st)
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
static bool gemv_q(uint32_t qtype, const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
		   int ldy, cudaStream_t st)
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
		gemv_launch<KERN_TYPE_BF16>(w, row_bytes, rows, k, x, T, y, ldy, st);
		return true;
	default:
		return false;
	}
}

/* Types whose GGUF rows get a quantized copy for the GEMV. */
static bool gemv_type(uint32_t t)
{
	return t == KERN_TYPE_Q8_0 || t == KERN_TYPE_Q4_0 || t == KERN_TYPE_Q4_1 || t == KERN_TYPE_Q4_K ||
	       t == KERN_TYPE_Q6_K;
}

/* ... and the GEMV's types: those, and the bf16 copies every matrix has. */
static bool gemv_any(uint32_t t)
{
	return gemv_type(t) || t == KERN_TYPE_BF16;
}

/* Bytes of a row of k weights of a GEMV type (k a multiple of its block). */
static size_t gemv_row_bytes(uint32_t t, size_t k)
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

static size_t gemv_block(uint32_t t)
{
	return t == KERN_TYPE_Q4_K || t == KERN_TYPE_Q6_K ? 256 : 32;
}

/* ---- host side ---- */

struct cu_mat {
	bf16 *d;     /* rows x k, row-major */
	int64_t k, rows;
	uint8_t *q;  /* the same rows in their GGUF quantized format (a GEMV type: gemv_type), or NULL */
	uint32_t qtype;
	size_t q_row_bytes;
};

struct cu_layer {
	float *attn_norm, *ffn_norm, *bq, *bk, *bv;
	struct cu_mat wqkv, wo, wgu, wdown;
};

/* Pinned host memory: node-bound and registered, or from cudaHostAlloc. */
struct hbuf {
	int32_t *p;
	size_t bytes;
	bool registered; /* mapped on the node and registered with CUDA */
	bool bound;      /* ... and the kernel bound its pages to the node */
};

/* A GEMM shape's cuBLASLt plan: its layouts and the algorithm the
 * heuristic picked, found once and kept (LT_SLOTS shapes at most). */
#define LT_SLOTS 1024
struct lt_plan {
	int rows, T, k, ldy; /* the key; rows == 0: an empty slot */
	bool ok;             /* false: no algorithm for it, cublasGemmEx instead */
	cublasLtMatrixLayout_t a, b, c;
	cublasLtMatmulAlgo_t algo;
};

struct cuda_backend {
	struct kern_backend base;
	const struct kern_weights *w;
	int device;
	cudaStream_t stream;
	cublasHandle_t blas;
	void *workspace;
	cublasLtHandle_t lt; /* NULL: GEMMs through cublasGemmEx (LOCUS_CUDA_LT=0 or set-up failed) */
	cublasLtMatmulDesc_t lt_op;
	cublasLtMatmulPreference_t lt_pref;
	struct lt_plan *lt_plans; /* (LT_SLOTS), open addressing */
	int lt_n;
	bool lt_full;

	bf16 *emb;
	float *out_norm;
	struct cu_mat output;
	struct cu_layer *layers;
	double *inv_freq;
	size_t weight_bytes;

	__half *kc, *vc;
	size_t kv_bytes, blk_stride, layer_stride; /* elements */

	/* device scratch, rows of max_batch_tokens */
	float *x, *tmp, *qkv, *gu, *logits;
	float *attn_part; /* split attention's partial results (steps of <= 64 tokens); NULL: never split */
	bf16 *xb, *att, *h;
	int32_t *d_meta; /* tokens, pos, bt_off, logit_idx, argmax, then block tables */
	size_t meta_cap; /* int32 elements of d_meta and h_meta */
	size_t scratch_bytes;

	struct hbuf hm; /* pinned host staging, the same layout as d_meta */
	int32_t *h_meta; /* == hm.p */
	struct kern_top *d_top; /* (max_batch_tokens) each logits row's candidates */
	struct hbuf htop;       /* pinned, the same */
	int numa_node;
	size_t *seq_start; /* (max_batch_tokens) host: each sequence's first entry in the tables */

	/* CUDA graphs of decode steps, by padded batch size */
	struct {
		int T;
		cudaGraphExec_t exec; /* NULL: seen once, runs eagerly */
	} graph[GRAPH_SLOTS];
	int n_graphs;
	bool graphs_off;
	int32_t spare_block; /* = n_kv_blocks: padding tokens write here, nobody reads it */
	bool attn_split;     /* LOCUS_CUDA_ATTN_SPLIT != 0 */
	bool attn_tiled;     /* LOCUS_CUDA_ATTN_TILED != 0 and the head size fits k_attn_tile */
	bool gemv_bf16;      /* LOCUS_CUDA_GEMV_BF16=1: decode steps of unquantized models through the GEMV on bf16 */
	int32_t *d_tiles;    /* (max_batch_tokens + 1) this step's attention tiles, when it has more than 64 tokens */
	struct hbuf htiles;  /* pinned, the same */
	int n_tiles;         /* 0: this step has none */
	size_t q_bytes;      /* quantized copies for the decode GEMV */
	int n_q;
};

#define CU(call, what)                                                                          \
	do {                                                                                    \
		cudaError_t e_ = (call);                                                        \
		if (e_ != cudaSuccess) {                                                        \
			snprintf(errbuf, errlen, "cuda backend: %s: %s", what, cudaGetErrorString(e_)); \
			goto err;                                                               \
		}                                                                               \
	} while (0)

static uint16_t f32_to_bf16_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
	u += 0x7fffu + ((u >> 16) & 1);          /* round to nearest even */
	return (uint16_t)(u >> 16);
}

/* Copies n rows of tensor t (dequantized, rounded to bf16) to dst + row0 * k. */
static int upload_rows(const struct kern_tensor *t, bf16 *dst, int64_t row0, float *f32, uint16_t *stage,
		       int64_t stage_rows, cudaStream_t st)
{
	const int64_t k = t->ne[0], rows = t->ne[1] > 0 ? t->ne[1] : 1;
	for (int64_t r0 = 0; r0 < rows; r0 += stage_rows) {
		int64_t n = rows - r0 < stage_rows ? rows - r0 : stage_rows;
		for (int64_t r = 0; r < n; r++) {
			host.dequantize_row(t->type, (const uint8_t *)t->data + (size_t)(r0 + r) * t->row_bytes, f32, k);
			for (int64_t i = 0; i < k; i++)
				stage[r * k + i] = f32_to_bf16_bits(f32[i]);
		}
		cudaError_t e = cudaMemcpyAsync(dst + (size_t)(row0 + r0) * k, stage, (size_t)n * k * 2,
						cudaMemcpyHostToDevice, st);
		if (e == cudaSuccess)
			e = cudaStreamSynchronize(st); /* stage is reused */
		if (e != cudaSuccess)
			return -EIO;
	}
	return 0;
}

/* A 1-D f32 vector on the device (norm weights, biases); NULL when absent. */
static float *upload_vec(const struct kern_tensor *t, int64_t n, float *f32, int *rc)
{
	if (!t->data || *rc)
		return NULL;
	host.dequantize_row(t->type, t->data, f32, n);
	float *d = NULL;
	if (cudaMalloc(&d, (size_t)n * 4) != cudaSuccess || cudaMemcpy(d, f32, (size_t)n * 4, cudaMemcpyHostToDevice)) {
		cudaFree(d);
		*rc = -ENOMEM;
		return NULL;
	}
	return d;
}

/*
 * The quantized rows of parts[0..n) next to m's bf16 copy, for the decode
 * GEMV, when every part has one type that has a fused GEMV. Optional: 1
 * when skipped (type), -ENOMEM when the device is full (the caller stops
 * adding them), 0 when added.
 */
static int upload_q(struct cu_mat *m, const struct kern_tensor *const *parts, int n, size_t *bytes)
{
	bool q = gemv_type(parts[0]->type) && m->k % (int64_t)gemv_block(parts[0]->type) == 0 &&
		 parts[0]->row_bytes == gemv_row_bytes(parts[0]->type, (size_t)m->k);
	for (int i = 0; i < n; i++)
		q = q && parts[i]->type == parts[0]->type && parts[i]->row_bytes == parts[0]->row_bytes;
	if (!q)
		return 1;
	size_t rb = parts[0]->row_bytes, qsz = (size_t)m->rows * rb;
	uint8_t *d = NULL;
	if (cudaMalloc(&d, qsz) != cudaSuccess) {
		(void)cudaGetLastError();
		return -ENOMEM;
	}
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		size_t pb = (size_t)parts[i]->ne[1] * rb;
		if (cudaMemcpy(d + off, parts[i]->data, pb, cudaMemcpyHostToDevice) != cudaSuccess) {
			(void)cudaGetLastError();
			cudaFree(d);
			return -ENOMEM;
		}
		off += pb;
	}
	m->q = d;
	m->qtype = parts[0]->type;
	m->q_row_bytes = rb;
	*bytes += qsz;
	return 0;
}

/* Concatenates the rows of parts[0..n) (same k) into one bf16 matrix. */
static int upload_mat(struct cu_mat *m, const struct kern_tensor *const *parts, int n, float *f32, uint16_t *stage,
		      int64_t stage_rows, cudaStream_t st, size_t *bytes)
{
	m->k = parts[0]->ne[0];
	m->rows = 0;
	for (int i = 0; i < n; i++)
		m->rows += parts[i]->ne[1];
	size_t sz = (size_t)m->rows * m->k * sizeof(bf16);
	if (cudaMalloc(&m->d, sz) != cudaSuccess) {
		m->d = NULL;
		return -ENOMEM;
	}
	*bytes += sz;
	int64_t r = 0;
	for (int i = 0; i < n; i++) {
		if (upload_rows(parts[i], m->d, r, f32, stage, stage_rows, st))
			return -EIO;
		r += parts[i]->ne[1];
	}
	return 0;
}

/* The plan of shape (rows, T, k, ldy): found, made now, or NULL (the
 * table is full, or cuBLASLt is off). Host-only calls: safe while a
 * stream is being captured. */
static struct lt_plan *lt_plan_get(struct cuda_backend *cb, int rows, int T, int k, int ldy)
{
	if (!cb->lt)
		return NULL;
	uint32_t h = ((uint32_t)rows * 2654435761u) ^ ((uint32_t)T * 40503u) ^ ((uint32_t)k * 97u) ^ (uint32_t)ldy;
	for (int i = 0; i < 32; i++) {
		struct lt_plan *p = &cb->lt_plans[(h + (uint32_t)i) & (LT_SLOTS - 1)];
		if (p->rows == rows && p->T == T && p->k == k && p->ldy == ldy)
			return p;
		if (p->rows != 0)
			continue;
		/* a new shape: W stored k x rows (used transposed), X k x T, Y rows x T (ld ldy) */
		*p = (struct lt_plan){rows, T, k, ldy, false, NULL, NULL, NULL, {}};
		cublasLtMatmulHeuristicResult_t res;
		int n = 0;
		if (cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, (uint64_t)k, (uint64_t)rows, k) == CUBLAS_STATUS_SUCCESS &&
		    cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, (uint64_t)k, (uint64_t)T, k) == CUBLAS_STATUS_SUCCESS &&
		    cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, (uint64_t)rows, (uint64_t)T, ldy) == CUBLAS_STATUS_SUCCESS &&
		    cublasLtMatmulAlgoGetHeuristic(cb->lt, cb->lt_op, p->a, p->b, p->c, p->c, cb->lt_pref, 1, &res, &n) ==
			    CUBLAS_STATUS_SUCCESS &&
		    n > 0) {
			/* n > 0: res is valid, and within the preference's workspace */
			p->algo = res.algo;
			p->ok = true;
		} else {
			fprintf(stderr, "cuda backend: cuBLASLt has no algorithm for %dx%dx%d (ld %d): cublasGemmEx\n", rows,
				T, k, ldy);
		}
		cb->lt_n++;
		return p;
	}
	if (!cb->lt_full) {
		cb->lt_full = true;
		fprintf(stderr, "cuda backend: cuBLASLt plan table full (%d shapes): new shapes through cublasGemmEx\n",
			cb->lt_n);
	}
	return NULL;
}

static void lt_free(struct cuda_backend *cb)
{
	for (int i = 0; cb->lt_plans && i < LT_SLOTS; i++) {
		struct lt_plan *p = &cb->lt_plans[i];
		if (p->a)
			cublasLtMatrixLayoutDestroy(p->a);
		if (p->b)
			cublasLtMatrixLayoutDestroy(p->b);
		if (p->c)
			cublasLtMatrixLayoutDestroy(p->c);
	}
	free(cb->lt_plans);
	if (cb->lt_pref)
		cublasLtMatmulPreferenceDestroy(cb->lt_pref);
	if (cb->lt_op)
		cublasLtMatmulDescDestroy(cb->lt_op);
	if (cb->lt)
		cublasLtDestroy(cb->lt);
	cb->lt_plans = NULL;
	cb->lt_pref = NULL;
	cb->lt_op = NULL;
	cb->lt = NULL;
}

/* cuBLASLt set-up: one operation (bf16 x bf16 -> f32, f32 compute, A
 * transposed), the workspace as the preference; off when anything fails. */
static void lt_init(struct cuda_backend *cb)
{
	const char *e = getenv("LOCUS_CUDA_LT");
	if (e && !strcmp(e, "0"))
		return;
	cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
	uint64_t ws = GEMM_WORKSPACE;
	cb->lt_plans = (struct lt_plan *)calloc(LT_SLOTS, sizeof(*cb->lt_plans));
	if (!cb->lt_plans || cublasLtCreate(&cb->lt) != CUBLAS_STATUS_SUCCESS ||
	    cublasLtMatmulDescCreate(&cb->lt_op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
	    cublasLtMatmulDescSetAttribute(cb->lt_op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) != CUBLAS_STATUS_SUCCESS ||
	    cublasLtMatmulDescSetAttribute(cb->lt_op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) != CUBLAS_STATUS_SUCCESS ||
	    cublasLtMatmulPreferenceCreate(&cb->lt_pref) != CUBLAS_STATUS_SUCCESS ||
	    cublasLtMatmulPreferenceSetAttribute(cb->lt_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)) !=
		    CUBLAS_STATUS_SUCCESS) {
		fprintf(stderr, "cuda backend: cuBLASLt set-up failed: GEMMs through cublasGemmEx\n");
		lt_free(cb);
	}
}

/* y[T][ldy] (f32) = x[T][k] (bf16) . m^T: the fused GEMV over the
 * quantized rows for a few tokens; otherwise cuBLASLt with the shape's
 * cached plan, or cublasGemmEx when there is none. */
static cublasStatus_t gemm(struct cuda_backend *cb, const struct cu_mat *m, const bf16 *x, int T, float *y, int ldy)
{
	if (m->q && T <= GEMV_MAX_T &&
	    gemv_q(m->qtype, m->q, m->q_row_bytes, (int)m->rows, (int)m->k, x, T, y, ldy, cb->stream))
		return CUBLAS_STATUS_SUCCESS; /* launch errors surface at the step's end */
	if (!m->q && cb->gemv_bf16 && T <= GEMV_MAX_T && m->k % 32 == 0 &&
	    gemv_q(KERN_TYPE_BF16, (const uint8_t *)m->d, (size_t)m->k * 2, (int)m->rows, (int)m->k, x, T, y, ldy,
		   cb->stream))
		return CUBLAS_STATUS_SUCCESS;
	const float one = 1.0f, zero = 0.0f;
	struct lt_plan *p = lt_plan_get(cb, (int)m->rows, T, (int)m->k, ldy);
	if (p && p->ok) {
		cublasStatus_t st = cublasLtMatmul(cb->lt, cb->lt_op, &one, m->d, p->a, x, p->b, &zero, y, p->c, y, p->c,
						   &p->algo, cb->workspace, GEMM_WORKSPACE, cb->stream);
		/* Only "this algorithm cannot do it" falls back (nothing was
		 * launched); any other status is the step's failure, as before. */
		if (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE)
			return st;
		cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
		if (cudaStreamIsCapturing(cb->stream, &cs) == cudaSuccess && cs == cudaStreamCaptureStatusNone) {
			p->ok = false; /* this shape goes through cublasGemmEx from now on */
			fprintf(stderr, "cuda backend: cuBLASLt refused %dx%dx%d (status %d): cublasGemmEx\n", (int)m->rows, T,
				(int)m->k, (int)st);
		}
	}
	return cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m->rows, T, (int)m->k, &one, m->d, CUDA_R_16BF,
			    (int)m->k, x, CUDA_R_16BF, (int)m->k, &zero, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
			    CUBLAS_GEMM_DEFAULT);
}

static int norm_threads(int E)
{
	int t = (E + 31) / 32 * 32;
	return t > 1024 ? 1024 : t < 64 ? 64 : t;
}

static void hbuf_free(struct hbuf *h)
{
	if (!h->p)
		return;
	if (h->registered) {
		cudaHostUnregister(h->p);
		host.numa_unmap(h->p, h->bytes);
	} else {
		cudaFreeHost(h->p);
	}
	*h = (struct hbuf){};
}

/* Pinned staging on the GPU's node: map with the node's policy, touch,
 * register. Falls back to cudaHostAlloc and says so. (The engine opens the
 * backend on its loader thread: placement follows the policy, not the
 * touching thread.) */
static int hbuf_alloc(struct hbuf *h, size_t bytes, int node)
{
	*h = (struct hbuf){};
	if (node >= 0) {
		int bound = 0;
		void *p = host.numa_map(bytes, node, ALLOC_POLICY_PREFERRED, &bound);
		if (p) {
			memset(p, 0, bytes);
			cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
			if (e == cudaSuccess) {
				*h = (struct hbuf){(int32_t *)p, bytes, true, bound != 0};
				return 0;
			}
			(void)cudaGetLastError(); /* handled: do not let it fail the next step */
			fprintf(stderr, "cuda backend: cannot register host memory bound to node %d (%s): "
					"using cudaHostAlloc, placed by the driver\n", node, cudaGetErrorString(e));
			host.numa_unmap(p, bytes);
		} else {
			fprintf(stderr, "cuda backend: cannot map host memory on node %d: using cudaHostAlloc\n", node);
		}
	}
	void *p = NULL;
	if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
		(void)cudaGetLastError();
		return -ENOMEM;
	}
	*h = (struct hbuf){(int32_t *)p, bytes, false, false};
	return 0;
}

static void graphs_clear(struct cuda_backend *cb)
{
	for (int i = 0; i < cb->n_graphs; i++)
		if (cb->graph[i].exec)
			cudaGraphExecDestroy(cb->graph[i].exec);
	cb->n_graphs = 0;
}

/* Room for need int32 of batch description on both sides (block tables
 * longer than any seen so far grow it; sizes only go up). */
static int meta_reserve(struct cuda_backend *cb, size_t need)
{
	if (need <= cb->meta_cap)
		return 0;
	size_t cap = need + need / 2;
	int32_t *d = NULL;
	struct hbuf h;
	if (cudaStreamSynchronize(cb->stream) != cudaSuccess || cudaMalloc(&d, cap * 4) != cudaSuccess) {
		(void)cudaGetLastError();
		return -ENOMEM;
	}
	if (hbuf_alloc(&h, cap * 4, cb->numa_node)) {
		cudaFree(d);
		return -ENOMEM; /* the old buffers stay as they were */
	}
	hbuf_free(&cb->hm);
	cudaFree(cb->d_meta);
	cb->hm = h;
	cb->h_meta = h.p;
	cb->d_meta = d;
	cb->meta_cap = cap;
	graphs_clear(cb); /* they captured the old buffers */
	return 0;
}

/* The padded size of a batch that can run as a graph, or 0. */
static int graph_bucket(const struct cuda_backend *cb, const struct kern_batch *b)
{
	if (cb->graphs_off || b->n_tokens > GRAPH_MAX || b->n_logits != b->n_tokens)
		return 0;
	for (int32_t i = 0; i < b->n_logits; i++)
		if (b->logit_idx[i] != i)
			return 0;
	int p = 1;
	while (p < b->n_tokens)
		p *= 2;
	return p < cb->base.max_batch_tokens ? p : cb->base.max_batch_tokens;
}

/*
 * The step's batch description into pinned memory, then one copy to the
 * device. Tokens n_tokens..pad-1 (pad > n_tokens for graphs) are padding:
 * token 0 at position 0 of a one-entry table holding the spare block, and
 * their own logit rows.
 */
static int stage_batch(struct cuda_backend *cb, const struct kern_batch *b, int pad)
{
	const int T = cb->base.max_batch_tokens;
	size_t nbt = 1; /* + the padding tokens' table */
	for (int32_t s = 0; s < b->n_seqs; s++)
		nbt += (size_t)b->seqs[s].n_blocks;
	if (meta_reserve(cb, 5 * (size_t)T + nbt))
		return -ENOMEM;
	int32_t *h = cb->h_meta;
	int32_t *tok = h, *pos = h + T, *bto = h + 2 * T, *li = h + 3 * T, *bt = h + 5 * T;
	size_t off = 0, *starts = cb->seq_start; /* n_seqs <= n_tokens <= T */
	for (int32_t s = 0; s < b->n_seqs; s++) {
		starts[s] = off;
		memcpy(bt + off, b->seqs[s].block_table, (size_t)b->seqs[s].n_blocks * sizeof(int32_t));
		off += (size_t)b->seqs[s].n_blocks;
	}
	for (int32_t t = 0; t < b->n_tokens; t++) {
		tok[t] = b->tokens[t];
		pos[t] = b->pos[t];
		bto[t] = (int32_t)starts[b->seq_idx[t]];
	}
	memcpy(li, b->logit_idx, (size_t)b->n_logits * sizeof(int32_t));
	bt[off] = cb->spare_block;
	for (int32_t t = b->n_tokens; t < pad; t++) {
		tok[t] = 0;
		pos[t] = 0;
		bto[t] = (int32_t)off;
		li[t] = t;
	}
	off++;
	/* tokens .. logit_idx (the argmax slot is output), then the tables */
	if (cudaMemcpyAsync(cb->d_meta, h, 4 * (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice, cb->stream) ||
	    cudaMemcpyAsync(cb->d_meta + 5 * T, bt, off * sizeof(int32_t), cudaMemcpyHostToDevice, cb->stream))
		return -EIO;
	/* Steps too long to split their attention (never a graph's) take it by tiles. */
	cb->n_tiles = 0;
	if (cb->attn_tiled && !pad && b->n_tokens > ATTN_SPLIT_MAX_T) {
		cb->n_tiles = attn_tiles(b, cb->htiles.p);
		if (cudaMemcpyAsync(cb->d_tiles, cb->htiles.p, ((size_t)cb->n_tiles + 1) * sizeof(int32_t),
				    cudaMemcpyHostToDevice, cb->stream))
			return -EIO;
	}
	return 0;
}

/*
 * Queues a forward pass of T staged tokens and nl logit rows on the
 * stream, then (want_argmax) the device argmax of each row and its copy
 * into the pinned staging. Nothing here synchronizes: a graph capture
 * records exactly this.
 */
static int queue_forward(struct cuda_backend *cb, int T, int nl, bool want_argmax)
{
	const struct kern_hparams *hp = &cb->w->hp;
	const int Tm = cb->base.max_batch_tokens, E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
	const int qd = hp->n_head * hd, kvd = hp->n_head_kv * hd, ldqkv = qd + 2 * kvd, V = hp->n_vocab;
	const int bs = cb->base.kv_block_size, nt = norm_threads(E);
	cudaStream_t st = cb->stream;
	step_meta m = {cb->d_meta, cb->d_meta + Tm, cb->d_meta + 2 * Tm, cb->d_meta + 3 * Tm, cb->d_meta + 5 * Tm};
	int32_t *d_argmax = cb->d_meta + 4 * Tm;

	k_embed<<<T, nt, 0, st>>>(cb->emb, m.tokens, cb->x, E);
	for (int l = 0; l < hp->n_layer; l++) {
		const struct cu_layer *L = &cb->layers[l];
		__half *kc = cb->kc + (size_t)l * cb->layer_stride, *vc = cb->vc + (size_t)l * cb->layer_stride;
		k_add_rmsnorm<<<T, nt, 0, st>>>(cb->x, l ? cb->tmp : NULL, NULL, L->attn_norm, cb->xb, E, hp->norm_eps);
		if (gemm(cb, &L->wqkv, cb->xb, T, cb->qkv, ldqkv))
			return -EIO;
		k_qkv_post<<<T, 256, 0, st>>>(cb->qkv, ldqkv, L->bq, L->bk, L->bv, cb->inv_freq, m, kc, vc, hp->n_head,
					     hp->n_head_kv, hd, bs, cb->blk_stride, hp->rope_type == KERN_ROPE_NEOX);
		attention(cb->qkv, ldqkv, m, kc, vc, hp->n_head, hp->n_head_kv, hd, bs, cb->blk_stride, cb->att, qd, T,
			  cb->attn_split ? cb->attn_part : NULL, T > ATTN_SPLIT_MAX_T ? cb->d_tiles : NULL,
			  T > ATTN_SPLIT_MAX_T ? cb->n_tiles : 0, st);
		if (gemm(cb, &L->wo, cb->att, T, cb->tmp, E))
			return -EIO;
		k_add_rmsnorm<<<T, nt, 0, st>>>(cb->x, cb->tmp, NULL, L->ffn_norm, cb->xb, E, hp->norm_eps);
		if (gemm(cb, &L->wgu, cb->xb, T, cb->gu, 2 * F))
			return -EIO;
		int64_t n = (int64_t)T * F;
		int blocks = (int)((n + 255) / 256 < 65535 ? (n + 255) / 256 : 65535);
		k_swiglu<<<blocks, 256, 0, st>>>(cb->gu, cb->h, F, n);
		if (gemm(cb, &L->wdown, cb->h, T, cb->tmp, E))
			return -EIO;
	}
	if (nl > 0) {
		k_add_rmsnorm<<<nl, nt, 0, st>>>(cb->x, cb->tmp, m.logit_idx, cb->out_norm, cb->xb, E, hp->norm_eps);
		if (gemm(cb, &cb->output, cb->xb, nl, cb->logits, V))
			return -EIO;
		if (want_argmax) {
			k_argmax<<<nl, 1024, 0, st>>>(cb->logits, V, d_argmax);
			if (cudaMemcpyAsync(cb->h_meta + 4 * Tm, d_argmax, (size_t)nl * 4, cudaMemcpyDeviceToHost, st))
				return -EIO;
		}
	}
	return 0;
}

/* The graph of bucket T: NULL the first time T is seen (that step runs
 * eagerly, as a warm-up), captured the second time; NULL when capture
 * fails (graphs are then off for this backend, and the log says why). */
static cudaGraphExec_t graph_get(struct cuda_backend *cb, int T)
{
	int slot = -1;
	for (int i = 0; i < cb->n_graphs && slot < 0; i++)
		if (cb->graph[i].T == T)
			slot = i;
	if (slot < 0) {
		if (cb->n_graphs < GRAPH_SLOTS) {
			cb->graph[cb->n_graphs].T = T;
			cb->graph[cb->n_graphs++].exec = NULL;
		}
		return NULL;
	}
	if (cb->graph[slot].exec)
		return cb->graph[slot].exec;
	cudaGraph_t g = NULL;
	cudaGraphExec_t x = NULL;
	cudaError_t e = cudaStreamBeginCapture(cb->stream, cudaStreamCaptureModeThreadLocal);
	if (e == cudaSuccess) {
		int rc = queue_forward(cb, T, T, true);
		e = cudaStreamEndCapture(cb->stream, &g);
		if (e == cudaSuccess && rc)
			e = cudaErrorUnknown;
		if (e == cudaSuccess)
			e = cudaGraphInstantiate(&x, g, 0);
		if (g)
			cudaGraphDestroy(g);
	}
	if (e != cudaSuccess) {
		(void)cudaGetLastError(); /* clear it: the step goes on without a graph */
		fprintf(stderr, "cuda backend: capturing a %d-token step as a CUDA graph failed (%s): graphs off\n", T,
			cudaGetErrorString(e));
		cb->graphs_off = true;
		return NULL;
	}
	cb->graph[slot].exec = x;
	return x;
}

static int cuda_run(struct cuda_backend *cb, const struct kern_batch *b, float *logits, int32_t *argmax,
		    struct kern_top *top)
{
	const int Tm = cb->base.max_batch_tokens, V = cb->w->hp.n_vocab, nl = b->n_logits;
	cudaStream_t st = cb->stream;
	if (cudaSetDevice(cb->device) != cudaSuccess)
		return -EIO;
	(void)cudaGetLastError(); /* only this step's errors below */
	int pad = graph_bucket(cb, b);
	nvtxRangePushA("cuda: stage batch");
	int rc = stage_batch(cb, b, pad);
	nvtxRangePop();
	if (rc)
		return rc;
	cudaGraphExec_t gx = pad ? graph_get(cb, pad) : NULL;
	cudaError_t e = cudaSuccess;
	if (gx) {
		nvtxRangePushA("cuda: launch graph");
		e = cudaGraphLaunch(gx, st);
		nvtxRangePop();
		if (e != cudaSuccess) {
			/* Not launched: graphs off, this step eagerly. */
			fprintf(stderr, "cuda backend: launching a %d-token CUDA graph failed (%s): graphs off\n", pad,
				cudaGetErrorString(e));
			(void)cudaGetLastError();
			cb->graphs_off = true;
			graphs_clear(cb);
			gx = NULL;
			e = cudaSuccess;
		}
	}
	if (!gx) {
		/* Host ranges cover the launches; nsys shows the kernels they queue under them. */
		nvtxRangePushA(argmax ? "cuda: queue step + argmax" : "cuda: queue step");
		int T = pad ? pad : b->n_tokens;
		rc = queue_forward(cb, T, pad ? pad : nl, argmax != NULL);
		nvtxRangePop();
	}
	if (e == cudaSuccess && !rc && top && nl > 0) {
		/* after the graph or the eager queue: the first nl logits rows are the batch's */
		nvtxRangePushA("cuda: queue top candidates");
		k_top<<<nl, TOP_THREADS, 0, st>>>(cb->logits, V, cb->d_top);
		e = cudaMemcpyAsync(cb->htop.p, cb->d_top, (size_t)nl * sizeof(struct kern_top), cudaMemcpyDeviceToHost,
				    st);
		nvtxRangePop();
	}
	if (e == cudaSuccess && !rc && logits && nl > 0)
		e = cudaMemcpyAsync(logits, cb->logits, (size_t)nl * V * 4, cudaMemcpyDeviceToHost, st);
	/* Always wait: whatever was queued reads the pinned staging the next step rewrites. */
	nvtxRangePushA("cuda: wait for the step");
	cudaError_t e2 = cudaStreamSynchronize(st);
	nvtxRangePop();
	if (e == cudaSuccess)
		e = e2;
	if (e == cudaSuccess)
		e = cudaGetLastError();
	if (e != cudaSuccess || rc) {
		fprintf(stderr, "cuda backend: step failed: %s\n", rc ? "a cuBLAS call failed" : cudaGetErrorString(e));
		return -EIO;
	}
	if (argmax && nl > 0)
		memcpy(argmax, cb->h_meta + 4 * Tm, (size_t)nl * 4);
	if (top && nl > 0)
		memcpy(top, cb->htop.p, (size_t)nl * sizeof(struct kern_top));
	return 0;
}

static int cuda_step(kern_backend_t *be, const struct kern_batch *b, float *logits)
{
	return cuda_run((struct cuda_backend *)be, b, logits, NULL, NULL);
}

static int cuda_step_argmax(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax)
{
	return cuda_run((struct cuda_backend *)be, b, logits, argmax, NULL);
}

static int cuda_step_top(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax,
			 struct kern_top *top)
{
	return cuda_run((struct cuda_backend *)be, b, logits, argmax, top);
}

/* Rows of the last step's logits (still on the device until the next
 * step) for the rows its candidates cannot serve. */
static int cuda_fetch_rows(kern_backend_t *be, const int32_t *rows, int32_t n, float *logits)
{
	struct cuda_backend *cb = (struct cuda_backend *)be;
	const size_t V = (size_t)cb->w->hp.n_vocab;
	if (cudaSetDevice(cb->device) != cudaSuccess)
		return -EIO;
	nvtxRangePushA("cuda: fetch logits rows");
	cudaError_t e = cudaSuccess;
	for (int32_t i = 0; i < n && e == cudaSuccess; i++)
		e = cudaMemcpyAsync(logits + (size_t)rows[i] * V, cb->logits + (size_t)rows[i] * V, V * 4,
				    cudaMemcpyDeviceToHost, cb->stream);
	cudaError_t e2 = cudaStreamSynchronize(cb->stream);
	nvtxRangePop();
	if (e != cudaSuccess || e2 != cudaSuccess) {
		(void)cudaGetLastError();
		fprintf(stderr, "cuda backend: fetching logits rows failed: %s\n",
			cudaGetErrorString(e != cudaSuccess ? e : e2));
		return -EIO;
	}
	return 0;
}

static int cuda_kv_copy(kern_backend_t *be, int32_t src, int32_t dst)
{
	struct cuda_backend *cb = (struct cuda_backend *)be;
	size_t n = cb->blk_stride * sizeof(__half);
	if (src == dst)
		return 0;
	if (cudaSetDevice(cb->device) != cudaSuccess)
		return -EIO;
	for (int l = 0; l < cb->w->hp.n_layer; l++) {
		size_t base = (size_t)l * cb->layer_stride;
		if (cudaMemcpyAsync(cb->kc + base + (size_t)dst * cb->blk_stride, cb->kc + base + (size_t)src * cb->blk_stride,
				    n, cudaMemcpyDeviceToDevice, cb->stream) ||
		    cudaMemcpyAsync(cb->vc + base + (size_t)dst * cb->blk_stride, cb->vc + base + (size_t)src * cb->blk_stride,
				    n, cudaMemcpyDeviceToDevice, cb->stream))
			return -EIO;
	}
	return cudaStreamSynchronize(cb->stream) == cudaSuccess ? 0 : -EIO;
}

static size_t cuda_mem_bytes(const kern_backend_t *be)
{
	const struct cuda_backend *cb = (const struct cuda_backend *)be;
	return 2 * cb->kv_bytes + cb->scratch_bytes + (size_t)cb->base.max_batch_tokens * sizeof(struct kern_top);
}

static void free_mat(struct cu_mat *m)
{
	cudaFree(m->d);
	cudaFree(m->q);
	m->d = NULL;
	m->q = NULL;
}

static void cuda_close(kern_backend_t *be)
{
	struct cuda_backend *cb = (struct cuda_backend *)be;
	cudaSetDevice(cb->device);
	if (cb->stream)
		cudaStreamSynchronize(cb->stream);
	graphs_clear(cb);
	if (cb->layers) {
		for (int l = 0; l < cb->w->hp.n_layer; l++) {
			struct cu_layer *L = &cb->layers[l];
			cudaFree(L->attn_norm);
			cudaFree(L->ffn_norm);
			cudaFree(L->bq);
			cudaFree(L->bk);
			cudaFree(L->bv);
			free_mat(&L->wqkv);
			free_mat(&L->wo);
			free_mat(&L->wgu);
			free_mat(&L->wdown);
		}
		free(cb->layers);
	}
	if (cb->output.d != cb->emb)
		free_mat(&cb->output);
	else
		cudaFree(cb->output.q); /* tied: only the quantized copy is its own */
	cudaFree(cb->emb);
	cudaFree(cb->out_norm);
	cudaFree(cb->inv_freq);
	cudaFree(cb->kc);
	cudaFree(cb->vc);
	cudaFree(cb->x);
	cudaFree(cb->d_meta);
	hbuf_free(&cb->hm);
	cudaFree(cb->d_top);
	hbuf_free(&cb->htop);
	cudaFree(cb->d_tiles);
	hbuf_free(&cb->htiles);
	free(cb->seq_start);
	lt_free(cb);
	if (cb->blas)
		cublasDestroy(cb->blas); /* before its workspace */
	cudaFree(cb->workspace);
	if (cb->stream)
		cudaStreamDestroy(cb->stream);
	free(cb);
}

static const struct kern_backend_ops cuda_ops = {
	.name = "cuda",
	.step = cuda_step,
	.step_argmax = cuda_step_argmax,
	.step_top = cuda_step_top,
	.fetch_rows = cuda_fetch_rows,
	.kv_copy = cuda_kv_copy,
	.mem_bytes = cuda_mem_bytes,
	.close = cuda_close,
};

extern "C" kern_backend_t *locus_cuda_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
					    char *errbuf, size_t errlen)
{
	const struct kern_hparams *hp = &w->hp;
	float *f32 = NULL;
	uint16_t *stage = NULL;
	int64_t stage_rows = 0;
	int rc = 0;
	if (cfg->kv_block_size < 1 || cfg->kv_block_size > 256 || cfg->n_kv_blocks < 1 || cfg->max_batch_tokens < 1 ||
	    cfg->max_batch_tokens > (1 << 16)) {
		snprintf(errbuf, errlen, "cuda backend: block size 1..256, at least one KV block and a batch of 1..65536 tokens are required");
		return NULL;
	}
	if (hp->head_dim % WARP || hp->head_dim > ATTN_MAX_HD || hp->n_head % hp->n_head_kv || hp->n_rot != hp->head_dim) {
		snprintf(errbuf, errlen, "cuda backend: head size %d is not a multiple of 32 up to %d (or the heads do not group)",
			 hp->head_dim, ATTN_MAX_HD);
		return NULL;
	}
	struct cuda_backend *cb = (struct cuda_backend *)calloc(1, sizeof(*cb));
	if (!cb) {
		snprintf(errbuf, errlen, "cuda backend: out of memory");
		return NULL;
	}
	cb->base.ops = &cuda_ops;
	cb->base.w = w;
	cb->base.n_kv_blocks = cfg->n_kv_blocks;
	cb->base.kv_block_size = cfg->kv_block_size;
	cb->base.max_batch_tokens = cfg->max_batch_tokens;
	cb->w = w;
	cb->device = cfg->gpu < 0 ? 0 : cfg->gpu;
	cb->numa_node = cfg->numa_node;
	const int T = cfg->max_batch_tokens, E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
	const size_t qd = (size_t)hp->n_head * hd, kvd = (size_t)hp->n_head_kv * hd;
	int n_dev = 0;
	CU(cudaGetDeviceCount(&n_dev), "no usable GPU");
	if (cb->device >= n_dev) {
		snprintf(errbuf, errlen, "cuda backend: GPU %d does not exist (%d found)", cb->device, n_dev);
		goto err;
	}
	CU(cudaSetDevice(cb->device), "cudaSetDevice");
	CU(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking), "stream");
	if (cublasCreate(&cb->blas) != CUBLAS_STATUS_SUCCESS) {
		cb->blas = NULL;
		snprintf(errbuf, errlen, "cuda backend: cublasCreate failed");
		goto err;
	}
	/* One workspace for cuBLAS and cuBLASLt: safe because every product runs on cb->stream. */
	CU(cudaMalloc(&cb->workspace, GEMM_WORKSPACE), "GEMM workspace");
	if (cublasSetStream(cb->blas, cb->stream) || cublasSetWorkspace(cb->blas, cb->workspace, GEMM_WORKSPACE) ||
	    cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH)) {
		snprintf(errbuf, errlen, "cuda backend: cuBLAS set-up failed");
		goto err;
	}
	lt_init(cb);

	/* Weights. */
	{
		int64_t kmax = E > F ? E : F;
		if ((int64_t)qd > kmax)
			kmax = (int64_t)qd;
		stage_rows = ((int64_t)8 << 20) / (2 * kmax); /* 8 MiB of bf16 rows per copy */
		if (stage_rows < 1)
			stage_rows = 1;
		f32 = (float *)malloc((size_t)kmax * 4);
		if (!f32 || cudaHostAlloc(&stage, (size_t)stage_rows * kmax * 2, cudaHostAllocDefault) != cudaSuccess) {
			stage = NULL;
			snprintf(errbuf, errlen, "cuda backend: out of host memory for weight staging");
			goto err;
		}
		cb->layers = (struct cu_layer *)calloc((size_t)hp->n_layer, sizeof(*cb->layers));
		if (!cb->layers) {
			snprintf(errbuf, errlen, "cuda backend: out of memory");
			goto err;
		}
		struct cu_mat emb = {};
		const struct kern_tensor *pe[1] = {&w->tok_embd}, *po[1] = {&w->output};
		rc = upload_mat(&emb, pe, 1, f32, stage, stage_rows, cb->stream, &cb->weight_bytes);
		cb->emb = emb.d;
		if (!rc && w->output.data == w->tok_embd.data && w->output.type == w->tok_embd.type)
			cb->output = emb; /* tied: one copy */
		else if (!rc)
			rc = upload_mat(&cb->output, po, 1, f32, stage, stage_rows, cb->stream, &cb->weight_bytes);
		cb->out_norm = upload_vec(&w->output_norm, E, f32, &rc);
		for (int l = 0; l < hp->n_layer && !rc; l++) {
			const struct kern_layer *Lw = &w->layers[l];
			struct cu_layer *L = &cb->layers[l];
			const struct kern_tensor *qkv[3] = {&Lw->wq, &Lw->wk, &Lw->wv}, *o[1] = {&Lw->wo},
						 *gu[2] = {&Lw->w_gate, &Lw->w_up}, *dn[1] = {&Lw->w_down};
			rc = upload_mat(&L->wqkv, qkv, 3, f32, stage, stage_rows, cb->stream, &cb->weight_bytes);
			if (!rc)
				rc = upload_mat(&L->wo, o, 1, f32, stage, stage_rows, cb->stream, &cb->weight_bytes);
			if (!rc)
				rc = upload_mat(&L->wgu, gu, 2, f32, stage, stage_rows, cb->stream, &cb->weight_bytes);
			if (!rc)
				rc = upload_mat(&L->wdown, dn, 1, f32, stage, stage_rows, cb->stream, &cb->weight_bytes);
			L->attn_norm = upload_vec(&Lw->attn_norm, E, f32, &rc);
			L->ffn_norm = upload_vec(&Lw->ffn_norm, E, f32, &rc);
			L->bq = upload_vec(&Lw->bq, (int64_t)qd, f32, &rc);
			L->bk = upload_vec(&Lw->bk, (int64_t)kvd, f32, &rc);
			L->bv = upload_vec(&Lw->bv, (int64_t)kvd, f32, &rc);
		}
		if (rc) {
			snprintf(errbuf, errlen, "cuda backend: cannot place the weights on GPU %d (%s)", cb->device,
				 rc == -ENOMEM ? "out of device memory" : "copy failed");
			goto err;
		}
	}

	/* RoPE frequencies: the CPU backend's own function. */
	{
		double inv[ATTN_MAX_HD / 2];
		if (host.rope_inv_freq(w, inv, "cuda backend", errbuf, errlen))
			goto err;
		CU(cudaMalloc(&cb->inv_freq, (size_t)hd / 2 * sizeof(double)), "rope table");
		CU(cudaMemcpy(cb->inv_freq, inv, (size_t)hd / 2 * sizeof(double), cudaMemcpyHostToDevice), "rope table");
	}

	/* KV cache. */
	cb->blk_stride = (size_t)hp->n_head_kv * cfg->kv_block_size * hd;
	cb->layer_stride = cb->blk_stride * ((size_t)cfg->n_kv_blocks + 1); /* + the spare block */
	cb->spare_block = cfg->n_kv_blocks;
	{
		const char *g = getenv("LOCUS_CUDA_GRAPHS"), *a = getenv("LOCUS_CUDA_ATTN_SPLIT"),
			   *ti = getenv("LOCUS_CUDA_ATTN_TILED"), *gb = getenv("LOCUS_CUDA_GEMV_BF16");
		cb->gemv_bf16 = gb && !strcmp(gb, "1");
		cb->graphs_off = g && !strcmp(g, "0");
		cb->attn_split = !(a && !strcmp(a, "0"));
		cb->attn_tiled = !(ti && !strcmp(ti, "0")) && attn_tile_ok(hd);
	}
	cb->kv_bytes = cb->layer_stride * (size_t)hp->n_layer * sizeof(__half);
	if (cudaMalloc(&cb->kc, cb->kv_bytes) != cudaSuccess || cudaMalloc(&cb->vc, cb->kv_bytes) != cudaSuccess) {
		snprintf(errbuf, errlen, "cuda backend: cannot allocate %zu MiB of KV cache on GPU %d", 2 * cb->kv_bytes >> 20,
			 cb->device);
		goto err;
	}
	/* NaN everywhere (0xffff is an f16 NaN): a position read before it is
	 * written poisons the output instead of passing as zero. */
	CU(cudaMemset(cb->kc, 0xff, cb->kv_bytes), "KV poison");
	CU(cudaMemset(cb->vc, 0xff, cb->kv_bytes), "KV poison");

	/* Scratch: one allocation carved in 256-byte aligned pieces. */
	{
		const size_t V = (size_t)hp->n_vocab, Tz = (size_t)T;
		const size_t Ts = Tz < ATTN_SPLIT_MAX_T ? Tz : ATTN_SPLIT_MAX_T;
		size_t f4[] = {Tz * E, Tz * E, Tz * (qd + 2 * kvd), Tz * 2 * F, Tz * V, /* x tmp qkv gu logits */
			       Ts * hp->n_head * ATTN_SPLITS * ((size_t)hd + 2)};   /* attn_part */
		size_t b2[] = {Tz * E, Tz * qd, Tz * F};                                  /* xb att h */
		size_t total = 0;
		for (size_t i = 0; i < 6; i++)
			total += (f4[i] * 4 + 255) & ~(size_t)255;
		for (size_t i = 0; i < 3; i++)
			total += (b2[i] * 2 + 255) & ~(size_t)255;
		uint8_t *p = NULL;
		if (cudaMalloc(&p, total) != cudaSuccess) {
			snprintf(errbuf, errlen, "cuda backend: cannot allocate %zu MiB of scratch on GPU %d", total >> 20,
				 cb->device);
			goto err;
		}
		cb->scratch_bytes = total;
		cb->x = (float *)p; /* the allocation's base: cuda_close frees it */
		CU(cudaMemset(p, 0xff, total), "scratch poison"); /* NaN, as the KV cache */
		float **fp[] = {&cb->x, &cb->tmp, &cb->qkv, &cb->gu, &cb->logits, &cb->attn_part};
		bf16 **bp[] = {&cb->xb, &cb->att, &cb->h};
		for (size_t i = 0; i < 6; i++) {
			*fp[i] = (float *)p;
			p += (f4[i] * 4 + 255) & ~(size_t)255;
		}
		for (size_t i = 0; i < 3; i++) {
			*bp[i] = (bf16 *)p;
			p += (b2[i] * 2 + 255) & ~(size_t)255;
		}
		/* Batch description: 5 arrays of T, then the block tables (a pool's
		 * worth to start with; grown if a batch's tables are longer). */
		cb->seq_start = (size_t *)malloc(Tz * sizeof(size_t));
		if (!cb->seq_start || meta_reserve(cb, 5 * Tz + (size_t)cfg->n_kv_blocks) ||
		    hbuf_alloc(&cb->htop, Tz * sizeof(struct kern_top), cb->numa_node) ||
		    hbuf_alloc(&cb->htiles, (Tz + 1) * sizeof(int32_t), cb->numa_node)) {
			snprintf(errbuf, errlen, "cuda backend: cannot allocate the batch buffers (pinned host memory)");
			goto err;
		}
		CU(cudaMalloc(&cb->d_top, Tz * sizeof(struct kern_top)), "cudaMalloc (top candidates)");
		CU(cudaMalloc(&cb->d_tiles, (Tz + 1) * sizeof(int32_t)), "cudaMalloc (attention tiles)");
	}

	/* Quantized rows for the decode GEMV, last: optional, they only get
	 * what the weights, KV cache and scratch left (LOCUS_CUDA_GEMV=0: none). */
	{
		const char *ge = getenv("LOCUS_CUDA_GEMV");
		int qrc = ge && !strcmp(ge, "0") ? -ENOENT : 0;
		size_t qbytes = 0;
		int nq = 0;
		const struct kern_tensor *po[1] = {&w->output};
		if (qrc == 0)
			qrc = upload_q(&cb->output, po, 1, &qbytes); /* a tied output gets its own quantized copy */
		nq += qrc == 0;
		for (int l = 0; l < hp->n_layer && qrc >= 0; l++) {
			const struct kern_layer *Lw = &w->layers[l];
			struct cu_layer *L = &cb->layers[l];
			const struct kern_tensor *qkv[3] = {&Lw->wq, &Lw->wk, &Lw->wv}, *o[1] = {&Lw->wo},
						 *gu[2] = {&Lw->w_gate, &Lw->w_up}, *dn[1] = {&Lw->w_down};
			struct {
				struct cu_mat *m;
				const struct kern_tensor *const *p;
				int n;
			} js[4] = {{&L->wqkv, qkv, 3}, {&L->wo, o, 1}, {&L->wgu, gu, 2}, {&L->wdown, dn, 1}};
			for (int j = 0; j < 4 && qrc >= 0; j++) {
				qrc = upload_q(js[j].m, js[j].p, js[j].n, &qbytes);
				nq += qrc == 0;
			}
		}
		if (qrc == -ENOMEM)
			fprintf(stderr, "cuda backend: device full after %d quantized matrices (%.1f MiB): the rest decode "
					"through cuBLAS on bf16\n", nq, qbytes / 1048576.0);
		cb->q_bytes = qbytes;
		cb->n_q = nq;
	}
	free(f32);
	f32 = NULL;
	cudaFreeHost(stage);
	stage = NULL;
	/* The poisons and uploads ran on the legacy stream, which the step
	 * stream (non-blocking) does not wait for. */
	CU(cudaDeviceSynchronize(), "set-up");
	{
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		cudaDeviceProp pr;
		cudaGetDeviceProperties(&pr, cb->device);
		fprintf(stderr,
			"cuda backend: GPU %d %s: weights %.1f MiB (bf16) + %.1f MiB quantized for the decode GEMV "
			"(%d matrices), KV cache %.1f MiB, scratch %.1f MiB; "
			"device memory %.0f of %.0f MiB used; host staging %s\n",
			cb->device, pr.name, cb->weight_bytes / 1048576.0, cb->q_bytes / 1048576.0, cb->n_q,
			2 * cb->kv_bytes / 1048576.0,
			cb->scratch_bytes / 1048576.0, (tot - fr) / 1048576.0, tot / 1048576.0,
			cb->hm.bound ? "bound to the GPU's node and registered" :
			cb->hm.registered ? "registered, not bound (binding refused)" : "from cudaHostAlloc");
	}
	return &cb->base;
err:
	free(f32);
	if (stage)
		cudaFreeHost(stage);
	cuda_close(&cb->base);
	return NULL;
}

/* ---- single-kernel runs for tools/cuda-check ---- */

static float bf16_bits_to_f32(uint16_t b)
{
	uint32_t u = (uint32_t)b << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* LCU_QKV_POST of locus_cuda_kernel_check, on the current device: one
 * cache block per token, large enough for any position below 4096. */
static int qkv_post_check(const struct lcu_check_args *a, char *errbuf, size_t errlen)
{
	const int T = a->rows, NH = a->n_head, NKV = a->n_kv, HD = a->hd, BSZ = 4096;
	const int ld = (NH + 2 * NKV) * HD, qd = NH * HD, kvd = NKV * HD;
	const size_t blk_stride = (size_t)NKV * BSZ * HD, cache_n = (size_t)T * blk_stride;
	float *dqkv = NULL, *db = NULL;
	double *dinv = NULL;
	__half *dk = NULL, *dv = NULL, *hh = NULL;
	int32_t *hmeta = NULL, *dmeta = NULL;
	int rc = -EIO;
	if (NH < 1 || NKV < 1 || NH % NKV || HD % 2 || a->n != ld || !a->pos || !a->inv_freq) {
		snprintf(errbuf, errlen, "cuda-check qkv_post: n = (n_head + 2 n_kv) hd, hd even, positions and frequencies");
		return -EINVAL;
	}
	for (int t = 0; t < T; t++)
		if (a->pos[t] < 0 || a->pos[t] >= BSZ) {
			snprintf(errbuf, errlen, "cuda-check qkv_post: positions 0..%d", BSZ - 1);
			return -EINVAL;
		}
	hmeta = (int32_t *)malloc((size_t)5 * T * 4);
	hh = (__half *)malloc((size_t)T * kvd * sizeof(__half));
	if (!hmeta || !hh) {
		snprintf(errbuf, errlen, "cuda-check: out of memory");
		goto err;
	}
	/* meta: tokens (unused), pos, bt_off = t, logit_idx (unused), bt[t] = t */
	for (int t = 0; t < T; t++) {
		hmeta[t] = 0;
		hmeta[T + t] = a->pos[t];
		hmeta[2 * T + t] = t;
		hmeta[3 * T + t] = t;
		hmeta[4 * T + t] = t;
	}
	CU(cudaMalloc(&dmeta, (size_t)5 * T * 4), "cudaMalloc");
	CU(cudaMemcpy(dmeta, hmeta, (size_t)5 * T * 4, cudaMemcpyHostToDevice), "copy in");
	CU(cudaMalloc(&dqkv, (size_t)T * ld * 4), "cudaMalloc");
	CU(cudaMemcpy(dqkv, a->x, (size_t)T * ld * 4, cudaMemcpyHostToDevice), "copy in");
	CU(cudaMalloc(&db, (size_t)ld * 4), "cudaMalloc");
	if (a->bq)
		CU(cudaMemcpy(db, a->bq, (size_t)qd * 4, cudaMemcpyHostToDevice), "copy in");
	if (a->bk)
		CU(cudaMemcpy(db + qd, a->bk, (size_t)kvd * 4, cudaMemcpyHostToDevice), "copy in");
	if (a->bv)
		CU(cudaMemcpy(db + qd + kvd, a->bv, (size_t)kvd * 4, cudaMemcpyHostToDevice), "copy in");
	CU(cudaMalloc(&dinv, (size_t)HD / 2 * sizeof(double)), "cudaMalloc");
	CU(cudaMemcpy(dinv, a->inv_freq, (size_t)HD / 2 * sizeof(double), cudaMemcpyHostToDevice), "copy in");
	CU(cudaMalloc(&dk, cache_n * sizeof(__half)), "cudaMalloc");
	CU(cudaMalloc(&dv, cache_n * sizeof(__half)), "cudaMalloc");
	CU(cudaMemset(dk, 0xff, cache_n * sizeof(__half)), "poison");
	CU(cudaMemset(dv, 0xff, cache_n * sizeof(__half)), "poison");
	{
		step_meta m = {dmeta, dmeta + T, dmeta + 2 * T, dmeta + 3 * T, dmeta + 4 * T};
		k_qkv_post<<<T, 256>>>(dqkv, ld, a->bq ? db : NULL, a->bk ? db + qd : NULL, a->bv ? db + qd + kvd : NULL,
				      dinv, m, dk, dv, NH, NKV, HD, BSZ, blk_stride, a->neox);
	}
	CU(cudaGetLastError(), "launch");
	CU(cudaDeviceSynchronize(), "kernel");
	/* q in place; k and v from each token's slot of the cache */
	for (int t = 0; t < T; t++) {
		CU(cudaMemcpy(a->y + (size_t)t * ld, dqkv + (size_t)t * ld, (size_t)qd * 4, cudaMemcpyDeviceToHost),
		   "copy out");
		for (int c = 0; c < 2; c++) {
			for (int h = 0; h < NKV; h++)
				CU(cudaMemcpy(hh + (size_t)h * HD,
					      (c ? dv : dk) + (size_t)t * blk_stride + (size_t)h * BSZ * HD +
						      (size_t)a->pos[t] * HD,
					      (size_t)HD * sizeof(__half), cudaMemcpyDeviceToHost),
				   "copy out");
			for (int i = 0; i < kvd; i++)
				a->y[(size_t)t * ld + qd + (size_t)c * kvd + i] = __half2float(hh[i]);
		}
	}
	rc = 0;
err:
	free(hmeta);
	free(hh);
	cudaFree(dmeta);
	cudaFree(dqkv);
	cudaFree(db);
	cudaFree(dinv);
	cudaFree(dk);
	cudaFree(dv);
	return rc;
}

/* LCU_ATTN of locus_cuda_kernel_check, on the current device. */
static int attn_check(const struct lcu_check_args *a, char *errbuf, size_t errlen)
{
	const int T = a->rows, NH = a->n_head, NKV = a->n_kv, HD = a->hd, BSZ = a->bs;
	const int ld = (NH + 2 * NKV) * HD;
	const size_t blk_stride = (size_t)NKV * BSZ * HD, cache_n = (size_t)a->n_blocks * blk_stride;
	float *hq = NULL, *dqkv = NULL, *part = NULL;
	__half *hk = NULL, *dk = NULL, *dv = NULL;
	int32_t *hmeta = NULL, *dmeta = NULL;
	uint16_t *hy = NULL;
	bf16 *dy = NULL;
	int rc = -EIO, n_tiles = 0;
	if (NH < 1 || NKV < 1 || NH % NKV || HD % WARP || HD > ATTN_MAX_HD || a->n != NH * HD || BSZ < 1 ||
	    a->n_blocks < 1 || a->n_bt < 1 || !a->pos || !a->bt_off || !a->bt || !a->k || !a->v ||
	    (a->attn == LCU_ATTN_SPLIT && T > ATTN_SPLIT_MAX_T) || (a->attn == LCU_ATTN_TILED && !attn_tile_ok(HD))) {
		snprintf(errbuf, errlen, "cuda-check attention: n = n_head * hd, hd a multiple of 32 up to %d (tiled: %d), "
			 "n_head a multiple of n_kv, split steps of at most %d tokens", ATTN_MAX_HD, ATTN_TILE_MAX_HD,
			 ATTN_SPLIT_MAX_T);
		return -EINVAL;
	}
	for (int t = 0; t < T; t++) {
		if (a->pos[t] < 0 || a->bt_off[t] < 0 || a->bt_off[t] + a->pos[t] / BSZ >= a->n_bt) {
			snprintf(errbuf, errlen, "cuda-check attention: token %d's position is outside its block table", t);
			return -EINVAL;
		}
	}
	for (int i = 0; i < a->n_bt; i++)
		if (a->bt[i] < 0 || a->bt[i] >= a->n_blocks) {
			snprintf(errbuf, errlen, "cuda-check attention: block table entry %d is not a block", i);
			return -EINVAL;
		}
	/* q into the q part of fused rows; the k and v parts are not read */
	hq = (float *)calloc((size_t)T * ld, 4);
	hk = (__half *)malloc(cache_n * sizeof(__half));
	hmeta = (int32_t *)malloc(((size_t)4 * T + a->n_bt + T + 1) * 4);
	hy = (uint16_t *)malloc((size_t)T * a->n * 2);
	if (!hq || !hk || !hmeta || !hy) {
		snprintf(errbuf, errlen, "cuda-check: out of memory");
		goto err;
	}
	for (int t = 0; t < T; t++)
		memcpy(hq + (size_t)t * ld, a->x + (size_t)t * a->n, (size_t)a->n * 4);
	CU(cudaMalloc(&dqkv, (size_t)T * ld * 4), "cudaMalloc");
	CU(cudaMemcpy(dqkv, hq, (size_t)T * ld * 4, cudaMemcpyHostToDevice), "copy in");
	CU(cudaMalloc(&dk, cache_n * sizeof(__half)), "cudaMalloc");
	CU(cudaMalloc(&dv, cache_n * sizeof(__half)), "cudaMalloc");
	for (size_t i = 0; i < cache_n; i++)
		hk[i] = __float2half_rn(a->k[i]);
	CU(cudaMemcpy(dk, hk, cache_n * sizeof(__half), cudaMemcpyHostToDevice), "copy in");
	for (size_t i = 0; i < cache_n; i++)
		hk[i] = __float2half_rn(a->v[i]);
	CU(cudaMemcpy(dv, hk, cache_n * sizeof(__half), cudaMemcpyHostToDevice), "copy in");
	{
		/* meta: pos, bt_off, tokens and logit_idx (unused: pos again), the
		 * tables, then the tiles */
		int32_t *pos = hmeta, *bto = hmeta + T, *bt = hmeta + 4 * T, *tl = bt + a->n_bt;
		memcpy(pos, a->pos, (size_t)T * 4);
		memcpy(bto, a->bt_off, (size_t)T * 4);
		memcpy(hmeta + 2 * T, a->pos, (size_t)T * 4);
		memcpy(hmeta + 3 * T, a->pos, (size_t)T * 4);
		memcpy(bt, a->bt, (size_t)a->n_bt * 4);
		for (int t = 0; t < T; t++)
			if (t == 0 || bto[t] != bto[t - 1] || pos[t] != pos[t - 1] + 1 || t - tl[n_tiles - 1] == ATTN_TILE_Q)
				tl[n_tiles++] = t;
		tl[n_tiles] = T;
		size_t mn = (size_t)4 * T + a->n_bt + n_tiles + 1;
		CU(cudaMalloc(&dmeta, mn * 4), "cudaMalloc");
		CU(cudaMemcpy(dmeta, hmeta, mn * 4, cudaMemcpyHostToDevice), "copy in");
	}
	CU(cudaMalloc(&dy, (size_t)T * a->n * 2), "cudaMalloc");
	CU(cudaMemset(dy, 0xff, (size_t)T * a->n * 2), "poison");
	if (a->attn == LCU_ATTN_SPLIT)
		CU(cudaMalloc(&part, (size_t)ATTN_SPLIT_MAX_T * NH * ATTN_SPLITS * (HD + 2) * 4), "cudaMalloc");
	{
		step_meta m = {dmeta + 2 * T, dmeta, dmeta + T, dmeta + 3 * T, dmeta + 4 * T};
		attention(dqkv, ld, m, dk, dv, NH, NKV, HD, BSZ, blk_stride, dy, a->n, T, part,
			  a->attn == LCU_ATTN_TILED ? dmeta + 4 * T + a->n_bt : NULL,
			  a->attn == LCU_ATTN_TILED ? n_tiles : 0, 0);
	}
	CU(cudaGetLastError(), "launch");
	CU(cudaDeviceSynchronize(), "kernel");
	CU(cudaMemcpy(hy, dy, (size_t)T * a->n * 2, cudaMemcpyDeviceToHost), "copy out");
	for (size_t i = 0; i < (size_t)T * a->n; i++)
		a->y[i] = bf16_bits_to_f32(hy[i]);
	rc = 0;
err:
	free(hq);
	free(hk);
	free(hmeta);
	free(hy);
	cudaFree(dqkv);
	cudaFree(dk);
	cudaFree(dv);
	cudaFree(dmeta);
	cudaFree(dy);
	cudaFree(part);
	return rc;
}

extern "C" int locus_cuda_kernel_check(const struct lcu_check_args *a, char *errbuf, size_t errlen)
{
	const size_t rows = (size_t)a->rows, n = (size_t)a->n;
	size_t in_n = a->kernel == LCU_SWIGLU ? rows * 2 * n : a->kernel == LCU_GEMV ? (size_t)a->T * n : rows * n;
	size_t out_n = a->kernel == LCU_GEMV ? (size_t)a->T * rows
		       : a->kernel == LCU_TOP  ? rows * (sizeof(struct kern_top) / 4)
					       : rows * n;
	uint8_t *dq = NULL;
	uint16_t *xb16 = NULL;
	float *dx = NULL, *dw = NULL;
	void *dy = NULL;
	uint16_t *hy = NULL;
	int rc = -EIO;
	if (rows < 1 || n < 1 || rows > 65535 ||
	    (a->kernel == LCU_GEMV && (a->T < 1 || a->T > GEMV_MAX_T || !gemv_any(a->qtype) || n % gemv_block(a->qtype) ||
				       !a->qw || a->q_row_bytes != gemv_row_bytes(a->qtype, n)))) {
		snprintf(errbuf, errlen, "cuda-check: rows 1..65535, n >= 1; GEMV: T 1..%d, Q8_0/Q4_0/Q4_1/BF16 (n a multiple "
			 "of 32) or Q4_K/Q6_K (of 256), rows of the type's size", GEMV_MAX_T);
		return -EINVAL;
	}
	{
		/* No GPU (or a driver too old for this runtime) is -ENODEV, a skip;
		 * anything else that goes wrong is a failure. */
		cudaError_t e = cudaSetDevice(a->gpu);
		if (e == cudaSuccess)
			e = cudaFree(NULL); /* creates the context */
		if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInvalidDevice) {
			snprintf(errbuf, errlen, "no usable GPU %d: %s", a->gpu, cudaGetErrorString(e));
			return -ENODEV;
		}
		CU(e, "cudaSetDevice");
	}
	if (a->kernel == LCU_ATTN)
		return attn_check(a, errbuf, errlen);
	if (a->kernel == LCU_QKV_POST)
		return qkv_post_check(a, errbuf, errlen);
	CU(cudaMalloc(&dx, in_n * 4), "cudaMalloc");
	CU(cudaMemcpy(dx, a->x, in_n * 4, cudaMemcpyHostToDevice), "copy in");
	CU(cudaMalloc(&dy, out_n * 4), "cudaMalloc");
	CU(cudaMemset(dy, 0xff, out_n * 4), "poison");
	switch (a->kernel) {
	case LCU_RMSNORM:
		CU(cudaMalloc(&dw, n * 4), "cudaMalloc");
		CU(cudaMemcpy(dw, a->w, n * 4, cudaMemcpyHostToDevice), "copy in");
		k_add_rmsnorm<<<(unsigned)rows, norm_threads((int)n)>>>(dx, NULL, NULL, dw, (bf16 *)dy, (int)n, a->eps);
		break;
	case LCU_SWIGLU:
		k_swiglu<<<64, 256>>>(dx, (bf16 *)dy, (int)n, (int64_t)(rows * n));
		break;
	case LCU_ARGMAX:
		k_argmax<<<(unsigned)rows, 1024>>>(dx, (int)n, (int32_t *)dy);
		break;
	case LCU_TOP:
		k_top<<<(unsigned)rows, TOP_THREADS>>>(dx, (int)n, (struct kern_top *)dy);
		break;
	case LCU_ATTN:
	case LCU_QKV_POST:
		break; /* attn_check, qkv_post_check, above */
	case LCU_GEMV:
		/* x as bf16 (in place of the f32 copy), the rows as they are */
		xb16 = (uint16_t *)malloc(in_n * 2);
		if (!xb16) {
			snprintf(errbuf, errlen, "cuda-check: out of memory");
			goto err;
		}
		for (size_t i = 0; i < in_n; i++)
			xb16[i] = f32_to_bf16_bits(a->x[i]);
		CU(cudaMemcpy(dx, xb16, in_n * 2, cudaMemcpyHostToDevice), "copy in");
		CU(cudaMalloc(&dq, rows * a->q_row_bytes), "cudaMalloc");
		CU(cudaMemcpy(dq, a->qw, rows * a->q_row_bytes, cudaMemcpyHostToDevice), "copy in");
		gemv_q(a->qtype, dq, a->q_row_bytes, (int)rows, (int)n, (const bf16 *)dx, a->T, (float *)dy, (int)rows, 0);
		break;
	}
	CU(cudaGetLastError(), "launch");
	CU(cudaDeviceSynchronize(), "kernel");
	if (a->kernel == LCU_ARGMAX) {
		CU(cudaMemcpy(a->ids, dy, rows * 4, cudaMemcpyDeviceToHost), "copy out");
	} else if (a->kernel == LCU_TOP) {
		CU(cudaMemcpy(a->top, dy, rows * sizeof(struct kern_top), cudaMemcpyDeviceToHost), "copy out");
	} else if (a->kernel == LCU_GEMV) {
		CU(cudaMemcpy(a->y, dy, out_n * 4, cudaMemcpyDeviceToHost), "copy out");
	} else {
		hy = (uint16_t *)malloc(rows * n * 2);
		if (!hy) {
			snprintf(errbuf, errlen, "cuda-check: out of memory");
			goto err;
		}
		CU(cudaMemcpy(hy, dy, rows * n * 2, cudaMemcpyDeviceToHost), "copy out");
		for (size_t i = 0; i < rows * n; i++)
			a->y[i] = bf16_bits_to_f32(hy[i]);
	}
	rc = 0;
err:
	free(hy);
	free(xb16);
	cudaFree(dq);
	cudaFree(dx);
	cudaFree(dw);
	cudaFree(dy);
	return rc;
}

/* ---- ceilings, measured in the same run as what is compared to them ---- */

/* Random bf16 in [-1, 1): GEMMs run slower on random data than on
 * constants, so the ceiling is measured on what real weights look like.
 * Read as f16 or f32 the same bits stay finite (kbench reuses the pool). */
__global__ void k_fill_bf16(bf16 *p, size_t n, uint32_t seed)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		uint32_t h = (uint32_t)i * 0x9e3779b1u ^ seed;
		h ^= h >> 16;
		h *= 0x7feb352du;
		h ^= h >> 15;
		h *= 0x846ca68bu;
		h ^= h >> 16;
		p[i] = __float2bfloat16((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
	}
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

extern "C" int locus_cuda_ceilings(int gpu, struct lcu_ceilings *out, char *errbuf, size_t errlen)
{
	const size_t bytes = (size_t)1 << 30;
	const int N = 8192, reps = 9;
	void *a = NULL, *b = NULL;
	cudaEvent_t e0 = NULL, e1 = NULL;
	cublasHandle_t h = NULL;
	float ms[reps];
	int rc = -EIO;
	memset(out, 0, sizeof(*out));
	CU(cudaSetDevice(gpu), "cudaSetDevice");
	{
		cudaDeviceProp pr;
		CU(cudaGetDeviceProperties(&pr, gpu), "properties");
		snprintf(out->name, sizeof(out->name), "%s", pr.name);
	}
	CU(cudaMalloc(&a, bytes), "cudaMalloc");
	CU(cudaMalloc(&b, bytes), "cudaMalloc");
	CU(cudaMemset(a, 1, bytes), "memset");
	CU(cudaEventCreate(&e0), "event");
	CU(cudaEventCreate(&e1), "event");
	for (int i = -2; i < reps; i++) { /* two warm-up copies */
		CU(cudaEventRecord(e0), "record");
		CU(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice), "copy");
		CU(cudaEventRecord(e1), "record");
		CU(cudaEventSynchronize(e1), "sync");
		if (i >= 0)
			CU(cudaEventElapsedTime(&ms[i], e0, e1), "elapsed");
	}
	qsort(ms, reps, sizeof(float), cmp_float);
	out->copy_gbps = 2.0 * bytes / (ms[reps / 2] * 1e-3) / 1e9; /* bytes read + written */
	/* bf16 GEMM N x N x N, f32 accumulate: 3 * 128 MiB of the two buffers */
	if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
		h = NULL;
		snprintf(errbuf, errlen, "cuda ceilings: cublasCreate failed");
		goto err;
	}
	{
		const float one = 1, zero = 0;
		bf16 *A = (bf16 *)a, *B = A + (size_t)N * N;
		float *C = (float *)b;
		k_fill_bf16<<<1024, 256>>>(A, (size_t)2 * N * N, 12345u);
		CU(cudaDeviceSynchronize(), "fill");
		for (int i = -2; i < reps; i++) {
			CU(cudaEventRecord(e0), "record");
			if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, N, N, &one, A, CUDA_R_16BF, N, B, CUDA_R_16BF, N, &zero,
					 C, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
				snprintf(errbuf, errlen, "cuda ceilings: GEMM failed");
				goto err;
			}
			CU(cudaEventRecord(e1), "record");
			CU(cudaEventSynchronize(e1), "sync");
			if (i >= 0)
				CU(cudaEventElapsedTime(&ms[i], e0, e1), "elapsed");
		}
		qsort(ms, reps, sizeof(float), cmp_float);
		out->gemm_tflops = 2.0 * N * N * N / (ms[reps / 2] * 1e-3) / 1e12;
	}
	rc = 0;
err:
	if (h)
		cublasDestroy(h);
	if (e0)
		cudaEventDestroy(e0);
	if (e1)
		cudaEventDestroy(e1);
	cudaFree(a);
	cudaFree(b);
	return rc;
}

/* ---- kbench: the backend's kernel paths on Llama-3-8B shapes ---- */

struct kb_timer {
	cudaEvent_t e0, e1;
	float ms[64];
	int n;
};

/* Median of n timed runs after 3 warm-ups; run(i) gets the run index so
 * it can rotate over copies of its inputs (L2 does not keep them). */
template <typename F> static float kb_time(struct kb_timer *t, int n, F run)
{
	for (int i = -3; i < n; i++) {
		cudaEventRecord(t->e0);
		run(i < 0 ? 0 : i);
		cudaEventRecord(t->e1);
		cudaEventSynchronize(t->e1);
		if (i >= 0)
			cudaEventElapsedTime(&t->ms[i], t->e0, t->e1);
	}
	qsort(t->ms, (size_t)n, sizeof(float), cmp_float);
	return t->ms[n / 2];
}

extern "C" int locus_cuda_kbench(int gpu, int quick, char *errbuf, size_t errlen)
{
	/* Llama-3-8B */
	const int E = 4096, F = 14336, NH = 32, NKV = 8, HD = 128, V = 128256, BS = 16;
	const int runs = quick ? 9 : 25;
	struct lcu_ceilings c;
	if (locus_cuda_ceilings(gpu, &c, errbuf, errlen))
		return -EIO;
	printf("kbench: %s; ceilings measured now: copy %.0f GB/s (read + write), bf16 GEMM %.1f TFLOP/s\n", c.name,
	       c.copy_gbps, c.gemm_tflops);
	printf("times: median of %d runs after 3 warm-ups (CUDA events); GEMM weights rotate over copies past the L2\n"
	       "cache (the o and qkv shapes fit in it alone); the element-wise rows at small T are L2-resident, so their\n"
	       "GB/s can exceed the copy bandwidth\n",
	       runs);
	struct kb_timer t;
	cudaEventCreate(&t.e0);
	cudaEventCreate(&t.e1);
	cublasHandle_t h = NULL;
	void *ws = NULL;
	uint8_t *pool = NULL;
	const size_t pool_bytes = (size_t)3 << 30; /* weight copies, activations, KV */
	int rc = -EIO;
	CU(cudaSetDevice(gpu), "cudaSetDevice");
	CU(cudaMalloc(&pool, pool_bytes), "cudaMalloc (3 GiB)");
	k_fill_bf16<<<4096, 256>>>((bf16 *)pool, pool_bytes / 2, 777u); /* finite read as bf16, f16 or f32 */
	CU(cudaDeviceSynchronize(), "fill");
	CU(cudaMalloc(&ws, GEMM_WORKSPACE), "workspace");
	if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS || cublasSetWorkspace(h, ws, GEMM_WORKSPACE)) {
		snprintf(errbuf, errlen, "kbench: cuBLAS set-up failed");
		goto err;
	}
	{
		/* ---- GEMM: y[T][rows] = x[T][k] . W^T, weights rotated over >= 1 GiB ---- */
		struct {
			const char *name;
			int k, rows;
		} sh[] = {{"qkv 4096->6144", E, 6144}, {"o 4096->4096", E, E}, {"gate|up 4096->28672", E, 2 * F},
			  {"down 14336->4096", F, E}, {"logits 4096->128256", E, V}};
		const int Ts[] = {1, 2, 4, 8, 16, 128, 512, 2048};
		printf("\nGEMM (cuBLAS, bf16 in, f32 accumulate and out)\n%-22s %6s %9s %9s %8s %9s %8s\n", "shape", "T",
		       "us", "TFLOP/s", "of peak", "GB/s w", "of copy");
		uint8_t *act = pool + ((size_t)2 << 30); /* 1 GiB: x and y */
		for (size_t si = 0; si < sizeof(sh) / sizeof(sh[0]); si++) {
			size_t wbytes = (size_t)sh[si].k * sh[si].rows * 2;
			int copies = (int)(((size_t)2 << 30) / wbytes);
			copies = copies < 1 ? 1 : copies > 64 ? 64 : copies;
			for (size_t ti = 0; ti < sizeof(Ts) / sizeof(Ts[0]); ti++) {
				int T = Ts[ti];
				if ((size_t)T * sh[si].k * 2 + (size_t)T * sh[si].rows * 4 > ((size_t)1 << 30))
					continue;
				const bf16 *x = (const bf16 *)act;
				float *y = (float *)(act + (((size_t)T * sh[si].k * 2 + 255) & ~(size_t)255));
				cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
				float ms = kb_time(&t, runs, [&](int i) {
					const float one = 1, zero = 0;
					const bf16 *w = (const bf16 *)(pool + (size_t)(i % copies) * wbytes);
					cublasStatus_t s2 = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh[si].rows, T, sh[si].k, &one,
									w, CUDA_R_16BF, sh[si].k, x, CUDA_R_16BF, sh[si].k, &zero,
									y, CUDA_R_32F, sh[si].rows, CUBLAS_COMPUTE_32F,
									CUBLAS_GEMM_DEFAULT);
					if (s2 != CUBLAS_STATUS_SUCCESS)
						st = s2;
				});
				if (st != CUBLAS_STATUS_SUCCESS) {
					snprintf(errbuf, errlen, "kbench: GEMM %s T=%d failed (%d)", sh[si].name, T, (int)st);
					goto err;
				}
				double tf = 2.0 * sh[si].k * sh[si].rows * T / (ms * 1e-3) / 1e12;
				double gb = (double)wbytes / (ms * 1e-3) / 1e9;
				printf("%-22s %6d %9.1f %9.1f %7.0f%% %9.0f %7.0f%%\n", sh[si].name, T, ms * 1e3, tf,
				       100 * tf / c.gemm_tflops, gb, 100 * gb / c.copy_gbps);
			}
		}

		/* ---- fused dequantizing GEMV (decode on quantized weights) ---- */
		printf("\nGEMV on quantized rows (decode path for Q8_0, Q4_0, Q4_1, Q4_K, Q6_K up to T = %d; BF16: the\n"
		       "LOCUS_CUDA_GEMV_BF16=1 path; bytes: the weights as stored; compare with the GEMM rows above at the same T)\n"
		       "%-28s %4s %9s %9s %8s\n", GEMV_MAX_T, "type, shape", "T", "us", "GB/s w", "of copy");
		{
			const uint32_t qt[] = {KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K,
					       KERN_TYPE_BF16};
			const char *qn[] = {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "BF16"};
			for (int qi = 0; qi < 6; qi++)
				for (size_t si = 0; si < sizeof(sh) / sizeof(sh[0]); si++) {
					size_t rb = gemv_row_bytes(qt[qi], (size_t)sh[si].k), wbytes = rb * sh[si].rows;
					int copies = (int)(((size_t)2 << 30) / wbytes);
					copies = copies < 1 ? 1 : copies > 64 ? 64 : copies;
					const bf16 *x = (const bf16 *)act;
					float *y = (float *)(act + ((size_t)8 * sh[si].k * 2 + 255) / 256 * 256);
					for (int T : {1, 2, 4, 8}) {
						float ms = kb_time(&t, runs, [&](int i) {
							gemv_q(qt[qi], pool + (size_t)(i % copies) * wbytes, rb, sh[si].rows, sh[si].k, x,
							       T, y, sh[si].rows, 0);
						});
						double gb = (double)wbytes / (ms * 1e-3) / 1e9;
						char nm[48];
						snprintf(nm, sizeof(nm), "%s %s", qn[qi], sh[si].name);
						printf("%-28s %4d %9.1f %9.0f %7.0f%%\n", nm, T, ms * 1e3, gb, 100 * gb / c.copy_gbps);
					}
				}
		}
		CU(cudaGetLastError(), "GEMV launch");

		/* ---- element-wise kernels and attention, on T tokens ---- */
		printf("\nkernels (bytes: what each must read and write at least)\n%-34s %9s %9s %8s\n", "kernel", "us",
		       "GB/s", "of copy");
		uint8_t *p = pool;
		auto carve = [&](size_t bytes) {
			uint8_t *r = p;
			p += (bytes + 255) & ~(size_t)255;
			return r;
		};
		const int Tmax = 2048;
		float *x = (float *)carve((size_t)Tmax * E * 4), *add = (float *)carve((size_t)Tmax * E * 4);
		float *wn = (float *)carve((size_t)E * 4), *qkv = (float *)carve((size_t)Tmax * (E + 2 * NKV * HD) * 4);
		float *gu = (float *)carve((size_t)Tmax * 2 * F * 4), *logits = (float *)carve((size_t)64 * V * 4);
		bf16 *xb = (bf16 *)carve((size_t)Tmax * F * 2);
		double *inv = (double *)carve(HD / 2 * 8);
		int32_t *meta = (int32_t *)carve(((size_t)5 * Tmax + 8192) * 4);
		const int ctx_max = 8192, nblk = ctx_max / BS * 16; /* 16 sequences of up to 8192 */
		const size_t blk_stride = (size_t)NKV * BS * HD;
		__half *kc = (__half *)carve((size_t)nblk * blk_stride * 2), *vc = (__half *)carve((size_t)nblk * blk_stride * 2);
		float *part = (float *)carve((size_t)ATTN_SPLIT_MAX_T * NH * ATTN_SPLITS * (HD + 2) * 4);
		struct kern_top *tops = (struct kern_top *)carve((size_t)64 * sizeof(struct kern_top));
		int32_t *tiles = (int32_t *)carve(((size_t)Tmax + 1) * 4);
		if ((size_t)(p - pool) > pool_bytes) {
			snprintf(errbuf, errlen, "kbench: the 3 GiB pool is too small");
			goto err;
		}
		/* rms weights, rope table: real values; qkv/x: the memset pattern */
		{
			float ones[E];
			double invh[HD / 2];
			for (int i = 0; i < E; i++)
				ones[i] = 1.0f;
			for (int i = 0; i < HD / 2; i++)
				invh[i] = pow(500000.0, -2.0 * i / HD);
			CU(cudaMemcpy(wn, ones, sizeof(ones), cudaMemcpyHostToDevice), "copy");
			CU(cudaMemcpy(inv, invh, sizeof(invh), cudaMemcpyHostToDevice), "copy");
		}
		/* meta for S sequences of n_pos positions each, one token each (decode)
		 * or one sequence of T tokens at positions 0..T-1 (prefill) */
		auto set_meta = [&](int T, int S, int ctx) -> int {
			int32_t *hm = (int32_t *)malloc(((size_t)5 * Tmax + 8192) * 4);
			if (!hm)
				return -1;
			int per = (ctx + BS - 1) / BS;
			for (int i = 0; i < T; i++) {
				int s = S > 1 ? i : 0;
				hm[i] = 1;                                     /* token */
				hm[Tmax + i] = S > 1 ? ctx - 1 : ctx - T + i;  /* pos */
				hm[2 * Tmax + i] = s * per;                    /* bt_off */
				hm[3 * Tmax + i] = i;                          /* logit_idx */
			}
			for (int s = 0; s < (S > 1 ? S : 1); s++)
				for (int j = 0; j < per; j++)
					hm[5 * Tmax + s * per + j] = (s * per + j) % nblk;
			int r = cudaMemcpy(meta, hm, ((size_t)5 * Tmax + 8192) * 4, cudaMemcpyHostToDevice) == cudaSuccess ? 0 : -1;
			free(hm);
			return r;
		};
		step_meta m = {meta, meta + Tmax, meta + 2 * Tmax, meta + 3 * Tmax, meta + 5 * Tmax};
		const int ld = E + 2 * NKV * HD;
		for (int T : {1, 16, 512}) {
			if (set_meta(T, 1, T)) /* one sequence, positions 0..T-1 */
				goto err;
			float ms = kb_time(&t, runs, [&](int) {
				k_add_rmsnorm<<<T, norm_threads(E)>>>(x, add, NULL, wn, xb, E, 1e-5f);
			});
			double by = (double)T * E * (4 + 4 + 4 + 2);
			printf("add + rmsnorm T=%-4d               %9.2f %9.0f %7.0f%%\n", T, ms * 1e3, by / (ms * 1e-3) / 1e9,
			       100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
			ms = kb_time(&t, runs, [&](int) { k_swiglu<<<65535 < (T * F + 255) / 256 ? 65535 : (T * F + 255) / 256, 256>>>(gu, xb, F, (int64_t)T * F); });
			by = (double)T * F * (8 + 2);
			printf("swiglu T=%-4d                      %9.2f %9.0f %7.0f%%\n", T, ms * 1e3, by / (ms * 1e-3) / 1e9,
			       100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
			ms = kb_time(&t, runs, [&](int) {
				k_qkv_post<<<T, 256>>>(qkv, ld, NULL, NULL, NULL, inv, m, kc, vc, NH, NKV, HD, BS, blk_stride, 0);
			});
			by = (double)T * (ld * 4 + (double)E * 4 + 2.0 * NKV * HD * 2);
			printf("bias + rope + KV write T=%-4d      %9.2f %9.0f %7.0f%%\n", T, ms * 1e3, by / (ms * 1e-3) / 1e9,
			       100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
		}
		for (int T : {1, 16, 64}) {
			float ms = kb_time(&t, runs, [&](int) { k_argmax<<<T, 1024>>>(logits, V, meta + 4 * Tmax); });
			double by = (double)T * V * 4;
			printf("argmax over %d, T=%-4d          %9.2f %9.0f %7.0f%%\n", V, T, ms * 1e3, by / (ms * 1e-3) / 1e9,
			       100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
		}
		{
			/* top-64 candidates on random rows (a constant row would put
			 * every key in one histogram bin); bytes: the rows read once,
			 * of the seven reads the kernel makes */
			float *hl = (float *)malloc((size_t)64 * V * 4);
			if (!hl) {
				snprintf(errbuf, errlen, "kbench: out of memory");
				goto err;
			}
			uint32_t sd = 12345;
			for (size_t i = 0; i < (size_t)64 * V; i++) {
				sd = sd * 1664525u + 1013904223u;
				hl[i] = (float)(sd >> 8) / 16777216.0f * 20.0f - 10.0f;
			}
			cudaError_t e = cudaMemcpy(logits, hl, (size_t)64 * V * 4, cudaMemcpyHostToDevice);
			free(hl);
			CU(e, "kbench logits");
			for (int T : {1, 16, 64}) {
				float ms = kb_time(&t, runs, [&](int) { k_top<<<T, TOP_THREADS>>>(logits, V, tops); });
				double by = (double)T * V * 4;
				printf("top-%d over %d, T=%-4d          %9.2f %9.0f %7.0f%%\n", KERN_TOP_K, V, T, ms * 1e3,
				       by / (ms * 1e-3) / 1e9, 100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
			}
		}
		/* attention: decode (S sequences, one token each, context ctx) and prefill (one sequence) */
		for (int S : {1, 16}) {
			for (int ctx : {512, 2048, 8192}) {
				if (set_meta(S, S, ctx))
					goto err;
				double by = (double)S * ctx * NKV * HD * 2 * 2; /* K and V, f16, read once per sequence */
				for (int split = 1; split >= 0; split--) {
					float ms = kb_time(&t, runs, [&](int) {
						attention(qkv, ld, m, kc, vc, NH, NKV, HD, BS, blk_stride, xb, E, S,
							  split ? part : NULL, NULL, 0, 0);
					});
					printf("attention decode S=%-2d ctx=%-5d %s %9.2f %9.0f %7.0f%%\n", S, ctx,
					       split ? "split" : "whole", ms * 1e3, by / (ms * 1e-3) / 1e9,
					       100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
				}
			}
		}
		for (int T : {128, 512, 2048}) {
			if (set_meta(T, 1, T))
				goto err;
			/* one sequence at positions 0..T-1: tiles of ATTN_TILE_Q */
			int nt = (T + ATTN_TILE_Q - 1) / ATTN_TILE_Q;
			{
				int32_t ht[Tmax / ATTN_TILE_Q + 2];
				for (int i = 0; i < nt; i++)
					ht[i] = i * ATTN_TILE_Q;
				ht[nt] = T;
				CU(cudaMemcpy(tiles, ht, ((size_t)nt + 1) * 4, cudaMemcpyHostToDevice), "kbench tiles");
			}
			for (int tiled = 1; tiled >= 0; tiled--) {
				float ms = kb_time(&t, quick ? 3 : 9, [&](int) {
					attention(qkv, ld, m, kc, vc, NH, NKV, HD, BS, blk_stride, xb, E, T, NULL,
						  tiled ? tiles : NULL, tiled ? nt : 0, 0);
				});
				double fl = 4.0 * NH * HD * (double)T * (T + 1) / 2; /* QK^T and PV, causal */
				printf("attention prefill T=%-5d %-9s%9.1f %8.1f TFLOP/s, %.1f%% of the GEMM peak\n", T,
				       tiled ? "tiled" : "per-token", ms * 1e3, fl / (ms * 1e-3) / 1e12,
				       100 * fl / (ms * 1e-3) / 1e12 / c.gemm_tflops);
			}
		}
		CU(cudaGetLastError(), "kernel launch");
		CU(cudaDeviceSynchronize(), "kernels");
	}
	rc = 0;
err:
	if (h)
		cublasDestroy(h);
	cudaFree(ws);
	cudaFree(pool);
	cudaEventDestroy(t.e0);
	cudaEventDestroy(t.e1);
	return rc;
}
