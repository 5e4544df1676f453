/*
 * api.c: the text side of the OpenAI-compatible API (api.h): the growable
 * output buffer, UTF-8 checking, JSON string escaping, and the writers of
 * responses, stream events, errors, /v1/models, /tokenize, /detokenize.
 * Request decoding lives in api_parse.c.
 *
 * Invariants: every writer produces valid JSON whatever bytes it is given
 * (strings go through api_buf_json_str; non-finite logprobs become -9999.0,
 * vLLM's stand-in for -inf) and never depends on the C locale (a ',' decimal
 * point is turned back into '.'). Key order follows OpenAI's responses.
 *
 * Threading: pure functions over the caller's buffers; no shared state.
 */
#include "engine/api.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer ---- */

static bool buf_reserve(struct api_buf *b, size_t extra)
{
	if (b->oom)
		return false;
	if (extra > SIZE_MAX - b->n - 1) {
		b->oom = true;
		return false;
	}
	size_t need = b->n + extra + 1; /* + NUL */
	if (need <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	char *p = alloc_mem(cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	if (b->n)
		memcpy(p, b->p, b->n);
	alloc_free(b->p);
	b->p = p;
	b->cap = cap;
	return true;
}

void api_buf_free(struct api_buf *b)
{
	alloc_free(b->p);
	*b = (struct api_buf){0};
}

void api_buf_reset(struct api_buf *b)
{
	b->n = 0;
	b->oom = false;
	if (b->p)
		b->p[0] = '\0';
}

void api_buf_put(struct api_buf *b, const char *s, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

/* lit must be a string literal ("" lit refuses anything else at compile time). */
#define PUT(b, lit) api_buf_put((b), "" lit, sizeof(lit) - 1)

void api_buf_printf(struct api_buf *b, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int k = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (k < 0 || !buf_reserve(b, (size_t)k)) {
		if (k < 0)
			b->oom = true;
		va_end(ap2);
		return;
	}
	vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap2);
	va_end(ap2);
	b->n += (size_t)k;
}

static void put_i64(struct api_buf *b, int64_t v)
{
	char tmp[24];
	int k = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
	api_buf_put(b, tmp, (size_t)k);
}

/* A float as the shortest %g text that reads back to the same float. */
static void put_logprob(struct api_buf *b, float v)
{
	if (!isfinite(v))
		v = -9999.0f;
	char tmp[32];
	int k = 0;
	for (int prec = 6; prec <= 9; prec++) {
		k = snprintf(tmp, sizeof(tmp), "%.*g", prec, (double)v);
		if (strtof(tmp, NULL) == v)
			break;
	}
	for (int i = 0; i < k; i++)
		if (tmp[i] == ',')
			tmp[i] = '.';
	api_buf_put(b, tmp, (size_t)k);
}

/* ---- UTF-8 ---- */

/*
 * Length of the well-formed sequence at s[0..n) (1..4), or minus the length
 * of its maximal ill-formed subpart (-1..-3): the bytes one U+FFFD replaces
 * (Unicode 3.9, "U+FFFD Substitution of Maximal Subparts", which Python's
 * decode(errors="replace") follows). n >= 1.
 */
static int utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	if (c < 0x80)
		return 1;
	int need;
	unsigned lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return -1;
	}
	for (int k = 1; k < need; k++) {
		if ((size_t)k >= n)
			return -k;
		unsigned d = s[k];
		if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xbf))
			return -k;
	}
	return need;
}

size_t api_utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		int k = utf8_seq(u + i, n - i);
		if (k < 0)
			return i;
		i += (size_t)k;
	}
	return i;
}

int64_t api_utf8_chars(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	int64_t chars = 0;
	size_t i = 0;
	while (i < n) {
		int k = u[i] < 0x80 ? 1 : utf8_seq(u + i, n - i);
		i += (size_t)(k < 0 ? -k : k);
		chars++;
	}
	return chars;
}

