/*
 * loop_uring.c: the io_uring backend.
 *
 *   - one ring per net thread, created on that thread with
 *     SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them (completions
 *     are posted only when the loop asks, no IPIs), else COOP_TASKRUN,
 *     else plain; SUBMIT_ALL so one bad SQE does not hold back a batch;
 *   - multishot accept on the thread's SO_REUSEPORT listener, straight
 *     into the registered (fixed) file table when it can be registered;
 *   - multishot receive into a provided buffer ring (registered with the
 *     raw IORING_REGISTER_PBUF_RING call, liburing 2.3 has no
 *     io_uring_setup_buf_ring); each completion is copied into the
 *     connection's input buffer and the buffer goes straight back to the
 *     ring, so a slow application never starves other connections of
 *     buffers and a request's bytes stay put while it is in progress;
 *   - sends are prepared at the end of the turn and submitted together
 *     with the wait (one io_uring_enter per turn under load);
 *   - IORING_OP_SEND_ZC for segments of NET_ZC_MIN bytes or more: pinning
 *     pages and the extra notification completion cost more than copying
 *     a few KiB, and the segment has to stay alive until the notification;
 *     HTTP heads and SSE chunks are far below it, large JSON bodies are not
 *     (on loopback the kernel copies anyway);
 *   - net_wake's eventfd is watched with a multishot poll and drained with
 *     read(2) (the eventfd is non-blocking: an io_uring read would return
 *     EAGAIN rather than wait).
 *
 * user_data: a pointer with a tag in its low 3 bits (see enum tag).
 * A connection counts its operations whose last completion is still due
 * (inflight); once closed and at zero it is released to conn.c.
 *
 * Threading: one instance per loop thread; the ring is created on it.
 */
#define _GNU_SOURCE
#include "net/loop_impl.h"

#include "alloc/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UR_SQ_ENTRIES 512
#define UR_CQ_ENTRIES 4096
#define UR_NBUFS      256 /* provided receive buffers per thread (power of two) */
#define UR_BUF_BYTES  16384
#define UR_BGID       0
#define NET_ZC_MIN    65536 /* zero-copy send threshold, see the top of the file */

/* in the low 3 bits of the user data (ud): at most 8 tags */
enum tag { TAG_NONE = 0, TAG_ACCEPT, TAG_WAKE, TAG_RECV, TAG_SEND, TAG_ZC, TAG_ERRPOLL, TAG_SHUT, TAG_COUNT };
_Static_assert(TAG_COUNT <= 8, "tags live in the 3 low bits of 8-aligned pointers");

struct ur {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs; /* (UR_NBUFS, UR_BUF_BYTES) */
	int br_pending;
	bool br_registered;
	bool fixed, zc;
	bool accepting, accept_armed;
	int64_t accept_retry_ms; /* out of descriptors or memory: re-arm accept at this time, 0: none */
	uint64_t wake_val;
	struct net_conn **rearm; /* conns whose receive must be (re)armed next poll */
	int n_rearm, cap_rearm;
};

static inline uint64_t ud(void *p, enum tag t)
{
	return (uint64_t)(uintptr_t)p | (uint64_t)t;
}

/* The SQ ring is full only when one turn prepares more than UR_SQ_ENTRIES
 * operations: submitting makes room (the kernel consumes SQEs at submit
 * time; with NODROP a busy CQ only delays completions), so this loops at
 * most a few times and callers never see NULL. */
static struct io_uring_sqe *sqe_get(struct ur *u)
{
	struct io_uring_sqe *sqe;
	while (!(sqe = io_uring_get_sqe(&u->ring))) {
		if (io_uring_submit(&u->ring) < 0)
			io_uring_get_events(&u->ring); /* flush an overflowed CQ, then retry */
	}
	return sqe;
}

static void sqe_fd(struct ur *u, struct io_uring_sqe *sqe)
{
	if (u->fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
}

static void buf_recycle(struct ur *u, unsigned bid)
{
	io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * UR_BUF_BYTES, UR_BUF_BYTES, (unsigned short)bid,
	                      io_uring_buf_ring_mask(UR_NBUFS), u->br_pending++);
}

