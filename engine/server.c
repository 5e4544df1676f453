/*
 * server.c: the serving engine's glue. Net threads (net/) parse HTTP and
 * call on_request; generation requests are decoded (engine/api.c),
 * tokenized and pushed to the least loaded node's dispatcher ring
 * (engine/sched.c); dispatchers publish output into the request and queue
 * it on the owning net thread's outbox, waking that thread (net_wake); the
 * net thread writes SSE chunks or the whole response.
 *
 * Ownership of a gen_req: the net thread until dispatcher_submit, the
 * dispatcher until it marks the request finished, then the net thread,
 * which frees it after writing the end of the response (or at once when
 * the client is gone).
 *
 * Every response written here (whole or streamed, errors, /health and
 * /metrics included) carries "X-Locus-Instance: NAME" ([server] instance,
 * or hostname:port), so a client behind a load balancer can tell which
 * engine answered. Responses the net layer writes itself (malformed HTTP,
 * 413/431 before routing) do not.
 *
 * Threading: outboxes are the only state shared between dispatchers and
 * net threads besides the requests; one mutex each. Everything else here is
 * read-only after start or per net thread (inst_hdr is published once,
 * before or right after the listeners start).
 */
#define _GNU_SOURCE
#include "engine/server.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "alloc/alloc.h"
#include "engine/api.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/metrics.h"
#include "engine/model.h"
#include "engine/sched.h"
#include "engine/tokenizer.h"
#include "kernels/kernels.h"
#include "net/net.h"

enum { STATE_LOADING = 0, STATE_READY = 1, STATE_DRAINING = 2, STATE_FAILED = -1 };

#define NET_WAKE_WORDS 4 /* bits for [server] net_threads <= 256 */

struct outbox {
	pthread_mutex_t mu;
	struct gen_req **items;
	int n, cap;
	struct gen_req **work; /* the net thread's copy, same capacity */
	/* Net thread only: dispatchers given requests this turn and not yet
	 * woken (bit i: s->disp[i]); on_turn_end wakes each once. */
	uint64_t to_kick;
};
_Static_assert(CFG_MAX_NODES <= 64, "outbox.to_kick has one bit per node");
_Static_assert(CFG_MAX_NET_THREADS <= NET_WAKE_WORDS * 64, "net_to_wake has one bit per net thread");

