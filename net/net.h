/*
 * net.h: the HTTP/1.1 front end. One event loop per net thread (io_uring,
 * or epoll where io_uring cannot be set up), each with its own SO_REUSEPORT
 * listener; requests are parsed in place (views into the receive buffer)
 * and handed to the application's callback on the connection's thread.
 *
 * Request lifecycle, per connection (requests are answered in order; a
 * pipelined request waits until the previous response is complete):
 *   on_request(c, req)          the application takes the request
 *   net_respond(c, ...)         a whole response, or
 *   net_stream_begin / net_stream_write ... / net_stream_end
 *                               a chunked (Transfer-Encoding) response, e.g. SSE
 * The request's views stay valid until the response is complete. If the
 * peer goes away (or a write stalls past its limit) before that, on_abort
 * runs instead, exactly once, and the connection must not be used again.
 *
 * Threads: every net_* call on a connection must run on that connection's
 * net thread. Other threads (the engine's dispatchers) reach a net thread
 * with net_wake(): it makes on_wake run on that thread soon (wake-ups
 * coalesce); the application keeps its own queue of what to deliver and
 * finds connections again by id (net_conn_id / net_conn_find), which fails
 * for connections closed in the meantime.
 *
 * Errors the net layer answers itself, always closing the connection
 * afterwards: malformed request line or headers (400), request line longer
 * than max_header_bytes (414), header block over max_header_bytes or more
 * than max_headers (431), body over max_body_bytes (413), both
 * Content-Length and Transfer-Encoding, differing duplicate or invalid
 * Content-Length, obs-fold, bare CR or LF, NUL or other control bytes in
 * headers, whitespace before a colon, a missing or repeated Host in
 * HTTP/1.1 (400), unsupported Transfer-Encoding (501), an Expect other than
 * 100-continue (417), HTTP versions other than 1.x (505), header timeout
 * (408), idle keep-alive timeout (close without a response).
 * Absolute-form targets ("http://host/p?q") are accepted: target is the
 * form as sent, path is "/p".
 *
 * Disconnects: a reset or socket error while a request is in progress is
 * an abort. A FIN (EOF) is a half-close: the request in progress (and any
 * complete pipelined ones already received) are answered, then the
 * connection is closed; if the peer had in fact closed its socket, the next
 * write fails and that is an abort (a stream notices at its next write, a
 * held request only when it responds: TCP cannot tell a closed socket from
 * a half-closed one without writing).
 */
#ifndef LOCUS_NET_H
#define LOCUS_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct net_str {
	const char *p;
	size_t n;
};

struct http_header {
	struct net_str name;  /* as sent; compare case-insensitively */
	struct net_str value; /* leading/trailing whitespace trimmed */
};

struct http_request {
	struct net_str method;
	struct net_str target; /* request-target as sent (path + query) */
	struct net_str path;   /* target without the query */
	int minor_version;     /* HTTP/1.x */
	const struct http_header *headers;
	int n_headers;
	struct net_str body;   /* whole body; chunked bodies are decoded */
	bool keep_alive;
	bool chunked;          /* the body came with Transfer-Encoding: chunked */
};

/* Case-insensitive header lookup; NULL when absent. */
const struct net_str *http_header_get(const struct http_request *req, const char *name);

typedef struct net_server net_server_t;
typedef struct net_conn net_conn_t;

struct net_callbacks {
	/* A complete request on connection c (c's net thread). */
	void (*on_request)(net_conn_t *c, const struct http_request *req, void *user_data);
	/* The peer went away (reset, failed write, output over max_output_bytes,
	 * server stop past its drain deadline) before the response completed
	 * (net_respond / net_stream_end called): once per request, never after.
	 * Runs from the event loop, never from inside a net_* call. */
	void (*on_abort)(net_conn_t *c, void *req_ctx, void *user_data);
	/* net_wake() was called for this thread. */
	void (*on_wake)(net_server_t *s, int thread, void *user_data);
	/* Optional: runs at the end of every loop turn, after the turn's
	 * requests went to on_request and before the thread waits for more:
	 * for work batched over a turn (the engine wakes each dispatcher once
	 * for all the requests a turn handed it). */
	void (*on_turn_end)(net_server_t *s, int thread, void *user_data);
	/* Runs on each net thread once at start (for per-thread setup); optional. */
	void (*on_thread_start)(net_server_t *s, int thread, void *user_data);
	void *user_data;
};

struct net_config {
	const char *host;         /* default "127.0.0.1" */
	int port;                 /* 0: pick one (see net_server_port) */
	int n_threads;            /* net threads, >= 1 */
	const int *cpus;          /* pin net thread i to cpus[i % n_cpus]; NULL: no pinning */
	int n_cpus;
	size_t max_header_bytes;  /* default 8192 */
	int max_headers;          /* default 100 */
	size_t max_body_bytes;    /* default 1 MiB */
	int header_timeout_ms;    /* default 10000: whole request head must arrive within it */
	int idle_timeout_ms;      /* default 60000: keep-alive connection with no request */
	size_t max_output_bytes;  /* default 4 MiB queued to a slow reader before it is dropped */
	int max_conns;            /* per thread, default 4096; over it new connections are closed */
	bool force_epoll;         /* use the epoll backend even when io_uring works */
	bool half_close_ok;       /* false (default): a FIN from the client while its request is in
				   * progress means it went away: on_abort, as nginx treats it, so
				   * generation stops for non-streamed requests too. true: answer
				   * clients that half-close (shutdown(SHUT_WR)) after sending. */
};

