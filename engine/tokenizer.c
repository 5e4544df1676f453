/*
 * tokenizer.c: the tokenizer's API: encoding (special-token partition, then
 * SPM or pre-tokenizer + BPE per text fragment), pieces, detokenization and
 * the streaming UTF-8-safe detokenizer.
 *
 * Special-token partition (llama.cpp's tokenizer_st_partition): for each
 * special token, longest text first, every occurrence in the text fragments
 * not yet claimed splits the fragment into left text, the token, right text.
 *
 * BPE input is first decoded with llama.cpp's lenient UTF-8 rules and
 * re-encoded ("real" text: invalid bytes -> U+FFFD, overlongs shortened,
 * surrogates kept). PCRE2 needs valid UTF-8, so it runs on a "safe" copy of
 * the same byte length where surrogates read as U+E000 (same classes in every
 * pattern we use); the words found are then cut from the real text.
 *
 * Threading: see tokenizer.h; each call owns its scratch (struct enc).
 */
#define _GNU_SOURCE /* memmem */
#include "engine/tok_impl.h"

#include <errno.h>
#include <string.h>

/* ---- accessors ---- */

int32_t tok_n_vocab(const tok_vocab_t *v)
{
	return v->n_vocab;
}
int32_t tok_bos(const tok_vocab_t *v)
{
	return v->bos;
}
int32_t tok_eos(const tok_vocab_t *v)
{
	return v->eos;
}
int32_t tok_eot(const tok_vocab_t *v)
{
	return v->eot;
}
int32_t tok_unk(const tok_vocab_t *v)
{
	return v->unk;
}
int32_t tok_pad(const tok_vocab_t *v)
{
	return v->pad;
}
bool tok_add_bos(const tok_vocab_t *v)
{
	return v->add_bos;
}
bool tok_add_eos(const tok_vocab_t *v)
{
	return v->add_eos;
}
const char *tok_model_name(const tok_vocab_t *v)
{
	return v->model_name;
}
const char *tok_pre_name(const tok_vocab_t *v)
{
	return v->pre_name;
}

