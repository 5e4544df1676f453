/*
 * generate: one-shot generation from a GGUF model on the CPU backend.
 *
 *   generate --model M.gguf --prompt TEXT -n N [--temp T --top-p P --top-k K
 *            --min-p P --repeat-penalty R --seed S] [--threads N] [--ids]
 *            [--chat [--system TEXT]] [--stop STR]... [--stop-token ID]...
 *            [--ignore-eos] [--logprobs N] [--cpus LIST]
 *   generate --model M.gguf --prompt-ids 1,2,3 --dump-logits OUT.f32 [--ubatch N]
 *
 * Prints the generated text (or token ids with --ids) on stdout as it is
 * produced, and prefill / decode speed on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc/alloc.h"
#include "engine/chat.h"
#include "engine/engine.h"

#define MAX_STOPS STOP_MAX

struct args {
	const char *model, *prompt, *prompt_ids, *dump_logits, *system;
	const char *stops[MAX_STOPS];
	int n_stops;
	int32_t stop_tokens[16];
	int n_stop_tokens;
	int logprobs;     /* -1: off; else top-n per token on stderr */
	bool cuda;        /* --backend cuda */
	bool warmup;
	int gpu;
	int cpus[256];
	int n_cpus;
	int64_t n_predict, ctx;
	int threads, ubatch;
	bool ids, chat, ignore_eos, seed_set, verbose;
	struct sampler_params sp;
};

