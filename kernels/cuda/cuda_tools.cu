/*
 * cuda_tools.cu: the CUDA module's entry points for the tools: single
 * kernels run on host inputs (locus_cuda_kernel_check, for tools/cuda-check),
 * the device's measured ceilings (locus_cuda_ceilings) and the kernel
 * microbenchmarks (locus_cuda_kbench, for bench/kbench). Part of
 * liblocus_cuda.so; cuda_module.h documents the entry points.
 */
#include "kernels/cuda/cuda_kernels.cuh"

#include <initializer_list>

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
		qkv_post_launch(dqkv, ld, a->bq ? db : NULL, a->bk ? db + qd : NULL, a->bv ? db + qd + kvd : NULL, dinv, m,
				dk, dv, NH, NKV, HD, BSZ, blk_stride, a->neox, T, 0);
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
	    (a->attn == LCU_ATTN_SPLIT && T > ATTN_SPLIT_MAX_T) || (a->attn == LCU_ATTN_TILED && !attn_tile_ok(HD)) ||
	    (a->attn == LCU_ATTN_MMA && !attn_mma_ok(HD))) {
		snprintf(errbuf, errlen, "cuda-check attention: n = n_head * hd, hd a multiple of 32 up to %d (tiled: %d, "
			 "tensor cores: a multiple of 16 up to %d), n_head a multiple of n_kv, split steps of at most %d tokens",
			 ATTN_MAX_HD, ATTN_TILE_MAX_HD, ATTN_MMA_MAX_HD, ATTN_SPLIT_MAX_T);
		return -EINVAL;
	}
	if (a->attn == LCU_ATTN_MMA && !attn_mma_runs(a->gpu)) {
		snprintf(errbuf, errlen, "attention on tensor cores needs compute capability 8.0 and a module built for it");
		return -ENODEV;
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
		n_tiles = attn_tiles(T, bto, pos, tl); /* a sequence's tokens share its table offset */
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
			  a->attn >= LCU_ATTN_TILED ? dmeta + 4 * T + a->n_bt : NULL,
			  a->attn >= LCU_ATTN_TILED ? n_tiles : 0, 0, false, a->attn == LCU_ATTN_MMA);
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
	float *dx = NULL, *dw = NULL, *dadd = NULL;
	void *dy = NULL, *dsel = NULL;
	uint16_t *hy = NULL;
	int rc = -EIO;
	const size_t wrows = a->kernel == LCU_GEMV && a->glu ? 2 * rows : rows; /* GLU: gate, then up */
	if (rows < 1 || n < 1 || rows > 65535 ||
	    (a->kernel == LCU_GEMV && (a->T < 1 || a->T > (a->glu ? GEMV_GLU_MAX_T : GEMV_MAX_T) || !gemv_any(a->qtype) ||
				       n % gemv_block(a->qtype) || !a->qw || a->q_row_bytes != gemv_row_bytes(a->qtype, n)))) {
		snprintf(errbuf, errlen, "cuda-check: rows 1..65535, n >= 1; GEMV: T 1..%d (GLU 1..%d), Q8_0/Q4_0/Q4_1/BF16 "
			 "(n a multiple of 32) or Q4_K/Q6_K (of 256), rows of the type's size", GEMV_MAX_T, GEMV_GLU_MAX_T);
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
		if (a->add) {
			CU(cudaMalloc(&dadd, in_n * 4), "cudaMalloc");
			CU(cudaMemcpy(dadd, a->add, in_n * 4, cudaMemcpyHostToDevice), "copy in");
		}
		k_add_rmsnorm<<<(unsigned)rows, norm_threads((int)n)>>>(dx, dadd, NULL, dw, (bf16 *)dy, (int)n, a->eps);
		break;
	case LCU_SWIGLU:
		k_swiglu<<<64, 256>>>(dx, (bf16 *)dy, (int)n, (int64_t)(rows * n));
		break;
	case LCU_ARGMAX:
		CU(cudaMalloc(&dsel, sel_scratch_bytes((int)rows, (int)n)), "cudaMalloc");
		argmax_launch(dx, (int)n, (int)rows, dsel, (int32_t *)dy, 0);
		break;
	case LCU_TOP:
		if (a->w) {
			CU(cudaMalloc(&dw, rows * 4), "cudaMalloc");
			CU(cudaMemcpy(dw, a->w, rows * 4, cudaMemcpyHostToDevice), "copy in");
		}
		CU(cudaMalloc(&dsel, sel_scratch_bytes((int)rows, (int)n)), "cudaMalloc");
		top_launch(dx, (int)n, dw, (int)rows, dsel, (struct kern_top *)dy, 0);
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
		CU(cudaMalloc(&dq, wrows * a->q_row_bytes), "cudaMalloc");
		CU(cudaMemcpy(dq, a->qw, wrows * a->q_row_bytes, cudaMemcpyHostToDevice), "copy in");
		{
			/* LOCUS_CUDA_GEMV_X8=1: the int8-activation GEMV where it has the type;
			 * glu: h (bf16) in place of y */
			const char *gx = getenv("LOCUS_CUDA_GEMV_X8");
			bf16 *h = a->glu ? (bf16 *)dy : nullptr;
			if (!(gx && !strcmp(gx, "1") && gemv_x8(a->qtype, dq, a->q_row_bytes, (int)rows, (int)n,
								   (const bf16 *)dx, a->T, (float *)dy, (int)rows, 0, h)) &&
			    !gemv_q(a->qtype, dq, a->q_row_bytes, (int)rows, (int)n, (const bf16 *)dx, a->T, (float *)dy,
				    (int)rows, 0, h)) {
				snprintf(errbuf, errlen, "cuda-check: no GEMV for this case");
				rc = -EINVAL;
				goto err;
			}
		}
		break;
	}
	CU(cudaGetLastError(), "launch");
	CU(cudaDeviceSynchronize(), "kernel");
	if (dadd && a->x_out)
		CU(cudaMemcpy(a->x_out, dx, in_n * 4, cudaMemcpyDeviceToHost), "copy out");
	if (a->kernel == LCU_ARGMAX) {
		CU(cudaMemcpy(a->ids, dy, rows * 4, cudaMemcpyDeviceToHost), "copy out");
	} else if (a->kernel == LCU_TOP) {
		CU(cudaMemcpy(a->top, dy, rows * sizeof(struct kern_top), cudaMemcpyDeviceToHost), "copy out");
	} else if (a->kernel == LCU_GEMV && !a->glu) {
		CU(cudaMemcpy(a->y, dy, out_n * 4, cudaMemcpyDeviceToHost), "copy out");
	} else { /* bf16 outputs: rows x n, or T x rows of GLU */
		const size_t ny = a->kernel == LCU_GEMV ? out_n : rows * n;
		hy = (uint16_t *)malloc(ny * 2);
		if (!hy) {
			snprintf(errbuf, errlen, "cuda-check: out of memory");
			goto err;
		}
		CU(cudaMemcpy(hy, dy, ny * 2, cudaMemcpyDeviceToHost), "copy out");
		for (size_t i = 0; i < ny; i++)
			a->y[i] = bf16_bits_to_f32(hy[i]);
	}
	rc = 0;
