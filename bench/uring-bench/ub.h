/*
 * ub.h: uring-bench's internals shared by its files (not a public API).
 *
 * Threads: each worker thread owns a ub_thread (its connections, its event
 * loop, its histograms); nothing is shared between workers but the atomic
 * counters in ub_run and the read-only ub_opts/request bytes. Results are
 * merged by the main thread after the workers are joined.
 *
 * Event loops: io_uring (loop_uring.c) or epoll (loop_epoll.c) behind
 * ub_loop_ops, the way net/ hides its two backends. The loop calls back
 * into client.c through ub_on_connected / ub_on_sent / ub_on_data /
 * ub_on_writable.
 */
#ifndef LOCUS_BENCH_UB_H
#define LOCUS_BENCH_UB_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "proto.h"

#define UB_RECV_BYTES 16384

enum ub_endpoint { UB_EP_COMPLETIONS, UB_EP_CHAT, UB_EP_GET };

#define UB_MAX_TARGETS   16
#define UB_MAX_INSTANCES 64

/* One server (--url); connection i talks to target i % n_targets. */
struct ub_target {
	char host[256];
	int port;
	char path[1024]; /* "" : the endpoint's default path */
	char url[1400];  /* as reported */
	struct sockaddr_in addr;
};

struct ub_opts {
	struct ub_target targets[UB_MAX_TARGETS];
	int n_targets;
	enum ub_endpoint endpoint;
	long n;          /* measured requests; <0: unbounded (duration) */
	int concurrency; /* connections (in flight at most) */
	int threads;
	double rate;       /* open loop: requests/s, 0 = closed loop */
	double burstiness; /* gamma shape of the inter-arrival times; 1 = Poisson */
	double duration_s; /* 0: until n */
	long warmup;
	double timeout_s; /* per request */
	bool stream;
	bool ignore_eos;
	bool quiet;
	bool force_epoll;
	int max_tokens;
	double temperature;
	int top_k;    /* sent when > 0 */
	double top_p; /* sent when < 1 */
	const char *model;
	const char *api_key;
	char **prompts; /* NULL with prompt_len */
	int n_prompts;
	int prompt_len; /* > 0: prompts of this many token ids (--prompt-len) */
	const char *json_path;
	bool csv;
	int *cpus; /* worker i pinned to cpus[i % n_cpus] */
	int n_cpus;
	uint64_t seed;
};

/* Built once, read by every worker. */
struct ub_request {
	char *bytes;
	size_t len;
};

/* Errors by class. */
enum ub_err { UB_E_CONNECT, UB_E_TIMEOUT, UB_E_HTTP, UB_E_CLOSED, UB_E_PROTOCOL, UB_E_STREAM, UB_E_COUNT };
extern const char *const ub_err_names[UB_E_COUNT];

struct ub_results {
	uint64_t ok, errors;
	uint64_t err[UB_E_COUNT];
	uint64_t http_status[600]; /* non-2xx statuses seen */
	uint64_t output_tokens, prompt_tokens;
	uint64_t bytes_in;
	uint64_t target_ok[UB_MAX_TARGETS], target_err[UB_MAX_TARGETS];
	/* responses by the instance the server named (X-Locus-Instance or X-Instance) */
	int n_instances;
	char instance[UB_MAX_INSTANCES][64];
	uint64_t instance_ok[UB_MAX_INSTANCES];
	uint64_t instance_other; /* ok responses naming an instance past the table */
	struct hist latency, ttft, itl, tpot;
};

struct ub_thread;

struct ub_conn {
	struct ub_thread *t;
	int idx;
	int target; /* index into ub_opts.targets */
	int fd;
	uint32_t gen; /* bumped at close: stale completions are dropped */
	bool connected, connecting, busy, sending, recv_armed, write_wait;
	/* the request in flight */
	const struct ub_request *req;
	size_t req_off;
	bool measured;
	uint64_t t_start;         /* intended (open loop) or actual send time, ns */
	uint64_t t_first, t_last; /* first and last token events */
	uint64_t deadline;
	long n_tokens;     /* counted from events */
	long usage_tokens; /* from the server's usage, -1 when none */
	long prompt_tokens;
	bool stream_error;
	bool got_bytes;
	struct resp_parser resp;
	struct sse_parser sse;
	char *body; /* non-streamed JSON body (for its usage), bounded */
	size_t body_len, body_cap;
	uint64_t *gaps; /* (gap_ns, tokens) pairs of this request, recorded at success */
	size_t n_gaps, gaps_cap;
	uint64_t now;             /* time of the data being parsed */
	char rbuf[UB_RECV_BYTES]; /* io_uring receive buffer */
};

struct ub_run {
	const struct ub_opts *o;
	const struct ub_request *reqs; /* (target, prompt) */
	int n_reqs;                    /* per target */
	atomic_long issued;            /* closed loop: requests claimed (measured phase) */
	atomic_long warm_issued;
	atomic_long done, failed;
	atomic_bool stop;
	pthread_barrier_t barrier;
	uint64_t t_begin, t_end;  /* measured phase, ns (t_end: set by main from the workers) */
	atomic_bool uring_failed; /* a worker could not set up io_uring and used epoll */
};

struct ub_loop_ops;

struct ub_thread {
	struct ub_run *run;
	const struct ub_opts *o;
	const struct ub_loop_ops *ops;
	void *be;
	int idx;
	struct ub_conn **conns;
	int n_conns;
	int *idle; /* stack of idle connected-or-closed connection indices */
	int n_idle;
	int in_flight;
	/* open loop */
	uint64_t *arrivals; /* intended send times, ns, FIFO */
	long arr_head, arr_tail, arr_cap;
	uint64_t next_arrival;
	long to_schedule; /* arrivals still to generate (<0: unbounded) */
	uint64_t rng;
	/* phase */
	bool measuring;
	long warm_left;
	uint64_t t_end;
	uint64_t next_timeout_scan;
	unsigned rr; /* round robin over prompts */
	struct ub_results res;
	char features[160];
};

struct ub_loop_ops {
	const char *name;
	int (*init)(struct ub_thread *t);
	void (*fini)(struct ub_thread *t);
	/* 0 connected now, -EINPROGRESS (ub_on_connected follows), or -errno. */
	int (*connect)(struct ub_conn *c);
	/* Bytes written now (>= 0; ub_on_writable follows when fewer than asked
	 * and the socket is full), -EINPROGRESS (ub_on_sent follows), or -errno. */
	long (*send)(struct ub_conn *c, const char *p, size_t n);
	/* Wants the response: ub_on_data follows as bytes arrive. */
	void (*recv)(struct ub_conn *c);
	void (*close)(struct ub_conn *c);
	/* Waits up to timeout_ns for events and dispatches them. */
	int (*wait)(struct ub_thread *t, uint64_t timeout_ns);
};

extern const struct ub_loop_ops ub_uring_ops;
extern const struct ub_loop_ops ub_epoll_ops;

uint64_t ub_now_ns(void);
/* from the loops */
void ub_on_connected(struct ub_conn *c, int err);
void ub_on_sent(struct ub_conn *c, long res);
void ub_on_writable(struct ub_conn *c);
/* n > 0 bytes, 0 for EOF, < 0 -errno */
void ub_on_data(struct ub_conn *c, const char *p, long n);

/* client.c */
void *ub_worker(void *arg);
void ub_results_init(struct ub_results *r);
void ub_results_merge(struct ub_results *dst, const struct ub_results *src);
void ub_instance_add(struct ub_results *r, const char *name, uint64_t n);

#endif
