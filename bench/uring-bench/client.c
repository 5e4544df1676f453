/*
 * client.c: uring-bench's worker threads: connections, the closed- and
 * open-loop schedules, response handling and latency recording.
 *
 * Timing rules (what a reported latency means):
 *  - closed loop: from the moment the request is handed to the socket
 *    (including a reconnect it needed) to the last byte of the response;
 *  - open loop: from the request's intended send time on the arrival
 *    schedule, so time spent waiting for a free connection behind a slow
 *    server is counted (no coordinated omission);
 *  - TTFT: from the same start to the first event carrying content;
 *    inter-token latency: the gap between content events, divided evenly
 *    over the tokens the later event carries (its logprobs count, else 1),
 *    recorded once per token; TPOT: (last - first token time) / (tokens - 1)
 *    per request. Event times are the time the bytes were received.
 * Only successful measured requests are recorded; warm-up requests run in
 * a separate phase before the clock starts, on the same connections.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ub.h"

const char *const ub_err_names[UB_E_COUNT] = {"connect", "timeout", "http", "closed", "protocol", "stream"};

#define BODY_MAX (4u << 20)

uint64_t ub_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ub_results_init(struct ub_results *r)
{
	memset(r, 0, offsetof(struct ub_results, latency));
	hist_init(&r->latency);
	hist_init(&r->ttft);
	hist_init(&r->itl);
	hist_init(&r->tpot);
}

void ub_instance_add(struct ub_results *r, const char *name, uint64_t n)
{
	for (int i = 0; i < r->n_instances; i++)
		if (!strcmp(r->instance[i], name)) {
			r->instance_ok[i] += n;
			return;
		}
	if (r->n_instances == UB_MAX_INSTANCES) {
		r->instance_other += n;
		return;
	}
	snprintf(r->instance[r->n_instances], sizeof(r->instance[0]), "%s", name);
	r->instance_ok[r->n_instances++] = n;
}

void ub_results_merge(struct ub_results *d, const struct ub_results *s)
{
	d->ok += s->ok;
	d->errors += s->errors;
	for (int i = 0; i < UB_E_COUNT; i++)
		d->err[i] += s->err[i];
	for (int i = 0; i < 600; i++)
		d->http_status[i] += s->http_status[i];
	d->output_tokens += s->output_tokens;
	d->prompt_tokens += s->prompt_tokens;
	d->bytes_in += s->bytes_in;
	for (int i = 0; i < UB_MAX_TARGETS; i++) {
		d->target_ok[i] += s->target_ok[i];
		d->target_err[i] += s->target_err[i];
	}
	d->instance_other += s->instance_other;
	for (int i = 0; i < s->n_instances; i++)
		ub_instance_add(d, s->instance[i], s->instance_ok[i]);
	hist_merge(&d->latency, &s->latency);
	hist_merge(&d->ttft, &s->ttft);
	hist_merge(&d->itl, &s->itl);
	hist_merge(&d->tpot, &s->tpot);
}

/* ---- random arrivals ---- */

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) /* (0, 1) */
{
	return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_normal(uint64_t *s)
{
	double u = rng_uniform(s), v = rng_uniform(s);
	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Gamma(shape k, scale 1) by Marsaglia and Tsang; k < 1 boosted. */
static double rng_gamma(uint64_t *s, double k)
{
	if (k < 1.0) {
		double u = rng_uniform(s);
		return rng_gamma(s, k + 1.0) * pow(u, 1.0 / k);
	}
	double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
	for (int i = 0; i < 1000; i++) {
		double x = rng_normal(s), v = 1.0 + c * x;
		if (v <= 0)
			continue;
		v = v * v * v;
		double u = rng_uniform(s);
		if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
			return d * v;
	}
	return k; /* not reached in practice; the mean keeps the rate right */
}

/* Inter-arrival time, ns: gamma with mean 1/rate and shape k (k = 1 is
 * exponential, i.e. Poisson arrivals; k < 1 is burstier). */
static uint64_t next_gap_ns(struct ub_thread *t, double rate)
{
	double k = t->o->burstiness > 0 ? t->o->burstiness : 1.0;
	double g = rng_gamma(&t->rng, k) / k; /* mean 1 */
	return (uint64_t)(g / rate * 1e9);
}

/* ---- connections ---- */

/* The request is over (start_request sets up the next one). */
static void conn_reset_request(struct ub_conn *c)
{
	c->busy = false;
	c->req = NULL;
	c->sending = c->write_wait = false;
}

static void conn_close(struct ub_conn *c)
{
	if (c->fd >= 0)
		c->t->ops->close(c);
	c->fd = -1;
	c->gen++;
	c->connected = c->connecting = c->recv_armed = false;
}

static void idle_push(struct ub_conn *c)
{
	c->t->idle[c->t->n_idle++] = c->idx;
}

static void finish(struct ub_conn *c, int err_class, int status)
{
	struct ub_thread *t = c->t;
	struct ub_results *r = &t->res;
	bool measured = c->measured;
	if (err_class < 0) {
		if (measured) {
			r->ok++;
			r->target_ok[c->target]++;
			if (c->resp.instance[0])
				ub_instance_add(r, c->resp.instance, 1);
			uint64_t now = c->now;
			hist_record(&r->latency, now - c->t_start);
			long toks = c->usage_tokens >= 0 ? c->usage_tokens : c->n_tokens;
			r->output_tokens += (uint64_t)(toks > 0 ? toks : 0);
			if (c->prompt_tokens > 0)
				r->prompt_tokens += (uint64_t)c->prompt_tokens;
			if (t->o->stream && c->t_first) {
				hist_record(&r->ttft, c->t_first - c->t_start);
				for (size_t i = 0; i < c->n_gaps; i++)
					hist_record_n(&r->itl, c->gaps[2 * i], c->gaps[2 * i + 1]);
				if (toks > 1)
					hist_record(&r->tpot, (c->t_last - c->t_first) / (uint64_t)(toks - 1));
			}
		}
	} else {
		if (measured) {
			r->errors++;
			r->target_err[c->target]++;
			r->err[err_class]++;
			if (err_class == UB_E_HTTP && status >= 0 && status < 600)
				r->http_status[status]++;
		}
	}
	if (measured)
		atomic_fetch_add_explicit(err_class < 0 ? &t->run->done : &t->run->failed, 1, memory_order_relaxed);
	bool keep = err_class < 0 && !c->resp.close;
	conn_reset_request(c);
	if (!keep)
		conn_close(c);
	t->in_flight--;
	idle_push(c);
}

/* ---- response ---- */

/* One gap (ns) shared by `tokens` tokens, recorded at success. */
static int gaps_push(struct ub_conn *c, uint64_t gap_ns, uint64_t tokens)
{
	if (c->n_gaps == c->gaps_cap) {
		size_t cap = c->gaps_cap ? c->gaps_cap * 2 : 256;
		uint64_t *g = realloc(c->gaps, cap * 2 * sizeof(*g));
		if (!g)
			return -ENOMEM;
		c->gaps = g;
		c->gaps_cap = cap;
	}
	c->gaps[2 * c->n_gaps] = gap_ns;
	c->gaps[2 * c->n_gaps + 1] = tokens;
	c->n_gaps++;
	return 0;
}

static int on_event(void *ud, const char *data, size_t n)
{
	struct ub_conn *c = ud;
	struct oai_event ev;
	oai_parse(data, n, &ev);
	if (ev.error) {
		c->stream_error = true;
		return 0;
	}
	if (ev.usage_completion_tokens >= 0)
		c->usage_tokens = ev.usage_completion_tokens;
	if (ev.usage_prompt_tokens >= 0)
		c->prompt_tokens = ev.usage_prompt_tokens;
	if (!ev.has_content && ev.n_tokens == 0)
		return 0;
	int k = ev.n_tokens > 0 ? ev.n_tokens : 1;
	int rc = 0;
	if (!c->t_first) {
		c->t_first = c->now;
		/* the tokens beyond the first in a first event arrived with no gap */
		if (k > 1)
			rc = gaps_push(c, 0, (uint64_t)(k - 1));
	} else {
		rc = gaps_push(c, (c->now - c->t_last) / (uint64_t)k, (uint64_t)k);
	}
	if (rc)
		return rc;
	c->t_last = c->now;
	c->n_tokens += k;
	return 0;
}

static void on_body(void *ud, const char *p, size_t n)
{
	struct ub_conn *c = ud;
	const struct ub_opts *o = c->t->o;
	if (o->endpoint == UB_EP_GET)
		return;
	if (o->stream && c->resp.status >= 200 && c->resp.status < 300) {
		if (sse_feed(&c->sse, p, n, on_event, c))
			c->stream_error = true;
		return;
	}
	if (c->body_len + n > BODY_MAX) {
		c->stream_error = true;
		return;
	}
	if (c->body_len + n > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : 4096;
		while (cap < c->body_len + n)
			cap *= 2;
		char *b = realloc(c->body, cap);
		if (!b) {
			c->stream_error = true;
			return;
		}
		c->body = b;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, p, n);
	c->body_len += n;
}

static void response_done(struct ub_conn *c)
{
	int st = c->resp.status;
	if (st < 200 || st > 299) {
		finish(c, UB_E_HTTP, st);
		return;
	}
	if (c->t->o->endpoint != UB_EP_GET && !c->t->o->stream) {
		struct oai_event ev;
		oai_parse(c->body, c->body_len, &ev);
		if (ev.error) {
			finish(c, UB_E_PROTOCOL, 0);
			return;
		}
		c->usage_tokens = ev.usage_completion_tokens;
		c->prompt_tokens = ev.usage_prompt_tokens;
	}
	if (c->stream_error) {
		finish(c, UB_E_STREAM, 0);
		return;
	}
	finish(c, -1, 0);
}

void ub_on_data(struct ub_conn *c, const char *p, long n)
{
	if (!c->busy) {
		/* an idle keep-alive connection closed by the server, or junk */
		conn_close(c);
		return;
	}
	c->now = ub_now_ns();
	if (n <= 0) {
		if (n == 0 && c->got_bytes && resp_eof(&c->resp) == 0) {
			c->resp.close = true;
			response_done(c);
		} else {
			finish(c, UB_E_CLOSED, 0);
		}
		return;
	}
	c->got_bytes = true;
	c->t->res.bytes_in += (uint64_t)n;
	long used = resp_feed(&c->resp, p, (size_t)n, on_body, c);
	if (used < 0 || (c->resp.done && used != n)) {
		finish(c, UB_E_PROTOCOL, 0);
		return;
	}
	if (c->resp.done)
		response_done(c);
	else
		c->t->ops->recv(c);
}

/* ---- sending ---- */

static void send_more(struct ub_conn *c)
{
	while (c->req_off < c->req->len) {
		long w = c->t->ops->send(c, c->req->bytes + c->req_off, c->req->len - c->req_off);
		if (w == -EINPROGRESS) {
			c->sending = true;
			return;
		}
		if (w < 0) {
			c->now = ub_now_ns();
			finish(c, UB_E_CLOSED, 0);
			return;
		}
		c->req_off += (size_t)w;
		if (c->req_off < c->req->len) {
			c->write_wait = true; /* ub_on_writable resumes */
			return;
		}
	}
}

void ub_on_sent(struct ub_conn *c, long res)
{
	c->sending = false;
	if (!c->busy)
		return;
	if (res <= 0) {
		c->now = ub_now_ns();
		finish(c, UB_E_CLOSED, 0);
		return;
	}
	c->req_off += (size_t)res;
	send_more(c);
}

void ub_on_writable(struct ub_conn *c)
{
	if (c->busy && c->write_wait) {
		c->write_wait = false;
		send_more(c);
	}
}

static void start_send(struct ub_conn *c)
{
	c->t->ops->recv(c);
	send_more(c);
}

void ub_on_connected(struct ub_conn *c, int err)
{
	c->connecting = false;
	if (err) {
		c->now = ub_now_ns();
		if (c->busy)
			finish(c, UB_E_CONNECT, 0);
		else
			conn_close(c);
		return;
	}
	c->connected = true;
	if (c->busy)
		start_send(c);
}

/* Starts a request on an idle connection; t_start per the timing rules. */
static void start_request(struct ub_thread *t, struct ub_conn *c, uint64_t t_start, bool measured)
{
	c->busy = true;
	c->measured = measured;
	c->req = &t->run->reqs[c->target * t->run->n_reqs + (int)(t->rr++ % (unsigned)t->run->n_reqs)];
	c->req_off = 0;
	c->t_start = t_start;
	c->t_first = c->t_last = 0;
	c->deadline = ub_now_ns() + (uint64_t)(t->o->timeout_s * 1e9);
	c->n_tokens = 0;
	c->usage_tokens = c->prompt_tokens = -1;
	c->stream_error = c->got_bytes = false;
	c->n_gaps = c->body_len = 0;
	resp_init(&c->resp);
	sse_reset(&c->sse); /* keeps its buffers from the connection's last stream */
	t->in_flight++;
	if (c->connected) {
		start_send(c);
		return;
	}
	int rc = t->ops->connect(c);
	if (rc == 0) {
		c->connected = true;
		start_send(c);
	} else if (rc == -EINPROGRESS) {
		c->connecting = true;
	} else {
		c->now = ub_now_ns();
		finish(c, UB_E_CONNECT, 0);
	}
}

static void scan_timeouts(struct ub_thread *t, uint64_t now)
{
	for (int i = 0; i < t->n_conns; i++) {
		struct ub_conn *c = t->conns[i];
		if (c->busy && now >= c->deadline) {
			c->now = now;
			finish(c, UB_E_TIMEOUT, 0);
		}
	}
}

/* Claims the next closed-loop request of the phase; false when none is left. */
static bool claim(struct ub_thread *t)
{
	struct ub_run *run = t->run;
	if (!t->measuring)
		return atomic_fetch_add(&run->warm_issued, 1) < t->o->warmup;
	if (atomic_load_explicit(&run->stop, memory_order_relaxed))
		return false;
	if (t->o->duration_s > 0 && ub_now_ns() >= run->t_begin + (uint64_t)(t->o->duration_s * 1e9))
		return false;
	if (t->o->n < 0)
		return true;
	return atomic_fetch_add(&run->issued, 1) < t->o->n;
}

/* One phase: warm-up (closed loop, not recorded) or the measured one. */
static void run_phase(struct ub_thread *t, bool open_loop)
{
	const struct ub_opts *o = t->o;
	bool more = true;
	uint64_t scan_ns = 10000000; /* timeouts are checked every 10 ms */
	t->next_timeout_scan = ub_now_ns() + scan_ns;
	while (more || t->in_flight) {
		uint64_t now = ub_now_ns();
		if (open_loop) {
			/* arrivals due by now join the FIFO */
			uint64_t end =
			    o->duration_s > 0 ? t->run->t_begin + (uint64_t)(o->duration_s * 1e9) : UINT64_MAX;
			while (t->to_schedule != 0 && t->next_arrival <= now && t->next_arrival < end &&
			       !atomic_load_explicit(&t->run->stop, memory_order_relaxed)) {
				if (t->arr_tail == t->arr_cap) {
					/* compact, or grow (bounded by the schedule: n, or rate * duration) */
					long live = t->arr_tail - t->arr_head;
					if (t->arr_head > 0) {
						memmove(t->arrivals, t->arrivals + t->arr_head,
						        (size_t)live * sizeof(uint64_t));
					} else {
						long cap = t->arr_cap ? t->arr_cap * 2 : 1024;
						uint64_t *a = realloc(t->arrivals, (size_t)cap * sizeof(uint64_t));
						if (!a) {
							fprintf(stderr,
							        "uring-bench: out of memory for the arrival queue\n");
							exit(1);
						}
						t->arrivals = a;
						t->arr_cap = cap;
					}
					t->arr_head = 0;
					t->arr_tail = live;
				}
				t->arrivals[t->arr_tail++] = t->next_arrival;
				t->next_arrival += next_gap_ns(t, o->rate / o->threads);
				if (t->to_schedule > 0)
					t->to_schedule--;
			}
			if ((t->to_schedule == 0 || t->next_arrival >= end ||
			     atomic_load_explicit(&t->run->stop, memory_order_relaxed)) &&
			    t->arr_head == t->arr_tail)
				more = false;
			while (t->n_idle && t->arr_head < t->arr_tail) {
				struct ub_conn *c = t->conns[t->idle[--t->n_idle]];
				start_request(t, c, t->arrivals[t->arr_head++], true);
			}
		} else {
			while (more && t->n_idle) {
				if (!claim(t)) {
					more = false;
					break;
				}
				struct ub_conn *c = t->conns[t->idle[--t->n_idle]];
				start_request(t, c, ub_now_ns(), t->measuring);
			}
		}
		if (!more && !t->in_flight)
			break;
		now = ub_now_ns();
		if (now >= t->next_timeout_scan) {
			scan_timeouts(t, now);
			t->next_timeout_scan = now + scan_ns;
		}
		uint64_t wait = t->next_timeout_scan - now;
		if (open_loop && t->to_schedule != 0 && t->arr_head == t->arr_tail) {
			uint64_t d = t->next_arrival > now ? t->next_arrival - now : 0;
			if (d < wait)
				wait = d;
		}
		if (t->in_flight == 0 && !(open_loop && more))
			wait = 0;
		int rc = t->ops->wait(t, wait);
		if (rc < 0) {
			fprintf(stderr, "uring-bench: event loop failed: %s\n", strerror(-rc));
			exit(1);
		}
	}
}

void *ub_worker(void *arg)
{
	struct ub_thread *t = arg;
	const struct ub_opts *o = t->o;
	if (o->n_cpus > 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(o->cpus[t->idx % o->n_cpus], &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			fprintf(stderr, "uring-bench: thread %d: cannot pin to CPU %d: %s\n", t->idx,
			        o->cpus[t->idx % o->n_cpus], strerror(errno));
	}
	ub_results_init(&t->res);
	t->ops = o->force_epoll ? &ub_epoll_ops : &ub_uring_ops;
	if (t->ops->init(t)) {
		if (t->ops == &ub_uring_ops) {
			t->run->uring_failed = true;
			t->ops = &ub_epoll_ops;
		}
		if (t->ops->init(t)) {
			fprintf(stderr, "uring-bench: thread %d: cannot set up an event loop\n", t->idx);
			exit(1);
		}
	}
	for (int i = 0; i < t->n_conns; i++)
		idle_push(t->conns[i]);
	/* warm-up: closed loop, unrecorded */
	t->measuring = false;
	run_phase(t, false);
	pthread_barrier_wait(&t->run->barrier); /* main sets t_begin */
	pthread_barrier_wait(&t->run->barrier);
	t->measuring = true;
	if (o->rate > 0) {
		t->next_arrival = t->run->t_begin;
		if (o->n >= 0) {
			/* this thread's share of the n arrivals */
			long share = o->n / o->threads + (t->idx < o->n % o->threads ? 1 : 0);
			t->to_schedule = share;
		} else {
			t->to_schedule = -1;
		}
		/* the first arrival is one gap after the start, as in a Poisson process */
		t->next_arrival += next_gap_ns(t, o->rate / o->threads);
	}
	run_phase(t, o->rate > 0);
	t->t_end = ub_now_ns();
	for (int i = 0; i < t->n_conns; i++)
		conn_close(t->conns[i]);
	t->ops->fini(t);
	return NULL;
}
