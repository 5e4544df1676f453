/*
 * conn.c: the HTTP side of a connection and the event loop's turn, shared
 * by both backends.
 *
 * A turn: backend poll (reads, sends, accepts, wake) -> timers -> ready
 * list (on_abort for failed connections, parsing of requests that were
 * waiting behind a response) -> flush list (the backend starts sends, so
 * everything a turn produced goes out in one batch) -> reap (free what the
 * backend released).
 *
 * Input buffer: in[in_off..in_len). The request in progress starts at
 * in_off and its bytes are never moved while the application holds views
 * into them; pipelined bytes that arrive meanwhile are appended behind it.
 * Compaction (moving the unconsumed tail to the front) and growth happen
 * only between requests or before the head is parsed. The buffer is
 * bounded by http_request_max_bytes() plus one read; when it is full
 * behind a request in progress, reading pauses (the kernel's socket
 * buffer and TCP flow control hold the rest).
 *
 * Threading: all of it runs on the loop's thread; see loop_impl.h.
 */
#include "net/loop_impl.h"

#include "alloc/alloc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int64_t net_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- timers: one FIFO list per timeout value, so appending keeps order ---- */

static void timer_del(struct net_conn *c)
{
	if (c->timer == NET_T_NONE)
		return;
	struct net_loop *l = c->loop;
	int t = c->timer;
	if (c->t_prev)
		c->t_prev->t_next = c->t_next;
	else
		l->t_head[t] = c->t_next;
	if (c->t_next)
		c->t_next->t_prev = c->t_prev;
	else
		l->t_tail[t] = c->t_prev;
	c->t_prev = c->t_next = NULL;
	c->timer = NET_T_NONE;
}

static void timer_set(struct net_conn *c, int t)
{
	struct net_loop *l = c->loop;
	timer_del(c);
	c->timer = (int8_t)t;
	c->deadline_ms = l->now_ms + l->t_ms[t];
	c->t_prev = l->t_tail[t];
	c->t_next = NULL;
	if (l->t_tail[t])
		l->t_tail[t]->t_next = c;
	else
		l->t_head[t] = c;
	l->t_tail[t] = c;
}

static void ready_add(struct net_conn *c)
{
	if (c->in_ready)
		return;
	c->in_ready = true;
	c->ready_next = c->loop->ready;
	c->loop->ready = c;
}

static void flush_add(struct net_conn *c)
{
	if (c->in_flush || c->dead)
		return;
	c->in_flush = true;
	c->flush_next = c->loop->flush;
	c->loop->flush = c;
}

/* ---- lifetime ---- */

struct net_conn *conn_accept(struct net_loop *l, int fd)
{
	if (l->n_free == 0 || l->stopping)
		return NULL;
	struct net_conn *c = alloc_zmem(sizeof(*c));
	if (!c)
		return NULL;
	uint32_t slot = l->free_slots[--l->n_free];
	c->loop = l;
	c->slot = slot;
	c->fd = fd;
	c->timer = NET_T_NONE;
	c->id = ((uint64_t)++l->seq << 32) | ((uint64_t)l->idx << NET_SLOT_BITS) | slot;
	http_parse_init(&c->parse);
	l->slots[slot] = c;
	l->n_open++;
	l->n_alive++;
	net_stat_add(&l->st.accepted, 1);
	atomic_fetch_add_explicit(&l->st.open_conns, 1, memory_order_relaxed);
	c->tkind = 0;
	timer_set(c, NET_T_REQ); /* the first request's head must arrive in time */
	return c;
}

/* Marks c dead and closes it; on_abort follows from the ready list when
 * the application still holds a request. */
static void conn_fail(struct net_conn *c)
{
	if (c->dead)
		return;
	struct net_loop *l = c->loop;
	c->dead = true;
	timer_del(c);
	l->slots[c->slot] = NULL;
	l->free_slots[l->n_free++] = c->slot;
	l->n_open--;
	net_stat_add(&l->st.closed, 1);
	atomic_fetch_sub_explicit(&l->st.open_conns, 1, memory_order_relaxed);
	if (c->app_busy)
		c->abort_pending = true;
	ready_add(c);
	l->ops->conn_close(c);
}

void conn_release(struct net_conn *c)
{
	if (c->released)
		return;
	c->released = true;
	c->reap_next = c->loop->reap;
	c->loop->reap = c;
}

