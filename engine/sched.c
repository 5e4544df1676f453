/*
 * sched.c: the dispatcher loop (continuous batching) and the request
 * object's output buffers. See sched.h for the protocol between net threads
 * and dispatchers.
 *
 * Step building, per iteration:
 *   1. every running sequence in decode gets its next token (1 each);
 *   2. sequences still prefilling get chunks of up to prefill_chunk prompt
 *      tokens, in admission order, until step_tokens is used up;
 *   3. KV blocks for those positions are reserved; when the pool is short,
 *      the most recently admitted sequence is preempted: its blocks are
 *      freed and it returns to the front of the waiting queue, to recompute
 *      its prompt and generated tokens later (vLLM's recompute policy).
 * Admission is FCFS: the head of the waiting queue is admitted when a slot
 * is free and the KV pool holds its whole current prompt; nothing overtakes
 * it.
 */
#define _GNU_SOURCE
#include "engine/sched.h"
#include "engine/trace.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc/alloc.h"

/* ---- growable arrays (heap, not arena: they grow token by token) ---- */
static int grow(void **p, int64_t *cap, int64_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	int64_t nc = *cap ? *cap : 16;
	while (nc < need)
		nc *= 2;
	void *np = alloc_array((size_t)nc, size);
	if (!np)
		return -ENOMEM;
	if (*p && *cap)
		memcpy(np, *p, (size_t)*cap * size);
	alloc_free(*p);
	*p = np;
	*cap = nc;
	return 0;
}