void net_config_default(struct net_config *c);

/* Binds and starts the net threads. NULL with a message on failure. */
net_server_t *net_server_start(const struct net_config *cfg, const struct net_callbacks *cb, char *err,
			       size_t errlen);
/* Stops accepting, closes idle connections, and returns when the threads have
 * exited; connections with a response in progress get up to drain_ms, then
 * are closed (on_abort for those the application still holds). Frees s. */
void net_server_stop(net_server_t *s, int drain_ms);
int net_server_port(const net_server_t *s);
/* "io_uring" or "epoll", and what was probed (for the log), e.g.
 * "single_issuer defer_taskrun fixed_files send_zc ext_arg". */
const char *net_server_backend(const net_server_t *s);
const char *net_server_features(const net_server_t *s);

/* Thread-safe wake of net thread `thread` (coalescing: several calls before
 * the thread runs give one on_wake; a call made while on_wake runs gives
 * another). Any thread, any time while s is running: an atomic exchange
 * and at most one write(2) to the thread's eventfd. */
void net_wake(net_server_t *s, int thread);

/* ---- on the connection's thread ---- */
int net_conn_thread(const net_conn_t *c);
/* Unique within the server: seq << 32 | thread << 20 | slot, so a closed
 * connection's id comes back only after 2^32 more on its thread. */
uint64_t net_conn_id(const net_conn_t *c);
/* The live connection with this id on the calling net thread, or NULL. */
net_conn_t *net_conn_find(net_server_t *s, int thread, uint64_t id);
/* Application pointer for the request in progress, passed to on_abort. */
void net_conn_set_ctx(net_conn_t *c, void *req_ctx);
void *net_conn_ctx(const net_conn_t *c);

/* extra_headers: NULL or complete header lines, each ending in "\r\n". 0 or -errno:
 * -EINVAL when no request is in progress, a response was already begun or
 * status is outside 200..999,
 * -EPIPE when the connection failed (on_abort follows from the loop).
 * The body is copied; a HEAD request gets the headers only. A single
 * response may exceed max_output_bytes; output that piles up past it
 * behind a slow reader drops the connection. */
int net_respond(net_conn_t *c, int status, const char *content_type, const char *extra_headers, const void *body,
		size_t len);
int net_stream_begin(net_conn_t *c, int status, const char *content_type, const char *extra_headers);
/* One chunk per call (len 0 writes nothing); flushed at the end of the
 * current event-loop turn. HTTP/1.0 peers get the raw bytes and a close. */
int net_stream_write(net_conn_t *c, const void *data, size_t len);
int net_stream_end(net_conn_t *c);

/* Per-thread counters for /metrics. */
struct net_stats {
	uint64_t accepted, closed, requests, bad_requests, timeouts, bytes_in, bytes_out;
	int open_conns;
};
void net_stats_get(net_server_t *s, int thread, struct net_stats *out);

/* ---- the parser, exposed for tests and fuzzing ---- */
struct http_limits {
	size_t max_header_bytes;
	int max_headers;
	size_t max_body_bytes;
};
#define HTTP_MAX_HEADERS 128 /* max_headers is clamped to this */
struct http_parse {
	struct http_request req;
	struct http_header headers[HTTP_MAX_HEADERS];
	int status;       /* on error: the status to answer (400, 413, 414, 417, 431, 501, 505) */
	bool must_close;  /* on error: close after answering */
	char *body_buf;   /* decoded chunked body (scratch), else NULL */
	/* Out, also on -EAGAIN: the head is complete (req's head fields valid),
	 * and it asked for 100-continue (HTTP/1.1 with a body to come). */
	bool head_done;
	bool expect_continue;
	size_t head_bytes; /* with head_done: bytes of the head, blank line included */
	size_t need;       /* on -EAGAIN: calling again with fewer bytes than this is pointless */
	/* Resume state for growing input: zero it (http_parse_init) before the
	 * first call for a request; later calls must pass the same bytes (at
	 * any address) plus more, and the same scratch contents. */
	size_t st_scan;    /* where the search for the end of the head resumes */
	size_t st_raw;     /* chunked: offset of the next chunk-size line, 0: none yet */
	size_t st_dec;     /* chunked: decoded bytes already in scratch */
};
static inline void http_parse_init(struct http_parse *p)
{
	p->head_done = false;
	p->st_scan = p->st_raw = p->st_dec = 0;
}
/*
 * Parses one request from buf[0..len). Returns the bytes the request takes
 * (head + body) when complete, -EAGAIN when more bytes are needed, or
 * -EINVAL / -EMSGSIZE / -ENOTSUP with p->status set. A chunked body is
 * decoded into scratch (at least min(len, max_body_bytes) bytes, else
 * -ENOBUFS with status 500); p->req.body points into it. Chunk extensions
 * and trailers are validated and dropped.
 */
long http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_parse *p,
			char *scratch, size_t scratch_len);
/* The most bytes one request may take on the wire under lim (head, chunked
 * framing, trailers): an input buffer of this size never stalls the parser. */
size_t http_request_max_bytes(const struct http_limits *lim);

#endif
