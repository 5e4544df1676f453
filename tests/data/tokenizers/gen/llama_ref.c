#define _GNU_SOURCE
// reference tokenizer via libllama: ref MODEL add_special parse_special < inp (vocab test format)
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void quiet(enum ggml_log_level l, const char *t, void *u) { (void)l; (void)t; (void)u; }
int main(int argc, char **argv) {
	llama_log_set(quiet, NULL);
	llama_backend_init();
	struct llama_model_params mp = llama_model_default_params();
	mp.vocab_only = true;
	struct llama_model *m = llama_model_load_from_file(argv[1], mp);
	if (!m) { fprintf(stderr, "load fail\n"); return 1; }
	const struct llama_vocab *v = llama_model_get_vocab(m);
	int add = atoi(argv[2]), ps = atoi(argv[3]);
	size_t cap = 1 << 24, n = 0; char *buf = malloc(cap);
	n = fread(buf, 1, cap, stdin);
	const char *sep = "\n__ggml_vocab_test__\n"; size_t sl = strlen(sep);
	size_t pos = 0;
	int32_t *toks = malloc(sizeof(int32_t) * (n + 16));
	while (pos < n) {
		char *nx = memmem(buf + pos, n - pos, sep, sl);
		size_t len = nx ? (size_t)(nx - (buf + pos)) : n - pos;
		int r = llama_tokenize(v, buf + pos, len, toks, n + 16, add, ps);
		for (int i = 0; i < r; i++) printf(" %d", toks[i]);
		printf("\n");
		if (!nx) break;
		pos += len + sl;
	}
	if (argc > 4) { // also print pieces of ids given
	}
	return 0;
}
