/*
 * uring-bench: an io_uring HTTP load client for OpenAI-compatible servers
 * (and any HTTP server, with --endpoint get) that reports latency honestly.
 *
 *   uring-bench -n 50 -c 4 --url http://127.0.0.1:8080
 *
 * Closed loop (-c connections, each sends its next request when the last
 * one is answered) or open loop (--rate, gamma/Poisson arrivals, latency
 * from the intended send time). Latencies go into per-thread log-linear
 * histograms (hist.h, 0.1% bounded error), merged at the end. See client.c
 * for what each reported time measures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ub.h"

static const char *const default_prompts[] = {
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works to a ten-year-old.",
    "List five facts about the ocean.",
    "Describe a sunrise over the mountains.",
    "What are the benefits of reading books every day?",
    "Summarize the plot of a detective novel in a few sentences.",
    "Give three tips for learning a new language.",
    "Why is the sky blue? Answer briefly.",
};

static void usage(FILE *f)
{
	fprintf(f, "usage: uring-bench [options]\n"
	           "Load client for OpenAI-compatible HTTP servers (io_uring; epoll fallback).\n"
	           "\n"
	           "Target and workload:\n"
	           "  --url URL             server, http://HOST:PORT[/PATH] (default http://127.0.0.1:8080);\n"
	           "                        a PATH replaces the endpoint's default path. Repeatable (up to 16):\n"
	           "                        connection i goes to URL i mod n; counts are reported per URL and per\n"
	           "                        instance named by the response header X-Locus-Instance (or X-Instance)\n"
	           "  --endpoint E          completions (POST /v1/completions, default), chat\n"
	           "                        (POST /v1/chat/completions) or get (GET the URL's path; any HTTP server)\n"
	           "  --model NAME          \"model\" field (default: omitted)\n"
	           "  --prompt TEXT         the prompt (default: a built-in list, used round robin)\n"
	           "  --prompt-file FILE    prompts, one per line, used round robin\n"
	           "  --prompt-len N        completions: prompts of exactly N token ids instead of text, a\n"
	           "                        different first id in each of 64 variants (no shared prefix to\n"
	           "                        reuse), ids 1000..1999: TTFT at a known prompt length\n"
	           "  --max-tokens N        max_tokens (default 64)\n"
	           "  --ignore-eos          ask the server to generate exactly max_tokens (vLLM, llama.cpp, Locus)\n"
	           "  --temperature T       (default 0)\n"
	           "  --top-k K             top_k (default: not sent)\n"
	           "  --top-p P             top_p, 0 < P <= 1 (default: not sent)\n"
	           "  --stream              stream: true; report TTFT, inter-token latency and TPOT\n"
	           "  --api-key KEY         Authorization: Bearer KEY (default: $OPENAI_API_KEY if set)\n"
	           "\n"
	           "Load:\n"
	           "  -n N                  measured requests (default 50; unbounded with --duration alone)\n"
	           "  -c C                  connections = requests in flight at most (default 4)\n"
	           "  -t T                  worker threads (default 1; connections are split over them)\n"
	           "  --rate R              open loop: R requests/s on a random arrival schedule; latency counts\n"
	           "                        from each request's intended send time\n"
	           "  --burstiness K        gamma shape of inter-arrival times (default 1 = Poisson; < 1 burstier)\n"
	           "  --duration S          stop issuing after S seconds\n"
	           "  --warmup N            requests before measuring (not recorded; default 0)\n"
	           "  --timeout S           per-request timeout (default 120)\n"
	           "  --cpus LIST           pin worker i to the i-th CPU of LIST (e.g. 0 or 2,3)\n"
	           "  --epoll               use the epoll loop even where io_uring works\n"
	           "  --seed N              arrival schedule seed (default 1)\n"
	           "\n"
	           "Output:\n"
	           "  --json FILE           full results and the percentile spectrum as JSON\n"
	           "  --csv                 the percentile spectrum as CSV on stdout, after the summary\n"
	           "  -q                    no progress line (it is shown only on a terminal anyway)\n"
	           "  -h, --help\n");
}

static const char *default_path(enum ub_endpoint e)
{
	return e == UB_EP_CHAT ? "/v1/chat/completions" : e == UB_EP_GET ? "/" : "/v1/completions";
}

static int parse_url(const char *url, struct ub_target *t)
{
	const char *p = url;
	if (!strncmp(p, "http://", 7))
		p += 7;
	else if (strstr(p, "://")) {
		fprintf(stderr, "uring-bench: only http:// URLs are supported: %s\n", url);
		return -1;
	}
	const char *slash = strchr(p, '/');
	size_t hp = slash ? (size_t)(slash - p) : strlen(p);
	char hostport[256];
	if (hp == 0 || hp >= sizeof(hostport)) {
		fprintf(stderr, "uring-bench: bad URL: %s\n", url);
		return -1;
	}
	memcpy(hostport, p, hp);
	hostport[hp] = 0;
	char *colon = strrchr(hostport, ':');
	t->port = 80;
	if (colon) {
		*colon = 0;
		char *end;
		long port = strtol(colon + 1, &end, 10);
		if (*end || port < 1 || port > 65535) {
			fprintf(stderr, "uring-bench: bad port in %s\n", url);
			return -1;
		}
		t->port = (int)port;
	}
	snprintf(t->host, sizeof(t->host), "%s", hostport);
	t->path[0] = 0;
	if (slash && strcmp(slash, "/")) {
		if (strlen(slash) >= sizeof(t->path)) {
			fprintf(stderr, "uring-bench: URL path too long\n");
			return -1;
		}
		snprintf(t->path, sizeof(t->path), "%s", slash);
	}
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
	int rc = getaddrinfo(t->host, NULL, &hints, &ai);
	if (rc) {
		fprintf(stderr, "uring-bench: cannot resolve %s: %s\n", t->host, gai_strerror(rc));
		return -1;
	}
	memcpy(&t->addr, ai->ai_addr, sizeof(t->addr));
	t->addr.sin_port = htons((uint16_t)t->port);
	freeaddrinfo(ai);
	return 0;
}

static int parse_cpus(const char *s, struct ub_opts *o)
{
	o->cpus = calloc(1024, sizeof(int));
	o->n_cpus = 0;
	const char *p = s;
	while (*p) {
		char *end;
		long a = strtol(p, &end, 10), b = a;
		if (end == p || a < 0 || a > 4095)
			return -1;
		p = end;
		if (*p == '-') {
			b = strtol(p + 1, &end, 10);
			if (end == p + 1 || b < a || b > 4095)
				return -1;
			p = end;
		}
		for (long c = a; c <= b && o->n_cpus < 1024; c++)
			o->cpus[o->n_cpus++] = (int)c;
		if (*p == ',')
			p++;
		else if (*p)
			return -1;
	}
	return o->n_cpus ? 0 : -1;
}

static char *read_prompts(const char *path, struct ub_opts *o)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "uring-bench: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	long sz = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (sz < 0 || sz > (64l << 20)) {
		fprintf(stderr, "uring-bench: %s: unreadable or over 64 MiB\n", path);
		fclose(f);
		return NULL;
	}
	char *buf = malloc((size_t)sz + 1);
	size_t got = fread(buf, 1, (size_t)sz, f);
	fclose(f);
	buf[got] = 0;
	int cap = 16;
	o->prompts = malloc(sizeof(char *) * (size_t)cap);
	o->n_prompts = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[n - 1] = 0;
		if (!line[0])
			continue;
		if (o->n_prompts == cap) {
			cap *= 2;
			o->prompts = realloc(o->prompts, sizeof(char *) * (size_t)cap);
		}
		o->prompts[o->n_prompts++] = line;
	}
	if (!o->n_prompts) {
		fprintf(stderr, "uring-bench: %s has no prompts\n", path);
		return NULL;
	}
	return buf;
}

#define UB_ID_PROMPTS 64 /* --prompt-len variants */

