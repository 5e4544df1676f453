/*
 * server.c: configuration, listeners, net threads, backend choice, wake-ups
 * and stop.
 *
 * Each net thread owns one loop: its own SO_REUSEPORT listener (bound here
 * on the caller's thread, so bind errors are reported by net_server_start),
 * its own eventfd for net_wake, its own connections. The backend is chosen
 * once: io_uring unless cfg.force_epoll or the probe fails (seccomp,
 * kernel.io_uring_disabled, old kernel), and logged once to stderr.
 *
 * Threading: net_wake, net_stats_get and net_server_stop may be called from
 * any thread; the rest of the loop state belongs to its thread.
 */
#define _GNU_SOURCE
#include "net/loop_impl.h"

#include "alloc/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

void net_config_default(struct net_config *c)
{
	memset(c, 0, sizeof(*c));
	c->host = "127.0.0.1";
	c->n_threads = 1;
	c->max_header_bytes = 8192;
	c->max_headers = 100;
	c->max_body_bytes = 1u << 20;
	c->header_timeout_ms = 10000;
	c->idle_timeout_ms = 60000;
	c->max_output_bytes = 4u << 20;
	c->max_conns = 4096;
}

/* Zero fields take their defaults; out-of-range ones are clamped. */
static void config_fix(struct net_config *c)
{
	struct net_config d;
	net_config_default(&d);
	if (!c->host || !*c->host)
		c->host = d.host;
	if (c->n_threads < 1)
		c->n_threads = 1;
	if (c->n_threads > NET_MAX_THREADS)
		c->n_threads = NET_MAX_THREADS;
	if (!c->max_header_bytes)
		c->max_header_bytes = d.max_header_bytes;
	if (c->max_headers <= 0)
		c->max_headers = d.max_headers;
	if (c->max_headers > HTTP_MAX_HEADERS)
		c->max_headers = HTTP_MAX_HEADERS;
	if (!c->max_body_bytes)
		c->max_body_bytes = d.max_body_bytes;
	if (c->header_timeout_ms <= 0)
		c->header_timeout_ms = d.header_timeout_ms;
	if (c->idle_timeout_ms <= 0)
		c->idle_timeout_ms = d.idle_timeout_ms;
	if (!c->max_output_bytes)
		c->max_output_bytes = d.max_output_bytes;
	if (c->max_conns <= 0)
		c->max_conns = d.max_conns;
	if (c->max_conns > (1 << NET_SLOT_BITS))
		c->max_conns = 1 << NET_SLOT_BITS;
}

static int listen_socket(const struct net_config *cfg, int port, int *bound_port, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *ai = NULL;
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	int rc = getaddrinfo(cfg->host, ps, &hints, &ai);
	if (rc) {
		snprintf(err, errlen, "net: %s: %s", cfg->host, gai_strerror(rc));
		return -EINVAL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "net: socket: %s", strerror(errno));
		freeaddrinfo(ai);
		return rc;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* Accepted sockets inherit TCP_NODELAY from the listener on Linux:
	 * no Nagle delay for small SSE chunks, and no setsockopt per accept. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 4096)) {
		rc = -errno;
		snprintf(err, errlen, "net: bind/listen %s:%d: %s", cfg->host, port, strerror(errno));
		freeaddrinfo(ai);
		close(fd);
		return rc;
	}
	freeaddrinfo(ai);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                                             : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static void *loop_thread(void *arg)
{
	struct net_loop *l = arg;
	struct net_server *s = l->s;
	char name[16];
	snprintf(name, sizeof(name), "locus-net%d", l->idx);
	pthread_setname_np(pthread_self(), name); /* top, ps -L, /proc/PID/task/TID/comm */
	if (s->cfg.cpus && s->cfg.n_cpus > 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(s->cfg.cpus[l->idx % s->cfg.n_cpus], &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set); /* best effort */
	}
	l->init_rc = l->ops->init(l, l->init_err, sizeof(l->init_err));
	int rc = l->init_rc;
	sem_post(&s->started);
	if (rc)
		return NULL;
	if (s->cb.on_thread_start)
		s->cb.on_thread_start(s, l->idx, s->cb.user_data);
	loop_run(l);
	l->ops->fini(l);
	return NULL;
}

