/*
 * test_ubench: uring-bench's histogram and parsers (bench/uring-bench/).
 *
 *  - hist: bucket layout tiles the value range without gaps or overlap;
 *    percentiles of random samples (uniform, log-uniform, heavy-tailed)
 *    match the exact order statistics within HIST_REL_ERROR; merging
 *    per-thread recorders equals recording into one.
 *  - resp_feed: responses (Content-Length, chunked with extensions and
 *    trailers, close-delimited, 1xx before the real one) give the same
 *    status, flags and body at every split point, byte by byte included;
 *    malformed ones fail with an error, never a crash.
 *  - sse_feed: the same events whatever the chunk boundaries (LF, CRLF, CR
 *    line ends, CR at a boundary, comments, multi-line data).
 *  - oai_parse: completions/chat chunks, usage, logprobs token counts,
 *    errors and non-JSON.
 *  - llama-server's responses, byte for byte as it sent them (streamed
 *    completions and chat, a whole completion): events, tokens and usage at
 *    every split point; its streams count as Connection: close (it closes
 *    them without saying so), its whole responses and other servers' streams
 *    keep the connection.
 */
#include "hist.h"
#include "proto.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static uint64_t g_rng = 0x1234567;
static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void t_hist_layout(void)
{
	/* every index's range starts where the previous one ended */
	uint64_t next = 0;
	int bad = 0;
	for (unsigned i = 0; i < HIST_BUCKETS && !bad; i++) {
		if (hist_lower(i) != next)
			bad = 1;
		next = hist_lower(i) + hist_width(i);
	}
	CHECK(!bad, "buckets tile the range");
	for (int k = 0; k < 200000; k++) {
		uint64_t v = rnd() >> (rnd() % 64);
		if (v >= (1ull << HIST_MAX_BITS))
			continue;
		unsigned i = hist_index(v);
		if (!(hist_lower(i) <= v && v < hist_lower(i) + hist_width(i))) {
			CHECK(0, "value %llu outside its bucket %u", (unsigned long long)v, i);
			break;
		}
		if (v >= 1024 && (double)hist_width(i) / (double)hist_lower(i) > 2 * HIST_REL_ERROR + 1e-12) {
			CHECK(0, "bucket %u too wide", i);
			break;
		}
	}
}

static void t_hist_percentiles(int dist)
{
	enum { N = 20011 };
	uint64_t *v = malloc(N * sizeof(*v));
	struct hist *h = malloc(sizeof(*h)), *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	hist_init(h);
	hist_init(a);
	hist_init(b);
	double sum = 0;
	for (int i = 0; i < N; i++) {
		double u = ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
		double x = dist == 0   ? 1e6 + u * 9e6                /* uniform 1-10 ms in ns */
		           : dist == 1 ? exp(log(1e3) + u * log(1e6)) /* log-uniform 1 us - 1 s */
		                       : 2e6 / pow(u, 1.0 / 1.5);     /* Pareto, alpha 1.5 */
		v[i] = (uint64_t)x;
		sum += (double)v[i];
		hist_record(h, v[i]);
		hist_record(i % 3 ? a : b, v[i]);
	}
	hist_merge(a, b);
	qsort(v, N, sizeof(*v), cmp_u64);
	const double ps[] = {1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99};
	for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
		long rank = (long)ceil(ps[k] / 100.0 * N);
		double exact = (double)v[rank - 1];
		double got = hist_percentile(h, ps[k]);
		CHECK(fabs(got - exact) <= exact * HIST_REL_ERROR + 0.5, "dist %d p%g: %.1f vs exact %.1f", dist, ps[k],
		      got, exact);
		CHECK(hist_percentile(a, ps[k]) == got, "dist %d p%g: merged recorders differ", dist, ps[k]);
	}
	CHECK(hist_percentile(h, 0) == (double)v[0] && hist_percentile(h, 100) == (double)v[N - 1], "min/max exact");
	CHECK(fabs(hist_mean(h) - sum / N) < 1e-6 * sum / N, "mean exact");
	CHECK(h->n == N && a->n == N, "counts");
	free(v);
	free(h);
	free(a);
	free(b);
}