void api_buf_json_str(struct api_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	PUT(b, "\"");
	size_t run = 0, i = 0; /* u[run..i) is copied verbatim */
	while (i < n) {
		unsigned c = u[i];
		if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0x80) {
			int k = utf8_seq(u + i, n - i);
			if (k > 0) {
				i += (size_t)k;
				continue;
			}
			api_buf_put(b, s + run, i - run);
			PUT(b, "\xef\xbf\xbd");
			i += (size_t)-k;
			run = i;
			continue;
		}
		api_buf_put(b, s + run, i - run);
		char esc[6] = {'\\', 0};
		size_t el = 2;
		switch (c) {
		case '"':
			esc[1] = '"';
			break;
		case '\\':
			esc[1] = '\\';
			break;
		case '\b':
			esc[1] = 'b';
			break;
		case '\f':
			esc[1] = 'f';
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			el = 6;
		}
		api_buf_put(b, esc, el);
		i++;
		run = i;
	}
	api_buf_put(b, s + run, i - run);
	PUT(b, "\"");
}

static void put_str0(struct api_buf *b, const char *s)
{
	if (s)
		api_buf_json_str(b, s, strlen(s));
	else
		PUT(b, "null");
}

/* ---- responses ---- */

const char *api_finish_name(enum api_finish f)
{
	switch (f) {
	case API_FINISH_STOP:
		return "stop";
	case API_FINISH_LENGTH:
		return "length";
	case API_FINISH_ABORT:
		return "abort";
	default:
		return NULL;
	}
}

static void put_finish(struct api_buf *b, enum api_finish f)
{
	const char *name = api_finish_name(f);
	if (name) {
		PUT(b, "\"");
		api_buf_put(b, name, strlen(name));
		PUT(b, "\"");
	} else {
		PUT(b, "null");
	}
}

/* {"id":...,"object":"<object>","created":...,"model":... (left open) */
static void put_head(struct api_buf *b, const struct api_resp_meta *m, const char *object)
{
	PUT(b, "{\"id\":");
	put_str0(b, m->id ? m->id : "");
	PUT(b, ",\"object\":\"");
	api_buf_put(b, object, strlen(object));
	PUT(b, "\",\"created\":");
	put_i64(b, m->created);
	PUT(b, ",\"model\":");
	put_str0(b, m->model ? m->model : "");
}

static void put_usage(struct api_buf *b, const struct api_usage *u)
{
	PUT(b, "\"usage\":{\"prompt_tokens\":");
	put_i64(b, u->prompt_tokens);
	PUT(b, ",\"completion_tokens\":");
	put_i64(b, u->completion_tokens);
	PUT(b, ",\"total_tokens\":");
	put_i64(b, u->prompt_tokens + u->completion_tokens);
	PUT(b, "}");
}

static void top_piece(const struct api_token *t, int j, const char **p, size_t *n)
{
	*p = t->top_piece && t->top_piece[j] ? t->top_piece[j] : "";
	*n = t->top_piece && t->top_piece[j] && t->top_piece_len ? t->top_piece_len[j] : 0;
}

/* Completions logprobs over toks[0..n): the four parallel arrays. */
static void put_cmpl_logprobs(struct api_buf *b, const struct api_token *toks, int64_t n, const int64_t *offsets)
{
	PUT(b, "{\"tokens\":[");
	for (int64_t i = 0; i < n; i++) {
		if (i)
			PUT(b, ",");
		api_buf_json_str(b, toks[i].piece ? toks[i].piece : "", toks[i].piece ? toks[i].piece_len : 0);
	}
	PUT(b, "],\"token_logprobs\":[");
	for (int64_t i = 0; i < n; i++) {
		if (i)
			PUT(b, ",");
		put_logprob(b, toks[i].logprob);
	}
	PUT(b, "],\"top_logprobs\":[");
	for (int64_t i = 0; i < n; i++) {
		if (i)
			PUT(b, ",");
		PUT(b, "{");
		for (int j = 0; j < toks[i].n_top && toks[i].top; j++) {
			const char *p;
			size_t pn;
			top_piece(&toks[i], j, &p, &pn);
			if (j)
				PUT(b, ",");
			api_buf_json_str(b, p, pn);
			PUT(b, ":");
			put_logprob(b, toks[i].top[j].logprob);
		}
		PUT(b, "}");
	}
	PUT(b, "],\"text_offset\":[");
	for (int64_t i = 0; i < n; i++) {
		if (i)
			PUT(b, ",");
		put_i64(b, offsets ? offsets[i] : toks[i].text_offset);
	}
	PUT(b, "]}");
}