static void conn_free(struct net_conn *c)
{
	struct net_oseg *s = c->out_head;
	while (s) {
		struct net_oseg *n = s->next;
		net_oseg_done(s);
		s = n;
	}
	c->loop->n_alive--;
	alloc_free(c->in);
	alloc_free(c->scratch);
	alloc_free(c);
}

void net_oseg_done(struct net_oseg *s)
{
	s->owner = NULL;
	s->next = NULL;
	if (s->zc_pending == 0)
		alloc_free(s);
}

/* Closing politely: once the last response is sent, shut down our side
 * and drop input for a while, so that a peer still sending reads the
 * response instead of a reset. A peer that already sent FIN is closed at
 * once. */
static void conn_finish(struct net_conn *c)
{
	if (c->dead || c->app_busy || c->out_bytes || c->lingering)
		return;
	if (!c->close_after && !(c->rd_eof && c->in_len == c->in_off))
		return;
	if (c->rd_eof) {
		conn_fail(c);
		return;
	}
	c->lingering = c->discard = true;
	c->in_off = c->in_len = 0;
	if (c->paused) {
		c->paused = false;
		c->loop->ops->conn_read_pause(c, false);
		if (c->dead)
			return; /* resuming failed and closed it */
	}
	c->loop->ops->conn_shutdown_wr(c);
	timer_set(c, NET_T_LINGER);
}

void net_conn_close_after(struct net_conn *c)
{
	c->close_after = true;
	c->discard = true;
	c->in_off = c->in_len = 0;
	c->need = 0;
}

/* Which deadline applies now (see net_config's timeouts). */
static void conn_arm_timer(struct net_conn *c)
{
	if (c->dead || c->lingering)
		return;
	if (c->app_busy) {
		timer_del(c);
	} else if (c->out_bytes) {
		if (c->timer != NET_T_IDLE)
			timer_set(c, NET_T_IDLE); /* a stalled reader; progress resets it */
	} else if (c->in_len > c->in_off) {
		uint8_t k = c->parse.head_done ? 2 : 1;
		if (c->timer != NET_T_REQ || c->tkind != k) {
			c->tkind = k;
			timer_set(c, NET_T_REQ);
		}
	} else if (c->timer != NET_T_IDLE && !(c->timer == NET_T_REQ && c->tkind == 0)) {
		timer_set(c, NET_T_IDLE); /* keep-alive, waiting for the next request */
	}
}

/* ---- input ---- */

char *conn_rbuf(struct net_conn *c, size_t want, size_t *room)
{
	struct net_loop *l = c->loop;
	if (c->discard) {
		/* dropping input: reuse whatever buffer there is */
		if (c->in_cap < NET_READ_MIN) {
			char *n = alloc_mem(NET_READ_MIN);
			if (!n) {
				*room = 0;
				return NULL;
			}
			alloc_free(c->in);
			c->in = n;
			c->in_cap = NET_READ_MIN;
		}
		c->in_off = c->in_len = 0;
		*room = c->in_cap;
		return c->in;
	}
	if (want < NET_READ_MIN)
		want = NET_READ_MIN;
	if (c->in_cap - c->in_len < want) {
		/* Move the unconsumed bytes to the front unless a request in
		 * progress has views into them. */
		if (c->in_off && !c->app_busy) {
			memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
			c->in_len -= c->in_off;
			c->in_off = 0;
		}
	}
	if (c->in_cap - c->in_len < want && !c->app_busy) {
		size_t ncap = c->in_cap ? c->in_cap : NET_READ_MIN;
		while (ncap - c->in_len < want && ncap < l->in_max)
			ncap *= 2;
		if (ncap > l->in_max)
			ncap = l->in_max;
		if (ncap > c->in_cap) {
			char *n = alloc_mem(ncap);
			if (n) {
				if (c->in_len)
					memcpy(n, c->in, c->in_len);
				alloc_free(c->in);
				c->in = n;
				c->in_cap = ncap;
			}
		}
	}
	*room = c->in_cap - c->in_len;
	return c->in + c->in_len;
}

static void conn_process(struct net_conn *c);

void conn_on_read(struct net_conn *c, size_t n)
{
	struct net_loop *l = c->loop;
	net_stat_add(&l->st.bytes_in, n);
	if (c->dead)
		return;
	if (c->discard) {
		c->in_off = c->in_len = 0;
		return;
	}
	bool was_empty = c->in_len == c->in_off;
	c->in_len += n;
	if (!c->app_busy && !c->out_bytes) {
		if (was_empty) {
			c->tkind = 1;
			timer_set(c, NET_T_REQ); /* the head's deadline runs from its first byte */
		} else if (c->timer == NET_T_REQ && c->tkind == 2) {
			timer_set(c, NET_T_REQ); /* body: an inactivity deadline */
		}
	}
	conn_process(c);
}