bool tok_is_eog(const tok_vocab_t *v, int32_t id)
{
	int32_t lo = 0, hi = v->n_eog;
	while (lo < hi) {
		int32_t mid = lo + (hi - lo) / 2;
		if (v->eog[mid] == id)
			return true;
		if (v->eog[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

int32_t tok_eog_ids(const tok_vocab_t *v, const int32_t **ids)
{
	*ids = v->eog;
	return v->n_eog;
}

uint32_t tok_attr(const tok_vocab_t *v, int32_t id)
{
	return id >= 0 && id < v->n_vocab ? v->attr[id] : 0;
}

bool tok_is_control(const tok_vocab_t *v, int32_t id)
{
	return tok_attr(v, id) & TOK_ATTR_CONTROL;
}

int32_t tok_lookup(const tok_vocab_t *v, const char *piece, size_t len)
{
	if (!piece && len)
		return -1;
	return (int32_t)tok_strtab_find(&v->text, piece, len);
}

const char *tok_text(const tok_vocab_t *v, int32_t id, size_t *len)
{
	if (id < 0 || id >= v->n_vocab)
		return NULL;
	*len = v->text.len[id];
	return v->text.pool + v->text.off[id];
}

/* ---- encoding ---- */

struct frag {
	int32_t id; /* -1: text */
	uint32_t off, len;
};

struct frag_vec {
	struct frag *v;
	size_t n, cap;
};

struct enc {
	struct tok_work work;
	struct tok_ids ids;
	struct frag_vec frags, frags2;
	char *real, *safe;
	size_t cap_text;
	struct tok_span_vec words, words_tmp;
	pcre2_match_data *md;
};

static void enc_free(struct enc *e)
{
	tok_work_free(&e->work);
	tok_mfree(e->ids.v);
	tok_mfree(e->frags.v);
	tok_mfree(e->frags2.v);
	tok_mfree(e->real);
	tok_mfree(e->safe);
	tok_mfree(e->words.v);
	tok_mfree(e->words_tmp.v);
	if (e->md)
		pcre2_match_data_free(e->md);
}

static int frag_push(struct frag_vec *f, int32_t id, size_t off, size_t len)
{
	if (f->n == f->cap && tok_grow((void **)&f->v, &f->cap, f->n + 1, sizeof(*f->v)))
		return -ENOMEM;
	f->v[f->n++] = (struct frag){id, (uint32_t)off, (uint32_t)len};
	return 0;
}

/* Cuts every occurrence of the special token sid out of the text fragments. */
static int partition_one(const struct tok_vocab *v, struct enc *e, const char *text, int32_t sid)
{
	const char *st = v->text.pool + v->text.off[sid];
	size_t sn = v->text.len[sid];
	struct frag_vec *src = &e->frags, *dst = &e->frags2;
	bool any = false;
	dst->n = 0;
	for (size_t i = 0; i < src->n; i++) {
		struct frag f = src->v[i];
		const char *hit = NULL;
		if (f.id < 0 && f.len >= sn)
			hit = memmem(text + f.off, f.len, st, sn);
		if (!hit) {
			if (frag_push(dst, f.id, f.off, f.len))
				return -ENOMEM;
			continue;
		}
		any = true;
		size_t pos = f.off, end = (size_t)f.off + f.len;
		while (hit) {
			size_t at = (size_t)(hit - text);
			if (at > pos && frag_push(dst, -1, pos, at - pos))
				return -ENOMEM;
			if (frag_push(dst, sid, at, sn))
				return -ENOMEM;
			pos = at + sn;
			hit = end - pos >= sn ? memmem(text + pos, end - pos, st, sn) : NULL;
		}
		if (pos < end && frag_push(dst, -1, pos, end - pos))
			return -ENOMEM;
	}
	if (any) {
		struct frag_vec t = *src;
		*src = *dst;
		*dst = t;
	}
	return 0;
}

/* Decodes text leniently into e->real / e->safe (equal lengths); returns
 * the length or -ENOMEM. */
static int64_t bpe_normalize(struct enc *e, const char *text, size_t len)
{
	size_t need = 3 * len + 4; /* an invalid byte grows to 3 */
	if (need > e->cap_text) {
		tok_mfree(e->real);
		tok_mfree(e->safe);
		e->real = tok_malloc(need);
		e->safe = tok_malloc(need);
		e->cap_text = need;
		if (!e->real || !e->safe) {
			e->cap_text = 0;
			return -ENOMEM;
		}
	}
	size_t n = 0;
	for (size_t i = 0; i < len;) {
		size_t adv;
		uint32_t cp = tok_utf8_decode((const uint8_t *)text + i, len - i, &adv);
		i += adv;
		int k = tok_utf8_encode(cp, e->real + n);
		if (cp >= 0xD800 && cp <= 0xDFFF)
			tok_utf8_encode(0xE000, e->safe + n);
		else
			memcpy(e->safe + n, e->real + n, (size_t)k);
		n += (size_t)k;
	}
	return (int64_t)n;
}

static int encode_bpe_text(const struct tok_vocab *v, struct enc *e, const char *text, size_t len)
{
	int64_t n = bpe_normalize(e, text, len);
	if (n < 0)
		return (int)n;
	if (n > (int64_t)UINT32_MAX / 2)
		return -EOVERFLOW;
	int rc = tok_pretok_split(&v->pretok, e->safe, (size_t)n, e->md, &e->words, &e->words_tmp);
	for (size_t i = 0; !rc && i < e->words.n; i++)
		rc = tok_bpe_word(v, &e->work, e->real + e->words.v[i].off, e->words.v[i].len, &e->ids);
	return rc;
}

static int encode_all(const struct tok_vocab *v, struct enc *e, const char *text, size_t len, bool add_special,
		      bool parse_special)
{
	int rc = 0;
	if (len > 0)
		rc = frag_push(&e->frags, -1, 0, len);
	for (int32_t k = 0; !rc && k < v->n_special && e->frags.n; k++) {
		int32_t sid = v->special[k];
		/* user-defined tokens are always cut out; control/unknown only on request */
		if (!parse_special && (v->attr[sid] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)))
			continue;
		rc = partition_one(v, e, text, sid);
	}
	if (rc)
		return rc;

	if (add_special && v->add_bos && (rc = tok_ids_push(&e->ids, v->bos)))
		return rc;
	bool prev_special = true; /* SPM: a space goes before the first text */
	for (size_t i = 0; i < e->frags.n; i++) {
		struct frag f = e->frags.v[i];
		if (f.id >= 0) {
			rc = tok_ids_push(&e->ids, f.id);
			prev_special = true;
		} else if (v->model == TOK_MODEL_SPM) {
			rc = tok_spm_encode(v, &e->work, text + f.off, f.len, v->add_space_prefix && prev_special,
					    &e->ids);
			prev_special = false;
		} else {
			rc = encode_bpe_text(v, e, text + f.off, f.len);
		}
		if (rc)
			return rc;
	}
	if (add_special && v->add_eos)
		rc = tok_ids_push(&e->ids, v->eos);
	return rc;
}

int64_t tok_encode(const tok_vocab_t *v, const char *text, size_t len, bool add_special, bool parse_special,
		   int32_t *out, int64_t cap)
{
	if (!v || (!text && len) || cap < 0 || (!out && cap > 0))
		return -EINVAL;
	if (len > (size_t)INT32_MAX)
		return -EOVERFLOW;
	struct enc e;
	memset(&e, 0, sizeof(e));
	if (v->model == TOK_MODEL_BPE) {
		e.md = pcre2_match_data_create(1, NULL);
		if (!e.md)
			return -ENOMEM;
	}
	int rc = encode_all(v, &e, text, len, add_special, parse_special);
	int64_t n = (int64_t)e.ids.n;
	if (!rc && n > 0 && cap > 0)
		memcpy(out, e.ids.v, (size_t)(n < cap ? n : cap) * sizeof(int32_t));
	enc_free(&e);
	return rc ? rc : n;
}

/* ---- pieces and detokenization ---- */

static inline const char *piece_of(const struct tok_vocab *v, int32_t id, bool special, size_t *n)
{
	if (!special && (v->attr[id] & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL))) {
		*n = 0;
		return v->piece_pool;
	}
	*n = v->piece_len[id];
	return v->piece_pool + v->piece_off[id];
}

int tok_piece(const tok_vocab_t *v, int32_t id, bool special, char *buf, size_t cap)
{
	if (!v || id < 0 || id >= v->n_vocab)
		return -EINVAL;
	size_t n;
	const char *p = piece_of(v, id, special, &n);
	if (n <= cap && n)
		memcpy(buf, p, n);
	return (int)n;
}

int tok_piece_max(const tok_vocab_t *v)
{
	return v->piece_max;
}

/* llama.cpp's clean_up_tokenization_spaces, in place; returns the new length. */
static size_t clean_spaces(char *t, size_t n)
{
	size_t w;
	if (n < 2)
		return n;
	/* " ?" " !" " ." " ," lose the space */
	w = 1;
	for (size_t i = 1; i < n; i++) {
		char x = t[i];
		if (t[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ','))
			w--;
		t[w++] = x;
	}
	n = w;
	/* " ' " loses both spaces */
	w = n ? 1 : 0;
	for (size_t i = 1; i < n; i++) {
		char x = t[i];
		if (x == '\'' && i + 1 < n && t[i - 1] == ' ' && t[i + 1] == ' ') {
			w--;
			t[++i] = '\0';
		}
		t[w++] = x;
	}
	n = w;
	/* " 's" " 'm" " 're" " 've" lose the space */
	w = n ? 1 : 0;
	for (size_t i = 1; i < n; i++) {
		char x = t[i];
		if (t[i - 1] == ' ' && x == '\'' && i + 1 < n) {
			char x1 = t[i + 1];
			if (x1 == 's' || x1 == 'm')
				w--;
			else if (i + 2 < n && ((x1 == 'r' && t[i + 2] == 'e') || (x1 == 'v' && t[i + 2] == 'e')))
				w--;
		}
		t[w++] = x;
	}
	return w;
}

int64_t tok_decode(const tok_vocab_t *v, const int32_t *ids, int64_t n_ids, bool remove_special,
		   bool unparse_special, char *out, size_t cap)
{
	if (!v || n_ids < 0 || (!ids && n_ids) || (!out && cap))
		return -EINVAL;
	for (int64_t i = 0; i < n_ids; i++) {
		if (ids[i] < 0 || ids[i] >= v->n_vocab)
			return -EINVAL;
	}
	bool strip = v->add_space_prefix;
	if (remove_special && v->add_bos && n_ids > 0 && ids[0] == v->bos) {
		strip = false;
		ids++;
		n_ids--;
	}
	if (remove_special && v->add_eos && n_ids > 0 && ids[n_ids - 1] == v->eos)
		n_ids--;

	size_t total = 0;
	for (int64_t i = 0; i < n_ids; i++) {
		size_t n;
		const char *p = piece_of(v, ids[i], unparse_special, &n);
		if (i == 0 && strip && n && p[0] == ' ')
			n--;
		total += n;
	}
	if (total == 0)
		return 0;
	/* clean-up needs the whole text: assemble in scratch when it may not fit */
	char *t = total <= cap ? out : tok_malloc(total);
	if (!t)
		return -ENOMEM;
	size_t at = 0;
	for (int64_t i = 0; i < n_ids; i++) {
		size_t n;
		const char *p = piece_of(v, ids[i], unparse_special, &n);
		if (i == 0 && strip && n && p[0] == ' ') {
			p++;
			n--;
		}
		if (n)
			memcpy(t + at, p, n);
		at += n;
	}
	if (v->clean_spaces)
		total = clean_spaces(t, total);
	if (t != out) {
		if (total <= cap && total)
			memcpy(out, t, total);
		tok_mfree(t);
	}
	return (int64_t)total;
}

/* ---- streaming ---- */

void tok_stream_init(struct tok_stream *s, const tok_vocab_t *v, bool special)
{
	memset(s, 0, sizeof(*s));
	s->v = v;
	s->special = special;
}

size_t tok_stream_bound(const tok_vocab_t *v)
{
	/* every byte may become a 3-byte U+FFFD */
	return 3 * ((size_t)v->piece_max + sizeof(((struct tok_stream *)0)->pend)) + 3;
}

struct sink {
	char *out;
	size_t cap, n;
	bool full;
};

static inline void sink_put(struct sink *k, const void *p, size_t n)
{
	if (k->n + n > k->cap) {
		k->full = true;
		return;
	}
	memcpy(k->out + k->n, p, n);
	k->n += n;
}

static const char k_fffd[3] = {'\xEF', '\xBF', '\xBD'};

int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t cap)
{
	const struct tok_vocab *v = s->v;
	if (!v || id < 0 || id >= v->n_vocab || (!out && cap))
		return -EINVAL;
	size_t plen;
	const uint8_t *p = (const uint8_t *)piece_of(v, id, s->special, &plen);
	struct sink k = {out, cap, 0, false};
	uint8_t pend[3];
	size_t n_pend = s->n_pend, pos = 0;
	memcpy(pend, s->pend, n_pend);

	if (n_pend) {
		/* finish the held-back character with the first bytes of p */
		uint8_t tmp[8];
		size_t take = plen < 3 ? plen : 3;
		memcpy(tmp, pend, n_pend);
		memcpy(tmp + n_pend, p, take);
		int r = tok_utf8_valid_seq(tmp, n_pend + take);
		if (r == 0) {
			/* still unfinished: everything joins the held bytes */
			memcpy(pend + n_pend, p, take);
			n_pend += take;
			pos = plen;
		} else if (r > 0) {
			sink_put(&k, tmp, (size_t)r);
			pos = (size_t)r - n_pend;
			n_pend = 0;
		} else {
			/* held bytes are a valid prefix, so the bad byte is p's */
			sink_put(&k, k_fffd, 3);
			pos = (size_t)(-r) > n_pend ? (size_t)(-r) - n_pend : 0;
			n_pend = 0;
		}
	}
	while (pos < plen) {
		int r = tok_utf8_valid_seq(p + pos, plen - pos);
		if (r > 0) {
			/* copy a run of complete sequences in one go */
			size_t start = pos;
			do {
				pos += (size_t)r;
			} while (pos < plen && (r = tok_utf8_valid_seq(p + pos, plen - pos)) > 0);
			sink_put(&k, p + start, pos - start);
		} else if (r == 0) {
			n_pend = plen - pos;
			memcpy(pend, p + pos, n_pend);
			pos = plen;
		} else {
			sink_put(&k, k_fffd, 3);
			pos += (size_t)(-r);
		}
	}
	if (k.full)
		return -ENOSPC;
	s->n_pend = (uint8_t)n_pend;
	memcpy(s->pend, pend, n_pend);
	return (int)k.n;
}

int tok_stream_flush(struct tok_stream *s, char *out, size_t cap)
{
	if (!s->n_pend)
		return 0;
	if (cap < 3 || !out)
		return -ENOSPC;
	memcpy(out, k_fffd, 3);
	s->n_pend = 0;
	return 3;
}
