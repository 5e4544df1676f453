/*
 * test_net: the net module end to end, in process, on 127.0.0.1 port 0,
 * once per backend (io_uring where the kernel allows it, then epoll).
 *
 * The app: /echo answers with the request body; /stream?n=N streams N
 * chunks; /hold keeps the request until the test thread delivers the answer
 * through net_wake (cross-thread wake, conn ids, stale ids); /tick streams
 * a chunk on every wake (disconnect noticed by a write); /flood writes 64 KiB
 * chunks on every wake to a reader that never reads (max_output_bytes).
 * Real sockets are the clients. Bounded in time: a few seconds per backend.
 */
#define _GNU_SOURCE
#include "net/net.h"
#include "tests/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the app ---- */

#define MAXQ 64

struct held {
	int thread;
	uint64_t id;
};

struct app {
	net_server_t *s;
	pthread_mutex_t mu;
	struct held held[MAXQ]; /* requests waiting for an answer (on_request -> test thread) */
	int n_held;
	struct held answer[MAXQ]; /* answers to deliver (test thread -> on_wake) */
	int n_answer;
	struct held tick[MAXQ]; /* streams written on each wake */
	int n_tick;
	bool flood; /* on_wake writes 512 KiB per stream instead of one event */
	_Atomic int aborts, stale, delivered, wakes, ctx_bad;
	_Atomic int reqs, turn_reqs; /* on_request calls; their number at the last on_turn_end */
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char g_big[300000];
static void fill_big(void)
{
	for (size_t i = 0; i < sizeof(g_big); i++)
		g_big[i] = (char)('a' + i % 26);
}
static const char *big_body(void)
{
	return g_big;
}

static void on_request(net_conn_t *c, const struct http_request *req, void *ud)
{
	struct app *a = ud;
	const char *p = req->path.p;
	size_t n = req->path.n;
	atomic_fetch_add(&a->reqs, 1);
	if (n == 5 && !memcmp(p, "/echo", 5)) {
		char extra[64];
		snprintf(extra, sizeof(extra), "X-Method: %.*s\r\n", (int)req->method.n, req->method.p);
		net_respond(c, 200, "text/plain", extra, req->body.p, req->body.n);
	} else if (n == 4 && !memcmp(p, "/big", 4)) {
		/* large enough for the zero-copy send path (io_uring, >= 64 KiB);
		 * made once: under ThreadSanitizer filling it per request took
		 * seconds and tripped the client's read timeout */
		static pthread_once_t once = PTHREAD_ONCE_INIT;
		pthread_once(&once, fill_big);
		net_respond(c, 200, "application/octet-stream", NULL, big_body(), sizeof(g_big));
	} else if (n == 7 && !memcmp(p, "/stream", 7)) {
		const char *q = memchr(req->target.p, '=', req->target.n);
		int k = q ? atoi(q + 1) : 3;
		net_stream_begin(c, 200, "text/event-stream", NULL);
		for (int i = 0; i < k; i++) {
			char ev[32];
			int m = snprintf(ev, sizeof(ev), "data: %d\n\n", i);
			net_stream_write(c, ev, (size_t)m);
		}
		net_stream_end(c);
	} else if ((n == 5 && !memcmp(p, "/hold", 5)) || (n == 5 && !memcmp(p, "/tick", 5)) ||
	           (n == 6 && !memcmp(p, "/flood", 6))) {
		int *ctx = malloc(sizeof(int));
		*ctx = 0x5eed;
		net_conn_set_ctx(c, ctx);
		struct held h = {net_conn_thread(c), net_conn_id(c)};
		if (p[1] != 'h')
			net_stream_begin(c, 200, "text/event-stream", NULL);
		pthread_mutex_lock(&a->mu);
		if (p[1] == 'h' && a->n_held < MAXQ)
			a->held[a->n_held++] = h;
		else if (p[1] != 'h' && a->n_tick < MAXQ)
			a->tick[a->n_tick++] = h;
		pthread_mutex_unlock(&a->mu);
	} else {
		net_respond(c, 404, "text/plain", NULL, "no\n", 3);
	}
}

static void on_turn_end(net_server_t *s, int thread, void *ud)
{
	struct app *a = ud;
	(void)s;
	(void)thread;
	atomic_store(&a->turn_reqs, atomic_load(&a->reqs));
}

/* Every request handed to on_request is followed by an on_turn_end before
 * the thread waits again (the engine wakes its dispatchers there): once the
 * answers are in, the last turn end has seen every request. One thread. */
static void t_turn_end(struct app *a, const char *be)
{
	int want = atomic_load(&a->reqs);
	int64_t t0 = now_ms();
	while (atomic_load(&a->turn_reqs) < want && now_ms() - t0 < 2000)
		usleep(1000);
	CHECK(want > 0 && atomic_load(&a->turn_reqs) >= want, "%s: on_turn_end after the last request (%d of %d)", be,
	      atomic_load(&a->turn_reqs), want);
}

static void on_abort(net_conn_t *c, void *ctx, void *ud)
{
	struct app *a = ud;
	(void)c;
	if (!ctx || *(int *)ctx != 0x5eed)
		atomic_fetch_add(&a->ctx_bad, 1);
	else
		*(int *)ctx = 0; /* a second abort for the same request would see this */
	free(ctx);
	atomic_fetch_add(&a->aborts, 1);
}

/* Delivers the answers queued by the test thread, then writes to every
 * registered stream: a small event each wake, or (a->flood) 8 x 64 KiB at a
 * time until the net layer gives up on the slow reader. */
static void on_wake(net_server_t *s, int thread, void *ud)
{
	struct app *a = ud;
	static const char chunk[65536];
	atomic_fetch_add(&a->wakes, 1);
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->n_answer; i++) {
		if (a->answer[i].thread != thread)
			continue;
		net_conn_t *c = net_conn_find(s, thread, a->answer[i].id);
		if (!c) {
			atomic_fetch_add(&a->stale, 1);
		} else {
			free(net_conn_ctx(c));
			net_respond(c, 200, "text/plain", NULL, "held-ok", 7);
			atomic_fetch_add(&a->delivered, 1);
		}
		a->answer[i--] = a->answer[--a->n_answer];
	}
	for (int i = 0; i < a->n_tick; i++) {
		net_conn_t *c = a->tick[i].thread == thread ? net_conn_find(s, thread, a->tick[i].id) : NULL;
		if (!c) {
			if (a->tick[i].thread == thread)
				a->tick[i--] = a->tick[--a->n_tick];
			continue;
		}
		if (!a->flood) {
			net_stream_write(c, "data: tick\n\n", 12);
			continue;
		}
		int rc = 0;
		for (int k = 0; k < 8 && rc == 0; k++)
			rc = net_stream_write(c, chunk, sizeof(chunk));
	}
	pthread_mutex_unlock(&a->mu);
}