/* ---- probe (main thread, once) ---- */

static const unsigned setup_tries[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    0,
};

static int ring_create(struct io_uring *ring, unsigned flags)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = flags | IORING_SETUP_CQSIZE;
	p.cq_entries = UR_CQ_ENTRIES;
	return io_uring_queue_init_params(UR_SQ_ENTRIES, ring, &p);
}

static int buf_ring_register(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries)
{
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = entries;
	reg.bgid = UR_BGID;
	return io_uring_register_buf_ring(ring, &reg, 0);
}

/* Multishot receive (Linux 6.0) has no probe bit: try it on a socketpair. */
static int probe_recv_multishot(struct io_uring *ring)
{
	int sv[2], rc = -ENOTSUP;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	struct io_uring_buf_ring *br = alloc_aligned(4096, 4096);
	char *buf = alloc_mem(64);
	if (!br || !buf)
		goto out;
	memset(br, 0, 4096);
	if (buf_ring_register(ring, br, 1))
		goto out;
	io_uring_buf_ring_init(br);
	io_uring_buf_ring_add(br, buf, 64, 0, 0, 0);
	io_uring_buf_ring_advance(br, 1);
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UR_BGID;
	sqe->user_data = 1;
	if (write(sv[1], "x", 1) == 1 && io_uring_submit(ring) >= 0) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = 1};
		if (io_uring_wait_cqe_timeout(ring, &cqe, &ts) == 0) {
			if (cqe->res == 1 && (cqe->flags & IORING_CQE_F_MORE))
				rc = 0;
			io_uring_cqe_seen(ring, cqe);
		}
	}
	/* closing the pair ends the receive; drain its last completion */
	close(sv[0]);
	close(sv[1]);
	sv[0] = sv[1] = -1;
	struct io_uring_sqe *c = io_uring_get_sqe(ring);
	io_uring_prep_cancel64(c, 1, 0);
	c->user_data = 2;
	io_uring_submit(ring);
	for (int k = 0; k < 4; k++) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_nsec = 100000000};
		if (io_uring_wait_cqe_timeout(ring, &cqe, &ts))
			break;
		io_uring_cqe_seen(ring, cqe);
	}
	io_uring_unregister_buf_ring(ring, UR_BGID);
out:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	alloc_free(br);
	alloc_free(buf);
	return rc;
}

int net_uring_probe(const struct net_config *cfg, struct net_uring_caps *caps, char *why, size_t whylen)
{
	struct io_uring ring;
	int rc = -ENOSYS;
	unsigned flags = 0;
	memset(caps, 0, sizeof(*caps));
	for (size_t i = 0; i < sizeof(setup_tries) / sizeof(setup_tries[0]); i++) {
		rc = ring_create(&ring, setup_tries[i]);
		if (rc == 0) {
			flags = setup_tries[i];
			break;
		}
		if (rc == -EPERM || rc == -ENOSYS || rc == -ENOMEM)
			break; /* disabled (sysctl, seccomp) or no memory: no use trying fewer flags */
	}
	if (rc) {
		snprintf(why, whylen, "io_uring_queue_init: %s", strerror(-rc));
		return rc;
	}
	if (!(ring.features & IORING_FEAT_EXT_ARG)) {
		snprintf(why, whylen, "kernel lacks IORING_FEAT_EXT_ARG");
		rc = -ENOTSUP;
		goto out;
	}
	struct io_uring_probe *pr = io_uring_get_probe_ring(&ring);
	if (!pr) {
		snprintf(why, whylen, "io_uring_get_probe_ring failed");
		rc = -ENOTSUP;
		goto out;
	}
	static const int need[] = {IORING_OP_ACCEPT,       IORING_OP_RECV,     IORING_OP_SEND, IORING_OP_POLL_ADD,
	                           IORING_OP_ASYNC_CANCEL, IORING_OP_SHUTDOWN, IORING_OP_CLOSE};
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		if (!io_uring_opcode_supported(pr, need[i])) {
			snprintf(why, whylen, "io_uring lacks opcode %d", need[i]);
			rc = -ENOTSUP;
		}
	}
	caps->send_zc = io_uring_opcode_supported(pr, IORING_OP_SEND_ZC);
	io_uring_free_probe(pr);
	if (rc)
		goto out;
	rc = probe_recv_multishot(&ring);
	if (rc) {
		snprintf(why, whylen, "io_uring lacks multishot receive with provided buffer rings");
		goto out;
	}
	/* The fixed-file table is limited by RLIMIT_NOFILE: where it cannot
	 * hold max_conns, plain descriptors are used. */
	caps->fixed_files = io_uring_register_files_sparse(&ring, (unsigned)cfg->max_conns + 64) == 0;
	caps->setup_flags = flags;
	snprintf(caps->text, sizeof(caps->text), "%s%s%s%smultishot_accept multishot_recv buf_ring ext_arg%s%s",
	         flags & IORING_SETUP_SINGLE_ISSUER ? "single_issuer " : "",
	         flags & IORING_SETUP_DEFER_TASKRUN ? "defer_taskrun " : "",
	         flags & IORING_SETUP_COOP_TASKRUN ? "coop_taskrun " : "",
	         flags & IORING_SETUP_SUBMIT_ALL ? "submit_all " : "", caps->fixed_files ? " fixed_files" : "",
	         caps->send_zc ? " send_zc" : "");
