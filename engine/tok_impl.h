/*
 * tok_impl.h: internals shared by the tokenizer's files (tokenizer.c,
 * tok_load.c, tok_spm.c, tok_bpe.c, tok_pre.c, tok_util.c). Not part of the
 * engine's API; include engine/tokenizer.h instead.
 *
 * Layout: every string of the vocabulary lives in one pool per string table
 * (struct tok_strtab), indexed by id, with an open-addressing hash index for
 * the reverse lookup. Merges are a second string table ("left right", rank =
 * index). Pieces (what an id decodes to, special=true) are precomputed at load.
 */
#ifndef LOCUS_ENGINE_TOK_IMPL_H
#define LOCUS_ENGINE_TOK_IMPL_H

#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

enum tok_model {
	TOK_MODEL_SPM = 1,
	TOK_MODEL_BPE = 2,
};

enum tok_pre {
	TOK_PRE_NONE = 0,  /* SPM: no pre-tokenizer */
	TOK_PRE_DEFAULT,   /* llama.cpp's fallback set of four regexes */
	TOK_PRE_GPT2,
	TOK_PRE_LLAMA3,
	TOK_PRE_STARCODER, /* digits split, then GPT-2 */
	TOK_PRE_QWEN2,
};

/* ---- memory (engine allocator; libc under ASan so overflows are seen) ---- */
void *tok_malloc(size_t bytes);
void *tok_calloc(size_t n, size_t size); /* overflow-checked, zeroed */
void tok_mfree(void *p);
/* Grows *p (elements of `size`) to hold at least `need`; 0 or -ENOMEM. */
int tok_grow(void **p, size_t *cap, size_t need, size_t size);

/* ---- string table: id -> bytes, bytes -> id ---- */
struct tok_strtab {
	char *pool;     /* all strings back to back */
	uint32_t *off;  /* (n) */
	uint32_t *len;  /* (n) */
	uint32_t n;
	uint64_t *slots; /* (mask + 1): 0 empty, else (hash32 << 32) | (index + 1) */
	uint32_t mask;
};

/* Allocates room for n strings of pool_bytes in total. */
int tok_strtab_init(struct tok_strtab *t, uint32_t n, size_t pool_bytes);
void tok_strtab_free(struct tok_strtab *t);
/* Appends string number t->n (indexes are assigned in order). With
 * `index_it` it also enters the hash index and returns the index of an equal
 * string already present (>= 0) instead of -1 (then the new one is stored
 * but not indexed). */
int64_t tok_strtab_add(struct tok_strtab *t, const char *s, size_t len, bool index_it);
/* Index of the string a || sep || b (sep < 0: no separator), -1 if absent. */
int64_t tok_strtab_find2(const struct tok_strtab *t, const char *a, size_t alen, int sep, const char *b,
			 size_t blen);
static inline int64_t tok_strtab_find(const struct tok_strtab *t, const char *s, size_t len)
{
	return tok_strtab_find2(t, s, len, -1, NULL, 0);
}