void conn_on_eof(struct net_conn *c)
{
	if (c->dead)
		return;
	c->rd_eof = true;
	if (c->lingering) {
		conn_fail(c);
		return;
	}
	/* A FIN cannot be told from a half-close without writing. By default
	 * it is the client going away (on_abort now, not at the next write,
	 * which for a whole response may come minutes later). With
	 * half_close_ok, what is in progress (and complete requests behind it)
	 * is answered; conn_finish closes once nothing is left. */
	if (c->app_busy && !c->loop->s->cfg.half_close_ok) {
		conn_fail(c);
		return;
	}
	if (!c->app_busy)
		conn_process(c);
	else
		conn_finish(c);
}

void conn_on_error(struct net_conn *c, int err)
{
	(void)err;
	conn_fail(c);
}

static int scratch_grow(struct net_conn *c, size_t avail)
{
	size_t max = c->loop->lim.max_body_bytes;
	size_t want = avail < max ? avail : max;
	if (want < 4096)
		want = 4096;
	if (want <= c->scratch_cap)
		return -ENOBUFS;
	char *n = alloc_mem(want);
	if (!n)
		return -ENOMEM;
	if (c->scratch_cap)
		memcpy(n, c->scratch, c->scratch_cap);
	alloc_free(c->scratch);
	c->scratch = n;
	c->scratch_cap = want;
	return 0;
}

/* Parses and hands over requests until one is held by the application. */
static void conn_process(struct net_conn *c)
{
	struct net_loop *l = c->loop;
	struct net_server *s = l->s;
	if (c->in_process)
		return;
	c->in_process = true;
	while (!c->dead && !c->app_busy && !c->close_after && !c->discard) {
		size_t avail = c->in_len - c->in_off;
		if (avail == 0) {
			c->in_off = c->in_len = 0;
			break;
		}
		if (avail < c->need)
			break;
		struct http_parse *p = &c->parse;
		long rc = http_parse_request(c->in + c->in_off, avail, &l->lim, p, c->scratch, c->scratch_cap);
		if (rc == -ENOBUFS && p->status == 500) {
			/* chunked body: scratch grows with the input, up to max_body_bytes */
			if (scratch_grow(c, avail)) {
				conn_fail(c);
				break;
			}
			continue;
		}
		if (rc == -EAGAIN) {
			c->need = p->need;
			if (p->head_done && p->expect_continue && !c->sent_continue) {
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
				c->sent_continue = true;
				if (net_out_append(c, cont, sizeof(cont) - 1))
					break;
			}
			if (c->in_len - c->in_off >= l->in_max) {
				net_resp_error(c, 413); /* unreachable: in_max >= http_request_max_bytes */
			}
			break;
		}
		if (rc < 0) {
			net_stat_add(&l->st.bad_requests, 1);
			net_resp_error(c, p->status ? p->status : 400);
			break;
		}
		/* a complete request */
		c->need = 0;
		c->req_len = (size_t)rc;
		c->app_busy = true;
		c->resp_begun = c->streaming = false;
		c->ctx = NULL;
		c->req_head = p->req.method.n == 4 && memcmp(p->req.method.p, "HEAD", 4) == 0;
		c->req_v10 = p->req.minor_version == 0;
		c->req_keep_alive = p->req.keep_alive && !l->stopping;
		timer_del(c);
		net_stat_add(&l->st.requests, 1);
		s->cb.on_request(c, &p->req, s->cb.user_data);
	}
	c->in_process = false;
	/* After a FIN, a request that is not complete by now never will be. */
	if (c->rd_eof && !c->app_busy && !c->dead)
		c->close_after = true;
	conn_arm_timer(c);
	conn_finish(c);
}

