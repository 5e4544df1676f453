/*
 * mkmodel: writes a GGUF model of any Llama-like shape with seeded random
 * weights, for tests and benchmarks.
 *
 *   mkmodel -o OUT.gguf [--arch llama|qwen2] [--layers N] [--dim N] [--heads N]
 *           [--kv-heads N] [--ffn N] [--ctx N] [--type T] [--embd-type T]
 *           [--output-type T|tied] [--rope-base F] [--rope-scaling llama3]
 *           [--seed S] [--tokenizer FROM.gguf | --vocab N]
 *
 * Weights are uniform with variance 1/fan_in (activations keep their scale
 * through the layers), norms are 1 +- 0.1, embeddings uniform in [-1, 1].
 * --tokenizer copies every tokenizer.* key of another GGUF (the vocabulary
 * size follows it); without it a SentencePiece-style vocabulary of
 * <unk> <s> </s>, the 256 byte tokens and filler pieces is written.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/gguf.h"
#include "kernels/kernels.h"

struct opts {
	const char *out, *arch, *tokenizer, *rope_scaling, *name;
	int layers, dim, heads, kv_heads, ffn, ctx, vocab;
	uint32_t type, embd_type, output_type;
	bool tied, embd_type_set;
	float rope_base, eps;
	uint64_t seed;
};

enum wkind { W_MATRIX, W_NORM, W_BIAS, W_EMBD, W_ROPE };

struct tinfo {
	char name[64];
	uint32_t type;
	int64_t ne[2];
	uint32_t n_dims;
	enum wkind kind;
};

struct gen {
	struct tinfo *t;
	int n;
	uint64_t seed;
	const struct opts *o;
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float unif(uint64_t *s)
{
	return (float)((double)(splitmix(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static void llama3_factors(const struct opts *o, int hd, float *out)
{
	const double factor = 8.0, low = 1.0, high = 4.0, old_ctx = 8192.0;
	double low_wl = old_ctx / low, high_wl = old_ctx / high;
	for (int i = 0; i < hd / 2; i++) {
		double freq = 1.0 / pow(o->rope_base, (2.0 * i) / hd);
		double wl = 2 * M_PI / freq;
		if (wl < high_wl)
			out[i] = 1.0f;
		else if (wl > low_wl)
			out[i] = (float)factor;
		else {
			double smooth = (old_ctx / wl - low) / (high - low);
			out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
		}
	}
}

static int write_data(void *user, uint64_t index, void *dst, uint64_t n_bytes)
{
	struct gen *g = user;
	const struct tinfo *t = &g->t[index];
	uint64_t rs = g->seed ^ (0x1000193ull * (index + 1));
	int64_t n0 = t->ne[0], rows = t->ne[1];
	float *row = malloc((size_t)n0 * sizeof(float));
	if (!row)
		return -ENOMEM;
	size_t rb = kern_row_bytes(t->type, n0);
	if ((uint64_t)rb * (uint64_t)rows != n_bytes) {
		free(row);
		return -EINVAL;
	}
	float a = sqrtf(3.0f / (float)n0); /* variance 1/fan_in */
	for (int64_t r = 0; r < rows; r++) {
		if (t->kind == W_ROPE) {
			llama3_factors(g->o, (int)(2 * n0), row);
		} else {
			for (int64_t i = 0; i < n0; i++) {
				float u = unif(&rs);
				switch (t->kind) {
				case W_MATRIX: row[i] = a * u; break;
				case W_NORM: row[i] = 1.0f + 0.1f * u; break;
				case W_BIAS: row[i] = 0.1f * u; break;
				case W_EMBD: row[i] = u; break;
				default: row[i] = 0; break;
				}
			}
		}
		kern_quantize_row(t->type, row, (uint8_t *)dst + (size_t)r * rb, n0);
	}
	free(row);
	return 0;
}

