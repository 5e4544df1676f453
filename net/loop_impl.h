/*
 * loop_impl.h: what the net module's files share and nothing else sees:
 * the server, the per-thread loop, the connection, and the backend ops
 * table that io_uring (loop_uring.c) and epoll (loop_epoll.c) fill in,
 * as Redis's ae_epoll.c / ae_kqueue.c do behind ae.h.
 *
 * Division of labour: a backend owns the file descriptors and the kernel
 * calls; conn.c owns the HTTP state of each connection (input buffer,
 * parser, output queue, timers) and is told what happened through the
 * conn_* "events" below. Everything here runs on the loop's own thread,
 * except the fields marked atomic.
 *
 * Connection lifetime: conn_fail()/conn_close_now() mark a connection dead
 * (net_conn_find stops finding it) and ask the backend to close it; the
 * backend calls conn_release() once no kernel operation refers to it any
 * more, and the loop frees it at the end of that turn, after any pending
 * on_abort has run.
 */
#ifndef LOCUS_NET_LOOP_IMPL_H
#define LOCUS_NET_LOOP_IMPL_H

#include "net/net.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/uio.h>

#define NET_SLOT_BITS   20 /* conn id: seq << 32 | thread << 20 | slot */
#define NET_MAX_THREADS 4096
#define NET_SEG_BYTES   16384 /* default output segment: small writes coalesce into one send */
#define NET_LINGER_MS   1000  /* after a closing response: read and drop input this long, for the peer to see it */
#define NET_READ_MIN    4096  /* grow the input buffer when less room than this is left */

struct net_loop;
struct net_conn;

struct net_backend_ops {
	const char *name;
	/* Per thread, on the thread: l->listen_fd and l->wake_fd exist. 0 or -errno with err set. */
	int (*init)(struct net_loop *l, char *err, size_t errlen);
	void (*fini)(struct net_loop *l);
	/* Waits up to timeout_ms (-1: no limit) and dispatches what happened. */
	int (*poll)(struct net_loop *l, int timeout_ms);
	void (*stop_accept)(struct net_loop *l);
	/* Output was queued: make sure a send is under way (called at the end of a turn). */
	void (*conn_flush)(struct net_conn *c);
	/* Input buffer full while a request is in progress: stop / restart reading. */
	void (*conn_read_pause)(struct net_conn *c, bool pause);
	void (*conn_shutdown_wr)(struct net_conn *c);
	/* Close the descriptor; conn_release(c) when the backend is done with c. */
	void (*conn_close)(struct net_conn *c);
};

extern const struct net_backend_ops net_epoll_ops;
extern const struct net_backend_ops net_uring_ops;

/* What the io_uring probe found; features text for net_server_features. */
struct net_uring_caps {
	unsigned setup_flags; /* accepted IORING_SETUP_* */
	bool fixed_files;
	bool send_zc;
	char text[160];
};
/* 0 when the io_uring backend can run here, else -errno with why set. */
int net_uring_probe(const struct net_config *cfg, struct net_uring_caps *caps, char *why, size_t whylen);

/* One output segment; small writes share one, a large body has its own. */
struct net_oseg {
	struct net_oseg *next;
	struct net_conn *owner; /* NULL once detached from its connection */
	size_t len, off, cap;   /* data[off..len) not yet sent */
	int zc_pending;         /* zero-copy notifications still to come (io_uring) */
	char data[];
};
void net_oseg_done(struct net_oseg *s); /* free, or leave to the last zc notification */

enum net_timer {
	NET_T_NONE = -1,
	NET_T_REQ = 0, /* request head / body deadline (header_timeout_ms) */
	NET_T_IDLE,    /* keep-alive idle, stalled writer (idle_timeout_ms) */
	NET_T_LINGER,  /* lingering close */
	NET_T_COUNT,
};

struct net_conn {
	struct net_loop *loop;
	uint64_t id;
	uint32_t slot;
	int fd; /* socket, or fixed-file index with io_uring registered files */

	/* backend-private */
	int inflight; /* io_uring operations whose last completion is still to come */
	bool recv_armed, sending, rearm_recv, closing, err_poll;
	bool shut_pending;   /* io_uring: a shutdown in flight; the close waits for it */
	bool close_deferred; /* io_uring: ur_close came while shut_pending */
	bool paused;
	uint32_t ep_events; /* epoll: the mask last registered */
	uint8_t n_held;     /* io_uring: provided buffers held while the input buffer is full */
	uint16_t held_bid[4];
	uint32_t held_len[4];

	/* lists and timers */
	struct net_conn *t_prev, *t_next;
	int64_t deadline_ms;
	int8_t timer;  /* enum net_timer */
	uint8_t tkind; /* what the NET_T_REQ timer means: 0 fresh, 1 head, 2 body */
	bool in_ready, in_flush, released, in_process;
	struct net_conn *ready_next, *flush_next, *reap_next;