/* The application finished the response of the request in progress. */
void net_conn_response_done(struct net_conn *c)
{
	c->app_busy = false;
	c->ctx = NULL;
	c->in_off += c->req_len;
	c->req_len = 0;
	c->need = 0;
	c->sent_continue = false;
	http_parse_init(&c->parse);
	if (!c->req_keep_alive)
		net_conn_close_after(c);
	if (c->paused) {
		c->paused = false;
		c->loop->ops->conn_read_pause(c, false);
	}
	flush_add(c);
	if (c->in_off == c->in_len) {
		c->in_off = c->in_len = 0;
		/* An idle keep-alive connection should not pin a large buffer. */
		if (c->in_cap > 16384) {
			alloc_free(c->in);
			c->in = NULL;
			c->in_cap = 0;
		}
		if (c->scratch_cap > 16384) {
			alloc_free(c->scratch);
			c->scratch = NULL;
			c->scratch_cap = 0;
		}
	}
	if (c->in_process)
		return;
	ready_add(c); /* pipelined requests are parsed from the loop, never re-entrantly */
}

/* ---- output ---- */

char *net_out_reserve(struct net_conn *c, size_t len)
{
	struct net_oseg *t = c->out_tail;
	if (!t || t->cap - t->len < len || t->zc_pending) {
		size_t cap = len > NET_SEG_BYTES ? len : NET_SEG_BYTES;
		t = alloc_mem(sizeof(*t) + cap);
		if (!t) {
			conn_fail(c); /* the response cannot be made: on_abort follows */
			return NULL;
		}
		t->next = NULL;
		t->owner = c;
		t->len = t->off = 0;
		t->cap = cap;
		t->zc_pending = 0;
		if (c->out_tail)
			c->out_tail->next = t;
		else
			c->out_head = t;
		c->out_tail = t;
	}
	return t->data + t->len;
}

/* Commits len reserved bytes. */
void net_out_commit(struct net_conn *c, size_t len)
{
	c->out_tail->len += len;
	c->out_bytes += len;
	flush_add(c);
}

/* After queueing one unit (a whole response, a stream's head, one chunk):
 * drops the connection when what was already queued before it, less what
 * a send in flight holds, is over max_output_bytes, i.e. a slow reader let
 * output pile up. Judged on that backlog, not the total, so one large unit
 * passes, and so does a unit queued while the previous one is on the wire
 * but its completion is not seen yet. Queued bytes stay under
 * max_output_bytes plus one send plus one unit. */
int net_out_check(struct net_conn *c, size_t before)
{
	if (c->dead)
		return -EPIPE;
	size_t backlog = before > c->out_sending ? before - c->out_sending : 0;
	if (backlog > c->loop->s->cfg.max_output_bytes) {
		conn_fail(c);
		return -EPIPE;
	}
	return 0;
}

int net_out_append(struct net_conn *c, const void *data, size_t len)
{
	char *p = net_out_reserve(c, len);
	if (!p)
		return -ENOMEM;
	memcpy(p, data, len);
	net_out_commit(c, len);
	return 0;
}

int conn_out_iov(struct net_conn *c, struct iovec *iov, int max, size_t *bytes)
{
	int n = 0;
	size_t b = 0;
	for (struct net_oseg *s = c->out_head; s && n < max; s = s->next) {
		if (s->len == s->off)
			continue;
		iov[n].iov_base = s->data + s->off;
		iov[n].iov_len = s->len - s->off;
		b += s->len - s->off;
		n++;
	}
	*bytes = b;
	return n;
}

void conn_on_sent(struct net_conn *c, size_t n)
{
	struct net_loop *l = c->loop;
	net_stat_add(&l->st.bytes_out, n);
	c->out_bytes -= n;
	while (n && c->out_head) {
		struct net_oseg *s = c->out_head;
		size_t k = s->len - s->off;
		if (k > n)
			k = n;
		s->off += k;
		n -= k;
		if (s->off == s->len && (s != c->out_tail || s->zc_pending)) {
			c->out_head = s->next;
			if (!c->out_head)
				c->out_tail = NULL;
			net_oseg_done(s);
		}
	}
	if (c->out_bytes == 0 && c->out_head) {
		struct net_oseg *t = c->out_head; /* the only one left: reuse it if small */
		c->out_head = c->out_tail = NULL;
		if (t->cap > NET_SEG_BYTES || t->zc_pending) {
			net_oseg_done(t);
		} else {
			t->off = t->len = 0;
			c->out_head = c->out_tail = t;
		}
	}
	if (c->dead)
		return;
	if (c->out_bytes && !c->app_busy)
		timer_set(c, NET_T_IDLE); /* progress: the stalled-writer deadline restarts */
	else if (!c->out_bytes && c->timer == NET_T_IDLE)
		timer_del(c);
	conn_arm_timer(c);
	conn_finish(c);
}

/* ---- the loop ---- */

void loop_on_wake(struct net_loop *l)
{
	l->wake_seen = true;
}

