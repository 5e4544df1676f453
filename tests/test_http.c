/*
 * test_http: unit tests of http_parse_request (net/net.h).
 *
 * Every input is copied to the end of a page followed by a PROT_NONE guard
 * page, so a read past the input crashes (picohttpparser's trick); chunked
 * scratch is guarded the same way. Covers valid requests, pipelining,
 * every split point (-EAGAIN until complete, with and without the resume
 * state), each limit and each request-smuggling case with its status.
 */
#define _GNU_SOURCE
#include "net/net.h"
#include "tests/check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- guarded buffers ---- */

struct guarded {
	char *map;
	size_t map_len;
	char *p; /* the data, ending at the guard page */
};

static void guard_free(struct guarded *g)
{
	if (g->map)
		munmap(g->map, g->map_len);
	memset(g, 0, sizeof(*g));
}

static char *guard_put(struct guarded *g, const void *data, size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t body = (n + pg - 1) / pg * pg;
	if (body == 0)
		body = pg;
	guard_free(g);
	g->map_len = body + pg;
	g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->map == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	mprotect(g->map + body, pg, PROT_NONE);
	g->p = g->map + body - n;
	if (n && data)
		memcpy(g->p, data, n);
	return g->p;
}

static struct guarded g_in, g_scratch;
static const struct http_limits g_lim = {8192, 100, 1 << 20};

/* One-shot parse of s[0..n) with a fresh state and a guarded scratch of n bytes. */
static long parse_n(const char *s, size_t n, const struct http_limits *lim, struct http_parse *p)
{
	char *b = guard_put(&g_in, s, n);
	char *scr = guard_put(&g_scratch, NULL, n);
	memset(p, 0xa5, sizeof(*p)); /* no field may be read before it is written */
	http_parse_init(p);
	return http_parse_request(b, n, lim ? lim : &g_lim, p, scr, n);
}

static long parse(const char *s, struct http_parse *p)
{
	return parse_n(s, strlen(s), NULL, p);
}

static bool str_is(struct net_str v, const char *lit)
{
	return v.n == strlen(lit) && memcmp(v.p, lit, v.n) == 0;
}

/* Expects an error with this status (and must_close). */
static void expect_status(const char *what, const char *s, int status)
{
	struct http_parse p;
	long rc = parse(s, &p);
	CHECK(rc < 0 && rc != -EAGAIN, "%s: rc %ld", what, rc);
	CHECK(p.status == status, "%s: status %d, want %d", what, p.status, status);
	CHECK(p.must_close, "%s: must_close", what);
}

static void expect_ok(const char *what, const char *s)
{
	struct http_parse p;
	long rc = parse(s, &p);
	CHECK(rc == (long)strlen(s), "%s: rc %ld status %d", what, rc, p.status);
}

/* ---- valid requests ---- */

