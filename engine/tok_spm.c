/*
 * tok_spm.c: SentencePiece-style tokenization (`tokenizer.ggml.model` =
 * "llama"), as llama.cpp does it.
 *
 * The text gets an optional leading space, spaces become U+2581, and it is
 * cut into UTF-8 characters by lead byte alone (no validation, like
 * llama.cpp; a truncated tail is one short symbol). Adjacent symbols whose
 * concatenation is a vocabulary entry merge, highest score first (ties:
 * leftmost). A final symbol that is not a token falls back to one <0xXX>
 * token per byte.
 *
 * Threading: reads the vocab, writes only the caller's scratch.
 */
#include "engine/tok_impl.h"

#include <errno.h>
#include <string.h>

static int try_bigram(const struct tok_vocab *v, struct tok_work *w, int32_t left, int32_t right)
{
	if (left < 0 || right < 0)
		return 0;
	const struct tok_sym *l = &w->sym[left], *r = &w->sym[right];
	/* right follows left in the buffer, so the pair is one contiguous string */
	int64_t id = tok_strtab_find(&v->text, w->buf + l->off, l->n + r->n);
	if (id < 0)
		return 0;
	struct tok_bigram b = {
		.score = v->score[id],
		.rank = 0,
		.left = left,
		.right = right,
		.size = l->n + r->n,
	};
	return tok_heap_push(w, &b, true);
}

static int emit(const struct tok_vocab *v, const char *s, size_t n, struct tok_ids *out)
{
	int64_t id = tok_strtab_find(&v->text, s, n);
	if (id >= 0)
		return tok_ids_push(out, (int32_t)id);
	for (size_t i = 0; i < n; i++) {
		int32_t b = v->byte_tok[(uint8_t)s[i]];
		/* llama.cpp throws when a vocab lacks the byte token; we use <unk> */
		if (b < 0)
			b = v->unk;
		if (b >= 0 && tok_ids_push(out, b))
			return -ENOMEM;
	}
	return 0;
}

int tok_spm_encode(const struct tok_vocab *v, struct tok_work *w, const char *text, size_t len,
		   bool space_prefix, struct tok_ids *out)
{
	/* escape: ' ' -> U+2581 (3 bytes) */
	if (len > (SIZE_MAX - 4) / 3 || tok_grow((void **)&w->buf, &w->cap_buf, 3 * (len + 1), 1))
		return -ENOMEM;
	size_t n = 0;
	if (space_prefix) {
		memcpy(w->buf, "\xE2\x96\x81", 3);
		n = 3;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(w->buf + n, "\xE2\x96\x81", 3);
			n += 3;
		} else {
			w->buf[n++] = text[i];
		}
	}
	if (n == 0)
		return 0;
	if (n > UINT32_MAX)
		return -EOVERFLOW; /* symbol offsets are 32-bit */

	int rc = tok_symbols_merge(v, w, n, try_bigram, true);
	if (rc)
		return rc;

	for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
		int rc = emit(v, w->buf + w->sym[i].off, w->sym[i].n, out);
		if (rc)
			return rc;
	}
	return 0;
}
