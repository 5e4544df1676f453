/*
 * proto.c: incremental HTTP/1.1 response, SSE and OpenAI JSON parsing for
 * uring-bench (see proto.h).
 *
 * The response parser copies only header lines (bounded by RESP_MAX_LINE);
 * body bytes are handed to the caller as views of the input.
 */
#include "proto.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
	RS_STATUS,     /* status line */
	RS_HEADER,     /* header lines until the blank one */
	RS_BODY,       /* Content-Length body: remaining bytes */
	RS_EOF_BODY,   /* body until the peer closes */
	RS_CHUNK_SIZE, /* chunk-size line */
	RS_CHUNK_DATA, /* remaining bytes of the chunk */
	RS_CHUNK_END,  /* the CRLF after chunk data */
	RS_TRAILER,    /* trailer lines until the blank one */
	RS_DONE,
};

void resp_init(struct resp_parser *r)
{
	r->state = RS_STATUS;
	r->status = 0;
	r->chunked = r->has_length = r->close = r->done = r->llamacpp = false;
	r->n_headers = 0;
	r->remaining = 0;
	r->line_len = 0;
	r->instance[0] = 0;
}

/* Trims the trailing CR of a line. */
static size_t line_trim(const char *l, size_t n)
{
	return n && l[n - 1] == '\r' ? n - 1 : n;
}

static bool token_eq(const char *p, size_t n, const char *lit)
{
	size_t k = strlen(lit);
	return n == k && !strncasecmp(p, lit, k);
}

/* Does the comma-separated header value contain this token? */
static bool value_has(const char *v, size_t n, const char *tok)
{
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (token_eq(v + s, e - s, tok))
			return true;
	}
	return false;
}

static int parse_u64(const char *p, size_t n, int base, uint64_t *out)
{
	if (!n || n > 16)
		return -EPROTO;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		int d;
		char ch = p[i];
		if (ch >= '0' && ch <= '9')
			d = ch - '0';
		else if (base == 16 && ch >= 'a' && ch <= 'f')
			d = ch - 'a' + 10;
		else if (base == 16 && ch >= 'A' && ch <= 'F')
			d = ch - 'A' + 10;
		else
			return -EPROTO;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	*out = v;
	return 0;
}

