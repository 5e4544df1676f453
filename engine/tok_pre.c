/*
 * tok_pre.c: regex pre-tokenizers of byte-level BPE vocabularies (PCRE2,
 * UTF + UCP, JIT when available).
 *
 * A pre-tokenizer is a list of regexes applied in turn, as llama.cpp does:
 * each regex splits every piece the previous one produced into its matches
 * and the unmatched gaps between them (both kept), never looking across a
 * piece's ends (lookaheads included).
 *
 * Character classes: llama.cpp classifies code points with its own tables
 * (Unicode 15.1 general categories, White_Space for \s). To give identical
 * splits whatever Unicode version the installed PCRE2 knows, the patterns do
 * not use \s or bare \p{..}: WS is the exact White_Space set (PCRE2's \s also
 * matches U+180E), and L/N/P add the code points that Unicode 15.0 and 15.1
 * assigned (UCD 15.1 DerivedGeneralCategory) to PCRE2's \p{L}/\p{N}/\p{P}, which
 * are otherwise identical to llama.cpp's (checked over all code points against
 * PCRE2 10.42 / Unicode 14).
 *
 * Threading: compiled patterns are shared read-only; match data is per call.
 */
#include "engine/tok_impl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define WS "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define L_ \
	"\\p{L}\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"        \
	"\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"               \
	"\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define N_ "\\p{N}\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"
#define P_ "\\p{P}\\x{11B00}-\\x{11B09}\\x{11F43}-\\x{11F4F}"

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static const char re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?[" L_ "]+| ?[" N_ "]+| ?[^" WS L_ N_ "]+|[" WS
			      "]+(?![^" WS "])";

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
#define LLAMA3_LIKE(DIGITS)                                                                                   \
	"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n" L_ N_ "]?[" L_ "]+|[" N_ "]" DIGITS \
	"| ?[^" WS L_ N_ "]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+"
static const char re_llama3[] = LLAMA3_LIKE("{1,3}");
/* Qwen2: as Llama 3 but one digit at a time */
static const char re_qwen2[] = LLAMA3_LIKE("");

static const char re_digit[] = "[" N_ "]";
static const char re_digits[] = "[" N_ "]+";
static const char re_punct[] = "[" P_ "\\$\\+<=>\\^~\\|]+";
static const char re_ascii3[] = "[0-9][0-9][0-9]";

static int compile_one(struct tok_pretok *p, const char *pat, char *err, size_t errlen)
{
	int ec;
	PCRE2_SIZE eoff;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eoff,
				       NULL);
	if (!re) {
		PCRE2_UCHAR msg[128];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		snprintf(err, errlen, "pre-tokenizer regex does not compile at %zu: %s", (size_t)eoff,
			 (const char *)msg);
		return -EINVAL;
	}
	/* JIT is an optimisation: without it (no JIT in this build) the
	 * interpreter gives the same matches. */
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	p->re[p->n_re++] = re;
	return 0;
}

int tok_pretok_init(struct tok_pretok *p, enum tok_pre pre, char *err, size_t errlen)
{
	const char *pats[TOK_PRE_MAX_RE] = {0};
	int n = 0;
	memset(p, 0, sizeof(*p));
	switch (pre) {
	case TOK_PRE_NONE:
		return 0;
	case TOK_PRE_DEFAULT:
		pats[n++] = re_punct;
		pats[n++] = re_gpt2;
		pats[n++] = re_digits;
		pats[n++] = re_ascii3;
		break;
	case TOK_PRE_GPT2:
		pats[n++] = re_gpt2;
		break;
	case TOK_PRE_LLAMA3:
		pats[n++] = re_llama3;
		break;
	case TOK_PRE_STARCODER:
		pats[n++] = re_digit;
		pats[n++] = re_gpt2;
		break;
	case TOK_PRE_QWEN2:
		pats[n++] = re_qwen2;
		break;
	}
	for (int i = 0; i < n; i++) {
		int rc = compile_one(p, pats[i], err, errlen);
		if (rc) {
			tok_pretok_free(p);
			return rc;
		}
	}
	return 0;
}

void tok_pretok_free(struct tok_pretok *p)
{
	for (int i = 0; i < p->n_re; i++)
		pcre2_code_free(p->re[i]);
	memset(p, 0, sizeof(*p));
}

static int span_push(struct tok_span_vec *s, size_t off, size_t len)
{
	if (s->n == s->cap && tok_grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v)))
		return -ENOMEM;
	s->v[s->n].off = (uint32_t)off;
	s->v[s->n].len = (uint32_t)len;
	s->n++;
	return 0;
}

/* Splits text[off, off + len) with re into matches and gaps. */
static int split_piece(const pcre2_code *re, const char *text, size_t off, size_t len, pcre2_match_data *md,
		       struct tok_span_vec *out)
{
	/* The piece is the whole subject, so lookaheads stop at its end. */
	PCRE2_SPTR subj = (PCRE2_SPTR)(text + off);
	size_t pos = 0, gap = 0;
	while (pos < len) {
		int rc = pcre2_match(re, subj, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
		if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter keeps its state on the heap */
			rc = pcre2_match(re, subj, len, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0)
			return -EOVERFLOW; /* resource limit: refuse rather than mis-split */
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		size_t ms = ov[0], me = ov[1];
		if (me == ms) {
			/* none of our patterns matches empty; step one character to be safe */
			pos = ms + 1;
			while (pos < len && ((uint8_t)subj[pos] & 0xC0) == 0x80)
				pos++;
			continue;
		}
		if (ms > gap && span_push(out, off + gap, ms - gap))
			return -ENOMEM;
		if (span_push(out, off + ms, me - ms))
			return -ENOMEM;
		gap = pos = me;
	}
	if (gap < len && span_push(out, off + gap, len - gap))
		return -ENOMEM;
	return 0;
}

int tok_pretok_split(const struct tok_pretok *p, const char *text, size_t len, pcre2_match_data *md,
		     struct tok_span_vec *out, struct tok_span_vec *tmp)
{
	out->n = 0;
	if (len == 0)
		return 0;
	if (span_push(out, 0, len))
		return -ENOMEM;
	for (int r = 0; r < p->n_re; r++) {
		tmp->n = 0;
		for (size_t i = 0; i < out->n; i++) {
			int rc = split_piece(p->re[r], text, out->v[i].off, out->v[i].len, md, tmp);
			if (rc)
				return rc;
		}
		/* the result becomes out; the old out is the next scratch */
		struct tok_span_vec t = *out;
		*out = *tmp;
		*tmp = t;
	}
	return 0;
}