err:
	free(hy);
	free(xb16);
	cudaFree(dq);
	cudaFree(dx);
	cudaFree(dw);
	cudaFree(dadd);
	cudaFree(dy);
	cudaFree(dsel);
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

/* The time of one run(i): the median of n samples after 3 warm-ups; run(i)
 * gets a running index so it can rotate over copies of its inputs (L2 does
 * not keep them). A sample times enough back-to-back runs to fill about
 * 300 us (at most 32), so the host's launch cost, paid while the GPU works
 * on the earlier runs, is not counted as the kernel's, as it is not in a
 * step. The events go on st, the stream run launches on. */
template <typename F> static float kb_time(struct kb_timer *t, int n, F run, cudaStream_t st = 0)
{
	int inner = 1, idx = 0;
	for (int i = -3; i < n; i++) {
		cudaEventRecord(t->e0, st);
		for (int j = 0; j < inner; j++)
			run(idx++);
		cudaEventRecord(t->e1, st);
		cudaEventSynchronize(t->e1);
		float ms = 0;
		cudaEventElapsedTime(&ms, t->e0, t->e1);
		if (i == -1) { /* the last warm-up sets the batch */
			inner = ms > 0 ? (int)(0.3f / ms) + 1 : 32;
			inner = inner > 32 ? 32 : inner;
		}
		if (i >= 0)
			t->ms[i] = ms / (float)inner;
	}
	qsort(t->ms, (size_t)n, sizeof(float), cmp_float);
	return t->ms[n / 2];
}

/* kbench's norm weights (E ones) into w and Llama 3's RoPE frequencies
 * (base 500000, head size HD) into inv, both on the device. */