static void t_hist_edges(void)
{
	struct hist *h = malloc(sizeof(*h));
	hist_init(h);
	CHECK(hist_percentile(h, 50) == 0 && hist_mean(h) == 0, "empty");
	hist_record(h, 7);
	CHECK(hist_percentile(h, 50) == 7 && hist_percentile(h, 99.99) == 7, "one value");
	hist_record(h, UINT64_MAX); /* clamped into the last bucket, max stays exact */
	CHECK(h->max == UINT64_MAX && hist_percentile(h, 100) == (double)UINT64_MAX, "huge value");
	hist_init(h);
	hist_record_n(h, 1000000, 5);
	CHECK(h->n == 5 && hist_percentile(h, 50) == 1000000, "record_n");
	free(h);
}

/* ---- responses ---- */

struct body {
	char buf[4096];
	size_t n;
};

static void body_fn(void *ud, const char *p, size_t n)
{
	struct body *b = ud;
	if (b->n + n <= sizeof(b->buf)) {
		memcpy(b->buf + b->n, p, n);
		b->n += n;
	} else {
		b->n = sizeof(b->buf) + 1;
	}
}

/* Feeds msg in pieces of `step` bytes (0: all at once; a piece is copied to a
 * buffer of exactly its size). Returns 0 when complete, else the error. */
static int feed(const char *msg, size_t len, size_t step, bool eof, struct resp_parser *r, struct body *b, size_t *rest)
{
	resp_init(r);
	b->n = 0;
	size_t off = 0;
	*rest = 0;
	while (off < len) {
		size_t k = step ? (len - off < step ? len - off : step) : len - off;
		char *piece = malloc(k);
		memcpy(piece, msg + off, k);
		long used = resp_feed(r, piece, k, body_fn, b);
		free(piece);
		if (used < 0)
			return (int)used;
		if (r->done) {
			*rest = len - off - (size_t)used;
			return 0;
		}
		off += k;
	}
	if (eof)
		return resp_eof(r);
	return r->done ? 0 : -EAGAIN;
}

struct resp_case {
	const char *name, *msg;
	bool eof;
	int status;
	const char *body;
	bool close;
	size_t rest;
};

static void t_resp(void)
{
	const struct resp_case ok[] = {
	    {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello", false, 200, "hello",
	     false, 0},
	    {"chunked",
	     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n",
	     false, 200, "hello!", false, 0},
	    {"close-delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", true, 200, "until the end",
	     true, 0},
	    {"1.0 default close", "HTTP/1.0 404 Not Found\r\nContent-Length: 2\r\n\r\nno", false, 404, "no", true, 0},
	    {"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false, 200, "",
	     false, 0},
	    {"100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", false,
	     201, "x", false, 0},
	    {"204 no body", "HTTP/1.1 204 No Content\r\n\r\n", false, 204, "", false, 0},
	    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false, 200, "ok", false, 0},
	    {"429 with retry", "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy",
	     false, 429, "busy", false, 0},
	    {"bytes after", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nzEXTRA", false, 200, "z", false, 5},
	    {"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nq", false, 200, "q",
	     false, 0},
	};
	struct resp_parser *r = malloc(sizeof(*r));
	struct body *b = malloc(sizeof(*b));
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		const struct resp_case *c = &ok[i];
		size_t len = strlen(c->msg);
		for (size_t step = 0; step <= len; step++) {
			size_t rest;
			int rc = feed(c->msg, len, step, c->eof, r, b, &rest);
			bool good = rc == 0 && r->status == c->status && b->n == strlen(c->body) &&
			            !memcmp(b->buf, c->body, b->n) && r->close == c->close && rest == c->rest;
			if (!good) {
				CHECK(0, "%s, pieces of %zu: rc %d status %d body '%.*s' close %d rest %zu", c->name,
				      step, rc, r->status, (int)b->n, b->buf, r->close, rest);
				break;
			}
		}
	}
	const char *bad[] = {
	    "HTTP/2 200 OK\r\n\r\n",
	    "HTTP/1.1 20 OK\r\n\r\n",
	    "garbage\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	    "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
	    "HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t rest;
		int rc = feed(bad[i], strlen(bad[i]), 0, false, r, b, &rest);
		CHECK(rc == -EPROTO, "malformed %zu: rc %d", i, rc);
	}
	/* cut short: EOF inside a Content-Length body is an error */
	size_t rest;
	const char *cut = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
	CHECK(feed(cut, strlen(cut), 0, true, r, b, &rest) == -EPROTO, "EOF mid-body");
	/* a header line over the limit */
	size_t big = RESP_MAX_LINE + 100;
	char *longh = malloc(big + 64);
	int h = sprintf(longh, "HTTP/1.1 200 OK\r\nX: ");
	memset(longh + h, 'a', big);
	memcpy(longh + h + big, "\r\n\r\n", 4);
	CHECK(feed(longh, (size_t)h + big + 4, 1000, false, r, b, &rest) == -EMSGSIZE, "header line over the limit");
	free(longh);
	free(r);
	free(b);
}

