/*
 * loop_epoll.c: the readiness backend, for kernels or sandboxes without
 * io_uring. Level-triggered epoll: reads go straight into the connection's
 * input buffer (no copy), writes are writev of the output segments, tried
 * at the end of the turn and re-armed with EPOLLOUT only when the socket
 * buffer is full.
 *
 * A connection whose reading is paused (input buffer full behind a request
 * in progress) or that has seen EOF stays registered with no EPOLLIN, so
 * a reset still arrives as EPOLLERR/EPOLLHUP.
 *
 * Threading: one instance per loop thread.
 */
#define _GNU_SOURCE
#include "net/loop_impl.h"

#include "alloc/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define EP_EVENTS 256
#define EP_IOV    16

struct ep {
	int epfd;
	bool accepting;
	int64_t accept_retry_ms; /* listener out of the set until then (out of descriptors), 0: none */
	char tag_listen, tag_wake; /* their addresses mark the two special fds */
	struct epoll_event ev[EP_EVENTS];
};

static int ep_ctl(struct ep *e, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = {.events = events, .data.ptr = ptr};
	return epoll_ctl(e->epfd, op, fd, &ev) ? -errno : 0;
}

static uint32_t conn_events(struct net_conn *c)
{
	uint32_t ev = 0;
	if (!c->paused && !c->rd_eof)
		ev |= EPOLLIN | EPOLLRDHUP;
	if (c->sending)
		ev |= EPOLLOUT;
	return ev;
}

static void ep_update(struct net_conn *c)
{
	struct ep *e = c->loop->be;
	uint32_t ev = conn_events(c);
	if (ev != c->ep_events) {
		c->ep_events = ev;
		ep_ctl(e, EPOLL_CTL_MOD, c->fd, ev, c);
	}
}

static int ep_init(struct net_loop *l, char *err, size_t errlen)
{
	struct ep *e = alloc_zmem(sizeof(*e));
	if (!e) {
		snprintf(err, errlen, "net: out of memory");
		return -ENOMEM;
	}
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		int rc = -errno;
		snprintf(err, errlen, "net: epoll_create1: %s", strerror(errno));
		alloc_free(e);
		return rc;
	}
	if (ep_ctl(e, EPOLL_CTL_ADD, l->listen_fd, EPOLLIN, &e->tag_listen) ||
	    ep_ctl(e, EPOLL_CTL_ADD, l->wake_fd, EPOLLIN, &e->tag_wake)) {
		snprintf(err, errlen, "net: epoll_ctl: %s", strerror(errno));
		close(e->epfd);
		alloc_free(e);
		return -EIO;
	}
	e->accepting = true;
	int fl = fcntl(l->listen_fd, F_GETFL);
	if (fl >= 0)
		fcntl(l->listen_fd, F_SETFL, fl | O_NONBLOCK);
	l->be = e;
	return 0;
}

static void ep_fini(struct net_loop *l)
{
	struct ep *e = l->be;
	close(e->epfd);
	alloc_free(e);
	l->be = NULL;
}

static void ep_accept(struct net_loop *l)
{
	struct ep *e = l->be;
	for (int k = 0; k < 64; k++) {
		int fd = accept4(l->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* the listener stays readable: take it out of the set for a
				 * while rather than wake up for it in a busy loop */
				epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->listen_fd, NULL);
				e->accept_retry_ms = l->now_ms + NET_ACCEPT_RETRY_MS;
			}
			return; /* EAGAIN, or a connection that died in the backlog */
		}
		struct net_conn *c = conn_accept(l, fd);
		if (!c) {
			close(fd); /* over max_conns */
			continue;
		}
		c->ep_events = EPOLLIN | EPOLLRDHUP;
		if (ep_ctl(e, EPOLL_CTL_ADD, fd, c->ep_events, c)) {
			conn_on_error(c, -EIO);
			continue;
		}
	}
}

