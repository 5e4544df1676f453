/*
 * respond.c: the connection API the application calls (net_respond,
 * net_stream_*, ids and contexts) and the responses the net layer sends
 * itself. Responses are formatted straight into the connection's output
 * segments; nothing is sent here, the loop flushes at the end of its turn.
 *
 * Threading: the connection's net thread only (see net.h).
 */
#include "net/loop_impl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* clang-format off */
static const char *reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 206: return "Partial Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Status";
	}
}
/* clang-format on */

/* "Date: ...\r\n", formatted once a second per loop. */
static const char *date_line(struct net_loop *l)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	if (ts.tv_sec != l->date_sec) {
		struct tm tm;
		l->date_sec = ts.tv_sec;
		gmtime_r(&ts.tv_sec, &tm);
		strftime(l->date, sizeof(l->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
	}
	return l->date;
}

static char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

static char *put_u(char *p, size_t v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

enum { LEN_NONE, LEN_FIXED, LEN_CHUNKED };

/* Status line and headers into the output queue. 0 or -errno. */
static int write_head(struct net_conn *c, int status, const char *ctype, const char *extra, int len_mode, size_t clen,
                      bool keep_alive)
{
	const char *rs = reason(status);
	size_t ct_n = ctype ? strlen(ctype) : 0, ex_n = extra ? strlen(extra) : 0, rs_n = strlen(rs);
	size_t max = 64 + rs_n + 40 + (ctype ? 16 + ct_n : 0) + 48 + 32 + ex_n + 2;
	char *p0 = net_out_reserve(c, max);
	if (!p0)
		return -ENOMEM;
	char *p = p0;
	p = put(p, "HTTP/1.1 ", 9);
	p = put_u(p, (size_t)(status % 1000));
	*p++ = ' ';
	p = put(p, rs, rs_n);
	p = put(p, "\r\nServer: locus\r\n", 17);
	p = put(p, date_line(c->loop), 37);
	if (ctype) {
		p = put(p, "Content-Type: ", 14);
		p = put(p, ctype, ct_n);
		p = put(p, "\r\n", 2);
	}
	if (len_mode == LEN_FIXED) {
		p = put(p, "Content-Length: ", 16);
		p = put_u(p, clen);
		p = put(p, "\r\n", 2);
	} else if (len_mode == LEN_CHUNKED) {
		p = put(p, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (keep_alive)
		p = put(p, "Connection: keep-alive\r\n", 24);
	else
		p = put(p, "Connection: close\r\n", 19);
	if (extra)
		p = put(p, extra, ex_n);
	p = put(p, "\r\n", 2);
	net_out_commit(c, (size_t)(p - p0));
	return 0;
}

void net_resp_error(struct net_conn *c, int status)
{
	const char *rs = reason(status);
	char body[64];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, rs);
	net_conn_close_after(c); /* before writing: the head says "close" */
	if (write_head(c, status, "text/plain", NULL, LEN_FIXED, (size_t)n, false) == 0)
		net_out_append(c, body, (size_t)n);
}

static int check_conn(struct net_conn *c, bool begun)
{
	if (!c)
		return -EINVAL;
	if (c->dead)
		return -EPIPE;
	if (!c->app_busy || c->resp_begun != begun)
		return -EINVAL;
	return 0;
}

int net_respond(net_conn_t *c, int status, const char *content_type, const char *extra_headers, const void *body,
                size_t len)
{
	int rc = check_conn(c, false);
	if (rc)
		return rc;
	if (status < 200 || status > 999)
		return -EINVAL;
	c->resp_begun = true;
	bool no_body = status == 204 || status == 304;
	size_t before = c->out_bytes;
	rc = write_head(c, status, no_body ? NULL : content_type, extra_headers, no_body ? LEN_NONE : LEN_FIXED, len,
	                c->req_keep_alive);
	if (rc == 0 && len && !no_body && !c->req_head)
		rc = net_out_append(c, body, len);
	if (rc == 0)
		rc = net_out_check(c, before);
	if (rc)
		return c->dead ? -EPIPE : rc;
	net_conn_response_done(c);
	return 0;
}

int net_stream_begin(net_conn_t *c, int status, const char *content_type, const char *extra_headers)
{
	int rc = check_conn(c, false);
	if (rc)
		return rc;
	if (status < 200 || status > 999)
		return -EINVAL;
	c->resp_begun = c->streaming = true;
	/* HTTP/1.0 has no chunked coding: the body runs until we close. */
	c->stream_chunked = !c->req_v10;
	if (!c->stream_chunked)
		c->req_keep_alive = false;
	size_t before = c->out_bytes;
	rc = write_head(c, status, content_type, extra_headers, c->stream_chunked ? LEN_CHUNKED : LEN_NONE, 0,
	                c->req_keep_alive);
	if (rc == 0)
		rc = net_out_check(c, before);
	return rc && c->dead ? -EPIPE : rc;
}

int net_stream_write(net_conn_t *c, const void *data, size_t len)
{
	int rc = check_conn(c, true);
	if (rc)
		return rc;
	if (!c->streaming)
		return -EINVAL;
	if (len == 0 || c->req_head)
		return 0;
	size_t before = c->out_bytes;
	if (!c->stream_chunked) {
		rc = net_out_append(c, data, len);
		return rc ? rc : net_out_check(c, before);
	}
	char *p0 = net_out_reserve(c, len + 24);
	if (!p0)
		return -ENOMEM;
	char *p = p0;
	static const char hex[] = "0123456789abcdef";
	int sh = 60;
	while (sh > 0 && !((len >> sh) & 15))
		sh -= 4;
	for (; sh >= 0; sh -= 4)
		*p++ = hex[(len >> sh) & 15];
	p = put(p, "\r\n", 2);
	p = put(p, data, len);
	p = put(p, "\r\n", 2);
	net_out_commit(c, (size_t)(p - p0));
	return net_out_check(c, before);
}

int net_stream_end(net_conn_t *c)
{
	int rc = check_conn(c, true);
	if (rc)
		return rc;
	if (!c->streaming)
		return -EINVAL;
	if (c->stream_chunked && !c->req_head) {
		rc = net_out_append(c, "0\r\n\r\n", 5);
		if (rc)
			return c->dead ? -EPIPE : rc;
	}
	net_conn_response_done(c);
	return 0;
}

int net_conn_thread(const net_conn_t *c)
{
	return c->loop->idx;
}

uint64_t net_conn_id(const net_conn_t *c)
{
	return c->id;
}

net_conn_t *net_conn_find(net_server_t *s, int thread, uint64_t id)
{
	if (!s || thread < 0 || thread >= s->n_threads)
		return NULL;
	struct net_loop *l = &s->loops[thread];
	uint32_t slot = (uint32_t)(id & ((1u << NET_SLOT_BITS) - 1));
	if (slot >= (uint32_t)s->cfg.max_conns)
		return NULL;
	struct net_conn *c = l->slots[slot];
	return c && c->id == id && !c->dead ? c : NULL;
}

void net_conn_set_ctx(net_conn_t *c, void *req_ctx)
{
	c->ctx = req_ctx;
}

void *net_conn_ctx(const net_conn_t *c)
{
	return c->ctx;
}