static int on_status_line(struct resp_parser *r, const char *l, size_t n)
{
	/* HTTP/1.x SP 3DIGIT [SP reason] */
	if (n < 12 || memcmp(l, "HTTP/1.", 7) || (l[7] != '0' && l[7] != '1') || l[8] != ' ')
		return -EPROTO;
	if (l[9] < '1' || l[9] > '9' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9')
		return -EPROTO;
	if (n > 12 && l[12] != ' ')
		return -EPROTO;
	r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	r->close = l[7] == '0'; /* HTTP/1.0: close unless keep-alive is announced */
	return 0;
}

static int on_header_line(struct resp_parser *r, const char *l, size_t n)
{
	if (++r->n_headers > RESP_MAX_HEADERS)
		return -EMSGSIZE;
	const char *colon = memchr(l, ':', n);
	if (!colon || colon == l)
		return -EPROTO;
	size_t kn = (size_t)(colon - l);
	const char *v = colon + 1;
	size_t vn = n - kn - 1;
	while (vn && (*v == ' ' || *v == '\t'))
		v++, vn--;
	while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	if (token_eq(l, kn, "content-length")) {
		uint64_t len;
		if (parse_u64(v, vn, 10, &len))
			return -EPROTO;
		if (r->has_length && len != r->remaining)
			return -EPROTO;
		r->has_length = true;
		r->remaining = len;
	} else if (token_eq(l, kn, "transfer-encoding")) {
		if (!value_has(v, vn, "chunked"))
			return -EPROTO; /* no other coding is expected from an HTTP API */
		r->chunked = true;
	} else if (token_eq(l, kn, "connection")) {
		if (value_has(v, vn, "close"))
			r->close = true;
		else if (value_has(v, vn, "keep-alive"))
			r->close = false;
	} else if (token_eq(l, kn, "server")) {
		r->llamacpp = vn >= 9 && !strncasecmp(v, "llama.cpp", 9);
	} else if (token_eq(l, kn, "x-locus-instance") || token_eq(l, kn, "x-instance")) {
		size_t k = vn < sizeof(r->instance) - 1 ? vn : sizeof(r->instance) - 1;
		memcpy(r->instance, v, k);
		r->instance[k] = 0;
	}
	return 0;
}

/* The blank line after the headers: how is the body delimited? */
static int on_head_end(struct resp_parser *r)
{
	if (r->status >= 100 && r->status < 200) {
		/* 1xx: an interim response; the real one follows */
		bool close = r->close;
		resp_init(r);
		r->close = close;
		return 0;
	}
	if (r->chunked && r->has_length)
		return -EPROTO;
	if (r->status == 204 || r->status == 304 || (r->has_length && r->remaining == 0 && !r->chunked))
		r->state = RS_DONE;
	else if (r->chunked)
		r->state = RS_CHUNK_SIZE;
	else if (r->has_length)
		r->state = RS_BODY;
	else {
		r->state = RS_EOF_BODY;
		r->close = true;
	}
	/*
	 * llama.cpp's llama-server sends chunked bodies only for streams, and
	 * closes the connection after each one although it announces keep-alive:
	 * its chunked content provider returns false after sink.done(), which
	 * cpp-httplib takes as a cancelled write (tools/server/server-http.cpp,
	 * llama-cpp-python 0.3.36). A request sent on that connection races the
	 * FIN and fails as "closed"; treat the response as Connection: close, so
	 * the next request opens a new connection.
	 */
	if (r->state == RS_CHUNK_SIZE && r->llamacpp)
		r->close = true;
	return 0;
}

static int on_line(struct resp_parser *r, const char *l, size_t n)
{
	n = line_trim(l, n);
	switch (r->state) {
	case RS_STATUS:
		if (on_status_line(r, l, n))
			return -EPROTO;
		r->state = RS_HEADER;
		return 0;
	case RS_HEADER:
		return n ? on_header_line(r, l, n) : on_head_end(r);
	case RS_CHUNK_SIZE: {
		size_t k = 0;
		while (k < n && l[k] != ';' && l[k] != ' ' && l[k] != '\t')
			k++;
		uint64_t sz;
		if (parse_u64(l, k, 16, &sz) || sz > (1ull << 40))
			return -EPROTO;
		r->remaining = sz;
		r->state = sz ? RS_CHUNK_DATA : RS_TRAILER;
		return 0;
	}
	case RS_CHUNK_END:
		if (n)
			return -EPROTO;
		r->state = RS_CHUNK_SIZE;
		return 0;
	case RS_TRAILER:
		if (!n)
			r->state = RS_DONE;
		else if (++r->n_headers > RESP_MAX_HEADERS)
			return -EMSGSIZE;
		return 0;
	default:
		return -EPROTO;
	}
}

long resp_feed(struct resp_parser *r, const char *p, size_t n, resp_body_fn body_fn, void *user_data)
{
	size_t i = 0;
	while (i < n && r->state != RS_DONE) {
		if (r->state == RS_BODY || r->state == RS_CHUNK_DATA || r->state == RS_EOF_BODY) {
			size_t k = n - i;
			if (r->state != RS_EOF_BODY && k > r->remaining)
				k = (size_t)r->remaining;
			if (body_fn && k)
				body_fn(user_data, p + i, k);
			i += k;
			if (r->state == RS_EOF_BODY)
				continue;
			r->remaining -= k;
			if (!r->remaining)
				r->state = r->state == RS_BODY ? RS_DONE : RS_CHUNK_END;
			continue;
		}
		/* a line: take it in place when whole, else copy what there is */
		const char *nl = memchr(p + i, '\n', n - i);
		size_t k = nl ? (size_t)(nl - (p + i)) : n - i;
		if (r->line_len + k > RESP_MAX_LINE)
			return -EMSGSIZE;
		if (!nl) {
			memcpy(r->line + r->line_len, p + i, k);
			r->line_len += k;
			i += k;
			break;
		}
		int rc;
		if (r->line_len) {
			memcpy(r->line + r->line_len, p + i, k);
			rc = on_line(r, r->line, r->line_len + k);
		} else {
			rc = on_line(r, p + i, k);
		}
		r->line_len = 0;
		if (rc)
			return rc;
		i += k + 1;
	}
	if (r->state == RS_DONE)
		r->done = true;
	return (long)i;
}

int resp_eof(struct resp_parser *r)
{
	if (r->state == RS_EOF_BODY) {
		r->state = RS_DONE;
		r->done = true;
		return 0;
	}
	return r->state == RS_DONE ? 0 : -EPROTO;
}

/* ---- SSE ---- */

void sse_init(struct sse_parser *s)
{
	memset(s, 0, sizeof(*s));
}

void sse_reset(struct sse_parser *s)
{
	s->line_len = s->data_len = 0;
	s->has_data = s->skip_lf = false;
}

void sse_free(struct sse_parser *s)
{
	free(s->line);
	free(s->data);
	memset(s, 0, sizeof(*s));
}

static int grow(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	if (need > SSE_MAX_EVENT)
		return -EMSGSIZE;
	size_t c = *cap ? *cap : 256;
	while (c < need)
		c *= 2;
	if (c > SSE_MAX_EVENT)
		c = SSE_MAX_EVENT;
	char *nb = realloc(*buf, c);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	*cap = c;
	return 0;
}

/* One line (without its end); per the EventSource spec: empty line
 * dispatches, ':' starts a comment, "data" appends, other fields ignored. */
static int sse_line(struct sse_parser *s, const char *l, size_t n, sse_event_fn fn, void *ud)
{
	if (!n) {
		if (!s->has_data)
			return 0;
		s->has_data = false;
		size_t len = s->data_len;
		s->data_len = 0;
		return fn(ud, s->data ? s->data : "", len);
	}
	if (l[0] == ':')
		return 0;
	const char *colon = memchr(l, ':', n);
	size_t fn_len = colon ? (size_t)(colon - l) : n;
	if (fn_len != 4 || memcmp(l, "data", 4))
		return 0;
	const char *v = colon ? colon + 1 : l + n;
	size_t vn = colon ? n - fn_len - 1 : 0;
	if (vn && *v == ' ')
		v++, vn--;
	size_t need = s->data_len + (s->has_data ? 1 : 0) + vn + 1;
	int rc = grow(&s->data, &s->data_cap, need);
	if (rc)
		return rc;
	if (s->has_data)
		s->data[s->data_len++] = '\n';
	memcpy(s->data + s->data_len, v, vn);
	s->data_len += vn;
	s->data[s->data_len] = 0;
	s->has_data = true;
	return 0;
}

int sse_feed(struct sse_parser *s, const char *p, size_t n, sse_event_fn fn, void *ud)
{
	size_t i = 0;
	if (s->skip_lf && n) {
		s->skip_lf = false;
		if (p[0] == '\n')
			i = 1;
	}
	while (i < n) {
		size_t j = i;
		while (j < n && p[j] != '\n' && p[j] != '\r')
			j++;
		if (j == n) {
			int rc = grow(&s->line, &s->line_cap, s->line_len + (n - i));
			if (rc)
				return rc;
			memcpy(s->line + s->line_len, p + i, n - i);
			s->line_len += n - i;
			return 0;
		}
		int rc;
		if (s->line_len) {
			rc = grow(&s->line, &s->line_cap, s->line_len + (j - i));
			if (rc)
				return rc;
			memcpy(s->line + s->line_len, p + i, j - i);
			rc = sse_line(s, s->line, s->line_len + (j - i), fn, ud);
			s->line_len = 0;
		} else {
			rc = sse_line(s, p + i, j - i, fn, ud);
		}
		if (rc)
			return rc;
		if (p[j] == '\r') {
			if (j + 1 < n) {
				if (p[j + 1] == '\n')
					j++;
			} else {
				s->skip_lf = true;
			}
		}
		i = j + 1;
	}
	return 0;
}

/* ---- OpenAI JSON ---- */

static int64_t int_item(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e15)
		return -1;
	return (int64_t)v->valuedouble;
}

