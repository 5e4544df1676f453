/*
 * cpu_backend.c: the Llama-family forward pass on the CPU.
 *
 * A step runs as one dispatch on the worker pool: all threads walk the same
 * sequence of phases, separated by barriers (tp_barrier). Matrix products
 * split weight rows across threads and process every token of the batch
 * against each weight block (a batch reads the weights once); per-token
 * work (norms, RoPE, activation quantization) splits tokens across threads;
 * attention splits (token, kv head) pairs.
 *
 * KV cache: f16, k_cache and v_cache each laid out
 *     (layer, block, kv_head, block_size x head_dim tile)
 * with the K tile transposed (head_dim, block_size), so attention computes
 * a block's scores with one vector per head dimension, and the V tile as
 * rows (block_size, head_dim).
 * Scratch and KV memory are mapped on cfg->numa_node and first touched by
 * the (pinned) workers.
 *
 * Threading: kern_backend_step is called by one thread at a time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "alloc/alloc.h"
#include "kernels/backend_impl.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/threadpool.h"

#define ROW_ALIGN 16 /* weight rows per thread start at a multiple of this */
#define MAX_ACT 3    /* distinct weight types feeding one phase */

/*
 * Which activation buffer feeds which weight type in a phase. Every thread
 * computes the same plan on its own stack from the phase's weight types, so
 * no thread ever writes shared state to agree on it.
 */
struct act_plan {
	int n;
	uint32_t type[MAX_ACT];
	size_t row_bytes[MAX_ACT];
	uint8_t *data[MAX_ACT]; /* (max_batch_tokens, row_bytes) each */
};

/* Consecutive batch tokens of one sequence whose attention runs together,
 * sharing each K/V block load. */
struct attn_tile {
	int32_t t0, n;
};
#define ATTN_TILE 4 /* tokens per tile */

struct cpu_backend {
	struct kern_backend base;
	const struct kern_weights *w;
	struct tp_pool *pool;
	int n_threads;

	/* KV cache, f16: (layer, block, kv_head, tile); K tiles (head_dim, block_size), V tiles (block_size, head_dim). */
	uint16_t *k_cache, *v_cache;
	size_t kv_bytes;        /* bytes of each of k_cache, v_cache */
	size_t kv_layer_stride; /* elements per layer */
	size_t kv_blk_stride;   /* elements per (layer, block) */

	/* Scratch, rows of max_batch_tokens. */
	void *scratch;
	size_t scratch_bytes;
	float *x;    /* (T, n_embd) residual stream */
	float *xb;   /* (T, n_embd) normalized */
	float *q;    /* (T, n_head * head_dim) */
	float *k;    /* (T, n_kv * head_dim) */
	float *v;    /* (T, n_kv * head_dim) */
	float *att;  /* (T, n_head * head_dim) attention output */
	float *tmp;  /* (T, n_embd) projection output before the residual add */
	float *hg;   /* (T, n_ff) gate, then silu(gate) * up */
	float *hu;   /* (T, n_ff) up */
	float *rope; /* (T, head_dim): cos[hd/2] then sin[hd/2] per token */
	double *inv_freq; /* (head_dim/2) rope frequencies, radians per position */
	uint8_t *act[MAX_ACT]; /* (max_batch_tokens, act_max_row) each */
	size_t act_max_row;

	/* Per-step state read by the workers. */
	struct attn_tile *tiles; /* (max_batch_tokens) runs of tokens of one sequence */
	int32_t n_tiles;
	int32_t *n_pos;          /* (max_batch_tokens) positions each token sees: pos + 1 */
	const struct kern_batch *b;
	float *logits;
};

/* ---- helpers run inside the step, by every thread ---- */
static inline void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
	*lo = n * ith / nth;
	*hi = n * (ith + 1) / nth;
}

