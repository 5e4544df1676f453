/*
 * model.c: GGUF -> struct kern_weights for the `llama` and `qwen2`
 * architectures. Every tensor is checked for presence, type, and shape
 * against the hyperparameters before the backends see it, so the kernels
 * can trust row lengths and counts.
 */
#include "engine/model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc/alloc.h"

struct loader {
	struct model *m;
	const struct gguf_file *f;
	char *err;
	size_t errlen;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int key_u32(struct loader *L, const char *key, int32_t *out, bool required, int32_t def, int32_t max)
{
	char full[128];
	uint32_t v;
	snprintf(full, sizeof(full), "%s.%s", L->m->arch, key);
	int rc = gguf_get_u32(L->f, full, &v);
	if (rc == -ENOENT && !required) {
		*out = def;
		return 0;
	}
	if (rc == -ENOENT) {
		snprintf(L->err, L->errlen, "model: missing key '%s'", full);
		return -EINVAL;
	}
	if (rc || v > (uint32_t)max) {
		snprintf(L->err, L->errlen, "model: key '%s' is not an integer in 0..%d", full, max);
		return -EINVAL;
	}
	*out = (int32_t)v;
	return 0;
}

static int key_f32(struct loader *L, const char *key, float *out, float def)
{
	char full[128];
	snprintf(full, sizeof(full), "%s.%s", L->m->arch, key);
	int rc = gguf_get_f32(L->f, full, out);
	if (rc == -ENOENT) {
		*out = def;
		return 0;
	}
	if (rc || !(*out == *out)) {
		snprintf(L->err, L->errlen, "model: key '%s' is not a number", full);
		return -EINVAL;
	}
	return 0;
}

/* Binds tensor `name` expecting ne = (ne0) or (ne0, ne1); ne1 < 0 means 1-D. */
static int bind(struct loader *L, struct kern_tensor *t, const char *name, int64_t ne0, int64_t ne1, bool required,
		bool want_f32)
{
	const struct gguf_tensor *g = gguf_find_tensor(L->f, name);
	memset(t, 0, sizeof(*t));
	if (!g) {
		if (!required)
			return 0;
		snprintf(L->err, L->errlen, "model: missing tensor '%s'", name);
		return -EINVAL;
	}
	int64_t want1 = ne1 < 0 ? 1 : ne1;
	uint32_t want_dims = ne1 < 0 ? 1 : 2;
	bool dims_ok = g->ne[2] == 1 && g->ne[3] == 1 && (g->n_dims == want_dims || (ne1 < 0 && g->ne[1] == 1));
	if (!dims_ok || g->ne[0] != ne0 || g->ne[1] != want1) {
		snprintf(L->err, L->errlen,
			 "model: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
			 (long long)g->ne[0], (long long)g->ne[1], (long long)g->ne[2], (long long)g->ne[3],
			 (long long)ne0, (long long)want1);
		return -EINVAL;
	}
	if (want_f32 && g->type != KERN_TYPE_F32) {
		snprintf(L->err, L->errlen, "model: tensor '%s' is %s, only F32 is supported for norms and biases",
			 name, kern_type_name(g->type));
		return -EINVAL;
	}
	if (!kern_type_supported(g->type)) {
		snprintf(L->err, L->errlen,
			 "model: tensor '%s' has type %s, which is not supported "
			 "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)",
			 name, kern_type_name(g->type));
		return -ENOTSUP;
	}
	t->type = g->type;
	t->ne[0] = g->ne[0];
	t->ne[1] = want1;
	t->row_bytes = kern_row_bytes(g->type, g->ne[0]);
	t->data = g->data;
	L->m->weight_bytes += g->n_bytes;
	return 0;
}

static int load_hparams(struct loader *L)
{
	struct kern_hparams *hp = &L->m->w.hp;
	int rc;
	if ((rc = key_u32(L, "block_count", &hp->n_layer, true, 0, 4096)) ||
	    (rc = key_u32(L, "embedding_length", &hp->n_embd, true, 0, 1 << 20)) ||
	    (rc = key_u32(L, "feed_forward_length", &hp->n_ff, true, 0, 1 << 22)) ||
	    (rc = key_u32(L, "attention.head_count", &hp->n_head, true, 0, 4096)) ||
	    (rc = key_u32(L, "attention.head_count_kv", &hp->n_head_kv, false, hp->n_head, 4096)) ||
	    (rc = key_u32(L, "context_length", &hp->n_ctx_train, false, 4096, 1 << 24)))
		return rc;
	if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_ff < 1 || hp->n_head < 1 || hp->n_head_kv < 1 ||
	    hp->n_ctx_train < 1) {
		snprintf(L->err, L->errlen, "model: zero layer count, width, heads or context");
		return -EINVAL;
	}
	if (hp->n_embd % hp->n_head || hp->n_head % hp->n_head_kv) {
		snprintf(L->err, L->errlen, "model: %d heads (%d kv heads) do not divide width %d", hp->n_head,
			 hp->n_head_kv, hp->n_embd);
		return -EINVAL;
	}
	int32_t key_len;
	if ((rc = key_u32(L, "attention.key_length", &key_len, false, hp->n_embd / hp->n_head, 1 << 16)))
		return rc;
	hp->head_dim = key_len;
	if (hp->head_dim % 2 || hp->head_dim > 512) {
		snprintf(L->err, L->errlen, "model: head size %d is not even or above 512", hp->head_dim);
		return -ENOTSUP;
	}
	if ((rc = key_u32(L, "rope.dimension_count", &hp->n_rot, false, hp->head_dim, 1 << 16)))
		return rc;
	char full[128];
	snprintf(full, sizeof(full), "%s.attention.scale", L->m->arch);
	if (gguf_find(L->f, full)) {
		snprintf(L->err, L->errlen, "model: key '%s' (a custom attention scale) is not supported", full);
		return -ENOTSUP;
	}
	if (hp->n_rot != hp->head_dim) {
		snprintf(L->err, L->errlen, "model: partial rotary embeddings (%d of %d dims) are not supported",
			 hp->n_rot, hp->head_dim);
		return -ENOTSUP;
	}
	if ((rc = key_f32(L, "attention.layer_norm_rms_epsilon", &hp->norm_eps, 1e-5f)) ||
	    (rc = key_f32(L, "rope.freq_base", &hp->rope_freq_base, 10000.0f)))
		return rc;
	if (!(hp->norm_eps > 0) || !(hp->rope_freq_base > 0)) {
		snprintf(L->err, L->errlen, "model: rms epsilon and rope base must be positive");
		return -EINVAL;
	}
	hp->rope_freq_scale = 1.0f;
	struct gguf_str st;
	/* Rope scaling as llama.cpp reads it: the type defaults to linear, the
	 * factor comes from rope.scaling.factor or the older rope.scale_linear;
	 * a factor of 0 or 1 means none. llama3 scaling is the rope_freqs tensor. */
	snprintf(full, sizeof(full), "%s.rope.scaling.type", L->m->arch);
	bool linear = true;
	if (gguf_get_str(L->f, full, &st) == 0) {
		if ((st.len == 4 && !memcmp(st.ptr, "none", 4)) || (st.len == 6 && !memcmp(st.ptr, "llama3", 6)))
			linear = false;
		else if (!(st.len == 6 && !memcmp(st.ptr, "linear", 6))) {
			snprintf(L->err, L->errlen, "model: rope scaling type '%.*s' is not supported",
				 (int)(st.len > 32 ? 32 : st.len), st.ptr);
			return -ENOTSUP;
		}
	}
	float factor = 0;
	if ((rc = key_f32(L, "rope.scaling.factor", &factor, 0.0f)))
		return rc;
	if (factor == 0 && (rc = key_f32(L, "rope.scale_linear", &factor, 0.0f)))
		return rc;
	if (linear && factor != 0 && factor != 1) {
		if (!(factor > 0 && factor < 1e6f)) {
			snprintf(L->err, L->errlen, "model: rope scaling factor %g is out of range", factor);
			return -EINVAL;
		}
		hp->rope_freq_scale = 1.0f / factor;
	}
	hp->rope_type = hp->arch == KERN_ARCH_QWEN2 ? KERN_ROPE_NEOX : KERN_ROPE_NORM;
	return 0;
}

