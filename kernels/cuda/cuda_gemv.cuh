/*
 * cuda_gemv.cuh: the GEMVs of decode steps, on quantized rows
 * (dequantizing, and with int8 activations) and on bf16 rows. Included by
 * cuda_kernels.cuh only (it needs that file's helpers).
 */
#ifndef LOCUS_KERNELS_CUDA_CUDA_GEMV_CUH
#define LOCUS_KERNELS_CUDA_CUDA_GEMV_CUH

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

/*
 * The end of a GEMV warp: its R rows' sums over the warp, for T <= NT
 * tokens, into y[t][row0 + r] (rows past rows skipped), or with GLU (R = 2:
 * gate, up) swiglu of the two into h[t][row0].
 */
template <int R, int NT, bool GLU>
__device__ __forceinline__ void gemv_store(float (&acc)[R][NT], int lane, int row0, int rows, int T, float *y, int ldy,
					   bf16 *h)
{
#pragma unroll
	for (int t = 0; t < NT; t++) {
		float a[R];
#pragma unroll
		for (int r = 0; r < R; r++)
			a[r] = warp_sum(acc[r][t]);
		if (lane != 0 || t >= T)
			continue;
		if (GLU) {
			h[(size_t)t * ldy + row0] = __float2bfloat16(swiglu1(a[0], a[R - 1]));
		} else {
#pragma unroll
			for (int r = 0; r < R; r++)
				if (row0 + r < rows)
					y[(size_t)t * ldy + row0 + r] = a[r];
		}
	}
}

/*
 * GLU (the gate|up product of a decode step, its SwiGLU fused): the matrix
 * has 2 rows rows, gate then up; the warp takes gate row i and up row
 * rows + i and writes h[t][i] = swiglu(gate, up) (bf16, row stride ldy)
 * instead of y: one kernel and one trip of the 2 x 14336 products through
 * memory less per layer. Up to GEMV_GLU_MAX_T tokens.
 */
#define GEMV_GLU_MAX_T 2

/* The first bytes (up to 4 KiB) of a warp's row into L2: issued before
 * pdl_wait, they overlap the previous kernel's tail. */
__device__ __forceinline__ void gemv_prefetch_row(const uint8_t *wr, size_t row_bytes, int lane)
{
	if ((size_t)lane * 128 < row_bytes)
		prefetch_l2(wr + (size_t)lane * 128);
}