/* ---- SSE ---- */

struct events {
	char all[4096];
	size_t n;
	int count;
};

static int ev_fn(void *ud, const char *d, size_t n)
{
	struct events *e = ud;
	if (e->n + n + 1 < sizeof(e->all)) {
		memcpy(e->all + e->n, d, n);
		e->n += n;
		e->all[e->n++] = '|';
	}
	e->count++;
	return 0;
}

static void t_sse(void)
{
	const char *in = ": comment\r\n"
	                 "data: {\"a\":1}\r\n\r\n"
	                 "data: crlf\r\ndata: joined\r\n\r\n"
	                 "event: x\ndata:two\ndata: lines\n\n"
	                 "id: 5\rdata: cr\r\r"
	                 "data: [DONE]\n\n"
	                 "data: unterminated";
	const char *want = "{\"a\":1}|crlf\njoined|two\nlines|cr|[DONE]|";
	size_t len = strlen(in);
	for (int trial = 0; trial < 3000; trial++) {
		struct sse_parser s;
		struct events e = {.n = 0, .count = 0};
		sse_init(&s);
		size_t off = 0;
		while (off < len) {
			size_t k = trial < 1 ? len : trial < (int)len + 1 ? (size_t)trial : 1 + rnd() % 9;
			if (k > len - off)
				k = len - off;
			char *piece = malloc(k);
			memcpy(piece, in + off, k);
			int rc = sse_feed(&s, piece, k, ev_fn, &e);
			free(piece);
			CHECK(rc == 0, "feed rc %d", rc);
			off += k;
		}
		sse_free(&s);
		if (e.n != strlen(want) || memcmp(e.all, want, e.n) || e.count != 5) {
			CHECK(0, "trial %d: events '%.*s' (%d)", trial, (int)e.n, e.all, e.count);
			break;
		}
	}
	/* an event over the limit is an error, not a crash */
	struct sse_parser s;
	struct events e = {.n = 0, .count = 0};
	sse_init(&s);
	char *chunk = malloc(65536);
	memset(chunk, 'x', 65536);
	int rc = sse_feed(&s, "data: ", 6, ev_fn, &e);
	for (int i = 0; i < 40 && rc == 0; i++)
		rc = sse_feed(&s, chunk, 65536, ev_fn, &e);
	CHECK(rc == -EMSGSIZE, "oversized event: %d", rc);
	sse_free(&s);
	free(chunk);
}

