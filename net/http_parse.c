/*
 * http_parse.c: the HTTP/1.1 request parser (RFC 9112), zero-copy: every
 * view in struct http_request points into the caller's buffer, except a
 * chunked body, which is decoded into the caller's scratch.
 *
 * Strict by design, because a front end that is lenient where a proxy in
 * front of it is strict (or the reverse) is how requests get smuggled:
 * CRLF only (no bare LF or CR), no obs-fold, no whitespace before a colon,
 * no control bytes in names or values, Content-Length digits only and one
 * value, never both Content-Length and Transfer-Encoding, chunked as the
 * only transfer coding. Every error sets p->status and p->must_close.
 *
 * Incremental use: the caller re-parses the same (growing) bytes; the
 * st_* fields let a retry skip the search for the end of the head and the
 * chunks already decoded, so a request that trickles in costs a bounded
 * re-scan of its head per delivery, not a quadratic re-scan of its body.
 * Never reads buf[len] or beyond.
 */
#include "net/net.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#define HTTP_CHUNK_LINE_MAX   4096 /* chunk-size line with its extensions */
#define HTTP_MAX_LEADING_CRLF 8    /* empty lines tolerated before a request line (RFC 9112 2.2) */

/* tchar (RFC 9110 5.6.2): method and header-name bytes. */
/* clang-format off */
static const unsigned char tchar_tab[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
	0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* field-value bytes: VCHAR, obs-text, SP, HTAB (no CTLs, no DEL). */
static const unsigned char vchar_tab[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* request-target bytes: visible ASCII only (URIs are ASCII; no SP, CTL, DEL, 8-bit). */
static const unsigned char target_tab[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
/* clang-format on */

struct lims {
	size_t head, body;
	int n_headers;
};

static struct lims lims_of(const struct http_limits *lim)
{
	struct lims l = {8192, 1u << 20, 100};
	if (lim && lim->max_header_bytes)
		l.head = lim->max_header_bytes;
	if (lim && lim->max_body_bytes)
		l.body = lim->max_body_bytes;
	if (lim && lim->max_headers > 0)
		l.n_headers = lim->max_headers;
	if (l.n_headers > HTTP_MAX_HEADERS)
		l.n_headers = HTTP_MAX_HEADERS;
	return l;
}

/* Raw chunked framing may cost at most as much again as the decoded body
 * plus one chunk line; trailers count against the header limit. */
static size_t chunked_raw_max(const struct lims *l)
{
	return 2 * l->body + HTTP_CHUNK_LINE_MAX + l->head;
}

size_t http_request_max_bytes(const struct http_limits *lim)
{
	struct lims l = lims_of(lim);
	return l.head + chunked_raw_max(&l);
}

static long fail(struct http_parse *p, int status, long err)
{
	p->status = status;
	p->must_close = true;
	return err;
}

static bool str_ieq(struct net_str s, const char *lit, size_t n)
{
	return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

const struct net_str *http_header_get(const struct http_request *req, const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < req->n_headers; i++)
		if (str_ieq(req->headers[i].name, name, n))
			return &req->headers[i].value;
	return NULL;
}

/*
 * Finds where the head ends, resuming at p->st_scan. Returns 1 when the
 * blank line was seen (*end just past it), 1 as well with *bad set when a
 * malformed line ending (bare LF) was seen at *end - 1 (the full parse
 * reports it), 0 for "need more".
 */
static int head_scan(const char *buf, size_t len, struct http_parse *p, size_t *end, bool *bad)
{
	size_t i = p->st_scan;
	while (i < len) {
		const char *nl = memchr(buf + i, '\n', len - i);
		if (!nl) {
			/* A lone CR can only be completed by an LF: resume at it. */
			p->st_scan = len && buf[len - 1] == '\r' ? len - 1 : len;
			return 0;
		}
		size_t k = (size_t)(nl - buf);
		if (k == 0 || buf[k - 1] != '\r') {
			*end = k + 1;
			*bad = true;
			return 1;
		}
		if (k >= 3 && buf[k - 2] == '\n' && buf[k - 3] == '\r') {
			*end = k + 1;
			return 1;
		}
		i = k + 1;
	}
	p->st_scan = len;
	return 0;
}

/* Parses "name: value\r\n" lines at buf[*pos] until the blank line.
 * Returns 0, or a fail() value. Used for headers and trailers. */
static long parse_fields(const char *buf, size_t len, size_t *pos, struct http_parse *p, struct http_header *out,
                         int max_n, int *n_out)
{
	size_t i = *pos;
	int n = 0;
	for (;;) {
		if (i >= len)
			return -EAGAIN;
		if (buf[i] == '\r') {
			if (i + 1 >= len)
				return -EAGAIN;
			if (buf[i + 1] != '\n')
				return fail(p, 400, -EINVAL);
			*pos = i + 2;
			*n_out = n;
			return 0;
		}
		/* obs-fold (a line starting with SP/HTAB) is refused, as RFC 9112 5.2 allows. */
		size_t ns = i;
		while (i < len && tchar_tab[(unsigned char)buf[i]])
			i++;
		if (i >= len)
			return -EAGAIN;
		if (i == ns || buf[i] != ':')
			return fail(p, 400, -EINVAL);
		size_t ne = i++;
		while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
			i++;
		size_t vs = i;
		while (i < len && vchar_tab[(unsigned char)buf[i]])
			i++;
		if (i + 1 >= len)
			return -EAGAIN;
		if (buf[i] != '\r' || buf[i + 1] != '\n')
			return fail(p, 400, -EINVAL); /* bare CR/LF, NUL, other CTLs */
		size_t ve = i;
		while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'))
			ve--;
		i += 2;
		if (n >= max_n)
			return fail(p, 431, -EMSGSIZE);
		if (out) {
			out[n].name = (struct net_str){buf + ns, ne - ns};
			out[n].value = (struct net_str){buf + vs, ve - vs};
		}
		n++;
	}
}

/* Content-Length: 1*DIGIT, nothing else (no sign, no inner space, no list). */
static int parse_content_length(struct net_str v, size_t *out)
{
	if (v.n == 0 || v.n > 19)
		return -EINVAL;
	uint64_t x = 0;
	for (size_t i = 0; i < v.n; i++) {
		unsigned d = (unsigned char)v.p[i] - '0';
		if (d > 9)
			return -EINVAL;
		x = x * 10 + d; /* 19 digits cannot overflow 64 bits */
	}
	if (x > SIZE_MAX)
		return -EINVAL;
	*out = (size_t)x;
	return 0;
}

/* Walks a comma-separated token list; calls back with each trimmed element. */
static void connection_tokens(struct net_str v, bool *close, bool *keep_alive)
{
	size_t i = 0;
	while (i < v.n) {
		while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
			i++;
		size_t s = i;
		while (i < v.n && v.p[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
			e--;
		struct net_str t = {v.p + s, e - s};
		if (str_ieq(t, "close", 5))
			*close = true;
		else if (str_ieq(t, "keep-alive", 10))
			*keep_alive = true;
	}
}

/* The request line and headers, buf[0..end) holding the whole head. */
static long parse_head(const char *buf, size_t len, const struct lims *l, struct http_parse *p, size_t *head_end)
{
	struct http_request *r = &p->req;
	size_t i = 0;
	size_t ms = i;
	while (i < len && tchar_tab[(unsigned char)buf[i]])
		i++;
	if (i >= len)
		return -EAGAIN;
	if (i == ms || buf[i] != ' ')
		return fail(p, 400, -EINVAL);
	r->method = (struct net_str){buf + ms, i - ms};
	size_t ts = ++i;
	while (i < len && target_tab[(unsigned char)buf[i]])
		i++;
	if (i >= len)
		return -EAGAIN;
	if (i == ts || buf[i] != ' ')
		return fail(p, 400, -EINVAL);
	r->target = (struct net_str){buf + ts, i - ts};
	i++;
	if (len - i < 10)
		return -EAGAIN;
	if (memcmp(buf + i, "HTTP/", 5) != 0 || buf[i + 5] < '0' || buf[i + 5] > '9' || buf[i + 6] != '.' ||
	    buf[i + 7] < '0' || buf[i + 7] > '9' || buf[i + 8] != '\r' || buf[i + 9] != '\n')
		return fail(p, 400, -EINVAL);
	if (buf[i + 5] != '1')
		return fail(p, 505, -ENOTSUP);
	/* 1.x with x > 1 is answered as 1.1 (RFC 9110 2.5). */
	r->minor_version = buf[i + 7] == '0' ? 0 : 1;
	i += 10;

	/* path: origin-form, "*" (OPTIONS only) or absolute-form with http(s). */
	const char *t = r->target.p;
	size_t tn = r->target.n;
	if (t[0] == '/') {
		r->path = r->target;
	} else if (tn == 1 && t[0] == '*' && str_ieq(r->method, "OPTIONS", 7)) {
		r->path = r->target;
	} else {
		size_t sl;
		if (tn > 7 && strncasecmp(t, "http://", 7) == 0)
			sl = 7;
		else if (tn > 8 && strncasecmp(t, "https://", 8) == 0)
			sl = 8;
		else
			return fail(p, 400, -EINVAL);
		size_t k = sl;
		while (k < tn && t[k] != '/' && t[k] != '?')
			k++;
		if (k == sl)
			return fail(p, 400, -EINVAL); /* empty authority */
		if (k == tn || t[k] == '?')
			r->path = (struct net_str){"/", 1}; /* "http://h?q" has the empty path "/" */
		else
			r->path = (struct net_str){t + k, tn - k};
	}
	const char *q = memchr(r->path.p, '?', r->path.n);
	if (q)
		r->path.n = (size_t)(q - r->path.p);

	int n = 0;
	long rc = parse_fields(buf, len, &i, p, p->headers, l->n_headers, &n);
	if (rc)
		return rc;
	r->headers = p->headers;
	r->n_headers = n;
	*head_end = i;
	return 0;
}

/* Header semantics: framing, persistence, Host, Expect. Sets *cl / *chunked. */
static long head_semantics(struct http_parse *p, bool *has_cl, size_t *cl, bool *chunked)
{
	struct http_request *r = &p->req;
	bool close = false, ka = false, te = false;
	int n_host = 0;
	*has_cl = false;
	*chunked = false;
	p->expect_continue = false;
	for (int k = 0; k < r->n_headers; k++) {
		struct net_str nm = r->headers[k].name, v = r->headers[k].value;
		switch (nm.n) {
		case 14:
			if (str_ieq(nm, "content-length", 14)) {
				size_t x;
				if (parse_content_length(v, &x))
					return fail(p, 400, -EINVAL);
				if (*has_cl && x != *cl)
					return fail(p, 400, -EINVAL);
				*has_cl = true;
				*cl = x;
			}
			break;
		case 17:
			if (str_ieq(nm, "transfer-encoding", 17)) {
				if (te)
					return fail(p, 400, -EINVAL); /* "chunked" twice or split codings */
				te = true;
				if (v.n == 0)
					return fail(p, 400, -EINVAL);
				if (!str_ieq(v, "chunked", 7))
					return fail(p, 501, -ENOTSUP);
				*chunked = true;
			}
			break;
		case 10:
			if (str_ieq(nm, "connection", 10))
				connection_tokens(v, &close, &ka);
			break;
		case 6:
			if (str_ieq(nm, "expect", 6) && r->minor_version == 1) {
				if (!str_ieq(v, "100-continue", 12))
					return fail(p, 417, -EINVAL);
				p->expect_continue = true;
			}
			break;
		case 4:
			if (str_ieq(nm, "host", 4))
				n_host++;
			break;
		default:
			break;
		}
	}
	if (te && *has_cl)
		return fail(p, 400, -EINVAL);
	/* A 1.0 recipient of Transfer-Encoding must treat the framing as faulty (RFC 9112 6.1). */
	if (te && r->minor_version == 0)
		return fail(p, 400, -EINVAL);
	if (r->minor_version == 1 && n_host != 1)
		return fail(p, 400, -EINVAL);
	if (n_host > 1)
		return fail(p, 400, -EINVAL);
	r->keep_alive = r->minor_version == 1 ? !close : (ka && !close);
	r->chunked = *chunked;
	return 0;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes chunks from p->st_raw on; returns the request's total length. */
static long parse_chunked(const char *buf, size_t len, size_t head_end, const struct lims *l, struct http_parse *p,
                          char *scratch, size_t scratch_len)
{
	size_t raw_max = head_end + chunked_raw_max(l);
	size_t i = p->st_raw ? p->st_raw : head_end;
	size_t dec = p->st_dec, ls;
	p->body_buf = scratch;
	for (;;) {
		/* chunk-size [ chunk-ext ] CRLF */
		size_t sz = 0;
		ls = i;
		while (i < len) {
			int h = hexval((unsigned char)buf[i]);
			if (h < 0)
				break;
			sz = sz * 16 + (size_t)h;
			if (sz > l->body)
				return fail(p, 413, -EMSGSIZE); /* also catches chunk-size overflow */
			i++;
		}
		if (i >= len)
			goto need_line;
		if (i == ls)
			return fail(p, 400, -EINVAL);
		while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
			i++;
		if (i < len && buf[i] == ';') {
			while (i < len && vchar_tab[(unsigned char)buf[i]])
				i++;
		}
		if (i + 1 >= len)
			goto need_line;
		if (buf[i] != '\r' || buf[i + 1] != '\n')
			return fail(p, 400, -EINVAL);
		if (i - ls > HTTP_CHUNK_LINE_MAX)
			return fail(p, 400, -EINVAL);
		i += 2;
		if (sz == 0) {
			/* last-chunk: trailer fields, then the blank line, within
			 * max_header_bytes (only that much is looked at, so that the
			 * outcome does not depend on how the bytes were split) */
			size_t ts = i, tlen = len;
			bool trunc = false;
			if (len - ts > l->head) {
				tlen = ts + l->head;
				trunc = true;
			}
			int n = 0;
			long rc = parse_fields(buf, tlen, &i, p, NULL, l->n_headers, &n);
			if (rc == -EAGAIN) {
				if (trunc)
					return fail(p, 431, -EMSGSIZE);
				p->st_raw = ls;
				p->st_dec = dec;
				p->need = len + 1;
				return -EAGAIN;
			}
			if (rc)
				return rc;
			p->req.body = (struct net_str){scratch, dec};
			return (long)i;
		}
		if (dec + sz > l->body)
			return fail(p, 413, -EMSGSIZE);
		if (i + sz > raw_max)
			return fail(p, 413, -EMSGSIZE);
		if (len - i < sz + 2) {
			p->st_raw = ls;
			p->st_dec = dec;
			p->need = i + sz + 2;
			return -EAGAIN;
		}
		if (buf[i + sz] != '\r' || buf[i + sz + 1] != '\n')
			return fail(p, 400, -EINVAL);
		if (dec + sz > scratch_len)
			return fail(p, 500, -ENOBUFS);
		memcpy(scratch + dec, buf + i, sz);
		dec += sz;
		i += sz + 2;
		if (i > raw_max)
			return fail(p, 413, -EMSGSIZE);
	}
need_line:
	if (len - ls > HTTP_CHUNK_LINE_MAX)
		return fail(p, 400, -EINVAL);
	p->st_raw = ls;
	p->st_dec = dec;
	p->need = len + 1;
	return -EAGAIN;
}

long http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_parse *p, char *scratch,
                        size_t scratch_len)
{
	struct lims l = lims_of(lim);
	p->status = 0;
	p->must_close = false;
	p->body_buf = NULL;
	p->need = len + 1;

	/* Empty lines before a request line are skipped (RFC 9112 2.2), a few. */
	size_t start = 0;
	for (int k = 0; start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n'; k++) {
		if (k == HTTP_MAX_LEADING_CRLF)
			return fail(p, 400, -EINVAL);
		start += 2;
	}
	if (start == len || (start + 1 == len && buf[start] == '\r'))
		return -EAGAIN;

	size_t end = 0;
	bool bad = false;
	if (!p->head_done) {
		if (p->st_scan < start)
			p->st_scan = start;
		int found = head_scan(buf, len, p, &end, &bad);
		/* Over the limit before the head (or its first bad line ending) is
		 * seen: 414 when even the request line does not fit, else 431. The
		 * same answer whichever way the bytes were split. */
		if (found ? end > l.head : len > l.head) {
			bool line_done = memchr(buf, '\n', l.head) != NULL;
			return fail(p, line_done ? 431 : 414, -EMSGSIZE);
		}
		if (!found)
			return -EAGAIN;
	} else {
		end = p->head_bytes;
	}

	/* The head is parsed only within its own bytes (or, when the scan saw a
	 * malformed line ending, up to it), so a bad head never reads the body. */
	size_t head_end = 0;
	long rc = parse_head(buf + start, end - start, &l, p, &head_end);
	head_end += start;
	if (rc == -EAGAIN) {
		/* Only reachable for a malformed ending found by the scan: the line
		 * that is cut short here is the bad one. */
		return fail(p, 400, -EINVAL);
	}
	if (rc)
		return rc;
	if (head_end > l.head)
		return fail(p, 431, -EMSGSIZE);

	bool has_cl, chunked;
	size_t cl = 0;
	rc = head_semantics(p, &has_cl, &cl, &chunked);
	if (rc)
		return rc;
	p->head_done = true;
	p->head_bytes = head_end;
	p->req.body = (struct net_str){buf + head_end, 0};

	if (chunked) {
		if (scratch_len < l.body && scratch_len < len - head_end)
			return fail(p, 500, -ENOBUFS);
		return parse_chunked(buf, len, head_end, &l, p, scratch, scratch_len);
	}
	if (has_cl) {
		if (cl > l.body)
			return fail(p, 413, -EMSGSIZE);
		if (len - head_end < cl) {
			p->need = head_end + cl;
			return -EAGAIN;
		}
		p->req.body.n = cl;
		return (long)(head_end + cl);
	}
	p->expect_continue = false; /* nothing to continue with */
	return (long)head_end;
}