/* ---- clients ---- */

struct client {
	int fd;
	char buf[1 << 19];
	size_t len;
};

static int g_port;

static void client_open(struct client *cl)
{
	cl->len = 0;
	cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("connect");
		exit(1);
	}
}

static void client_close(struct client *cl)
{
	if (cl->fd >= 0)
		close(cl->fd);
	cl->fd = -1;
}

/* Closes with a reset (SO_LINGER 0) instead of a FIN. */
static void client_reset(struct client *cl)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(cl->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	client_close(cl);
}

static void send_str(struct client *cl, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = send(cl->fd, s, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* Reads more; 0 on EOF or timeout/error. */
static int fill(struct client *cl)
{
	if (cl->len == sizeof(cl->buf))
		return 0;
	ssize_t r;
	do /* a signal (sanitizer runtimes send some) must not look like EOF */
		r = recv(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - cl->len, 0);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return 0;
	cl->len += (size_t)r;
	return 1;
}

static void consume(struct client *cl, size_t n)
{
	memmove(cl->buf, cl->buf + n, cl->len - n);
	cl->len -= n;
}

struct resp {
	int status;
	char head[2048];
	char body[1 << 19];
	size_t body_n;
	bool close;
};

/* Reads one response (Content-Length, chunked, or to EOF); skips 1xx
 * unless keep_1xx. Returns 0, or -1 with nothing complete. */
static int read_resp(struct client *cl, struct resp *r, bool keep_1xx)
{
	for (;;) {
		char *end;
		while (!(end = memmem(cl->buf, cl->len, "\r\n\r\n", 4)))
			if (!fill(cl))
				return -1;
		size_t hn = (size_t)(end - cl->buf) + 4;
		memcpy(r->head, cl->buf, hn < sizeof(r->head) ? hn : sizeof(r->head) - 1);
		r->head[hn < sizeof(r->head) ? hn : sizeof(r->head) - 1] = 0;
		r->status = atoi(r->head + 9);
		consume(cl, hn);
		if (r->status >= 100 && r->status < 200 && !keep_1xx)
			continue;
		break;
	}
	r->body_n = 0;
	r->close = strcasestr(r->head, "Connection: close") != NULL;
	if (r->status < 200)
		return 0;
	const char *cl_h = strcasestr(r->head, "Content-Length: ");
	if (cl_h) {
		size_t n = strtoul(cl_h + 16, NULL, 10);
		while (cl->len < n)
			if (!fill(cl))
				return -1;
		memcpy(r->body, cl->buf, n);
		r->body_n = n;
		consume(cl, n);
	} else if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
		for (;;) {
			char *e;
			while (!(e = memmem(cl->buf, cl->len, "\r\n", 2)))
				if (!fill(cl))
					return -1;
			size_t sz = strtoul(cl->buf, NULL, 16);
			size_t ln = (size_t)(e - cl->buf) + 2;
			while (cl->len < ln + sz + 2)
				if (!fill(cl))
					return -1;
			if (r->body_n + sz < sizeof(r->body))
				memcpy(r->body + r->body_n, cl->buf + ln, sz);
			r->body_n += sz;
			consume(cl, ln + sz + 2);
			if (sz == 0)
				break;
		}
	} else {
		while (fill(cl))
			;
		memcpy(r->body, cl->buf, cl->len);
		r->body_n = cl->len;
		cl->len = 0;
	}
	r->body[r->body_n < sizeof(r->body) ? r->body_n : sizeof(r->body) - 1] = 0;
	return 0;
}

/* True when the server closed: EOF (or reset) within timeout_ms. */
static bool closed_by_peer(struct client *cl, int timeout_ms)
{
	struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
	int64_t end = now_ms() + timeout_ms;
	while (now_ms() < end) {
		if (poll(&pfd, 1, (int)(end - now_ms())) <= 0)
			return false;
		char b[4096];
		ssize_t r = recv(cl->fd, b, sizeof(b), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN))
			return true;
	}
	return false;
}

