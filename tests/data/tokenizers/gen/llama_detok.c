// reference detokenizer: detok MODEL remove_special unparse_special < id lines
#define _GNU_SOURCE
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static void quiet(enum ggml_log_level l, const char *t, void *u) { (void)l; (void)t; (void)u; }
int main(int argc, char **argv) {
	(void)argc; llama_log_set(quiet, NULL);
	struct llama_model_params mp = llama_model_default_params(); mp.vocab_only = true;
	struct llama_model *m = llama_model_load_from_file(argv[1], mp);
	const struct llama_vocab *v = llama_model_get_vocab(m);
	int rs = atoi(argv[2]), us = atoi(argv[3]);
	static char line[1 << 20]; static int32_t ids[1 << 16]; static char out[1 << 20];
	while (fgets(line, sizeof line, stdin)) {
		int n = 0; char *p = line, *q;
		for (;;) { long id = strtol(p, &q, 10); if (q == p) break; ids[n++] = id; p = q; }
		int r = llama_detokenize(v, ids, n, out, sizeof out, rs, us);
		fwrite(out, 1, r, stdout); fputs("\n__ggml_vocab_test__\n", stdout);
	}
}