static void usage(FILE *o)
{
	fprintf(o,
		"usage: generate --model M.gguf (--prompt TEXT | --prompt-ids 1,2,3) [options]\n"
		"  -n, --n-predict N     tokens to generate (default 128; 0 = prompt only)\n"
		"  --temp T              temperature, 0 = greedy (default 0.8)\n"
		"  --top-k K             (default 40, 0 = off)\n"
		"  --top-p P             (default 0.95, 1 = off)\n"
		"  --min-p P             (default 0.05, 0 = off)\n"
		"  --repeat-penalty R    (default 1.0 = off), over the last 64 tokens\n"
		"  --frequency-penalty F, --presence-penalty P  (default 0)\n"
		"  --seed S              sampling seed (default: from the clock, printed)\n"
		"  --threads N           worker threads (default: all allowed CPUs)\n"
		"  --ids                 print token ids instead of text\n"
		"  --chat                wrap the prompt as a user message in the model's chat template\n"
		"  --system TEXT         system message for --chat\n"
		"  --stop STR            stop string (repeatable, up to %d)\n"
		"  --stop-token ID       stop when this token id is sampled (repeatable, up to 16)\n"
		"  --ignore-eos          keep generating past end-of-generation tokens\n"
		"  --logprobs N          print each token's log-probability and the N most likely (0..20) on stderr\n"
		"  --cpus LIST           pin worker i to the i-th CPU of LIST (e.g. 0-3 or 0,2,4,6)\n"
		"  --ctx N               context size (default: prompt + n, at most the model's)\n"
		"  --ubatch N            prompt tokens per step (default 512)\n"
		"  --backend cpu|cuda    where the forward pass runs (default cpu)\n"
		"  --gpu N               CUDA device for --backend cuda (default 0)\n"
		"  --warmup              run the prompt and 2 decode steps once, untimed, before the timed run\n"
		"                        (first-use costs: cuBLAS set-up, kernel loading, CUDA graph capture)\n"
		"  --dump-logits FILE    write f32 logits of every prompt position (n_prompt x n_vocab)\n"
		"  -v, --verbose         model and timing details on stderr\n",
		MAX_STOPS);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

/* "0-3,8,10-11" -> CPU ids; returns the count or -1. */
static int parse_cpus(const char *s, int *out, int max)
{
	int n = 0;
	while (*s) {
		char *end;
		long a = strtol(s, &end, 10), b = a;
		if (end == s || a < 0 || a > 4095)
			return -1;
		if (*end == '-') {
			const char *t = end + 1;
			b = strtol(t, &end, 10);
			if (end == t || b < a || b > 4095)
				return -1;
		}
		for (long c = a; c <= b; c++) {
			if (n == max)
				return -1;
			out[n++] = (int)c;
		}
		if (*end && *end != ',')
			return -1;
		s = *end ? end + 1 : end;
	}
	return n;
}

static int parse_args(int argc, char **argv, struct args *a)
{
	memset(a, 0, sizeof(*a));
	sampler_params_default(&a->sp);
	a->n_predict = 128;
	a->ubatch = 512;
	a->logprobs = -1;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		double v;
#define NEXT()                                                               \
	({                                                                   \
		if (i + 1 >= argc) {                                         \
			fprintf(stderr, "generate: %s needs a value\n", o);  \
			return -1;                                           \
		}                                                            \
		argv[++i];                                                   \
	})
#define NUM(lo, hi)                                                                         \
	({                                                                                  \
		const char *s_ = NEXT();                                                    \
		if (parse_num(s_, (lo), (hi), &v)) {                                        \
			fprintf(stderr, "generate: %s: '%s' is not a number in [%g, %g]\n", o, s_, \
				(double)(lo), (double)(hi));                                \
			return -1;                                                          \
		}                                                                           \
		v;                                                                          \
	})
		if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(o, "-m") || !strcmp(o, "--model"))
			a->model = NEXT();
		else if (!strcmp(o, "-p") || !strcmp(o, "--prompt"))
			a->prompt = NEXT();
		else if (!strcmp(o, "--prompt-ids"))
			a->prompt_ids = NEXT();
		else if (!strcmp(o, "-n") || !strcmp(o, "--n-predict"))
			a->n_predict = (int64_t)NUM(0, 1 << 24);
		else if (!strcmp(o, "--temp"))
			a->sp.temperature = (float)NUM(0, 100);
		else if (!strcmp(o, "--top-k"))
			a->sp.top_k = (int32_t)NUM(0, 1 << 24);
		else if (!strcmp(o, "--top-p"))
			a->sp.top_p = (float)NUM(1e-6, 1);
		else if (!strcmp(o, "--min-p"))
			a->sp.min_p = (float)NUM(0, 1);
		else if (!strcmp(o, "--repeat-penalty"))
			a->sp.repeat_penalty = (float)NUM(1e-3, 100);
		else if (!strcmp(o, "--frequency-penalty"))
			a->sp.freq_penalty = (float)NUM(-2, 2);
		else if (!strcmp(o, "--presence-penalty"))
			a->sp.presence_penalty = (float)NUM(-2, 2);
		else if (!strcmp(o, "--seed")) {
			a->sp.seed = (uint64_t)NUM(0, 18446744073709551615.0);
			a->seed_set = true;
		} else if (!strcmp(o, "-t") || !strcmp(o, "--threads"))
			a->threads = (int)NUM(1, 1024);
		else if (!strcmp(o, "--ids"))
			a->ids = true;
		else if (!strcmp(o, "--chat"))
			a->chat = true;
		else if (!strcmp(o, "--system"))
			a->system = NEXT();
		else if (!strcmp(o, "--stop")) {
			const char *s = NEXT();
			if (a->n_stops == MAX_STOPS || !*s || strlen(s) > STOP_MAX_LEN) {
				fprintf(stderr, "generate: at most %d non-empty stop strings of up to %d bytes\n",
					MAX_STOPS, STOP_MAX_LEN);
				return -1;
			}
			a->stops[a->n_stops++] = s;
		} else if (!strcmp(o, "--stop-token")) {
			if (a->n_stop_tokens == 16) {
				fprintf(stderr, "generate: at most 16 stop tokens\n");
				return -1;
			}
			a->stop_tokens[a->n_stop_tokens++] = (int32_t)NUM(0, INT32_MAX);
		} else if (!strcmp(o, "--ignore-eos"))
			a->ignore_eos = true;
		else if (!strcmp(o, "--logprobs"))
			a->logprobs = (int)NUM(0, 20);
		else if (!strcmp(o, "--cpus")) {
			if ((a->n_cpus = parse_cpus(NEXT(), a->cpus, 256)) < 1) {
				fprintf(stderr, "generate: --cpus: expected a list like 0-3 or 0,2,4\n");
				return -1;
			}
		}
		else if (!strcmp(o, "--ctx"))
			a->ctx = (int64_t)NUM(1, 1 << 24);
		else if (!strcmp(o, "--ubatch"))
			a->ubatch = (int)NUM(1, 65536);
		else if (!strcmp(o, "--backend")) {
			const char *b = NEXT();
			if (strcmp(b, "cpu") && strcmp(b, "cuda")) {
				fprintf(stderr, "generate: --backend: expected cpu or cuda\n");
				return -1;
			}
			a->cuda = !strcmp(b, "cuda");
		} else if (!strcmp(o, "--warmup"))
			a->warmup = true;
		else if (!strcmp(o, "--gpu"))
			a->gpu = (int)NUM(0, 255);
		else if (!strcmp(o, "--dump-logits"))
			a->dump_logits = NEXT();
		else if (!strcmp(o, "-v") || !strcmp(o, "--verbose"))
			a->verbose = true;
		else {
			fprintf(stderr, "generate: unknown option '%s' (see --help)\n", o);
			return -1;
		}
#undef NUM
#undef NEXT
	}
	if (!a->model || (!a->prompt && !a->prompt_ids) || (a->prompt && a->prompt_ids)) {
		fprintf(stderr, "generate: --model and one of --prompt / --prompt-ids are required (see --help)\n");
		return -1;
	}
	if (a->chat && a->prompt_ids) {
		fprintf(stderr, "generate: --chat needs --prompt text\n");
		return -1;
	}
	if (!a->seed_set)
		a->sp.seed = (uint64_t)time(NULL);
	return 0;
}