static int grow_bytes(char **p, size_t *cap, size_t need)
{
	int64_t c = (int64_t)*cap;
	int rc = grow((void **)p, &c, (int64_t)need, 1);
	*cap = (size_t)c;
	return rc;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct gen_req *gen_req_new(void)
{
	struct gen_req *r = alloc_zmem(sizeof(*r));
	if (!r)
		return NULL;
	alloc_arena_init(&r->arena, 16 * 1024);
	pthread_mutex_init(&r->mu, NULL);
	return r;
}

void gen_req_free(struct gen_req *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	alloc_arena_free(&r->arena);
	alloc_free(r->toks);
	alloc_free(r->text);
	alloc_free(r->pieces);
	alloc_free(r->top);
	alloc_free(r->top_pieces);
	alloc_free(r);
}

/* ---- dispatcher ---- */
#define TOP_PIECE 32 /* bytes kept per top-logprob entry's piece */

struct seq {
	struct gen_req *req;
	struct kv_seq kv;
	int32_t *tokens;      /* prompt, then generated */
	int64_t n_tokens, cap_tokens;
	int64_t n_gen;
	struct sampler smp;
	struct tok_stream ts;
	struct stop_matcher sm;
	double t_admit, t_last;
	bool first_token_done;
	int64_t admit_order;
	int32_t logit_row;    /* row in this step's logits, -1 none */
	uint8_t pick;         /* enum metrics_pick: how this step's row is sampled */
	int step_n;           /* tokens fed this step */
};

struct dispatcher {
	int node;               /* NUMA node */
	int ix;                 /* index among the server's nodes (metrics shard) */
	int cpus[1];
	bool pin;
	kern_backend_t *be;
	const tok_vocab_t *vocab;
	int32_t n_vocab;
	struct sched_config cfg;
	struct metrics *metrics;
	sched_notify_fn notify;
	sched_flush_fn notify_flush;
	void *notify_user;
	bool notified; /* notify called since the last notify_flush */

	struct ring ring;
	struct kv_pool kv;
	struct batch batch;
	float *logits;          /* (max_seqs, n_vocab) */
	int32_t *argmax;        /* (max_seqs) */
	struct kern_top *top;   /* (max_seqs) candidates per row, for backends that pick them */
	int32_t *fetch;         /* (max_seqs) rows the candidates cannot serve, fetched whole */
	float *inv_temp;        /* (max_seqs) each logits row's 1 / temperature, for its candidates */
	bool top_path;          /* pick from candidates when every row allows it */
	bool top_native;        /* ... without the rows ever leaving the backend */
	struct sampler_scratch sw;
	char *piece;            /* tok_stream_bound bytes */
	char *emit;             /* piece + STOP_MAX_LEN */
	size_t piece_cap;

	struct seq **waiting;   /* FCFS, index 0 is the head */
	int n_waiting, cap_waiting;
	struct seq **running;   /* admission order */
	int n_running;
	int64_t admit_counter;

	_Atomic int n_queued;   /* submitted and not finished: admission control */
	_Atomic int stop;
	_Atomic uint64_t steps;
	_Atomic int32_t kv_used;
	pthread_t thread;
};

static void publish(struct dispatcher *d, struct gen_req *r)
{
	/* caller holds r->mu */
	bool notify = !r->notify_pending;
	r->notify_pending = true;
	pthread_mutex_unlock(&r->mu);
	if (notify) {
		d->notify(r, d->notify_user);
		d->notified = true;
	}
}

static void flush_notifications(struct dispatcher *d)
{
	if (!d->notified)
		return;
	d->notified = false;
	if (d->notify_flush)
		d->notify_flush(d->ix, d->notify_user);
}

static void seq_free(struct dispatcher *d, struct seq *s)
{
	kv_seq_free(&d->kv, &s->kv);
	sampler_free(&s->smp);
	alloc_free(s->tokens);
	alloc_free(s);
}

/* Ends a request: flushes held text, records the reason, hands it back. */
static void finish(struct dispatcher *d, struct seq *s, enum api_finish why, int err_status)
{
	struct gen_req *r = s->req;
	size_t n = 0;
	if (why != API_FINISH_ABORT) {
		int k = tok_stream_flush(&s->ts, d->piece, d->piece_cap);
		n = stop_feed(&s->sm, d->piece, k > 0 ? (size_t)k : 0, d->emit);
		n += stop_flush(&s->sm, d->emit + n);
	}
	double t = now_s();
	pthread_mutex_lock(&r->mu);
	/* Text held back (partial characters, possible stop-string prefixes)
	 * goes after the last token's; the net side sends it with the end. */
	if (n && grow_bytes(&r->text, &r->cap_text, r->text_len + n) == 0) {
		memcpy(r->text + r->text_len, d->emit, n);
		r->text_len += n;
	}
	r->finished = true;
	r->finish = why;
	r->prompt_tokens = r->n_prompt;
	r->completion_tokens = s->n_gen;
	if (err_status) {
		r->error.status = err_status;
		r->error.type = err_status == 503 ? "service_unavailable" : "server_error";
		snprintf(r->error.message, sizeof(r->error.message), "%s",
			 err_status == 503 ? "the server is shutting down" : "internal error while generating");
	}
	metrics_observe_e2e(d->metrics, d->ix, t - r->t_arrival);
	metrics_request_finished(d->metrics, d->ix, why);
	atomic_fetch_sub_explicit(&d->n_queued, 1, memory_order_relaxed);
	publish(d, r);
	seq_free(d, s);
}

static int seq_new(struct dispatcher *d, struct gen_req *r, struct seq **out)
{
	struct seq *s = alloc_zmem(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->req = r;
	kv_seq_init(&s->kv);
	int rc = grow((void **)&s->tokens, &s->cap_tokens, r->n_prompt + r->max_tokens, sizeof(int32_t));
	if (!rc)
		rc = sampler_init(&s->smp, &r->api.sp, d->n_vocab);
	if (rc) {
		alloc_free(s->tokens);
		alloc_free(s);
		return rc;
	}
	memcpy(s->tokens, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
	s->n_tokens = r->n_prompt;
	for (int64_t i = 0; i < r->n_prompt; i++)
		sampler_accept(&s->smp, r->prompt[i]);
	tok_stream_init(&s->ts, d->vocab, false);
	stop_init(&s->sm);
	for (int i = 0; i < r->api.n_stop; i++)
		stop_add(&s->sm, r->api.stop[i], r->api.stop_len[i]);
	*out = s;
	return 0;
}

/* Appends a sampled token to the request's output; returns true when the
 * request is done (and says why in *why). */
static bool emit_token(struct dispatcher *d, struct seq *s, int32_t tok, float lp, const struct sampler_logprob *top,
		       int n_top, enum api_finish *why)
{
	struct gen_req *r = s->req;
	s->n_gen++;
	bool eog = !r->api.ignore_eos && tok_is_eog(d->vocab, tok);
	for (int i = 0; i < r->api.n_stop_ids; i++)
		eog |= tok == r->api.stop_ids[i];
	size_t n = 0;
	if (!eog) {
		int k = tok_stream_push(&s->ts, tok, d->piece, d->piece_cap);
		n = stop_feed(&s->sm, d->piece, k > 0 ? (size_t)k : 0, d->emit);
	}
	char pc[64];
	int pl = tok_piece(d->vocab, tok, true, pc, sizeof(pc));
	if (pl < 0 || pl > (int)sizeof(pc))
		pl = 0;
	pthread_mutex_lock(&r->mu);
	int rc = grow((void **)&r->toks, &r->cap_toks, r->n_toks + 1, sizeof(*r->toks));
	rc |= grow_bytes(&r->text, &r->cap_text, r->text_len + n);
	rc |= grow_bytes(&r->pieces, &r->cap_pieces, r->pieces_len + (size_t)pl);
	if (n_top > 0) {
		int64_t c = r->cap_top;
		rc |= grow((void **)&r->top, &r->cap_top, r->n_top + n_top, sizeof(*r->top));
		rc |= grow((void **)&r->top_pieces, &c, r->n_top + n_top, TOP_PIECE);
	}
	if (rc) {
		pthread_mutex_unlock(&r->mu);
		*why = API_FINISH_ABORT;
		return true;
	}
	struct gen_token *gt = &r->toks[r->n_toks++];
	*gt = (struct gen_token){.id = tok, .logprob = lp, .text_off = (uint32_t)r->text_len, .text_len = (uint32_t)n,
				 .piece_off = (uint32_t)r->pieces_len, .piece_len = (uint32_t)pl,
				 .top_off = (int32_t)r->n_top, .n_top = n_top > 0 ? n_top : 0};
	memcpy(r->text + r->text_len, d->emit, n);
	r->text_len += n;
	memcpy(r->pieces + r->pieces_len, pc, (size_t)pl);
	r->pieces_len += (size_t)pl;
	for (int i = 0; i < n_top; i++) {
		r->top[r->n_top] = top[i];
		char *dst = r->top_pieces + (size_t)r->n_top * TOP_PIECE;
		int tl = tok_piece(d->vocab, top[i].token, true, dst + 1, TOP_PIECE - 1);
		dst[0] = (char)(tl > 0 && tl < TOP_PIECE ? tl : 0); /* length prefix */
		r->n_top++;
	}
	if (eog)
		*why = API_FINISH_STOP;
	else if (s->sm.hit)
		*why = API_FINISH_STOP;
	else if (s->n_gen >= r->max_tokens)
		*why = API_FINISH_LENGTH;
	else
		*why = API_FINISH_NONE;
	if (*why == API_FINISH_NONE) {
		/* Only streams want each token; whole responses wait for the end. */
		if (r->api.stream)
			publish(d, r);
		else
			pthread_mutex_unlock(&r->mu);
		return false;
	}
	pthread_mutex_unlock(&r->mu);
	return true;
}

static void remove_running(struct dispatcher *d, int i)
{
	memmove(&d->running[i], &d->running[i + 1], (size_t)(d->n_running - i - 1) * sizeof(*d->running));
	d->n_running--;
}

static void waiting_push_front(struct dispatcher *d, struct seq *s)
{
	memmove(&d->waiting[1], &d->waiting[0], (size_t)d->n_waiting * sizeof(*d->waiting));
	d->waiting[0] = s;
	d->n_waiting++;
}

/* Takes new requests from the ring into the waiting queue. */
static void drain_ring(struct dispatcher *d)
{
	struct gen_req *r;
	while (d->n_waiting < d->cap_waiting && (r = ring_pop(&d->ring))) {
		struct seq *s;
		if (seq_new(d, r, &s)) {
			pthread_mutex_lock(&r->mu);
			r->finished = true;
			r->finish = API_FINISH_ABORT;
			api_error_set(&r->error, 500, "server_error", "", "out of memory");
			atomic_fetch_sub_explicit(&d->n_queued, 1, memory_order_relaxed);
			publish(d, r);
			continue;
		}
		d->waiting[d->n_waiting++] = s;
	}
}

/* Finishes cancelled and expired requests, waiting or running. */
static void reap(struct dispatcher *d, double t)
{
	for (int i = 0; i < d->n_running;) {
		struct seq *s = d->running[i];
		bool expired = s->req->deadline > 0 && t > s->req->deadline;
		if (atomic_load_explicit(&s->req->cancelled, memory_order_acquire) || expired) {
			remove_running(d, i);
			finish(d, s, expired ? API_FINISH_LENGTH : API_FINISH_ABORT, 0);
		} else {
			i++;
		}
	}
	for (int i = 0; i < d->n_waiting;) {
		struct seq *s = d->waiting[i];
		bool expired = s->req->deadline > 0 && t > s->req->deadline;
		if (atomic_load_explicit(&s->req->cancelled, memory_order_acquire) || expired) {
			memmove(&d->waiting[i], &d->waiting[i + 1], (size_t)(d->n_waiting - i - 1) * sizeof(*d->waiting));
			d->n_waiting--;
			finish(d, s, expired ? API_FINISH_LENGTH : API_FINISH_ABORT, 0);
		} else {
			i++;
		}
	}
}

static void admit(struct dispatcher *d, double t)
{
	while (d->n_waiting > 0 && d->n_running < d->cfg.max_seqs) {
		struct seq *s = d->waiting[0];
		int32_t need = kv_blocks_for(&d->kv, s->n_tokens + 1);
		if (need > d->kv.n_free)
			break; /* FCFS: nobody overtakes the head */
		memmove(&d->waiting[0], &d->waiting[1], (size_t)(d->n_waiting - 1) * sizeof(*d->waiting));
		d->n_waiting--;
		if (s->t_admit == 0) {
			s->t_admit = t;
			metrics_observe_queue(d->metrics, d->ix, t - s->req->t_arrival);
			metrics_add_prompt_tokens(d->metrics, d->ix, (uint64_t)s->req->n_prompt);
		}
		s->admit_order = d->admit_counter++;
		d->running[d->n_running++] = s;
	}
}

/* Frees the KV of the newest running sequence and sends it back to wait. */
static void preempt_newest(struct dispatcher *d)
{
	int v = 0;
	for (int i = 1; i < d->n_running; i++)
		if (d->running[i]->admit_order > d->running[v]->admit_order)
			v = i;
	struct seq *s = d->running[v];
	remove_running(d, v);
	kv_seq_release(&d->kv, &s->kv);
	waiting_push_front(d, s);
	metrics_add_preemptions(d->metrics, d->ix, 1);
}

/* Plans and runs one step; returns the number of tokens fed. */
static int step(struct dispatcher *d)
{
	TRACE_PUSH("schedule");
	int budget = d->cfg.step_tokens;
	/* Reserve KV for every planned sequence first; preempt on shortage.
	 * Decode sequences (one pending token) come first. */
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < d->n_running; i++) {
			struct seq *s = d->running[i];
			int64_t pending = s->n_tokens - s->kv.n_pos;
			bool decode = pending == 1 && s->kv.n_pos > 0;
			if ((pass == 0) != decode) {
				if (pass == 0)
					s->step_n = 0;
				continue;
			}
			int n = (int)(pending < d->cfg.prefill_chunk ? pending : d->cfg.prefill_chunk);
			if (n > budget)
				n = budget;
			s->step_n = n;
			budget -= n;
		}
	for (int i = 0; i < d->n_running;) {
		struct seq *s = d->running[i];
		if (s->step_n == 0 || kv_seq_reserve(&d->kv, &s->kv, s->kv.n_pos + s->step_n) == 0) {
			i++;
			continue;
		}
		/* Short of blocks: preempt the newest (maybe s itself) and start
		 * over; reservations already made are kept (reserve is idempotent). */
		preempt_newest(d);
		i = 0;
	}
	batch_clear(&d->batch);
	int n_logits = 0;
	for (int i = 0; i < d->n_running; i++) {
		struct seq *s = d->running[i];
		s->logit_row = -1;
		if (s->step_n == 0)
			continue;
		int si = batch_add_seq(&d->batch, &s->kv);
		for (int j = 0; j < s->step_n; j++) {
			int64_t p = s->kv.n_pos + j;
			bool last = p == s->n_tokens - 1;
			batch_add_token(&d->batch, si, s->tokens[p], (int32_t)p, last);
			if (last)
				s->logit_row = n_logits++;
		}
	}
	TRACE_POP();
	if (d->batch.kb.n_tokens == 0)
		return 0;
	/* What leaves the backend for each row: its argmax alone (greedy, no
	 * penalties, no logprobs), when the backend picks it and every row
	 * needs no more; else, on a backend that picks candidates, those (no
	 * penalties, top_k within them or off), and the rows they cannot serve
	 * fetched whole after the step: those known before it (penalties, a
	 * top_k past the candidates) and those whose truncation or draw reaches
	 * past them (sampler_top_covers); else every row whole. */
	bool argmax_only = kern_backend_argmax_only(d->be);
	int n_pick[METRICS_PICK_COUNT] = {0};
	for (int i = 0; i < d->n_running; i++) {
		struct seq *s = d->running[i];
		if (s->logit_row < 0)
			continue;
		bool am = sampler_is_argmax(&s->smp) && s->req->api.logprobs < 0;
		argmax_only = argmax_only && am;
		s->pick = am ? METRICS_PICK_ARGMAX
			: d->top_path && sampler_top_ok(&s->smp) ? METRICS_PICK_TOP
								 : METRICS_PICK_ROWS;
		d->inv_temp[s->logit_row] = s->smp.p.temperature > 0.0f ? 1.0f / s->smp.p.temperature : 1.0f;
		n_pick[s->pick]++;
	}
	bool from_top = !argmax_only && n_pick[METRICS_PICK_TOP] > 0;
	if (from_top)
		d->batch.kb.inv_temp = d->inv_temp;
	TRACE_PUSHF("forward: %d tokens, %d sequences", d->batch.kb.n_tokens, d->batch.kb.n_seqs);
	int rc = from_top ? kern_backend_step_top(d->be, &d->batch.kb, d->top_native ? NULL : d->logits, d->argmax,
						  d->top)
			  : kern_backend_step_argmax(d->be, &d->batch.kb, argmax_only ? NULL : d->logits, d->argmax);
	int n_fetch = 0;
	for (int i = 0; !rc && from_top && i < d->n_running; i++) {
		struct seq *s = d->running[i];
		if (s->logit_row < 0)
			continue;
		if (s->pick == METRICS_PICK_TOP && !sampler_top_covers(&s->smp, &d->sw, &d->top[s->logit_row])) {
			s->pick = METRICS_PICK_TOP_MISS;
			n_pick[METRICS_PICK_TOP]--;
			n_pick[METRICS_PICK_TOP_MISS]++;
		}
		if (s->pick == METRICS_PICK_ROWS || s->pick == METRICS_PICK_TOP_MISS)
			d->fetch[n_fetch++] = s->logit_row;
	}
	/* whole rows after a step that gave only candidates */
	if (!rc && n_fetch && d->top_native)
		rc = kern_backend_fetch_rows(d->be, d->fetch, n_fetch, d->logits);
	TRACE_POP();
	TRACE_PUSH("sample, detokenize, emit");
	atomic_fetch_add_explicit(&d->steps, 1, memory_order_relaxed);
	metrics_add_step(d->metrics, d->ix, (uint64_t)d->batch.kb.n_tokens);
	if (from_top || argmax_only) {
		for (int k = 0; k < METRICS_PICK_COUNT; k++)
			metrics_add_logit_rows(d->metrics, d->ix, (enum metrics_pick)k, (uint64_t)n_pick[k]);
	} else {
		metrics_add_logit_rows(d->metrics, d->ix, METRICS_PICK_ROWS, (uint64_t)n_logits);
	}
	double t = now_s();
	for (int i = 0; i < d->n_running;) {
		struct seq *s = d->running[i];
		if (s->step_n == 0) {
			i++;
			continue;
		}
		if (rc) {
			remove_running(d, i);
			finish(d, s, API_FINISH_ABORT, 500);
			continue;
		}
		s->kv.n_pos += s->step_n;
		if (s->logit_row < 0) {
			i++;
			continue;
		}
		float lp = 0;
		struct sampler_logprob top[API_MAX_LOGPROBS];
		int n_top = s->req->api.logprobs;
		if (n_top > d->n_vocab)
			n_top = d->n_vocab; /* a toy vocabulary smaller than the logprobs asked for */
		float *row = d->logits + (size_t)s->logit_row * d->n_vocab;
		int32_t tok;
		if (sampler_is_argmax(&s->smp) && n_top < 0)
			tok = d->argmax[s->logit_row];
		else if (from_top && s->pick == METRICS_PICK_TOP)
			tok = sampler_sample_top(&s->smp, &d->sw, &d->top[s->logit_row], n_top >= 0 ? &lp : NULL, top,
						 n_top);
		else
			tok = sampler_sample(&s->smp, &d->sw, row, n_top >= 0 ? &lp : NULL, top, n_top);
		if (tok < 0) { /* cannot happen: sampler_top_covers held for this row; kept as a guard */
			remove_running(d, i);
			finish(d, s, API_FINISH_ABORT, 500);
			continue;
		}
		sampler_accept(&s->smp, tok);
		s->tokens[s->n_tokens++] = tok;
		if (!s->first_token_done) {
			s->first_token_done = true;
			metrics_observe_ttft(d->metrics, d->ix, t - s->req->t_arrival);
		} else {
			metrics_observe_itl(d->metrics, d->ix, t - s->t_last);
		}
		metrics_add_generation_tokens(d->metrics, d->ix, 1);
		s->t_last = t;
		enum api_finish why;
		if (emit_token(d, s, tok, lp, top, n_top, &why) ||
		    s->n_tokens >= d->cfg.ctx /* cannot happen: checked at submit; kept as a guard */) {
			remove_running(d, i);
			finish(d, s, why == API_FINISH_NONE ? API_FINISH_LENGTH : why, 0);
			continue;
		}
		i++;
	}
	TRACE_POP();
	return d->batch.kb.n_tokens;
}

static void *dispatcher_main(void *arg)
{
	struct dispatcher *d = arg;
	char name[16];
	snprintf(name, sizeof(name), "locus-disp%d", d->node);
	pthread_setname_np(pthread_self(), name);
	while (!atomic_load_explicit(&d->stop, memory_order_acquire)) {
		drain_ring(d);
		double t = now_s();
		reap(d, t);
		admit(d, t);
		int32_t used = d->kv.n_blocks - d->kv.n_free;
		atomic_store_explicit(&d->kv_used, used, memory_order_relaxed);
		metrics_set_requests(d->metrics, d->ix, d->n_running, d->n_waiting + (int64_t)ring_depth(&d->ring));
		metrics_set_kv_blocks(d->metrics, d->ix, used, d->kv.n_blocks);
		if (d->n_running == 0) {
			flush_notifications(d);
			/* Idle: sleep until a push or a kick; wake periodically for deadlines. */
			ring_wait(&d->ring, d->n_waiting ? 10 : 1000);
			continue;
		}
		TRACE_PUSH("step");
		step(d);
		TRACE_PUSH("notify");
		flush_notifications(d);
		TRACE_POP();
		TRACE_POP();
	}
	/* Shutdown: everything still here ends as aborted with 503. */
	drain_ring(d);
	while (d->n_running)
		finish(d, d->running[--d->n_running], API_FINISH_ABORT, 503);
	while (d->n_waiting)
		finish(d, d->waiting[--d->n_waiting], API_FINISH_ABORT, 503);
	flush_notifications(d);
	return NULL;
}

static void dispatcher_free(struct dispatcher *d)
{
	ring_free(&d->ring);
	kv_pool_free(&d->kv);
	batch_free(&d->batch);
	sampler_scratch_free(&d->sw);
	alloc_free(d->logits);
	alloc_free(d->argmax);
	alloc_free(d->top);
	alloc_free(d->fetch);
	alloc_free(d->inv_temp);
	alloc_free(d->piece);
	alloc_free(d->emit);
	alloc_free(d->waiting);
	alloc_free(d->running);
	alloc_free(d);
}

int dispatcher_start(struct dispatcher **out, const struct dispatcher_init *in, char *err, size_t errlen)
{
	*out = NULL;
	struct dispatcher *d = alloc_zmem(sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "dispatcher: out of memory");
		return -ENOMEM;
	}
	d->node = in->node;
	d->ix = in->ix;
	d->pin = in->cpus && in->n_cpus > 0;
	d->cpus[0] = d->pin ? in->cpus[0] : -1;
	d->be = in->be;
	d->vocab = in->vocab;
	d->n_vocab = in->n_vocab;
	d->cfg = in->cfg;
	d->metrics = in->metrics;
	d->notify = in->notify;
	d->notify_flush = in->notify_flush;
	d->notify_user = in->notify_user;
	/* LOCUS_SAMPLE_FROM_TOP=1 takes the candidates path on any backend
	 * (rows computed, candidates picked on the host): the tests check with
	 * it that the path the CUDA backend takes samples as the rows do; =0
	 * takes whole rows on any backend (tests/gpu/run.sh compares the two
	 * on the GPU). */
	const char *ft = getenv("LOCUS_SAMPLE_FROM_TOP");
	d->top_native = kern_backend_top_native(in->be);
	d->top_path = ft && !strcmp(ft, "0") ? false : d->top_native || (ft && !strcmp(ft, "1"));
	/* Everything admitted to the node (n_queued) can end up waiting at once
	 * after preemptions: size the queue for all of it. */
	d->cap_waiting = in->cfg.max_waiting + in->cfg.max_seqs + 1;
	d->piece_cap = tok_stream_bound(in->vocab);
	int rc = ring_init(&d->ring, in->ring_slots, in->node, in->membind);
	if (!rc)
		rc = kv_pool_init(&d->kv, in->n_kv_blocks, in->kv_block_size);
	if (!rc)
		rc = batch_init(&d->batch, in->cfg.step_tokens, in->cfg.max_seqs);
	if (!rc)
		rc = sampler_scratch_init(&d->sw, in->n_vocab);
	d->logits = alloc_array((size_t)in->cfg.max_seqs * (size_t)in->n_vocab, sizeof(float));
	d->argmax = alloc_array((size_t)in->cfg.max_seqs, sizeof(int32_t));
	d->top = alloc_array((size_t)in->cfg.max_seqs, sizeof(struct kern_top));
	d->fetch = alloc_array((size_t)in->cfg.max_seqs, sizeof(int32_t));
	d->inv_temp = alloc_array((size_t)in->cfg.max_seqs, sizeof(float));
	d->piece = alloc_mem(d->piece_cap);
	d->emit = alloc_mem(d->piece_cap + STOP_MAX_LEN);
	d->waiting = alloc_array((size_t)d->cap_waiting, sizeof(*d->waiting));
	d->running = alloc_array((size_t)in->cfg.max_seqs, sizeof(*d->running));
	if (rc || !d->logits || !d->argmax || !d->top || !d->fetch || !d->inv_temp || !d->piece || !d->emit || !d->waiting || !d->running) {
		snprintf(err, errlen, "dispatcher: cannot allocate its ring, KV pool or buffers");
		goto err;
	}
	/* The backend's compute thread 0 is the dispatcher thread: start it on
	 * its CPU (the backend pinned its other workers). */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (d->pin) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(d->cpus[0], &set);
		pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	}
	rc = pthread_create(&d->thread, &attr, dispatcher_main, d);
	pthread_attr_destroy(&attr);
	if (rc) {
		snprintf(err, errlen, "dispatcher: pthread_create: %s", strerror(rc));
		goto err;
	}
	*out = d;
	return 0;
err:
	dispatcher_free(d);
	return -ENOMEM;
}