out:
	io_uring_queue_exit(&ring);
	return rc;
}

/* ---- per-thread ---- */

static void arm_accept(struct net_loop *l)
{
	struct ur *u = l->be;
	if (!u->accepting || u->accept_armed)
		return;
	struct io_uring_sqe *sqe = sqe_get(u);
	if (u->fixed)
		io_uring_prep_multishot_accept_direct(sqe, l->listen_fd, NULL, NULL, 0); /* no CLOEXEC: EINVAL */
	else
		io_uring_prep_multishot_accept(sqe, l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud(l, TAG_ACCEPT));
	u->accept_armed = true;
}

static void arm_wake(struct net_loop *l)
{
	struct ur *u = l->be;
	struct io_uring_sqe *sqe = sqe_get(u);
	/* A multishot poll, not a read: io_uring hands EAGAIN back for a read
	 * on the non-blocking eventfd instead of waiting. */
	io_uring_prep_poll_multishot(sqe, l->wake_fd, POLLIN);
	io_uring_sqe_set_data64(sqe, ud(l, TAG_WAKE));
}

static void arm_recv(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	if (c->recv_armed || c->dead || c->closing || c->paused || c->rd_eof)
		return;
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe_fd(u, sqe);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UR_BGID;
	io_uring_sqe_set_data64(sqe, ud(c, TAG_RECV));
	c->recv_armed = true;
	c->inflight++;
}

static void rearm_later(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	if (c->rearm_recv)
		return;
	if (u->n_rearm == u->cap_rearm) {
		int ncap = u->cap_rearm ? 2 * u->cap_rearm : 64;
		struct net_conn **n = alloc_array((size_t)ncap, sizeof(*n));
		if (!n) {
			conn_on_error(c, -ENOMEM);
			return;
		}
		if (u->n_rearm)
			memcpy(n, u->rearm, (size_t)u->n_rearm * sizeof(*n));
		alloc_free(u->rearm);
		u->rearm = n;
		u->cap_rearm = ncap;
	}
	c->rearm_recv = true;
	c->inflight++; /* holds c until the rearm list lets go of it */
	u->rearm[u->n_rearm++] = c;
}

static void on_shut(struct net_conn *c);

static void maybe_release(struct net_conn *c)
{
	if (c->closing && c->inflight == 0)
		conn_release(c);
}

