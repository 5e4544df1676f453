/*
 * test_model: model loading refuses what the backends cannot run, naming
 * the problem: unsupported architecture, missing or misshaped tensors,
 * unsupported tensor types, inconsistent head counts, unsupported rope
 * scaling and extra biases; and accepts the valid variants (tied and
 * untied output, qwen2 biases, llama3 rope factors).
 * Models are written with the project's GGUF writer into a temp dir.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "kernels/kernels.h"
#include "tests/check.h"


struct variant {
	const char *arch;
	int heads, kv_heads;
	uint32_t wtype;        /* type of the attn_q weight */
	int64_t q_rows;        /* rows of attn_q (0: correct) */
	bool drop_ffn_down;
	bool untied;
	bool biases;
	bool out_bias;         /* attn_output.bias (unsupported) */
	bool rope_freqs;
	const char *rope_scaling;
	int layers;
};

static const int DIM = 64, FF = 96, VOCAB = 300;

static int fill(void *user, uint64_t index, void *dst, uint64_t n)
{
	(void)user;
	uint8_t *p = dst;
	for (uint64_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + index);
	/* F32 tensors must hold finite values: make every 4-byte word small. */
	if (n % 4 == 0)
		for (uint64_t i = 3; i < n; i += 4)
			p[i] = 0x3f;
	return 0;
}

static void write_model(const char *path, const struct variant *v)
{
	struct gguf_writer *w = gguf_writer_open(path, 32);
	char k[96];
	const char *a = v->arch;
	int hd = DIM / v->heads;
#define KEY(s) (snprintf(k, sizeof(k), "%s.%s", a, s), k)
	gguf_w_str(w, "general.architecture", a);
	gguf_w_u32(w, KEY("block_count"), (uint32_t)v->layers);
	gguf_w_u32(w, KEY("embedding_length"), DIM);
	gguf_w_u32(w, KEY("feed_forward_length"), FF);
	gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)v->heads);
	gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)v->kv_heads);
	if (v->rope_scaling) {
		gguf_w_str(w, KEY("rope.scaling.type"), v->rope_scaling);
		gguf_w_f32(w, KEY("rope.scaling.factor"), 4.0f);
	}
#undef KEY
	int64_t ne[2];
	ne[0] = DIM, ne[1] = VOCAB;
	gguf_w_tensor(w, "token_embd.weight", KERN_TYPE_F16, 2, ne);
	ne[0] = DIM;
	gguf_w_tensor(w, "output_norm.weight", KERN_TYPE_F32, 1, ne);
	if (v->untied) {
		ne[0] = DIM, ne[1] = VOCAB;
		gguf_w_tensor(w, "output.weight", KERN_TYPE_F16, 2, ne);
	}
	if (v->rope_freqs) {
		ne[0] = hd / 2;
		gguf_w_tensor(w, "rope_freqs.weight", KERN_TYPE_F32, 1, ne);
	}
	int kvd = v->kv_heads * hd;
	for (int l = 0; l < v->layers; l++) {
		char n[64];
#define T(name, type, n0, n1, nd)                                    \
	do {                                                         \
		snprintf(n, sizeof(n), "blk.%d.%s", l, name);        \
		ne[0] = (n0), ne[1] = (n1);                          \
		gguf_w_tensor(w, n, (type), (nd), ne);               \
	} while (0)
		T("attn_norm.weight", KERN_TYPE_F32, DIM, 1, 1);
		T("attn_q.weight", v->wtype, DIM, v->q_rows ? v->q_rows : DIM, 2);
		T("attn_k.weight", KERN_TYPE_F16, DIM, kvd, 2);
		T("attn_v.weight", KERN_TYPE_F16, DIM, kvd, 2);
		if (v->biases) {
			T("attn_q.bias", KERN_TYPE_F32, DIM, 1, 1);
			T("attn_k.bias", KERN_TYPE_F32, kvd, 1, 1);
			T("attn_v.bias", KERN_TYPE_F32, kvd, 1, 1);
		}
		if (v->out_bias)
			T("attn_output.bias", KERN_TYPE_F32, DIM, 1, 1);
		T("attn_output.weight", KERN_TYPE_F16, DIM, DIM, 2);
		T("ffn_norm.weight", KERN_TYPE_F32, DIM, 1, 1);
		T("ffn_gate.weight", KERN_TYPE_F16, DIM, FF, 2);
		T("ffn_up.weight", KERN_TYPE_F16, DIM, FF, 2);
		if (!v->drop_ffn_down)
			T("ffn_down.weight", KERN_TYPE_F16, FF, DIM, 2);
#undef T
	}
	if (gguf_writer_finish(w, fill, NULL) != 0) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
}

