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
 * the file: steps of up to GEMV_Q_MAX_T tokens (decode) multiply them with
 * a fused dequantizing GEMV that reads 4.5-8.5 bits per weight instead of
 * 16 (LOCUS_CUDA_GEMV=0: bf16 and cuBLAS only). Unquantized matrices go
 * through our GEMV on the bf16 rows (k_gemv_bf16) in steps of up to
 * GEMV_BF16_MAX_T tokens, where kbench measured it ahead of cuBLAS
 * (LOCUS_CUDA_GEMV_BF16=0: never, =1: up to GEMV_MAX_T tokens).
 *
 * A step (all on one stream, one host synchronization at the end):
 *   embed -> per layer [ add + rmsnorm -> GEMM qkv -> bias + rope + KV write
 *   -> attention -> GEMM o -> add + rmsnorm -> GEMM gate|up -> swiglu ->
 *   GEMM down ] -> add + rmsnorm of the rows that want logits -> GEMM
 *   logits -> argmax on the device (only ids cross PCIe when the caller
 *   does not want the logits themselves), and for step_top each row's 64
 *   best logits and log-sum-exps (top_launch), from which the host samples.
 *   Where a GEMV takes gate|up, it applies the swiglu itself (its GLU form).
 *   On sm_90+ the kernels go with programmatic dependent launch
 *   (cuda_kernels.cuh, pdl_wait): each may start during the previous one's
 *   tail (LOCUS_CUDA_PDL=0 turns it off; profiling does too).
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
 * (LOCUS_CUDA_ATTN_TILED=0: the per-token kernel), on tensor cores where
 * the chip has mma.sync (sm_80+) and the head size is a multiple of 16 up
 * to 128 (k_attn_mma, a kv head's query heads in one block), else on CUDA
 * cores (k_attn_tile; LOCUS_CUDA_ATTN_MMA=0 forces these).
 */
#include "kernels/cuda/cuda_kernels.cuh"

static struct lcu_host host; /* from the loader, before any other entry point */

extern "C" void locus_cuda_init(const struct lcu_host *h)
{
	host = *h;
}

extern "C" int locus_cuda_abi(void)
{
	return LCU_ABI;
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
	int32_t *h_meta_dev; /* h_meta as kernels see it (mapped pinned memory); NULL: not mapped */
	struct kern_top *d_top; /* (max_batch_tokens) each logits row's candidates */
	void *d_sel;            /* sel_scratch_bytes(max_batch_tokens, n_vocab): argmax and top-64 segments */
	struct hbuf htop;       /* pinned, the same */
	float *d_inv_t;         /* (max_batch_tokens) each logits row's inverse temperature, for top_launch */
	struct hbuf hinv;       /* pinned, the same */
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
	bool attn_mma;       /* attn_tiled, sm_80+, LOCUS_CUDA_ATTN_MMA != 0: the tiles on tensor cores (k_attn_mma) */
	int gemv_bf16_max_t; /* steps of up to this many tokens use the GEMV on bf16 rows (LOCUS_CUDA_GEMV_BF16) */
	bool gemv_x8;        /* LOCUS_CUDA_GEMV_X8 != 0: Q8_0/Q4_0/Q4_1 through k_gemv_x8 (int8 activations) */
	bool pdl;            /* sm_90+, LOCUS_CUDA_PDL != 0, not profiling: programmatic dependent launch */
	int32_t *d_tiles;    /* (max_batch_tokens + 1) this step's attention tiles, when it has more than 64 tokens */
	struct hbuf htiles;  /* pinned, the same */
	int n_tiles;         /* 0: this step has none */
	struct cu_prof *prof; /* LOCUS_CUDA_PROFILE=1, else NULL */
	size_t q_bytes;      /* quantized copies for the decode GEMV */
	int n_q;
};

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

/* Whether environment variable name is set to v (the backend's switches:
 * "0" turns a default off, "1" an option on). */
static bool env_is(const char *name, const char *v)
{
	const char *e = getenv(name);
	return e && !strcmp(e, v);
}

/* cuBLASLt set-up: one operation (bf16 x bf16 -> f32, f32 compute, A
 * transposed), the workspace as the preference; off when anything fails. */
static void lt_init(struct cuda_backend *cb)
{
	if (env_is("LOCUS_CUDA_LT", "0"))
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

/* The GEMV for this step, if one takes it: over the quantized rows for a
 * few tokens, or over the bf16 ones (gemv_q, gemv_x8); with h, the GLU
 * form (m is gate|up; h[T][ldy] = swiglu, bf16). False: nothing launched. */
static bool gemv_try(struct cuda_backend *cb, const struct cu_mat *m, const bf16 *x, int T, float *y, int ldy, bf16 *h)
{
	const int rows = (int)(h ? m->rows / 2 : m->rows), k = (int)m->k;
	if (m->q && T <= GEMV_Q_MAX_T)
		return (cb->gemv_x8 && gemv_x8(m->qtype, m->q, m->q_row_bytes, rows, k, x, T, y, ldy, cb->stream, h, cb->pdl)) ||
		       gemv_q(m->qtype, m->q, m->q_row_bytes, rows, k, x, T, y, ldy, cb->stream, h, cb->pdl);
	if (!m->q && T <= cb->gemv_bf16_max_t && m->k % 32 == 0)
		return gemv_q(KERN_TYPE_BF16, (const uint8_t *)m->d, (size_t)m->k * 2, rows, k, x, T, y, ldy, cb->stream,
			      h, cb->pdl);
	return false;
}

/* y[T][ldy] (f32) = x[T][k] (bf16) . m^T: the GEMV where one takes the
 * step (launch errors surface at the step's end); otherwise cuBLASLt with
 * the shape's cached plan, or cublasGemmEx when there is none. */
static cublasStatus_t gemm(struct cuda_backend *cb, const struct cu_mat *m, const bf16 *x, int T, float *y, int ldy)
{
	if (gemv_try(cb, m, x, T, y, ldy, NULL))
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

/*
 * LOCUS_CUDA_PROFILE=1: the GPU time of each kind of operation, from
 * events recorded on the stream between them (inside the CUDA graphs too,
 * as event-record nodes), summed over the steps and printed at close, for
 * decode steps (every token a logits row) and the others apart. The events
 * cost about 3 us each on an H100 (the report's first line), so a profiled
 * step is slower, about 12% for the 8B-shaped model's decode; an
 * operation's time includes the gap before it (launch latency, a kernel's
 * ramp-up). nsys needs no such help where it runs.
 */
#define PROF_MAX 2048 /* marks per step (about 10 per layer) */
enum prof_kind { PK_START, PK_EVENT, PK_EMBED, PK_NORM, PK_QKV, PK_ROPE_KV, PK_ATTN, PK_O, PK_GU, PK_SWIGLU, PK_GU_GLU,
		 PK_DOWN, PK_LOGITS, PK_ARGMAX, PK_TOP, PK_COPY, PK_N };
static const char *const prof_name[PK_N] = {
    "",		   "(one event)", "embedding",	     "add + rmsnorm", "qkv GEMM",    "bias + rope + KV",
    "attention",   "o GEMM",	  "gate|up GEMM",    "swiglu",	      "gate|up+swiglu", "down GEMM",
    "logits GEMM", "argmax",	  "top-64",	     "copies out"};
struct cu_prof {
	cudaEvent_t ev[PROF_MAX];
	uint8_t kind[PROF_MAX];
	int n; /* this step's marks */
	uint8_t gkind[GRAPH_SLOTS][PROF_MAX]; /* the marks each graph records */
	int gn[GRAPH_SLOTS];
	double us[2][PK_N]; /* [decode step][kind] */
	long steps[2];
};

static void prof_mark(struct cuda_backend *cb, int kind)
{
	struct cu_prof *p = cb->prof;
	if (!p || p->n >= PROF_MAX)
		return;
	cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
	if (cudaStreamIsCapturing(cb->stream, &cs) != cudaSuccess)
		return;
	if (cudaEventRecordWithFlags(p->ev[p->n], cb->stream,
				     cs == cudaStreamCaptureStatusActive ? cudaEventRecordExternal : cudaEventRecordDefault) ==
	    cudaSuccess)
		p->kind[p->n++] = (uint8_t)kind;
}

/* After the step's synchronize: its marks into the sums. */
static void prof_add(struct cuda_backend *cb, bool decode)
{
	struct cu_prof *p = cb->prof;
	for (int i = 1; i < p->n; i++) {
		float ms = 0;
		if (cudaEventElapsedTime(&ms, p->ev[i - 1], p->ev[i]) == cudaSuccess)
			p->us[decode][p->kind[i]] += ms * 1e3;
	}
	(void)cudaGetLastError();
	p->steps[decode]++;
}

static void prof_report(const struct cu_prof *p)
{
	for (int d = 1; d >= 0; d--) {
		if (!p->steps[d])
			continue;
		double tot = 0;
		for (int k = 1; k < PK_N; k++)
			tot += p->us[d][k];
		fprintf(stderr,
			"cuda profile: %ld %s steps, %.1f us of GPU time each (events between the operations; each "
			"occurrence of one includes an event's cost, the first line):\n",
			p->steps[d], d ? "decode" : "prefill or mixed", tot / (double)p->steps[d]);
		for (int k = 1; k < PK_N; k++)
			if (p->us[d][k] > 0)
				fprintf(stderr, "cuda profile:   %-18s %10.1f us %5.1f%%\n", prof_name[k],
					p->us[d][k] / (double)p->steps[d], 100 * p->us[d][k] / tot);
	}
}

static void prof_free(struct cuda_backend *cb)
{
	if (!cb->prof)
		return;
	for (int i = 0; i < PROF_MAX; i++)
		if (cb->prof->ev[i])
			cudaEventDestroy(cb->prof->ev[i]);
	free(cb->prof);
	cb->prof = NULL;
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
	/* Pinned memory is mapped where addressing is unified: the argmax
	 * kernel then writes the token ids straight to the host, no copy. */
	if (cudaHostGetDevicePointer((void **)&cb->h_meta_dev, h.p, 0) != cudaSuccess) {
		(void)cudaGetLastError();
		cb->h_meta_dev = NULL;
	}
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
		cb->n_tiles = attn_tiles(b->n_tokens, b->seq_idx, b->pos, cb->htiles.p);
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
	const bool pdl = cb->pdl;
	step_meta m = {cb->d_meta, cb->d_meta + Tm, cb->d_meta + 2 * Tm, cb->d_meta + 3 * Tm, cb->d_meta + 5 * Tm};
	int32_t *d_argmax = cb->d_meta + 4 * Tm;

	if (cb->prof)
		cb->prof->n = 0;
	prof_mark(cb, PK_START);
	prof_mark(cb, PK_EVENT); /* nothing between: what a mark itself costs */
	/* the first kernel follows a copy, not a kernel: launched plainly */
	launch(k_embed, dim3(T), dim3(nt), 0, st, false, cb->emb, m.tokens, cb->x, E);
	prof_mark(cb, PK_EMBED);
	for (int l = 0; l < hp->n_layer; l++) {
		const struct cu_layer *L = &cb->layers[l];
		__half *kc = cb->kc + (size_t)l * cb->layer_stride, *vc = cb->vc + (size_t)l * cb->layer_stride;
		launch(k_add_rmsnorm, dim3(T), dim3(nt), 0, st, pdl, cb->x, (const float *)(l ? cb->tmp : NULL), nullptr,
		       L->attn_norm, cb->xb, E, hp->norm_eps);
		prof_mark(cb, PK_NORM);
		if (gemm(cb, &L->wqkv, cb->xb, T, cb->qkv, ldqkv))
			return -EIO;
		prof_mark(cb, PK_QKV);
		qkv_post_launch(cb->qkv, ldqkv, L->bq, L->bk, L->bv, cb->inv_freq, m, kc, vc, hp->n_head, hp->n_head_kv, hd,
				bs, cb->blk_stride, hp->rope_type == KERN_ROPE_NEOX, T, st, pdl);
		prof_mark(cb, PK_ROPE_KV);
		attention(cb->qkv, ldqkv, m, kc, vc, hp->n_head, hp->n_head_kv, hd, bs, cb->blk_stride, cb->att, qd, T,
			  cb->attn_split ? cb->attn_part : NULL, T > ATTN_SPLIT_MAX_T ? cb->d_tiles : NULL,
			  T > ATTN_SPLIT_MAX_T ? cb->n_tiles : 0, st, pdl, cb->attn_mma);
		prof_mark(cb, PK_ATTN);
		if (gemm(cb, &L->wo, cb->att, T, cb->tmp, E))
			return -EIO;
		prof_mark(cb, PK_O);
		launch(k_add_rmsnorm, dim3(T), dim3(nt), 0, st, pdl, cb->x, (const float *)cb->tmp, nullptr, L->ffn_norm,
		       cb->xb, E, hp->norm_eps);
		prof_mark(cb, PK_NORM);
		/* gate|up with the SwiGLU in the GEMV where a GEMV takes it */
		if (!gemv_try(cb, &L->wgu, cb->xb, T, NULL, F, cb->h)) {
			if (gemm(cb, &L->wgu, cb->xb, T, cb->gu, 2 * F))
				return -EIO;
			prof_mark(cb, PK_GU);
			swiglu_launch(cb->gu, cb->h, F, T, st, pdl);
			prof_mark(cb, PK_SWIGLU);
		} else {
			prof_mark(cb, PK_GU_GLU);
		}
		if (gemm(cb, &L->wdown, cb->h, T, cb->tmp, E))
			return -EIO;
		prof_mark(cb, PK_DOWN);
	}
	if (nl > 0) {
		launch(k_add_rmsnorm, dim3(nl), dim3(nt), 0, st, pdl, cb->x, (const float *)cb->tmp, m.logit_idx,
		       (const float *)cb->out_norm, cb->xb, E, hp->norm_eps);
		prof_mark(cb, PK_NORM);
		if (gemm(cb, &cb->output, cb->xb, nl, cb->logits, V))
			return -EIO;
		prof_mark(cb, PK_LOGITS);
		if (want_argmax) {
			/* straight into the host staging where it is mapped, else copied there */
			argmax_launch(cb->logits, V, nl, cb->d_sel, cb->h_meta_dev ? cb->h_meta_dev + 4 * Tm : d_argmax, st,
				      pdl);
			prof_mark(cb, PK_ARGMAX);
			if (!cb->h_meta_dev) {
				if (cudaMemcpyAsync(cb->h_meta + 4 * Tm, d_argmax, (size_t)nl * 4, cudaMemcpyDeviceToHost, st))
					return -EIO;
				prof_mark(cb, PK_COPY);
			}
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
	if (cb->graph[slot].exec) {
		if (cb->prof) { /* the marks this graph records */
			cb->prof->n = cb->prof->gn[slot];
			memcpy(cb->prof->kind, cb->prof->gkind[slot], (size_t)cb->prof->n);
		}
		return cb->graph[slot].exec;
	}
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
	if (cb->prof) {
		cb->prof->gn[slot] = cb->prof->n;
		memcpy(cb->prof->gkind[slot], cb->prof->kind, (size_t)cb->prof->n);
	}
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
		if (b->inv_temp) {
			memcpy(cb->hinv.p, b->inv_temp, (size_t)nl * sizeof(float));
			e = cudaMemcpyAsync(cb->d_inv_t, cb->hinv.p, (size_t)nl * sizeof(float), cudaMemcpyHostToDevice,
					    st);
		}
		if (e == cudaSuccess)
			top_launch(cb->logits, V, b->inv_temp ? cb->d_inv_t : NULL, nl, cb->d_sel, cb->d_top, st);
		prof_mark(cb, PK_TOP);
		if (e == cudaSuccess)
			e = cudaMemcpyAsync(cb->htop.p, cb->d_top, (size_t)nl * sizeof(struct kern_top),
					    cudaMemcpyDeviceToHost, st);
		prof_mark(cb, PK_COPY);
		nvtxRangePop();
	}
	if (e == cudaSuccess && !rc && logits && nl > 0) {
		e = cudaMemcpyAsync(logits, cb->logits, (size_t)nl * V * 4, cudaMemcpyDeviceToHost, st);
		prof_mark(cb, PK_COPY);
	}
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
	if (cb->prof)
		prof_add(cb, nl == b->n_tokens);
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
	return 2 * cb->kv_bytes + cb->scratch_bytes + (size_t)cb->base.max_batch_tokens * sizeof(struct kern_top) +
	       sel_scratch_bytes(cb->base.max_batch_tokens, cb->w->hp.n_vocab);
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
	if (cb->prof)
		prof_report(cb->prof);
	prof_free(cb);
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
	cudaFree(cb->d_sel);
	cudaFree(cb->d_inv_t);
	hbuf_free(&cb->htop);
	hbuf_free(&cb->hinv);
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
		cb->gemv_bf16_max_t = env_is("LOCUS_CUDA_GEMV_BF16", "0")   ? 0
				      : env_is("LOCUS_CUDA_GEMV_BF16", "1") ? GEMV_MAX_T
									    : GEMV_BF16_MAX_T;
		cb->gemv_x8 = !env_is("LOCUS_CUDA_GEMV_X8", "0");
		cb->graphs_off = env_is("LOCUS_CUDA_GRAPHS", "0");
		cb->attn_split = !env_is("LOCUS_CUDA_ATTN_SPLIT", "0");
		cb->attn_tiled = !env_is("LOCUS_CUDA_ATTN_TILED", "0") && attn_tile_ok(hd);
		if (env_is("LOCUS_CUDA_PROFILE", "1")) {
			cb->prof = (struct cu_prof *)calloc(1, sizeof(*cb->prof));
			for (int i = 0; cb->prof && i < PROF_MAX; i++)
				if (cudaEventCreate(&cb->prof->ev[i]) != cudaSuccess) {
					prof_free(cb);
					(void)cudaGetLastError();
				}
			fprintf(stderr, "cuda backend: LOCUS_CUDA_PROFILE=1: %s\n",
				cb->prof ? "GPU time per operation, printed at close" : "cannot set up the events: no profile");
		}
		/* The tiles on tensor cores (LOCUS_CUDA_ATTN_MMA=0: on CUDA cores;
		 * no tiles, none): mma.sync needs sm_80 code */
		const char *am = getenv("LOCUS_CUDA_ATTN_MMA");
		if (cb->attn_tiled && !env_is("LOCUS_CUDA_ATTN_MMA", "0")) {
			const char *why = NULL;
			if (!attn_mma_ok(hd))
				why = "off: the head size is not a multiple of 16 up to 128";
			else if (!attn_mma_runs(cb->device))
				why = "off: needs compute capability 8.0 and a module built for it (LOCUS_CUDA_ARCH)";
			cb->attn_mma = !why;
			if (why && am)
				fprintf(stderr, "cuda backend: LOCUS_CUDA_ATTN_MMA=%s: prefill attention on tensor cores %s\n", am, why);
		}
		/* Programmatic dependent launch (cuda_kernels.cuh, pdl_wait;
		 * LOCUS_CUDA_PDL=0 turns it off): off while profiling, whose event
		 * records sit between the kernels. */
		const char *pd = getenv("LOCUS_CUDA_PDL");
		if (!env_is("LOCUS_CUDA_PDL", "0")) {
			const char *why = NULL;
			bool say = pd != NULL; /* said when asked for, or when the driver refuses it */
			if (cb->prof)
				why = "off while LOCUS_CUDA_PROFILE=1";
			else if (!pdl_runs(cb->device))
				why = "off: needs compute capability 9.0 and a module built for it (LOCUS_CUDA_ARCH)";
			else {
				/* one empty launch with the attribute: a driver that refuses
				 * it turns it off here rather than failing every step */
				launch(k_swiglu, dim3(1), dim3(32), 0, cb->stream, true, (const float *)NULL, (bf16 *)NULL, 1,
				       (int64_t)0);
				if (cudaStreamSynchronize(cb->stream) != cudaSuccess || cudaGetLastError() != cudaSuccess)
					why = "off: the driver refused a launch with it", say = true;
			}
			(void)cudaGetLastError();
			cb->pdl = !why;
			if (why && say)
				fprintf(stderr, "cuda backend: programmatic dependent launch %s\n", why);
		}
		fprintf(stderr, "cuda backend: decode GEMV activations %s, programmatic dependent launch %s, prefill "
			"attention %s\n", cb->gemv_x8 ? "int8 (Q8_0/Q4_0/Q4_1)" : "f32", cb->pdl ? "on" : "off",
			cb->attn_mma ? "on tensor cores" : cb->attn_tiled ? "on CUDA cores" : "per token on CUDA cores");
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
		    hbuf_alloc(&cb->hinv, Tz * sizeof(float), cb->numa_node) ||
		    hbuf_alloc(&cb->htiles, (Tz + 1) * sizeof(int32_t), cb->numa_node)) {
			snprintf(errbuf, errlen, "cuda backend: cannot allocate the batch buffers (pinned host memory)");
			goto err;
		}
		CU(cudaMalloc(&cb->d_top, Tz * sizeof(struct kern_top)), "cudaMalloc (top candidates)");
		CU(cudaMalloc(&cb->d_sel, sel_scratch_bytes((int)Tz, (int)V)), "cudaMalloc (argmax and top-64 segments)");
		CU(cudaMalloc(&cb->d_inv_t, Tz * sizeof(float)), "cudaMalloc (inverse temperatures)");
		CU(cudaMalloc(&cb->d_tiles, (Tz + 1) * sizeof(int32_t)), "cudaMalloc (attention tiles)");
	}

	/* Quantized rows for the decode GEMV, last: optional, they only get
	 * what the weights, KV cache and scratch left (LOCUS_CUDA_GEMV=0: none). */
	{
		int qrc = env_is("LOCUS_CUDA_GEMV", "0") ? -ENOENT : 0;
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
