/*
 * test_config: the INI loader and the placement plan.
 *
 *   - config: defaults; the shipped configs/node0.conf and node1.conf; every
 *     key's parser (sizes, durations, lists, listen addresses) at its edges;
 *     every kind of bad file naming FILE:LINE and the key; *c unchanged on
 *     error; LOCUS_API_KEY; config_set.
 *   - [server] instance (valid, too long, bad characters, the hostname:port
 *     default) and [backend] gpus.
 *   - plan: synthetic hwloc topologies (2 sockets x 4 cores x 2 SMT; the
 *     2-core machine this was written on), XML topologies from
 *     tests/data/topo (a GPU on node 1; a cgroup-restricted CPU set) and
 *     tests/data/topo-2s-8gpu.xml (4 GPUs per socket: gpus = LIST), KV and
 *     scratch sizing on the tiny model of the GGUF fuzz corpus, plan_print.
 *
 * Parser input is placed right before a PROT_NONE page, so reading past the
 * given length crashes. Runs from the source root (CTest sets it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/config.h"
#include "tests/check.h"

#define TINY_MODEL     "tests/fuzz/corpus/gguf/tiny-Q8_0.gguf"
#define SMT_2S         "pack:2 numa:1 core:4 pu:2"
#define GPU_XML        "tests/data/topo/2s-gpu.xml"
#define RESTRICTED_XML "tests/data/topo/1s-restricted.xml"
#define GPU8_XML       "tests/data/topo-2s-8gpu.xml"

/* ---- guarded parsing ---- */

struct guard {
	char *map;
	size_t map_len, page;
};

static void guard_init(struct guard *g)
{
	g->page = (size_t)sysconf(_SC_PAGESIZE);
	g->map_len = 64 * g->page; /* inputs up to 63 pages */
	g->map = mmap(NULL, g->map_len + g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->map == MAP_FAILED || mprotect(g->map + g->map_len, g->page, PROT_NONE)) {
		perror("mmap");
		exit(1);
	}
}

static struct guard g_guard;

/* config_parse on text that ends right at the guard page (no NUL after it). */
static int parse_n(struct engine_config *c, const char *text, size_t n, char *err, size_t errlen)
{
	if (n > g_guard.map_len) {
		fprintf(stderr, "test input too long\n");
		exit(1);
	}
	char *p = g_guard.map + g_guard.map_len - n;
	memcpy(p, text, n);
	return config_parse(c, p, n, "t.conf", err, errlen);
}

static int parse(struct engine_config *c, const char *text, char *err, size_t errlen)
{
	return parse_n(c, text, strlen(text), err, errlen);
}

/* ---- config ---- */

/* Field by field: struct padding is not guaranteed to survive assignment. */
static bool same_config(const struct engine_config *a, const struct engine_config *b)
{
	return strcmp(a->host, b->host) == 0 && a->port == b->port && a->net_threads == b->net_threads &&
	       strcmp(a->api_key, b->api_key) == 0 && a->max_conns == b->max_conns &&
	       strcmp(a->model_path, b->model_path) == 0 && strcmp(a->model_name, b->model_name) == 0 &&
	       a->ctx == b->ctx && strcmp(a->chat_template, b->chat_template) == 0 && a->backend == b->backend &&
	       a->threads == b->threads && a->null_delay_us == b->null_delay_us && a->node == b->node &&
	       a->n_cpus == b->n_cpus && memcmp(a->cpus, b->cpus, (size_t)a->n_cpus * sizeof(int)) == 0 &&
	       a->pin == b->pin && a->membind == b->membind && a->max_seqs == b->max_seqs &&
	       a->step_tokens == b->step_tokens && a->prefill_chunk == b->prefill_chunk &&
	       a->kv_tokens == b->kv_tokens && a->kv_memory_bytes == b->kv_memory_bytes &&
	       a->kv_block_size == b->kv_block_size && a->max_body_bytes == b->max_body_bytes &&
	       a->max_header_bytes == b->max_header_bytes && a->header_timeout_ms == b->header_timeout_ms &&
	       a->idle_timeout_ms == b->idle_timeout_ms && a->request_timeout_ms == b->request_timeout_ms &&
	       a->max_waiting == b->max_waiting && a->ring_slots == b->ring_slots &&
	       a->max_tokens_limit == b->max_tokens_limit && a->drain_timeout_ms == b->drain_timeout_ms &&
	       strcmp(a->instance, b->instance) == 0 && a->n_gpus == b->n_gpus &&
	       memcmp(a->gpus, b->gpus, (size_t)a->n_gpus * sizeof(int)) == 0;
}

static void test_defaults(void)
{
	struct engine_config c;
	config_default(&c);
	CHECK(strcmp(c.host, "127.0.0.1") == 0 && c.port == 8080, "listen %s:%d", c.host, c.port);
	CHECK(c.net_threads == 1 && c.max_conns == 4096 && c.api_key[0] == '\0', "server");
	CHECK(c.backend == CFG_BACKEND_AUTO && c.threads == 0 && c.null_delay_us == 0 && c.n_gpus == 0, "backend");
	CHECK(c.instance[0] == '\0', "instance empty (hostname:port)");
	CHECK(c.node == -1 && c.n_cpus == 0 && c.pin && c.membind == ALLOC_POLICY_PREFERRED, "numa");
	CHECK(c.max_seqs == 16 && c.step_tokens == 512 && c.prefill_chunk == 256, "batching");
	CHECK(c.kv_tokens == 0 && c.kv_memory_bytes == 256LL << 20 && c.kv_block_size == 16, "kv");
	CHECK(c.max_body_bytes == 1 << 20 && c.max_header_bytes == 8 << 10, "limits sizes");
	CHECK(c.header_timeout_ms == 10000 && c.idle_timeout_ms == 60000 && c.request_timeout_ms == 600000 &&
	          c.drain_timeout_ms == 30000,
	      "limits durations");
	CHECK(c.max_waiting == 256 && c.ring_slots == 1024 && c.max_tokens_limit == 0, "limits counts");
	char err[256];
	CHECK(config_check(&c, err, sizeof(err)) == 0, "defaults pass config_check: %s", err);
}

