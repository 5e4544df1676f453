/*
 * proto.h: what uring-bench parses from a server: HTTP/1.1 responses
 * (Content-Length, chunked, or close-delimited bodies), server-sent events
 * inside the body, and the OpenAI-shaped JSON of each event or whole body.
 *
 * All three are incremental: bytes arrive in arbitrary pieces (one byte at a
 * time is legal) and the result does not depend on where the pieces split.
 * Every input is untrusted: lengths are bounded, malformed input is an
 * error (-EPROTO or -EMSGSIZE), never a crash. Fuzzed by tests/fuzz/fuzz_sse.c.
 */
#ifndef LOCUS_BENCH_PROTO_H
#define LOCUS_BENCH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- HTTP/1.1 response ---- */
#define RESP_MAX_LINE    8192 /* status line or one header line */
#define RESP_MAX_HEADERS 200

typedef void (*resp_body_fn)(void *user_data, const char *p, size_t n);

struct resp_parser {
	int state;
	int status;   /* after the status line */
	bool chunked; /* Transfer-Encoding: chunked */
	bool has_length;
	bool close;    /* Connection: close, or HTTP/1.0 without keep-alive, or a llama.cpp stream (proto.c) */
	bool llamacpp; /* Server: llama.cpp (its streams end with a close it does not announce) */
	bool done;     /* the whole response has been read */
	int n_headers;
	uint64_t remaining; /* body or chunk bytes still to come */
	size_t line_len;
	char instance[64]; /* X-Locus-Instance / Server-Instance header value, if any */
	char line[RESP_MAX_LINE];
};

void resp_init(struct resp_parser *r);
/*
 * Feeds bytes; body bytes (dechunked) go to body_fn. Returns the bytes
 * consumed (the parser stops at the end of the response: r->done, and the
 * rest is the next response's or garbage), or -EPROTO on malformed input,
 * -EMSGSIZE on a line over RESP_MAX_LINE or too many headers. A 1xx
 * response is skipped.
 */
long resp_feed(struct resp_parser *r, const char *p, size_t n, resp_body_fn body_fn, void *user_data);
/* The peer closed: 0 when that completes the response (a close-delimited
 * body), -EPROTO when the response was cut short. */
int resp_eof(struct resp_parser *r);

/* ---- server-sent events ---- */
#define SSE_MAX_EVENT (1u << 20)

/* One complete event's data (the "data:" lines joined by '\n'). Return
 * nonzero to stop (sse_feed returns it). */
typedef int (*sse_event_fn)(void *user_data, const char *data, size_t n);

struct sse_parser {
	char *line; /* the current line (grows to SSE_MAX_EVENT) */
	size_t line_len, line_cap;
	char *data; /* the current event's data */
	size_t data_len, data_cap;
	bool has_data;
	bool skip_lf; /* the last line ended in CR: a following LF belongs to it */
};

void sse_init(struct sse_parser *s);
/* For the next stream: state cleared, buffers kept. */
void sse_reset(struct sse_parser *s);
void sse_free(struct sse_parser *s);
/* 0, the callback's nonzero return, -EMSGSIZE (event over SSE_MAX_EVENT) or -ENOMEM. */
int sse_feed(struct sse_parser *s, const char *p, size_t n, sse_event_fn fn, void *user_data);

/* ---- OpenAI JSON ---- */
struct oai_event {
	bool done;        /* "[DONE]" */
	bool error;       /* an "error" object, or not JSON */
	bool has_content; /* non-empty text / delta.content / delta.reasoning_content */
	int n_tokens;     /* tokens this chunk carries: logprobs length when given, else 1 with content */
	int64_t usage_completion_tokens; /* -1 when the chunk has no usage */
	int64_t usage_prompt_tokens;     /* -1 when absent */
	char finish_reason[24];          /* "" when absent or null */
};

/* Parses one SSE event's data, or (stream = false) a whole response body. */
void oai_parse(const char *data, size_t n, struct oai_event *out);

#endif