static void test_simple(void)
{
	struct http_parse p;
	const char *s = "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:   t  \r\nAccept:\r\n\r\n";
	long rc = parse(s, &p);
	CHECK(rc == (long)strlen(s), "rc %ld", rc);
	CHECK(str_is(p.req.method, "GET"), "method");
	CHECK(str_is(p.req.target, "/a/b?x=1&y=2"), "target");
	CHECK(str_is(p.req.path, "/a/b"), "path");
	CHECK(p.req.minor_version == 1, "version");
	CHECK(p.req.n_headers == 3, "n_headers %d", p.req.n_headers);
	CHECK(str_is(p.req.headers[1].value, "t"), "trimmed value '%.*s'", (int)p.req.headers[1].value.n,
	      p.req.headers[1].value.p);
	CHECK(p.req.headers[2].value.n == 0, "empty value");
	CHECK(p.req.keep_alive, "1.1 keep-alive by default");
	CHECK(p.req.body.n == 0, "no body");
	const struct net_str *h = http_header_get(&p.req, "user-AGENT");
	CHECK(h && str_is(*h, "t"), "header_get case-insensitive");
	CHECK(!http_header_get(&p.req, "missing"), "header_get absent");

	const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "X-CUSTOM~1"};
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		char buf[128];
		snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: h\r\n\r\n", methods[i]);
		rc = parse(buf, &p);
		CHECK(rc == (long)strlen(buf) && str_is(p.req.method, methods[i]), "method %s", methods[i]);
	}
	expect_ok("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
	expect_status("GET *", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);

	rc = parse("GET http://example.com:8080/p/q?z HTTP/1.1\r\nHost: example.com\r\n\r\n", &p);
	CHECK(rc > 0 && str_is(p.req.path, "/p/q") && str_is(p.req.target, "http://example.com:8080/p/q?z"),
	      "absolute-form");
	rc = parse("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", &p);
	CHECK(rc > 0 && str_is(p.req.path, "/"), "absolute-form, empty path");
	expect_status("authority-form", "CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("empty authority", "GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400);

	/* HTTP/1.0: close unless keep-alive; Host optional */
	rc = parse("GET / HTTP/1.0\r\n\r\n", &p);
	CHECK(rc > 0 && p.req.minor_version == 0 && !p.req.keep_alive, "1.0 closes");
	rc = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &p);
	CHECK(rc > 0 && p.req.keep_alive, "1.0 keep-alive");
	rc = parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n", &p);
	CHECK(rc > 0 && !p.req.keep_alive, "1.1 close in a list");
	rc = parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n", &p);
	CHECK(rc > 0 && p.req.minor_version == 1, "1.2 answered as 1.1");
	rc = parse("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &p);
	CHECK(rc == 31 && str_is(p.req.method, "GET"), "leading empty lines: rc %ld", rc);
	/* obs-text is allowed in values */
	expect_ok("obs-text value", "GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n");
	expect_ok("tab in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\tb\r\n\r\n");
}