static void loop_free(struct net_loop *l)
{
	if (l->listen_fd >= 0)
		close(l->listen_fd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	alloc_free(l->slots);
	alloc_free(l->free_slots);
}

static int loop_setup(struct net_server *s, struct net_loop *l, int idx)
{
	const struct net_config *cfg = &s->cfg;
	l->s = s;
	l->idx = idx;
	l->listen_fd = l->wake_fd = -1;
	l->slots = alloc_array((size_t)cfg->max_conns, sizeof(*l->slots));
	l->free_slots = alloc_array((size_t)cfg->max_conns, sizeof(*l->free_slots));
	if (!l->slots || !l->free_slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < (uint32_t)cfg->max_conns; i++)
		l->free_slots[i] = (uint32_t)cfg->max_conns - 1 - i;
	l->n_free = (uint32_t)cfg->max_conns;
	l->t_ms[NET_T_REQ] = cfg->header_timeout_ms;
	l->t_ms[NET_T_IDLE] = cfg->idle_timeout_ms;
	l->t_ms[NET_T_LINGER] = NET_LINGER_MS;
	l->lim.max_header_bytes = cfg->max_header_bytes;
	l->lim.max_headers = cfg->max_headers;
	l->lim.max_body_bytes = cfg->max_body_bytes;
	l->in_max = http_request_max_bytes(&l->lim) + 4 * NET_SEG_BYTES;
	l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake_fd < 0)
		return -errno;
	return 0;
}

/* Starts every loop with ops; on failure stops those that started. */
static int start_loops(struct net_server *s, const struct net_backend_ops *ops, char *err, size_t errlen)
{
	int started = 0, rc = 0;
	for (int i = 0; i < s->n_threads; i++) {
		struct net_loop *l = &s->loops[i];
		l->ops = ops;
		l->init_rc = 0;
		l->stopping = false;
		atomic_store(&l->stop_req, 0);
		atomic_store(&l->wake_pending, 0);
		uint64_t v;
		while (read(l->wake_fd, &v, sizeof(v)) > 0) /* left by a failed earlier start */
			;
		if (pthread_create(&l->th, NULL, loop_thread, l)) {
			snprintf(err, errlen, "net: pthread_create failed");
			rc = -EAGAIN;
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++)
		sem_wait(&s->started);
	for (int i = 0; i < started && !rc; i++) {
		if (s->loops[i].init_rc) {
			rc = s->loops[i].init_rc;
			snprintf(err, errlen, "%s", s->loops[i].init_err);
		}
	}
	if (rc) {
		s->drain_ms = 0;
		for (int i = 0; i < started; i++) {
			atomic_store(&s->loops[i].stop_req, 1);
			net_wake(s, i);
		}
		for (int i = 0; i < started; i++)
			pthread_join(s->loops[i].th, NULL);
	}
	return rc;
}

net_server_t *net_server_start(const struct net_config *cfg_in, const struct net_callbacks *cb, char *err,
                               size_t errlen)
{
	char dummy[8];
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = 0;
	if (!cfg_in || !cb || !cb->on_request) {
		snprintf(err, errlen, "net: config and on_request are required");
		return NULL;
	}
	struct net_server *s = alloc_zmem(sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "net: out of memory");
		return NULL;
	}
	s->cfg = *cfg_in;
	config_fix(&s->cfg);
	s->cb = *cb;
	s->n_threads = s->cfg.n_threads;
	sem_init(&s->started, 0, 0);
	s->loops = alloc_array((size_t)s->n_threads, sizeof(*s->loops));
	if (!s->loops) {
		snprintf(err, errlen, "net: out of memory");
		goto err_sem;
	}
	int port = s->cfg.port, i;
	for (i = 0; i < s->n_threads; i++) {
		struct net_loop *l = &s->loops[i];
		if (loop_setup(s, l, i)) {
			snprintf(err, errlen, "net: out of memory or eventfd failed");
			goto err_loops;
		}
		int fd = listen_socket(&s->cfg, port, &port, err, errlen);
		if (fd < 0)
			goto err_loops;
		l->listen_fd = fd;
	}
	s->port = port;

	char why[160] = "";
	int rc = -1;
	if (!s->cfg.force_epoll && net_uring_probe(&s->cfg, &s->caps, why, sizeof(why)) == 0) {
		rc = start_loops(s, &net_uring_ops, why, sizeof(why));
		if (rc == 0) {
			s->ops = &net_uring_ops;
			snprintf(s->features, sizeof(s->features), "%s", s->caps.text);
			fprintf(stderr, "net: using io_uring (%s), %d thread%s\n", s->features, s->n_threads,
			        s->n_threads == 1 ? "" : "s");
		}
	} else if (s->cfg.force_epoll) {
		snprintf(why, sizeof(why), "force_epoll");
	}
	if (rc) {
		rc = start_loops(s, &net_epoll_ops, err, errlen);
		if (rc)
			goto err_loops;
		s->ops = &net_epoll_ops;
		snprintf(s->features, sizeof(s->features), "level-triggered");
		fprintf(stderr, "net: io_uring unavailable (%s), using epoll, %d thread%s\n", why, s->n_threads,
		        s->n_threads == 1 ? "" : "s");
	}
	return s;

err_loops:
	for (int k = 0; k < s->n_threads; k++)
		loop_free(&s->loops[k]);
	alloc_free(s->loops);
err_sem:
	sem_destroy(&s->started);
	alloc_free(s);
	return NULL;
}