static bool nonempty_string(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) && v->valuestring[0];
}

void oai_parse(const char *data, size_t n, struct oai_event *out)
{
	memset(out, 0, sizeof(*out));
	out->usage_completion_tokens = out->usage_prompt_tokens = -1;
	while (n && (data[n - 1] == ' ' || data[n - 1] == '\n' || data[n - 1] == '\r'))
		n--;
	while (n && (*data == ' ' || *data == '\n' || *data == '\r'))
		data++, n--;
	if (n == 6 && !memcmp(data, "[DONE]", 6)) {
		out->done = true;
		return;
	}
	cJSON *j = cJSON_ParseWithLength(data, n);
	if (!cJSON_IsObject(j)) {
		out->error = true;
		cJSON_Delete(j);
		return;
	}
	if (cJSON_GetObjectItemCaseSensitive(j, "error"))
		out->error = true;
	const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
	if (cJSON_IsObject(usage)) {
		out->usage_completion_tokens = int_item(usage, "completion_tokens");
		out->usage_prompt_tokens = int_item(usage, "prompt_tokens");
	}
	const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
	const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
	if (cJSON_IsObject(c0)) {
		const cJSON *delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
		out->has_content = nonempty_string(c0, "text") ||
		                   (cJSON_IsObject(delta) && (nonempty_string(delta, "content") ||
		                                              nonempty_string(delta, "reasoning_content"))) ||
		                   (cJSON_IsObject(msg) && nonempty_string(msg, "content"));
		/* completions: logprobs.tokens; chat: logprobs.content (one entry per token) */
		const cJSON *lp = cJSON_GetObjectItemCaseSensitive(c0, "logprobs");
		const cJSON *toks = NULL;
		if (cJSON_IsObject(lp)) {
			toks = cJSON_GetObjectItemCaseSensitive(lp, "tokens");
			if (!cJSON_IsArray(toks))
				toks = cJSON_GetObjectItemCaseSensitive(lp, "content");
		}
		int nt = cJSON_IsArray(toks) ? cJSON_GetArraySize(toks) : 0;
		out->n_tokens = nt > 0 ? nt : out->has_content ? 1 : 0;
		const cJSON *fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
		if (cJSON_IsString(fr)) {
			strncpy(out->finish_reason, fr->valuestring, sizeof(out->finish_reason) - 1);
		}
	}
	cJSON_Delete(j);
}
