/*
 * config.c: the INI configuration (read with inih) and its overrides.
 *
 * Every key is a row of `keys[]`: its section, name, kind (integer, size,
 * duration, string, or a parser of its own), field and range. The file, the
 * command line (config_set) and the environment all go through the same row,
 * so a value is validated the same way wherever it comes from.
 *
 * inih (Debian's build: 200-byte lines, no line number in the callback) is fed
 * through our own reader, which holds the whole file in memory and hands inih
 * one line at a time. The reader therefore knows the line being processed when
 * the handler runs, and it also
 *   - rejects NUL bytes and lines longer than inih's line buffer (inih would
 *     silently split them into two lines);
 *   - strips leading blanks, so an indented line is never read as a
 *     continuation of the previous value (inih's multi-line values);
 *   - checks "[section]" lines itself, so an unknown section is an error even
 *     when it holds no keys, and any other line that is not a comment, a
 *     section or "key = value" is an error with its text;
 *   - stops the parse at the first error (inih would carry on).
 *
 * Invariants: after config_load/config_parse/config_set return 0, every field
 * is within its documented range; on error *c is unchanged. Cross-key rules
 * live in config_check.
 *
 * Threading: start-up only; no global state (inih's tunables are left alone).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "alloc/alloc.h"
#include "engine/config.h"

#define CONFIG_MAX_FILE_BYTES (1 << 20)

/* ---- small helpers ---- */