void net_server_stop(net_server_t *s, int drain_ms)
{
	if (!s)
		return;
	s->drain_ms = drain_ms;
	s->closing = true;
	for (int i = 0; i < s->n_threads; i++) {
		atomic_store(&s->loops[i].stop_req, 1);
		net_wake(s, i);
	}
	for (int i = 0; i < s->n_threads; i++)
		pthread_join(s->loops[i].th, NULL);
	for (int i = 0; i < s->n_threads; i++)
		loop_free(&s->loops[i]);
	alloc_free(s->loops);
	sem_destroy(&s->started);
	alloc_free(s);
}

int net_server_port(const net_server_t *s)
{
	return s->port;
}

const char *net_server_backend(const net_server_t *s)
{
	return s->ops->name;
}

const char *net_server_features(const net_server_t *s)
{
	return s->features;
}

void net_wake(net_server_t *s, int thread)
{
	if (!s || thread < 0 || thread >= s->n_threads)
		return;
	struct net_loop *l = &s->loops[thread];
	if (atomic_exchange(&l->wake_pending, 1))
		return; /* a wake-up is already on its way */
	uint64_t one = 1;
	ssize_t r = write(l->wake_fd, &one, sizeof(one));
	(void)r; /* EAGAIN means the counter is already non-zero: the loop will wake */
}

void net_stats_get(net_server_t *s, int thread, struct net_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!s || thread < 0 || thread >= s->n_threads)
		return;
	struct net_stats_atomic *a = &s->loops[thread].st;
	out->accepted = atomic_load_explicit(&a->accepted, memory_order_relaxed);
	out->closed = atomic_load_explicit(&a->closed, memory_order_relaxed);
	out->requests = atomic_load_explicit(&a->requests, memory_order_relaxed);
	out->bad_requests = atomic_load_explicit(&a->bad_requests, memory_order_relaxed);
	out->timeouts = atomic_load_explicit(&a->timeouts, memory_order_relaxed);
	out->bytes_in = atomic_load_explicit(&a->bytes_in, memory_order_relaxed);
	out->bytes_out = atomic_load_explicit(&a->bytes_out, memory_order_relaxed);
	out->open_conns = atomic_load_explicit(&a->open_conns, memory_order_relaxed);
}