static void ep_read(struct net_conn *c)
{
	for (int k = 0; k < 16 && !c->dead && !c->paused && !c->rd_eof; k++) {
		size_t room;
		char *p = conn_rbuf(c, 0, &room);
		if (!room) {
			c->paused = true;
			ep_update(c);
			return;
		}
		ssize_t n = recv(c->fd, p, room, 0);
		if (n > 0) {
			conn_on_read(c, (size_t)n);
			if ((size_t)n < room)
				return; /* drained; level-triggered epoll says if more came */
		} else if (n == 0) {
			conn_on_eof(c);
			if (!c->dead)
				ep_update(c); /* EOF stays readable: stop asking */
			return;
		} else {
			if (errno != EAGAIN && errno != EINTR)
				conn_on_error(c, -errno);
			return;
		}
	}
}

static void ep_flush(struct net_conn *c)
{
	struct iovec iov[EP_IOV];
	while (!c->dead && c->out_bytes) {
		size_t bytes;
		int n = conn_out_iov(c, iov, EP_IOV, &bytes);
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN) {
				if (!c->sending) {
					c->sending = true;
					ep_update(c);
				}
				return;
			}
			if (errno == EINTR)
				continue;
			conn_on_error(c, -errno);
			return;
		}
		conn_on_sent(c, (size_t)w);
		if ((size_t)w < bytes) {
			if (!c->sending && !c->dead) {
				c->sending = true;
				ep_update(c);
			}
			return;
		}
	}
	if (c->sending && !c->dead) {
		c->sending = false;
		ep_update(c);
	}
}

static int ep_poll(struct net_loop *l, int timeout_ms)
{
	struct ep *e = l->be;
	if (e->accept_retry_ms) {
		int64_t d = e->accept_retry_ms - l->now_ms;
		if (d <= 0) {
			e->accept_retry_ms = 0;
			if (e->accepting)
				ep_ctl(e, EPOLL_CTL_ADD, l->listen_fd, EPOLLIN, &e->tag_listen);
		} else if (timeout_ms < 0 || d < timeout_ms) {
			timeout_ms = (int)d;
		}
	}
	int n = epoll_wait(e->epfd, e->ev, EP_EVENTS, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	l->now_ms = net_now_ms(); /* deadlines set by these events count from now */
	for (int i = 0; i < n; i++) {
		void *ptr = e->ev[i].data.ptr;
		uint32_t ev = e->ev[i].events;
		if (ptr == &e->tag_listen) {
			if (e->accepting)
				ep_accept(l);
			continue;
		}
		if (ptr == &e->tag_wake) {
			uint64_t v;
			while (read(l->wake_fd, &v, sizeof(v)) > 0)
				;
			loop_on_wake(l);
			continue;
		}
		struct net_conn *c = ptr;
		if (c->dead)
			continue; /* closed earlier in this batch; freed at the end of the turn */
		if (ev & EPOLLERR) {
			int so = 0;
			socklen_t sl = sizeof(so);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so, &sl);
			conn_on_error(c, -(so ? so : ECONNRESET));
			continue;
		}
		if (ev & EPOLLOUT)
			ep_flush(c);
		if (c->dead)
			continue;
		if (ev & (EPOLLIN | EPOLLRDHUP))
			ep_read(c);
		else if ((ev & EPOLLHUP) && !c->dead)
			conn_on_error(c, -ECONNRESET);
	}
	return 0;
}

static void ep_stop_accept(struct net_loop *l)
{
	struct ep *e = l->be;
	if (!e->accepting)
		return;
	e->accepting = false;
	epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->listen_fd, NULL);
}

static void ep_read_pause(struct net_conn *c, bool pause)
{
	(void)pause;
	/* No read here even when resuming: this runs inside net_respond, and
	 * level-triggered epoll reports the waiting bytes next turn. */
	if (!c->dead)
		ep_update(c);
}

static void ep_shutdown_wr(struct net_conn *c)
{
	shutdown(c->fd, SHUT_WR);
}

static void ep_close(struct net_conn *c)
{
	close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	conn_release(c);
}

const struct net_backend_ops net_epoll_ops = {
    .name = "epoll",
    .init = ep_init,
    .fini = ep_fini,
    .poll = ep_poll,
    .stop_accept = ep_stop_accept,
    .conn_flush = ep_flush,
    .conn_read_pause = ep_read_pause,
    .conn_shutdown_wr = ep_shutdown_wr,
    .conn_close = ep_close,
};