static void test_valid_file(void)
{
	struct engine_config c;
	config_default(&c);
	char err[512] = "";
	const char *text = "\xEF\xBB\xBF# comment\r\n"
	                   "; another\n"
	                   "[server]\n"
	                   "listen = [::1]:9000\r\n"
	                   "  net_threads = 3   ; indented, inline comment\n"
	                   "api_key = sk-abc_123\n"
	                   "max_conns = 100\n"
	                   "instance = gpu-07.rack_3:node1\n"
	                   "[model]\n"
	                   "path = /models/x y.gguf\n"
	                   "name = my-model\n"
	                   "ctx = 4096\n"
	                   "chat_template = ChatML\n"
	                   "[backend]\n"
	                   "type = null\n"
	                   "threads = 7\n"
	                   "null_delay_us = 250\n"
	                   "gpus = 5, 0-1\n"
	                   "[numa]\n"
	                   "node = 1\n"
	                   "cpus = 0-3, 8 ,10-11\n"
	                   "pin = off\n"
	                   "membind = strict\n"
	                   "[batching]\n"
	                   "max_seqs = 8\n"
	                   "step_tokens = 128\n"
	                   "prefill_chunk = 64\n"
	                   "[kv]\n"
	                   "tokens = 4096\n"
	                   "block_size = 32\n"
	                   "[limits]\n"
	                   "max_body = 2 MiB\n"
	                   "max_header = 16KiB\n"
	                   "header_timeout = 250ms\n"
	                   "idle_timeout = 2m\n"
	                   "request_timeout = 0\n"
	                   "max_waiting = 0\n"
	                   "ring_slots = 65536\n"
	                   "max_tokens = 1000\n"
	                   "drain_timeout = 1h\n"
	                   "[server]\n"
	                   "\t\n";
	unsetenv("LOCUS_API_KEY");
	int rc = parse(&c, text, err, sizeof(err));
	CHECK(rc == 0, "valid file: %d %s", rc, err);
	CHECK(strcmp(c.host, "::1") == 0 && c.port == 9000, "listen %s %d", c.host, c.port);
	CHECK(c.net_threads == 3 && c.max_conns == 100 && strcmp(c.api_key, "sk-abc_123") == 0, "server %d %s",
	      c.net_threads, c.api_key);
	CHECK(strcmp(c.model_path, "/models/x y.gguf") == 0 && strcmp(c.model_name, "my-model") == 0, "model %s",
	      c.model_path);
	CHECK(c.ctx == 4096 && strcmp(c.chat_template, "chatml") == 0, "ctx %lld %s", (long long)c.ctx,
	      c.chat_template);
	CHECK(c.backend == CFG_BACKEND_NULL && c.threads == 7 && c.null_delay_us == 250, "backend");
	CHECK(strcmp(c.instance, "gpu-07.rack_3:node1") == 0, "instance '%s'", c.instance);
	CHECK(c.n_gpus == 3 && c.gpus[0] == 5 && c.gpus[1] == 0 && c.gpus[2] == 1, "gpus n=%d", c.n_gpus);
	CHECK(c.node == 1 && !c.pin && c.membind == ALLOC_POLICY_STRICT, "numa");
	int want[] = {0, 1, 2, 3, 8, 10, 11};
	CHECK(c.n_cpus == 7 && memcmp(c.cpus, want, sizeof(want)) == 0, "cpus n=%d", c.n_cpus);
	CHECK(c.max_seqs == 8 && c.step_tokens == 128 && c.prefill_chunk == 64, "batching");
	CHECK(c.kv_tokens == 4096 && c.kv_block_size == 32, "kv");
	CHECK(c.max_body_bytes == 2 << 20 && c.max_header_bytes == 16 << 10, "sizes");
	CHECK(c.header_timeout_ms == 250 && c.idle_timeout_ms == 120000 && c.request_timeout_ms == 0 &&
	          c.drain_timeout_ms == 3600000,
	      "durations %d %d", c.header_timeout_ms, c.idle_timeout_ms);
	CHECK(c.max_waiting == 0 && c.ring_slots == 65536 && c.max_tokens_limit == 1000, "limits");

	/* auto forms */
	config_default(&c);
	rc = parse(&c,
	           "[numa]\nnode = auto\ncpus = auto\n[backend]\nthreads = auto\ngpus = auto\n[model]\nctx = auto\n"
	           "[server]\ninstance =\n",
	           err, sizeof(err));
	CHECK(rc == 0 && c.node == -1 && c.n_cpus == 0 && c.threads == 0 && c.ctx == 0 && c.n_gpus == 0 &&
	          c.instance[0] == '\0',
	      "auto forms: %s", err);
	/* an empty file and a file of comments */
	CHECK(parse(&c, "", err, sizeof(err)) == 0, "empty file: %s", err);
	CHECK(parse(&c, "# only\n;comments\n\n", err, sizeof(err)) == 0, "comments: %s", err);
	/* the last line without a newline */
	CHECK(parse(&c, "[server]\nnet_threads = 2", err, sizeof(err)) == 0 && c.net_threads == 2, "no final newline");
}

static void test_shipped_configs(void)
{
	struct engine_config c;
	char err[512] = "";
	unsetenv("LOCUS_API_KEY");
	config_default(&c);
	int rc = config_load(&c, "configs/node0.conf", err, sizeof(err));
	CHECK(rc == 0, "node0.conf: %s", err);
	CHECK(c.node == 0 && c.port == 8080 && strcmp(c.host, "127.0.0.1") == 0, "node0: node %d port %d", c.node,
	      c.port);
	struct engine_config d;
	config_default(&d);
	/* node0.conf restates every default, except node and the model path */
	d.node = 0;
	snprintf(d.model_path, sizeof(d.model_path), "%s", c.model_path);
	CHECK(same_config(&c, &d), "node0.conf states the defaults");

	config_default(&c);
	rc = config_load(&c, "configs/node1.conf", err, sizeof(err));
	CHECK(rc == 0, "node1.conf: %s", err);
	CHECK(c.node == 1 && c.port == 8081, "node1: node %d port %d", c.node, c.port);
	d.node = 1;
	d.port = 8081;
	CHECK(same_config(&c, &d), "node1.conf differs from node0.conf only in node and port");

	rc = config_load(&c, "configs/does-not-exist.conf", err, sizeof(err));
	CHECK(rc == -ENOENT && strstr(err, "configs/does-not-exist.conf"), "missing file: %d %s", rc, err);
}

struct bad_case {
	const char *text;
	int line;
	const char *want; /* substring of the message besides t.conf:LINE */
};