/* Variant v of the --prompt-len prompts: n ids in 1000..1999, the first
 * one different in each variant (997 is prime to 1000). */
static cJSON *id_prompt(int n, int v)
{
	cJSON *a = cJSON_CreateArray();
	for (int i = 0; a && i < n; i++)
		cJSON_AddItemToArray(a, cJSON_CreateNumber(1000 + (v * 997 + i * 31) % 1000));
	return a;
}

static void build_request(const struct ub_opts *o, const struct ub_target *t, const char *prompt, int variant,
                          struct ub_request *r)
{
	const char *path = t->path[0] ? t->path : default_path(o->endpoint);
	char auth[600] = "";
	if (o->api_key && o->api_key[0])
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", o->api_key);
	if (o->endpoint == UB_EP_GET) {
		size_t cap = strlen(path) + strlen(t->host) + strlen(auth) + 64;
		r->bytes = malloc(cap);
		r->len = (size_t)snprintf(r->bytes, cap, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n", path, t->host,
		                          t->port, auth);
		return;
	}
	cJSON *j = cJSON_CreateObject();
	if (o->model)
		cJSON_AddStringToObject(j, "model", o->model);
	if (o->endpoint == UB_EP_CHAT) {
		cJSON *msgs = cJSON_AddArrayToObject(j, "messages");
		cJSON *m = cJSON_CreateObject();
		cJSON_AddStringToObject(m, "role", "user");
		cJSON_AddStringToObject(m, "content", prompt);
		cJSON_AddItemToArray(msgs, m);
	} else if (o->prompt_len > 0) {
		cJSON_AddItemToObject(j, "prompt", id_prompt(o->prompt_len, variant));
	} else {
		cJSON_AddStringToObject(j, "prompt", prompt);
	}
	cJSON_AddNumberToObject(j, "max_tokens", o->max_tokens);
	cJSON_AddNumberToObject(j, "temperature", o->temperature);
	if (o->top_k > 0)
		cJSON_AddNumberToObject(j, "top_k", o->top_k);
	if (o->top_p < 1)
		cJSON_AddNumberToObject(j, "top_p", o->top_p);
	if (o->ignore_eos)
		cJSON_AddBoolToObject(j, "ignore_eos", 1);
	if (o->stream) {
		cJSON_AddBoolToObject(j, "stream", 1);
		cJSON *so = cJSON_AddObjectToObject(j, "stream_options");
		cJSON_AddBoolToObject(so, "include_usage", 1);
	}
	char *body = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	size_t blen = strlen(body);
	size_t cap = blen + strlen(path) + strlen(t->host) + strlen(auth) + 200;
	r->bytes = malloc(cap);
	int h = snprintf(r->bytes, cap,
	                 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
	                 "Accept: %s\r\n%sContent-Length: %zu\r\n\r\n",
	                 path, t->host, t->port, o->stream ? "text/event-stream" : "application/json", auth, blen);
	memcpy(r->bytes + h, body, blen);
	r->len = (size_t)h + blen;
	free(body);
}

