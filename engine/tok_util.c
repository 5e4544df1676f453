/*
 * tok_util.c: the tokenizer's building blocks: memory helpers, the string
 * table with its hash index, UTF-8 decoding (llama.cpp's lenient rules for
 * tokenizing, strict rules for the stream) and the byte-level alphabet.
 *
 * Invariants: a string table's hash index never holds two equal strings;
 * lookups compare the full bytes, the stored 32 hash bits only filter.
 * Threading: everything here is pure or works on caller-owned data.
 */
#include "engine/tok_impl.h"

#include "alloc/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Under AddressSanitizer the engine allocator (mimalloc) would hide
 * overflows from the sanitizer, so sanitized builds (tests, fuzzing) use libc.
 */
#if defined(__SANITIZE_ADDRESS__)
#define TOK_LIBC_ALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TOK_LIBC_ALLOC 1
#endif
#endif

void *tok_malloc(size_t bytes)
{
#ifdef TOK_LIBC_ALLOC
	return malloc(bytes ? bytes : 1);
#else
	return alloc_mem(bytes);
#endif
}

void *tok_calloc(size_t n, size_t size)
{
#ifdef TOK_LIBC_ALLOC
	return calloc(n ? n : 1, size ? size : 1);
#else
	return alloc_array(n, size);
#endif
}

void tok_mfree(void *p)
{
#ifdef TOK_LIBC_ALLOC
	free(p);
#else
	alloc_free(p);
#endif
}

int tok_grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 16;
	while (n < need) {
		if (n > SIZE_MAX / 2)
			return -ENOMEM;
		n *= 2;
	}
	if (n > SIZE_MAX / size)
		return -ENOMEM;
	void *q = tok_malloc(n * size);
	if (!q)
		return -ENOMEM;
	if (*p && *cap)
		memcpy(q, *p, *cap * size);
	tok_mfree(*p);
	*p = q;
	*cap = n;
	return 0;
}

int tok_ids_push(struct tok_ids *ids, int32_t id)
{
	if (ids->n == ids->cap && tok_grow((void **)&ids->v, &ids->cap, ids->n + 1, sizeof(int32_t)))
		return -ENOMEM;
	ids->v[ids->n++] = id;
	return 0;
}

/* ---- string table ---- */

#define FNV_OFF 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv_feed(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= FNV_PRIME;
	}
	return h;
}

static inline uint32_t fnv_fold(uint64_t h)
{
	/* fold so both halves feed the slot index and the stored check bits */
	return (uint32_t)(h ^ (h >> 32));
}

int tok_strtab_init(struct tok_strtab *t, uint32_t n, size_t pool_bytes)
{
	memset(t, 0, sizeof(*t));
	uint32_t slots = 16;
	while (slots < 2u * n + 1) {
		if (slots >= (1u << 31))
			return -ENOMEM;
		slots *= 2;
	}
	t->pool = tok_malloc(pool_bytes);
	t->off = tok_calloc(n, sizeof(uint32_t));
	t->len = tok_calloc(n, sizeof(uint32_t));
	t->slots = tok_calloc(slots, sizeof(uint64_t));
	t->mask = slots - 1;
	if (!t->pool || !t->off || !t->len || !t->slots) {
		tok_strtab_free(t);
		return -ENOMEM;
	}
	return 0;
}

void tok_strtab_free(struct tok_strtab *t)
{
	tok_mfree(t->pool);
	tok_mfree(t->off);
	tok_mfree(t->len);
	tok_mfree(t->slots);
	memset(t, 0, sizeof(*t));
}

static bool key_eq(const struct tok_strtab *t, uint32_t idx, const char *a, size_t alen, int sep, const char *b,
		   size_t blen)
{
	size_t total = alen + (sep >= 0) + blen;
	if (t->len[idx] != total)
		return false;
	const char *s = t->pool + t->off[idx];
	if (alen && memcmp(s, a, alen) != 0)
		return false;
	if (sep >= 0 && (uint8_t)s[alen] != (uint8_t)sep)
		return false;
	return blen == 0 || memcmp(s + alen + (sep >= 0), b, blen) == 0;
}

int64_t tok_strtab_find2(const struct tok_strtab *t, const char *a, size_t alen, int sep, const char *b,
			 size_t blen)
{
	uint64_t h = fnv_feed(FNV_OFF, a, alen);
	if (sep >= 0) {
		char c = (char)sep;
		h = fnv_feed(h, &c, 1);
	}
	h = fnv_feed(h, b, blen);
	uint32_t h32 = fnv_fold(h);
	for (uint32_t i = h32 & t->mask;; i = (i + 1) & t->mask) {
		uint64_t s = t->slots[i];
		if (!s)
			return -1;
		if ((uint32_t)(s >> 32) != h32)
			continue;
		uint32_t idx = (uint32_t)s - 1;
		if (key_eq(t, idx, a, alen, sep, b, blen))
			return idx;
	}
}

int64_t tok_strtab_add(struct tok_strtab *t, const char *s, size_t len, bool index_it)
{
	uint32_t idx = t->n;
	uint32_t off = idx ? t->off[idx - 1] + t->len[idx - 1] : 0;
	memcpy(t->pool + off, s, len);
	t->off[idx] = off;
	t->len[idx] = (uint32_t)len;
	t->n++;
	if (!index_it)
		return -1;
	uint32_t h32 = fnv_fold(fnv_feed(FNV_OFF, s, len));
	for (uint32_t i = h32 & t->mask;; i = (i + 1) & t->mask) {
		uint64_t sl = t->slots[i];
		if (!sl) {
			t->slots[i] = ((uint64_t)h32 << 32) | (uint64_t)(idx + 1);
			return -1;
		}
		if ((uint32_t)(sl >> 32) == h32 && key_eq(t, (uint32_t)sl - 1, s, len, -1, NULL, 0))
			return (int64_t)((uint32_t)sl - 1);
	}
}