static void test_bad_files(void)
{
	/* clang-format off */
	static const struct bad_case cases[] = {
		{"[server]\nlisten = 1.2.3.4\n", 2, "[server] listen = '1.2.3.4': expected HOST:PORT"},
		{"[server]\nlisten = :8080\n", 2, "listen"},
		{"[server]\nlisten = h:65536\n", 2, "port 0..65535"},
		{"[server]\nlisten = ::1:80\n", 2, "brackets"},
		{"[server]\nlisten = [::1]80\n", 2, "listen"},
		{"[server]\nlisten = a b:80\n", 2, "listen"},
		{"[server]\nnet_threads = 0\n", 2, "[server] net_threads = '0': out of range: expected an integer 1..256"},
		{"[server]\nnet_threads = two\n", 2, "net_threads = 'two': not an integer"},
		{"[server]\nnet_threads = 1x\n", 2, "net_threads"},
		{"[server]\nnet_threads = +1\n", 2, "net_threads"},
		{"[server]\nnet_threads =\n", 2, "net_threads = '': empty value"},
		{"[server]\nmax_conns = 99999999999999999999999\n", 2, "max_conns = '99999999999999999999999': too large"},
		{"[server]\napi_key = a b\n", 2, "api_key"},
		{"[server]\ninstance = node 0\n", 2, "[server] instance = 'node 0': expected 1..63 characters of A-Z a-z 0-9 . _ : -"},
		{"[server]\ninstance = a/b\n", 2, "[server] instance = 'a/b': expected 1..63 characters"},
		{"[server]\ninstance = a\"b\n", 2, "[server] instance"},
		{"[server]\ninstance = n\xC3\xA9ud\n", 2, "[server] instance"},
		{"[server]\ninstance = 0123456789012345678901234567890123456789012345678901234567890123\n", 2,
		 "[server] instance = '0123456789012345678901234567890123456789012345678901234567890123': longer than 63 characters"},
		{"[backend]\ngpus = 64\n", 2, "[backend] gpus = '64': expected auto or a list of GPUs 0..63"},
		{"[backend]\ngpus = 1,1\n", 2, "GPU 1 is listed twice"},
		{"[backend]\ngpus = one\n", 2, "[backend] gpus"},
		{"[backend]\ngpus =\n", 2, "[backend] gpus"},
		{"[model]\npath =\n", 2, "[model] path"},
		{"[model]\nctx = -1\n", 2, "[model] ctx"},
		{"[model]\nctx = 16777217\n", 2, "[model] ctx"},
		{"[model]\nchat_template = vicuna\n", 2, "chat_template = 'vicuna': expected auto"},
		{"[model]\nname = a\"b\n", 2, "[model] name"},
		{"[backend]\ntype = gpu\n", 2, "[backend] type = 'gpu': expected auto, cpu, cuda or null"},
		{"[backend]\nthreads = 1025\n", 2, "[backend] threads = '1025': out of range: expected auto or an integer 0..1024"},
		{"[backend]\nthreads = -1\n", 2, "threads"},
		{"[backend]\nnull_delay_us = 10000001\n", 2, "null_delay_us"},
		{"[numa]\nnode = -1\n", 2, "[numa] node"},
		{"[numa]\nnode = first\n", 2, "[numa] node"},
		{"[numa]\ncpus = 3-1\n", 2, "[numa] cpus = '3-1': bad range"},
		{"[numa]\ncpus = 1,1\n", 2, "CPU 1 is listed twice"},
		{"[numa]\ncpus = 0-3,2\n", 2, "CPU 2 is listed twice"},
		{"[numa]\ncpus = 1024\n", 2, "[numa] cpus"},
		{"[numa]\ncpus = 0-\n", 2, "[numa] cpus"},
		{"[numa]\ncpus = ,1\n", 2, "[numa] cpus"},
		{"[numa]\ncpus = 1,\n", 2, "[numa] cpus"},
		{"[numa]\ncpus =\n", 2, "[numa] cpus"},
		{"[numa]\ncpus = 0;1\n", 2, "[numa] cpus"},
		{"[numa]\npin = maybe\n", 2, "[numa] pin = 'maybe': expected on or off"},
		{"[numa]\nmembind = interleave\n", 2, "[numa] membind"},
		{"[batching]\nmax_seqs = 0\n", 2, "[batching] max_seqs"},
		{"[batching]\nstep_tokens = 65537\n", 2, "[batching] step_tokens"},
		{"[kv]\nblock_size = 0\n", 2, "[kv] block_size"},
		{"[kv]\nblock_size = 257\n", 2, "[kv] block_size = '257': out of range: expected an integer 1..256"},
		{"[kv]\nmemory = 512KiB\n", 2, "[kv] memory = '512KiB': out of range: expected a size 1MiB..16TiB"},
		{"[kv]\nmemory = 99999999999GiB\n", 2, "[kv] memory = '99999999999GiB': too large"},
		{"[kv]\nmemory = 99999999999999999999B\n", 2, "too large"},
		{"[kv]\nmemory = -1MiB\n", 2, "[kv] memory = '-1MiB': negative"},
		{"[kv]\nmemory = 512\n", 2, "[kv] memory = '512': missing unit"},
		{"[kv]\nmemory = 1GB\n", 2, "unit 'GB' is ambiguous"},
		{"[kv]\nmemory = 1.5GiB\n", 2, "not a whole number"},
		{"[kv]\nmemory = 1 PiB\n", 2, "unknown unit 'PiB'"},
		{"[kv]\nmemory = GiB\n", 2, "not a number"},
		{"[kv]\ntokens = many\n", 2, "[kv] tokens"},
		{"[limits]\nmax_body = 2GiB\n", 2, "[limits] max_body = '2GiB': out of range: expected a size 1KiB..1GiB"},
		{"[limits]\nheader_timeout = 10\n", 2, "header_timeout = '10': missing unit"},
		{"[limits]\nheader_timeout = 0s\n", 2, "header_timeout = '0s': out of range: expected a duration 1ms..1h"},
		{"[limits]\nheader_timeout = 2h\n", 2, "out of range"},
		{"[limits]\nidle_timeout = 1d\n", 2, "unknown unit 'd'"},
		{"[limits]\nrequest_timeout = -5s\n", 2, "negative"},
		{"[limits]\nrequest_timeout = 9999999999999999h\n", 2, "too large"},
		{"[limits]\nring_slots = 1000\n", 2, "[limits] ring_slots = '1000': not a power of two"},
		{"[limits]\nring_slots = 8\n", 2, "ring_slots"},
		{"[limits]\nring_slots = 2097152\n", 2, "ring_slots"},
		{"[limits]\nmax_tokens = -3\n", 2, "max_tokens"},
		/* structure */
		{"[server]\nlisten = 1.2.3.4:80\nport = 80\n", 3, "[server] port: unknown key (expected listen, net_threads, api_key, max_conns, instance)"},
		{"[servers]\n", 1, "unknown section [servers]"},
		{"[server]\nlisten = 1.2.3.4:80\n\n[Server]\n", 4, "unknown section [Server]"},
		{"listen = 1.2.3.4:80\n", 1, "listen: key outside any section"},
		{"[server]\nnet_threads = 1\n# x\nnet_threads = 2\n", 4, "[server] net_threads: duplicate key (first set on line 2)"},
		{"[server]\nnet_threads = 1\n[model]\nctx = 5\n[server]\nnet_threads = 2\n", 6, "duplicate key"},
		{"[server\n", 1, "no closing bracket"},
		{"[server]\njust words\n", 2, "expected 'key = value' or '[section]', got 'just words'"},
		{"[server]\nnet_threads = 1\n\n\nbad line\n[model]\n", 5, "got 'bad line'"},
		{"[kv]\ntokens = 100\nmemory = 1GiB\n", 3, "[kv] memory: set either tokens or memory, not both (the other is on line 2)"},
		{"[batching]\nprefill_chunk = 600\n", 2, "prefill_chunk = 600 exceeds step_tokens = 512"},
		{"[batching]\nmax_seqs = 600\nstep_tokens = 1024\nprefill_chunk = 2000\n", 4, "prefill_chunk = 2000 exceeds"},
		{"[batching]\nmax_seqs = 600\n", 2, "max_seqs = 600 exceeds step_tokens = 512"},
		{"[model]\nctx = 100\n[limits]\nmax_tokens = 101\n", 4, "max_tokens = 101 exceeds [model] ctx = 100"},
	};
	/* clang-format on */
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct engine_config c, before;
		config_default(&c);
		c.net_threads = 5; /* a non-default value, to see that c is untouched */
		before = c;
		char err[512] = "", at[32];
		int rc = parse(&c, cases[i].text, err, sizeof(err));
		snprintf(at, sizeof(at), "t.conf:%d: ", cases[i].line);
		CHECK(rc == -EINVAL, "case %zu: rc %d (%s)", i, rc, cases[i].text);
		CHECK(strncmp(err, at, strlen(at)) == 0, "case %zu: '%s' does not start with '%s'", i, err, at);
		CHECK(strstr(err, cases[i].want) != NULL, "case %zu: '%s' lacks '%s'", i, err, cases[i].want);
		CHECK(same_config(&c, &before), "case %zu: config changed on error", i);
		if (getenv("TEST_CONFIG_VERBOSE"))
			printf("%s\n", err);
	}
}

