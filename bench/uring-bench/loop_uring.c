/*
 * loop_uring.c: uring-bench's io_uring event loop. One ring per worker
 * thread, created on that thread so SINGLE_ISSUER/DEFER_TASKRUN apply
 * (probed: older kernels get COOP_TASKRUN or a plain ring). Connect, send
 * and receive are ring operations; everything queued during a turn goes to
 * the kernel in the one io_uring_submit_and_wait_timeout call that also
 * waits, so one system call carries every connection's next request.
 *
 * Receives: one multishot receive per connection into a provided-buffer
 * ring shared by the thread's connections (kernel 5.19+, probed), so a
 * keep-alive connection is armed once, not once per response; single-shot
 * receives into the connection's own buffer where that is missing.
 *
 * user_data: connection index << 40 | generation << 8 | op; a completion
 * whose generation is not the connection's current one belongs to a
 * closed socket and is dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ub.h"

enum { OP_CONNECT = 1, OP_SEND = 2, OP_RECV = 3 };

#define BR_BYTES 16384

struct ur {
	struct io_uring ring;
	struct io_uring_buf_ring *br; /* NULL: single-shot receives */
	char *br_mem;                 /* (n_bufs, BR_BYTES) */
	unsigned n_bufs;
	bool multishot; /* false: the kernel refused multishot receives */
	bool skip_cqe;  /* sends post completions only on failure */
};

enum { BGID = 1 };

static int ur_init(struct ub_thread *t)
{
	struct ur *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	unsigned entries = 64;
	while (entries < (unsigned)t->n_conns * 3 && entries < 32768)
		entries *= 2;
	struct io_uring_params p;
	const unsigned tries[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	                          IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL, 0};
	const char *names[] = {"single_issuer defer_taskrun", "coop_taskrun", "plain"};
	int rc = -ENOSYS;
	for (int i = 0; i < 3; i++) {
		memset(&p, 0, sizeof(p));
		p.flags = tries[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = entries * 2;
		rc = io_uring_queue_init_params(entries, &u->ring, &p);
		if (rc == 0) {
			snprintf(t->features, sizeof(t->features), "%s", names[i]);
			break;
		}
	}
	if (rc) {
		free(u);
		return rc;
	}
	/* a provided-buffer ring for multishot receives: two buffers per connection */
	u->n_bufs = 16;
	while (u->n_bufs < (unsigned)t->n_conns * 2 && u->n_bufs < 32768)
		u->n_bufs *= 2;
	u->br_mem = malloc((size_t)u->n_bufs * BR_BYTES);
	if (u->br_mem && posix_memalign((void **)&u->br, 4096, u->n_bufs * sizeof(struct io_uring_buf)) == 0) {
		memset(u->br, 0, u->n_bufs * sizeof(struct io_uring_buf));
		struct io_uring_buf_reg reg;
		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (uint64_t)(uintptr_t)u->br;
		reg.ring_entries = u->n_bufs;
		reg.bgid = BGID;
		if (io_uring_register_buf_ring(&u->ring, &reg, 0)) {
			free(u->br);
			u->br = NULL;
		}
	}
	if (u->br) {
		io_uring_buf_ring_init(u->br);
		for (unsigned i = 0; i < u->n_bufs; i++)
			io_uring_buf_ring_add(u->br, u->br_mem + (size_t)i * BR_BYTES, BR_BYTES, (unsigned short)i,
			                      io_uring_buf_ring_mask(u->n_bufs), (int)i);
		io_uring_buf_ring_advance(u->br, (int)u->n_bufs);
		u->multishot = true;
		/* Sends without completions: CQE_SKIP_SUCCESS (5.17) with
		 * MSG_WAITALL, which io_uring honours for sends by retrying short
		 * ones (5.18). Buffer rings (5.19) tell that the kernel has both. */
		u->skip_cqe = p.features & IORING_FEAT_CQE_SKIP;
		if (u->skip_cqe)
			strncat(t->features, " send_cqe_skip", sizeof(t->features) - strlen(t->features) - 1);
		strncat(t->features, " multishot_recv buf_ring", sizeof(t->features) - strlen(t->features) - 1);
	} else {
		free(u->br_mem);
		u->br_mem = NULL;
	}
	t->be = u;
	return 0;
}

static void ur_fini(struct ub_thread *t)
{
	struct ur *u = t->be;
	if (!u)
		return;
	if (u->br)
		io_uring_unregister_buf_ring(&u->ring, BGID);
	io_uring_queue_exit(&u->ring);
	free(u->br);
	free(u->br_mem);
	free(u);
	t->be = NULL;
}

static struct io_uring_sqe *sqe_get(struct ur *u)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	while (!sqe) {
		io_uring_submit(&u->ring);
		sqe = io_uring_get_sqe(&u->ring);
	}
	return sqe;
}

static uint64_t tag(struct ub_conn *c, int op)
{
	return (uint64_t)c->idx << 40 | (uint64_t)c->gen << 8 | (uint64_t)op;
}

static int ur_connect(struct ub_conn *c)
{
	struct ur *u = c->t->be;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&c->t->o->targets[c->target].addr,
	                      sizeof(c->t->o->targets[c->target].addr));
	io_uring_sqe_set_data64(sqe, tag(c, OP_CONNECT));
	return -EINPROGRESS;
}

