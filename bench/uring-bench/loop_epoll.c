/*
 * loop_epoll.c: uring-bench's epoll event loop, for where io_uring cannot
 * be set up (seccomp, kernel.io_uring_disabled) or --epoll is asked for.
 * Non-blocking sockets, level-triggered EPOLLIN for as long as the socket
 * is open, EPOLLOUT only while a connect or a partial write is pending.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ub.h"

#define EP_EVENTS 256

struct ep {
	int epfd;
	struct epoll_event ev[EP_EVENTS];
	char buf[65536];
};

static int ep_init(struct ub_thread *t)
{
	struct ep *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		int err = errno;
		free(e);
		return -err;
	}
	t->be = e;
	snprintf(t->features, sizeof(t->features), "level-triggered");
	return 0;
}

static void ep_fini(struct ub_thread *t)
{
	struct ep *e = t->be;
	if (!e)
		return;
	close(e->epfd);
	free(e);
	t->be = NULL;
}

static int ep_ctl(struct ub_conn *c, int op, uint32_t events)
{
	struct ep *e = c->t->be;
	struct epoll_event ev = {.events = events, .data.ptr = c};
	return epoll_ctl(e->epfd, op, c->fd, &ev) ? -errno : 0;
}

static int ep_connect(struct ub_conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	int rc = connect(fd, (const struct sockaddr *)&c->t->o->targets[c->target].addr,
	                 sizeof(c->t->o->targets[c->target].addr));
	if (rc && errno != EINPROGRESS)
		return -errno;
	int erc = ep_ctl(c, EPOLL_CTL_ADD, EPOLLIN | (rc ? EPOLLOUT : 0));
	if (erc)
		return erc;
	return rc ? -EINPROGRESS : 0;
}

static long ep_send(struct ub_conn *c, const char *p, size_t n)
{
	ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
	if (w >= 0) {
		if ((size_t)w < n)
			ep_ctl(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
		return w;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		ep_ctl(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
		return 0;
	}
	return -errno;
}

static void ep_recv(struct ub_conn *c)
{
	(void)c; /* EPOLLIN stays registered */
}

static void ep_close(struct ub_conn *c)
{
	close(c->fd); /* also leaves the epoll set */
}

static int ep_wait(struct ub_thread *t, uint64_t timeout_ns)
{
	struct ep *e = t->be;
	int ms = (int)((timeout_ns + 999999) / 1000000);
	int n = epoll_wait(e->epfd, e->ev, EP_EVENTS, ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct ub_conn *c = e->ev[i].data.ptr;
		uint32_t ev = e->ev[i].events;
		uint32_t gen = c->gen;
		if (c->connecting && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
			int err = 0;
			socklen_t l = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
			if (!err)
				ep_ctl(c, EPOLL_CTL_MOD, EPOLLIN);
			ub_on_connected(c, err);
			continue;
		}
		if (ev & EPOLLOUT) {
			if (c->write_wait)
				ep_ctl(c, EPOLL_CTL_MOD, EPOLLIN);
			ub_on_writable(c);
			if (c->gen != gen)
				continue;
		}
		if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
			/* read until the socket is empty or the connection is gone */
			while (c->gen == gen && c->fd >= 0) {
				ssize_t r = recv(c->fd, e->buf, sizeof(e->buf), 0);
				if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
					break;
				if (r < 0 && errno == EINTR)
					continue;
				ub_on_data(c, e->buf, r < 0 ? -errno : r);
				if (r <= 0)
					break;
			}
		}
	}
	return 0;
}

const struct ub_loop_ops ub_epoll_ops = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .connect = ep_connect,
    .send = ep_send,
    .recv = ep_recv,
    .close = ep_close,
    .wait = ep_wait,
};