static void loop_timers(struct net_loop *l)
{
	for (int t = 0; t < NET_T_COUNT; t++) {
		struct net_conn *c;
		while ((c = l->t_head[t]) && c->deadline_ms <= l->now_ms) {
			timer_del(c);
			if (t == NET_T_REQ && c->tkind != 0 && !c->app_busy) {
				/* slow head or body: 408, then close */
				net_stat_add(&l->st.timeouts, 1);
				net_resp_error(c, 408);
				conn_finish(c);
			} else {
				if (t == NET_T_REQ)
					net_stat_add(&l->st.timeouts, 1);
				conn_fail(c);
			}
		}
	}
}

static int loop_timeout(struct net_loop *l)
{
	if (l->ready || l->flush)
		return 0;
	int64_t next = -1;
	for (int t = 0; t < NET_T_COUNT; t++)
		if (l->t_head[t] && (next < 0 || l->t_head[t]->deadline_ms < next))
			next = l->t_head[t]->deadline_ms;
	if (l->stopping && (next < 0 || l->drain_deadline_ms < next))
		next = l->drain_deadline_ms;
	if (next < 0)
		return -1;
	int64_t d = next - l->now_ms;
	return d < 0 ? 0 : d > 60000 ? 60000 : (int)d;
}

static void loop_begin_stop(struct net_loop *l)
{
	struct net_server *s = l->s;
	l->stopping = true;
	l->drain_deadline_ms = l->now_ms + (s->drain_ms > 0 ? s->drain_ms : 0);
	l->ops->stop_accept(l);
	/* Refuse new connections at once rather than leave them in a backlog
	 * nobody accepts from (not when a failed start retries with epoll). */
	if (s->closing)
		shutdown(l->listen_fd, SHUT_RDWR);
	for (uint32_t i = 0; i < (uint32_t)s->cfg.max_conns; i++) {
		struct net_conn *c = l->slots[i];
		if (!c)
			continue;
		c->close_after = true;
		c->req_keep_alive = false;
		if (!c->app_busy && !c->out_bytes)
			conn_fail(c);
	}
}

static void loop_turn_end(struct net_loop *l)
{
	struct net_server *s = l->s;
	if (l->wake_seen) {
		l->wake_seen = false;
		/* cleared before the callback, so a wake during on_wake gives another */
		atomic_store(&l->wake_pending, 0);
		if (s->cb.on_wake)
			s->cb.on_wake(s, l->idx, s->cb.user_data);
	}
	while (l->ready) {
		struct net_conn *c = l->ready;
		l->ready = c->ready_next;
		c->in_ready = false;
		if (c->abort_pending) {
			c->abort_pending = false;
			c->app_busy = false;
			if (s->cb.on_abort)
				s->cb.on_abort(c, c->ctx, s->cb.user_data);
			c->ctx = NULL;
		} else if (!c->dead) {
			conn_process(c);
		}
	}
	while (l->flush) {
		struct net_conn *c = l->flush;
		l->flush = c->flush_next;
		c->in_flush = false;
		if (!c->dead && c->out_bytes)
			l->ops->conn_flush(c);
	}
	struct net_conn *keep = NULL;
	while (l->reap) {
		struct net_conn *c = l->reap;
		l->reap = c->reap_next;
		if (c->in_ready) {
			/* failed during the flush: freed next turn, after its on_abort */
			c->reap_next = keep;
			keep = c;
		} else {
			conn_free(c);
		}
	}
	l->reap = keep;
}

void loop_run(struct net_loop *l)
{
	struct net_server *s = l->s;
	l->now_ms = net_now_ms();
	for (;;) {
		if (!l->stopping && atomic_load(&l->stop_req))
			loop_begin_stop(l);
		if (l->stopping) {
			if (l->n_alive == 0 && !l->ready)
				break;
			/* releases still owed by the kernel: give them a moment, never forever */
			if (l->n_open == 0 && l->now_ms >= l->drain_deadline_ms + 2000)
				break;
			if (l->now_ms >= l->drain_deadline_ms) {
				for (uint32_t i = 0; i < (uint32_t)s->cfg.max_conns; i++)
					if (l->slots[i])
						conn_fail(l->slots[i]);
			}
		}
		if (s->cb.on_turn_end)
			s->cb.on_turn_end(s, l->idx, s->cb.user_data);
		l->ops->poll(l, loop_timeout(l));
		l->now_ms = net_now_ms();
		loop_timers(l);
		loop_turn_end(l);
	}
}