static void put_bytes(struct api_buf *b, const char *p, size_t n)
{
	PUT(b, "[");
	for (size_t i = 0; i < n; i++) {
		char tmp[5];
		int k = snprintf(tmp, sizeof(tmp), i ? ",%u" : "%u", (unsigned)(unsigned char)p[i]);
		api_buf_put(b, tmp, (size_t)k);
	}
	PUT(b, "]");
}

/* One entry of chat logprobs "content". */
static void put_chat_logprob(struct api_buf *b, const struct api_token *t)
{
	const char *piece = t->piece ? t->piece : "";
	size_t pn = t->piece ? t->piece_len : 0;
	PUT(b, "{\"token\":");
	api_buf_json_str(b, piece, pn);
	PUT(b, ",\"logprob\":");
	put_logprob(b, t->logprob);
	PUT(b, ",\"bytes\":");
	put_bytes(b, piece, pn);
	PUT(b, ",\"top_logprobs\":[");
	for (int j = 0; j < t->n_top && t->top; j++) {
		const char *p;
		size_t n;
		top_piece(t, j, &p, &n);
		if (j)
			PUT(b, ",");
		PUT(b, "{\"token\":");
		api_buf_json_str(b, p, n);
		PUT(b, ",\"logprob\":");
		put_logprob(b, t->top[j].logprob);
		PUT(b, ",\"bytes\":");
		put_bytes(b, p, n);
		PUT(b, "}");
	}
	PUT(b, "]}");
}

static void put_chat_logprobs(struct api_buf *b, const struct api_token *toks, int64_t n)
{
	PUT(b, "{\"content\":[");
	for (int64_t i = 0; i < n; i++) {
		if (i)
			PUT(b, ",");
		put_chat_logprob(b, &toks[i]);
	}
	PUT(b, "]}");
}

void api_write_response(struct api_buf *b, const struct api_resp_meta *m, const char *text, size_t text_len,
                        const struct api_token *toks, int64_t n_toks, enum api_finish finish,
                        const struct api_usage *usage)
{
	bool chat = m->kind == API_CHAT;
	bool lp = m->logprobs >= 0 && (toks || n_toks == 0);
	if (!text)
		text_len = 0;
	put_head(b, m, chat ? "chat.completion" : "text_completion");
	PUT(b, ",\"choices\":[{\"index\":0,");
	if (chat) {
		PUT(b, "\"message\":{\"role\":\"assistant\",\"content\":");
		api_buf_json_str(b, text ? text : "", text_len);
		PUT(b, "},\"logprobs\":");
		if (lp)
			put_chat_logprobs(b, toks, n_toks);
		else
			PUT(b, "null");
	} else {
		PUT(b, "\"text\":");
		api_buf_json_str(b, text ? text : "", text_len);
		PUT(b, ",\"logprobs\":");
		if (lp) {
			/* text_offset: code points of the emitted text before each token */
			int64_t *off = n_toks > 0 ? alloc_array((size_t)n_toks, sizeof(int64_t)) : NULL;
			if (n_toks > 0 && !off) {
				b->oom = true;
				return;
			}
			int64_t at = 0;
			for (int64_t i = 0; i < n_toks; i++) {
				off[i] = at;
				if (toks[i].text)
					at += api_utf8_chars(toks[i].text, toks[i].text_len);
			}
			put_cmpl_logprobs(b, toks, n_toks, off);
			alloc_free(off);
		} else {
			PUT(b, "null");
		}
	}
	PUT(b, ",\"finish_reason\":");
	put_finish(b, finish);
	PUT(b, "}]");
	if (usage) {
		PUT(b, ",");
		put_usage(b, usage);
	}
	PUT(b, "}");
}