/* "1,2,3" -> ids; returns count or -1. */
static int64_t parse_ids(const char *s, int32_t **out)
{
	int64_t cap = 16, n = 0;
	int32_t *ids = malloc((size_t)cap * sizeof(*ids));
	if (!ids)
		return -1;
	while (*s) {
		char *end;
		errno = 0;
		long v = strtol(s, &end, 10);
		if (errno || end == s || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
			free(ids);
			return -1;
		}
		if (n == cap) {
			int32_t *nid = realloc(ids, (size_t)(cap *= 2) * sizeof(*ids));
			if (!nid) {
				free(ids);
				return -1;
			}
			ids = nid;
		}
		ids[n++] = (int32_t)v;
		s = *end ? end + 1 : end;
	}
	*out = ids;
	return ids ? n : -1;
}

/* Renders the chat prompt for --chat. Caller frees. */
static char *chat_prompt(const struct engine_core *c, const struct args *a)
{
	struct gguf_str tmpl;
	if (gguf_get_str(c->model->gguf, "tokenizer.chat_template", &tmpl)) {
		fprintf(stderr, "generate: --chat: the model has no tokenizer.chat_template\n");
		return NULL;
	}
	struct chat_tmpl_info info;
	char err[256];
	if (chat_tmpl_detect(tmpl.ptr, tmpl.len, &info, err, sizeof(err))) {
		fprintf(stderr, "generate: --chat: %s\n", err);
		return NULL;
	}
	struct chat_msg msgs[2];
	int n = 0;
	if (a->system)
		msgs[n++] = (struct chat_msg){"system", a->system};
	msgs[n++] = (struct chat_msg){"user", a->prompt};
	int64_t need = chat_apply(&info, msgs, n, true, NULL, 0);
	if (need < 0) {
		fprintf(stderr, "generate: --chat: cannot render the template\n");
		return NULL;
	}
	char *out = malloc((size_t)need + 1);
	if (out)
		chat_apply(&info, msgs, n, true, out, (size_t)need + 1);
	return out;
}

/* Emits a generated token: ids, or text through the detokenizer and the
 * stop strings. Returns true when a stop string ended the output. */
struct out_state {
	struct tok_stream ts;
	struct stop_matcher sm;
	char *piece, *emit;
	size_t piece_cap;
	bool ids;
	int64_t n;
};

/* One stderr line per token: id, piece, log-probability, then the top-n. */
static void print_logprobs(const tok_vocab_t *v, int32_t tok, float lp, const struct sampler_logprob *top, int n)
{
	char piece[64];
	int k = tok_piece(v, tok, true, piece, sizeof(piece) - 1);
	piece[k > 0 && k < (int)sizeof(piece) ? k : 0] = 0;
	for (char *p = piece; *p; p++)
		if ((unsigned char)*p < 32)
			*p = ' ';
	fprintf(stderr, "logprob %d '%s' %.4f", tok, piece, lp);
	for (int i = 0; i < n; i++)
		fprintf(stderr, " %d:%.4f", top[i].token, top[i].logprob);
	fputc('\n', stderr);
}

static bool out_token(struct out_state *os, int32_t tok)
{
	if (os->ids) {
		printf("%s%d", os->n++ ? " " : "", tok);
	} else {
		int k = tok_stream_push(&os->ts, tok, os->piece, os->piece_cap);
		size_t e = stop_feed(&os->sm, os->piece, k > 0 ? (size_t)k : 0, os->emit);
		fwrite(os->emit, 1, e, stdout);
	}
	fflush(stdout);
	return os->sm.hit;
}

static void out_finish(struct out_state *os)
{
	if (!os->ids) {
		int k = tok_stream_flush(&os->ts, os->piece, os->piece_cap);
		size_t e = stop_feed(&os->sm, os->piece, k > 0 ? (size_t)k : 0, os->emit);
		fwrite(os->emit, 1, e, stdout);
		e = stop_flush(&os->sm, os->emit);
		fwrite(os->emit, 1, e, stdout);
	}
	printf("\n");
}