int dispatcher_submit(struct dispatcher *d, struct gen_req *r, bool wake)
{
	int q = atomic_fetch_add_explicit(&d->n_queued, 1, memory_order_relaxed);
	if (q >= d->cfg.max_waiting + d->cfg.max_seqs) {
		atomic_fetch_sub_explicit(&d->n_queued, 1, memory_order_relaxed);
		return -EBUSY;
	}
	int rc = wake ? ring_push(&d->ring, r) : ring_push_quiet(&d->ring, r);
	if (rc)
		atomic_fetch_sub_explicit(&d->n_queued, 1, memory_order_relaxed);
	return rc;
}

void dispatcher_kick(struct dispatcher *d)
{
	ring_kick(&d->ring);
}

void dispatcher_stop(struct dispatcher *d)
{
	if (!d)
		return;
	atomic_store_explicit(&d->stop, 1, memory_order_release);
	ring_kick(&d->ring);
	pthread_join(d->thread, NULL);
	dispatcher_free(d);
}

int dispatcher_load(struct dispatcher *d)
{
	return atomic_load_explicit(&d->n_queued, memory_order_relaxed);
}

size_t dispatcher_ring_depth(struct dispatcher *d)
{
	return ring_depth(&d->ring);
}

int dispatcher_node(const struct dispatcher *d)
{
	return d->node;
}

int32_t dispatcher_kv_used(struct dispatcher *d)
{
	return atomic_load_explicit(&d->kv_used, memory_order_relaxed);
}

uint64_t dispatcher_steps(struct dispatcher *d)
{
	return atomic_load_explicit(&d->steps, memory_order_relaxed);
}