/* ---- reporting ---- */

static const double spectrum_p[] = {0,       10, 20,      25,   30,      40,    50,   60,     70,    75,
                                    80,      85, 87.5,    90,   92.5,    93.75, 95,   96.875, 97.5,  98,
                                    98.4375, 99, 99.2188, 99.5, 99.6094, 99.8,  99.9, 99.95,  99.99, 100};
#define N_SPECTRUM (sizeof(spectrum_p) / sizeof(spectrum_p[0]))

static double ms(double ns)
{
	return ns / 1e6;
}

static cJSON *hist_json(const struct hist *h)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "count", (double)h->n);
	cJSON_AddNumberToObject(o, "avg", ms(hist_mean(h)));
	cJSON_AddNumberToObject(o, "stdev", ms(hist_stdev(h)));
	cJSON_AddNumberToObject(o, "min", h->n ? ms((double)h->min) : 0);
	cJSON_AddNumberToObject(o, "p50", ms(hist_percentile(h, 50)));
	cJSON_AddNumberToObject(o, "p90", ms(hist_percentile(h, 90)));
	cJSON_AddNumberToObject(o, "p95", ms(hist_percentile(h, 95)));
	cJSON_AddNumberToObject(o, "p99", ms(hist_percentile(h, 99)));
	cJSON_AddNumberToObject(o, "p999", ms(hist_percentile(h, 99.9)));
	cJSON_AddNumberToObject(o, "max", ms((double)h->max));
	return o;
}

static cJSON *spectrum_json(const struct hist *h)
{
	cJSON *a = cJSON_CreateArray();
	for (size_t i = 0; i < N_SPECTRUM; i++) {
		cJSON *pt = cJSON_CreateArray();
		cJSON_AddItemToArray(pt, cJSON_CreateNumber(spectrum_p[i]));
		cJSON_AddItemToArray(pt, cJSON_CreateNumber(ms(hist_percentile(h, spectrum_p[i]))));
		cJSON_AddItemToArray(a, pt);
	}
	return a;
}

static const char *endpoint_name(enum ub_endpoint e)
{
	return e == UB_EP_CHAT ? "chat" : e == UB_EP_GET ? "get" : "completions";
}

