/*
 * kernels: tensor element types, the weights of a Llama-family model as the
 * backends see them, and the backend interface (CPU now; CUDA and null later).
 *
 * The engine loads a GGUF file, fills a struct kern_weights with views into
 * the mapped file, opens a backend on it, and then calls kern_backend_step()
 * with batches of tokens from any number of sequences (prefill chunks and
 * decode tokens mixed). The KV cache lives in the backend, in fixed-size
 * blocks; the engine owns the block allocator and passes each sequence's
 * block table with the batch.
 *
 * Threading: a backend is driven by one thread at a time (the dispatcher);
 * the CPU backend fans each step out to its own worker pool.
 */
#ifndef LOCUS_KERNELS_H
#define LOCUS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Element types. Values are the GGML type ids, so GGUF files map directly. */
enum kern_type {
	KERN_TYPE_F32 = 0,
	KERN_TYPE_F16 = 1,
	KERN_TYPE_Q4_0 = 2,
	KERN_TYPE_Q4_1 = 3,
	KERN_TYPE_Q8_0 = 8,
	KERN_TYPE_Q4_K = 12,
	KERN_TYPE_Q6_K = 14,
	KERN_TYPE_BF16 = 30,
};
#define KERN_TYPE_MAX 64 /* type ids at or above are unknown */

/* Name of any GGML type id ("Q5_K", ...), NULL when unknown. */
const char *kern_type_name(uint32_t type);
/* Block geometry of any known GGML type (also the unsupported ones, so a
 * file's layout can be validated); 0 when unknown. */
int kern_type_block_elems(uint32_t type);
int kern_type_block_bytes(uint32_t type);
/* True for the types the backends compute with. */
bool kern_type_supported(uint32_t type);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block. */
size_t kern_row_bytes(uint32_t type, int64_t n);

/* Reference conversions between f32 and a row of a supported type. n must be
 * a multiple of the block size. Quantization is round-to-nearest with the
 * per-block scales the formats define (not llama.cpp's search for the best
 * scales): used to write test models, never on the hot path. */
void kern_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
void kern_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* Index of the first maximum of x[0..n) (NaNs never win; 0 when all are
 * NaN). Vectorized: greedy sampling runs it over the whole vocabulary. */
int32_t kern_argmax(const float *x, int32_t n);

/*
 * The candidates of one logits row, for sampling without the row itself (a
 * GPU backend hands these out instead of n_vocab logits): the KERN_TOP_K
 * largest logits in descending order, ties by lower id (all of them, so
 * sorted, when the row is shorter), and sums over the whole row, max its
 * largest number: lse = log sum exp(x) (for log-probabilities), lz = log
 * sum exp(x - max) and lz_t = log sum exp((x - max) * inv_t) at the row's
 * inverse temperature (the normalizers of top_p and of a draw from the
 * whole row, kept relative to max for their precision; see
 * sampler_top_covers). Order is that of kern_top_key: NaNs below
 * everything, -0 equal to +0. The sums are NaN when a logit is.
 */
#define KERN_TOP_K 64
struct kern_top {
	int32_t n; /* min(KERN_TOP_K, n_vocab) */
	float lse, lz, lz_t;
	int32_t id[KERN_TOP_K];
	float logit[KERN_TOP_K];
};

/* An unsigned key ordered as the floats are (NaN lowest, -0 = +0). */
static inline uint32_t kern_top_key(float v)
{
	union {
		float f;
		uint32_t u;
	} c = {.f = v == 0.0f ? 0.0f : v};
	if (v != v)
		return 0;
	return (c.u & 0x80000000u) ? ~c.u : c.u | 0x80000000u;
}

/* y[i] = exp((x[i] - shift) * scale), vectorized (relative error ~1e-7;
 * arguments below exp's range give ~1e-38 rather than 0; NaN and -inf
 * inputs are the caller's to leave out). */
void kern_exp_shift(const float *x, float *y, int32_t n, float shift, float scale);

/* The candidates alone: out->n, id and logit (the sums untouched). */
void kern_top_select(const float *x, int32_t n, struct kern_top *out);
/* The reference candidates of a row at inverse temperature inv_t (the CUDA
 * kernel is checked against it, and backends without their own use it). */
void kern_top_row(const float *x, int32_t n, float inv_t, struct kern_top *out);

/* A 1-D or 2-D weight: ne[0] elements per row (the reduction dimension of a
 * matrix product), ne[1] rows. data points into the mapped model file. */
struct kern_tensor {
	uint32_t type;
	int64_t ne[2];
	size_t row_bytes;
	const void *data; /* NULL: tensor absent (optional biases) */
};

enum kern_arch { KERN_ARCH_LLAMA = 0, KERN_ARCH_QWEN2 = 1 };
enum kern_rope { KERN_ROPE_NORM = 0, KERN_ROPE_NEOX = 1 };

struct kern_hparams {
	enum kern_arch arch;
	int32_t n_layer;
	int32_t n_embd;
	int32_t n_head;
	int32_t n_head_kv;
	int32_t head_dim;
	int32_t n_ff;
	int32_t n_vocab;
	int32_t n_ctx_train;
	float norm_eps;
	enum kern_rope rope_type;
	int32_t n_rot;       /* rotated dims per head (== head_dim for these archs) */
	float rope_freq_base;
	float rope_freq_scale; /* linear rope scaling: positions are multiplied by it (1 = off) */
};

struct kern_layer {
	struct kern_tensor attn_norm; /* (n_embd) f32 */
	struct kern_tensor wq;        /* (n_embd) -> (n_head*head_dim) */
	struct kern_tensor wk;        /* (n_embd) -> (n_head_kv*head_dim) */
	struct kern_tensor wv;
	struct kern_tensor wo;        /* (n_head*head_dim) -> (n_embd) */
	struct kern_tensor bq, bk, bv; /* qwen2 only, f32 */
	struct kern_tensor ffn_norm;
	struct kern_tensor w_gate;    /* (n_embd) -> (n_ff) */
	struct kern_tensor w_up;
	struct kern_tensor w_down;    /* (n_ff) -> (n_embd) */
};