template <int E, int HD> static cudaError_t kb_norm_rope(float *w, double *inv)
{
	float ones[E];
	double invh[HD / 2];
	for (int i = 0; i < E; i++)
		ones[i] = 1.0f;
	for (int i = 0; i < HD / 2; i++)
		invh[i] = pow(500000.0, -2.0 * i / HD);
	cudaError_t e = cudaMemcpy(w, ones, sizeof(ones), cudaMemcpyHostToDevice);
	return e != cudaSuccess ? e : cudaMemcpy(inv, invh, sizeof(invh), cudaMemcpyHostToDevice);
}

extern "C" int locus_cuda_kbench(int gpu, int quick, char *errbuf, size_t errlen)
{
	/* Llama-3-8B */
	constexpr int E = 4096, HD = 128;
	const int F = 14336, NH = 32, NKV = 8, V = 128256, BS = 16;
	const int runs = quick ? 9 : 25;
	struct lcu_ceilings c;
	if (locus_cuda_ceilings(gpu, &c, errbuf, errlen))
		return -EIO;
	printf("kbench: %s; ceilings measured now: copy %.0f GB/s (read + write), bf16 GEMM %.1f TFLOP/s\n", c.name,
	       c.copy_gbps, c.gemm_tflops);
	printf("times: per run, median of %d samples after 3 warm-ups (CUDA events), each sample back-to-back runs\n"
	       "filling about 300 us, so the host's launch cost is hidden as in a step; GEMM weights rotate over copies\n"
	       "past the L2 cache (the o and qkv shapes fit in it alone); the element-wise rows at small T are\n"
	       "L2-resident, so their GB/s can exceed the copy bandwidth\n",
	       runs);
	struct kb_timer t;
	cudaEventCreate(&t.e0);
	cudaEventCreate(&t.e1);
	cublasHandle_t h = NULL;
	void *ws = NULL;
	uint8_t *pool = NULL;
	const size_t pool_bytes = (size_t)3 << 30; /* weight copies, activations, KV */
	int rc = -EIO;
	/* Llama-3-8B's matrices: y[T][rows] = x[T][k] . W^T */
	static const struct {
		const char *name;
		int k, rows;
	} sh[] = {{"qkv 4096->6144", E, 6144}, {"o 4096->4096", E, E}, {"gate|up 4096->28672", E, 2 * F},
		  {"down 14336->4096", F, E}, {"logits 4096->128256", E, V}};
	const size_t n_sh = sizeof(sh) / sizeof(sh[0]);
	/* One GEMV path on every shape: launch(type, weights, row bytes, rows,
	 * k, x, T, y) for the types qt[0..nq) at each T of Ts, the weights
	 * rotated over copies past the L2 cache (x and y in the pool's last GiB);
	 * a launch that returns false (no kernel for it) prints no row. */
	auto gemv_rows = [&](const uint32_t *qt, const char *const *qn, int nq, const char *tag,
			     std::initializer_list<int> Ts, auto launch) {
		uint8_t *act = pool + ((size_t)2 << 30);
		for (int qi = 0; qi < nq; qi++)
			for (size_t si = 0; si < n_sh; si++) {
				size_t rb = gemv_row_bytes(qt[qi], (size_t)sh[si].k), wbytes = rb * sh[si].rows;
				int copies = (int)(((size_t)2 << 30) / wbytes);
				copies = copies < 1 ? 1 : copies > 64 ? 64 : copies;
				const bf16 *x = (const bf16 *)act;
				float *y = (float *)(act + ((size_t)8 * sh[si].k * 2 + 255) / 256 * 256);
				for (int T : Ts) {
					bool ok = true;
					float ms = kb_time(&t, runs, [&](int i) {
						ok = launch(qt[qi], pool + (size_t)(i % copies) * wbytes, rb, sh[si].rows, sh[si].k,
							    x, T, y) &&
						     ok;
					});
					if (!ok)
						continue;
					double gb = (double)wbytes / (ms * 1e-3) / 1e9;
					char nm[48];
					snprintf(nm, sizeof(nm), "%s %s%s", qn[qi], tag, sh[si].name);
					printf("%-28s %4d %9.1f %9.0f %7.0f%%\n", nm, T, ms * 1e3, gb, 100 * gb / c.copy_gbps);
				}
			}
	};
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
		const int Ts[] = {1, 2, 4, 8, 16, 128, 512, 2048};
		printf("\nGEMM (cuBLAS, bf16 in, f32 accumulate and out)\n%-22s %6s %9s %9s %8s %9s %8s\n", "shape", "T",
		       "us", "TFLOP/s", "of peak", "GB/s w", "of copy");
		uint8_t *act = pool + ((size_t)2 << 30); /* 1 GiB: x and y */
		for (size_t si = 0; si < n_sh; si++) {
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
		printf("\nGEMV, f32 activations (the backend's decode path for Q4_K and Q6_K rows up to T = %d, for Q8_0,\n"
		       "Q4_0, Q4_1 with LOCUS_CUDA_GEMV_X8=0; for BF16 rows, k_gemv_bf16, up to T = %d; bytes: the weights as\n"
		       "stored; compare with the GEMM rows above at the same T)\n%-28s %4s %9s %9s %8s\n",
		       GEMV_Q_MAX_T, GEMV_BF16_MAX_T, "type, shape", "T", "us", "GB/s w", "of copy");
		{
			const uint32_t qt[] = {KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K,
					       KERN_TYPE_BF16};
			const char *const qn[] = {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "BF16"};
			gemv_rows(qt, qn, 6, "", {1, 2, 4, 8},
				  [](uint32_t ty, const uint8_t *w, size_t rb, int rows, int k, const bf16 *x, int T, float *y) {
					  return gemv_q(ty, w, rb, rows, k, x, T, y, rows, 0);
				  });
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
		void *sel = carve(sel_scratch_bytes(64, V));
		int32_t *tiles = (int32_t *)carve(((size_t)Tmax + 1) * 4);
		if ((size_t)(p - pool) > pool_bytes) {
			snprintf(errbuf, errlen, "kbench: the 3 GiB pool is too small");
			goto err;
		}
		/* rms weights, rope table: real values; qkv/x: the memset pattern */
		CU((kb_norm_rope<E, HD>(wn, inv)), "copy");
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
				qkv_post_launch(qkv, ld, NULL, NULL, NULL, inv, m, kc, vc, NH, NKV, HD, BS, blk_stride, 0, T, 0);
			});
			by = (double)T * (ld * 4 + (double)E * 4 + 2.0 * NKV * HD * 2);
			printf("bias + rope + KV write T=%-4d      %9.2f %9.0f %7.0f%%\n", T, ms * 1e3, by / (ms * 1e-3) / 1e9,
			       100 * by / (ms * 1e-3) / 1e9 / c.copy_gbps);
		}
		for (int T : {1, 16, 64}) {
			float ms = kb_time(&t, runs, [&](int) { argmax_launch(logits, V, T, sel, meta + 4 * Tmax, 0); });
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
				float ms = kb_time(&t, runs, [&](int) { top_launch(logits, V, NULL, T, sel, tops, 0); });
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
			/* 2: tiles on tensor cores (the default), 1: tiles on CUDA cores, 0: per token */
			for (int tiled = attn_mma_runs(gpu) ? 2 : 1; tiled >= 0; tiled--) {
				float ms = kb_time(&t, quick ? 3 : 9, [&](int) {
					attention(qkv, ld, m, kc, vc, NH, NKV, HD, BS, blk_stride, xb, E, T, NULL,
						  tiled ? tiles : NULL, tiled ? nt : 0, 0, false, tiled == 2);
				});
				double fl = 4.0 * NH * HD * (double)T * (T + 1) / 2; /* QK^T and PV, causal */
				printf("attention prefill T=%-5d %-9s%9.1f %8.1f TFLOP/s, %.1f%% of the GEMM peak\n", T,
				       tiled == 2 ? "mma" : tiled ? "tiled" : "per-token", ms * 1e3, fl / (ms * 1e-3) / 1e12,
				       100 * fl / (ms * 1e-3) / 1e12 / c.gemm_tflops);
			}
		}
		CU(cudaGetLastError(), "kernel launch");
		CU(cudaDeviceSynchronize(), "kernels");
	}
	{
		/* the int8-activation GEMV (the decode default for these types) */
		const uint32_t qt[] = {KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1};
		const char *const qn[] = {"Q8_0", "Q4_0", "Q4_1"};
		printf("\nGEMV with int8 activations (the backend's decode path for Q8_0, Q4_0, Q4_1 up to T = 2; bytes:\n"
		       "the weights as stored)\n"
		       "%-28s %4s %9s %9s %8s\n", "type, shape", "T", "us", "GB/s w", "of copy");
		gemv_rows(qt, qn, 3, "x8 ", {1, 2},
			  [](uint32_t ty, const uint8_t *w, size_t rb, int rows, int k, const bf16 *x, int T, float *y) {
				  return gemv_x8(ty, w, rb, rows, k, x, T, y, rows, 0);
			  });
		CU(cudaGetLastError(), "GEMV x8 launch");
		CU(cudaDeviceSynchronize(), "GEMV x8");
	}
	{
		/* ---- the gate|up GEMV with its SwiGLU fused, and a whole decode
		 * layer with and without programmatic dependent launch: last, for
		 * the same reason ---- */
		const uint32_t qt[] = {KERN_TYPE_Q8_0, KERN_TYPE_Q4_0, KERN_TYPE_Q4_1, KERN_TYPE_Q4_K, KERN_TYPE_Q6_K,
				       KERN_TYPE_BF16};
		const char *const qn[] = {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "BF16"};
		/* the sections above wrote activations over the pool's start: random bf16 again */
		k_fill_bf16<<<4096, 256>>>((bf16 *)pool, ((size_t)2 << 30) / 2, 778u);
		CU(cudaDeviceSynchronize(), "fill");
		printf("\ngate|up 4096->2x14336 then SwiGLU, as two kernels (GEMV, k_swiglu) and as one (the GEMV's GLU\n"
		       "form, which decode steps take); bytes: the weights as stored\n%-28s %4s %9s %9s %8s\n",
		       "type, form", "T", "us", "GB/s w", "of copy");
		uint8_t *act = pool + ((size_t)2 << 30);
		const bf16 *gx = (const bf16 *)act;
		float *ggu = (float *)(act + ((size_t)2 * E * 2 + 255) / 256 * 256);
		bf16 *gh = (bf16 *)((uint8_t *)ggu + (size_t)2 * 2 * F * 4);
		for (int qi = 0; qi < 6; qi++) {
			const size_t rb = gemv_row_bytes(qt[qi], E), wbytes = rb * 2 * F;
			int copies = (int)(((size_t)2 << 30) / wbytes);
			copies = copies < 1 ? 1 : copies > 64 ? 64 : copies;
			for (int T = 1; T <= GEMV_GLU_MAX_T; T++)
				for (int fused = 0; fused < 2; fused++) {
					float ms = kb_time(&t, runs, [&](int i) {
						const uint8_t *w = pool + (size_t)(i % copies) * wbytes;
						if (fused) {
							gemv_q(qt[qi], w, rb, F, E, gx, T, NULL, F, 0, gh);
						} else {
							gemv_q(qt[qi], w, rb, 2 * F, E, gx, T, ggu, 2 * F, 0);
							swiglu_launch(ggu, gh, F, T, 0);
						}
					});
					double gb = (double)wbytes / (ms * 1e-3) / 1e9;
					char nm[48];
					snprintf(nm, sizeof(nm), "%s %s", qn[qi], fused ? "fused" : "GEMV + swiglu");
					printf("%-28s %4d %9.1f %9.0f %7.0f%%\n", nm, T, ms * 1e3, gb, 100 * gb / c.copy_gbps);
				}
		}
		CU(cudaGetLastError(), "GLU launch");
		CU(cudaDeviceSynchronize(), "GLU");

		/* One Llama-3-8B decode layer on bf16 weights (436 MiB, past L2),
		 * one token at position 255: add + rmsnorm, qkv, bias + rope + KV,
		 * split attention and its merge, o, add + rmsnorm, gate|up (+ swiglu),
		 * down; on a stream of its own, which the events time too */
		const size_t wq = (size_t)(E + 2 * NKV * HD) * E, wo = (size_t)E * E, wgu = (size_t)2 * F * E,
			     wd = (size_t)E * F;
		bf16 *lw = (bf16 *)pool; /* the weights: the pool's random bf16 (refilled above) */
		bf16 *Wqkv = lw, *Wo = Wqkv + wq, *Wgu = Wo + wo, *Wd = Wgu + wgu;
		uint8_t *la = pool + (((wq + wo + wgu + wd) * 2 + 255) & ~(size_t)255); /* activations after them */
		float *lx = (float *)la, *ladd = lx + E, *lwn = ladd + E, *lqkv = lwn + E, *lgu = lqkv + 6144;
		bf16 *lxb = (bf16 *)(lgu + 2 * F), *latt = lxb + F, *lh = latt + E;
		int32_t *lmeta = (int32_t *)(lh + F);
		float *lpart = (float *)(lmeta + 8 * 1024);
		__half *lkc = (__half *)(lpart + (size_t)NH * ATTN_SPLITS * (HD + 2)), *lvc = lkc + (size_t)16 * NKV * BS * HD;
		double *linv = (double *)(lvc + (size_t)16 * NKV * BS * HD);
		if ((uint8_t *)(linv + HD / 2) > pool + ((size_t)2 << 30)) {
			snprintf(errbuf, errlen, "kbench: the layer does not fit the pool");
			goto err;
		}
		{
			const int ctx = 256, lt = 5 * 1024; /* meta: tokens, pos, bt_off, logit_idx, (argmax), tables */
			int32_t hm[8 * 1024] = {0};
			hm[1024] = ctx - 1;
			for (int j = 0; j < ctx / BS; j++)
				hm[lt + j] = j;
			CU(cudaMemcpy(lmeta, hm, sizeof(hm), cudaMemcpyHostToDevice), "copy");
			CU((kb_norm_rope<E, HD>(lwn, linv)), "copy");
		}
		step_meta lm = {lmeta, lmeta + 1024, lmeta + 2 * 1024, lmeta + 3 * 1024, lmeta + 5 * 1024};
		cudaStream_t ls = NULL;
		CU(cudaStreamCreateWithFlags(&ls, cudaStreamNonBlocking), "stream");
		{
			const int ld = E + 2 * NKV * HD, nt = norm_threads(E);
			const size_t blk_stride = (size_t)NKV * BS * HD;
			auto layer = [&](bool fused, bool pdl) {
				launch(k_add_rmsnorm, dim3(1), dim3(nt), 0, ls, pdl, lx, (const float *)ladd, nullptr,
				       (const float *)lwn, lxb, E, 1e-5f);
				gemv_q(KERN_TYPE_BF16, (const uint8_t *)Wqkv, (size_t)E * 2, ld, E, lxb, 1, lqkv, ld, ls, nullptr, pdl);
				qkv_post_launch(lqkv, ld, NULL, NULL, NULL, linv, lm, lkc, lvc, NH, NKV, HD, BS, blk_stride, 0, 1, ls,
						pdl);
				attention(lqkv, ld, lm, lkc, lvc, NH, NKV, HD, BS, blk_stride, latt, E, 1, lpart, NULL, 0, ls, pdl);
				gemv_q(KERN_TYPE_BF16, (const uint8_t *)Wo, (size_t)E * 2, E, E, latt, 1, ladd, E, ls, nullptr, pdl);
				launch(k_add_rmsnorm, dim3(1), dim3(nt), 0, ls, pdl, lx, (const float *)ladd, nullptr,
				       (const float *)lwn, lxb, E, 1e-5f);
				if (fused) {
					gemv_q(KERN_TYPE_BF16, (const uint8_t *)Wgu, (size_t)E * 2, F, E, lxb, 1, NULL, F, ls, lh, pdl);
				} else {
					gemv_q(KERN_TYPE_BF16, (const uint8_t *)Wgu, (size_t)E * 2, 2 * F, E, lxb, 1, lgu, 2 * F, ls,
					       nullptr, pdl);
					swiglu_launch(lgu, lh, F, 1, ls, pdl);
				}
				gemv_q(KERN_TYPE_BF16, (const uint8_t *)Wd, (size_t)F * 2, E, F, lh, 1, ladd, E, ls, nullptr, pdl);
			};
			const bool pdl_ok = pdl_runs(gpu);
			const double lbytes = (double)(wq + wo + wgu + wd) * 2;
			printf("\ndecode layer, Llama-3-8B on bf16 weights (%.0f MiB), 1 token at position 255, kernels launched\n"
			       "back to back on one stream (no graph); bytes: the weights\n%-44s %9s %9s %8s\n",
			       lbytes / 1048576.0, "form", "us", "GB/s w", "of copy");
			static const char *const form[] = {"10 kernels (GEMV + swiglu)", "9 kernels (gate|up GLU)",
							   "9 kernels, programmatic dependent launch"};
			for (int f = 0; f < 3; f++) {
				if (f == 2 && !pdl_ok) {
					printf("%-44s (needs compute capability 9.0 and a module built for it)\n", form[f]);
					continue;
				}
				float ms = kb_time(&t, runs, [&](int) { layer(f >= 1, f == 2); }, ls);
				double gb = lbytes / (ms * 1e-3) / 1e9;
				printf("%-44s %9.1f %9.0f %7.0f%%\n", form[f], ms * 1e3, gb, 100 * gb / c.copy_gbps);
			}
		}
		cudaError_t le = cudaGetLastError();
		if (le == cudaSuccess)
			le = cudaStreamSynchronize(ls);
		cudaStreamDestroy(ls);
		CU(le, "decode layer");
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