static int load_tensors(struct loader *L)
{
	struct kern_weights *w = &L->m->w;
	const struct kern_hparams *hp = &w->hp;
	int64_t q_dim = (int64_t)hp->n_head * hp->head_dim, kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
	int rc;

	/* Vocabulary size comes from the embedding matrix. */
	const struct gguf_tensor *te = gguf_find_tensor(L->f, "token_embd.weight");
	if (!te || te->n_dims != 2 || te->ne[1] > INT32_MAX) {
		snprintf(L->err, L->errlen, "model: missing or malformed tensor 'token_embd.weight'");
		return -EINVAL;
	}
	w->hp.n_vocab = (int32_t)te->ne[1];
	if ((rc = bind(L, &w->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true, false)) ||
	    (rc = bind(L, &w->output_norm, "output_norm.weight", hp->n_embd, -1, true, true)) ||
	    (rc = bind(L, &w->output, "output.weight", hp->n_embd, hp->n_vocab, false, false)) ||
	    (rc = bind(L, &w->rope_freqs, "rope_freqs.weight", hp->n_rot / 2, -1, false, true)))
		return rc;
	if (!w->output.data)
		w->output = w->tok_embd; /* tied embeddings */

	w->layers = alloc_array((size_t)hp->n_layer, sizeof(*w->layers));
	if (!w->layers)
		return -ENOMEM;
	/* qwen2 has Q/K/V biases; a llama file may carry them too. Other
	 * biases change the math and are refused rather than ignored. */
	bool bias = hp->arch == KERN_ARCH_QWEN2;
	static const char *const unsupported[] = {"attn_output.bias", "ffn_gate.bias", "ffn_up.bias",
						  "ffn_down.bias", "attn_qkv.weight"};
	for (int32_t l = 0; l < hp->n_layer; l++) {
		struct kern_layer *ly = &w->layers[l];
		char n[96];
#define B(field, suffix, ne0, ne1, req, f32)                                    \
	do {                                                                    \
		snprintf(n, sizeof(n), "blk.%d.%s", l, suffix);                 \
		if ((rc = bind(L, &ly->field, n, (ne0), (ne1), (req), (f32)))) \
			return rc;                                              \
	} while (0)
		for (size_t u = 0; u < sizeof(unsupported) / sizeof(unsupported[0]); u++) {
			snprintf(n, sizeof(n), "blk.%d.%s", l, unsupported[u]);
			if (gguf_find_tensor(L->f, n)) {
				snprintf(L->err, L->errlen, "model: tensor '%s' is not supported for %s", n, L->m->arch);
				return -ENOTSUP;
			}
		}
		B(attn_norm, "attn_norm.weight", hp->n_embd, -1, true, true);
		B(wq, "attn_q.weight", hp->n_embd, q_dim, true, false);
		B(wk, "attn_k.weight", hp->n_embd, kv_dim, true, false);
		B(wv, "attn_v.weight", hp->n_embd, kv_dim, true, false);
		B(wo, "attn_output.weight", q_dim, hp->n_embd, true, false);
		B(bq, "attn_q.bias", q_dim, -1, bias, true);
		B(bk, "attn_k.bias", kv_dim, -1, bias, true);
		B(bv, "attn_v.bias", kv_dim, -1, bias, true);
		B(ffn_norm, "ffn_norm.weight", hp->n_embd, -1, true, true);
		B(w_gate, "ffn_gate.weight", hp->n_embd, hp->n_ff, true, false);
		B(w_up, "ffn_up.weight", hp->n_embd, hp->n_ff, true, false);
		B(w_down, "ffn_down.weight", hp->n_ff, hp->n_embd, true, false);
#undef B
	}
	return 0;
}

