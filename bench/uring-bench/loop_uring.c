/*
 * loop_uring.c: uring-bench's io_uring event loop. One ring per worker
 * thread, created on that thread so SINGLE_ISSUER/DEFER_TASKRUN apply
 * (probed: older kernels get COOP_TASKRUN or a plain ring). Connect, send
 * and receive are ring operations; everything queued during a turn goes to
 * the kernel in the one io_uring_submit_and_wait_timeout call that also
 * waits, so one system call carries every connection's next request.
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

struct ur {
	struct io_uring ring;
};

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
	t->be = u;
	return 0;
}

static void ur_fini(struct ub_thread *t)
{
	struct ur *u = t->be;
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
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
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&c->t->o->addr, sizeof(c->t->o->addr));
	io_uring_sqe_set_data64(sqe, tag(c, OP_CONNECT));
	return -EINPROGRESS;
}

static long ur_send(struct ub_conn *c, const char *p, size_t n)
{
	struct ur *u = c->t->be;
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
	return -EINPROGRESS;
}

static void ur_recv(struct ub_conn *c)
{
	if (c->recv_armed)
		return;
	struct ur *u = c->t->be;
	struct io_uring_sqe *sqe = sqe_get(u);
	io_uring_prep_recv(sqe, c->fd, c->rbuf, sizeof(c->rbuf), 0);
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

static void on_cqe(struct ub_thread *t, struct io_uring_cqe *cqe)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	int op = (int)(d & 0xff);
	uint32_t gen = (uint32_t)(d >> 8);
	uint64_t idx = d >> 40;
	if (!op || idx >= (uint64_t)t->n_conns)
		return;
	struct ub_conn *c = t->conns[idx];
	if (c->gen != gen)
		return;
	switch (op) {
	case OP_CONNECT:
		ub_on_connected(c, cqe->res < 0 ? -cqe->res : 0);
		break;
	case OP_SEND:
		ub_on_sent(c, cqe->res);
		break;
	case OP_RECV:
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