static void test_bad_bytes(void)
{
	struct engine_config c;
	config_default(&c);
	char err[512] = "";
	/* NUL byte */
	const char nul[] = "[server]\nnet_threads = 1\0 2\n";
	int rc = parse_n(&c, nul, sizeof(nul) - 1, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "t.conf:2: NUL byte"), "NUL: %s", err);
	/* a line longer than inih's buffer is an error, not two lines */
	char line[600];
	snprintf(line, sizeof(line), "[model]\npath = /%0*d\n", 400, 0);
	rc = parse(&c, line, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "t.conf:2: line longer than"), "long line: %s", err);
	/* ... except a comment */
	snprintf(line, sizeof(line), "# %0*d\n[server]\nnet_threads = 3\n", 400, 0);
	rc = parse(&c, line, err, sizeof(err));
	CHECK(rc == 0 && c.net_threads == 3, "long comment: %s", err);
	/* longest accepted value */
	snprintf(line, sizeof(line), "[model]\npath = /%0*d\n", 190, 0);
	rc = parse(&c, line, err, sizeof(err));
	CHECK(rc == 0 && strlen(c.model_path) == 191, "190-character path: %s", err);
	/* a file over 1 MiB is refused by config_load; tested through a temp file */
	char path[] = "/tmp/test_config_XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp");
	if (fd >= 0) {
		CHECK(ftruncate(fd, (2 << 20)) == 0, "ftruncate");
		close(fd);
		rc = config_load(&c, path, err, sizeof(err));
		CHECK(rc == -EFBIG && strstr(err, path), "big file: %d %s", rc, err);
		unlink(path);
	}
}

static void test_env_and_set(void)
{
	struct engine_config c;
	char err[512] = "";
	config_default(&c);
	setenv("LOCUS_API_KEY", "from-env", 1);
	int rc = parse(&c, "[server]\napi_key = from-file\n", err, sizeof(err));
	CHECK(rc == 0 && strcmp(c.api_key, "from-env") == 0, "env overrides file: %s", c.api_key);
	setenv("LOCUS_API_KEY", "", 1);
	rc = parse(&c, "[server]\napi_key = from-file\n", err, sizeof(err));
	CHECK(rc == 0 && strcmp(c.api_key, "from-file") == 0, "empty env ignored: %s", c.api_key);
	setenv("LOCUS_API_KEY", "has space", 1);
	struct engine_config before = c;
	rc = parse(&c, "[server]\napi_key = from-file\n", err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "LOCUS_API_KEY"), "bad env: %s", err);
	CHECK(same_config(&c, &before), "bad env leaves c");
	config_default(&c);
	setenv("LOCUS_API_KEY", "k2", 1);
	CHECK(config_apply_env(&c, err, sizeof(err)) == 0 && strcmp(c.api_key, "k2") == 0, "config_apply_env");
	unsetenv("LOCUS_API_KEY");

	config_default(&c);
	CHECK(config_set(&c, "server", "listen", "0.0.0.0:0", err, sizeof(err)) == 0 && c.port == 0 &&
	          strcmp(c.host, "0.0.0.0") == 0,
	      "set listen: %s", err);
	CHECK(config_set(&c, "backend", "type", "CPU", err, sizeof(err)) == 0 && c.backend == CFG_BACKEND_CPU,
	      "set backend");
	char longpath[1100];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[600] = '\0';
	CHECK(config_set(&c, "model", "path", longpath, err, sizeof(err)) == 0 && strlen(c.model_path) == 600,
	      "set long path (longer than a file line)");
	longpath[600] = 'a';
	longpath[sizeof(longpath) - 1] = '\0';
	CHECK(config_set(&c, "model", "path", longpath, err, sizeof(err)) == -EINVAL && strlen(c.model_path) == 600,
	      "path over 1023");
	rc = config_set(&c, "server", "listen", "nope", err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "override: [server] listen = 'nope'"), "set bad: %s", err);
	CHECK(c.port == 0, "failed set leaves c");
	rc = config_set(&c, "server", "nope", "1", err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[server] nope: unknown key"), "set unknown key: %s", err);
	rc = config_set(&c, "nope", "x", "1", err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "unknown section [nope]"), "set unknown section: %s", err);
	/* config_set does not cross-check; config_check does */
	CHECK(config_set(&c, "batching", "step_tokens", "64", err, sizeof(err)) == 0, "set step_tokens");
	rc = config_check(&c, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "prefill_chunk = 256 exceeds step_tokens = 64"), "check: %s", err);
	/* sizes and durations at their edges */
	struct {
		const char *section, *key, *value;
		int ok;
	} edges[] = {
	    /* clang-format off */
		{"kv", "memory", "1MiB", 1},         {"kv", "memory", "1048575B", 0},  {"kv", "memory", "16TiB", 1},
		{"kv", "memory", "16385GiB", 0},     {"kv", "memory", "1048576 b", 1}, {"kv", "memory", "0", 0},
		{"kv", "memory", "8388608TiB", 0},   {"limits", "max_body", "1kib", 1}, {"limits", "max_body", "1K", 0},
		{"limits", "request_timeout", "0", 1}, {"limits", "request_timeout", "24h", 1},
		{"limits", "request_timeout", "1441m", 0}, {"limits", "drain_timeout", "0ms", 1},
		{"limits", "header_timeout", "1ms", 1}, {"limits", "header_timeout", "3600s", 1},
		{"limits", "header_timeout", "3600001ms", 0}, {"limits", "header_timeout", "1.5s", 0},
		{"limits", "header_timeout", "1 s", 1}, {"limits", "header_timeout", "s", 0},
		{"limits", "ring_slots", "16", 1},    {"limits", "ring_slots", "1048576", 1},
		{"server", "listen", "[fe80::1%eth0]:1", 1}, {"server", "listen", "localhost:65535", 1},
		{"server", "listen", "h:-1", 0},
		{"server", "instance", "012345678901234567890123456789012345678901234567890123456789012", 1},
		{"server", "instance", "0123456789012345678901234567890123456789012345678901234567890123", 0},
		{"server", "instance", "", 1}, {"server", "instance", "A.b_c:d-9", 1}, {"server", "instance", "a\r\nX: y", 0},
		{"backend", "gpus", "0-63", 1}, {"backend", "gpus", "auto", 1}, {"backend", "gpus", "7,3", 1},
	    /* clang-format on */
	};
	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		config_default(&c);
		rc = config_set(&c, edges[i].section, edges[i].key, edges[i].value, err, sizeof(err));
		CHECK((rc == 0) == edges[i].ok, "%s.%s = %s: rc %d %s", edges[i].section, edges[i].key, edges[i].value,
		      rc, rc ? err : "");
	}
	config_default(&c);
	config_set(&c, "limits", "header_timeout", "2m", err, sizeof(err));
	CHECK(c.header_timeout_ms == 120000, "2m = %d ms", c.header_timeout_ms);
	config_set(&c, "kv", "memory", "3GiB", err, sizeof(err));
	CHECK(c.kv_memory_bytes == 3LL << 30, "3GiB");
}