/* <unk> <s> </s>, <0x00>..<0xFF>, then "▁p<N>" fillers with falling scores. */
static int synth_vocab(struct gguf_writer *w, int n)
{
	char **tok = calloc((size_t)n, sizeof(*tok));
	float *score = calloc((size_t)n, sizeof(*score));
	int32_t *type = calloc((size_t)n, sizeof(*type));
	int rc = -1;
	if (!tok || !score || !type)
		goto out;
	for (int i = 0; i < n; i++) {
		char buf[32];
		if (i < 3)
			snprintf(buf, sizeof(buf), "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
		else if (i < 259)
			snprintf(buf, sizeof(buf), "<0x%02X>", i - 3);
		else
			snprintf(buf, sizeof(buf), "\xe2\x96\x81p%d", i);
		tok[i] = strdup(buf);
		if (!tok[i])
			goto out;
		score[i] = i < 259 ? 0.0f : -(float)i;
		type[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
	}
	gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (uint64_t)n);
	gguf_w_arr_f32(w, "tokenizer.ggml.scores", score, (uint64_t)n);
	gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (uint64_t)n);
	rc = 0;
out:
	for (int i = 0; tok && i < n; i++)
		free(tok[i]);
	free(tok);
	free(score);
	free(type);
	return rc;
}

static uint32_t parse_type(const char *s)
{
	for (uint32_t t = 0; t < KERN_TYPE_MAX; t++)
		if (kern_type_name(t) && kern_type_supported(t) && !strcasecmp(kern_type_name(t), s))
			return t;
	return UINT32_MAX;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mkmodel -o OUT.gguf [--arch llama|qwen2] [--layers N] [--dim N] [--heads N]\n"
		   "               [--kv-heads N] [--ffn N] [--ctx N] [--type T] [--embd-type T]\n"
		   "               [--output-type T|tied] [--rope-base F] [--rope-scaling llama3]\n"
		   "               [--seed S] [--name S] [--tokenizer FROM.gguf | --vocab N]\n"
		   "  types: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K (default Q8_0; embeddings default to\n"
		   "  the same type; output tied to the embeddings unless --output-type is given)\n"
		   "  defaults: llama, 2 layers, dim 256, 4 heads, 4 kv heads, ffn 512, ctx 2048,\n"
		   "  rope base 10000, seed 1, vocabulary of 512 synthetic pieces\n");
}