static void t_oai(void)
{
	struct oai_event ev;
	const char *c1 = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"text\":\"Hi\",\"finish_reason\":null}]}";
	oai_parse(c1, strlen(c1), &ev);
	CHECK(!ev.error && ev.has_content && ev.n_tokens == 1 && ev.usage_completion_tokens == -1 &&
	          !ev.finish_reason[0],
	      "completion chunk");
	const char *c2 = "{\"choices\":[{\"delta\":{\"content\":\" world\"},\"logprobs\":{\"content\":[{},{},{}]}}]}";
	oai_parse(c2, strlen(c2), &ev);
	CHECK(ev.has_content && ev.n_tokens == 3, "chat chunk with 3 logprobs: %d", ev.n_tokens);
	const char *c3 = "{\"choices\":[{\"text\":\"ab\",\"logprobs\":{\"tokens\":[\"a\",\"b\"]}}]}";
	oai_parse(c3, strlen(c3), &ev);
	CHECK(ev.n_tokens == 2, "completion logprobs tokens");
	const char *c4 =
	    "{\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":64,\"total_tokens\":71}}";
	oai_parse(c4, strlen(c4), &ev);
	CHECK(!ev.has_content && ev.n_tokens == 0 && ev.usage_completion_tokens == 64 && ev.usage_prompt_tokens == 7,
	      "usage chunk");
	const char *c5 = "{\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}";
	oai_parse(c5, strlen(c5), &ev);
	CHECK(!ev.has_content && ev.n_tokens == 0, "role-only delta carries no token");
	const char *c6 = "{\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}]}";
	oai_parse(c6, strlen(c6), &ev);
	CHECK(!ev.has_content && !strcmp(ev.finish_reason, "length"), "finish chunk");
	oai_parse(" [DONE] ", 8, &ev);
	CHECK(ev.done && !ev.error, "[DONE]");
	const char *e1 = "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}";
	oai_parse(e1, strlen(e1), &ev);
	CHECK(ev.error, "error object");
	oai_parse("not json", 8, &ev);
	CHECK(ev.error, "not JSON");
	oai_parse("", 0, &ev);
	CHECK(ev.error, "empty");
	const char *neg = "{\"usage\":{\"completion_tokens\":-5}}";
	oai_parse(neg, strlen(neg), &ev);
	CHECK(ev.usage_completion_tokens == -1, "negative usage ignored");
}

/* ---- llama.cpp's llama-server, bytes as sent ---- */

/*
 * Captured from llama-server (llama-cpp-python 0.3.36's vendored llama.cpp,
 * b1-0c1e570) with SmolLM2-135M-Instruct Q4_1, max_tokens 2, ignore_eos,
 * stream_options.include_usage: one SSE event per token (an HTTP chunk may
 * hold several events), usage on the last data event (completions: with the
 * finish_reason, always; chat: an extra event with empty choices), timings
 * beside it, then [DONE]. The stream's headers announce keep-alive, but the
 * server closes the connection after the last chunk.
 */