	/* state */
	bool dead; /* closed or failed: no more calls */
	bool abort_pending;
	bool app_busy; /* between on_request and the response's completion */
	bool resp_begun, streaming, stream_chunked;
	bool close_after; /* close once the output is drained */
	bool rd_eof;      /* the peer sent FIN */
	bool discard;     /* input is read and dropped (after an error response) */
	bool lingering;   /* our side is shut down; closing after NET_LINGER_MS or EOF */
	bool req_head, req_v10, req_keep_alive, sent_continue;
	void *ctx;

	/* input: in[in_off..in_len) not yet consumed; the request in progress
	 * starts at in_off and stays put until its response completes. */
	char *in;
	size_t in_off, in_len, in_cap;
	size_t need;    /* don't re-parse before in_len - in_off reaches this */
	size_t req_len; /* bytes of the request in progress */
	char *scratch;  /* chunked bodies (max_body_bytes at most) */
	size_t scratch_cap;
	struct http_parse parse;

	/* output */
	struct net_oseg *out_head, *out_tail;
	size_t out_bytes;   /* queued, not yet sent */
	size_t out_sending; /* of which handed to a send still in flight (io_uring) */
};

struct net_stats_atomic {
	_Atomic uint64_t accepted, closed, requests, bad_requests, timeouts, bytes_in, bytes_out;
	_Atomic int open_conns;
};

struct net_loop {
	struct net_server *s;
	int idx;
	pthread_t th;
	int listen_fd, wake_fd;
	_Atomic int wake_pending;
	_Atomic int stop_req;
	void *be; /* backend state */
	const struct net_backend_ops *ops;

	/* start-up handshake */
	int init_rc;
	char init_err[192];

	struct net_conn **slots; /* max_conns */
	uint32_t *free_slots;
	uint32_t n_free;
	uint32_t seq;
	int n_open;  /* live connections */
	int n_alive; /* allocated connections (live, or dead and not yet freed) */

	struct net_conn *t_head[NET_T_COUNT], *t_tail[NET_T_COUNT];
	int64_t t_ms[NET_T_COUNT];
	struct net_conn *ready, *flush, *reap;
	bool wake_seen;
	bool stopping;
	int64_t drain_deadline_ms;
	int64_t now_ms;
	int64_t date_sec;
	char date[40]; /* "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" */
	size_t in_max; /* input buffer limit per connection */
	struct http_limits lim;
	struct net_stats_atomic st;
};

struct net_server {
	struct net_config cfg;
	struct net_callbacks cb;
	int port;
	int n_threads;
	struct net_loop *loops;
	const struct net_backend_ops *ops;
	struct net_uring_caps caps;
	char features[192];
	sem_t started;
	int drain_ms;
	bool closing; /* net_server_stop: listeners stop for good (set before stop_req) */
};

/* ---- conn.c: events from the backends ---- */
int64_t net_now_ms(void);
/* Out of descriptors or memory at accept: the listener is left alone this long. */
#define NET_ACCEPT_RETRY_MS 100
/* A new connection; NULL when over max_conns (the caller closes fd). */
struct net_conn *conn_accept(struct net_loop *l, int fd);
/* Room to receive into: at least min(want, what the limits allow) bytes, or
 * *room = 0 when the buffer is full and reading must pause. */
char *conn_rbuf(struct net_conn *c, size_t want, size_t *room);
void conn_on_read(struct net_conn *c, size_t n);
void conn_on_eof(struct net_conn *c);
void conn_on_error(struct net_conn *c, int err);
/* Up to max iovecs of queued output, and their total in *bytes. */
int conn_out_iov(struct net_conn *c, struct iovec *iov, int max, size_t *bytes);
void conn_on_sent(struct net_conn *c, size_t n);
void conn_release(struct net_conn *c);
void loop_on_wake(struct net_loop *l);
void loop_run(struct net_loop *l);

/* conn.c, for respond.c */
char *net_out_reserve(struct net_conn *c, size_t len);
void net_out_commit(struct net_conn *c, size_t len);
int net_out_check(struct net_conn *c, size_t before);
int net_out_append(struct net_conn *c, const void *data, size_t len);
void net_conn_response_done(struct net_conn *c);
void net_conn_close_after(struct net_conn *c);
/* respond.c: a response from the net layer itself, then close. */
void net_resp_error(struct net_conn *c, int status);

static inline void net_stat_add(_Atomic uint64_t *x, uint64_t v)
{
	atomic_fetch_add_explicit(x, v, memory_order_relaxed);
}

#endif
