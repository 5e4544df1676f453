/*
 * cuda_module.h: the boundary between the programs and liblocus_cuda.so,
 * the CUDA backend built as a module (internal to kernels/).
 *
 * kernels/cuda_loader.c opens the module with dlopen, looks up the entry
 * points below by name and first hands it the host helpers it shares with
 * the CPU backend (struct lcu_host), so the module needs no symbol from
 * the program. Keeping CUDA out of the programs' own link lets a CUDA
 * build run on a machine with no GPU, driver or CUDA runtime.
 */
#ifndef LOCUS_KERNELS_CUDA_MODULE_H
#define LOCUS_KERNELS_CUDA_MODULE_H

#include "alloc/alloc.h"
#include "kernels/kernels.h"

#define LOCUS_CUDA_MODULE_NAME "liblocus_cuda.so"

/* The version of this boundary: bumped whenever an entry point or a struct
 * below changes. The loader refuses a module built for another version
 * (a program and a module from different commits). */
#define LCU_ABI 11
typedef int (*locus_cuda_abi_fn)(void);

/* locus_cuda_init: called once, before anything else. */
struct lcu_host {
	void (*dequantize_row)(uint32_t type, const void *src, float *dst, int64_t n); /* kern_dequantize_row */
	void *(*numa_map)(size_t bytes, int node, enum alloc_policy policy, int *bound_out); /* alloc_numa_map */
	void (*numa_unmap)(void *p, size_t bytes);                                     /* alloc_numa_unmap */
	int (*rope_inv_freq)(const struct kern_weights *w, double *out, const char *who, char *errbuf,
			     size_t errlen);                                               /* kern_rope_inv_freq */
};
typedef void (*locus_cuda_init_fn)(const struct lcu_host *host);

/* locus_cuda_open: the backend, as kern_backend_cuda_open documents. */
typedef kern_backend_t *(*locus_cuda_open_fn)(const struct kern_weights *w, const struct kern_backend_config *cfg,
					      char *errbuf, size_t errlen);

/*
 * locus_cuda_kernel_check: runs one kernel of the backend on the device
 * with host inputs and outputs, for the checks against the CPU kernels
 * (tools/cuda-check). Returns 0, -ENODEV when there is no usable GPU (no
 * device, or a driver older than the runtime), or another -errno with the
 * reason in errbuf.
 */
enum lcu_kernel {
	LCU_RMSNORM,   /* in: x (rows, n), w (n), add (rows, n) or NULL; out: y (rows, n) = rmsnorm(x + add),
			* bf16-rounded, and with add, x_out (rows, n) = x + add (the residual written back) */
	LCU_SWIGLU,    /* in: gu (rows, 2n); out: h (rows, n), bf16-rounded */
	LCU_ARGMAX,    /* in: x (rows, n); out: ids (rows) as int32 */
	LCU_GEMV,      /* in: qw (rows, q_row_bytes) of qtype, x (T, n) rounded to bf16 on the way;
			* out: y (T, rows) = x . dequant(qw)^T, the decode path's fused GEMV */
	LCU_TOP,       /* in: x (rows, n), w (rows) each row's inverse temperature or NULL (1);
			* out: top (rows), each row's struct kern_top */
	LCU_ATTN,      /* in: x = q (rows = tokens, n = n_head * hd), the cache k, v and the
			* tables below; out: y (rows, n) = paged causal attention, bf16-rounded,
			* by the path attn names */
	LCU_QKV_POST,  /* in: x = fused q|k|v rows (rows = tokens, n = (n_head + 2 n_kv) hd), pos,
			* biases bq, bk, bv (each may be NULL), inv_freq (hd / 2), neox; out: y (rows, n) =
			* q rotated, then k rotated and v as the cache holds them (f16, read back) */
};
enum lcu_attn { LCU_ATTN_WHOLE, LCU_ATTN_SPLIT, LCU_ATTN_TILED, LCU_ATTN_MMA };
struct lcu_check_args {
	enum lcu_kernel kernel;
	int gpu;       /* device */
	int rows, n;
	float eps;
	const float *x, *w;
	float *y;
	const float *add; /* LCU_RMSNORM */
	float *x_out;
	int32_t *ids;
	struct kern_top *top;
	/* LCU_ATTN: a cache of n_blocks blocks of bs positions, laid out as
	 * the backend's (block, kv head, position in block, dimension), given
	 * in f32 and rounded to f16 on the way; token t (at position pos[t])
	 * sees positions 0..pos[t] through the block table at bt + bt_off[t] */
	int n_head, n_kv, hd, bs, n_blocks, n_bt;
	const int32_t *pos, *bt_off, *bt;
	const float *k, *v;
	enum lcu_attn attn;
	/* LCU_QKV_POST (also n_head, n_kv, hd, pos) */
	const float *bq, *bk, *bv;
	const double *inv_freq;
	int neox;
	/* LCU_GEMV; glu: qw holds 2 x rows rows (gate, then up) and y (T, rows)
	 * = silu(gate) * up, bf16-rounded (the decode step's gate|up GEMV with
	 * its SwiGLU), T up to 2 */
	uint32_t qtype;
	int T;
	const void *qw;
	size_t q_row_bytes;
	int glu;
};
typedef int (*locus_cuda_kernel_check_fn)(const struct lcu_check_args *a, char *errbuf, size_t errlen);

/*
 * locus_cuda_ceilings: what the device can do, measured now (median of 9
 * after 2 warm-ups, CUDA events): a 1 GiB device-to-device copy (read +
 * write bytes per second) and an 8192^3 bf16 cuBLAS GEMM with f32
 * accumulation. The denominators of the backend's roofline fractions.
 */
struct lcu_ceilings {
	char name[256];
	double copy_gbps;
	double gemm_tflops;
};
typedef int (*locus_cuda_ceilings_fn)(int gpu, struct lcu_ceilings *out, char *errbuf, size_t errlen);

/*
 * locus_cuda_kbench: times the backend's kernel paths on Llama-3-8B shapes
 * (GEMMs at several batch sizes, add+RMSNorm, SwiGLU, RoPE + KV write,
 * argmax, decode and prefill attention) and prints each next to the
 * ceilings it is bound by, measured in the same run (bench/kbench.c).
 */
typedef int (*locus_cuda_kbench_fn)(int gpu, int quick, char *errbuf, size_t errlen);

#endif