/* X-Locus-Instance: the configured name, else the short hostname and the port. */
static void test_instance_name(void)
{
	struct engine_config c;
	char name[CFG_INSTANCE_MAX + 1], want[CFG_INSTANCE_MAX + 1], host[256] = "";
	config_default(&c);
	config_instance_name(&c, 8081, name, sizeof(name));
	CHECK(gethostname(host, sizeof(host) - 1) == 0, "gethostname");
	char *dot = strchr(host, '.');
	if (dot && dot != host)
		*dot = '\0';
	size_t n = strlen(host);
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", host[i]))
			host[i] = '-';
	snprintf(want, sizeof(want), "%.57s:8081", host);
	CHECK(strcmp(name, want) == 0, "default instance '%s', want '%s'", name, want);
	/* whatever the host is called, the name is a valid [server] instance */
	struct engine_config d;
	config_default(&d);
	char err[256] = "";
	CHECK(config_set(&d, "server", "instance", name, err, sizeof(err)) == 0, "default name valid: %s", err);
	config_instance_name(&c, 0, name, sizeof(name));
	CHECK(strlen(name) >= 3 && strcmp(name + strlen(name) - 2, ":0") == 0, "port 0: '%s'", name);
	CHECK(config_set(&c, "server", "instance", "vm-node1", err, sizeof(err)) == 0, "set instance: %s", err);
	config_instance_name(&c, 8081, name, sizeof(name));
	CHECK(strcmp(name, "vm-node1") == 0, "configured instance '%s'", name);
}

/* ---- plan ---- */

static struct plan *g_plan;

static int resolve(struct engine_config *c, const char *topo, unsigned flags, char *err, size_t errlen)
{
	return plan_resolve_ex(c, topo, flags, g_plan, err, errlen);
}

static bool cpus_are(const int *cpus, int n, const int *want, int n_want)
{
	return n == n_want && memcmp(cpus, want, (size_t)n * sizeof(int)) == 0;
}

static bool has_warning(const struct plan *p, const char *s)
{
	for (int i = 0; i < p->n_warnings; i++)
		if (strstr(p->warnings[i], s))
			return true;
	return false;
}

static void tiny(struct engine_config *c)
{
	config_default(c);
	snprintf(c->model_path, sizeof(c->model_path), "%s", TINY_MODEL);
}