struct server {
	struct engine_config cfg;
	struct plan plan;
	net_server_t *net;
	struct engine_core core; /* model + vocabulary (its backend part is unused) */
	struct model *model;     /* core.model */
	tok_vocab_t *vocab;      /* core.vocab */
	struct chat_tmpl_info chat;
	bool has_chat;
	char chat_err[200];
	int n_disp;
	struct dispatcher *disp[CFG_MAX_NODES];
	kern_backend_t *be[CFG_MAX_NODES];
	struct metrics metrics;
	int n_net;
	struct outbox *outbox;   /* (n_net) */
	/* Per dispatcher (its thread only): net threads notified since the
	 * last notify_flush, one bit each. */
	struct {
		alignas(64) uint64_t m[NET_WAKE_WORDS];
	} net_to_wake[CFG_MAX_NODES];
	struct api_buf *bufs;    /* (n_net) output scratch per net thread */
	_Atomic int state;
	_Atomic int net_stopped;
	/* Dispatchers wake net threads (notify_flush) while server_stop may be
	 * tearing the net server down: a waker counts itself in net_users and
	 * then checks net_wakeable; server_stop clears net_wakeable, then waits
	 * for net_users to drain before net_server_stop frees the loops. Both
	 * sequentially consistent, so one of the two always sees the other. */
	_Atomic int net_wakeable;
	_Atomic int net_users;
	int64_t ctx;
	int64_t created;
	uint64_t id_salt;
	_Atomic uint64_t next_id;
	_Atomic uint32_t rr;
	char inst_buf[CFG_INSTANCE_MAX + 32]; /* "X-Locus-Instance: NAME\r\n" */
	_Atomic(const char *) inst_hdr;       /* inst_buf once it is filled, else NULL */
	pthread_t loader;
	bool loader_started;
	char load_err[512];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- dispatcher -> net ---- */

/* Runs on a dispatcher thread. Once r is in the outbox it belongs to the
 * net thread, which may deliver and free it at once (it can be awake for
 * another reason): r is not touched after the unlock. */
static void notify(struct gen_req *r, void *user)
{
	struct server *s = user;
	if (atomic_load_explicit(&s->net_stopped, memory_order_acquire)) {
		if (r->finished)
			gen_req_free(r); /* nobody is left to answer */
		return;
	}
	const int th = r->net_thread, node = r->node;
	struct outbox *ob = &s->outbox[th];
	pthread_mutex_lock(&ob->mu);
	if (ob->n == ob->cap) {
		int nc = ob->cap ? ob->cap * 2 : 64;
		struct gen_req **ni = alloc_array((size_t)nc, sizeof(*ni));
		struct gen_req **nw = alloc_array((size_t)nc, sizeof(*nw));
		if (!ni || !nw) {
			/* Cannot queue: the request stays pending; the next
			 * notification retries (the dispatcher keeps going). */
			alloc_free(ni);
			alloc_free(nw);
			pthread_mutex_unlock(&ob->mu);
			return;
		}
		if (ob->n)
			memcpy(ni, ob->items, (size_t)ob->n * sizeof(*ni));
		alloc_free(ob->items);
		alloc_free(ob->work);
		ob->items = ni;
		ob->work = nw;
		ob->cap = nc;
	}
	ob->items[ob->n++] = r;
	pthread_mutex_unlock(&ob->mu);
	/* woken in notify_flush, once per step for all the step's requests */
	s->net_to_wake[node].m[th >> 6] |= UINT64_C(1) << (th & 63);
}

/* Runs on dispatcher ix's thread after a step's notifications. */
static void notify_flush(int ix, void *user)
{
	struct server *s = user;
	uint64_t *w = s->net_to_wake[ix].m;
	atomic_fetch_add(&s->net_users, 1);
	const bool alive = atomic_load(&s->net_wakeable);
	for (int k = 0; k < NET_WAKE_WORDS; k++) {
		uint64_t m = w[k];
		w[k] = 0;
		while (m && alive) {
			int b = __builtin_ctzll(m);
			m &= m - 1;
			net_wake(s->net, k * 64 + b);
		}
	}
	atomic_fetch_sub(&s->net_users, 1);
}

/* ---- responses ---- */

/* The response's own header lines (extra: NULL or lines ending in CRLF, a
 * few dozen bytes at most) after X-Locus-Instance, in buf. */
#define HDR_BUF 256
static const char *with_instance(const struct server *s, const char *extra, char *buf)
{
	const char *inst = atomic_load_explicit(&s->inst_hdr, memory_order_acquire);
	if (!inst)
		return extra; /* only a port-0 listener hit before its port was known */
	snprintf(buf, HDR_BUF, "%s%s", inst, extra ? extra : "");
	return buf;
}

/* net_respond / net_stream_begin with the instance header: every response
 * of the application layer goes through these two. */
static void respond(const struct server *s, net_conn_t *c, int status, const char *ctype, const char *extra,
                    const void *body, size_t len)
{
	char buf[HDR_BUF];
	net_respond(c, status, ctype, with_instance(s, extra, buf), body, len);
}

static void stream_begin(const struct server *s, net_conn_t *c)
{
	char buf[HDR_BUF];
	net_stream_begin(c, 200, "text/event-stream", with_instance(s, "Cache-Control: no-cache\r\n", buf));
}

static void respond_buf(const struct server *s, net_conn_t *c, int status, const struct api_buf *b, const char *extra)
{
	if (b->oom)
		respond(s, c, 500, "application/json", NULL, "{\"error\":{\"message\":\"out of memory\"}}", 37);
	else
		respond(s, c, status, "application/json", extra, b->p, b->n);
}

static void respond_error(const struct server *s, net_conn_t *c, struct api_buf *b, const struct api_error *e,
                          const char *extra)
{
	api_buf_reset(b);
	api_write_error(b, e);
	respond_buf(s, c, e->status, b, extra);
}

/* Fills inst_buf and publishes it (port: the port actually bound). */
static void instance_publish(struct server *s, int port)
{
	char name[CFG_INSTANCE_MAX + 1];
	config_instance_name(&s->cfg, port, name, sizeof(name));
	snprintf(s->inst_buf, sizeof(s->inst_buf), "X-Locus-Instance: %s\r\n", name);
	atomic_store_explicit(&s->inst_hdr, s->inst_buf, memory_order_release);
}

static void resp_meta(const struct server *s, const struct gen_req *r, struct api_resp_meta *m)
{
	*m = (struct api_resp_meta){
		.kind = r->api.kind,
		.id = r->id,
		.created = r->created,
		.model = s->plan.model_name,
		.logprobs = r->api.logprobs,
	};
}

/* Fills an api_token from the request's record i (caller holds r->mu or
 * owns a finished request). text/text_len are left to the caller. */
static void token_view(const struct gen_req *r, int64_t i, struct api_token *t, const char **tp,
		       size_t *tpl, int max_top)
{
	const struct gen_token *g = &r->toks[i];
	int n_top = g->n_top < max_top ? g->n_top : max_top;
	*t = (struct api_token){
		.id = g->id,
		.piece = r->pieces + g->piece_off,
		.piece_len = g->piece_len,
		.logprob = g->logprob,
		.top = r->top + g->top_off,
		.top_piece = tp,
		.top_piece_len = tpl,
		.n_top = n_top,
	};
	for (int k = 0; k < n_top; k++) {
		const char *e = r->top_pieces + (size_t)(g->top_off + k) * 32;
		tp[k] = e + 1;
		tpl[k] = (size_t)(unsigned char)e[0];
	}
}

/* Streams the tokens not yet sent (caller holds r->mu). */
static void stream_new(struct server *s, struct gen_req *r, struct api_buf *b)
{
	struct api_resp_meta m;
	resp_meta(s, r, &m);
	const char *tp[API_MAX_LOGPROBS];
	size_t tpl[API_MAX_LOGPROBS];
	for (; r->n_sent < r->n_toks; r->n_sent++) {
		const struct gen_token *g = &r->toks[r->n_sent];
		size_t end = (size_t)g->text_off + g->text_len;
		if (end == r->text_sent && r->api.logprobs < 0)
			continue; /* nothing to show for this token yet */
		struct api_token t;
		token_view(r, r->n_sent, &t, tp, tpl, API_MAX_LOGPROBS);
		t.text = r->text + r->text_sent;
		t.text_len = end - r->text_sent;
		t.text_offset = r->chars_sent;
		api_write_stream_chunk(b, &m, !r->started_chunks, &t, API_FINISH_NONE);
		r->started_chunks = true;
		r->chars_sent += api_utf8_chars(t.text, t.text_len);
		r->text_sent = end;
	}
}

/* The end of a finished request (no lock needed: the dispatcher is done). */
static void write_end(struct server *s, net_conn_t *c, struct gen_req *r, struct api_buf *b)
{
	struct api_resp_meta m;
	resp_meta(s, r, &m);
	struct api_usage u = {r->prompt_tokens, r->completion_tokens};
	if (!r->api.stream) {
		if (r->error.status) {
			respond_error(s, c, b, &r->error, NULL);
			return;
		}
		api_buf_reset(b);
		struct api_token *toks = NULL;
		const char **tp = NULL;
		size_t *tpl = NULL;
		if (r->api.logprobs >= 0 && r->n_toks) {
			toks = alloc_array((size_t)r->n_toks, sizeof(*toks));
			tp = alloc_array((size_t)r->n_toks * API_MAX_LOGPROBS, sizeof(*tp));
			tpl = alloc_array((size_t)r->n_toks * API_MAX_LOGPROBS, sizeof(*tpl));
			if (toks && tp && tpl)
				for (int64_t i = 0; i < r->n_toks; i++) {
					token_view(r, i, &toks[i], tp + i * API_MAX_LOGPROBS, tpl + i * API_MAX_LOGPROBS,
						   API_MAX_LOGPROBS);
					toks[i].text = r->text + r->toks[i].text_off;
					toks[i].text_len = r->toks[i].text_len;
				}
			else
				b->oom = true;
		}
		api_write_response(b, &m, r->text, r->text_len, toks, toks ? r->n_toks : 0, r->finish, &u);
		alloc_free(toks);
		alloc_free(tp);
		alloc_free(tpl);
		respond_buf(s, c, 200, b, NULL);
		return;
	}
	api_buf_reset(b);
	if (r->error.status && !r->stream_open) {
		respond_error(s, c, b, &r->error, NULL);
		return;
	}
	stream_new(s, r, b);
	if (r->error.status) {
		/* An error after the stream began: an error event, as OpenAI does. */
		api_buf_put(b, "data: ", 6);
		api_write_error(b, &r->error);
		api_buf_put(b, "\n\n", 2);
	} else {
		if (r->text_sent < r->text_len) {
			/* held-back text released at the end */
			struct api_token t = {.id = -1, .text = r->text + r->text_sent,
					      .text_len = r->text_len - r->text_sent};
			api_write_stream_chunk(b, &m, !r->started_chunks, &t, API_FINISH_NONE);
			r->started_chunks = true;
			r->text_sent = r->text_len;
		}
		api_write_stream_chunk(b, &m, !r->started_chunks, NULL, r->finish);
		if (r->api.include_usage)
			api_write_stream_usage(b, &m, &u);
	}
	api_write_stream_done(b);
	if (!r->stream_open) {
		stream_begin(s, c);
		r->stream_open = true;
	}
	if (!b->oom)
		net_stream_write(c, b->p, b->n);
	net_stream_end(c);
}

static void deliver(struct server *s, int th, struct gen_req *r)
{
	struct api_buf *b = &s->bufs[th];
	net_conn_t *c = r->aborted ? NULL : net_conn_find(s->net, th, r->conn_id);
	pthread_mutex_lock(&r->mu);
	r->notify_pending = false;
	bool fin = r->finished;
	api_buf_reset(b);
	if (c && !fin && r->api.stream)
		stream_new(s, r, b);
	pthread_mutex_unlock(&r->mu);
	if (c && b->n && !fin) {
		if (!r->stream_open) {
			stream_begin(s, c);
			r->stream_open = true;
		}
		net_stream_write(c, b->p, b->n);
	}
	if (!fin)
		return;
	if (c) {
		net_conn_set_ctx(c, NULL);
		write_end(s, c, r, b);
	}
	gen_req_free(r);
}

static void on_wake(net_server_t *ns, int th, void *user)
{
	(void)ns;
	struct server *s = user;
	struct outbox *ob = &s->outbox[th];
	pthread_mutex_lock(&ob->mu);
	int n = ob->n;
	struct gen_req **w = ob->work;
	if (n)
		memcpy(w, ob->items, (size_t)n * sizeof(*w));
	ob->n = 0;
	pthread_mutex_unlock(&ob->mu);
	/* work is only reallocated together with items, under mu, and only
	 * grows: the n entries copied stay valid. */
	for (int i = 0; i < n; i++)
		deliver(s, th, w[i]);
}

static void on_turn_end(net_server_t *ns, int th, void *user)
{
	(void)ns;
	struct server *s = user;
	uint64_t m = s->outbox[th].to_kick;
	s->outbox[th].to_kick = 0;
	while (m) {
		int i = __builtin_ctzll(m);
		m &= m - 1;
		dispatcher_kick(s->disp[i]);
	}
}

static void on_abort(net_conn_t *c, void *ctx, void *user)
{
	(void)c;
	struct server *s = user;
	struct gen_req *r = ctx;
	if (!r)
		return;
	r->aborted = true;
	atomic_store_explicit(&r->cancelled, 1, memory_order_release);
	dispatcher_kick(s->disp[r->node]);
}

/* ---- requests ---- */
static bool path_is(const struct http_request *req, const char *p)
{
	size_t n = strlen(p);
	return req->path.n == n && memcmp(req->path.p, p, n) == 0;
}

static bool method_is(const struct http_request *req, const char *m)
{
	size_t n = strlen(m);
	return req->method.n == n && memcmp(req->method.p, m, n) == 0;
}

/* Constant-time comparison of the bearer token with the key. */
static bool authorized(const struct server *s, const struct http_request *req)
{
	if (!s->cfg.api_key[0])
		return true;
	const struct net_str *h = http_header_get(req, "authorization");
	if (!h || h->n < 7 || strncasecmp(h->p, "Bearer ", 7) != 0)
		return false;
	const char *tok = h->p + 7;
	size_t n = h->n - 7, kn = strlen(s->cfg.api_key);
	unsigned diff = (unsigned)(n ^ kn);
	for (size_t i = 0; i < kn; i++)
		diff |= (unsigned)(unsigned char)s->cfg.api_key[i] ^ (unsigned)(unsigned char)(i < n ? tok[i] : 0);
	return diff == 0;
}

static int state(const struct server *s)
{
	return atomic_load_explicit(&s->state, memory_order_acquire);
}

/* Tokenizes text into the request's arena. */
static int64_t tokenize_into(const struct server *s, struct gen_req *r, const char *text, size_t len,
			     const int32_t **out)
{
	int64_t n = tok_encode(s->vocab, text, len, true, true, NULL, 0);
	if (n < 0)
		return n;
	int32_t *ids = alloc_arena_get(&r->arena, (size_t)(n ? n : 1) * sizeof(int32_t), 8);
	if (!ids)
		return -ENOMEM;
	if (n && tok_encode(s->vocab, text, len, true, true, ids, n) != n)
		return -EINVAL;
	*out = ids;
	return n;
}

/* Renders chat messages with the model's template into arena memory. */
static int render_chat(const struct server *s, struct alloc_arena *arena, const struct chat_msg *msgs, int n,
		       bool add_generation_prompt, const char **text, size_t *len, struct api_error *e)
{
	if (!s->has_chat) {
		api_error_set(e, 400, "invalid_request_error", "messages", "%s", s->chat_err);
		return -EINVAL;
	}
	int64_t need = chat_apply(&s->chat, msgs, n, add_generation_prompt, NULL, 0);
	if (need < 0) {
		api_error_set(e, 400, "invalid_request_error", "messages",
			      "the messages cannot be rendered with the model's chat template (roles must "
			      "follow the template's order)");
		return -EINVAL;
	}
	char *buf = alloc_arena_get(arena, (size_t)need + 1, 1);
	if (!buf) {
		api_error_set(e, 500, "server_error", "", "out of memory");
		return -ENOMEM;
	}
	chat_apply(&s->chat, msgs, n, add_generation_prompt, buf, (size_t)need + 1);
	*text = buf;
	*len = (size_t)need;
	return 0;
}

static int build_prompt(struct server *s, struct gen_req *r, struct api_error *e)
{
	const struct api_request *a = &r->api;
	int64_t n;
	if (a->kind == API_CHAT) {
		const char *text;
		size_t len;
		int rc = render_chat(s, &r->arena, a->messages, a->n_messages, true, &text, &len, e);
		if (rc)
			return rc;
		n = tokenize_into(s, r, text, len, &r->prompt);
	} else if (a->prompt_ids) {
		int32_t V = tok_n_vocab(s->vocab);
		for (int64_t i = 0; i < a->n_prompt_ids; i++)
			if (a->prompt_ids[i] < 0 || a->prompt_ids[i] >= V) {
				char p[32];
				snprintf(p, sizeof(p), "prompt[%" PRId64 "]", i);
				api_error_set(e, 400, "invalid_request_error", p, "token id %d is outside the vocabulary (0..%d)",
					      a->prompt_ids[i], V - 1);
				return -EINVAL;
			}
		r->prompt = a->prompt_ids;
		n = a->n_prompt_ids;
	} else {
		n = tokenize_into(s, r, a->prompt, a->prompt_len, &r->prompt);
	}
	if (n < 0) {
		api_error_set(e, n == -ENOMEM ? 500 : 400, n == -ENOMEM ? "server_error" : "invalid_request_error",
			      a->kind == API_CHAT ? "messages" : "prompt", "the prompt cannot be tokenized");
		return (int)n;
	}
	if (n == 0) {
		api_error_set(e, 400, "invalid_request_error", a->kind == API_CHAT ? "messages" : "prompt",
			      "the prompt is empty");
		return -EINVAL;
	}
	r->n_prompt = n;
	int64_t limit = s->cfg.max_tokens_limit > 0 ? s->cfg.max_tokens_limit : s->ctx;
	int64_t want = a->max_tokens < 0 ? s->ctx - n : a->max_tokens;
	if (want > limit) {
		api_error_set(e, 400, "invalid_request_error", "max_tokens",
			      "max_tokens is %" PRId64 " but at most %" PRId64 " is allowed", want, limit);
		return -EINVAL;
	}
	if (n >= s->ctx || n + want > s->ctx) {
		api_error_set(e, 400, "invalid_request_error", a->kind == API_CHAT ? "messages" : "prompt",
			      "This model's maximum context length is %" PRId64 " tokens. However, you requested %" PRId64
			      " tokens (%" PRId64 " in the prompt, %" PRId64 " in the completion).",
			      s->ctx, n + want, n, want);
		e->code = "context_length_exceeded";
		return -EINVAL;
	}
	r->max_tokens = want;
	return 0;
}

/* The least loaded node (requests queued or running), ties broken round robin. */
static int pick_node(struct server *s)
{
	uint32_t start = atomic_fetch_add_explicit(&s->rr, 1, memory_order_relaxed);
	int best = -1, best_load = 0;
	for (int k = 0; k < s->n_disp; k++) {
		int i = (int)((start + (uint32_t)k) % (uint32_t)s->n_disp);
		int l = dispatcher_load(s->disp[i]);
		if (best < 0 || l < best_load) {
			best = i;
			best_load = l;
		}
	}
	return best;
}

static void handle_generate(struct server *s, net_conn_t *c, const struct http_request *req, enum api_kind kind,
			    struct api_buf *b)
{
	struct api_error e = {0};
	struct gen_req *r = gen_req_new();
	if (!r) {
		api_error_set(&e, 500, "server_error", "", "out of memory");
		respond_error(s, c, b, &e, NULL);
		return;
	}
	if (api_parse_request(kind, req->body.p, req->body.n, &r->arena, &r->api, &e))
		goto fail;
	if (r->api.model && strcmp(r->api.model, s->plan.model_name) != 0) {
		api_error_set(&e, 404, "invalid_request_error", "model", "The model `%.64s` does not exist.", r->api.model);
		e.code = "model_not_found";
		goto fail;
	}
	if (build_prompt(s, r, &e))
		goto fail;
	double t = now_s();
	r->t_arrival = t;
	r->deadline = s->cfg.request_timeout_ms > 0 ? t + s->cfg.request_timeout_ms / 1e3 : 0;
	r->net_thread = net_conn_thread(c);
	r->conn_id = net_conn_id(c);
	r->created = (int64_t)time(NULL);
	uint64_t id = atomic_fetch_add_explicit(&s->next_id, 1, memory_order_relaxed);
	snprintf(r->id, sizeof(r->id), "%s-%016" PRIx64, kind == API_CHAT ? "chatcmpl" : "cmpl", id ^ s->id_salt);
	int ix = pick_node(s);
	struct dispatcher *d = s->disp[ix];
	r->node = ix; /* index into s->disp */
	net_conn_set_ctx(c, r);
	/* No wake-up per request: on_turn_end wakes the dispatcher once for all
	 * the requests of this net turn (one context switch per batch where
	 * the two threads share a core, not two per request). */
	int rc = dispatcher_submit(d, r, false);
	if (rc == 0) {
		s->outbox[r->net_thread].to_kick |= UINT64_C(1) << ix;
		metrics_request_submitted(&s->metrics, ix);
	}
	if (rc) {
		net_conn_set_ctx(c, NULL);
		metrics_request_rejected(&s->metrics, ix);
		if (rc == -EBUSY)
			api_error_set(&e, 429, "rate_limit_error", "", "the waiting queue is full; retry later");
		else
			api_error_set(&e, 503, "service_unavailable", "", "the request ring is full; retry later");
		respond_error(s, c, b, &e, "Retry-After: 1\r\n");
		gen_req_free(r);
		return;
	}
	return;
fail:
	respond_error(s, c, b, &e, NULL);
	gen_req_free(r);
}

static void handle_tokenize(struct server *s, net_conn_t *c, const struct http_request *req, bool detok,
			    struct api_buf *b)
{
	struct api_error e = {0};
	struct alloc_arena arena;
	alloc_arena_init(&arena, 16 * 1024);
	struct api_tokenize_request t;
	int rc = detok ? api_parse_detokenize(req->body.p, req->body.n, &arena, &t, &e)
		       : api_parse_tokenize(req->body.p, req->body.n, &arena, &t, &e);
	if (rc)
		goto fail;
	api_buf_reset(b);
	if (detok) {
		int32_t V = tok_n_vocab(s->vocab);
		for (int64_t i = 0; i < t.n_tokens; i++)
			if (t.tokens[i] < 0 || t.tokens[i] >= V) {
				char p[32];
				snprintf(p, sizeof(p), "tokens[%" PRId64 "]", i);
				api_error_set(&e, 400, "invalid_request_error", p, "token id %d is outside the vocabulary",
					      t.tokens[i]);
				goto fail;
			}
		int64_t n = tok_decode(s->vocab, t.tokens, t.n_tokens, false, true, NULL, 0);
		char *text = n >= 0 ? alloc_arena_get(&arena, (size_t)n + 1, 1) : NULL;
		if (!text || tok_decode(s->vocab, t.tokens, t.n_tokens, false, true, text, (size_t)n) != n) {
			api_error_set(&e, 500, "server_error", "", "cannot detokenize");
			goto fail;
		}
		api_write_detokenize(b, text, (size_t)n);
	} else {
		const char *text = t.prompt;
		size_t len = t.prompt_len;
		if (t.messages &&
		    render_chat(s, &arena, t.messages, t.n_messages, t.add_generation_prompt, &text, &len, &e))
			goto fail;
		int64_t n = tok_encode(s->vocab, text, len, t.add_special, true, NULL, 0);
		int32_t *ids = n >= 0 ? alloc_arena_get(&arena, (size_t)(n ? n : 1) * sizeof(int32_t), 8) : NULL;
		if (!ids || (n && tok_encode(s->vocab, text, len, t.add_special, true, ids, n) != n)) {
			api_error_set(&e, 400, "invalid_request_error", "prompt", "cannot tokenize the prompt");
			goto fail;
		}
		api_write_tokenize(b, ids, n, s->ctx);
	}
	respond_buf(s, c, 200, b, NULL);
	alloc_arena_free(&arena);
	return;
fail:
	respond_error(s, c, b, &e, NULL);
	alloc_arena_free(&arena);
}

static void handle_metrics(struct server *s, net_conn_t *c, struct api_buf *b)
{
	for (int i = 0; i < s->n_disp; i++)
		metrics_set_ring_depth(&s->metrics, i, (int64_t)dispatcher_ring_depth(s->disp[i]));
	api_buf_reset(b);
	metrics_write(&s->metrics, b);
	if (b->oom)
		respond(s, c, 500, "text/plain", NULL, "out of memory\n", 14);
	else
		respond(s, c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b->p, b->n);
}

static void on_request(net_conn_t *c, const struct http_request *req, void *user)
{
	struct server *s = user;
	struct api_buf *b = &s->bufs[net_conn_thread(c)];
	struct api_error e = {0};
	bool get = method_is(req, "GET"), post = method_is(req, "POST");
	int st = state(s);

	if (path_is(req, "/health")) {
		if (!get)
			goto not_allowed_get;
		if (st == STATE_READY)
			respond(s, c, 200, "application/json", NULL, "{\"status\":\"ok\"}", 15);
		else
			respond(s, c, 503, "application/json", "Retry-After: 1\r\n",
			        st == STATE_DRAINING ? "{\"status\":\"draining\"}" : "{\"status\":\"loading\"}",
			        st == STATE_DRAINING ? 21 : 20);
		return;
	}
	bool gen = path_is(req, "/v1/completions") || path_is(req, "/v1/chat/completions");
	bool tokn = path_is(req, "/tokenize") || path_is(req, "/detokenize");
	bool known = gen || tokn || path_is(req, "/v1/models") || path_is(req, "/metrics");
	if (!known) {
		api_error_set(&e, 404, "invalid_request_error", "", "no route for %.*s %.*s", (int)(req->method.n > 16 ? 16 : req->method.n),
			      req->method.p, (int)(req->path.n > 128 ? 128 : req->path.n), req->path.p);
		respond_error(s, c, b, &e, NULL);
		return;
	}
	if (!authorized(s, req)) {
		api_error_set(&e, 401, "authentication_error", "", "a valid API key is required (Authorization: Bearer ...)");
		e.code = "invalid_api_key";
		respond_error(s, c, b, &e, "WWW-Authenticate: Bearer\r\n");
		return;
	}
	if ((gen || tokn) && !post) {
		api_error_set(&e, 405, "invalid_request_error", "", "use POST for this endpoint");
		respond_error(s, c, b, &e, "Allow: POST\r\n");
		return;
	}
	if (!gen && !tokn && !get)
		goto not_allowed_get;
	if (path_is(req, "/metrics")) {
		handle_metrics(s, c, b);
		return;
	}
	if (st != STATE_READY) {
		api_error_set(&e, 503, "service_unavailable", "", st == STATE_DRAINING ? "the server is shutting down"
											 : "the model is loading");
		respond_error(s, c, b, &e, "Retry-After: 1\r\n");
		return;
	}
	if (path_is(req, "/v1/models")) {
		api_buf_reset(b);
		api_write_models(b, s->plan.model_name, s->created, s->ctx);
		respond_buf(s, c, 200, b, NULL);
	} else if (gen) {
		handle_generate(s, c, req, path_is(req, "/v1/chat/completions") ? API_CHAT : API_COMPLETION, b);
	} else {
		handle_tokenize(s, c, req, path_is(req, "/detokenize"), b);
	}
	return;
not_allowed_get:
	api_error_set(&e, 405, "invalid_request_error", "", "use GET for this endpoint");
	respond_error(s, c, b, &e, "Allow: GET\r\n");
}

/* ---- start and stop ---- */
static void *loader_main(void *arg)
{
	struct server *s = arg;
	char err[512];
	const struct engine_config *cfg = &s->cfg;
	struct engine_opts eo;
	engine_opts_default(&eo);
	eo.model_path = cfg->model_path;
	int rc = engine_core_load(&s->core, &eo, err, sizeof(err));
	if (rc)
		goto fail;
	s->model = s->core.model;
	s->vocab = s->core.vocab;
	if (cfg->chat_template[0])
		rc = chat_tmpl_by_name(cfg->chat_template, &s->chat);
	else
		rc = chat_tmpl_from_gguf(s->model->gguf, &s->chat, s->chat_err, sizeof(s->chat_err));
	s->has_chat = rc == 0;
	if (!s->has_chat && !s->chat_err[0])
		snprintf(s->chat_err, sizeof(s->chat_err), "the model has no usable chat template");
	const struct kern_hparams *hp = &s->model->w.hp;
	s->ctx = cfg->ctx > 0 && cfg->ctx < hp->n_ctx_train ? cfg->ctx : hp->n_ctx_train;
	if (metrics_init(&s->metrics, cfg->model_name, s->plan.n_nodes)) {
		snprintf(err, sizeof(err), "server: cannot set up metrics");
		goto fail;
	}
	for (int i = 0; i < s->plan.n_nodes; i++) {
		const struct plan_node *pn = &s->plan.nodes[i];
		/* A sequence must fit in its node's pool: cap the context. */
		if (pn->kv_tokens < s->ctx)
			s->ctx = pn->kv_tokens;
		struct kern_backend_config bc = {
			.n_threads = pn->n_threads,
			.cpus = s->plan.pin ? pn->cpus : NULL,
			.n_cpus = s->plan.pin ? pn->n_cpus : 0,
			.numa_node = s->plan.membind == ALLOC_POLICY_OFF ? -1 : pn->node,
			.kv_block_size = cfg->kv_block_size,
			.n_kv_blocks = (int32_t)(pn->kv_tokens / cfg->kv_block_size),
			.max_batch_tokens = cfg->step_tokens,
			.gpu = pn->gpu,
		};
		if (s->plan.backend == CFG_BACKEND_NULL)
			s->be[i] = kern_backend_null_open(&s->model->w, &bc, cfg->null_delay_us, err, sizeof(err));
		else if (s->plan.backend == CFG_BACKEND_CPU)
			s->be[i] = kern_backend_cpu_open(&s->model->w, &bc, err, sizeof(err));
		else
			s->be[i] = kern_backend_cuda_open(&s->model->w, &bc, err, sizeof(err));
		if (!s->be[i])
			goto fail;
		metrics_set_node_id(&s->metrics, i, pn->node);
		struct dispatcher_init di = {
			.node = pn->node,
			.ix = i,
			.cpus = s->plan.pin ? pn->cpus : NULL,
			.n_cpus = s->plan.pin ? pn->n_cpus : 0,
			.be = s->be[i],
			.n_kv_blocks = bc.n_kv_blocks,
			.kv_block_size = cfg->kv_block_size,
			.vocab = s->vocab,
			.n_vocab = hp->n_vocab,
			.cfg = {.max_seqs = cfg->max_seqs, .step_tokens = cfg->step_tokens,
				.prefill_chunk = cfg->prefill_chunk, .ctx = s->ctx, .max_waiting = cfg->max_waiting},
			.ring_slots = (size_t)cfg->ring_slots,
			.membind = s->plan.membind,
			.metrics = &s->metrics,
			.notify = notify,
			.notify_flush = notify_flush,
			.notify_user = s,
		};
		if (dispatcher_start(&s->disp[i], &di, err, sizeof(err)))
			goto fail;
		s->n_disp = i + 1;
	}
	fprintf(stderr, "engine: ready: %s, %d node(s), backend %s, context %" PRId64 ", serving on %s:%d (%s)\n",
		s->plan.model_name, s->n_disp, kern_backend_name(s->be[0]), s->ctx, cfg->host, net_server_port(s->net),
		net_server_backend(s->net));
	atomic_store_explicit(&s->state, STATE_READY, memory_order_release);
	return NULL;
fail:
	snprintf(s->load_err, sizeof(s->load_err), "%s", err);
	atomic_store_explicit(&s->state, STATE_FAILED, memory_order_release);
	return NULL;
}

int server_start(struct server **out, const struct engine_config *cfg, const struct plan *plan, char *err,
		 size_t errlen)
{
	*out = NULL;
	struct server *s = alloc_aligned(sizeof(*s), alignof(struct server)); /* net_to_wake rows: 64 */
	if (!s) {
		snprintf(err, errlen, "server: out of memory");
		return -ENOMEM;
	}
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->plan = *plan;
	s->created = (int64_t)time(NULL);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	s->id_salt = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
	s->n_net = cfg->net_threads;
	s->outbox = alloc_array((size_t)s->n_net, sizeof(*s->outbox));
	s->bufs = alloc_array((size_t)s->n_net, sizeof(*s->bufs));
	if (!s->outbox || !s->bufs) {
		snprintf(err, errlen, "server: out of memory");
		goto err;
	}
	for (int i = 0; i < s->n_net; i++)
		pthread_mutex_init(&s->outbox[i].mu, NULL);

	struct net_config nc;
	net_config_default(&nc);
	nc.host = cfg->host;
	nc.port = cfg->port;
	nc.n_threads = cfg->net_threads;
	nc.cpus = plan->pin && plan->n_net_cpus ? plan->net_cpus : NULL;
	nc.n_cpus = plan->pin ? plan->n_net_cpus : 0;
	nc.max_header_bytes = cfg->max_header_bytes;
	nc.max_body_bytes = cfg->max_body_bytes;
	nc.header_timeout_ms = cfg->header_timeout_ms;
	nc.idle_timeout_ms = cfg->idle_timeout_ms;
	nc.max_conns = cfg->max_conns;
	struct net_callbacks cb = {
		.on_request = on_request,
		.on_abort = on_abort,
		.on_wake = on_wake,
		.on_turn_end = on_turn_end,
		.user_data = s,
	};
	/* The instance name is known before the listeners start unless the
	 * port is 0 (picked at bind): then right after, before anyone can have
	 * learnt the port. */
	if (cfg->port)
		instance_publish(s, cfg->port);
	s->net = net_server_start(&nc, &cb, err, errlen);
	atomic_store(&s->net_wakeable, s->net != NULL);
	if (!s->net)
		goto err;
	if (!cfg->port)
		instance_publish(s, net_server_port(s->net));
	const char *name = s->inst_buf + strlen("X-Locus-Instance: ");
	fprintf(stderr, "engine: instance %.*s (the X-Locus-Instance header)\n", (int)strlen(name) - 2, name);
	fprintf(stderr, "engine: listening on %s:%d, %d net thread(s), %s (%s); loading %s\n", cfg->host,
		net_server_port(s->net), cfg->net_threads, net_server_backend(s->net), net_server_features(s->net),
		cfg->model_path);
	if (pthread_create(&s->loader, NULL, loader_main, s)) {
		snprintf(err, errlen, "server: cannot start the loader thread");
		goto err;
	}
	s->loader_started = true;
	*out = s;
	return 0;
err:
	server_stop(s);
	return -EINVAL;
}

int server_wait_ready(struct server *s, char *err, size_t errlen)
{
	if (s->loader_started) {
		pthread_join(s->loader, NULL);
		s->loader_started = false;
	}
	if (state(s) == STATE_READY)
		return 0;
	snprintf(err, errlen, "%s", s->load_err);
	return -EINVAL;
}

int server_port(const struct server *s)
{
	return net_server_port(s->net);
}

void server_stop(struct server *s)
{
	if (!s)
		return;
	if (s->loader_started)
		pthread_join(s->loader, NULL);
	/* 1. Refuse new generations; 2. wait for the in-flight ones up to the
	 * drain deadline; 3. stop the net threads; 4. stop the dispatchers
	 * (anything left ends as aborted, freed by notify). */
	if (state(s) == STATE_READY)
		atomic_store_explicit(&s->state, STATE_DRAINING, memory_order_release);
	double deadline = now_s() + s->cfg.drain_timeout_ms / 1e3;
	for (;;) {
		int busy = 0;
		for (int i = 0; i < s->n_disp; i++)
			busy += dispatcher_load(s->disp[i]);
		if (!busy || now_s() > deadline)
			break;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	/* No dispatcher may be inside net_wake when the loops are freed. */
	atomic_store(&s->net_wakeable, 0);
	while (atomic_load(&s->net_users))
		sched_yield();
	if (s->net)
		net_server_stop(s->net, 1000);
	atomic_store_explicit(&s->net_stopped, 1, memory_order_release);
	for (int i = 0; i < s->n_disp; i++)
		dispatcher_stop(s->disp[i]);
	/* Requests that finished after the net threads stopped were freed by
	 * notify; ones queued before and never delivered are freed here. */
	for (int i = 0; s->outbox && i < s->n_net; i++) {
		for (int k = 0; k < s->outbox[i].n; k++)
			if (s->outbox[i].items[k]->finished)
				gen_req_free(s->outbox[i].items[k]);
		alloc_free(s->outbox[i].items);
		alloc_free(s->outbox[i].work);
		pthread_mutex_destroy(&s->outbox[i].mu);
	}
	for (int i = 0; i < CFG_MAX_NODES; i++)
		kern_backend_close(s->be[i]);
	for (int i = 0; s->bufs && i < s->n_net; i++)
		api_buf_free(&s->bufs[i]);
	if (s->n_disp)
		metrics_free(&s->metrics);
	engine_core_close(&s->core); /* model and vocabulary */
	alloc_free(s->outbox);
	alloc_free(s->bufs);
	alloc_free(s);
}