void api_write_stream_chunk(struct api_buf *b, const struct api_resp_meta *m, bool first, const struct api_token *tok,
                            enum api_finish finish)
{
	bool chat = m->kind == API_CHAT;
	const char *text = tok && tok->text ? tok->text : "";
	size_t text_len = tok && tok->text ? tok->text_len : 0;
	PUT(b, "data: ");
	put_head(b, m, chat ? "chat.completion.chunk" : "text_completion");
	PUT(b, ",\"choices\":[{\"index\":0,");
	if (chat) {
		PUT(b, "\"delta\":{");
		if (first) {
			PUT(b, "\"role\":\"assistant\",\"content\":");
			api_buf_json_str(b, text, text_len);
		} else if (tok) {
			PUT(b, "\"content\":");
			api_buf_json_str(b, text, text_len);
		}
		PUT(b, "},\"logprobs\":");
		if (m->logprobs >= 0 && tok)
			put_chat_logprobs(b, tok, 1);
		else
			PUT(b, "null");
	} else {
		PUT(b, "\"text\":");
		api_buf_json_str(b, text, text_len);
		PUT(b, ",\"logprobs\":");
		if (m->logprobs >= 0 && tok)
			put_cmpl_logprobs(b, tok, 1, NULL);
		else
			PUT(b, "null");
	}
	PUT(b, ",\"finish_reason\":");
	put_finish(b, finish);
	PUT(b, "}]}\n\n");
}

void api_write_stream_usage(struct api_buf *b, const struct api_resp_meta *m, const struct api_usage *usage)
{
	PUT(b, "data: ");
	put_head(b, m, m->kind == API_CHAT ? "chat.completion.chunk" : "text_completion");
	PUT(b, ",\"choices\":[],");
	put_usage(b, usage);
	PUT(b, "}\n\n");
}

void api_write_stream_done(struct api_buf *b)
{
	PUT(b, "data: [DONE]\n\n");
}

/* ---- errors ---- */

static const char *default_type(int status)
{
	switch (status) {
	case 401:
		return "authentication_error";
	case 403:
		return "permission_error";
	case 404:
		return "not_found_error";
	case 429:
		return "rate_limit_error";
	default:
		return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

struct api_error *api_error_set(struct api_error *e, int status, const char *type, const char *param, const char *fmt,
                                ...)
{
	e->status = status;
	e->type = type ? type : default_type(status);
	e->code = NULL;
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return e;
}

void api_write_error(struct api_buf *b, const struct api_error *e)
{
	PUT(b, "{\"error\":{\"message\":");
	api_buf_json_str(b, e->message, strnlen(e->message, sizeof(e->message)));
	PUT(b, ",\"type\":");
	put_str0(b, e->type ? e->type : default_type(e->status));
	PUT(b, ",\"param\":");
	size_t pn = strnlen(e->param, sizeof(e->param));
	if (pn)
		api_buf_json_str(b, e->param, pn);
	else
		PUT(b, "null");
	PUT(b, ",\"code\":");
	put_str0(b, e->code);
	PUT(b, "}}");
}

/* ---- other endpoints ---- */

void api_write_models(struct api_buf *b, const char *model_name, int64_t created, int64_t max_model_len)
{
	PUT(b, "{\"object\":\"list\",\"data\":[{\"id\":");
	put_str0(b, model_name ? model_name : "");
	PUT(b, ",\"object\":\"model\",\"created\":");
	put_i64(b, created);
	PUT(b, ",\"owned_by\":\"locus\",\"max_model_len\":");
	put_i64(b, max_model_len);
	PUT(b, "}]}");
}

void api_write_tokenize(struct api_buf *b, const int32_t *ids, int64_t n, int64_t max_model_len)
{
	PUT(b, "{\"count\":");
	put_i64(b, n);
	PUT(b, ",\"max_model_len\":");
	put_i64(b, max_model_len);
	PUT(b, ",\"tokens\":[");
	for (int64_t i = 0; i < n; i++) {
		if (i)
			PUT(b, ",");
		put_i64(b, ids[i]);
	}
	PUT(b, "]}");
}

void api_write_detokenize(struct api_buf *b, const char *text, size_t len)
{
	PUT(b, "{\"prompt\":");
	api_buf_json_str(b, text ? text : "", text ? len : 0);
	PUT(b, "}");
}