int model_load_gguf(struct gguf_file *f, struct model **out, char *errbuf, size_t errlen)
{
	double t0 = now_ms();
	*out = NULL;
	struct model *m = alloc_zmem(sizeof(*m));
	if (!m) {
		gguf_close(f);
		snprintf(errbuf, errlen, "model: out of memory");
		return -ENOMEM;
	}
	int rc = -EINVAL;
	m->gguf = f;
	struct loader L = {.m = m, .f = f, .err = errbuf, .errlen = errlen};
	struct gguf_str s;
	if (gguf_get_str(f, "general.architecture", &s)) {
		snprintf(errbuf, errlen, "model: missing string key 'general.architecture'");
		goto err;
	}
	if (s.len == 5 && !memcmp(s.ptr, "llama", 5)) {
		m->w.hp.arch = KERN_ARCH_LLAMA;
	} else if (s.len == 5 && !memcmp(s.ptr, "qwen2", 5)) {
		m->w.hp.arch = KERN_ARCH_QWEN2;
	} else {
		snprintf(errbuf, errlen, "model: architecture '%.*s' is not supported (supported: llama, qwen2)",
			 (int)(s.len > 64 ? 64 : s.len), s.ptr);
		rc = -ENOTSUP;
		goto err;
	}
	snprintf(m->arch, sizeof(m->arch), "%.*s", (int)s.len, s.ptr);
	if (gguf_get_str(f, "general.name", &s) == 0)
		snprintf(m->name, sizeof(m->name), "%.*s", (int)(s.len > 120 ? 120 : s.len), s.ptr);
	if ((rc = load_hparams(&L)) || (rc = load_tensors(&L)))
		goto err;
	m->load_ms = now_ms() - t0;
	*out = m;
	return 0;
err:
	model_free(m);
	return rc;
}

int model_load(const char *path, unsigned flags, struct model **out, char *errbuf, size_t errlen)
{
	double t0 = now_ms();
	*out = NULL;
	struct gguf_file *f = gguf_open(path, (flags & MODEL_LOAD_POPULATE) ? GGUF_OPEN_POPULATE : 0, errbuf, errlen);
	if (!f)
		return -EINVAL;
	int rc = model_load_gguf(f, out, errbuf, errlen);
	if (rc == 0)
		(*out)->load_ms = now_ms() - t0;
	return rc;
}

void model_free(struct model *m)
{
	if (!m)
		return;
	alloc_free(m->w.layers);
	gguf_close(m->gguf);
	alloc_free(m);
}