static const char llama_cmpl_stream[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: llama.cpp\r\n"
    "Access-Control-Allow-Origin: \r\n"
    "X-Accel-Buffering: no\r\n"
    "Content-Type: text/event-stream\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Keep-Alive: timeout=5, max=100\r\n"
    "\r\n"
    "106\r\n"
    "data: {\"choices\":[{\"text\":\"\\n\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],"
    "\"created\":1795750160,\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\","
    "\"system_fingerprint\":\"b1-0c1e570\",\"object\":\"text_completion\","
    "\"id\":\"chatcmpl-rsu59Hpj5mkWvBYTl95X4sQPgq1HI55x\"}\n"
    "\n"
    "\r\n"
    "105\r\n"
    "data: {\"choices\":[{\"text\":\"A\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],"
    "\"created\":1795750160,\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\","
    "\"system_fingerprint\":\"b1-0c1e570\",\"object\":\"text_completion\","
    "\"id\":\"chatcmpl-rsu59Hpj5mkWvBYTl95X4sQPgq1HI55x\"}\n"
    "\n"
    "\r\n"
    "26e\r\n"
    "data: {\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],"
    "\"created\":1795750160,\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\","
    "\"system_fingerprint\":\"b1-0c1e570\",\"object\":\"text_completion\","
    "\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":9,\"total_tokens\":11,"
    "\"prompt_tokens_details\":{\"cached_tokens\":0}},"
    "\"id\":\"chatcmpl-rsu59Hpj5mkWvBYTl95X4sQPgq1HI55x\",\"timings\":{\"cache_n\":0,\"prompt_n\":9,"
    "\"prompt_ms\":103.562,\"prompt_per_token_ms\":11.506888888888888,"
    "\"prompt_per_second\":86.904463026979,\"predicted_n\":2,\"predicted_ms\":19.839,"
    "\"predicted_per_token_ms\":19.839,\"predicted_per_second\":50.405766419678415}}\n"
    "\n"
    "\r\n"
    "e\r\n"
    "data: [DONE]\n"
    "\n"
    "\r\n"
    "0\r\n"
    "\r\n";

static const char llama_chat_stream[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: llama.cpp\r\n"
    "Access-Control-Allow-Origin: \r\n"
    "X-Accel-Buffering: no\r\n"
    "Content-Type: text/event-stream\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Keep-Alive: timeout=5, max=100\r\n"
    "\r\n"
    "226\r\n"
    "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":null}}],\"created\":1795750160,\"id\":\"chatcmpl-Ql66H6pup15uKTcKCMCvTO76w3urkqwz\","
    "\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-0c1e570\","
    "\"object\":\"chat.completion.chunk\"}\n"
    "\n"
    "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"The\"}}],"
    "\"created\":1795750160,\"id\":\"chatcmpl-Ql66H6pup15uKTcKCMCvTO76w3urkqwz\","
    "\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-0c1e570\","
    "\"object\":\"chat.completion.chunk\"}\n"
    "\n"
    "\r\n"
    "10b\r\n"
    "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\" sky\"}}],"
    "\"created\":1795750160,\"id\":\"chatcmpl-Ql66H6pup15uKTcKCMCvTO76w3urkqwz\","
    "\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-0c1e570\","
    "\"object\":\"chat.completion.chunk\"}\n"
    "\n"
    "\r\n"
    "32d\r\n"
    "data: {\"choices\":[{\"finish_reason\":\"length\",\"index\":0,\"delta\":{}}],\"created\":1795750160,"
    "\"id\":\"chatcmpl-Ql66H6pup15uKTcKCMCvTO76w3urkqwz\","
    "\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-0c1e570\","
    "\"object\":\"chat.completion.chunk\"}\n"
    "\n"
    "data: {\"choices\":[],\"created\":1795750160,\"id\":\"chatcmpl-Ql66H6pup15uKTcKCMCvTO76w3urkqwz\","
    "\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\",\"system_fingerprint\":\"b1-0c1e570\","
    "\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":39,"
    "\"total_tokens\":41,\"prompt_tokens_details\":{\"cached_tokens\":38}},\"timings\":{\"cache_n\":38,"
    "\"prompt_n\":1,\"prompt_ms\":20.045,\"prompt_per_token_ms\":20.045,"
    "\"prompt_per_second\":49.887752556747316,\"predicted_n\":2,\"predicted_ms\":20.003,"
    "\"predicted_per_token_ms\":20.003,\"predicted_per_second\":49.99250112483128}}\n"
    "\n"
    "\r\n"
    "e\r\n"
    "data: [DONE]\n"
    "\n"
    "\r\n"
    "0\r\n"
    "\r\n";