static int ur_init(struct net_loop *l, char *err, size_t errlen)
{
	struct net_server *s = l->s;
	struct ur *u = alloc_zmem(sizeof(*u));
	if (!u) {
		snprintf(err, errlen, "net: out of memory");
		return -ENOMEM;
	}
	int rc = ring_create(&u->ring, s->caps.setup_flags);
	if (rc) {
		snprintf(err, errlen, "io_uring_queue_init on thread %d: %s", l->idx, strerror(-rc));
		alloc_free(u);
		return rc;
	}
	u->br = alloc_aligned(UR_NBUFS * sizeof(struct io_uring_buf), 4096);
	u->bufs = alloc_aligned((size_t)UR_NBUFS * UR_BUF_BYTES, 4096);
	if (!u->br || !u->bufs) {
		snprintf(err, errlen, "net: out of memory");
		rc = -ENOMEM;
		goto err_ring;
	}
	memset(u->br, 0, UR_NBUFS * sizeof(struct io_uring_buf));
	rc = buf_ring_register(&u->ring, u->br, UR_NBUFS);
	if (rc) {
		snprintf(err, errlen, "io_uring buffer ring: %s", strerror(-rc));
		goto err_ring;
	}
	u->br_registered = true;
	io_uring_buf_ring_init(u->br);
	for (unsigned i = 0; i < UR_NBUFS; i++)
		buf_recycle(u, i);
	io_uring_buf_ring_advance(u->br, u->br_pending);
	u->br_pending = 0;
	if (s->caps.fixed_files)
		u->fixed = io_uring_register_files_sparse(&u->ring, (unsigned)s->cfg.max_conns + 64) == 0;
	u->zc = s->caps.send_zc;
	/* The re-arm list holds live connections, each at most once: sized for
	 * all of them now, it does not have to grow (and fail) in the middle
	 * of a close. */
	u->cap_rearm = s->cfg.max_conns + 64;
	u->rearm = alloc_array((size_t)u->cap_rearm, sizeof(*u->rearm));
	if (!u->rearm) {
		snprintf(err, errlen, "net: out of memory");
		rc = -ENOMEM;
		goto err_ring;
	}
	u->accepting = true;
	/* A blocking listener: the accept waits in the kernel (poll-driven
	 * multishot) instead of completing with EAGAIN. */
	int fl = fcntl(l->listen_fd, F_GETFL);
	if (fl >= 0)
		fcntl(l->listen_fd, F_SETFL, fl & ~O_NONBLOCK);
	l->be = u;
	arm_accept(l);
	arm_wake(l);
	io_uring_submit(&u->ring);
	return 0;

err_ring:
	if (u->br_registered)
		io_uring_unregister_buf_ring(&u->ring, UR_BGID);
	io_uring_queue_exit(&u->ring);
	alloc_free(u->br);
	alloc_free(u->bufs);
	alloc_free(u);
	return rc;
}

static void ur_fini(struct net_loop *l)
{
	struct ur *u = l->be;
	/* Tears down whatever is still in flight; detached zero-copy segments
	 * whose notifications never come are left to the process's end. */
	io_uring_queue_exit(&u->ring);
	alloc_free(u->br);
	alloc_free(u->bufs);
	alloc_free(u->rearm);
	alloc_free(u);
	l->be = NULL;
}

/* Bytes from a receive completion: into the input buffer, or held while
 * it is full (reading pauses until the response completes). */