static int add_tensor(struct tinfo *t, int *n, const char *name, uint32_t type, int64_t ne0, int64_t ne1,
		      enum wkind kind)
{
	struct tinfo *x = &t[(*n)++];
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->type = type;
	x->ne[0] = ne0;
	x->ne[1] = ne1;
	x->n_dims = ne1 > 1 || kind == W_MATRIX || kind == W_EMBD ? 2 : 1;
	x->kind = kind;
	if (kern_row_bytes(type, ne0) == 0) {
		fprintf(stderr, "mkmodel: %s: a row of %lld is not a multiple of the %s block (%d)\n", name,
			(long long)ne0, kern_type_name(type), kern_type_block_elems(type));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {.arch = "llama", .layers = 2, .dim = 256, .heads = 4, .kv_heads = 0, .ffn = 512,
			 .ctx = 2048, .vocab = 512, .type = KERN_TYPE_Q8_0, .tied = true, .rope_base = 10000.0f,
			 .eps = 1e-5f, .seed = 1, .name = "locus-synthetic"};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			fprintf(stderr, "mkmodel: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "-o"))
			o.out = v;
		else if (!strcmp(a, "--arch"))
			o.arch = v;
		else if (!strcmp(a, "--layers"))
			o.layers = atoi(v);
		else if (!strcmp(a, "--dim"))
			o.dim = atoi(v);
		else if (!strcmp(a, "--heads"))
			o.heads = atoi(v);
		else if (!strcmp(a, "--kv-heads"))
			o.kv_heads = atoi(v);
		else if (!strcmp(a, "--ffn"))
			o.ffn = atoi(v);
		else if (!strcmp(a, "--ctx"))
			o.ctx = atoi(v);
		else if (!strcmp(a, "--vocab"))
			o.vocab = atoi(v);
		else if (!strcmp(a, "--rope-base"))
			o.rope_base = strtof(v, NULL);
		else if (!strcmp(a, "--rope-scaling"))
			o.rope_scaling = v;
		else if (!strcmp(a, "--seed"))
			o.seed = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--tokenizer"))
			o.tokenizer = v;
		else if (!strcmp(a, "--name"))
			o.name = v;
		else if (!strcmp(a, "--type") || !strcmp(a, "--embd-type") || !strcmp(a, "--output-type")) {
			bool tied = !strcmp(a, "--output-type") && !strcmp(v, "tied");
			uint32_t t = tied ? 0 : parse_type(v);
			if (t == UINT32_MAX) {
				fprintf(stderr, "mkmodel: %s: unknown or unsupported type '%s'\n", a, v);
				return 2;
			}
			if (!strcmp(a, "--type"))
				o.type = t;
			else if (!strcmp(a, "--embd-type")) {
				o.embd_type = t;
				o.embd_type_set = true;
			} else {
				o.tied = tied;
				o.output_type = t;
			}
		} else {
			fprintf(stderr, "mkmodel: unknown option '%s' (see --help)\n", a);
			return 2;
		}
	}
	if (!o.kv_heads)
		o.kv_heads = o.heads;
	bool qwen2 = !strcmp(o.arch, "qwen2");
	if (!o.out || (!qwen2 && strcmp(o.arch, "llama")) || o.layers < 1 || o.dim < 2 || o.heads < 1 ||
	    o.kv_heads < 1 || o.heads % o.kv_heads || o.dim % o.heads || (o.dim / o.heads) % 2 || o.ffn < 1 ||
	    o.ctx < 1 || o.vocab < 260 || (o.rope_scaling && strcmp(o.rope_scaling, "llama3"))) {
		fprintf(stderr, "mkmodel: bad arguments (need -o; llama or qwen2; heads dividing dim with an even head "
				"size; kv-heads dividing heads; vocab >= 260)\n");
		usage(stderr);
		return 2;
	}
	if (!o.embd_type_set)
		o.embd_type = o.type;

	char err[512];
	struct gguf_file *tf = NULL;
	if (o.tokenizer) {
		tf = gguf_open(o.tokenizer, 0, err, sizeof(err));
		if (!tf) {
			fprintf(stderr, "mkmodel: %s\n", err);
			return 1;
		}
		int64_t nv = gguf_array_len(tf, "tokenizer.ggml.tokens", NULL);
		if (nv < 1 || nv > INT32_MAX) {
			fprintf(stderr, "mkmodel: %s has no tokenizer.ggml.tokens\n", o.tokenizer);
			return 1;
		}
		o.vocab = (int)nv;
	}

	int hd = o.dim / o.heads;
	int n_max = 4 + o.layers * 12;
	struct tinfo *t = calloc((size_t)n_max, sizeof(*t));
	int n = 0;
	char nm[64];
	int rc = 0;
	rc |= add_tensor(t, &n, "token_embd.weight", o.embd_type, o.dim, o.vocab, W_EMBD);
	rc |= add_tensor(t, &n, "output_norm.weight", KERN_TYPE_F32, o.dim, 1, W_NORM);
	if (!o.tied)
		rc |= add_tensor(t, &n, "output.weight", o.output_type, o.dim, o.vocab, W_MATRIX);
	if (o.rope_scaling)
		rc |= add_tensor(t, &n, "rope_freqs.weight", KERN_TYPE_F32, hd / 2, 1, W_ROPE);
	for (int l = 0; l < o.layers && !rc; l++) {
#define T(suffix, type, ne0, ne1, kind)                                 \
	do {                                                            \
		snprintf(nm, sizeof(nm), "blk.%d.%s", l, suffix);       \
		rc |= add_tensor(t, &n, nm, (type), (ne0), (ne1), (kind)); \
	} while (0)
		T("attn_norm.weight", KERN_TYPE_F32, o.dim, 1, W_NORM);
		T("attn_q.weight", o.type, o.dim, o.heads * hd, W_MATRIX);
		T("attn_k.weight", o.type, o.dim, o.kv_heads * hd, W_MATRIX);
		T("attn_v.weight", o.type, o.dim, o.kv_heads * hd, W_MATRIX);
		if (qwen2) {
			T("attn_q.bias", KERN_TYPE_F32, o.heads * hd, 1, W_BIAS);
			T("attn_k.bias", KERN_TYPE_F32, o.kv_heads * hd, 1, W_BIAS);
			T("attn_v.bias", KERN_TYPE_F32, o.kv_heads * hd, 1, W_BIAS);
		}
		T("attn_output.weight", o.type, o.heads * hd, o.dim, W_MATRIX);
		T("ffn_norm.weight", KERN_TYPE_F32, o.dim, 1, W_NORM);
		T("ffn_gate.weight", o.type, o.dim, o.ffn, W_MATRIX);
		T("ffn_up.weight", o.type, o.dim, o.ffn, W_MATRIX);
		T("ffn_down.weight", o.type, o.ffn, o.dim, W_MATRIX);
#undef T
	}
	if (rc)
		return 2;

	struct gguf_writer *w = gguf_writer_open(o.out, 32);
	if (!w) {
		fprintf(stderr, "mkmodel: cannot create '%s': %s\n", o.out, strerror(errno));
		return 1;
	}
	char key[128];
#define K(suffix) (snprintf(key, sizeof(key), "%s.%s", o.arch, suffix), key)
	gguf_w_str(w, "general.architecture", o.arch);
	gguf_w_str(w, "general.name", o.name);
	gguf_w_u32(w, K("block_count"), (uint32_t)o.layers);
	gguf_w_u32(w, K("context_length"), (uint32_t)o.ctx);
	gguf_w_u32(w, K("embedding_length"), (uint32_t)o.dim);
	gguf_w_u32(w, K("feed_forward_length"), (uint32_t)o.ffn);
	gguf_w_u32(w, K("attention.head_count"), (uint32_t)o.heads);
	gguf_w_u32(w, K("attention.head_count_kv"), (uint32_t)o.kv_heads);
	gguf_w_f32(w, K("attention.layer_norm_rms_epsilon"), o.eps);
	gguf_w_f32(w, K("rope.freq_base"), o.rope_base);
	gguf_w_u32(w, K("rope.dimension_count"), (uint32_t)hd);
	gguf_w_u32(w, K("vocab_size"), (uint32_t)o.vocab);
#undef K
	if (tf) {
		for (uint64_t i = 0; i < tf->n_kv; i++)
			if (tf->kv[i].key.len > 10 && !memcmp(tf->kv[i].key.ptr, "tokenizer.", 10))
				gguf_w_copy_kv(w, &tf->kv[i]);
	} else {
		/* Synthetic SentencePiece vocabulary: written as a raw array key. */
		gguf_w_str(w, "tokenizer.ggml.model", "llama");
		gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
		gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
		gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
		if (synth_vocab(w, o.vocab))
			return 1;
	}
	for (int i = 0; i < n; i++)
		gguf_w_tensor(w, t[i].name, t[i].type, t[i].n_dims, t[i].ne);
	struct gen g = {.t = t, .n = n, .seed = o.seed, .o = &o};
	rc = gguf_writer_finish(w, write_data, &g);
	gguf_close(tf);
	free(t);
	if (rc) {
		fprintf(stderr, "mkmodel: writing '%s' failed: %s\n", o.out, strerror(-rc));
		return 1;
	}
	return 0;
}
