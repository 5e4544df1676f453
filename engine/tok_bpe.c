/*
 * tok_bpe.c: byte-level BPE over one pre-tokenized word.
 *
 * The word's bytes are first mapped to the GPT-2 byte alphabet (each byte a
 * printable code point), then adjacent symbols merge lowest rank first (ties:
 * leftmost) until no ranked pair is left, the linked-list + priority-queue
 * scheme of llama.cpp: O(n log n) in the word length. A queued pair is stale
 * when either side has changed since; since symbols only ever grow to the
 * right and the pair's bytes are contiguous, "both alive and the same total
 * size" is exactly "both unchanged".
 *
 * Threading: reads the vocab, writes only the caller's scratch.
 */
#include "engine/tok_impl.h"

#include <errno.h>
#include <string.h>

static int add_bigram(const struct tok_vocab *v, struct tok_work *w, int32_t left, int32_t right)
{
	if (left < 0 || right < 0)
		return 0;
	const struct tok_sym *l = &w->sym[left], *r = &w->sym[right];
	int64_t rank = tok_strtab_find2(&v->merges, w->buf + l->off, l->n, ' ', w->buf + r->off, r->n);
	if (rank < 0)
		return 0;
	/* llama.cpp splits a merge line at its first space after byte 0: a
	 * left side containing a space never matches that line. */
	const char *m = v->merges.pool + v->merges.off[rank];
	const char *sp = memchr(m + 1, ' ', v->merges.len[rank] - 1);
	if (!sp || (size_t)(sp - m) != l->n)
		return 0;
	struct tok_bigram b = {
		.score = 0.0f,
		.rank = (int32_t)rank,
		.left = left,
		.right = right,
		.size = l->n + r->n,
	};
	return tok_heap_push(w, &b, false);
}

/* Emits one final symbol: its token, or else the tokens of its single
 * bytes where they exist (llama.cpp drops bytes without a token). */
static int emit(const struct tok_vocab *v, const char *s, size_t n, struct tok_ids *out)
{
	int64_t id = tok_strtab_find(&v->text, s, n);
	if (id >= 0)
		return tok_ids_push(out, (int32_t)id);
	for (size_t i = 0; i < n; i++) {
		id = tok_strtab_find(&v->text, s + i, 1);
		if (id >= 0 && tok_ids_push(out, (int32_t)id))
			return -ENOMEM;
	}
	return 0;
}

int tok_bpe_word(const struct tok_vocab *v, struct tok_work *w, const char *word, size_t len,
		 struct tok_ids *out)
{
	/* byte-level encoding: at most 2 UTF-8 bytes per byte */
	if (len > UINT32_MAX / 2)
		return -EOVERFLOW; /* symbol offsets are 32-bit */
	if (tok_grow((void **)&w->buf, &w->cap_buf, 2 * len + 1, 1))
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += (size_t)tok_utf8_encode(tok_byte_to_cp((uint8_t)word[i]), w->buf + n);

	if (v->ignore_merges) {
		int64_t id = tok_strtab_find(&v->text, w->buf, n);
		if (id >= 0)
			return tok_ids_push(out, (int32_t)id);
	}

	/* one symbol per encoded character (1 or 2 bytes) */
	int rc = tok_symbols_merge(v, w, n, add_bigram, false);
	if (rc)
		return rc;

	for (int32_t i = w->n_sym ? 0 : -1; i >= 0; i = w->sym[i].next) {
		int rc = emit(v, w->buf + w->sym[i].off, w->sym[i].n, out);
		if (rc)
			return rc;
	}
	return 0;
}