static void test_plan_two_sockets(void)
{
	struct engine_config c;
	struct plan *p = g_plan;
	char err[512] = "";
	tiny(&c);
	int rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0, "2s: %s", err);
	CHECK(strstr(p->topology, "2 packages, 2 NUMA nodes, 8 cores, 16 PUs, no GPU"), "topology '%s'", p->topology);
	CHECK(p->backend == CFG_BACKEND_CPU && p->n_nodes == 2, "backend %d nodes %d", p->backend, p->n_nodes);
	/* SMT siblings (odd PUs) skipped; the net thread takes node 0's last core */
	CHECK(p->nodes[0].node == 0 && cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0, 2, 4}, 3),
	      "node 0 cpus");
	CHECK(p->nodes[1].node == 1 && cpus_are(p->nodes[1].cpus, p->nodes[1].n_cpus, (int[]){8, 10, 12, 14}, 4),
	      "node 1 cpus");
	CHECK(p->nodes[0].n_threads == 3 && p->nodes[1].n_threads == 4, "threads");
	CHECK(cpus_are(p->net_cpus, p->n_net_cpus, (int[]){6}, 1) && !p->net_shared, "net cpus");
	CHECK(p->nodes[0].gpu == -1 && p->pin && p->membind == ALLOC_POLICY_PREFERRED, "gpu/pin/membind");
	CHECK(p->kv_bytes_per_token == 1 * 1 * 16 * 2 * 2, "bytes per token %lld", (long long)p->kv_bytes_per_token);
	CHECK(p->nodes[0].kv_tokens == (256LL << 20) / 64 && p->nodes[0].kv_bytes == 256LL << 20, "kv");
	CHECK(p->nodes[0].scratch_bytes > 0 && p->weight_bytes > 0 && p->ctx == 2048, "scratch/weights/ctx");
	CHECK(strcmp(p->model_name, "tiny-Q8_0") == 0, "model name %s", p->model_name);
	CHECK(p->n_warnings == 0, "no warnings (%d: %s)", p->n_warnings, p->warnings[0]);

	/* two net threads: two cores of node 0 */
	c.net_threads = 2;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0, 2}, 2) &&
	          cpus_are(p->net_cpus, p->n_net_cpus, (int[]){6, 4}, 2),
	      "2 net threads: %s", err);
	/* three would leave one compute core: the third shares */
	c.net_threads = 3;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].n_cpus == 2 && p->n_net_cpus == 3 && p->net_shared && has_warning(p, "share"),
	      "3 net threads");
	c.net_threads = 1;

	/* node = 1: only the second node; the net thread moves with it */
	c.node = 1;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 1 && p->nodes[0].node == 1, "node=1: %s", err);
	CHECK(cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){8, 10, 12}, 3) &&
	          cpus_are(p->net_cpus, p->n_net_cpus, (int[]){14}, 1),
	      "node=1 cpus");

	/* node = 5 does not exist */
	c.node = 5;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[numa] node = 5: no such NUMA node (this machine has nodes 0-1)"),
	      "node=5: %s", err);
	c.node = -1;

	/* cpus = LIST: split by node, SMT siblings kept when listed; net on a
	 * free core of the first node */
	CHECK(config_set(&c, "numa", "cpus", "0-3,9-11", err, sizeof(err)) == 0, "set cpus");
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 2, "list: %s", err);
	CHECK(cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0, 1, 2, 3}, 4) &&
	          cpus_are(p->nodes[1].cpus, p->nodes[1].n_cpus, (int[]){9, 10, 11}, 3),
	      "list split");
	CHECK(p->nodes[1].cpus[0] == 9 && cpus_are(p->net_cpus, p->n_net_cpus, (int[]){6}, 1) && !p->net_shared,
	      "list dispatcher/net");
	/* a list on one node only: one plan node */
	config_set(&c, "numa", "cpus", "12,8", err, sizeof(err));
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 1 && p->nodes[0].node == 1 &&
	          cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){12, 8}, 2) && p->nodes[0].cpus[0] == 12,
	      "list on node 1 keeps order: %s", err);
	CHECK(cpus_are(p->net_cpus, p->n_net_cpus, (int[]){14}, 1), "net on node 1's free core");
	/* a listed CPU on another node than node = N */
	c.node = 1;
	config_set(&c, "numa", "cpus", "0-3", err, sizeof(err));
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[numa] cpus: CPU 0 is on NUMA node 0, but node = 1"), "wrong node: %s",
	      err);
	c.node = -1;
	/* a CPU the machine does not have */
	config_set(&c, "numa", "cpus", "0,99", err, sizeof(err));
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[numa] cpus: CPU 99 is not one this process may use (usable: 0-15)"),
	      "cpu 99: %s", err);
	c.n_cpus = 0;

	/* threads */
	c.threads = 5;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[backend] threads = 5 exceeds the 4 CPUs of node 0"), "threads 5: %s", err);
	c.threads = 2;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0, 2}, 2) &&
	          cpus_are(p->nodes[1].cpus, p->nodes[1].n_cpus, (int[]){8, 10}, 2) &&
	          cpus_are(p->net_cpus, p->n_net_cpus, (int[]){6}, 1),
	      "threads 2: %s", err);
	/* explicit threads = all cores: the net thread shares rather than
	 * shrinking compute below what was asked */
	c.threads = 4;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].n_cpus == 4 && p->net_shared && p->net_cpus[0] == 6, "threads 4: %s", err);
	c.threads = 6;
	c.pin = false;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].n_threads == 6 && p->nodes[0].n_cpus == 4 && !p->pin &&
	          has_warning(p, "oversubscribed") && has_warning(p, "pin = off"),
	      "pin off, threads 6: %s", err);
	c.threads = 0;
	c.pin = true;
	c.membind = ALLOC_POLICY_STRICT;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->membind == ALLOC_POLICY_STRICT, "membind copied");

	/* no PU level: cores are PUs */
	tiny(&c);
	rc = resolve(&c, "pack:2 numa:1 pu:3", 0, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 2 && p->nodes[0].n_cpus == 2 && p->nodes[1].n_cpus == 3 && p->net_cpus[0] == 2,
	      "no cores level: %s", err);
	/* two NUMA nodes in one package */
	rc = resolve(&c, "pack:1 numa:2 core:2 pu:1", 0, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 2 && p->nodes[1].node == 1 && p->nodes[1].cpus[0] == 2, "numa:2: %s", err);
	/* a bad description */
	rc = resolve(&c, "pack:x", 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "topology 'pack:x'"), "bad synthetic: %s", err);
	rc = resolve(&c, "tests/data/topo/missing.xml", 0, err, sizeof(err));
	CHECK(rc < 0 && strstr(err, "missing.xml"), "missing xml: %s", err);
}

static void test_plan_two_cores(void)
{
	struct engine_config c;
	struct plan *p = g_plan;
	char err[512] = "";
	tiny(&c);
	/* the machine this was written on: 1 socket, 2 cores, no SMT */
	int rc = resolve(&c, "pack:1 numa:1 core:2 pu:1", 0, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 1, "2 cores: %s", err);
	CHECK(strstr(p->topology, "1 package, 1 NUMA node, 2 cores, 2 PUs, no GPU"), "topology '%s'", p->topology);
	CHECK(cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0, 1}, 2) && p->nodes[0].n_threads == 2,
	      "everything computes");
	CHECK(cpus_are(p->net_cpus, p->n_net_cpus, (int[]){1}, 1) && p->net_shared && has_warning(p, "shares CPU 1"),
	      "net shares the last core");
	/* three cores: one goes to the net thread */
	rc = resolve(&c, "pack:1 numa:1 core:3 pu:1", 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].n_cpus == 2 && p->net_cpus[0] == 2 && !p->net_shared, "3 cores: %s", err);

	/* null backend without a model: one node, one thread, fixed shape */
	config_default(&c);
	c.backend = CFG_BACKEND_NULL;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->backend == CFG_BACKEND_NULL && p->n_nodes == 1 && p->nodes[0].node == 0, "null: %s", err);
	CHECK(p->nodes[0].n_threads == 1 && cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0}, 1) &&
	          p->net_cpus[0] == 6 && !p->net_shared,
	      "null placement");
	CHECK(p->model_fixed_shape && has_warning(p, "fixed shape") && p->kv_bytes_per_token == 256 &&
	          p->weight_bytes == 0 && p->ctx == 4096 && strcmp(p->model_name, "null") == 0,
	      "null shape");
	c.node = 1;
	c.threads = 4;
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].node == 1 && p->nodes[0].n_threads == 1 && has_warning(p, "ignored"),
	      "null on node 1: %s", err);

	/* the model is required otherwise */
	config_default(&c);
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[model] path: required"), "no model: %s", err);
	snprintf(c.model_path, sizeof(c.model_path), "tests/no-such.gguf");
	rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc < 0 && strstr(err, "[model] path = 'tests/no-such.gguf'"), "bad model: %s", err);
}