static struct act_plan act_plan(const struct cpu_backend *cb, const uint32_t *types, int n, int64_t k)
{
	struct act_plan p = {0};
	for (int i = 0; i < n; i++) {
		int j = 0;
		while (j < p.n && p.type[j] != types[i])
			j++;
		if (j < p.n)
			continue;
		p.type[p.n] = types[i];
		p.row_bytes[p.n] = kern_act_row_bytes(types[i], k);
		p.data[p.n] = cb->act[p.n];
		p.n++;
	}
	return p;
}

static int act_index(const struct act_plan *p, uint32_t type)
{
	for (int j = 0; j < p->n; j++)
		if (p->type[j] == type)
			return j;
	return 0; /* unreachable: plans are built from the same types */
}

/* Quantizes activation row t (k elements) for every weight type of the plan. */
static void act_quantize(const struct act_plan *p, const float *src, int64_t t, int64_t k)
{
	for (int j = 0; j < p->n; j++)
		kern_act_quantize_row(p->type[j], src, p->data[j] + (size_t)t * p->row_bytes[j], k);
}

struct mm_job {
	const struct kern_tensor *w;
	float *y;
	int64_t ldy;
};

/* The jobs' rows, concatenated, are split in ROW_ALIGN-aligned ranges. */
static void mm_run(const struct act_plan *ap, const struct mm_job *jobs, int n_jobs, int n_tok, int ith, int nth)
{
	int64_t total = 0;
	for (int j = 0; j < n_jobs; j++)
		total += jobs[j].w->ne[1];
	int64_t per = (total + nth - 1) / nth;
	per = (per + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
	int64_t lo = per * ith, hi = lo + per < total ? lo + per : total;
	int64_t base = 0;
	for (int j = 0; j < n_jobs && lo < hi; j++) {
		const struct kern_tensor *w = jobs[j].w;
		int64_t rows = w->ne[1];
		int64_t r0 = lo > base ? lo - base : 0, r1 = hi - base < rows ? hi - base : rows;
		if (r0 < r1) {
			int a = act_index(ap, w->type);
			kern_matmul(w->type, w->data, w->row_bytes, w->ne[0], ap->data[a], ap->row_bytes[a], n_tok,
				    jobs[j].y, jobs[j].ldy, r0, r1);
		}
		base += rows;
	}
}

static void add_bias(float *y, const struct kern_tensor *b, int64_t n)
{
	if (b->data)
		kern_add(y, (const float *)b->data, (int)n);
}

static void step_worker(void *ctx, int ith, int nth)
{
	struct cpu_backend *cb = ctx;
	const struct kern_weights *w = cb->w;
	const struct kern_hparams *hp = &w->hp;
	const struct kern_batch *b = cb->b;
	const int T = b->n_tokens, E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
	const int n_kv = hp->n_head_kv, group = hp->n_head / hp->n_head_kv;
	const int qd = hp->n_head * hd, kvd = n_kv * hd;
	const int bs = cb->base.kv_block_size;
	const float scale = 1.0f / sqrtf((float)hd);
	int64_t t0, t1;
	split(T, ith, nth, &t0, &t1);

	/* Embeddings and the RoPE table of each token. */
	for (int64_t t = t0; t < t1; t++) {
		const uint8_t *row = (const uint8_t *)w->tok_embd.data + (size_t)b->tokens[t] * w->tok_embd.row_bytes;
		kern_dequantize_row(w->tok_embd.type, row, cb->x + (size_t)t * E, E);
		float *cs = cb->rope + (size_t)t * hd;
		for (int i = 0; i < hd / 2; i++) {
			double a = (double)b->pos[t] * cb->inv_freq[i];
			cs[i] = (float)cos(a);
			cs[hd / 2 + i] = (float)sin(a);
		}
	}

	for (int l = 0; l < hp->n_layer; l++) {
		const struct kern_layer *L = &w->layers[l];
		uint16_t *kc = cb->k_cache + (size_t)l * cb->kv_layer_stride;
		uint16_t *vc = cb->v_cache + (size_t)l * cb->kv_layer_stride;

		/* A: residual add of the previous layer, attention norm, quantize. */
		uint32_t qkv_types[3] = {L->wq.type, L->wk.type, L->wv.type};
		struct act_plan ap = act_plan(cb, qkv_types, 3, E);
		for (int64_t t = t0; t < t1; t++) {
			float *x = cb->x + (size_t)t * E, *xb = cb->xb + (size_t)t * E;
			if (l > 0)
				kern_add(x, cb->tmp + (size_t)t * E, E);
			kern_rmsnorm(x, (const float *)L->attn_norm.data, xb, E, hp->norm_eps);
			act_quantize(&ap, xb, t, E);
		}
		tp_barrier(cb->pool);

		/* B: Q, K, V projections. */
		struct mm_job qkv[3] = {{&L->wq, cb->q, qd}, {&L->wk, cb->k, kvd}, {&L->wv, cb->v, kvd}};
		mm_run(&ap, qkv, 3, T, ith, nth);
		tp_barrier(cb->pool);

		/* C: biases, RoPE, K/V into the cache. */
		for (int64_t t = t0; t < t1; t++) {
			float *q = cb->q + (size_t)t * qd, *k = cb->k + (size_t)t * kvd, *v = cb->v + (size_t)t * kvd;
			add_bias(q, &L->bq, qd);
			add_bias(k, &L->bk, kvd);
			add_bias(v, &L->bv, kvd);
			const float *cs = cb->rope + (size_t)t * hd;
			kern_rope(q, hp->n_head, hd, cs, hp->rope_type == KERN_ROPE_NEOX);
			kern_rope(k, n_kv, hd, cs, hp->rope_type == KERN_ROPE_NEOX);
			const struct kern_seq *s = &b->seqs[b->seq_idx[t]];
			int32_t p = b->pos[t];
			size_t off = (size_t)s->block_table[p / bs] * cb->kv_blk_stride;
			for (int h = 0; h < n_kv; h++) {
				/* V rows as they are; K transposed within its block. */
				size_t vo = off + (size_t)h * bs * hd + (size_t)(p % bs) * hd;
				size_t ko = off + (size_t)h * bs * hd + (size_t)(p % bs);
				kern_f32_to_f16_row(v + (size_t)h * hd, vc + vo, hd);
				for (int d = 0; d < hd; d++)
					kc[ko + (size_t)d * bs] = kern_f32_to_f16(k[(size_t)h * hd + d]);
			}
		}
		tp_barrier(cb->pool);

		/* D: attention, one (tile, kv head) item at a time, interleaved
		 * across threads so causal prefill work balances. */
		for (int64_t it = ith; it < (int64_t)cb->n_tiles * n_kv; it += nth) {
			const struct attn_tile *tl = &cb->tiles[it / n_kv];
			int h = (int)(it % n_kv);
			const struct kern_seq *s = &b->seqs[b->seq_idx[tl->t0]];
			size_t qo = (size_t)tl->t0 * qd + (size_t)h * group * hd;
			kern_attn(cb->q + qo, qd, tl->n, group, hd, scale, cb->n_pos + tl->t0, kc + (size_t)h * bs * hd,
				  vc + (size_t)h * bs * hd, cb->kv_blk_stride, s->block_table, bs, cb->att + qo, qd);
		}
		tp_barrier(cb->pool);

		/* E: quantize attention output for the output projection. */
		ap = act_plan(cb, &L->wo.type, 1, qd);
		for (int64_t t = t0; t < t1; t++)
			act_quantize(&ap, cb->att + (size_t)t * qd, t, qd);
		tp_barrier(cb->pool);

		/* F: output projection. */
		struct mm_job o = {&L->wo, cb->tmp, E};
		mm_run(&ap, &o, 1, T, ith, nth);
		tp_barrier(cb->pool);

		/* G: residual, FFN norm, quantize. */
		uint32_t ffn_types[2] = {L->w_gate.type, L->w_up.type};
		ap = act_plan(cb, ffn_types, 2, E);
		for (int64_t t = t0; t < t1; t++) {
			float *x = cb->x + (size_t)t * E, *xb = cb->xb + (size_t)t * E;
			kern_add(x, cb->tmp + (size_t)t * E, E);
			kern_rmsnorm(x, (const float *)L->ffn_norm.data, xb, E, hp->norm_eps);
			act_quantize(&ap, xb, t, E);
		}
		tp_barrier(cb->pool);

		/* H: gate and up projections. */
		struct mm_job gu[2] = {{&L->w_gate, cb->hg, F}, {&L->w_up, cb->hu, F}};
		mm_run(&ap, gu, 2, T, ith, nth);
		tp_barrier(cb->pool);

		/* I: SwiGLU, quantize. */
		ap = act_plan(cb, &L->w_down.type, 1, F);
		for (int64_t t = t0; t < t1; t++) {
			float *g = cb->hg + (size_t)t * F;
			kern_silu_mul(g, cb->hu + (size_t)t * F, F);
			act_quantize(&ap, g, t, F);
		}
		tp_barrier(cb->pool);

		/* J: down projection. */
		struct mm_job d = {&L->w_down, cb->tmp, E};
		mm_run(&ap, &d, 1, T, ith, nth);
		tp_barrier(cb->pool);
	}

	/* K: last residual add and output norm, for the tokens that want logits. */
	int64_t n_out = b->n_logits;
	if (n_out == 0)
		return;
	struct act_plan ap = act_plan(cb, &w->output.type, 1, E);
	int64_t l0, l1;
	split(n_out, ith, nth, &l0, &l1);
	for (int64_t i = l0; i < l1; i++) {
		int64_t t = b->logit_idx[i];
		float *x = cb->x + (size_t)t * E;
		kern_add(x, cb->tmp + (size_t)t * E, E);
		kern_rmsnorm(x, (const float *)w->output_norm.data, cb->xb + (size_t)i * E, E, hp->norm_eps);
		act_quantize(&ap, cb->xb + (size_t)i * E, i, E);
	}
	tp_barrier(cb->pool);

	/* L: logits. */
	struct mm_job lg = {&w->output, cb->logits, hp->n_vocab};
	mm_run(&ap, &lg, 1, (int)n_out, ith, nth);
}

static int cpu_step(kern_backend_t *be, const struct kern_batch *b, float *logits)
{
	struct cpu_backend *cb = (struct cpu_backend *)be;
	cb->n_tiles = 0;
	for (int32_t t = 0; t < b->n_tokens; t++) {
		cb->n_pos[t] = b->pos[t] + 1;
		struct attn_tile *last = cb->n_tiles ? &cb->tiles[cb->n_tiles - 1] : NULL;
		if (last && last->n < ATTN_TILE && b->seq_idx[last->t0] == b->seq_idx[t])
			last->n++;
		else
			cb->tiles[cb->n_tiles++] = (struct attn_tile){t, 1};
	}
	cb->b = b;
	cb->logits = logits;
	tp_run(cb->pool, step_worker, cb);
	cb->b = NULL;
	return 0;
}

static int cpu_kv_copy(kern_backend_t *be, int32_t src, int32_t dst)
{
	struct cpu_backend *cb = (struct cpu_backend *)be;
	for (int l = 0; l < cb->w->hp.n_layer; l++) {
		size_t base = (size_t)l * cb->kv_layer_stride;
		memcpy(cb->k_cache + base + (size_t)dst * cb->kv_blk_stride,
		       cb->k_cache + base + (size_t)src * cb->kv_blk_stride, cb->kv_blk_stride * 2);
		memcpy(cb->v_cache + base + (size_t)dst * cb->kv_blk_stride,
		       cb->v_cache + base + (size_t)src * cb->kv_blk_stride, cb->kv_blk_stride * 2);
	}
	return 0;
}

static size_t cpu_mem_bytes(const kern_backend_t *be)
{
	const struct cpu_backend *cb = (const struct cpu_backend *)be;
	return 2 * cb->kv_bytes + cb->scratch_bytes;
}

static void cpu_close(kern_backend_t *be)
{
	struct cpu_backend *cb = (struct cpu_backend *)be;
	tp_destroy(cb->pool);
	alloc_numa_unmap(cb->k_cache, cb->kv_bytes);
	alloc_numa_unmap(cb->v_cache, cb->kv_bytes);
	alloc_numa_unmap(cb->scratch, cb->scratch_bytes);
	alloc_free(cb->inv_freq);
	alloc_free(cb->tiles);
	alloc_free(cb->n_pos);
	alloc_free(cb);
}

static const struct kern_backend_ops cpu_ops = {
	.name = "cpu",
	.step = cpu_step,
	.kv_copy = cpu_kv_copy,
	.mem_bytes = cpu_mem_bytes,
	.close = cpu_close,
};

/* First touch of the KV cache and scratch by the (pinned) workers. */
struct touch_ctx {
	uint8_t *ptr[3];
	size_t len[3];
};

static void touch_worker(void *ctx, int ith, int nth)
{
	struct touch_ctx *tc = ctx;
	for (int i = 0; i < 3; i++) {
		int64_t lo, hi;
		split((int64_t)tc->len[i], ith, nth, &lo, &hi);
		memset(tc->ptr[i] + lo, 0, (size_t)(hi - lo));
	}
}

static size_t act_row_max(const struct kern_weights *w, int64_t k)
{
	size_t m = 0;
	const struct kern_tensor *ts[] = {&w->output};
	for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
		size_t b = kern_act_row_bytes(ts[i]->type, k);
		m = b > m ? b : m;
	}
	for (int l = 0; l < w->hp.n_layer; l++) {
		const struct kern_layer *L = &w->layers[l];
		const struct kern_tensor *lt[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
		for (size_t i = 0; i < sizeof(lt) / sizeof(lt[0]); i++) {
			size_t b = kern_act_row_bytes(lt[i]->type, lt[i]->ne[0]);
			m = b > m ? b : m;
		}
	}
	return m;
}

kern_backend_t *kern_backend_cpu_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
				      char *errbuf, size_t errlen)
{
	const struct kern_hparams *hp = &w->hp;
	if (cfg->kv_block_size < 1 || cfg->kv_block_size > 256 || cfg->n_kv_blocks < 1 || cfg->max_batch_tokens < 1 ||
	    cfg->max_batch_tokens > (1 << 16)) {
		snprintf(errbuf, errlen, "cpu backend: block size 1..256, at least one KV block and a batch of 1..65536 tokens are required");
		return NULL;
	}
	int group = hp->n_head / hp->n_head_kv;
	if (group * ATTN_TILE > 256 || hp->head_dim > 512 || cfg->kv_block_size * hp->head_dim > 8192) {
		snprintf(errbuf, errlen,
			 "cpu backend: %d query heads per KV head, head size %d and KV blocks of %d exceed the "
			 "attention kernel's limits (64 heads per group, head size 512, block x head size 8192)",
			 group, hp->head_dim, cfg->kv_block_size);
		return NULL;
	}
	struct cpu_backend *cb = alloc_zmem(sizeof(*cb));
	if (!cb) {
		snprintf(errbuf, errlen, "cpu backend: out of memory");
		return NULL;
	}
	cb->base.ops = &cpu_ops;
	cb->base.w = w;
	cb->base.n_kv_blocks = cfg->n_kv_blocks;
	cb->base.kv_block_size = cfg->kv_block_size;
	cb->base.max_batch_tokens = cfg->max_batch_tokens;
	cb->w = w;
	cb->n_threads = cfg->n_threads;
	if (cb->n_threads <= 0) {
		cpu_set_t set;
		cb->n_threads = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
	}
	/* Workers 1.. are pinned here; worker 0 is whichever thread calls
	 * kern_backend_step, which its owner pins (the dispatcher, generate). */
	cb->pool = tp_create(cb->n_threads, cfg->cpus, cfg->n_cpus, 0, errbuf, errlen);
	if (!cb->pool)
		goto err;

	const int hd = hp->head_dim, T = cfg->max_batch_tokens;
	cb->kv_blk_stride = (size_t)hp->n_head_kv * cfg->kv_block_size * hd;
	cb->kv_layer_stride = cb->kv_blk_stride * (size_t)cfg->n_kv_blocks;
	cb->kv_bytes = cb->kv_layer_stride * (size_t)hp->n_layer * sizeof(uint16_t);
	enum alloc_policy pol = cfg->numa_node >= 0 ? ALLOC_POLICY_PREFERRED : ALLOC_POLICY_OFF;
	cb->k_cache = alloc_numa_map(cb->kv_bytes, cfg->numa_node, pol, NULL);
	cb->v_cache = alloc_numa_map(cb->kv_bytes, cfg->numa_node, pol, NULL);

	size_t qd = (size_t)hp->n_head * hd, kvd = (size_t)hp->n_head_kv * hd;
	size_t E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
	size_t floats = (size_t)T * (3 * E + 2 * qd + 2 * kvd + 2 * F + (size_t)hd);
	cb->act_max_row = (act_row_max(w, hp->n_embd) + 63) & ~(size_t)63;
	cb->scratch_bytes = floats * sizeof(float) + MAX_ACT * (size_t)T * cb->act_max_row + 64 * 16;
	cb->scratch = alloc_numa_map(cb->scratch_bytes, cfg->numa_node, pol, NULL);
	cb->inv_freq = alloc_array((size_t)hd / 2, sizeof(double));
	cb->tiles = alloc_array((size_t)T, sizeof(*cb->tiles));
	cb->n_pos = alloc_array((size_t)T, sizeof(*cb->n_pos));
	if (!cb->k_cache || !cb->v_cache || !cb->scratch || !cb->inv_freq || !cb->tiles || !cb->n_pos) {
		snprintf(errbuf, errlen, "cpu backend: cannot allocate %zu MiB of KV cache and %zu MiB of scratch",
			 2 * cb->kv_bytes >> 20, cb->scratch_bytes >> 20);
		goto err;
	}
	uint8_t *p = cb->scratch;
#define CARVE(field, n)                                                   \
	do {                                                              \
		cb->field = (float *)p;                                   \
		p += ((size_t)(n) * sizeof(float) + 63) & ~(size_t)63;    \
	} while (0)
	CARVE(x, T * E);
	CARVE(xb, T * E);
	CARVE(tmp, T * E);
	CARVE(q, T * qd);
	CARVE(att, T * qd);
	CARVE(k, T * kvd);
	CARVE(v, T * kvd);
	CARVE(hg, T * F);
	CARVE(hu, T * F);
	CARVE(rope, (size_t)T * hd);
#undef CARVE
	for (int i = 0; i < MAX_ACT; i++) {
		cb->act[i] = p;
		p += (size_t)T * cb->act_max_row;
	}

	if (kern_rope_inv_freq(w, cb->inv_freq, "cpu backend", errbuf, errlen))
		goto err;

	struct touch_ctx tc = {{(uint8_t *)cb->k_cache, (uint8_t *)cb->v_cache, cb->scratch},
			       {cb->kv_bytes, cb->kv_bytes, cb->scratch_bytes}};
	tp_run(cb->pool, touch_worker, &tc);
	return &cb->base;
err:
	cpu_close(&cb->base);
	return NULL;
}
