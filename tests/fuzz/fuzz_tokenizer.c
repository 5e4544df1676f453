/*
 * fuzz_tokenizer: libFuzzer target for engine/tokenizer.h and engine/chat.h.
 *
 * Build and run from the source root (not wired into CMake yet):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
 *     tests/fuzz/fuzz_tokenizer.c engine/tokenizer.c engine/tok_load.c engine/tok_util.c \
 *     engine/tok_pre.c engine/tok_bpe.c engine/tok_spm.c engine/chat.c engine/gguf.c \
 *     engine/gguf_write.c kernels/types.c alloc/alloc.c -lpcre2-8 -lmimalloc -lnuma -lm -o build-tok/fuzz_tokenizer
 *   LOCUS_SRC=. build-tok/fuzz_tokenizer -max_len=4096 -max_total_time=60 \
 *     build-tok/fuzz-corpus tests/data/tokenizers/chat-templates
 *
 * Input: byte 0 picks the vocabulary (SmolLM2 BPE, llama SPM, GPT-2 BPE,
 * GPT-2 vocab with the llama3 / qwen2 / default pre-tokenizers) and the
 * add_special / parse_special flags; the rest is the text. Checked for every
 * input: no crash or sanitizer report, the count from a NULL/0 call equals a
 * full encode, a short cap never writes past it, every id is in range, the
 * streaming detokenizer emits valid UTF-8 only, tok_decode's length query
 * matches its output, and the chat-template detector and renderer take the
 * same bytes as a template and as messages.
 *
 * The vocabularies are loaded once in LLVMFuzzerInitialize and kept in file
 * statics: that is the harness's state, not the library's.
 */
#define _GNU_SOURCE
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N_VOCAB 6
static tok_vocab_t *g_vocab[N_VOCAB];

static tok_vocab_t *load(const char *src, const char *name, const char *pre)
{
	char path[1024], err[256];
	snprintf(path, sizeof(path), "%s/tests/data/tokenizers/ggml-vocab-%s.gguf", src, name);
	struct gguf_file *f = gguf_open(path, 0, err, sizeof(err));
	if (!f) {
		fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
		abort();
	}
	if (pre) {
		/* same vocab, another pre-tokenizer: rewrite through the GGUF writer */
		char tmp[256];
		snprintf(tmp, sizeof(tmp), "/tmp/fuzz_tokenizer_%d_%s.gguf", (int)getpid(), pre);
		struct gguf_writer *w = gguf_writer_open(tmp, 32);
		for (uint64_t i = 0; i < f->n_kv; i++) {
			if (f->kv[i].key.len == 18 && !memcmp(f->kv[i].key.ptr, "tokenizer.ggml.pre", 18))
				continue;
			gguf_w_copy_kv(w, &f->kv[i]);
		}
		gguf_w_str(w, "tokenizer.ggml.pre", pre);
		if (gguf_writer_finish(w, NULL, NULL))
			abort();
		gguf_close(f);
		f = gguf_open(tmp, 0, err, sizeof(err));
		unlink(tmp);
		if (!f)
			abort();
	}
	tok_vocab_t *v = tok_vocab_load(f, err, sizeof(err));
	gguf_close(f);
	if (!v) {
		fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
		abort();
	}
	return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *src = getenv("LOCUS_SRC");
	if (!src || !*src)
		src = ".";
	g_vocab[0] = load(src, "smollm2", NULL);
	g_vocab[1] = load(src, "llama-spm", NULL);
	g_vocab[2] = load(src, "gpt-2", NULL);
	g_vocab[3] = load(src, "gpt-2", "llama-bpe");
	g_vocab[4] = load(src, "gpt-2", "qwen2");
	g_vocab[5] = load(src, "gpt-2", "default");
	return 0;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i];
		size_t k;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			k = 1, cp = c & 0x1F, min = 0x80;
		else if (c >= 0xE0 && c <= 0xEF)
			k = 2, cp = c & 0x0F, min = 0x800;
		else if (c >= 0xF0 && c <= 0xF4)
			k = 3, cp = c & 0x07, min = 0x10000;
		else
			return false;
		if (i + k >= n)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += k + 1;
	}
	return true;
}

static void fuzz_chat(const uint8_t *data, size_t size)
{
	struct chat_tmpl_info t;
	char err[128];
	if (chat_tmpl_detect((const char *)data, size, &t, err, sizeof(err)) != 0)
		chat_tmpl_by_name((data[0] & 3) == 0 ? "chatml" : (data[0] & 3) == 1 ? "llama2" : "llama3", &t);
	/* messages: the input cut at NUL bytes, roles cycling through the list */
	static const char *const roles[] = {"system", "user", "assistant", "user", "tool"};
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = 0;
	struct chat_msg m[8];
	int n = 0;
	for (char *p = text; n < 8 && p <= text + size; p += strlen(p) + 1) {
		m[n] = (struct chat_msg){roles[(n + data[0]) % 5], p};
		n++;
	}
	int64_t len = chat_apply(&t, m, n, data[0] & 1, NULL, 0);
	if (len >= 0) {
		char *out = malloc((size_t)len + 1);
		if (chat_apply(&t, m, n, data[0] & 1, out, (size_t)len + 1) != len || strlen(out) > (size_t)len)
			abort();
		free(out);
	}
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	const tok_vocab_t *v = g_vocab[(sel & 7) % N_VOCAB];
	bool add = sel & 0x40, parse = sel & 0x80;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;

	int64_t n = tok_encode(v, text, len, add, parse, NULL, 0);
	if (n < 0)
		abort();
	int32_t *ids = malloc(((size_t)n + 1) * sizeof(int32_t));
	if (tok_encode(v, text, len, add, parse, ids, n) != n)
		abort();
	for (int64_t i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= tok_n_vocab(v))
			abort();
	}
	/* a short buffer: exact count back, nothing written past cap */
	if (n > 1) {
		int32_t *part = malloc((size_t)n * sizeof(int32_t));
		int64_t cap = n / 2;
		part[cap] = -12345;
		if (tok_encode(v, text, len, add, parse, part, cap) != n || part[cap] != -12345 ||
		    memcmp(part, ids, (size_t)cap * sizeof(int32_t)))
			abort();
		free(part);
	}

	/* stream: valid UTF-8 after every push */
	size_t bound = tok_stream_bound(v);
	char *out = malloc(bound);
	struct tok_stream s;
	tok_stream_init(&s, v, sel & 0x20);
	for (int64_t i = 0; i < n; i++) {
		int r = tok_stream_push(&s, ids[i], out, bound);
		if (r < 0 || !utf8_valid((unsigned char *)out, (size_t)r))
			abort();
	}
	int r = tok_stream_flush(&s, out, bound);
	if (r < 0 || !utf8_valid((unsigned char *)out, (size_t)r))
		abort();
	free(out);

	/* decode: length query and fill agree */
	int64_t dl = tok_decode(v, ids, n, add, true, NULL, 0);
	if (dl < 0)
		abort();
	char *dec = malloc((size_t)dl + 1);
	if (tok_decode(v, ids, n, add, true, dec, (size_t)dl) != dl)
		abort();
	free(dec);
	free(ids);

	fuzz_chat(data, size);
	return 0;
}