int main(int argc, char **argv)
{
	struct args a;
	if (parse_args(argc, argv, &a))
		return 2;
	char err[512];
	int rc = 1;
	struct engine_opts o;
	engine_opts_default(&o);
	o.model_path = a.model;
	o.n_threads = a.threads ? a.threads : a.n_cpus;
	o.max_batch_tokens = a.ubatch;
	o.cpus = a.n_cpus ? a.cpus : NULL;
	o.n_cpus = a.n_cpus;
	o.cuda = a.cuda;
	o.gpu = a.gpu;

	int32_t *prompt = NULL;
	int64_t n_prompt = 0;
	char *text = NULL;
	struct engine_core c = {0};
	struct sampler smp = {0};
	struct sampler_scratch sw = {0};
	struct out_state os = {.ids = a.ids};
	struct kv_seq seq;
	kv_seq_init(&seq);
	float *logits = NULL, *all = NULL;
	FILE *dump = NULL;

	if (a.n_cpus) {
		/* This thread is compute thread 0: it runs on the list's first CPU. */
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(a.cpus[0], &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			fprintf(stderr, "generate: cannot pin to CPU %d: %s\n", a.cpus[0], strerror(errno));
	}
	if (engine_core_load(&c, &o, err, sizeof(err))) {
		fprintf(stderr, "generate: %s\n", err);
		return 1;
	}
	const int32_t V = c.model->w.hp.n_vocab;
	if (a.prompt_ids) {
		n_prompt = parse_ids(a.prompt_ids, &prompt);
		if (n_prompt < 1) {
			fprintf(stderr, "generate: --prompt-ids: expected a comma-separated list of token ids\n");
			goto out;
		}
	} else {
		const char *p = a.prompt;
		if (a.chat) {
			text = chat_prompt(&c, &a);
			if (!text)
				goto out;
			p = text;
		}
		size_t len = strlen(p);
		n_prompt = tok_encode(c.vocab, p, len, true, a.chat, NULL, 0);
		prompt = malloc((size_t)(n_prompt > 0 ? n_prompt : 1) * sizeof(*prompt));
		if (n_prompt < 0 || !prompt || tok_encode(c.vocab, p, len, true, a.chat, prompt, n_prompt) != n_prompt) {
			fprintf(stderr, "generate: cannot tokenize the prompt\n");
			goto out;
		}
		if (n_prompt == 0) {
			fprintf(stderr, "generate: the prompt is empty after tokenization\n");
			goto out;
		}
	}
	for (int64_t i = 0; i < n_prompt; i++)
		if (prompt[i] >= V) {
			fprintf(stderr, "generate: prompt token %d is outside the vocabulary (%d)\n", prompt[i], V);
			goto out;
		}
	int64_t ctx = a.ctx ? a.ctx : c.model->w.hp.n_ctx_train;
	if (n_prompt + a.n_predict > ctx) {
		fprintf(stderr, "generate: prompt (%" PRId64 ") + n (%" PRId64 ") exceeds the context (%" PRId64 ")\n",
			n_prompt, a.n_predict, ctx);
		goto out;
	}
	/* KV for exactly this sequence, unless --ctx asked for more. */
	if (engine_core_start(&c, a.ctx ? a.ctx : n_prompt + a.n_predict, err, sizeof(err))) {
		fprintf(stderr, "generate: %s\n", err);
		goto out;
	}
	if (a.verbose)
		fprintf(stderr, "model: %s (%s), %d layers, dim %d, vocab %d, %.1f MiB weights; %s backend, seed %" PRIu64
				", prompt %" PRId64 " tokens\n",
			c.model->name, c.model->arch, c.model->w.hp.n_layer, c.model->w.hp.n_embd, V,
			(double)c.model->weight_bytes / (1 << 20), kern_backend_name(c.be), a.sp.seed, n_prompt);

	logits = malloc((size_t)V * sizeof(float));
	if (a.dump_logits) {
		all = malloc((size_t)n_prompt * (size_t)V * sizeof(float));
		dump = fopen(a.dump_logits, "wb");
		if (!dump) {
			fprintf(stderr, "generate: cannot write '%s'\n", a.dump_logits);
			goto out;
		}
	}
	os.piece_cap = tok_stream_bound(c.vocab);
	os.piece = malloc(os.piece_cap);
	os.emit = malloc(os.piece_cap + STOP_MAX_LEN);
	if (!logits || (a.dump_logits && !all) || !os.piece || !os.emit || sampler_init(&smp, &a.sp, V) ||
	    sampler_scratch_init(&sw, V)) {
		fprintf(stderr, "generate: out of memory\n");
		goto out;
	}
	tok_stream_init(&os.ts, c.vocab, false);
	stop_init(&os.sm);
	for (int i = 0; i < a.n_stops; i++)
		stop_add(&os.sm, a.stops[i], strlen(a.stops[i]));
	for (int64_t i = 0; i < n_prompt; i++)
		sampler_accept(&smp, prompt[i]);

	if (a.warmup) {
		/* A throwaway sequence, freed before the timed one starts: the
		 * pool never holds more than the timed run needs. */
		struct kv_seq ws;
		kv_seq_init(&ws);
		int wrc = engine_seq_feed(&c, &ws, prompt, n_prompt, logits, NULL);
		for (int i = 0; i < 2 && i < a.n_predict - 1 && !wrc; i++)
			wrc = engine_seq_feed(&c, &ws, &prompt[n_prompt - 1], 1, logits, NULL);
		kv_seq_free(&c.kv, &ws);
		if (wrc) {
			fprintf(stderr, "generate: warm-up failed: %s\n", strerror(-wrc));
			goto out;
		}
	}
	double t0 = now_ms();
	int frc = engine_seq_feed(&c, &seq, prompt, n_prompt, logits, all);
	if (frc) {
		fprintf(stderr, "generate: prefill failed: %s\n", strerror(-frc));
		goto out;
	}
	double t_prefill = now_ms() - t0;
	if (dump && fwrite(all, sizeof(float) * (size_t)V, (size_t)n_prompt, dump) != (size_t)n_prompt) {
		fprintf(stderr, "generate: short write to '%s'\n", a.dump_logits);
		goto out;
	}

	int64_t n_gen = 0, n_steps = 0;
	/* Greedy without logprobs: decode steps take the backend's argmax, as
	 * the engine serves such requests (on a GPU only the id comes back). */
	const bool dev_argmax = sampler_is_argmax(&smp) && a.logprobs < 0;
	int32_t next = -1; /* the backend's pick for the next token */
	double t1 = now_ms();
	while (n_gen < a.n_predict) {
		float lp;
		struct sampler_logprob top[20];
		int32_t tok = next >= 0 ? next
					: sampler_sample(&smp, &sw, logits, a.logprobs >= 0 ? &lp : NULL, top, a.logprobs);
		sampler_accept(&smp, tok);
		if (a.logprobs >= 0)
			print_logprobs(c.vocab, tok, lp, top, a.logprobs);
		if (!a.ignore_eos && tok_is_eog(c.vocab, tok))
			break;
		bool stop_tok = false;
		for (int i = 0; i < a.n_stop_tokens; i++)
			stop_tok |= tok == a.stop_tokens[i];
		if (stop_tok)
			break;
		n_gen++;
		if (out_token(&os, tok) || n_gen == a.n_predict)
			break;
		if ((frc = dev_argmax ? engine_seq_step_argmax(&c, &seq, tok, logits, &next)
				      : engine_seq_feed(&c, &seq, &tok, 1, logits, NULL))) {
			fprintf(stderr, "\ngenerate: decode failed: %s\n", strerror(-frc));
			goto out;
		}
		n_steps++;
	}
	double t_decode = now_ms() - t1;
	out_finish(&os);
	fprintf(stderr, "prefill: %" PRId64 " tokens in %.1f ms (%.1f tok/s); decode: %" PRId64
			" steps in %.1f ms (%.1f tok/s); load %.1f ms\n",
		n_prompt, t_prefill, n_prompt / (t_prefill / 1e3), n_steps, t_decode,
		n_steps > 0 ? n_steps / (t_decode / 1e3) : 0.0, c.load_ms);
	if (a.verbose) {
		struct alloc_rss rss;
		alloc_rss_get(&rss);
		fprintf(stderr,
			"memory: resident %.1f MiB anonymous (of which backend KV cache + scratch %.1f MiB), "
			"%.1f MiB file-backed (model weights %.1f MiB)\n",
			rss.anon_bytes / 1048576.0, kern_backend_mem_bytes(c.be) / 1048576.0, rss.file_bytes / 1048576.0,
			c.model->weight_bytes / 1048576.0);
	}
	rc = 0;
out:
	if (dump && fclose(dump) != 0 && rc == 0) {
		fprintf(stderr, "generate: cannot write '%s'\n", a.dump_logits);
		rc = 1;
	}
	sampler_free(&smp);
	sampler_scratch_free(&sw);
	if (c.model)
		kv_seq_free(&c.kv, &seq);
	engine_core_close(&c);
	free(prompt);
	free(text);
	free(logits);
	free(all);
	free(os.piece);
	free(os.emit);
	return rc;
}