struct kern_weights {
	struct kern_hparams hp;
	struct kern_tensor tok_embd;    /* (n_embd) x n_vocab rows */
	struct kern_tensor output_norm; /* (n_embd) f32 */
	struct kern_tensor output;      /* (n_embd) x n_vocab rows; == tok_embd when tied */
	struct kern_tensor rope_freqs;  /* (n_rot/2) f32 divisors of the rope frequencies
					 * (Llama-3 scaling, as the GGUF converter writes it); optional */
	struct kern_layer *layers;      /* (n_layer) */
};

/* ---- backends ---- */
typedef struct kern_backend kern_backend_t;

struct kern_backend_config {
	int n_threads;        /* workers including the calling thread; <= 0: one per allowed CPU */
	const int *cpus;      /* pin worker i (i >= 1) to cpus[i % n_cpus]; NULL: no pinning. Worker 0
			       * is the thread calling kern_backend_step: its owner pins it to cpus[0] */
	int n_cpus;
	int numa_node;        /* node for the KV cache and scratch; -1: none */
	int kv_block_size;    /* tokens per KV block (e.g. 16) */
	int32_t n_kv_blocks;  /* blocks in the pool */
	int max_batch_tokens; /* upper bound of kern_batch.n_tokens */
	int gpu;              /* cuda: the device index; ignored by the other backends */
};

/* One sequence as seen by a step: its KV block table (physical block ids). */
struct kern_seq {
	const int32_t *block_table;
	int32_t n_blocks;
};

/*
 * A step: n_tokens tokens from n_seqs sequences. Tokens of one sequence come
 * in increasing position order; token i attends to positions [0, pos[i]] of
 * its sequence: those cached by earlier steps and those of this step.
 * The caller guarantees each sequence has blocks for every position it uses.
 */
struct kern_batch {
	int32_t n_tokens;
	const int32_t *tokens;   /* (n_tokens) token ids */
	const int32_t *pos;      /* (n_tokens) position in its sequence */
	const int32_t *seq_idx;  /* (n_tokens) index into seqs */
	int32_t n_seqs;
	const struct kern_seq *seqs;
	int32_t n_logits;
	const int32_t *logit_idx; /* (n_logits) token indices whose logits are wanted */
	/* (n_logits) or NULL (all 1): each logits row's inverse temperature,
	 * finite and > 0, for its struct kern_top's lz_t (step_top only) */
	const float *inv_temp;
};

/* Opens the CPU backend on `w` (which must outlive it). Returns NULL and sets
 * *err (negative errno) and the message in errbuf on failure. */
kern_backend_t *kern_backend_cpu_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
				      char *errbuf, size_t errlen);
/* The null backend: no compute, deterministic logits (one peak per token,
 * at a position-dependent id avoiding the first 32 ids, so generation runs
 * to max_tokens), after sleeping delay_us per step. Measures the serving
 * path alone. */
kern_backend_t *kern_backend_null_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
				       int delay_us, char *errbuf, size_t errlen);
/* The CUDA backend: loads liblocus_cuda.so from the program's directory (or
 * $LOCUS_CUDA_MODULE) on first use. Fails, with the reason in errbuf, when
 * the build has no CUDA, or the module, the driver or the GPU is missing.
 * Weights are converted to bf16 on the device; the KV cache and scratch
 * live there too, host staging on cfg->numa_node. */
kern_backend_t *kern_backend_cuda_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
				       char *errbuf, size_t errlen);
/* The module's handle (opened once, never closed), or NULL with the
 * reason in errbuf. For tools that call its other entry points. */
void *kern_cuda_module(char *errbuf, size_t errlen);
const char *kern_backend_name(const kern_backend_t *be);
/* Runs the batch; writes logits (n_logits, n_vocab). 0 or -errno. */
int kern_backend_step(kern_backend_t *be, const struct kern_batch *b, float *logits);
/* The same, plus argmax[i] = the index of the largest logit of row i (greedy
 * sampling). logits may be NULL when kern_backend_argmax_only() says the
 * backend can pick without materializing the rows (the null backend; a GPU
 * backend sampling on the device). */
int kern_backend_step_argmax(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax);
bool kern_backend_argmax_only(const kern_backend_t *be);
/* The same, plus top[i] = the candidates of row i (struct kern_top).
 * logits may be NULL when kern_backend_top_native() says the backend picks
 * them on its side (the CUDA backend: 528 bytes per row cross PCIe instead
 * of 4 * n_vocab); otherwise the rows are computed into logits and the
 * candidates picked on the host. */
int kern_backend_step_top(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax,
			  struct kern_top *top);
bool kern_backend_top_native(const kern_backend_t *be);
/* After kern_backend_step_top without logits (a native backend): copies
 * the rows rows[0..n) of that step's logits to logits + rows[i] * n_vocab,
 * for the rows the candidates cannot serve. Where step_top had to be
 * given logits, they are all there already: returns 0 and copies nothing. */
int kern_backend_fetch_rows(kern_backend_t *be, const int32_t *rows, int32_t n, float *logits);
/* Copies the cached K/V of block src to block dst (prefix sharing, forks). */
int kern_backend_kv_copy(kern_backend_t *be, int32_t src_block, int32_t dst_block);
/* Bytes the backend holds beyond the weights (KV cache, scratch). */
size_t kern_backend_mem_bytes(const kern_backend_t *be);
void kern_backend_close(kern_backend_t *be);

#endif