static int write_json(const struct ub_opts *o, const char *backend, double wall_s, const struct ub_results *r,
                      const struct rusage *ru)
{
	const char *url = o->targets[0].url;
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "tool", "uring-bench");
	cJSON_AddNumberToObject(j, "version", 1);
	cJSON_AddStringToObject(j, "backend", backend);
	cJSON *c = cJSON_AddObjectToObject(j, "config");
	cJSON_AddStringToObject(c, "url", url);
	cJSON_AddStringToObject(c, "endpoint", endpoint_name(o->endpoint));
	cJSON_AddNumberToObject(c, "n", (double)o->n);
	cJSON_AddNumberToObject(c, "concurrency", o->concurrency);
	cJSON_AddNumberToObject(c, "threads", o->threads);
	cJSON_AddNumberToObject(c, "rate", o->rate);
	cJSON_AddNumberToObject(c, "burstiness", o->burstiness);
	cJSON_AddNumberToObject(c, "duration_s", o->duration_s);
	cJSON_AddBoolToObject(c, "stream", o->stream);
	cJSON_AddNumberToObject(c, "max_tokens", o->max_tokens);
	cJSON_AddBoolToObject(c, "ignore_eos", o->ignore_eos);
	cJSON_AddNumberToObject(c, "warmup", (double)o->warmup);
	cJSON_AddNumberToObject(j, "wall_s", wall_s);
	cJSON *rq = cJSON_AddObjectToObject(j, "requests");
	cJSON_AddNumberToObject(rq, "ok", (double)r->ok);
	cJSON_AddNumberToObject(rq, "errors", (double)r->errors);
	cJSON *er = cJSON_AddObjectToObject(j, "errors");
	for (int i = 0; i < UB_E_COUNT; i++)
		if (i != UB_E_HTTP)
			cJSON_AddNumberToObject(er, ub_err_names[i], (double)r->err[i]);
	cJSON *eh = cJSON_AddObjectToObject(er, "http");
	for (int s = 0; s < 600; s++)
		if (r->http_status[s]) {
			char k[8];
			snprintf(k, sizeof(k), "%d", s);
			cJSON_AddNumberToObject(eh, k, (double)r->http_status[s]);
		}
	cJSON *tp = cJSON_AddObjectToObject(j, "throughput");
	cJSON_AddNumberToObject(tp, "req_per_s", wall_s > 0 ? (double)r->ok / wall_s : 0);
	cJSON_AddNumberToObject(tp, "output_tokens", (double)r->output_tokens);
	cJSON_AddNumberToObject(tp, "output_tokens_per_s", wall_s > 0 ? (double)r->output_tokens / wall_s : 0);
	cJSON_AddNumberToObject(tp, "prompt_tokens", (double)r->prompt_tokens);
	cJSON_AddItemToObject(j, "latency_ms", hist_json(&r->latency));
	if (o->stream) {
		cJSON_AddItemToObject(j, "ttft_ms", hist_json(&r->ttft));
		cJSON_AddItemToObject(j, "itl_ms", hist_json(&r->itl));
		cJSON_AddItemToObject(j, "tpot_ms", hist_json(&r->tpot));
	}
	cJSON *sp = cJSON_AddObjectToObject(j, "spectrum");
	cJSON_AddItemToObject(sp, "latency_ms", spectrum_json(&r->latency));
	if (o->stream) {
		cJSON_AddItemToObject(sp, "ttft_ms", spectrum_json(&r->ttft));
		cJSON_AddItemToObject(sp, "itl_ms", spectrum_json(&r->itl));
	}
	cJSON *tg = cJSON_AddArrayToObject(j, "targets");
	for (int i = 0; i < o->n_targets; i++) {
		cJSON *x = cJSON_CreateObject();
		cJSON_AddStringToObject(x, "url", o->targets[i].url);
		cJSON_AddNumberToObject(x, "ok", (double)r->target_ok[i]);
		cJSON_AddNumberToObject(x, "errors", (double)r->target_err[i]);
		cJSON_AddItemToArray(tg, x);
	}
	cJSON *in = cJSON_AddObjectToObject(j, "instances");
	for (int i = 0; i < r->n_instances; i++)
		cJSON_AddNumberToObject(in, r->instance[i], (double)r->instance_ok[i]);
	if (r->instance_other)
		cJSON_AddNumberToObject(j, "instances_over_table", (double)r->instance_other);
	cJSON_AddNumberToObject(j, "histogram_relative_error", HIST_REL_ERROR);
	cJSON *cpu = cJSON_AddObjectToObject(j, "cpu");
	double us = (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6;
	double ss = (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
	cJSON_AddNumberToObject(cpu, "user_s", us);
	cJSON_AddNumberToObject(cpu, "sys_s", ss);
	char *s = cJSON_Print(j);
	cJSON_Delete(j);
	FILE *f = fopen(o->json_path, "w");
	if (!f) {
		fprintf(stderr, "uring-bench: %s: %s\n", o->json_path, strerror(errno));
		free(s);
		return -1;
	}
	fprintf(f, "%s\n", s);
	free(s);
	return fclose(f) ? -1 : 0;
}

static void print_row(const char *name, const struct hist *h)
{
	if (!h->n) {
		printf("  %-12s %10s\n", name, "-");
		return;
	}
	printf("  %-12s %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, ms(hist_mean(h)),
	       ms(hist_percentile(h, 50)), ms(hist_percentile(h, 90)), ms(hist_percentile(h, 95)),
	       ms(hist_percentile(h, 99)), ms((double)h->max));
}

static void progress(struct ub_run *run, const struct ub_opts *o, uint64_t t0, long *last_done, uint64_t *last_t,
                     bool final)
{
	long done = atomic_load(&run->done), failed = atomic_load(&run->failed);
	uint64_t now = ub_now_ns();
	double rate =
	    *last_t && now > *last_t ? (double)(done + failed - *last_done) / ((double)(now - *last_t) / 1e9) : 0;
	*last_done = done + failed;
	*last_t = now;
	char total[32] = "?";
	if (o->n >= 0)
		snprintf(total, sizeof(total), "%ld", o->n);
	fprintf(stderr, "\r  %ld/%s done, %.1f req/s, %ld errors, %.1f s%s", done + failed, total, rate, failed,
	        (double)(now - t0) / 1e9, final ? "\n" : "   ");
	fflush(stderr);
}

int main(int argc, char **argv)
{
	struct ub_opts o = {0};
	o.n = 50;
	o.concurrency = 4;
	o.threads = 1;
	o.burstiness = 1.0;
	o.timeout_s = 120;
	o.max_tokens = 64;
	o.top_p = 1;
	o.seed = 1;
	o.api_key = getenv("OPENAI_API_KEY");
	const char *urls[UB_MAX_TARGETS];
	int n_urls = 0;
	const char *prompt = NULL, *prompt_file = NULL;
	bool n_given = false;
	enum {
		O_URL = 256,
		O_ENDPOINT,
		O_MODEL,
		O_PROMPT,
		O_PROMPT_FILE,
		O_PROMPT_LEN,
		O_MAX_TOKENS,
		O_IGNORE_EOS,
		O_TEMP,
		O_TOP_K,
		O_TOP_P,
		O_STREAM,
		O_API_KEY,
		O_RATE,
		O_BURST,
		O_DURATION,
		O_WARMUP,
		O_TIMEOUT,
		O_CPUS,
		O_EPOLL,
		O_SEED,
		O_JSON,
		O_CSV,
	};
	static const struct option lo[] = {
	    {"url", 1, 0, O_URL},
	    {"endpoint", 1, 0, O_ENDPOINT},
	    {"model", 1, 0, O_MODEL},
	    {"prompt", 1, 0, O_PROMPT},
	    {"prompt-file", 1, 0, O_PROMPT_FILE},
	    {"prompt-len", 1, 0, O_PROMPT_LEN},
	    {"max-tokens", 1, 0, O_MAX_TOKENS},
	    {"ignore-eos", 0, 0, O_IGNORE_EOS},
	    {"temperature", 1, 0, O_TEMP},
	    {"top-k", 1, 0, O_TOP_K},
	    {"top-p", 1, 0, O_TOP_P},
	    {"stream", 0, 0, O_STREAM},
	    {"api-key", 1, 0, O_API_KEY},
	    {"rate", 1, 0, O_RATE},
	    {"burstiness", 1, 0, O_BURST},
	    {"duration", 1, 0, O_DURATION},
	    {"warmup", 1, 0, O_WARMUP},
	    {"timeout", 1, 0, O_TIMEOUT},
	    {"cpus", 1, 0, O_CPUS},
	    {"epoll", 0, 0, O_EPOLL},
	    {"seed", 1, 0, O_SEED},
	    {"json", 1, 0, O_JSON},
	    {"csv", 0, 0, O_CSV},
	    {"help", 0, 0, 'h'},
	    {0, 0, 0, 0},
	};
	int opt;
	char *end;
#define NUM(dst, lo_, hi_, what)                                                                                       \
	do {                                                                                                           \
		double v_ = strtod(optarg, &end);                                                                      \
		if (end == optarg || *end || !(v_ >= (lo_) && v_ <= (hi_))) {                                          \
			fprintf(stderr, "uring-bench: %s must be a number in [%g, %g], got '%s'\n", what,              \
			        (double)(lo_), (double)(hi_), optarg);                                                 \
			return 2;                                                                                      \
		}                                                                                                      \
		dst = v_;                                                                                              \
	} while (0)
	while ((opt = getopt_long(argc, argv, "n:c:t:qh", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			NUM(o.n, 1, 1e12, "-n");
			n_given = true;
			break;
		case 'c':
			NUM(o.concurrency, 1, 100000, "-c");
			break;
		case 't':
			NUM(o.threads, 1, 256, "-t");
			break;
		case 'q':
			o.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case O_URL:
			if (n_urls == UB_MAX_TARGETS) {
				fprintf(stderr, "uring-bench: at most %d --url\n", UB_MAX_TARGETS);
				return 2;
			}
			urls[n_urls++] = optarg;
			break;
		case O_ENDPOINT:
			if (!strcmp(optarg, "completions"))
				o.endpoint = UB_EP_COMPLETIONS;
			else if (!strcmp(optarg, "chat"))
				o.endpoint = UB_EP_CHAT;
			else if (!strcmp(optarg, "get"))
				o.endpoint = UB_EP_GET;
			else {
				fprintf(stderr, "uring-bench: --endpoint must be completions, chat or get\n");
				return 2;
			}
			break;
		case O_MODEL:
			o.model = optarg;
			break;
		case O_PROMPT:
			prompt = optarg;
			break;
		case O_PROMPT_FILE:
			prompt_file = optarg;
			break;
		case O_PROMPT_LEN:
			NUM(o.prompt_len, 1, 1 << 20, "--prompt-len");
			break;
		case O_MAX_TOKENS:
			NUM(o.max_tokens, 1, 1e7, "--max-tokens");
			break;
		case O_IGNORE_EOS:
			o.ignore_eos = true;
			break;
		case O_TEMP:
			NUM(o.temperature, 0, 100, "--temperature");
			break;
		case O_TOP_K:
			NUM(o.top_k, 1, 1 << 24, "--top-k");
			break;
		case O_TOP_P:
			NUM(o.top_p, 1e-6, 1, "--top-p");
			break;
		case O_STREAM:
			o.stream = true;
			break;
		case O_API_KEY:
			o.api_key = optarg;
			break;
		case O_RATE:
			NUM(o.rate, 1e-6, 1e9, "--rate");
			break;
		case O_BURST:
			NUM(o.burstiness, 0.01, 100, "--burstiness");
			break;
		case O_DURATION:
			NUM(o.duration_s, 0.001, 1e7, "--duration");
			break;
		case O_WARMUP:
			NUM(o.warmup, 0, 1e9, "--warmup");
			break;
		case O_TIMEOUT:
			NUM(o.timeout_s, 0.001, 1e6, "--timeout");
			break;
		case O_CPUS:
			if (parse_cpus(optarg, &o)) {
				fprintf(stderr, "uring-bench: --cpus wants a list like 0,2-3, got '%s'\n", optarg);
				return 2;
			}
			break;
		case O_EPOLL:
			o.force_epoll = true;
			break;
		case O_SEED:
			NUM(o.seed, 0, 1e18, "--seed");
			break;
		case O_JSON:
			o.json_path = optarg;
			break;
		case O_CSV:
			o.csv = true;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
#undef NUM
	if (optind < argc) {
		fprintf(stderr, "uring-bench: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (o.duration_s > 0 && !n_given)
		o.n = -1;
	if (o.threads > o.concurrency)
		o.threads = o.concurrency;
	if (n_urls == 0)
		urls[n_urls++] = "http://127.0.0.1:8080";
	for (int i = 0; i < n_urls; i++) {
		struct ub_target *t = &o.targets[i];
		if (parse_url(urls[i], t))
			return 2;
		snprintf(t->url, sizeof(t->url), "http://%s:%d%s", t->host, t->port,
		         t->path[0] ? t->path : default_path(o.endpoint));
	}
	o.n_targets = n_urls;
	if (o.concurrency < o.n_targets) {
		fprintf(stderr, "uring-bench: -c %d is fewer connections than the %d URLs\n", o.concurrency,
		        o.n_targets);
		return 2;
	}
	if (o.prompt_len > 0 && (prompt || prompt_file || o.endpoint != UB_EP_COMPLETIONS)) {
		fprintf(stderr, "uring-bench: --prompt-len is for the completions endpoint, instead of --prompt and "
		                "--prompt-file\n");
		return 2;
	}
	char *prompt_buf = NULL;
	if (o.prompt_len > 0) {
		o.prompts = NULL;
		o.n_prompts = UB_ID_PROMPTS;
	} else if (prompt_file) {
		if (!(prompt_buf = read_prompts(prompt_file, &o)))
			return 2;
	} else if (prompt) {
		o.prompts = malloc(sizeof(char *));
		o.prompts[0] = (char *)prompt;
		o.n_prompts = 1;
	} else {
		o.prompts = (char **)default_prompts;
		o.n_prompts = (int)(sizeof(default_prompts) / sizeof(default_prompts[0]));
	}
	int n_reqs = o.endpoint == UB_EP_GET ? 1 : o.n_prompts;
	struct ub_request *reqs = calloc((size_t)(n_reqs * o.n_targets), sizeof(*reqs));
	for (int t = 0; t < o.n_targets; t++)
		for (int i = 0; i < n_reqs; i++)
			build_request(&o, &o.targets[t], o.prompts ? o.prompts[i] : NULL, i, &reqs[t * n_reqs + i]);

	struct ub_run run = {.o = &o, .reqs = reqs, .n_reqs = n_reqs};
	pthread_barrier_init(&run.barrier, NULL, (unsigned)o.threads + 1);
	struct ub_thread *th = calloc((size_t)o.threads, sizeof(*th));
	pthread_t *tid = calloc((size_t)o.threads, sizeof(*tid));
	int conn_no = 0; /* global connection number: its target is conn_no % n_targets */
	for (int i = 0; i < o.threads; i++) {
		struct ub_thread *t = &th[i];
		t->run = &run;
		t->o = &o;
		t->idx = i;
		t->n_conns = o.concurrency / o.threads + (i < o.concurrency % o.threads ? 1 : 0);
		t->conns = calloc((size_t)t->n_conns, sizeof(*t->conns));
		t->idle = calloc((size_t)t->n_conns, sizeof(int));
		t->rng = o.seed * 0x9e3779b97f4a7c15ull + (uint64_t)i + 1;
		t->rr = (unsigned)i;
		for (int k = 0; k < t->n_conns; k++) {
			struct ub_conn *c = calloc(1, sizeof(*c));
			c->t = t;
			c->idx = k;
			c->target = conn_no++ % o.n_targets;
			c->fd = -1;
			t->conns[k] = c;
		}
		if (pthread_create(&tid[i], NULL, ub_worker, t)) {
			fprintf(stderr, "uring-bench: cannot start thread %d\n", i);
			return 1;
		}
	}
	pthread_barrier_wait(&run.barrier); /* warm-up done */
	run.t_begin = ub_now_ns();
	struct rusage ru0;
	getrusage(RUSAGE_SELF, &ru0);
	pthread_barrier_wait(&run.barrier);

	bool tty = !o.quiet && isatty(2);
	long last_done = 0;
	uint64_t last_t = 0;
	/* the workers exit when their share is done; progress until then */
	for (;;) {
		long total = atomic_load(&run.done) + atomic_load(&run.failed);
		if (o.n >= 0 && total >= o.n)
			break;
		bool all_done = true;
		for (int i = 0; i < o.threads; i++)
			if (pthread_tryjoin_np(tid[i], NULL) == EBUSY)
				all_done = false;
			else
				tid[i] = 0;
		if (all_done)
			break;
		struct timespec ts = {0, 200 * 1000000};
		nanosleep(&ts, NULL);
		if (tty)
			progress(&run, &o, run.t_begin, &last_done, &last_t, false);
	}
	for (int i = 0; i < o.threads; i++)
		if (tid[i])
			pthread_join(tid[i], NULL);
	if (tty)
		progress(&run, &o, run.t_begin, &last_done, &last_t, true);
	struct rusage ru1, ru;
	getrusage(RUSAGE_SELF, &ru1);
	timersub(&ru1.ru_utime, &ru0.ru_utime, &ru.ru_utime);
	timersub(&ru1.ru_stime, &ru0.ru_stime, &ru.ru_stime);

	struct ub_results *r = calloc(1, sizeof(*r));
	ub_results_init(r);
	uint64_t t_end = run.t_begin;
	for (int i = 0; i < o.threads; i++) {
		ub_results_merge(r, &th[i].res);
		if (th[i].t_end > t_end)
			t_end = th[i].t_end;
	}
	double wall = (double)(t_end - run.t_begin) / 1e9;
	const char *backend = run.uring_failed ? "epoll" : o.force_epoll ? "epoll" : "io_uring";
	const char *full_url = o.targets[0].url;
	if (run.uring_failed)
		fprintf(stderr, "uring-bench: io_uring could not be set up here; used epoll\n");

	printf("uring-bench: %s%s, %s loop, %d connection(s), %d thread(s), %s (%s)%s\n", full_url,
	       o.n_targets > 1 ? " and more (below)" : "", o.rate > 0 ? "open" : "closed", o.concurrency, o.threads,
	       backend, th[0].features, o.stream ? ", streaming" : "");
	if (o.rate > 0)
		printf("  offered rate %.2f req/s (burstiness %.2f); latency from each request's intended send time\n",
		       o.rate, o.burstiness);
	printf("  requests: %llu ok, %llu errors", (unsigned long long)r->ok, (unsigned long long)r->errors);
	if (r->errors) {
		printf(" (");
		bool first = true;
		for (int i = 0; i < UB_E_COUNT; i++) {
			if (!r->err[i] || i == UB_E_HTTP)
				continue;
			printf("%s%s %llu", first ? "" : ", ", ub_err_names[i], (unsigned long long)r->err[i]);
			first = false;
		}
		for (int s = 0; s < 600; s++)
			if (r->http_status[s]) {
				printf("%shttp %d: %llu", first ? "" : ", ", s, (unsigned long long)r->http_status[s]);
				first = false;
			}
		printf(")");
	}
	printf("\n  wall %.3f s, %.2f req/s", wall, wall > 0 ? (double)r->ok / wall : 0);
	if (o.endpoint != UB_EP_GET)
		printf(", output %llu tokens, %.1f tokens/s", (unsigned long long)r->output_tokens,
		       wall > 0 ? (double)r->output_tokens / wall : 0);
	printf("\n  %-12s %10s %10s %10s %10s %10s %10s\n", "(ms)", "avg", "p50", "p90", "p95", "p99", "max");
	print_row("latency", &r->latency);
	if (o.stream) {
		print_row("ttft", &r->ttft);
		print_row("itl", &r->itl);
		print_row("tpot", &r->tpot);
	}
	if (o.n_targets > 1)
		for (int i = 0; i < o.n_targets; i++)
			printf("  target %s: %llu ok, %llu errors\n", o.targets[i].url,
			       (unsigned long long)r->target_ok[i], (unsigned long long)r->target_err[i]);
	if (r->n_instances) {
		printf("  answered by:");
		for (int i = 0; i < r->n_instances; i++)
			printf("%s %s %llu", i ? "," : "", r->instance[i], (unsigned long long)r->instance_ok[i]);
		if (r->instance_other)
			printf(", %llu more past the %d-name table", (unsigned long long)r->instance_other,
			       UB_MAX_INSTANCES);
		printf(" (X-Locus-Instance)\n");
	}
	double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	               (double)ru.ru_stime.tv_usec / 1e6;
	printf("  client cpu: %.3f s (%.0f req per cpu-second)\n", cpu_s, cpu_s > 0 ? (double)r->ok / cpu_s : 0);
	if (o.csv) {
		printf("percentile,latency_ms%s\n", o.stream ? ",ttft_ms,itl_ms,tpot_ms" : "");
		for (size_t i = 0; i < N_SPECTRUM; i++) {
			printf("%g,%.4f", spectrum_p[i], ms(hist_percentile(&r->latency, spectrum_p[i])));
			if (o.stream)
				printf(",%.4f,%.4f,%.4f", ms(hist_percentile(&r->ttft, spectrum_p[i])),
				       ms(hist_percentile(&r->itl, spectrum_p[i])),
				       ms(hist_percentile(&r->tpot, spectrum_p[i])));
			printf("\n");
		}
	}
	int rc = 0;
	if (o.json_path && write_json(&o, backend, wall, r, &ru))
		rc = 1;
	/* exit status: 0 when at least one request succeeded; errors are results, not failures */
	if (r->ok == 0)
		rc = 1;
	for (int i = 0; i < o.threads; i++) {
		for (int k = 0; k < th[i].n_conns; k++) {
			struct ub_conn *c = th[i].conns[k];
			sse_free(&c->sse);
			free(c->body);
			free(c->gaps);
			free(c);
		}
		free(th[i].conns);
		free(th[i].idle);
		free(th[i].arrivals);
	}
	for (int i = 0; i < n_reqs * o.n_targets; i++)
		free(reqs[i].bytes);
	free(reqs);
	free(th);
	free(tid);
	free(r);
	free(prompt_buf);
	if (o.prompts != (char **)default_prompts)
		free(o.prompts);
	free(o.cpus);
	pthread_barrier_destroy(&run.barrier);
	return rc;
}