static void on_data(struct net_conn *c, unsigned bid, size_t n)
{
	struct ur *u = c->loop->be;
	const char *data = u->bufs + (size_t)bid * UR_BUF_BYTES;
	if (c->dead || c->discard) {
		buf_recycle(u, bid);
		if (!c->dead)
			conn_on_read(c, n); /* counted and dropped */
		return;
	}
	if (!c->n_held) {
		size_t room;
		char *p = conn_rbuf(c, n, &room);
		if (room >= n) {
			memcpy(p, data, n);
			buf_recycle(u, bid);
			conn_on_read(c, n);
			return;
		}
	}
	if (c->n_held == sizeof(c->held_bid) / sizeof(c->held_bid[0])) {
		buf_recycle(u, bid);
		conn_on_error(c, -ENOBUFS); /* pipelining far past the buffer while a request is in progress */
		return;
	}
	c->held_bid[c->n_held] = (uint16_t)bid;
	c->held_len[c->n_held] = (uint32_t)n;
	c->n_held++;
	if (!c->paused) {
		c->paused = true;
		struct io_uring_sqe *sqe = sqe_get(u);
		io_uring_prep_cancel64(sqe, ud(c, TAG_RECV), 0);
		io_uring_sqe_set_data64(sqe, 0);
		/* Without a receive, a reset would go unnoticed until the next
		 * write: watch for POLLERR/POLLHUP instead. It stays armed for
		 * the connection's life (a healthy socket never fires it; the
		 * close cancels it). */
		if (!c->err_poll) {
			sqe = sqe_get(u);
			io_uring_prep_poll_add(sqe, c->fd, POLLERR | POLLHUP);
			sqe_fd(u, sqe);
			io_uring_sqe_set_data64(sqe, ud(c, TAG_ERRPOLL));
			c->err_poll = true;
			c->inflight++;
		}
	}
}

static void drop_held(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	for (int i = 0; i < c->n_held; i++)
		buf_recycle(u, c->held_bid[i]);
	c->n_held = 0;
}

/* Resumed reading: deliver the held buffers, then receive again. */
static void deliver_held(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	int i = 0;
	for (; i < c->n_held && !c->dead && !c->paused; i++) {
		size_t n = c->held_len[i], room;
		char *p = conn_rbuf(c, n, &room);
		if (room < n)
			break;
		memcpy(p, u->bufs + (size_t)c->held_bid[i] * UR_BUF_BYTES, n);
		buf_recycle(u, c->held_bid[i]);
		conn_on_read(c, n);
	}
	if (i) {
		memmove(c->held_bid, c->held_bid + i, (size_t)(c->n_held - i) * sizeof(c->held_bid[0]));
		memmove(c->held_len, c->held_len + i, (size_t)(c->n_held - i) * sizeof(c->held_len[0]));
		c->n_held = (uint8_t)(c->n_held - i);
	}
	if (c->dead)
		drop_held(c);
	else if (c->n_held)
		c->paused = true; /* still no room: wait for the next response */
}

static void on_recv(struct net_conn *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (res > 0) {
		on_data(c, cqe->flags >> IORING_CQE_BUFFER_SHIFT, (size_t)res);
	} else if (res == 0) {
		if (!c->dead)
			conn_on_eof(c);
	} else if (res != -ENOBUFS && res != -ECANCELED && !c->dead) {
		conn_on_error(c, res);
	}
	if (!more) {
		c->recv_armed = false;
		c->inflight--;
		/* Ended for want of buffers, by the kernel's choice, or by a cancel
		 * that a resume has overtaken: receive again. */
		if (!c->dead && !c->closing && !c->rd_eof && !c->paused)
			rearm_later(c);
		maybe_release(c);
	}
}

static void flush_conn(struct net_conn *c);

static void on_send(struct net_conn *c, int res)
{
	c->sending = false;
	c->out_sending = 0;
	c->inflight--;
	if (!c->dead) {
		if (res > 0)
			conn_on_sent(c, (size_t)res);
		else
			conn_on_error(c, res ? res : -EPIPE); /* 0 bytes of a non-empty send: gone */
	}
	if (!c->dead && c->out_bytes)
		flush_conn(c);
	maybe_release(c);
}

