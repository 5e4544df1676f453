/*
 * backend_impl.h: what a backend implements (internal to kernels/).
 * Each backend embeds struct kern_backend first and fills an ops table with
 * designated initializers; kern_backend_* in backend.c validate arguments
 * once for all backends and dispatch.
 */
#ifndef LOCUS_KERNELS_BACKEND_IMPL_H
#define LOCUS_KERNELS_BACKEND_IMPL_H

#include "kernels/kernels.h"

struct kern_backend_ops {
	const char *name;
	int (*step)(kern_backend_t *be, const struct kern_batch *b, float *logits);
	/* optional: step that also (or only, when logits is NULL) picks each
	 * row's argmax; without it the wrapper runs step and scans the rows */
	int (*step_argmax)(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax);
	/* optional: step_argmax plus each row's struct kern_top; logits may
	 * be NULL. Without it the wrapper computes the rows and picks on the host */
	int (*step_top)(kern_backend_t *be, const struct kern_batch *b, float *logits, int32_t *argmax,
			struct kern_top *top);
	/* optional (with step_top): copies rows rows[0..n) of the logits of the
	 * last step_top called without logits to logits + rows[i] * n_vocab */
	int (*fetch_rows)(kern_backend_t *be, const int32_t *rows, int32_t n, float *logits);
	int (*kv_copy)(kern_backend_t *be, int32_t src_block, int32_t dst_block); /* optional */
	size_t (*mem_bytes)(const kern_backend_t *be);                              /* optional */
	void (*close)(kern_backend_t *be);
};

/* RoPE frequencies (radians per position) of the head_dim/2 rotated pairs:
 * base^(-2i/n_rot) * freq_scale, divided by the model's rope_freqs factors
 * when it has them (Llama-3 scaling). 0, or -EINVAL with the reason in
 * errbuf (prefixed by who) when a factor is not positive. */
int kern_rope_inv_freq(const struct kern_weights *w, double *out, const char *who, char *errbuf, size_t errlen);

struct kern_backend {
	const struct kern_backend_ops *ops;
	const struct kern_weights *w;
	int32_t n_kv_blocks;
	int kv_block_size;
	int max_batch_tokens;
};

#endif