/* ---- UTF-8 ---- */
/* llama.cpp's length from the lead byte alone (continuation bytes: 1). */
static inline size_t tok_utf8_lead_len(uint8_t b)
{
	static const uint8_t lut[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
	return lut[b >> 4];
}
/* Decodes one code point at s[0..n), n >= 1, with llama.cpp's lenient rules:
 * overlong forms and surrogates are accepted, anything else ill-formed yields
 * U+FFFD and consumes one byte. Code points above U+10FFFF (where llama.cpp
 * throws) are treated as ill-formed too. */
uint32_t tok_utf8_decode(const uint8_t *s, size_t n, size_t *adv);
/* Encodes cp (<= 0x10FFFF, surrogates allowed) into out; returns 1..4. */
int tok_utf8_encode(uint32_t cp, char *out);
/* Length of the valid UTF-8 sequence at s[0..n): 1..4, 0 when s is a valid
 * but unfinished prefix, -k when the first k bytes are a maximal ill-formed
 * subpart (strict: no overlongs, surrogates, > U+10FFFF). */
int tok_utf8_valid_seq(const uint8_t *s, size_t n);

/* GPT-2 byte-level alphabet: byte <-> code point (0..323). */
static inline uint32_t tok_byte_to_cp(uint8_t b)
{
	if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
		return b;
	if (b <= 0x20)
		return 256u + b;
	if (b <= 0xA0)
		return 256u + 33u + (b - 0x7Fu);
	return 256u + 33u + 34u; /* 0xAD */
}
/* -1 when cp is not in the alphabet. */
int tok_cp_to_byte(uint32_t cp);

/* ---- pre-tokenizer (tok_pre.c) ---- */
#define TOK_PRE_MAX_RE 4
struct tok_pretok {
	int n_re;
	pcre2_code *re[TOK_PRE_MAX_RE];
};

/* A word: bytes [off, off + len) of the text handed to the splitter. */
struct tok_span {
	uint32_t off;
	uint32_t len;
};

struct tok_span_vec {
	struct tok_span *v;
	size_t n, cap;
};

int tok_pretok_init(struct tok_pretok *p, enum tok_pre pre, char *err, size_t errlen);
void tok_pretok_free(struct tok_pretok *p);
/* Splits text[0..len) (valid UTF-8) into words, replacing out's contents;
 * tmp is scratch (the two may swap buffers). 0, -ENOMEM or -EOVERFLOW
 * (regex engine error). */
int tok_pretok_split(const struct tok_pretok *p, const char *text, size_t len, pcre2_match_data *md,
		     struct tok_span_vec *out, struct tok_span_vec *tmp);

/* ---- the vocabulary ---- */
struct tok_vocab {
	enum tok_model model;
	enum tok_pre pre;
	char model_name[16];
	char pre_name[48];
	int32_t n_vocab;

	struct tok_strtab text;   /* id -> vocab string */
	struct tok_strtab merges; /* rank -> "left right" (BPE) */
	float *score;             /* (n_vocab) */
	uint32_t *attr;           /* (n_vocab) enum tok_attr bits */
	char *piece_pool;         /* pieces with special=true */
	uint32_t *piece_off;      /* (n_vocab) */
	uint32_t *piece_len;      /* (n_vocab) */
	int piece_max;

	int32_t *special;         /* ids partitioned out of the text, longest text first */
	int32_t n_special;
	int32_t *eog;             /* ascending */
	int32_t n_eog;
	int32_t byte_tok[256];    /* SPM byte fallback ids, -1 when absent */

	int32_t bos, eos, eot, eom, unk, pad;
	bool add_bos, add_eos;
	bool add_space_prefix;    /* SPM */
	bool ignore_merges;       /* BPE: a word that is a token is taken whole */
	bool clean_spaces;        /* detokenizer clean-up */

	struct tok_pretok pretok;
};

/* Growable id list. */
struct tok_ids {
	int32_t *v;
	size_t n, cap;
};
int tok_ids_push(struct tok_ids *ids, int32_t id);

/* Per-call scratch of the model algorithms. */
struct tok_sym {
	int32_t prev, next;
	uint32_t off; /* into the word */
	uint32_t n;   /* bytes; 0 once merged into its left neighbour */
};

struct tok_bigram {
	float score;   /* SPM: higher first */
	int32_t rank;  /* BPE: lower first */
	int32_t left, right;
	uint32_t size; /* bytes of left + right when queued */
};

struct tok_work {
	struct tok_sym *sym;
	size_t n_sym, cap_sym;
	struct tok_bigram *heap;
	size_t n_heap, cap_heap;
	char *buf; /* SPM escaped text / BPE byte-encoded word */
	size_t cap_buf;
};

void tok_work_free(struct tok_work *w);
/* Priority queue of bigrams: by_score (SPM) highest score first, else (BPE)
 * lowest rank first; ties go to the leftmost pair, as in llama.cpp. */
int tok_heap_push(struct tok_work *w, const struct tok_bigram *b, bool by_score);
/* Queues the pair (left, right) of w->sym if the vocabulary can merge it. */
typedef int (*tok_bigram_fn)(const struct tok_vocab *v, struct tok_work *w, int32_t left, int32_t right);
/* Splits w->buf[0..n) into one symbol per UTF-8 character, then merges
 * adjacent symbols best pair first (by_score: SPM scores; otherwise BPE
 * ranks) until no pair is left. 0 or -ENOMEM. */
int tok_symbols_merge(const struct tok_vocab *v, struct tok_work *w, size_t n, tok_bigram_fn pair, bool by_score);
void tok_heap_pop(struct tok_work *w, struct tok_bigram *top, bool by_score);

/* Appends the SPM tokens of text (raw, not yet escaped) to out. */
int tok_spm_encode(const struct tok_vocab *v, struct tok_work *w, const char *text, size_t len,
		   bool space_prefix, struct tok_ids *out);
/* Appends the BPE tokens of one pre-tokenized word (raw bytes) to out. */
int tok_bpe_word(const struct tok_vocab *v, struct tok_work *w, const char *word, size_t len,
		 struct tok_ids *out);

/* tok_load.c */
int tok_load_pieces(struct tok_vocab *v);

#endif