static void on_cqe(struct net_loop *l, struct io_uring_cqe *cqe)
{
	struct ur *u = l->be;
	uint64_t d = io_uring_cqe_get_data64(cqe);
	void *ptr = (void *)(uintptr_t)(d & ~(uint64_t)7);
	switch ((enum tag)(d & 7)) {
	case TAG_ACCEPT:
		if (cqe->res >= 0) {
			struct net_conn *c = conn_accept(l, cqe->res);
			if (c) {
				arm_recv(c);
			} else if (u->fixed) {
				struct io_uring_sqe *sqe = sqe_get(u);
				io_uring_prep_close_direct(sqe, (unsigned)cqe->res);
				io_uring_sqe_set_data64(sqe, 0);
			} else {
				close(cqe->res);
			}
		}
		if (!(cqe->flags & IORING_CQE_F_MORE)) {
			u->accept_armed = false;
			int e = -cqe->res;
			if (e == ENFILE || e == EMFILE || e == ENOBUFS || e == ENOMEM)
				/* Out of descriptors (or memory): re-arming now would fail
				 * again at once, a busy loop. Leave the connections in the
				 * backlog and try again in a while, as nginx does. */
				u->accept_retry_ms = l->now_ms + NET_ACCEPT_RETRY_MS;
			else if (cqe->res >= 0 || e == ECONNABORTED || e == EINTR || e == EAGAIN)
				arm_accept(l);
			else if (e != ECANCELED && u->accepting)
				fprintf(stderr, "net: thread %d stops accepting: %s\n", l->idx, strerror(e));
		}
		break;
	case TAG_WAKE:
		while (read(l->wake_fd, &u->wake_val, sizeof(u->wake_val)) > 0)
			;
		loop_on_wake(l);
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_wake(l);
		break;
	case TAG_RECV:
		on_recv(ptr, cqe);
		break;
	case TAG_SEND:
		on_send(ptr, cqe->res);
		break;
	case TAG_SHUT:
		on_shut(ptr);
		break;
	case TAG_ERRPOLL: {
		struct net_conn *c = ptr;
		c->err_poll = false;
		c->inflight--;
		if (cqe->res > 0 && (cqe->res & (POLLERR | POLLHUP)) && !c->dead)
			conn_on_error(c, -ECONNRESET);
		maybe_release(c);
		break;
	}
	case TAG_ZC: {
		struct net_oseg *s = ptr;
		if (cqe->flags & IORING_CQE_F_NOTIF) {
			if (--s->zc_pending == 0 && !s->owner)
				alloc_free(s);
			break;
		}
		struct net_conn *c = s->owner;
		if (!(cqe->flags & IORING_CQE_F_MORE))
			s->zc_pending--; /* no notification will follow */
		on_send(c, cqe->res);
		break;
	}
	default:
		break;
	}
}

static int ur_poll(struct net_loop *l, int timeout_ms)
{
	struct ur *u = l->be;
	if (u->accept_retry_ms) {
		int64_t d = u->accept_retry_ms - l->now_ms;
		if (d <= 0) {
			u->accept_retry_ms = 0;
			arm_accept(l);
		} else if (timeout_ms < 0 || d < timeout_ms) {
			timeout_ms = (int)d;
		}
	}
	/* Receives to (re)arm, and held input to deliver now that there is room. */
	bool delivered = false;
	for (int i = 0; i < u->n_rearm; i++) {
		struct net_conn *c = u->rearm[i];
		c->rearm_recv = false;
		c->inflight--;
		if (c->n_held && !c->dead) {
			c->paused = false;
			deliver_held(c);
			delivered = true;
		}
		arm_recv(c);
		maybe_release(c);
	}
	u->n_rearm = 0;

	struct io_uring_cqe *cqe = NULL;
	struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000, .tv_nsec = (long)(timeout_ms % 1000) * 1000000};
	if (delivered)
		ts.tv_sec = ts.tv_nsec = 0;
	int rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, timeout_ms < 0 && !delivered ? NULL : &ts, NULL);
	if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
		return rc;
	/* Deadlines set by these events count from now, not from before the
	 * wait (a stale clock timed out a new connection at once). */
	l->now_ms = net_now_ms();
	unsigned head, n = 0;
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		on_cqe(l, cqe);
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	if (u->br_pending) {
		io_uring_buf_ring_advance(u->br, u->br_pending);
		u->br_pending = 0;
	}
	return 0;
}