static void test_plan_kv(void)
{
	struct engine_config c;
	struct plan *p = g_plan;
	char err[512] = "";
	const char *topo = "pack:1 numa:1 core:2 pu:1";
	tiny(&c);
	c.kv_tokens = 1000; /* rounded down to blocks of 16 */
	int rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].kv_tokens == 992 && p->nodes[0].kv_bytes == 992 * 64, "tokens 1000: %s", err);
	CHECK(has_warning(p, "smaller than one full context (ctx = 2048)"), "KV below ctx warns");
	c.kv_tokens = 15;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[kv] tokens = 15: less than one block of 16"), "tokens 15: %s", err);
	c.kv_tokens = 0;
	c.kv_memory_bytes = 1 << 20;
	c.kv_block_size = 256;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].kv_tokens == 16384 && !has_warning(p, "full context"), "1 MiB: %s", err);
	c.kv_memory_bytes = 1LL << 44;
	c.kv_block_size = 1;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[kv] memory") && strstr(err, "2^31"), "too many blocks: %s", err);
	/* with the null shape, 1 MiB of 256-byte tokens is 4096 */
	config_default(&c);
	c.backend = CFG_BACKEND_NULL;
	c.kv_memory_bytes = 1 << 20;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == 0 && p->nodes[0].kv_tokens == 4096 && !has_warning(p, "full context"), "null 1 MiB: %s", err);
	/* ctx and max_tokens against the model */
	tiny(&c);
	c.ctx = 4096;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == 0 && p->ctx == 4096 && has_warning(p, "training context of 2048"), "ctx 4096: %s", err);
	c.ctx = 0;
	c.max_tokens_limit = 3000;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[limits] max_tokens = 3000 exceeds the context of 2048"), "max_tokens: %s",
	      err);
	/* plan_resolve runs config_check */
	tiny(&c);
	c.prefill_chunk = 1024;
	rc = resolve(&c, topo, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "prefill_chunk"), "check in plan: %s", err);
}

static void test_plan_xml(void)
{
	struct engine_config c;
	struct plan *p = g_plan;
	char err[512] = "";
	tiny(&c);
	int rc = resolve(&c, GPU_XML, 0, err, sizeof(err));
#ifndef LOCUS_HAVE_CUDA
	/* GPU on node 1, CUDA not built: cpu, with a warning */
	CHECK(rc == 0 && p->backend == CFG_BACKEND_CPU && p->n_gpus == 1 && p->n_nodes == 2, "gpu xml: %s", err);
	CHECK(strstr(p->topology, "1 NVIDIA GPU") && has_warning(p, "no CUDA backend"), "gpu seen: %s", p->topology);
	c.backend = CFG_BACKEND_CUDA;
	rc = resolve(&c, GPU_XML, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[backend] type = cuda: this build has no CUDA backend"), "cuda: %s", err);
#else
	/* GPU on node 1, CUDA built: auto picks it, one plan node */
	CHECK(rc == 0 && p->backend == CFG_BACKEND_CUDA && p->n_gpus == 1 && p->n_nodes == 1, "gpu xml: %s", err);
	CHECK(strstr(p->topology, "1 NVIDIA GPU") && !has_warning(p, "no CUDA backend"), "gpu seen: %s", p->topology);
#endif
	/* As a CUDA build: one plan node for the GPU, on node 1 */
	c.backend = CFG_BACKEND_AUTO;
	rc = resolve(&c, GPU_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == 0 && p->backend == CFG_BACKEND_CUDA && p->n_nodes == 1, "cuda plan: %s", err);
	CHECK(p->nodes[0].node == 1 && p->nodes[0].gpu == 0 && p->nodes[0].n_threads == 1 &&
	          cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){8}, 1),
	      "gpu node %d gpu %d", p->nodes[0].node, p->nodes[0].gpu);
	CHECK(cpus_are(p->net_cpus, p->n_net_cpus, (int[]){14}, 1) && !p->net_shared, "net next to the GPU");
	c.node = 0;
	rc = resolve(&c, GPU_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[numa] node = 0: no NVIDIA GPU"), "cuda node 0: %s", err);
	/* synthetic topologies have no GPU */
	c.node = -1;
	c.backend = CFG_BACKEND_CUDA;
	rc = resolve(&c, SMT_2S, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "no NVIDIA GPU found"), "cuda without gpu: %s", err);

	/* [backend] gpus on 2 sockets x 16 cores (x 2 SMT), GPUs 0-3 on node
	 * 0 and 4-7 on node 1: one process per GPU is expressible */
	tiny(&c);
	c.backend = CFG_BACKEND_CUDA;
	c.node = 1;
	CHECK(config_set(&c, "backend", "gpus", "5", err, sizeof(err)) == 0, "set gpus: %s", err);
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == 0 && p->n_gpus == 8 && p->n_nodes == 1, "gpus = 5: %s", err);
	CHECK(p->nodes[0].gpu == 5 && p->nodes[0].node == 1 && p->nodes[0].n_threads == 1 &&
	          cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){16}, 1),
	      "GPU 5 alone on node 1: gpu %d node %d cpu %d", p->nodes[0].gpu, p->nodes[0].node, p->nodes[0].cpus[0]);
	CHECK(cpus_are(p->net_cpus, p->n_net_cpus, (int[]){31}, 1) && !p->net_shared, "net on node 1: %d",
	      p->net_cpus[0]);
	/* with its share of the node's cores, as topo-capture --emit-configs
	 * writes it: the net thread stays inside the share */
	config_set(&c, "numa", "cpus", "20-23", err, sizeof(err));
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 1 && p->nodes[0].gpu == 5 &&
	          cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){20}, 1) &&
	          cpus_are(p->net_cpus, p->n_net_cpus, (int[]){23}, 1) && !p->net_shared,
	      "gpu 5 on cpus 20-23: %s (net %d)", err, p->net_cpus[0]);
	c.n_cpus = 0;
	/* the four GPUs of node 1 split its 16 cores */
	config_set(&c, "backend", "gpus", "4-7", err, sizeof(err));
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 4 && p->nodes[1].gpu == 5 && p->nodes[1].cpus[0] == 20 && p->nodes[3].gpu == 7 &&
	          p->nodes[3].cpus[0] == 28,
	      "gpus 4-7: %s", err);
	/* gpus = auto, node = 1: the same four */
	c.n_gpus = 0;
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 4 && p->nodes[0].gpu == 4 && p->nodes[0].cpus[0] == 16, "node 1 auto: %s", err);
	/* two GPUs of two nodes in one process */
	c.node = -1;
	config_set(&c, "backend", "gpus", "5,0", err, sizeof(err));
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == 0 && p->n_nodes == 2 && p->nodes[0].gpu == 0 && p->nodes[0].node == 0 && p->nodes[1].gpu == 5 &&
	          p->nodes[1].node == 1 && p->nodes[1].cpus[0] == 16,
	      "gpus 5,0: %s", err);
	/* errors name the key */
	config_set(&c, "backend", "gpus", "9", err, sizeof(err));
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[backend] gpus: GPU 9 does not exist (this machine has GPUs 0-7)"),
	      "gpu 9: %s", err);
	config_set(&c, "backend", "gpus", "5", err, sizeof(err));
	c.node = 0;
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[backend] gpus: GPU 5 is on NUMA node 1, but [numa] node = 0"),
	      "gpu 5 on node 0: %s", err);
	c.node = -1;
	config_set(&c, "numa", "cpus", "0-3", err, sizeof(err));
	rc = resolve(&c, GPU8_XML, PLAN_ASSUME_CUDA, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "[backend] gpus: GPU 5 is on NUMA node 1, where [numa] cpus lists no CPU"),
	      "gpu 5, cpus of node 0: %s", err);
	c.n_cpus = 0;
	/* the cpu backend ignores the list, and says so */
	c.backend = CFG_BACKEND_CPU;
	rc = resolve(&c, GPU8_XML, 0, err, sizeof(err));
	CHECK(rc == 0 && p->backend == CFG_BACKEND_CPU && has_warning(p, "[backend] gpus is ignored"),
	      "cpu ignores gpus: %s", err);

	/* a cgroup-restricted machine: PU 1 is not allowed */
	tiny(&c);
	rc = resolve(&c, RESTRICTED_XML, 0, err, sizeof(err));
	CHECK(rc == 0 && cpus_are(p->nodes[0].cpus, p->nodes[0].n_cpus, (int[]){0, 2}, 2) &&
	          cpus_are(p->net_cpus, p->n_net_cpus, (int[]){3}, 1),
	      "restricted: %s", err);
	config_set(&c, "numa", "cpus", "0-1", err, sizeof(err));
	rc = resolve(&c, RESTRICTED_XML, 0, err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "CPU 1 is not one this process may use (usable: 0,2-3)"), "cpu 1: %s", err);
}