static long ur_send(struct ub_conn *c, const char *p, size_t n)
{
	struct ur *u = c->t->be;
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL | (u->skip_cqe ? MSG_WAITALL : 0));
	io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
	if (u->skip_cqe) {
		/* MSG_WAITALL: the kernel retries short sends itself, so success
		 * means every byte went out and needs no completion; a failure
		 * still posts one (ub_on_sent with the error) */
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		return (long)n;
	}
	return -EINPROGRESS;
}

static void ur_recv(struct ub_conn *c)
{
	if (c->recv_armed)
		return;
	struct ur *u = c->t->be;
	struct io_uring_sqe *sqe = sqe_get(u);
	if (u->br && u->multishot) {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = BGID;
	} else {
		io_uring_prep_recv(sqe, c->fd, c->rbuf, sizeof(c->rbuf), 0);
	}
	io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
	c->recv_armed = true;
}

static void ur_close(struct ub_conn *c)
{
	/* shutdown completes the receive still in flight (its completion
	 * carries the old generation and is dropped); close drops our
	 * reference, the ring's goes with the operation */
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
}

/* A multishot receive's completion: hand the bytes over, give the buffer
 * back, re-arm when the kernel ended the multishot (no F_MORE) but the
 * connection lives on. */
static void on_recv_multishot(struct ub_thread *t, struct ub_conn *c, struct io_uring_cqe *cqe)
{
	struct ur *u = t->be;
	bool more = cqe->flags & IORING_CQE_F_MORE;
	uint32_t gen = c->gen;
	if (!more)
		c->recv_armed = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		char *buf = u->br_mem + (size_t)bid * BR_BYTES;
		if (cqe->res > 0 && c->gen == gen)
			ub_on_data(c, buf, cqe->res);
		io_uring_buf_ring_add(u->br, buf, BR_BYTES, (unsigned short)bid, io_uring_buf_ring_mask(u->n_bufs), 0);
		io_uring_buf_ring_advance(u->br, 1);
		if (cqe->res > 0) {
			if (!more && c->gen == gen && c->fd >= 0)
				ur_recv(c);
			return;
		}
	}
	if (cqe->res == -ENOBUFS || cqe->res == -EAGAIN || cqe->res == -EINTR) {
		if (c->gen == gen && c->fd >= 0 && !c->recv_armed)
			ur_recv(c);
		return;
	}
	if (cqe->res == -EINVAL && !c->got_bytes) {
		/* multishot receive is Linux 6.0+: single-shot from now on */
		u->multishot = false;
		if (c->gen == gen && c->fd >= 0)
			ur_recv(c);
		return;
	}
	if (cqe->res <= 0 && c->gen == gen)
		ub_on_data(c, NULL, cqe->res);
}

static void on_cqe(struct ub_thread *t, struct io_uring_cqe *cqe)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	int op = (int)(d & 0xff);
	uint32_t gen = (uint32_t)(d >> 8);
	uint64_t idx = d >> 40;
	if (!op || idx >= (uint64_t)t->n_conns)
		return;
	struct ub_conn *c = t->conns[idx];
	if (c->gen != gen) {
		/* a closed socket's: drop it, but a selected buffer goes back */
		struct ur *u = t->be;
		if (op == OP_RECV && u->br && (cqe->flags & IORING_CQE_F_BUFFER)) {
			unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
			io_uring_buf_ring_add(u->br, u->br_mem + (size_t)bid * BR_BYTES, BR_BYTES, (unsigned short)bid,
			                      io_uring_buf_ring_mask(u->n_bufs), 0);
			io_uring_buf_ring_advance(u->br, 1);
		}
		return;
	}
	switch (op) {
	case OP_CONNECT:
		ub_on_connected(c, cqe->res < 0 ? -cqe->res : 0);
		break;
	case OP_SEND:
		ub_on_sent(c, cqe->res);
		break;
	case OP_RECV:
		if (((struct ur *)t->be)->br &&
		    (((struct ur *)t->be)->multishot || (cqe->flags & IORING_CQE_F_BUFFER))) {
			on_recv_multishot(t, c, cqe);
			break;
		}
		c->recv_armed = false;
		if (cqe->res == -EAGAIN || cqe->res == -EINTR) {
			if (c->busy)
				ur_recv(c);
			break;
		}
		ub_on_data(c, c->rbuf, cqe->res);
		break;
	}
}

static int ur_wait(struct ub_thread *t, uint64_t timeout_ns)
{
	struct ur *u = t->be;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {.tv_sec = (long long)(timeout_ns / 1000000000ull),
	                               .tv_nsec = (long long)(timeout_ns % 1000000000ull)};
	int rc = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
	if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
		return rc;
	/* handlers may queue new operations; they go out with the next wait */
	unsigned head, n = 0;
	io_uring_for_each_cqe(&u->ring, head, cqe)
	{
		on_cqe(t, cqe);
		n++;
	}
	io_uring_cq_advance(&u->ring, n);
	return 0;
}

const struct ub_loop_ops ub_uring_ops = {
    .name = "io_uring",
    .init = ur_init,
    .fini = ur_fini,
    .connect = ur_connect,
    .send = ur_send,
    .recv = ur_recv,
    .close = ur_close,
    .wait = ur_wait,
};