static bool wait_for(_Atomic int *x, int want, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	while (atomic_load(x) < want && now_ms() < end)
		usleep(2000);
	return atomic_load(x) >= want;
}

static bool take_held(struct app *a, struct held *out, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	for (;;) {
		pthread_mutex_lock(&a->mu);
		bool got = a->n_held > 0;
		if (got)
			*out = a->held[--a->n_held];
		pthread_mutex_unlock(&a->mu);
		if (got)
			return true;
		if (now_ms() > end)
			return false;
		usleep(2000);
	}
}

static void answer(struct app *a, struct held h)
{
	pthread_mutex_lock(&a->mu);
	a->answer[a->n_answer++] = h;
	pthread_mutex_unlock(&a->mu);
	net_wake(a->s, h.thread);
}

/* ---- the cases ---- */

static void t_keepalive_pipelining(const char *be)
{
	struct client cl;
	struct resp *r = malloc(sizeof(*r));
	client_open(&cl);
	for (int i = 0; i < 3; i++) {
		send_str(&cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
		CHECK(read_resp(&cl, r, false) == 0 && r->status == 200 && !strcmp(r->body, "hello") && !r->close,
		      "%s: keep-alive request %d", be, i);
	}
	/* three requests in one send, answered in order */
	send_str(&cl,
	         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nA"
	         "GET /stream?n=2 HTTP/1.1\r\nHost: t\r\n\r\n"
	         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\nC\r\n0\r\nT: 1\r\n\r\n");
	CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "A"), "%s: pipelined 1", be);
	CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "data: 0\n\ndata: 1\n\n"), "%s: pipelined 2 '%s'", be,
	      r->body);
	CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "C"), "%s: pipelined 3 (chunked body)", be);
	/* HEAD: headers only */
	send_str(&cl, "HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 200, "%s: HEAD", be);
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 404, "%s: after HEAD", be);
	/* Expect: 100-continue */
	send_str(&cl, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
	CHECK(read_resp(&cl, r, true) == 0 && r->status == 100, "%s: 100 Continue (%d)", be, r->status);
	send_str(&cl, "xyz");
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 200 && !strcmp(r->body, "xyz"), "%s: body after 100", be);

	/* a 60000-byte request body (the input buffer grows), echoed back */
	{
		char *req = malloc(70000);
		int n = sprintf(req, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n");
		for (int i = 0; i < 60000; i++)
			req[n + i] = (char)('A' + i % 23);
		req[n + 60000] = 0;
		send_str(&cl, req);
		bool ok = read_resp(&cl, r, false) == 0 && r->status == 200 && r->body_n == 60000;
		for (int i = 0; ok && i < 60000; i++)
			ok = r->body[i] == (char)('A' + i % 23);
		CHECK(ok, "%s: 60000-byte body echoed (%zu)", be, r->body_n);
		free(req);
	}
	/* a large body (zero-copy send on io_uring), twice on one connection */
	for (int k = 0; k < 2; k++) {
		send_str(&cl, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
		bool ok = read_resp(&cl, r, false) == 0 && r->status == 200 && r->body_n == 300000;
		for (size_t i = 0; ok && i < r->body_n; i++)
			ok = r->body[i] == (char)('a' + i % 26);
		CHECK(ok, "%s: 300 KB body %d (%zu bytes; head: %s)", be, k, r->body_n, r->head);
	}
	client_close(&cl);

	/* HTTP/1.0: answered, then closed */
	client_open(&cl);
	send_str(&cl, "GET /stream?n=1 HTTP/1.0\r\n\r\n");
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 200 && r->close && !strcmp(r->body, "data: 0\n\n"),
	      "%s: 1.0 stream to EOF '%s'", be, r->body);
	client_close(&cl);
	client_open(&cl);
	send_str(&cl, "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	CHECK(read_resp(&cl, r, false) == 0 && r->close && closed_by_peer(&cl, 2000), "%s: Connection: close", be);
	client_close(&cl);
	free(r);
}

static void t_errors(const char *be)
{
	static const struct {
		const char *req;
		int status;
	} cases[] = {
	    {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	    {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
	    {"GET /echo HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400},
	    {"GET /echo HTTP/1.1\r\nHost : t\r\n\r\n", 400},
	    {"GET /echo HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400},
	    {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400},
	    {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
	    {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n", 413},
	    {"GET /echo HTTP/3.0\r\nHost: t\r\n\r\n", 505},
	};
	struct client cl;
	struct resp *r = malloc(sizeof(*r));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		client_open(&cl);
		send_str(&cl, cases[i].req);
		CHECK(read_resp(&cl, r, false) == 0 && r->status == cases[i].status && r->close, "%s: case %zu: %d", be,
		      i, r->status);
		CHECK(closed_by_peer(&cl, 2000), "%s: case %zu closed", be, i);
		client_close(&cl);
	}
	/* a header block over 8 KiB: 431, even while the client keeps sending */
	client_open(&cl);
	char *big = malloc(20000);
	int n = sprintf(big, "GET /echo HTTP/1.1\r\nHost: t\r\nX: ");
	memset(big + n, 'a', 12000);
	strcpy(big + n + 12000, "\r\n\r\n");
	send_str(&cl, big);
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 431, "%s: 431 (%d)", be, r->status);
	CHECK(closed_by_peer(&cl, 2000), "%s: 431 closed", be);
	client_close(&cl);
	/* a chunked body over the limit (64 KiB in this test) */
	client_open(&cl);
	send_str(&cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
	memset(big, 'b', 16384);
	big[16384] = 0;
	for (int i = 0; i < 5; i++) {
		send_str(&cl, "4000\r\n");
		send_str(&cl, big);
		send_str(&cl, "\r\n");
	}
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 413, "%s: chunked 413 (%d)", be, r->status);
	client_close(&cl);
	free(big);
	free(r);
}

static void t_slowloris(const char *be)
{
	struct client slow, fast;
	struct resp *r = malloc(sizeof(*r));
	client_open(&slow);
	const char *req = "GET /echo HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
	int64_t t0 = now_ms();
	bool got408 = false, other_ok = false;
	for (size_t i = 0; req[i] && now_ms() - t0 < 3000; i++) {
		char b[2] = {req[i], 0};
		send_str(&slow, b);
		if (i == 2) {
			/* someone else is served meanwhile */
			client_open(&fast);
			send_str(&fast, "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
			other_ok = read_resp(&fast, r, false) == 0 && r->status == 200;
			client_close(&fast);
		}
		struct pollfd pfd = {.fd = slow.fd, .events = POLLIN};
		if (poll(&pfd, 1, 100) > 0) {
			got408 = read_resp(&slow, r, false) == 0 && r->status == 408;
			break;
		}
	}
	int64_t dt = now_ms() - t0;
	CHECK(got408, "%s: slowloris gets 408", be);
	CHECK(dt >= 400 && dt < 1200, "%s: 408 after %lld ms (timeout 500)", be, (long long)dt);
	CHECK(closed_by_peer(&slow, 2000), "%s: slowloris closed", be);
	CHECK(other_ok, "%s: another client served during slowloris", be);
	client_close(&slow);
	free(r);
}

static void t_hold_wake(struct app *a, const char *be)
{
	struct client cl;
	struct resp *r = malloc(sizeof(*r));
	struct held h;
	int aborts0 = atomic_load(&a->aborts);

	/* answered from another thread through net_wake */
	client_open(&cl);
	send_str(&cl, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
	CHECK(take_held(a, &h, 2000), "%s: held", be);
	answer(a, h);
	CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "held-ok"), "%s: answer via wake", be);
	/* the same connection goes on */
	send_str(&cl, "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 200, "%s: after the held one", be);
	client_close(&cl);

	/* pipelined bytes behind a held request wait, then are answered */
	client_open(&cl);
	send_str(&cl,
	         "GET /hold HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
	CHECK(take_held(a, &h, 2000), "%s: held (pipelined)", be);
	usleep(20000);
	answer(a, h);
	CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "held-ok"), "%s: held first", be);
	CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "ok"), "%s: then the pipelined one", be);
	client_close(&cl);

	/* the client resets during a held request: on_abort once; the id goes stale */
	int stale0 = atomic_load(&a->stale);
	client_open(&cl);
	send_str(&cl, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
	CHECK(take_held(a, &h, 2000), "%s: held (reset)", be);
	client_reset(&cl);
	CHECK(wait_for(&a->aborts, aborts0 + 1, 2000), "%s: on_abort after reset", be);
	answer(a, h);
	CHECK(wait_for(&a->stale, stale0 + 1, 2000), "%s: stale id not found", be);
	usleep(50000);
	CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: on_abort exactly once", be);

	/* a reset while reading is paused (pipelined bytes beyond the input
	 * buffer behind a held request) is still noticed: on_abort once */
	aborts0 = atomic_load(&a->aborts);
	client_open(&cl);
	{
		char *junk = malloc(40000);
		int n = sprintf(junk, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\n"
		                      "Content-Length: 60000\r\n\r\n");
		memset(junk + n, 'j', 30000);
		junk[n + 30000] = 0;
		send_str(&cl, junk);
		free(junk);
	}
	CHECK(take_held(a, &h, 2000), "%s: held (paused)", be);
	usleep(50000);
	client_reset(&cl);
	CHECK(wait_for(&a->aborts, aborts0 + 1, 2000), "%s: on_abort after reset while paused", be);
	answer(a, h);
	usleep(50000);
	CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: once", be);

	client_close(&cl);
	free(r);
}

/* A FIN while a request is held: by default the client went away (on_abort
 * at once); with half_close_ok the full answer comes, then EOF. */
static void t_half_close(struct app *a, const char *be, bool half_close_ok)
{
	struct client cl;
	struct held h;
	struct resp *r = calloc(1, sizeof(*r));
	int aborts0 = atomic_load(&a->aborts);
	client_open(&cl);
	send_str(&cl, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
	CHECK(take_held(a, &h, 2000), "%s: held (half-close)", be);
	shutdown(cl.fd, SHUT_WR);
	if (!half_close_ok) {
		CHECK(wait_for(&a->aborts, aborts0 + 1, 2000), "%s: FIN while held -> on_abort", be);
		answer(a, h); /* a stale id: delivered nowhere */
		usleep(50000);
		CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: FIN abort once", be);
	} else {
		usleep(50000);
		answer(a, h);
		CHECK(read_resp(&cl, r, false) == 0 && !strcmp(r->body, "held-ok"), "%s: answer after half-close", be);
		CHECK(closed_by_peer(&cl, 2000), "%s: closed after the answer", be);
		CHECK(atomic_load(&a->aborts) == aborts0, "%s: half-close is no abort", be);
	}
	client_close(&cl);
	free(r);
}

/* A stream whose client closed (FIN): the next writes fail -> on_abort once. */
static void t_stream_disconnect(struct app *a, const char *be)
{
	struct client cl;
	int aborts0 = atomic_load(&a->aborts);
	client_open(&cl);
	send_str(&cl, "GET /tick HTTP/1.1\r\nHost: t\r\n\r\n");
	char b[512];
	CHECK(recv(cl.fd, b, sizeof(b), 0) > 0, "%s: stream head", be);
	client_close(&cl);
	int64_t end = now_ms() + 3000;
	while (atomic_load(&a->aborts) == aborts0 && now_ms() < end) {
		net_wake(a->s, 0);
		usleep(10000);
	}
	CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: stream abort after FIN (%d)", be,
	      atomic_load(&a->aborts) - aborts0);
	for (int i = 0; i < 5; i++) {
		net_wake(a->s, 0);
		usleep(5000);
	}
	CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: stream abort once", be);
}

static void t_slow_reader(struct app *a, const char *be)
{
	struct client cl;
	int aborts0 = atomic_load(&a->aborts);
	cl.len = 0;
	cl.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int small = 4096;
	setsockopt(cl.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(connect(cl.fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	send_str(&cl, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n");
	int64_t end = now_ms() + 5000;
	while (atomic_load(&a->aborts) == aborts0 && now_ms() < end) {
		net_wake(a->s, 0);
		net_wake(a->s, 1); /* ignored with one thread */
		usleep(5000);
	}
	CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: slow reader dropped (aborts %d)", be,
	      atomic_load(&a->aborts) - aborts0);
	client_close(&cl);
}

/* Two threads: held requests answered on the right thread by id; per-thread
 * max_conns; the idle keep-alive timeout. */
static void t_threads_limits(struct app *a, const char *be)
{
	struct client *cl = malloc(8 * sizeof(*cl));
	struct resp *r = malloc(sizeof(*r));
	struct held h[8];
	int n_ok = 0, threads_seen = 0;
	enum { NH = 5 }; /* at most 5 on one thread, under its max_conns of 6 */
	for (int i = 0; i < NH; i++) {
		client_open(&cl[i]);
		send_str(&cl[i], "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
	}

	for (int i = 0; i < NH; i++) {
		if (!take_held(a, &h[i], 2000))
			break;
		threads_seen |= 1 << h[i].thread;
		n_ok++;
	}
	CHECK(n_ok == NH, "%s: %d held over 2 threads", be, n_ok);
	for (int i = 0; i < n_ok; i++)
		answer(a, h[i]);
	int answered = 0;
	for (int i = 0; i < NH; i++)
		answered += read_resp(&cl[i], r, false) == 0 && !strcmp(r->body, "held-ok");
	CHECK(answered == n_ok, "%s: answered %d of %d", be, answered, n_ok);
	printf("test_net: %s: held requests on threads mask %d\n", be, threads_seen);
	/* idle keep-alive timeout (300 ms here): closed without a response */
	int64_t t0 = now_ms();
	CHECK(closed_by_peer(&cl[0], 2000), "%s: idle connection closed", be);
	int64_t dt = now_ms() - t0;
	CHECK(dt < 1500, "%s: idle close after %lld ms", be, (long long)dt);
	for (int i = 0; i < NH; i++)
		client_close(&cl[i]);
	usleep(50000);

	/* over max_conns per thread: the excess is closed at once */
	struct client *many = malloc(16 * sizeof(*many));
	int closed = 0, served = 0;
	for (int i = 0; i < 16; i++)
		client_open(&many[i]);
	for (int i = 0; i < 16; i++) {
		send_str(&many[i], "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
		if (read_resp(&many[i], r, false) == 0 && r->status == 200)
			served++;
		else
			closed++;
	}
	CHECK(served >= 6 && served <= 12 && closed == 16 - served, "%s: max_conns: served %d closed %d", be, served,
	      closed);
	for (int i = 0; i < 16; i++)
		client_close(&many[i]);
	free(many);
	free(cl);
	free(r);
}

/* Regression: after the loop had slept longer than header_timeout with
 * nothing to do, a new connection's deadline was computed from the clock
 * read before the wait, so it expired at once and the connection was closed
 * before its request was read (an empty reply instead of a response). */
static void t_first_after_idle(const char *be)
{
	struct client cl;
	struct resp *r = malloc(sizeof(*r));
	usleep(800 * 1000); /* header_timeout is 500 ms; no connection open, no timer armed */
	client_open(&cl);
	send_str(&cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 200 && !strcmp(r->body, "ok"),
	      "%s: first request after the loop slept past header_timeout", be);
	client_close(&cl);
	free(r);
}

/* Regression: out of file descriptors, the listener stayed readable (epoll)
 * or accept was re-armed at once (io_uring) and the net thread spun at
 * 100% CPU until descriptors came back. Now accepting pauses for
 * NET_ACCEPT_RETRY_MS at a time; the connections wait in the backlog and
 * are served once descriptors are free. */
static void t_fd_exhaustion(const char *be)
{
	struct rlimit old;
	getrlimit(RLIMIT_NOFILE, &old);
	int n_open = 0;
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		while (readdir(d))
			n_open++;
		closedir(d);
	}
	struct rlimit lim = {.rlim_cur = (rlim_t)n_open + 8, .rlim_max = old.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &lim)) {
		printf("test_net: %s: cannot lower RLIMIT_NOFILE, fd exhaustion not tested\n", be);
		return;
	}
	int fds[64], n = 0;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	while (n < 64) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			break;
		fds[n++] = fd;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
			break;
	}
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	usleep(1000 * 1000);
	getrusage(RUSAGE_SELF, &r1);
	double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
		     (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
	for (int i = 0; i < n; i++)
		close(fds[i]);
	setrlimit(RLIMIT_NOFILE, &old);
	CHECK(n > 0 && cpu < 0.3, "%s: out of descriptors (%d sockets), the server used %.2f CPU-s in 1 s", be, n, cpu);
	struct client cl;
	struct resp *r = malloc(sizeof(*r));
	client_open(&cl);
	send_str(&cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
	CHECK(read_resp(&cl, r, false) == 0 && r->status == 200, "%s: serves again after fd exhaustion", be);
	client_close(&cl);
	free(r);
}

static void run_backend(bool force_epoll)
{
	struct app *a = calloc(1, sizeof(*a));
	pthread_mutex_init(&a->mu, NULL);
	struct net_config cfg;
	net_config_default(&cfg);
	cfg.port = 0;
	cfg.n_threads = 1;
	cfg.header_timeout_ms = 500;
	cfg.idle_timeout_ms = 5000;
	cfg.max_body_bytes = 65536;
	cfg.max_output_bytes = 256 * 1024;
	cfg.force_epoll = force_epoll;
	struct net_callbacks cb = {
	    .on_request = on_request, .on_abort = on_abort, .on_wake = on_wake, .on_turn_end = on_turn_end, .user_data = a};
	char err[256];
	net_server_t *s = net_server_start(&cfg, &cb, err, sizeof(err));
	CHECK(s, "start: %s", err);
	if (!s)
		return;
	a->s = s;
	g_port = net_server_port(s);
	const char *be = net_server_backend(s);
	printf("test_net: %s (%s) on port %d\n", be, net_server_features(s), g_port);
	CHECK(force_epoll ? !strcmp(be, "epoll") : 1, "forced epoll");

	t_first_after_idle(be);
	t_fd_exhaustion(be);

	t_keepalive_pipelining(be);
	t_turn_end(a, be);
	t_errors(be);
	t_slowloris(be);
	t_hold_wake(a, be);
	t_half_close(a, be, false);
	t_stream_disconnect(a, be);
	net_server_stop(s, 500);

	/* the flood case with a server whose on_wake writes 512 KiB per wake */
	a->flood = true;
	memset(a->tick, 0, sizeof(a->tick));
	a->n_tick = a->n_answer = a->n_held = 0;
	cfg.n_threads = 2;
	cfg.max_conns = 6;
	cfg.idle_timeout_ms = 300;
	cfg.half_close_ok = true;
	s = net_server_start(&cfg, &cb, err, sizeof(err));
	CHECK(s, "restart: %s", err);
	if (!s)
		return;
	a->s = s;
	g_port = net_server_port(s);
	t_half_close(a, be, true);
	t_slow_reader(a, be);
	t_threads_limits(a, be);
	struct net_stats st, st1;
	net_stats_get(s, 0, &st);
	net_stats_get(s, 1, &st1);
	CHECK(st.accepted + st1.accepted >= 10 && st.requests + st1.requests >= 8, "%s: stats", be);

	/* stop with a request held: drained until the deadline, then aborted */
	struct client cl;
	int aborts0 = atomic_load(&a->aborts);
	usleep(50000);
	client_open(&cl);
	send_str(&cl, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
	struct held h;
	CHECK(take_held(a, &h, 2000), "%s: held before stop", be);
	int64_t t0 = now_ms();
	net_server_stop(s, 200);
	int64_t dt = now_ms() - t0;
	CHECK(dt >= 150 && dt < 3000, "%s: stop took %lld ms (drain 200)", be, (long long)dt);
	CHECK(atomic_load(&a->aborts) == aborts0 + 1, "%s: held request aborted at stop", be);
	CHECK(atomic_load(&a->ctx_bad) == 0, "%s: on_abort ctx", be);
	client_close(&cl);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

int main(void)
{
	int64_t t0 = now_ms();
	run_backend(false);
	run_backend(true);
	printf("test_net: %lld ms\n", (long long)(now_ms() - t0));
	return check_status("test_net");
}