static const char llama_cmpl_whole[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: llama.cpp\r\n"
    "Access-Control-Allow-Origin: \r\n"
    "Content-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 607\r\n"
    "Keep-Alive: timeout=5, max=100\r\n"
    "\r\n"
    "{\"choices\":[{\"text\":\"\\nA\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],"
    "\"created\":1795750160,\"model\":\"models/SmolLM2-135M-Instruct.Q4_1.gguf\","
    "\"system_fingerprint\":\"b1-0c1e570\",\"object\":\"text_completion\","
    "\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":9,\"total_tokens\":11,"
    "\"prompt_tokens_details\":{\"cached_tokens\":8}},"
    "\"id\":\"chatcmpl-4G2tS6gmCOcyXFCsqwShiUBwdQ6tDgNC\",\"timings\":{\"cache_n\":8,\"prompt_n\":1,"
    "\"prompt_ms\":19.922,\"prompt_per_token_ms\":19.922,\"prompt_per_second\":50.195763477562494,"
    "\"predicted_n\":2,\"predicted_ms\":18.823,\"predicted_per_token_ms\":18.823,"
    "\"predicted_per_second\":53.126494182648884}}";

struct tally {
	int events, content, done, errors;
	int64_t usage, prompt;
	char finish[24];
};

static int tally_fn(void *ud, const char *d, size_t n)
{
	struct tally *t = ud;
	struct oai_event ev;
	oai_parse(d, n, &ev);
	t->events++;
	t->content += ev.has_content ? ev.n_tokens : 0;
	t->done += ev.done;
	t->errors += ev.error;
	if (ev.usage_completion_tokens >= 0)
		t->usage = ev.usage_completion_tokens;
	if (ev.usage_prompt_tokens >= 0)
		t->prompt = ev.usage_prompt_tokens;
	if (ev.finish_reason[0])
		memcpy(t->finish, ev.finish_reason, sizeof(t->finish));
	return 0;
}

static void t_llamacpp(void)
{
	const struct {
		const char *name, *msg;
		bool stream, close;
		int events, content;
		int64_t usage, prompt;
	} cases[] = {
	    {"completions stream", llama_cmpl_stream, true, true, 4, 2, 2, 9},
	    {"chat stream", llama_chat_stream, true, true, 6, 2, 2, 39},
	    {"completions whole", llama_cmpl_whole, false, false, 1, 1, 2, 9},
	};
	struct resp_parser *r = malloc(sizeof(*r));
	struct body *b = malloc(sizeof(*b));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].msg);
		for (size_t step = 0; step <= len; step += step < 16 ? 1 : 97) {
			size_t rest;
			int rc = feed(cases[i].msg, len, step, false, r, b, &rest);
			bool good = rc == 0 && r->status == 200 && rest == 0 && r->close == cases[i].close &&
			            r->chunked == cases[i].stream && b->n < sizeof(b->buf);
			struct tally t = {.usage = -1, .prompt = -1};
			if (good && cases[i].stream) {
				struct sse_parser s;
				sse_init(&s);
				for (size_t off = 0; off < b->n; off += step ? step : b->n)
					sse_feed(&s, b->buf + off, step && step < b->n - off ? step : b->n - off,
					         tally_fn, &t);
				sse_free(&s);
			} else if (good) {
				tally_fn(&t, b->buf, b->n);
			}
			good = good && t.events == cases[i].events && t.content == cases[i].content &&
			       t.usage == cases[i].usage && t.prompt == cases[i].prompt && !t.errors &&
			       t.done == (cases[i].stream ? 1 : 0) && !strcmp(t.finish, "length");
			if (!good) {
				CHECK(0,
				      "llama-server %s, pieces of %zu: rc %d status %d close %d, %d events, %d with "
				      "content, usage %lld/%lld, %d errors, finish '%s'",
				      cases[i].name, step, rc, r->status, r->close, t.events, t.content,
				      (long long)t.usage, (long long)t.prompt, t.errors, t.finish);
				break;
			}
		}
	}
	/* the close applies to llama.cpp's chunked responses only */
	const char *other = "HTTP/1.1 200 OK\r\nServer: Locus\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
	size_t rest;
	CHECK(feed(other, strlen(other), 0, false, r, b, &rest) == 0 && !r->close,
	      "another server's stream keeps alive");
	free(r);
	free(b);
}

int main(void)
{
	t_hist_layout();
	for (int d = 0; d < 3; d++)
		t_hist_percentiles(d);
	t_hist_edges();
	t_resp();
	t_sse();
	t_oai();
	t_llamacpp();
	return check_status("test_ubench");
}