static void test_bodies(void)
{
	struct http_parse p;
	const char *s = "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET";
	long rc = parse(s, &p);
	CHECK(rc == (long)strlen(s) - 3 && str_is(p.req.body, "hello"), "content-length body: rc %ld", rc);
	CHECK(!p.req.chunked && p.body_buf == NULL, "not chunked");

	rc = parse("POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &p);
	CHECK(rc > 0 && p.req.body.n == 0, "empty body");
	rc = parse("POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", &p);
	CHECK(rc > 0 && str_is(p.req.body, "hello"), "identical duplicate Content-Length");

	s = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
	    "5;name=value\r\nhello\r\n6 ; a=\"b c\";x\r\n world\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\nX-2: "
	    "y\r\n\r\n";
	rc = parse(s, &p);
	CHECK(rc == (long)strlen(s), "chunked: rc %ld status %d", rc, p.status);
	CHECK(str_is(p.req.body, "hello world0123456789"), "decoded '%.*s'", (int)p.req.body.n, p.req.body.p);
	CHECK(p.req.chunked && p.body_buf == p.req.body.p, "chunked flag, body in scratch");

	s = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
	rc = parse(s, &p);
	CHECK(rc == (long)strlen(s) && p.req.body.n == 0, "empty chunked body");
	s = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: "
	    "chunked\r\n\r\n00000000000000000000003\r\nabc\r\n0\r\n\r\n";
	rc = parse(s, &p);
	CHECK(rc == (long)strlen(s) && str_is(p.req.body, "abc"), "leading zeros in chunk-size");
}

static void test_pipelined(void)
{
	const char *s = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
	                "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
	                "POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
	                "GET /4 HTTP/1.1\r\nHo";
	const char *paths[] = {"/1", "/2", "/3"};
	const char *bodies[] = {"", "abc", "xy"};
	size_t n = strlen(s), off = 0;
	char *b = guard_put(&g_in, s, n);
	char scratch[256];
	for (int i = 0; i < 3; i++) {
		struct http_parse p;
		http_parse_init(&p);
		long rc = http_parse_request(b + off, n - off, &g_lim, &p, scratch, sizeof(scratch));
		CHECK(rc > 0, "pipelined %d: rc %ld", i, rc);
		if (rc <= 0)
			return;
		CHECK(str_is(p.req.path, paths[i]) && str_is(p.req.body, bodies[i]), "pipelined %d", i);
		off += (size_t)rc;
	}
	struct http_parse p;
	http_parse_init(&p);
	CHECK(http_parse_request(b + off, n - off, &g_lim, &p, scratch, sizeof(scratch)) == -EAGAIN,
	      "partial 4th request");
}

/* Every prefix is incomplete, both parsed afresh and resumed with the same
 * state (each time at a different address, as a growing buffer moves). */
static void split_everywhere(const char *what, const char *s, const char *body)
{
	size_t n = strlen(s);
	struct http_parse inc;
	http_parse_init(&inc);
	char *scr = malloc(n + 1);
	for (size_t k = 0; k < n; k++) {
		struct http_parse p;
		long rc = parse_n(s, k, NULL, &p);
		CHECK(rc == -EAGAIN, "%s: fresh prefix %zu: rc %ld status %d", what, k, rc, p.status);
		char *b = guard_put(&g_in, s, k);
		rc = http_parse_request(b, k, &g_lim, &inc, scr, n);
		CHECK(rc == -EAGAIN, "%s: resumed prefix %zu: rc %ld status %d", what, k, rc, inc.status);
		CHECK(inc.need > k, "%s: need %zu at %zu", what, inc.need, k);
	}
	char *b = guard_put(&g_in, s, n);
	long rc = http_parse_request(b, n, &g_lim, &inc, scr, n);
	CHECK(rc == (long)n, "%s: resumed whole: rc %ld", what, rc);
	CHECK(rc < 0 || str_is(inc.req.body, body), "%s: resumed body", what);
	CHECK(rc < 0 || str_is(inc.req.method,
	                       s[0] == 0x0d ? "GET" : (s[0] == 0x50 ? (s[1] == 0x55 ? "PUT" : "POST") : "GET")),
	      "%s: method", what);
	struct http_parse p;
	rc = parse_n(s, n, NULL, &p);
	CHECK(rc == (long)n && str_is(p.req.body, body), "%s: whole", what);
	free(scr);
}

static void test_splits(void)
{
	split_everywhere("get", "GET /x?y HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n", "");
	split_everywhere("content-length", "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody", "body");
	split_everywhere("chunked",
	                 "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
	                 "3;e=1\r\nabc\r\n1\r\nd\r\n0\r\nT: v\r\n\r\n",
	                 "abcd");
	split_everywhere("leading crlf", "\r\nGET / HTTP/1.0\r\n\r\n", "");
}

/* ---- limits ---- */

static void test_limits(void)
{
	struct http_parse p;
	char *big = malloc(100000);

	/* header block over 8 KiB: 431, complete or not */
	int n = sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
	memset(big + n, 'a', 9000);
	strcpy(big + n + 9000, "\r\n\r\n");
	CHECK(parse(big, &p) < 0 && p.status == 431, "8 KiB head: %d", p.status);
	big[n + 8500] = 0;
	CHECK(parse(big, &p) == -EMSGSIZE && p.status == 431, "8 KiB partial head: %d", p.status);
	/* just under the limit is fine */
	n = sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
	memset(big + n, 'a', 8192 - n - 4);
	strcpy(big + 8192 - 4, "\r\n\r\n");
	CHECK(parse(big, &p) == 8192, "exactly 8 KiB: %d", p.status);

	/* request line alone over the limit: 414 */
	n = sprintf(big, "GET /");
	memset(big + n, 'a', 9000);
	big[n + 9000] = 0;
	CHECK(parse(big, &p) < 0 && p.status == 414, "long target: %d", p.status);

	/* 100 headers fine, 101: 431 */
	n = sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (int i = 1; i < 100; i++)
		n += sprintf(big + n, "X%d: v\r\n", i);
	strcpy(big + n, "\r\n");
	CHECK(parse(big, &p) > 0 && p.req.n_headers == 100, "100 headers");
	n += sprintf(big + n, "Y: v\r\n");
	strcpy(big + n, "\r\n");
	CHECK(parse(big, &p) < 0 && p.status == 431, "101 headers: %d", p.status);
	struct http_limits few = {8192, 3, 1 << 20};
	const char *s4 = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
	CHECK(parse_n(s4, strlen(s4), &few, &p) < 0 && p.status == 431, "max_headers 3");

	/* body limits */
	expect_status("content-length over 1 MiB", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n",
	              413);
	CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n", &p) == -EAGAIN &&
	          p.need == 1048576 + strlen("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n"),
	      "content-length at the limit waits for the body");
	struct http_limits small = {8192, 100, 10};
	const char *cb =
	    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nghijk\r\n";
	CHECK(parse_n(cb, strlen(cb), &small, &p) < 0 && p.status == 413, "chunked over the decoded limit: %d",
	      p.status);
	const char *cb2 = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n";
	CHECK(parse_n(cb2, strlen(cb2), &small, &p) < 0 && p.status == 413, "chunk-size over the limit: %d", p.status);
	expect_status("huge chunk-size",
	              "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffffff\r\n",
	              413);
	expect_status("chunk-size overflow to small",
	              "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n",
	              413);
	/* many tiny chunks: the raw framing is bounded too */
	struct http_limits tiny = {8192, 100, 100};
	n = sprintf(big, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 2000; i++)
		n += sprintf(big + n, "0000000000000000000000001\r\nx\r\n");
	long rc = parse_n(big, (size_t)n, &tiny, &p);
	CHECK(rc < 0 && rc != -EAGAIN && p.status == 413, "raw chunked framing bounded: rc %ld %d", rc, p.status);
	/* trailers count against the header limit */
	n = sprintf(big, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: ");
	memset(big + n, 'a', 9000);
	strcpy(big + n + 9000, "\r\n\r\n");
	CHECK(parse(big, &p) < 0 && p.status == 431, "huge trailer: %d", p.status);
	CHECK(http_request_max_bytes(&g_lim) >= 8192 + (1u << 20), "request max bytes");
	free(big);
}

/* ---- malformed input and smuggling ---- */

static void test_malformed(void)
{
	const char *H = "Host: h\r\n";
	char buf[512];
#define WITH(hdrs) (snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\n%s%s\r\nhello", H, hdrs), buf)
	expect_status("CL and TE", WITH("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400);
	expect_status("TE and CL", WITH("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400);
	expect_status("differing CL", WITH("Content-Length: 5\r\nContent-Length: 6\r\n"), 400);
	expect_status("CL list", WITH("Content-Length: 5, 5\r\n"), 400);
	expect_status("CL plus", WITH("Content-Length: +5\r\n"), 400);
	expect_status("CL minus", WITH("Content-Length: -5\r\n"), 400);
	expect_status("CL inner space", WITH("Content-Length: 1 0\r\n"), 400);
	expect_status("CL hex", WITH("Content-Length: 0x5\r\n"), 400);
	expect_status("CL empty", WITH("Content-Length:\r\n"), 400);
	expect_status("CL overflow", WITH("Content-Length: 99999999999999999999999\r\n"), 400);
	expect_status("CL 2^64", WITH("Content-Length: 18446744073709551616\r\n"), 400);
	expect_status("TE gzip", WITH("Transfer-Encoding: gzip\r\n"), 501);
	expect_status("TE gzip, chunked", WITH("Transfer-Encoding: gzip, chunked\r\n"), 501);
	expect_status("TE chunked, gzip", WITH("Transfer-Encoding: chunked, gzip\r\n"), 501);
	expect_status("TE identity", WITH("Transfer-Encoding: identity\r\n"), 501);
	expect_status("TE twice", WITH("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400);
	expect_status("TE empty", WITH("Transfer-Encoding:\r\n"), 400);
	expect_status("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
	expect_status("obs-fold", WITH("X: a\r\n b\r\n"), 400);
	expect_status("obs-fold tab", WITH("X: a\r\n\tb\r\n"), 400);
	expect_status("space before colon", WITH("Content-Length : 5\r\n"), 400);
	expect_status("tab before colon", WITH("X\t: 5\r\n"), 400);
	expect_status("space in name", WITH("X Y: 5\r\n"), 400);
	expect_status("empty name", WITH(": 5\r\n"), 400);
	expect_status("bare CR in value", WITH("X: a\rb\r\n"), 400);
	expect_status("bare LF line end", "GET / HTTP/1.1\nHost: h\n\n", 400);
	expect_status("bare LF header end", "GET / HTTP/1.1\r\nHost: h\n\r\n", 400);
	expect_status("bare LF blank line", "GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
	expect_status("CR CR LF", "GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400);
	expect_status("DEL in value", WITH("X: a\x7f\r\n"), 400);
	expect_status("ESC in value", WITH("X: a\x1b\r\n"), 400);
	expect_status("control in name", WITH("X\x01Y: a\r\n"), 400);
	{
		static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
		struct http_parse p;
		long rc = parse_n(nul, sizeof(nul) - 1, NULL, &p);
		CHECK(rc < 0 && rc != -EAGAIN && p.status == 400, "NUL in value: %d", p.status);
		static const char nul2[] = "GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n";
		rc = parse_n(nul2, sizeof(nul2) - 1, NULL, &p);
		CHECK(rc < 0 && rc != -EAGAIN && p.status == 400, "NUL in target: %d", p.status);
	}
	expect_status("missing Host", "GET / HTTP/1.1\r\n\r\n", 400);
	expect_status("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
	expect_status("HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
	expect_status("HTTP/0.9", "GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
	expect_status("lowercase version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("version garbage", "GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400);
	expect_status("no version", "GET /\r\nHost: h\r\n\r\n", 400);
	expect_status("two spaces", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("space in target", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("8-bit target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("bad method char", "GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("empty method", " / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("relative target", "GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
	expect_status("too many empty lines", "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
	              400);

	const char *TE = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
#define CH(body) (snprintf(buf, sizeof(buf), "%s%s", TE, body), buf)
	expect_status("invalid hex", CH("zz\r\nab\r\n0\r\n\r\n"), 400);
	expect_status("hex then junk", CH("5x\r\nhello\r\n0\r\n\r\n"), 400);
	expect_status("empty chunk-size", CH("\r\nhello\r\n0\r\n\r\n"), 400);
	expect_status("missing CRLF after data", CH("5\r\nhelloX\r\n0\r\n\r\n"), 400);
	expect_status("LF only after data", CH("5\r\nhello\n0\r\n\r\n"), 400);
	expect_status("chunk line bare LF", CH("5\nhello\r\n0\r\n\r\n"), 400);
	expect_status("control in extension", CH("5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400);
	expect_status("negative chunk", CH("-5\r\nhello\r\n0\r\n\r\n"), 400);
	expect_status("obs-fold in trailer", CH("0\r\nT: a\r\n b\r\n\r\n"), 400);
	expect_status("bad trailer", CH("0\r\nT : a\r\n\r\n"), 400);
	{
		char *big = malloc(8000);
		int n = sprintf(big, "%s5;", TE);
		memset(big + n, 'e', 5000);
		strcpy(big + n + 5000, "\r\nhello\r\n0\r\n\r\n");
		struct http_parse p;
		CHECK(parse(big, &p) < 0 && p.status == 400, "chunk extension over 4 KiB: %d", p.status);
		free(big);
	}

	/* Expect */
	struct http_parse p;
	long rc = parse("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n", &p);
	CHECK(rc == -EAGAIN && p.head_done && p.expect_continue, "expect 100-continue");
	rc = parse("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", &p);
	CHECK(rc > 0 && p.expect_continue, "expect with the body already there");
	rc = parse("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &p);
	CHECK(rc > 0 && !p.expect_continue, "expect ignored in 1.0");
	expect_status("expect other", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\n", 417);
#undef WITH
#undef CH
}

/* The error comes as early as it can: the bytes after a bad line are not waited for. */
static void test_early_errors(void)
{
	struct http_parse p;
	CHECK(parse("GET / HTTP/1.1\r\nX: a\n", &p) == -EINVAL, "bare LF, incomplete head");
	CHECK(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &p) == -EINVAL,
	      "differing CL before the body arrives");
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\n\r", &p) == -EAGAIN, "CR at the end waits");
}

int main(void)
{
	test_simple();
	test_bodies();
	test_pipelined();
	test_splits();
	test_limits();
	test_malformed();
	test_early_errors();
	guard_free(&g_in);
	guard_free(&g_scratch);
	return check_status("test_http");
}