static void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool streq_ci(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* Decimal integer prefix: optional '-', at least one digit. 0, -EINVAL (no
 * digits) or -ERANGE (does not fit int64). *end: first byte after it. */
static int parse_i64_prefix(const char *s, int64_t *out, const char **end)
{
	bool neg = false;
	if (*s == '-') {
		neg = true;
		s++;
	}
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	uint64_t v = 0;
	bool over = false;
	for (; isdigit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			over = true;
		else
			v = v * 10 + d;
	}
	*end = s;
	if (over || v > (uint64_t)INT64_MAX)
		return -ERANGE;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
	const char *end;
	int rc = parse_i64_prefix(s, out, &end);
	if (rc)
		return rc;
	return *end ? -EINVAL : 0;
}

struct unit {
	const char *name;
	int64_t mult;
};

/* clang-format off */
static const struct unit size_units[] = {
	{"B", 1}, {"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30}, {"TiB", 1LL << 40},
};
/* Decimal and bare-letter units are refused: "1GB" means 10^9 to some
 * readers and 2^30 to others, and a KV pool is sized in binary units. */
static const char *const size_ambiguous[] = {"K", "M", "G", "T", "KB", "MB", "GB", "TB"};

static const struct unit dur_units[] = {
	{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000},
};
/* clang-format on */

/* NUMBER [blanks] UNIT, or a bare 0. 0, -EINVAL with why, -ERANGE. */
static int parse_with_unit(const char *s, const struct unit *units, size_t n_units, bool sizes, int64_t *out, char *why,
			   size_t whylen)
{
	const char *p;
	int64_t v;
	int rc = parse_i64_prefix(s, &v, &p);
	if (rc == -ERANGE) {
		errf(why, whylen, "too large");
		return -ERANGE;
	}
	if (rc) {
		errf(why, whylen, "not a number");
		return -EINVAL;
	}
	if (v < 0) {
		errf(why, whylen, "negative");
		return -ERANGE;
	}
	if (*p == '.') {
		errf(why, whylen, "not a whole number (use a smaller unit)");
		return -EINVAL;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (!*p) {
		if (v == 0) {
			*out = 0;
			return 0;
		}
		errf(why, whylen, "missing unit");
		return -EINVAL;
	}
	for (size_t i = 0; i < n_units; i++) {
		if (!streq_ci(p, units[i].name))
			continue;
		/* "m" is minutes, "M" is not a size unit; the case-insensitive
		 * match is safe because each table is for one kind. */
		if (v > INT64_MAX / units[i].mult) {
			errf(why, whylen, "too large");
			return -ERANGE;
		}
		*out = v * units[i].mult;
		return 0;
	}
	if (sizes) {
		for (size_t i = 0; i < sizeof(size_ambiguous) / sizeof(size_ambiguous[0]); i++)
			if (streq_ci(p, size_ambiguous[i])) {
				errf(why, whylen, "unit '%s' is ambiguous (decimal or binary?)", p);
				return -EINVAL;
			}
	}
	errf(why, whylen, "unknown unit '%.16s'", p);
	return -EINVAL;
}

/* 1536 -> "1536B", 1048576 -> "1MiB": exact, for range messages. */
static void fmt_size(char *buf, size_t len, int64_t v)
{
	if (v == 0) {
		snprintf(buf, len, "0");
		return;
	}
	for (int i = (int)(sizeof(size_units) / sizeof(size_units[0])) - 1; i >= 0; i--)
		if (v != 0 && v % size_units[i].mult == 0) {
			snprintf(buf, len, "%" PRId64 "%s", v / size_units[i].mult, size_units[i].name);
			return;
		}
	snprintf(buf, len, "%" PRId64 "B", v);
}

static void fmt_ms(char *buf, size_t len, int64_t v)
{
	if (v == 0) {
		snprintf(buf, len, "0");
		return;
	}
	for (int i = (int)(sizeof(dur_units) / sizeof(dur_units[0])) - 1; i >= 0; i--)
		if (v != 0 && v % dur_units[i].mult == 0) {
			snprintf(buf, len, "%" PRId64 "%s", v / dur_units[i].mult, dur_units[i].name);
			return;
		}
	snprintf(buf, len, "%" PRId64 "ms", v);
}

/* ---- parsers of the keys with a syntax of their own ---- */

/* HOST:PORT, [IPV6]:PORT. */
static int set_listen(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	const char *host = v, *colon;
	size_t host_len;
	if (*v == '[') {
		const char *rb = strchr(v, ']');
		if (!rb || rb[1] != ':') {
			errf(why, whylen, "expected [IPV6]:PORT");
			return -EINVAL;
		}
		host = v + 1;
		host_len = (size_t)(rb - host);
		colon = rb + 1;
	} else {
		colon = strrchr(v, ':');
		if (!colon) {
			errf(why, whylen, "expected HOST:PORT");
			return -EINVAL;
		}
		host_len = (size_t)(colon - v);
		if (memchr(v, ':', host_len)) {
			errf(why, whylen, "an IPv6 address goes in brackets: [::1]:8080");
			return -EINVAL;
		}
	}
	if (host_len == 0 || host_len >= sizeof(c->host)) {
		errf(why, whylen, "expected HOST:PORT with a host of 1..%zu characters (0.0.0.0 for every address)",
		     sizeof(c->host) - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < host_len; i++) {
		unsigned char ch = (unsigned char)host[i];
		if (!isalnum(ch) && ch != '.' && ch != '-' && ch != ':' && ch != '%' && ch != '_') {
			errf(why, whylen, "bad character in host");
			return -EINVAL;
		}
	}
	int64_t port;
	if (parse_i64(colon + 1, &port) || port < 0 || port > 65535) {
		errf(why, whylen, "expected HOST:PORT with a port 0..65535 (0: any free port)");
		return -EINVAL;
	}
	memcpy(c->host, host, host_len);
	c->host[host_len] = '\0';
	c->port = (int)port;
	return 0;
}

static int set_backend(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	static const char *const names[] = {"auto", "cpu", "cuda", "null"};
	for (int i = 0; i < 4; i++)
		if (streq_ci(v, names[i])) {
			c->backend = (enum cfg_backend)i;
			return 0;
		}
	errf(why, whylen, "expected auto, cpu, cuda or null");
	return -EINVAL;
}

static int set_membind(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	if (streq_ci(v, "strict"))
		c->membind = ALLOC_POLICY_STRICT;
	else if (streq_ci(v, "preferred"))
		c->membind = ALLOC_POLICY_PREFERRED;
	else if (streq_ci(v, "off"))
		c->membind = ALLOC_POLICY_OFF;
	else {
		errf(why, whylen, "expected strict, preferred or off");
		return -EINVAL;
	}
	return 0;
}

static int set_pin(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	if (streq_ci(v, "on") || streq_ci(v, "yes") || streq_ci(v, "true") || strcmp(v, "1") == 0)
		c->pin = true;
	else if (streq_ci(v, "off") || streq_ci(v, "no") || streq_ci(v, "false") || strcmp(v, "0") == 0)
		c->pin = false;
	else {
		errf(why, whylen, "expected on or off");
		return -EINVAL;
	}
	return 0;
}

static int set_node(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	int64_t n;
	if (streq_ci(v, "auto")) {
		c->node = -1;
		return 0;
	}
	if (parse_i64(v, &n) || n < 0 || n >= CFG_MAX_CPUS) {
		errf(why, whylen, "expected auto or a NUMA node number 0..%d", CFG_MAX_CPUS - 1);
		return -EINVAL;
	}
	c->node = (int)n;
	return 0;
}

/* auto, or "0-3,8,10-11": numbers 0..max-1, each once, order kept. `what`
 * names one item in messages ("CPU", "GPU"). 0 with *n_out = 0 for auto. */
static int parse_id_list(const char *v, int max, int *out, int *n_out, const char *what, char *why, size_t whylen)
{
	if (streq_ci(v, "auto")) {
		*n_out = 0;
		return 0;
	}
	int ids[CFG_MAX_CPUS];
	unsigned char seen[CFG_MAX_CPUS] = {0};
	int n = 0;
	const char *p = v;
	for (;;) {
		while (*p == ' ')
			p++;
		int64_t lo, hi;
		const char *e;
		if (parse_i64_prefix(p, &lo, &e) || lo < 0 || lo >= max) {
			errf(why, whylen, "expected auto or a list of %ss 0..%d like 0-3,8,10-11", what, max - 1);
			return -EINVAL;
		}
		hi = lo;
		p = e;
		while (*p == ' ')
			p++;
		if (*p == '-') {
			p++;
			while (*p == ' ')
				p++;
			if (parse_i64_prefix(p, &hi, &e) || hi < lo || hi >= max) {
				errf(why, whylen, "bad range: expected FIRST-LAST with FIRST <= LAST <= %d", max - 1);
				return -EINVAL;
			}
			p = e;
			while (*p == ' ')
				p++;
		}
		for (int64_t i = lo; i <= hi; i++) {
			if (seen[i]) {
				errf(why, whylen, "%s %" PRId64 " is listed twice", what, i);
				return -EINVAL;
			}
			seen[i] = 1;
			ids[n++] = (int)i;
		}
		if (*p == '\0')
			break;
		if (*p != ',') {
			errf(why, whylen, "expected auto or a list of %ss like 0-3,8,10-11", what);
			return -EINVAL;
		}
		p++;
	}
	memcpy(out, ids, (size_t)n * sizeof(int));
	*n_out = n;
	return 0;
}

/* CPU numbers 0..CFG_MAX_CPUS-1; the first CPU of a node runs its dispatcher. */
static int set_cpus(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	return parse_id_list(v, CFG_MAX_CPUS, c->cpus, &c->n_cpus, "CPU", why, whylen);
}

/* CUDA device numbers 0..CFG_MAX_GPUS-1; whether they exist and sit on the
 * configured node is the plan's business (it knows the machine). */
static int set_gpus(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	return parse_id_list(v, CFG_MAX_GPUS, c->gpus, &c->n_gpus, "GPU", why, whylen);
}

/* One character of an instance name: it travels as an HTTP header value and
 * in load-balancer logs, so no blanks, quotes or separators beyond these. */
static bool instance_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
	       ch == '_' || ch == ':' || ch == '-';
}

/* Empty: the default, "<hostname>:<port>" (config_instance_name). */
static int set_instance(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	size_t n = strlen(v);
	if (n > CFG_INSTANCE_MAX) {
		errf(why, whylen, "longer than %d characters", CFG_INSTANCE_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if (!instance_char(v[i])) {
			errf(why, whylen, "expected 1..%d characters of A-Z a-z 0-9 . _ : - (or empty: hostname:port)",
			     CFG_INSTANCE_MAX);
			return -EINVAL;
		}
	memcpy(c->instance, v, n + 1);
	return 0;
}

/* Printable ASCII without blanks: it travels in "Authorization: Bearer KEY". */
static int set_api_key(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	size_t n = strlen(v);
	if (n >= sizeof(c->api_key)) {
		errf(why, whylen, "longer than %zu characters", sizeof(c->api_key) - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if (v[i] <= ' ' || v[i] > '~') {
			errf(why, whylen, "expected printable ASCII without blanks");
			return -EINVAL;
		}
	memcpy(c->api_key, v, n + 1);
	return 0;
}

static int set_model_path(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	size_t n = strlen(v);
	if (n == 0 || n >= sizeof(c->model_path)) {
		errf(why, whylen, "expected the path of a GGUF file (1..%zu characters)", sizeof(c->model_path) - 1);
		return -EINVAL;
	}
	memcpy(c->model_path, v, n + 1);
	return 0;
}

/* The served name: what clients put in "model"; printable, no quotes. */
static int set_model_name(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	size_t n = strlen(v);
	if (n >= sizeof(c->model_name)) {
		errf(why, whylen, "longer than %zu characters", sizeof(c->model_name) - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if (v[i] < ' ' || v[i] > '~' || v[i] == '"' || v[i] == '\\') {
			errf(why, whylen, "expected printable ASCII without quotes or backslashes");
			return -EINVAL;
		}
	memcpy(c->model_name, v, n + 1);
	return 0;
}

static int set_chat_template(struct engine_config *c, const char *v, char *why, size_t whylen)
{
	static const char *const names[] = {"chatml", "llama2", "llama3"};
	if (*v == '\0' || streq_ci(v, "auto")) {
		c->chat_template[0] = '\0';
		return 0;
	}
	for (int i = 0; i < 3; i++)
		if (streq_ci(v, names[i])) {
			snprintf(c->chat_template, sizeof(c->chat_template), "%s", names[i]);
			return 0;
		}
	errf(why, whylen, "expected auto (the GGUF's template), chatml, llama2 or llama3");
	return -EINVAL;
}

/* ---- the key table ---- */

enum key_kind {
	KK_INT,  /* int field, plain integer */
	KK_I64,  /* int64_t field, plain integer */
	KK_SIZE, /* size_t or int64_t field (see is_i64), with a size unit */
	KK_MS,   /* int field in milliseconds, with a duration unit */
	KK_FN,   /* parser of its own */
};

#define KF_AUTO 1u /* "auto" means 0 */
#define KF_POW2 2u /* power of two */
#define KF_I64  4u /* KK_SIZE into an int64_t */

struct key_def {
	const char *section;
	const char *name;
	enum key_kind kind;
	unsigned flags;
	size_t off;
	int64_t min, max;
	int (*fn)(struct engine_config *c, const char *v, char *why, size_t whylen);
};

/* clang-format off */
#define OFF(f) offsetof(struct engine_config, f)
#define KEY_FN(s, k, fn) {s, k, KK_FN, 0, 0, 0, 0, fn}

static const struct key_def keys[] = {
	KEY_FN("server", "listen", set_listen),
	{"server", "net_threads", KK_INT, 0, OFF(net_threads), 1, CFG_MAX_NET_THREADS, NULL},
	KEY_FN("server", "api_key", set_api_key),
	{"server", "max_conns", KK_INT, 0, OFF(max_conns), 1, 1000000, NULL},
	KEY_FN("server", "instance", set_instance),

	KEY_FN("model", "path", set_model_path),
	KEY_FN("model", "name", set_model_name),
	{"model", "ctx", KK_I64, KF_AUTO, OFF(ctx), 0, 1 << 24, NULL},
	KEY_FN("model", "chat_template", set_chat_template),

	KEY_FN("backend", "type", set_backend),
	{"backend", "threads", KK_INT, KF_AUTO, OFF(threads), 0, CFG_MAX_CPUS, NULL},
	{"backend", "null_delay_us", KK_INT, 0, OFF(null_delay_us), 0, 10000000, NULL},
	KEY_FN("backend", "gpus", set_gpus),

	KEY_FN("numa", "node", set_node),
	KEY_FN("numa", "cpus", set_cpus),
	KEY_FN("numa", "pin", set_pin),
	KEY_FN("numa", "membind", set_membind),

	{"batching", "max_seqs", KK_INT, 0, OFF(max_seqs), 1, 4096, NULL},
	{"batching", "step_tokens", KK_INT, 0, OFF(step_tokens), 1, 65536, NULL},
	{"batching", "prefill_chunk", KK_INT, 0, OFF(prefill_chunk), 1, 65536, NULL},

	{"kv", "tokens", KK_I64, KF_AUTO, OFF(kv_tokens), 0, INT64_C(1) << 36, NULL},
	{"kv", "memory", KK_SIZE, KF_I64, OFF(kv_memory_bytes), 1LL << 20, 1LL << 44, NULL},
	{"kv", "block_size", KK_INT, 0, OFF(kv_block_size), 1, 256, NULL},

	{"limits", "max_body", KK_SIZE, 0, OFF(max_body_bytes), 1LL << 10, 1LL << 30, NULL},
	{"limits", "max_header", KK_SIZE, 0, OFF(max_header_bytes), 1LL << 10, 1LL << 20, NULL},
	{"limits", "header_timeout", KK_MS, 0, OFF(header_timeout_ms), 1, 3600 * 1000, NULL},
	{"limits", "idle_timeout", KK_MS, 0, OFF(idle_timeout_ms), 1, 24 * 3600 * 1000, NULL},
	{"limits", "request_timeout", KK_MS, 0, OFF(request_timeout_ms), 0, 24 * 3600 * 1000, NULL},
	{"limits", "max_waiting", KK_INT, 0, OFF(max_waiting), 0, 1000000, NULL},
	{"limits", "ring_slots", KK_INT, KF_POW2, OFF(ring_slots), 16, 1 << 20, NULL},
	{"limits", "max_tokens", KK_I64, KF_AUTO, OFF(max_tokens_limit), 0, 1 << 24, NULL},
	{"limits", "drain_timeout", KK_MS, 0, OFF(drain_timeout_ms), 0, 3600 * 1000, NULL},
};
/* clang-format on */
#define N_KEYS ((int)(sizeof(keys) / sizeof(keys[0])))

static const char *const sections[] = {"server", "model", "backend", "numa", "batching", "kv", "limits"};
#define N_SECTIONS ((int)(sizeof(sections) / sizeof(sections[0])))

static bool section_known(const char *s)
{
	for (int i = 0; i < N_SECTIONS; i++)
		if (strcmp(s, sections[i]) == 0)
			return true;
	return false;
}

static int key_find(const char *section, const char *name)
{
	for (int i = 0; i < N_KEYS; i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return i;
	return -1;
}

/* "listen, net_threads, api_key, max_conns" */
static void keys_of(const char *section, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (int i = 0; i < N_KEYS && o < len; i++)
		if (strcmp(keys[i].section, section) == 0)
			o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? ", " : "", keys[i].name);
}

/* What the key accepts, for messages. */
static void key_expect(const struct key_def *k, char *buf, size_t len)
{
	char a[32], b[32];
	switch (k->kind) {
	case KK_INT:
	case KK_I64:
		snprintf(buf, len, "%san integer %" PRId64 "..%" PRId64 "%s", k->flags & KF_AUTO ? "auto or " : "",
		         k->min, k->max, k->flags & KF_POW2 ? ", a power of two" : "");
		break;
	case KK_SIZE:
		fmt_size(a, sizeof(a), k->min);
		fmt_size(b, sizeof(b), k->max);
		snprintf(buf, len, "a size %s..%s (units B, KiB, MiB, GiB, TiB)", a, b);
		break;
	case KK_MS:
		fmt_ms(a, sizeof(a), k->min);
		fmt_ms(b, sizeof(b), k->max);
		snprintf(buf, len, "a duration %s..%s (units ms, s, m, h)", a, b);
		break;
	case KK_FN:
		buf[0] = '\0';
		break;
	}
}

/* Applies value v to key k of c. 0, or -EINVAL with why set. */
static int key_apply(struct engine_config *c, const struct key_def *k, const char *v, char *why, size_t whylen)
{
	if (k->kind == KK_FN)
		return k->fn(c, v, why, whylen);
	char expect[128], detail[96] = "";
	key_expect(k, expect, sizeof(expect));
	int64_t x = 0;
	int rc = 0;
	if ((k->flags & KF_AUTO) && streq_ci(v, "auto")) {
		x = 0;
	} else if (*v == '\0') {
		rc = -EINVAL;
		snprintf(detail, sizeof(detail), "empty value");
	} else if (k->kind == KK_INT || k->kind == KK_I64) {
		rc = parse_i64(v, &x);
		if (rc == -ERANGE)
			snprintf(detail, sizeof(detail), "too large");
		else if (rc)
			snprintf(detail, sizeof(detail), "not an integer");
	} else if (k->kind == KK_SIZE) {
		rc = parse_with_unit(v, size_units, sizeof(size_units) / sizeof(size_units[0]), true, &x, detail,
		                     sizeof(detail));
	} else {
		rc = parse_with_unit(v, dur_units, sizeof(dur_units) / sizeof(dur_units[0]), false, &x, detail,
		                     sizeof(detail));
	}
	if (rc == 0 && (x < k->min || x > k->max) && !((k->flags & KF_AUTO) && x == 0)) {
		rc = -ERANGE;
		snprintf(detail, sizeof(detail), "out of range");
	}
	if (rc == 0 && (k->flags & KF_POW2) && (x & (x - 1)) != 0) {
		rc = -EINVAL;
		snprintf(detail, sizeof(detail), "not a power of two");
	}
	if (rc) {
		errf(why, whylen, "%s%sexpected %s", detail, detail[0] ? ": " : "", expect);
		return -EINVAL;
	}
	void *field = (char *)c + k->off;
	if (k->kind == KK_I64 || (k->kind == KK_SIZE && (k->flags & KF_I64)))
		*(int64_t *)field = x;
	else if (k->kind == KK_SIZE)
		*(size_t *)field = (size_t)x;
	else
		*(int *)field = (int)x;
	return 0;
}

/* ---- defaults, cross-key checks, environment ---- */

void config_default(struct engine_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->host, sizeof(c->host), "127.0.0.1");
	c->port = 8080;
	c->net_threads = 1;
	c->max_conns = 4096;
	c->backend = CFG_BACKEND_AUTO;
	c->node = -1;
	c->pin = true;
	c->membind = ALLOC_POLICY_PREFERRED;
	c->max_seqs = 16;
	c->step_tokens = 512;
	c->prefill_chunk = 256;
	c->kv_memory_bytes = 256LL << 20;
	c->kv_block_size = 16;
	c->max_body_bytes = 1 << 20;
	c->max_header_bytes = 8 << 10;
	c->header_timeout_ms = 10 * 1000;
	c->idle_timeout_ms = 60 * 1000;
	c->request_timeout_ms = 600 * 1000;
	c->max_waiting = 256;
	c->ring_slots = 1024;
	c->drain_timeout_ms = 30 * 1000;
}

/* Index of the key a failed check is reported against, -1 when none failed. */
static int check_keys(const struct engine_config *c, char *why, size_t whylen)
{
	if (c->prefill_chunk > c->step_tokens) {
		errf(why, whylen,
		     "[batching] prefill_chunk = %d exceeds step_tokens = %d (a prompt chunk must fit in one step)",
		     c->prefill_chunk, c->step_tokens);
		return key_find("batching", "prefill_chunk");
	}
	if (c->max_seqs > c->step_tokens) {
		errf(why, whylen,
		     "[batching] max_seqs = %d exceeds step_tokens = %d (every running sequence decodes one token per "
		     "step)",
		     c->max_seqs, c->step_tokens);
		return key_find("batching", "max_seqs");
	}
	if (c->ctx > 0 && c->max_tokens_limit > c->ctx) {
		errf(why, whylen, "[limits] max_tokens = %" PRId64 " exceeds [model] ctx = %" PRId64,
		     c->max_tokens_limit, c->ctx);
		return key_find("limits", "max_tokens");
	}
	return -1;
}

int config_check(const struct engine_config *c, char *err, size_t errlen)
{
	return check_keys(c, err, errlen) >= 0 ? -EINVAL : 0;
}

int config_apply_env(struct engine_config *c, char *err, size_t errlen)
{
	const char *v = getenv("LOCUS_API_KEY");
	if (!v || !*v)
		return 0;
	char why[160];
	if (set_api_key(c, v, why, sizeof(why))) {
		errf(err, errlen, "LOCUS_API_KEY: %s", why);
		return -EINVAL;
	}
	return 0;
}

void config_instance_name(const struct engine_config *c, int port, char *out, size_t len)
{
	if (!len)
		return;
	if (c->instance[0]) {
		snprintf(out, len, "%s", c->instance);
		return;
	}
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	char *dot = strchr(host, '.');
	if (dot && dot != host)
		*dot = '\0'; /* the short name: "gpu-07", not "gpu-07.rack3.example.com" */
	char port_s[16];
	int pn = snprintf(port_s, sizeof(port_s), ":%d", port);
	size_t max_host = CFG_INSTANCE_MAX - (size_t)pn; /* pn <= 6: ":65535" */
	size_t n = strlen(host);
	if (n > max_host)
		n = max_host;
	for (size_t i = 0; i < n; i++)
		if (!instance_char(host[i]) || host[i] == ':')
			host[i] = '-';
	host[n] = '\0';
	snprintf(out, len, "%s%s", host, port_s);
}

int config_set(struct engine_config *c, const char *section, const char *key, const char *value, char *err,
	       size_t errlen)
{
	if (!section || !key || !value) {
		errf(err, errlen, "override: section, key and value are required");
		return -EINVAL;
	}
	if (!section_known(section)) {
		errf(err, errlen, "override: unknown section [%.48s]", section);
		return -EINVAL;
	}
	int i = key_find(section, key);
	if (i < 0) {
		char list[160];
		keys_of(section, list, sizeof(list));
		errf(err, errlen, "override: [%s] %.48s: unknown key (expected %s)", section, key, list);
		return -EINVAL;
	}
	char why[192];
	struct engine_config tmp = *c;
	if (key_apply(&tmp, &keys[i], value, why, sizeof(why))) {
		errf(err, errlen, "override: [%s] %s = '%.64s': %s", section, key, value, why);
		return -EINVAL;
	}
	*c = tmp;
	return 0;
}

/* ---- the file ---- */

struct cfg_parse {
	struct engine_config *c;
	const char *name; /* file name for messages */
	const char *buf;
	size_t len, pos;
	int line;             /* 1-based number of the line inih is processing */
	int key_line[N_KEYS]; /* where each key was set, 0: not in this file */
	bool failed;
	int err_line;
	char *err;
	size_t errlen;
};

static void parse_fail(struct cfg_parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void parse_fail(struct cfg_parse *p, const char *fmt, ...)
{
	if (p->failed)
		return;
	p->failed = true;
	p->err_line = p->line;
	char msg[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	errf(p->err, p->errlen, "%s:%d: %s", p->name, p->line, msg);
}

/* Checks one stripped line the way inih will read it (s is NUL-terminated). */
static void check_line(struct cfg_parse *p, const char *s)
{
	if (p->line == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
		s += 3; /* UTF-8 byte order mark, which inih skips */
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0 || *s == ';' || *s == '#')
		return;
	if (*s == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb) {
			parse_fail(p, "expected [section], got '%.64s' (no closing bracket)", s);
			return;
		}
		char name[64];
		size_t nl = (size_t)(rb - s - 1);
		if (nl >= sizeof(name))
			nl = sizeof(name) - 1;
		memcpy(name, s + 1, nl);
		name[nl] = '\0';
		if (!section_known(name))
			parse_fail(
			    p, "unknown section [%s] (expected server, model, backend, numa, batching, kv or limits)",
			    name);
		return;
	}
	if (!memchr(s, '=', n) && !memchr(s, ':', n))
		parse_fail(p, "expected 'key = value' or '[section]', got '%.64s'", s);
}

/* inih's reader: one line per call, blanks at the start removed. */
static char *cfg_reader(char *str, int num, void *stream)
{
	struct cfg_parse *p = stream;
	if (p->failed || p->pos >= p->len || num < 2)
		return NULL;
	const char *s = p->buf + p->pos;
	size_t rest = p->len - p->pos;
	const char *nl = memchr(s, '\n', rest);
	size_t n = nl ? (size_t)(nl - s) : rest;
	p->pos += n + (nl != NULL);
	p->line++;
	if (memchr(s, '\0', n)) {
		parse_fail(p, "NUL byte in the line");
		return NULL;
	}
	while (n && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	bool comment = n && (*s == ';' || *s == '#');
	if (n > (size_t)num - 1) {
		if (!comment) {
			parse_fail(p, "line longer than %d characters", num - 1);
			return NULL;
		}
		n = (size_t)num - 1; /* a long comment is still a comment */
	}
	memcpy(str, s, n);
	str[n] = '\0';
	check_line(p, str);
	return p->failed ? NULL : str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_parse *p = user;
	if (p->failed)
		return 0;
	if (!name || !value) {
		parse_fail(p, "expected 'key = value'");
		return 0;
	}
	if (!*section) {
		parse_fail(p, "%s: key outside any section (put it under [server], [model], ...)", name);
		return 0;
	}
	int i = key_find(section, name);
	if (i < 0) {
		char list[160];
		keys_of(section, list, sizeof(list));
		parse_fail(p, "[%s] %s: unknown key (expected %s)", section, name, list);
		return 0;
	}
	if (p->key_line[i]) {
		parse_fail(p, "[%s] %s: duplicate key (first set on line %d)", section, name, p->key_line[i]);
		return 0;
	}
	p->key_line[i] = p->line;
	char why[192];
	if (key_apply(p->c, &keys[i], value, why, sizeof(why))) {
		parse_fail(p, "[%s] %s = '%.64s': %s", section, name, value, why);
		return 0;
	}
	return 1;
}

int config_parse(struct engine_config *c, const char *text, size_t len, const char *name, char *err, size_t errlen)
{
	struct engine_config tmp = *c;
	struct cfg_parse p = {
	    .c = &tmp, .name = name ? name : "(config)", .buf = text, .len = len, .err = err, .errlen = errlen};
	int rc = ini_parse_stream(cfg_reader, &p, cfg_handler, &p);
	if (rc == -2) {
		errf(err, errlen, "%s: out of memory", p.name);
		return -ENOMEM;
	}
	if (rc > 0 && (!p.failed || rc < p.err_line)) {
		/* A line inih refused that check_line let through. */
		errf(err, errlen, "%s:%d: syntax error: expected 'key = value' or '[section]'", p.name, rc);
		return -EINVAL;
	}
	if (p.failed)
		return -EINVAL;
	if (tmp.kv_tokens > 0 && p.key_line[key_find("kv", "tokens")] && p.key_line[key_find("kv", "memory")]) {
		int a = p.key_line[key_find("kv", "tokens")], b = p.key_line[key_find("kv", "memory")];
		errf(err, errlen, "%s:%d: [kv] %s: set either tokens or memory, not both (the other is on line %d)",
		     p.name, a > b ? a : b, a > b ? "tokens" : "memory", a > b ? b : a);
		return -EINVAL;
	}
	char why[256];
	int k = check_keys(&tmp, why, sizeof(why));
	if (k >= 0) {
		if (p.key_line[k])
			errf(err, errlen, "%s:%d: %s", p.name, p.key_line[k], why);
		else
			errf(err, errlen, "%s: %s", p.name, why);
		return -EINVAL;
	}
	rc = config_apply_env(&tmp, err, errlen);
	if (rc)
		return rc;
	*c = tmp;
	return 0;
}

int config_load(struct engine_config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		int e = errno;
		errf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	char *buf = alloc_mem(CONFIG_MAX_FILE_BYTES + 1);
	if (!buf) {
		fclose(f);
		errf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	size_t n = fread(buf, 1, CONFIG_MAX_FILE_BYTES + 1, f);
	int rc = 0;
	if (ferror(f)) {
		errf(err, errlen, "%s: read error", path);
		rc = -EIO;
	} else if (n > CONFIG_MAX_FILE_BYTES) {
		errf(err, errlen, "%s: larger than %d bytes: not a configuration file", path, CONFIG_MAX_FILE_BYTES);
		rc = -EFBIG;
	}
	fclose(f);
	if (rc == 0)
		rc = config_parse(c, buf, n, path, err, errlen);
	alloc_free(buf);
	return rc;
}