static struct variant base(void)
{
	return (struct variant){.arch = "llama", .heads = 4, .kv_heads = 2, .wtype = KERN_TYPE_F16, .layers = 2};
}

static void expect(const char *path, const struct variant *v, const char *needle, const char *what)
{
	write_model(path, v);
	struct model *m = NULL;
	char err[512] = "";
	int rc = model_load(path, 0, &m, err, sizeof(err));
	if (!needle) {
		CHECK(rc == 0 && m, "%s: refused: %s", what, err);
	} else {
		CHECK(rc < 0 && !m, "%s: accepted", what);
		CHECK(strstr(err, needle) != NULL, "%s: error '%s' lacks '%s'", what, err, needle);
	}
	if (m && !needle) {
		CHECK(m->w.hp.n_vocab == VOCAB && m->w.hp.head_dim == DIM / v->heads, "%s: hparams", what);
		CHECK((m->w.output.data == m->w.tok_embd.data) == !v->untied, "%s: tied output", what);
		CHECK(!v->biases || m->w.layers[0].bq.data, "%s: biases bound", what);
		CHECK(!v->rope_scaling || m->w.hp.rope_freq_scale == 0.25f, "%s: linear rope scale", what);
	}
	model_free(m);
}

int main(void)
{
	char path[] = "/tmp/locus-test-model-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return 1;
	close(fd);
	struct variant v;

	v = base();
	expect(path, &v, NULL, "valid llama");
	v.untied = true;
	v.rope_freqs = true;
	expect(path, &v, NULL, "untied, rope_freqs");
	v = base();
	v.arch = "qwen2";
	v.biases = true;
	expect(path, &v, NULL, "valid qwen2");
	v = base();
	v.biases = true;
	expect(path, &v, NULL, "llama with q/k/v biases");
	v = base();
	v.rope_scaling = "linear";
	expect(path, &v, NULL, "linear rope scaling");

	v = base();
	v.arch = "gemma";
	expect(path, &v, "architecture 'gemma' is not supported", "gemma");
	v = base();
	v.arch = "qwen2";
	expect(path, &v, "missing tensor 'blk.0.attn_q.bias'", "qwen2 without biases");
	v = base();
	v.drop_ffn_down = true;
	expect(path, &v, "missing tensor 'blk.0.ffn_down.weight'", "missing ffn_down");
	v = base();
	v.q_rows = 32;
	expect(path, &v, "tensor 'blk.0.attn_q.weight' has shape", "misshaped attn_q");
	v = base();
	v.wtype = 6; /* Q5_0: a valid GGUF type the backends do not compute with */
	expect(path, &v, "has type Q5_0, which is not supported", "Q5_0 weight");
	v = base();
	v.heads = 3;
	expect(path, &v, "do not divide", "3 heads for width 64");
	v = base();
	v.kv_heads = 3;
	expect(path, &v, "do not divide", "3 kv heads for 4 heads");
	v = base();
	v.layers = 0;
	expect(path, &v, "zero", "zero layers");
	v = base();
	v.rope_scaling = "yarn";
	expect(path, &v, "rope scaling type 'yarn' is not supported", "yarn");
	v = base();
	v.out_bias = true;
	expect(path, &v, "attn_output.bias' is not supported", "output bias");
	unlink(path);
	return check_status("test_model");
}
