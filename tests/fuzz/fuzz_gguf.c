/*
 * fuzz_gguf: the GGUF loader on arbitrary bytes: header, metadata and tensor
 * table validation, then (when the file parses) model binding and the
 * vocabulary loader, which read the metadata the way the engine does.
 * Seeds: tests/fuzz/corpus/gguf (small files from mkmodel, tokenizer GGUFs).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct gguf_file *f = gguf_open_buffer(data, size, err, sizeof(err));
	if (!f)
		return 0;
	/* Touch every view the reader hands out. */
	volatile uint8_t sink = 0;
	for (uint64_t i = 0; i < f->n_kv; i++)
		if (f->kv[i].key.len)
			sink ^= (uint8_t)f->kv[i].key.ptr[f->kv[i].key.len - 1];
	for (uint64_t i = 0; i < f->n_tensors; i++)
		if (f->tensors[i].n_bytes)
			sink ^= ((const uint8_t *)f->tensors[i].data)[f->tensors[i].n_bytes - 1];
	tok_vocab_t *v = tok_vocab_load(f, err, sizeof(err));
	if (v) {
		int32_t ids[64];
		tok_encode(v, "Hello world", 11, true, true, ids, 64);
		tok_vocab_free(v);
	}
	struct model *m = NULL;
	if (model_load_gguf(f, &m, err, sizeof(err)) == 0)
		model_free(m);
	(void)sink;
	return 0;
}
