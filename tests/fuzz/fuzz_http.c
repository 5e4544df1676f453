/*
 * fuzz_http: libFuzzer target for http_parse_request (net/net.h).
 *
 * Built by tools/scripts/fuzz.sh (ENABLE_FUZZING=ON, CC=clang); seeds in
 * tests/fuzz/corpus/http/.
 *
 * Input: byte 0 picks the limits (small ones reach the 413/431 paths with
 * short inputs), byte 1 seeds the split pattern, the rest is a byte stream
 * of pipelined requests. Each request is parsed the way a connection does:
 * the stream is delivered in pseudo-random pieces, each delivery re-parses
 * the bytes so far with the resume state (and the bytes copied to a new
 * place, as a growing input buffer moves). Checked for every input:
 *   - no crash, no sanitizer report, nothing read past the input (each
 *     delivery sits in a buffer of exactly its size);
 *   - a split delivery gives the same outcome as the one-shot parse: the
 *     same length, status, method, target and body;
 *   - -EAGAIN never comes with a status; an error always has one and
 *     must_close; every view lies inside the input (or the scratch).
 */
#include "net/net.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const struct http_limits g_lims[4] = {
    {8192, 100, 1 << 20},
    {256, 8, 64},
    {64, 4, 16},
    {1024, 128, 4096},
};

static bool inside(const char *p, size_t n, const char *base, size_t len)
{
	return n == 0 || (p >= base && p + n <= base + len);
}

static void check_views(const struct http_parse *p, const char *buf, size_t len, const char *scr, size_t scr_len)
{
	const struct http_request *r = &p->req;
	if (!inside(r->method.p, r->method.n, buf, len) || !inside(r->target.p, r->target.n, buf, len))
		abort();
	if (r->path.n && !inside(r->path.p, r->path.n, buf, len) && !(r->path.n == 1 && r->path.p[0] == '/'))
		abort();
	for (int i = 0; i < r->n_headers; i++)
		if (!inside(r->headers[i].name.p, r->headers[i].name.n, buf, len) ||
		    !inside(r->headers[i].value.p, r->headers[i].value.n, buf, len))
			abort();
	if (!inside(r->body.p, r->body.n, buf, len) && !inside(r->body.p, r->body.n, scr, scr_len))
		abort();
}

struct outcome {
	long rc;
	int status;
	size_t method_n, target_n, body_n;
	uint32_t body_sum;
};

static uint32_t sum(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 16777619u;
	return h;
}

static bool same(const struct outcome *a, const struct outcome *b)
{
	return a->rc == b->rc && a->status == b->status && a->method_n == b->method_n && a->target_n == b->target_n &&
	       a->body_n == b->body_n && a->body_sum == b->body_sum;
}

static struct outcome outcome_of(long rc, const struct http_parse *p)
{
	struct outcome o;
	memset(&o, 0, sizeof(o));
	o.rc = rc;
	o.status = p->status;
	if (rc > 0) {
		o.method_n = p->req.method.n;
		o.target_n = p->req.target.n;
		o.body_n = p->req.body.n;
		o.body_sum = sum(p->req.body.p, p->req.body.n);
	}
	return o;
}

/* One-shot parse of data[0..n) in an exact-size copy. */
static struct outcome parse_once(const uint8_t *data, size_t n, const struct http_limits *lim)
{
	char *buf = malloc(n ? n : 1), *scr = malloc(n ? n : 1);
	memcpy(buf, data, n);
	struct http_parse p;
	http_parse_init(&p);
	long rc = http_parse_request(buf, n, lim, &p, scr, n);
	if (rc == -EAGAIN && p.status)
		abort();
	if (rc < 0 && rc != -EAGAIN && (!p.status || !p.must_close))
		abort();
	if (rc > (long)n)
		abort();
	if (rc > 0)
		check_views(&p, buf, n, scr, n);
	struct outcome o = outcome_of(rc, &p);
	free(buf);
	free(scr);
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	const struct http_limits *lim = &g_lims[data[0] & 3];
	uint32_t rng = data[1] * 2654435761u + 1;
	data += 2;
	size -= 2;

	size_t off = 0;
	for (int req = 0; req < 8 && off < size; req++) {
		const uint8_t *in = data + off;
		size_t n = size - off;
		struct outcome whole = parse_once(in, n, lim);

		/* the same bytes in growing pieces, with the resume state */
		struct http_parse p;
		http_parse_init(&p);
		char *scr = malloc(n ? n : 1);
		size_t have = 0;
		long rc = -EAGAIN;
		while (rc == -EAGAIN && have < n) {
			rng = rng * 1103515245u + 12345u;
			size_t step = 1 + (rng >> 16) % (rng & 0x100 ? 7 : 97);
			have = have + step > n ? n : have + step;
			char *buf = malloc(have);
			memcpy(buf, in, have);
			rc = http_parse_request(buf, have, lim, &p, scr, n);
			if (rc == -EAGAIN && (p.status || p.need <= have))
				abort();
			if (rc > 0)
				check_views(&p, buf, have, scr, n);
			struct outcome o = outcome_of(rc, &p);
			free(buf);
			if (rc != -EAGAIN) {
				/* Complete or failed on a prefix: the whole input must agree,
				 * except that an error may only show up once more bytes came. */
				if (rc > 0 && !same(&o, &whole))
					abort();
				if (rc < 0 && (whole.rc != rc || whole.status != o.status))
					abort();
			}
		}
		free(scr);
		if (rc == -EAGAIN && whole.rc != -EAGAIN)
			abort();
		if (rc <= 0)
			break;
		off += (size_t)rc;
	}
	return 0;
}
