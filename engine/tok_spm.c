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

	if (tok_grow((void **)&w->sym, &w->cap_sym, n, sizeof(*w->sym)))
		return -ENOMEM;
	w->n_sym = 0;
	for (size_t off = 0; off < n;) {
		size_t cl = tok_utf8_lead_len((uint8_t)w->buf[off]);
		if (cl > n - off)
			cl = n - off;
		int32_t i = (int32_t)w->n_sym++;
		w->sym[i] = (struct tok_sym){.prev = i - 1, .next = -1, .off = (uint32_t)off, .n = (uint32_t)cl};
		if (i > 0)
			w->sym[i - 1].next = i;
		off += cl;
	}

	w->n_heap = 0;
	for (size_t i = 1; i < w->n_sym; i++) {
		if (try_bigram(v, w, (int32_t)i - 1, (int32_t)i))
			return -ENOMEM;
	}
	while (w->n_heap) {
		struct tok_bigram b;
		tok_heap_pop(w, &b, true);
		struct tok_sym *l = &w->sym[b.left], *r = &w->sym[b.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = b.left;
		if (try_bigram(v, w, l->prev, b.left) || try_bigram(v, w, b.left, l->next))
			return -ENOMEM;
	}

	for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
		int rc = emit(v, w->buf + w->sym[i].off, w->sym[i].n, out);
		if (rc)
			return rc;
	}
	return 0;
}