/* ---- UTF-8 ---- */

static inline bool is_cont(uint8_t b)
{
	return (b & 0xC0) == 0x80;
}

uint32_t tok_utf8_decode(const uint8_t *s, size_t n, size_t *adv)
{
	uint8_t b0 = s[0];
	*adv = 1;
	if (b0 < 0x80)
		return b0;
	if (!(b0 & 0x40))
		return 0xFFFD; /* stray continuation byte */
	if (!(b0 & 0x20)) {
		if (n < 2 || !is_cont(s[1]))
			return 0xFFFD;
		*adv = 2;
		return ((uint32_t)(b0 & 0x1F) << 6) | (s[1] & 0x3F);
	}
	if (!(b0 & 0x10)) {
		if (n < 3 || !is_cont(s[1]) || !is_cont(s[2]))
			return 0xFFFD;
		*adv = 3;
		return ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
	}
	if (!(b0 & 0x08)) {
		if (n < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3]))
			return 0xFFFD;
		uint32_t cp = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
			      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
		if (cp > 0x10FFFF)
			return 0xFFFD; /* llama.cpp aborts here; we replace the lead byte */
		*adv = 4;
		return cp;
	}
	return 0xFFFD;
}

int tok_utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

int tok_utf8_valid_seq(const uint8_t *s, size_t n)
{
	uint8_t b0 = s[0];
	if (b0 < 0x80)
		return 1;
	int need;
	uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
	if (b0 >= 0xC2 && b0 <= 0xDF) {
		need = 2;
	} else if (b0 >= 0xE0 && b0 <= 0xEF) {
		need = 3;
		if (b0 == 0xE0)
			lo = 0xA0; /* no overlongs */
		else if (b0 == 0xED)
			hi = 0x9F; /* no surrogates */
	} else if (b0 >= 0xF0 && b0 <= 0xF4) {
		need = 4;
		if (b0 == 0xF0)
			lo = 0x90;
		else if (b0 == 0xF4)
			hi = 0x8F; /* <= U+10FFFF */
	} else {
		return -1; /* continuation byte, C0/C1, F5..FF */
	}
	for (int i = 1; i < need; i++) {
		if ((size_t)i >= n)
			return 0; /* valid so far, unfinished */
		uint8_t b = s[i];
		uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
		if (b < l || b > h)
			return -i;
	}
	return need;
}

int tok_cp_to_byte(uint32_t cp)
{
	if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
		return (int)cp;
	if (cp >= 256 && cp <= 256 + 32)
		return (int)(cp - 256);
	if (cp >= 256 + 33 && cp <= 256 + 33 + 33)
		return (int)(0x7F + (cp - 256 - 33));
	if (cp == 256 + 33 + 34)
		return 0xAD;
	return -1;
}

/* ---- bigram heap ---- */

/* true when a must come out before b */
static inline bool bigram_before(const struct tok_bigram *a, const struct tok_bigram *b, bool by_score)
{
	if (by_score) {
		if (a->score != b->score)
			return a->score > b->score;
	} else if (a->rank != b->rank) {
		return a->rank < b->rank;
	}
	return a->left < b->left;
}

int tok_heap_push(struct tok_work *w, const struct tok_bigram *b, bool by_score)
{
	if (w->n_heap == w->cap_heap &&
	    tok_grow((void **)&w->heap, &w->cap_heap, w->n_heap + 1, sizeof(*w->heap)))
		return -ENOMEM;
	size_t i = w->n_heap++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!bigram_before(b, &w->heap[parent], by_score))
			break;
		w->heap[i] = w->heap[parent];
		i = parent;
	}
	w->heap[i] = *b;
	return 0;
}

void tok_heap_pop(struct tok_work *w, struct tok_bigram *top, bool by_score)
{
	*top = w->heap[0];
	struct tok_bigram last = w->heap[--w->n_heap];
	size_t n = w->n_heap, i = 0;
	if (n == 0)
		return;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c], by_score))
			c++;
		if (!bigram_before(&w->heap[c], &last, by_score))
			break;
		w->heap[i] = w->heap[c];
		i = c;
	}
	w->heap[i] = last;
}

void tok_work_free(struct tok_work *w)
{
	tok_mfree(w->sym);
	tok_mfree(w->heap);
	tok_mfree(w->buf);
	memset(w, 0, sizeof(*w));
}

int tok_symbols_merge(const struct tok_vocab *v, struct tok_work *w, size_t n, tok_bigram_fn pair, bool by_score)
{
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
		if (pair(v, w, (int32_t)i - 1, (int32_t)i))
			return -ENOMEM;
	}
	while (w->n_heap) {
		struct tok_bigram b;
		tok_heap_pop(w, &b, by_score);
		struct tok_sym *l = &w->sym[b.left], *r = &w->sym[b.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = b.left;
		if (pair(v, w, l->prev, b.left) || pair(v, w, b.left, l->next))
			return -ENOMEM;
	}
	return 0;
}