static void flush_conn(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	if (c->sending || c->dead || c->closing)
		return;
	struct net_oseg *s = c->out_head;
	while (s && s->len == s->off)
		s = s->next;
	if (!s)
		return;
	size_t n = s->len - s->off;
	struct io_uring_sqe *sqe = sqe_get(u);
	if (u->zc && n >= NET_ZC_MIN) {
		io_uring_prep_send_zc(sqe, c->fd, s->data + s->off, n, MSG_NOSIGNAL, 0);
		io_uring_sqe_set_data64(sqe, ud(s, TAG_ZC));
		s->zc_pending++;
	} else {
		io_uring_prep_send(sqe, c->fd, s->data + s->off, n, MSG_NOSIGNAL);
		io_uring_sqe_set_data64(sqe, ud(c, TAG_SEND));
	}
	sqe_fd(u, sqe);
	c->sending = true;
	c->out_sending = n;
	c->inflight++;
}

static void ur_stop_accept(struct net_loop *l)
{
	struct ur *u = l->be;
	if (!u->accepting)
		return;
	u->accepting = false;
	if (u->accept_armed) {
		struct io_uring_sqe *sqe = sqe_get(u);
		io_uring_prep_cancel64(sqe, ud(l, TAG_ACCEPT), 0);
		io_uring_sqe_set_data64(sqe, 0);
	}
}

static void ur_read_pause(struct net_conn *c, bool pause)
{
	if (pause || c->dead)
		return;
	/* Resuming happens in the next poll: this runs inside net_respond. */
	c->paused = true;
	rearm_later(c);
	if (!c->n_held)
		c->paused = false;
}

/*
 * The kernel always runs a shutdown in an io-wq worker, and a registered
 * file is looked up when the worker gets to it, not at submission; a
 * cancel does not find it either (no file yet). If the close of the slot
 * went first, the shutdown could land on the next connection accepted
 * into the same slot: it got a FIN before its first byte (t_engine under
 * TSan, a malformed request right after a 413). So the shutdown is
 * tracked, and a close waits for its completion.
 */
static void ur_shutdown_wr(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	if (c->shut_pending || c->closing)
		return; /* a closed slot may already belong to another connection */
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_shutdown(sqe, c->fd, SHUT_WR);
	sqe_fd(u, sqe);
	io_uring_sqe_set_data64(sqe, ud(c, TAG_SHUT));
	c->shut_pending = true;
	c->inflight++;
}

static void close_now(struct net_conn *c);

static void on_shut(struct net_conn *c)
{
	c->shut_pending = false;
	c->inflight--;
	if (c->close_deferred) {
		c->close_deferred = false;
		close_now(c);
	}
	maybe_release(c);
}

static void ur_close(struct net_conn *c)
{
	c->closing = true;
	drop_held(c);
	if (c->shut_pending) {
		c->close_deferred = true; /* on_shut closes */
		return;
	}
	close_now(c);
	maybe_release(c);
}

static void close_now(struct net_conn *c)
{
	struct ur *u = c->loop->be;
	/* Cancel what is in flight on the descriptor, then close it. The
	 * cancel looks the descriptor up, so the close must come after it:
	 * a hard link (a cancel that finds nothing is not an error for it).
	 * Two SQEs: make sure both fit before linking. */
	if (io_uring_sq_space_left(&u->ring) < 2)
		io_uring_submit(&u->ring);
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL | (u->fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
	io_uring_sqe_set_data64(sqe, 0);
	sqe->flags |= IOSQE_IO_HARDLINK;
	sqe = sqe_get(u);
	if (u->fixed)
		io_uring_prep_close_direct(sqe, (unsigned)c->fd);
	else
		io_uring_prep_close(sqe, c->fd);
	io_uring_sqe_set_data64(sqe, 0);
}

const struct net_backend_ops net_uring_ops = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .poll = ur_poll,
    .stop_accept = ur_stop_accept,
    .conn_flush = flush_conn,
    .conn_read_pause = ur_read_pause,
    .conn_shutdown_wr = ur_shutdown_wr,
    .conn_close = ur_close,
};
