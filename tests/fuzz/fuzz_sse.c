/*
 * fuzz_sse: libFuzzer target for uring-bench's response-side parsers
 * (bench/uring-bench/proto.h): the HTTP/1.1 response parser, the
 * server-sent-events parser fed with the (dechunked) body, and the OpenAI
 * JSON of each event.
 *
 * Input: byte 0 seeds the split pattern, the rest is what a server sends.
 * The stream is parsed twice, once in one piece and once in pseudo-random
 * pieces (each in a buffer of exactly its size, so an over-read is caught
 * by ASan); checked for every input:
 *   - no crash, no sanitizer report, no leak;
 *   - both deliveries give the same outcome: the same error or completion,
 *     status, body length, and the same sequence of events (compared by
 *     a running hash of their bytes and of what oai_parse made of them).
 */
#include "proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct outcome {
	long rc;
	int status;
	bool done;
	uint64_t body_len;
	uint64_t events, hash;
	struct sse_parser sse;
};

static void mix(uint64_t *h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		*h = (*h ^ b[i]) * 0x100000001b3ull;
}

static int on_event(void *ud, const char *d, size_t n)
{
	struct outcome *o = ud;
	struct oai_event ev;
	oai_parse(d, n, &ev);
	o->events++;
	mix(&o->hash, d, n);
	int32_t f[4] = {ev.done, ev.error, ev.has_content, ev.n_tokens};
	mix(&o->hash, f, sizeof(f));
	mix(&o->hash, &ev.usage_completion_tokens, sizeof(ev.usage_completion_tokens));
	return 0;
}

static void on_body(void *ud, const char *p, size_t n)
{
	struct outcome *o = ud;
	o->body_len += n;
	if (sse_feed(&o->sse, p, n, on_event, o))
		o->rc = o->rc ? o->rc : -1000;
}

static void run(const uint8_t *data, size_t len, unsigned seed, struct outcome *o)
{
	struct resp_parser *r = malloc(sizeof(*r));
	memset(o, 0, sizeof(*o));
	resp_init(r);
	sse_init(&o->sse);
	size_t off = 0;
	uint32_t x = seed * 2654435761u + 1;
	while (off < len && !r->done && o->rc == 0) {
		size_t k = len - off;
		if (seed) {
			x ^= x << 13;
			x ^= x >> 17;
			x ^= x << 5;
			size_t s = 1 + x % 17;
			if (s < k)
				k = s;
		}
		char *piece = malloc(k);
		memcpy(piece, data + off, k);
		long used = resp_feed(r, piece, k, on_body, o);
		free(piece);
		if (used < 0) {
			o->rc = used;
			break;
		}
		off += (size_t)used;
		if ((size_t)used < k && !r->done) {
			o->rc = -2000; /* the parser must take everything until done */
			break;
		}
	}
	if (o->rc == 0 && !r->done)
		o->rc = resp_eof(r) == 0 ? 1 : 2;
	o->status = r->status;
	o->done = r->done;
	sse_free(&o->sse);
	free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	unsigned seed = data[0] | 1u;
	struct outcome a, b;
	run(data + 1, size - 1, 0, &a);
	run(data + 1, size - 1, seed, &b);
	if (a.rc != b.rc || a.status != b.status || a.done != b.done || a.body_len != b.body_len ||
	    a.events != b.events || a.hash != b.hash)
		abort();
	return 0;
}