template <uint32_t TYPE, int NT, bool GLU>
static __global__ void k_gemv_q(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
				int ldy, bf16 *h)
{
	static_assert(!GLU || GEMV_ROWS == 2, "a GLU warp takes one gate and one up row");
	pdl_trigger();
	const int lane = threadIdx.x % WARP, sub = lane & 3;
	const int wid = blockIdx.x * GEMV_WARPS + threadIdx.x / WARP;
	const int row0 = GLU ? wid : wid * GEMV_ROWS;
	if (row0 >= rows)
		return; /* the whole warp */
	const uint8_t *wr[GEMV_ROWS];
	bool ok[GEMV_ROWS];
#pragma unroll
	for (int r = 0; r < GEMV_ROWS; r++) {
		ok[r] = GLU || row0 + r < rows;
		wr[r] = w + (size_t)(GLU ? row0 + r * rows : row0 + r) * row_bytes;
		if (ok[r])
			gemv_prefetch_row(wr[r], row_bytes, lane);
	}
	pdl_wait();
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
			if (ok[r]) {
				float v[8];
				dequant8<TYPE>(wr[r], b, sub, v);
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
	gemv_store<GEMV_ROWS, NT, GLU>(acc, lane, row0, rows, T, y, ldy, h);
}

/*
 * The GEMV on bf16 rows (the backend's own copies), for T <= NT tokens: a
 * warp per row (GLU: a gate row and its up row), each lane 8 weights (16
 * bytes) per load, U loads per row in flight before any is used, so a
 * warp keeps U x 512 bytes of the row on their way (a long row, such as
 * down's 14336, is otherwise a chain of round trips); x comes from L1, the
 * weights stream past it (ld.global.cs). The first U loads are issued
 * before pdl_wait. k a multiple of 8.
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

/* acc[t] += the 8 weights w . x[t][c * 8 ..] */
template <int NT>
__device__ __forceinline__ void gemv16_dot(uint4 w, const bf16 *x, int k, int c, int T, float (&acc)[NT])
{
	float wf[8];
	bf16x8(w, wf);
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

template <int NT, int U, bool GLU>
static __global__ void __launch_bounds__(GEMV16_WARPS *WARP)
	k_gemv_bf16(const bf16 *w, int rows, int k, const bf16 *x, int T, float *y, int ldy, bf16 *h)
{
	constexpr int R = GLU ? 2 : 1;
	pdl_trigger();
	const int lane = threadIdx.x % WARP, row = blockIdx.x * GEMV16_WARPS + threadIdx.x / WARP;
	if (row >= rows)
		return; /* the whole warp */
	const uint4 *wr[R];
#pragma unroll
	for (int r = 0; r < R; r++)
		wr[r] = (const uint4 *)(w + (size_t)(row + r * rows) * k);
	const int n8 = k / 8;
	float acc[R][NT];
#pragma unroll
	for (int r = 0; r < R; r++)
#pragma unroll
		for (int t = 0; t < NT; t++)
			acc[r][t] = 0;
	int c = lane;
	uint4 wv[R][U];
	const bool body = c + (U - 1) * WARP < n8;
	if (body) /* the weights: no kernel writes them, so before the wait */
#pragma unroll
		for (int r = 0; r < R; r++)
#pragma unroll
			for (int u = 0; u < U; u++)
				wv[r][u] = __ldcs(wr[r] + c + u * WARP);
	pdl_wait();
	if (body) {
		for (;;) {
#pragma unroll
			for (int r = 0; r < R; r++)
#pragma unroll
				for (int u = 0; u < U; u++)
					gemv16_dot<NT>(wv[r][u], x, k, c + u * WARP, T, acc[r]);
			c += U * WARP;
			if (c + (U - 1) * WARP >= n8)
				break;
#pragma unroll
			for (int r = 0; r < R; r++)
#pragma unroll
				for (int u = 0; u < U; u++)
					wv[r][u] = __ldcs(wr[r] + c + u * WARP);
		}
	}
	for (; c < n8; c += WARP)
#pragma unroll
		for (int r = 0; r < R; r++)
			gemv16_dot<NT>(__ldcs(wr[r] + c), x, k, c, T, acc[r]);
	gemv_store<R, NT, GLU>(acc, lane, row, rows, T, y, ldy, h);
}

static inline void gemv_bf16_launch(const bf16 *w, int rows, int k, const bf16 *x, int T, float *y, int ldy, bf16 *h,
				    cudaStream_t st, bool pdl)
{
	const dim3 grid((unsigned)((rows + GEMV16_WARPS - 1) / GEMV16_WARPS)), th(GEMV16_WARPS * WARP);
	if (h) { /* T <= GEMV_GLU_MAX_T; as many loads in flight per warp as without */
		if (T <= 1)
			launch(k_gemv_bf16<1, 4, true>, grid, th, 0, st, pdl, w, rows, k, x, T, y, ldy, h);
		else
			launch(k_gemv_bf16<2, 1, true>, grid, th, 0, st, pdl, w, rows, k, x, T, y, ldy, h);
	} else if (T <= 1)
		launch(k_gemv_bf16<1, 8, false>, grid, th, 0, st, pdl, w, rows, k, x, T, y, ldy, h);
	else if (T <= 2)
		launch(k_gemv_bf16<2, 2, false>, grid, th, 0, st, pdl, w, rows, k, x, T, y, ldy, h);
	else if (T <= 4)
		launch(k_gemv_bf16<4, 2, false>, grid, th, 0, st, pdl, w, rows, k, x, T, y, ldy, h);
	else
		launch(k_gemv_bf16<8, 2, false>, grid, th, 0, st, pdl, w, rows, k, x, T, y, ldy, h);
}

template <uint32_t TYPE>
static inline void gemv_launch(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
			       int ldy, bf16 *h, cudaStream_t st, bool pdl)
{
	const dim3 grid((unsigned)(h ? (rows + GEMV_WARPS - 1) / GEMV_WARPS
				     : (rows + GEMV_WARPS * GEMV_ROWS - 1) / (GEMV_WARPS * GEMV_ROWS))),
		th(GEMV_WARPS * WARP);
	if (h) { /* T <= GEMV_GLU_MAX_T */
		if (T <= 1)
			launch(k_gemv_q<TYPE, 1, true>, grid, th, 0, st, pdl, w, row_bytes, rows, k, x, T, y, ldy, h);
		else
			launch(k_gemv_q<TYPE, 2, true>, grid, th, 0, st, pdl, w, row_bytes, rows, k, x, T, y, ldy, h);
	} else if (T <= 1)
		launch(k_gemv_q<TYPE, 1, false>, grid, th, 0, st, pdl, w, row_bytes, rows, k, x, T, y, ldy, h);
	else if (T <= 2)
		launch(k_gemv_q<TYPE, 2, false>, grid, th, 0, st, pdl, w, row_bytes, rows, k, x, T, y, ldy, h);
	else if (T <= 4)
		launch(k_gemv_q<TYPE, 4, false>, grid, th, 0, st, pdl, w, row_bytes, rows, k, x, T, y, ldy, h);
	else
		launch(k_gemv_q<TYPE, 8, false>, grid, th, 0, st, pdl, w, row_bytes, rows, k, x, T, y, ldy, h);
}

/*
 * The fused GEMV for type qtype: y[t][0..rows) = x[t] . w^T, or with h
 * (GLU: w holds 2 rows rows, gate then up) h[t][0..rows) = swiglu, bf16,
 * both of row stride ldy. False when the type has none, or h and T past
 * GEMV_GLU_MAX_T.
 */
static inline bool gemv_q(uint32_t qtype, const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T,
			  float *y, int ldy, cudaStream_t st, bf16 *h = nullptr, bool pdl = false)
{
	if (h && T > GEMV_GLU_MAX_T)
		return false;
	switch (qtype) {
	case KERN_TYPE_Q8_0:
		gemv_launch<KERN_TYPE_Q8_0>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_Q4_0:
		gemv_launch<KERN_TYPE_Q4_0>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_Q4_1:
		gemv_launch<KERN_TYPE_Q4_1>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_Q4_K:
		gemv_launch<KERN_TYPE_Q4_K>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_Q6_K:
		gemv_launch<KERN_TYPE_Q6_K>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_BF16:
		(void)row_bytes; /* k * 2 */
		gemv_bf16_launch((const bf16 *)w, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	default:
		return false;
	}
}

/*
 * The GEMV with int8 activations, for Q8_0, Q4_0 and Q4_1 rows at 1-2
 * tokens (the backend's default for them; LOCUS_CUDA_GEMV_X8=0: k_gemv_q).
 * A block first quantizes the T rows of x into shared memory as the CPU
 * backend quantizes its activations (kern_act_quantize_row_ref:
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

template <uint32_t TYPE, int NT, bool GLU>
static __global__ void __launch_bounds__(GEMVX_WARPS *WARP)
	k_gemv_x8(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y, int ldy, bf16 *h)
{
	static_assert(!GLU || GEMVX_ROWS == 2, "a GLU warp takes one gate and one up row");
	extern __shared__ __align__(16) uint8_t gx_smem[];
	pdl_trigger();
	const int lane = threadIdx.x % WARP;
	const int wid = blockIdx.x * GEMVX_WARPS + threadIdx.x / WARP;
	const int row0 = GLU ? wid : wid * GEMVX_ROWS;
	const uint8_t *wr[GEMVX_ROWS];
	bool ok[GEMVX_ROWS];
#pragma unroll
	for (int r = 0; r < GEMVX_ROWS; r++) {
		ok[r] = row0 < rows && (GLU || row0 + r < rows);
		wr[r] = w + (size_t)(GLU ? row0 + r * rows : row0 + r) * row_bytes;
		if (ok[r])
			gemv_prefetch_row(wr[r], row_bytes, lane);
	}
	pdl_wait();
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
			if (!ok[r])
				break;
			if (TYPE == KERN_TYPE_Q8_0) {
				const uint8_t *blk = wr[r] + (size_t)b * 34; /* d, then 32 int8: 2-byte aligned */
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
				const uint8_t *blk = wr[r] + (size_t)b * (q41 ? 20 : 18);
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
	gemv_store<GEMVX_ROWS, NT, GLU>(acc, lane, row0, rows, T, y, ldy, h);
}

template <uint32_t TYPE>
static inline void gemv_x8_launch(const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T, float *y,
				  int ldy, bf16 *h, cudaStream_t st, bool pdl)
{
	const dim3 grid((unsigned)(h ? (rows + GEMVX_WARPS - 1) / GEMVX_WARPS
				     : (rows + GEMVX_WARPS * GEMVX_ROWS - 1) / (GEMVX_WARPS * GEMVX_ROWS))),
		th(GEMVX_WARPS * WARP);
	const size_t sm = gemvx_smem(T <= 1 ? 1 : 2, k);
	if (T <= 1)
		launch(h ? k_gemv_x8<TYPE, 1, true> : k_gemv_x8<TYPE, 1, false>, grid, th, sm, st, pdl, w, row_bytes, rows,
		       k, x, T, y, ldy, h);
	else
		launch(h ? k_gemv_x8<TYPE, 2, true> : k_gemv_x8<TYPE, 2, false>, grid, th, sm, st, pdl, w, row_bytes, rows,
		       k, x, T, y, ldy, h);
}

/* The int8-activation GEMV for type qtype, as gemv_q (h: GLU); false when
 * it has none for this type, T or k (the caller then takes gemv_q). */
static inline bool gemv_x8(uint32_t qtype, const uint8_t *w, size_t row_bytes, int rows, int k, const bf16 *x, int T,
			   float *y, int ldy, cudaStream_t st, bf16 *h = nullptr, bool pdl = false)
{
	if (T < 1 || T > GEMVX_MAX_T || (h && T > GEMV_GLU_MAX_T) || k % 32 ||
	    gemvx_smem(T <= 1 ? 1 : 2, k) > GEMVX_SMEM_MAX)
		return false;
	switch (qtype) {
	case KERN_TYPE_Q8_0:
		gemv_x8_launch<KERN_TYPE_Q8_0>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_Q4_0:
		gemv_x8_launch<KERN_TYPE_Q4_0>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
		return true;
	case KERN_TYPE_Q4_1:
		gemv_x8_launch<KERN_TYPE_Q4_1>(w, row_bytes, rows, k, x, T, y, ldy, h, st, pdl);
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

#endif