static void test_plan_print(void)
{
	struct engine_config c;
	char err[512] = "";
	tiny(&c);
	c.pin = false;
	int rc = resolve(&c, SMT_2S, 0, err, sizeof(err));
	CHECK(rc == 0, "print plan: %s", err);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return;
	plan_print(&c, g_plan, f);
	fclose(f);
	const char *want[] = {"topology:  2 packages, 2 NUMA nodes, 8 cores, 16 PUs, no GPU",
	                      "backend:   cpu (type = auto)",
	                      "tiny-Q8_0.gguf, served as \"tiny-Q8_0\"",
	                      "node 0:    compute CPUs 0,2,4 (not pinned), 3 threads, dispatcher on CPU 0",
	                      "node 1:    compute CPUs 8,10,12,14 (not pinned)",
	                      "KV 4194304 tokens (262144 blocks of 16) 256.0 MiB",
	                      "net:       1 thread on CPU 6 (not pinned), listening on 127.0.0.1:8080",
	                      ":8080 (hostname:port)\n",
	                      "warnings:\n  - pin = off"};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		CHECK(strstr(buf, want[i]) != NULL, "plan_print lacks '%s':\n%s", want[i], buf);
	if (getenv("TEST_CONFIG_VERBOSE"))
		fputs(buf, stdout);
	free(buf);

	/* the GPU list and the instance in the printed plan */
	tiny(&c);
	c.backend = CFG_BACKEND_CUDA;
	c.node = 1;
	config_set(&c, "backend", "gpus", "5", err, sizeof(err));
	config_set(&c, "server", "instance", "vm-gpu5", err, sizeof(err));
	rc = plan_resolve_ex(&c, GPU8_XML, PLAN_ASSUME_CUDA, g_plan, err, sizeof(err));
	CHECK(rc == 0, "print gpu plan: %s", err);
	f = open_memstream(&buf, &len);
	if (!f)
		return;
	plan_print(&c, g_plan, f);
	fclose(f);
	const char *want_gpu[] = {
	    "topology:  2 packages, 2 NUMA nodes, 32 cores, 64 PUs, 8 NVIDIA GPUs", "backend:   cuda, gpus = 5\n",
	    "node 1:    GPU 5, host CPUs 16 (pinned), 1 thread, dispatcher on CPU 16", "instance:  vm-gpu5\n"};
	for (size_t i = 0; i < sizeof(want_gpu) / sizeof(want_gpu[0]); i++)
		CHECK(strstr(buf, want_gpu[i]) != NULL, "plan_print lacks '%s':\n%s", want_gpu[i], buf);
	if (getenv("TEST_CONFIG_VERBOSE"))
		fputs(buf, stdout);
	free(buf);

	/* this machine, whatever it is: resolves and prints */
	config_default(&c);
	c.backend = CFG_BACKEND_NULL;
	rc = plan_resolve(&c, NULL, g_plan, err, sizeof(err));
	CHECK(rc == 0 && g_plan->n_nodes == 1 && g_plan->n_net_cpus == 1, "this machine: %s", err);
	if (rc == 0 && getenv("TEST_CONFIG_VERBOSE"))
		plan_print(&c, g_plan, stdout);
}

int main(void)
{
	guard_init(&g_guard);
	g_plan = malloc(sizeof(*g_plan));
	if (!g_plan)
		return 1;
	test_defaults();
	test_valid_file();
	test_shipped_configs();
	test_bad_files();
	test_bad_bytes();
	test_env_and_set();
	test_instance_name();
	test_plan_two_sockets();
	test_plan_two_cores();
	test_plan_kv();
	test_plan_xml();
	test_plan_print();
	free(g_plan);
	munmap(g_guard.map, g_guard.map_len + g_guard.page);
	return check_status("test_config");
}
