/*
 * emit_configs.c: topo-capture --emit-configs. What serving a machine with
 * one engine per NUMA node (or per GPU) behind nginx takes: nodeN.conf /
 * gpuN.conf, nginx-locus.conf and engine@.service, from the topology the
 * engine's own placement code sees. Single-threaded; no global state.
 */
#define _GNU_SOURCE
#include "alloc/alloc.h"
#include "engine/config.h"
#include "tools/topo/topo.h"
#include <errno.h>
#include <fcntl.h>
#include <hwloc.h>
#include <limits.h>
#include <numa.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- --emit-configs: one engine per NUMA node or GPU, nginx in front ----
 *
 * The engine configs are configs/node0.conf's text (so every key keeps its
 * documentation) with the lines of the keys set here replaced; the CPUs,
 * GPUs and nodes come from the engine's own placement code run on the same
 * topology (plan_resolve_ex), and every file is resolved again before
 * anything is written, so a config this writes passes
 * `engine --check-config` on that topology. */

#define EMIT_MAX_PROCS    (CFG_MAX_NODES + PLAN_MAX_GPUS)
#define EMIT_DEFAULT_ROOT "/opt/locus" /* where the unit expects Locus; the user edits it */

struct emit_proc {
	char name[24];                       /* "node0", "gpu5": the file name and systemd instance */
	char instance[CFG_INSTANCE_MAX + 1]; /* "<host>-node0" */
	int node, gpu;                       /* gpu -1 for a NUMA-node process */
	int cpus[CFG_MAX_CPUS];              /* compute CPUs, in the plan's order */
	int n_cpus;
	int port;
	char *text; /* the config file (malloc'd by open_memstream) */
};

struct emit {
	const char *dir, *model, *template_path, *xml, *synthetic, *desc;
	char template_found[PATH_MAX];
	int base_port, lb_port;
	enum cfg_backend backend; /* --backend: AUTO picks cuda when the topology has GPUs */
	enum cfg_backend type;    /* what the configs say */
	char host[49];
	char topology[256]; /* the plan's one-line summary */
	char *tmpl;         /* the template's text (NUL-terminated) */
	struct engine_config base;
	struct plan plan; /* scratch for every resolution */
	struct emit_proc procs[EMIT_MAX_PROCS];
	int n_procs;
	char model_abs[1024];
	char *nginx, *unit;
};

static void emit_usage(FILE *f)
{
	fprintf(f,
	        "usage: topo-capture --emit-configs DIR [--model PATH] [--base-port 8080] [--lb-port 8000]\n"
	        "                    [--backend auto|cpu|cuda|null] [--topology FILE.xml | --synthetic DESC]\n"
	        "                    [--template configs/node0.conf]\n"
	        "Writes into DIR (created) one engine config per NUMA node with cores (nodeN.conf), or,\n"
	        "with NVIDIA GPUs (or --backend cuda), one per GPU on the GPU's node (gpuN.conf), each on\n"
	        "127.0.0.1:<base-port + i>; nginx-locus.conf, an nginx load balancer over them (run it with\n"
	        "nginx -p DIR -c DIR/nginx-locus.conf); and engine@.service, a systemd template unit.\n"
	        "  --model PATH     [model] path of every config (default: the template's, under %s)\n"
	        "  --template FILE  the config to derive from (default configs/node0.conf, found in the\n"
	        "                   working directory or the source tree of this binary)\n"
	        "Exit 0, 1 on failure, 2 on usage errors.\n",
	        EMIT_DEFAULT_ROOT);
}

static int parse_port(const char *opt, const char *v, int *out)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < 1 || x > 65535) {
		fprintf(stderr, "topo-capture: %s '%s': expected a port 1..65535\n", opt, v);
		return -EINVAL;
	}
	*out = (int)x;
	return 0;
}

/* The host part of the instance names: the topology file's HostName, else
 * this machine's; short form, [A-Za-z0-9-] only. */
static void emit_host(struct emit *e, hwloc_topology_t t)
{
	const char *h = e->xml ? hwloc_obj_get_info_by_name(hwloc_get_root_obj(t), "HostName") : NULL;
	char buf[256] = "";
	if (h)
		snprintf(buf, sizeof(buf), "%s", h);
	else if (gethostname(buf, sizeof(buf) - 1))
		buf[0] = '\0';
	size_t n = 0;
	for (const char *p = buf; *p && *p != '.' && n < sizeof(e->host) - 1; p++) {
		char ch = *p;
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-';
		e->host[n++] = ok ? ch : '-';
	}
	e->host[n] = '\0';
	if (!n)
		snprintf(e->host, sizeof(e->host), "locus");
}

/* Reads the template: --template, else configs/node0.conf here, else in the
 * source tree this binary was built from (build/bin/../../configs). */
static int emit_read_template(struct emit *e)
{
	char cand[3][PATH_MAX];
	int n = 0;
	if (e->template_path) {
		snprintf(cand[n++], PATH_MAX, "%s", e->template_path);
	} else {
		snprintf(cand[n++], PATH_MAX, "configs/node0.conf");
		char exe[PATH_MAX];
		ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (k > 0) {
			exe[k] = '\0';
			char *slash = strrchr(exe, '/');
			if (slash) {
				*slash = '\0';
				if (snprintf(cand[n], PATH_MAX, "%s/../../configs/node0.conf", exe) < PATH_MAX)
					n++;
			}
		}
	}
	for (int i = 0; i < n; i++) {
		FILE *f = fopen(cand[i], "rb");
		if (!f) {
			if (e->template_path) {
				fprintf(stderr, "topo-capture: --template %s: %s\n", cand[i], strerror(errno));
				return -errno;
			}
			continue;
		}
		e->tmpl = alloc_mem((1 << 20) + 1);
		size_t len = e->tmpl ? fread(e->tmpl, 1, 1 << 20, f) : 0;
		bool bad = !e->tmpl || ferror(f) || !feof(f);
		fclose(f);
		if (bad) {
			fprintf(stderr, "topo-capture: template %s: unreadable or larger than 1 MiB\n", cand[i]);
			return -EIO;
		}
		e->tmpl[len] = '\0';
		if (strlen(e->tmpl) != len) {
			fprintf(stderr, "topo-capture: template %s: NUL byte\n", cand[i]);
			return -EINVAL;
		}
		snprintf(e->template_found, sizeof(e->template_found), "%.4000s", cand[i]);
		char err[512];
		config_default(&e->base);
		if (config_parse(&e->base, e->tmpl, len, cand[i], err, sizeof(err))) {
			fprintf(stderr, "topo-capture: template: %s\n", err);
			return -EINVAL;
		}
		return 0;
	}
	fprintf(stderr, "topo-capture: cannot find configs/node0.conf (run from the source tree, or pass "
	                "--template FILE)\n");
	return -ENOENT;
}

/* The template's settings with the placement keys back to automatic: the
 * starting point of every resolution below. */
static void emit_cfg(const struct emit *e, struct engine_config *c)
{
	*c = e->base;
	c->node = -1;
	c->n_cpus = 0;
	c->n_gpus = 0;
	c->threads = 0;
	c->pin = true;
	c->model_path[0] = '\0'; /* memory sizing does not matter here */
}

static int emit_resolve(struct emit *e, const struct engine_config *c, char *err, size_t errlen)
{
	return plan_resolve_ex(c, e->desc, PLAN_ASSUME_CUDA | PLAN_NO_MODEL, &e->plan, err, errlen);
}

/* The processes: one per NUMA node with cores, or one per GPU. */
static int emit_plan(struct emit *e)
{
	struct engine_config c;
	char err[512];
	emit_cfg(e, &c);
	c.backend = CFG_BACKEND_CPU;
	if (emit_resolve(e, &c, err, sizeof(err))) {
		fprintf(stderr, "topo-capture: the engine's plan failed: %s\n", err);
		return -EINVAL;
	}
	snprintf(e->topology, sizeof(e->topology), "%s", e->plan.topology);
	int n_gpus = e->plan.n_gpus;
	e->type = e->backend;
	if (e->type == CFG_BACKEND_AUTO)
		e->type = n_gpus ? CFG_BACKEND_CUDA : CFG_BACKEND_CPU;
	if (e->type == CFG_BACKEND_CUDA && !n_gpus) {
		fprintf(stderr, "topo-capture: --backend cuda: the topology has no NVIDIA GPU (%s)\n", e->topology);
		return -EINVAL;
	}
	if (e->type == CFG_BACKEND_CUDA) {
		/* place_gpus splits each node's cores between its GPUs; with
		 * threads above the slice and pin = off, place_threads keeps the
		 * whole slice (instead of the one dispatcher CPU). */
		emit_cfg(e, &c);
		c.backend = CFG_BACKEND_CUDA;
		c.threads = CFG_MAX_CPUS;
		c.pin = false;
		if (emit_resolve(e, &c, err, sizeof(err))) {
			fprintf(stderr, "topo-capture: the engine's GPU plan failed: %s\n", err);
			return -EINVAL;
		}
		for (int j = 0; j < e->plan.n_nodes && e->n_procs < EMIT_MAX_PROCS; j++) {
			const struct plan_node *pn = &e->plan.nodes[j];
			struct emit_proc *p = &e->procs[e->n_procs++];
			snprintf(p->name, sizeof(p->name), "gpu%d", pn->gpu);
			p->node = pn->node;
			p->gpu = pn->gpu;
			memcpy(p->cpus, pn->cpus, (size_t)pn->n_cpus * sizeof(int));
			p->n_cpus = pn->n_cpus;
		}
	} else {
		/* Each node as a `node = N` process plans it: compute CPUs
		 * without the core its net thread takes (when it has spare). */
		int nodes[CFG_MAX_NODES], n = e->plan.n_nodes;
		for (int j = 0; j < n; j++)
			nodes[j] = e->plan.nodes[j].node;
		for (int j = 0; j < n; j++) {
			emit_cfg(e, &c);
			c.backend = CFG_BACKEND_CPU;
			c.node = nodes[j];
			if (emit_resolve(e, &c, err, sizeof(err))) {
				fprintf(stderr, "topo-capture: the engine's plan for node %d failed: %s\n", nodes[j],
				        err);
				return -EINVAL;
			}
			const struct plan_node *pn = &e->plan.nodes[0];
			struct emit_proc *p = &e->procs[e->n_procs++];
			snprintf(p->name, sizeof(p->name), "node%d", pn->node);
			p->node = pn->node;
			p->gpu = -1;
			memcpy(p->cpus, pn->cpus, (size_t)pn->n_cpus * sizeof(int));
			p->n_cpus = pn->n_cpus;
		}
	}
	if (e->base_port + e->n_procs - 1 > 65535) {
		fprintf(stderr, "topo-capture: --base-port %d: %d engines need ports up to %d (above 65535)\n",
		        e->base_port, e->n_procs, e->base_port + e->n_procs - 1);
		return -EINVAL;
	}
	if (e->lb_port >= e->base_port && e->lb_port < e->base_port + e->n_procs) {
		fprintf(stderr, "topo-capture: --lb-port %d is one of the engines' ports (%d-%d)\n", e->lb_port,
		        e->base_port, e->base_port + e->n_procs - 1);
		return -EINVAL;
	}
	for (int i = 0; i < e->n_procs; i++) {
		struct emit_proc *p = &e->procs[i];
		p->port = e->base_port + i;
		snprintf(p->instance, sizeof(p->instance), "%s-%s", e->host, p->name);
	}
	return 0;
}

static const char *backend_word(enum cfg_backend b)
{
	return b == CFG_BACKEND_CUDA ? "cuda" : b == CFG_BACKEND_NULL ? "null" : b == CFG_BACKEND_CPU ? "cpu" : "auto";
}

struct emit_key {
	const char *section, *key;
	char value[4200]; /* up to a CPU list of 4096 bytes (plan_fmt_cpus) */
	bool done;
};

/* "  key = value" -> key (up to the blank or '='), for a line that sets one. */
static bool line_key(const char *line, size_t n, char *key, size_t keylen)
{
	size_t i = 0;
	while (i < n && (line[i] == ' ' || line[i] == '\t'))
		i++;
	if (i == n || line[i] == '#' || line[i] == ';' || line[i] == '[')
		return false;
	size_t k = 0;
	while (i < n && line[i] != '=' && line[i] != ' ' && line[i] != '\t' && k + 1 < keylen)
		key[k++] = line[i++];
	key[k] = '\0';
	return k > 0 && memchr(line, '=', n) != NULL;
}

static void put_missing(FILE *f, struct emit_key *keys, int n_keys, const char *section)
{
	for (int k = 0; k < n_keys; k++)
		if (!keys[k].done && !strcmp(keys[k].section, section)) {
			fprintf(f, "%s = %s\n", keys[k].key, keys[k].value);
			keys[k].done = true;
		}
}

/* One engine config: our header, then the template from its first section
 * on, each key we set replacing the template's line (or added at the end of
 * its section when the template lacks it). */
static int emit_config_text(struct emit *e, struct emit_proc *p)
{
	char cpus[4096];
	plan_fmt_cpus(cpus, sizeof(cpus), p->cpus, p->n_cpus);
	struct emit_key keys[] = {
	    {"server", "listen", "", false}, {"server", "instance", "", false}, {"model", "path", "", false},
	    {"backend", "type", "", false},  {"backend", "gpus", "", false},    {"numa", "node", "", false},
	    {"numa", "cpus", "", false},     {"numa", "pin", "on", false},      {"numa", "membind", "strict", false},
	};
	int n_keys = (int)(sizeof(keys) / sizeof(keys[0]));
	snprintf(keys[0].value, sizeof(keys[0].value), "127.0.0.1:%d", p->port);
	snprintf(keys[1].value, sizeof(keys[1].value), "%s", p->instance);
	snprintf(keys[2].value, sizeof(keys[2].value), "%s", e->model_abs);
	snprintf(keys[3].value, sizeof(keys[3].value), "%s", backend_word(e->type));
	if (p->gpu >= 0)
		snprintf(keys[4].value, sizeof(keys[4].value), "%d", p->gpu);
	else
		snprintf(keys[4].value, sizeof(keys[4].value), "auto");
	snprintf(keys[5].value, sizeof(keys[5].value), "%d", p->node);
	snprintf(keys[6].value, sizeof(keys[6].value), "%s", cpus);

	size_t size = 0;
	FILE *f = open_memstream(&p->text, &size);
	if (!f)
		return -ENOMEM;
	fprintf(f, "# Locus engine %s: ", p->instance);
	if (p->gpu >= 0)
		fprintf(f, "CUDA device %d on NUMA node %d", p->gpu, p->node);
	else
		fprintf(f, "NUMA node %d", p->node);
	fprintf(f, ", listening on 127.0.0.1:%d.\n", p->port);
	fprintf(f,
	        "# Written by `topo-capture --emit-configs` from %s (whose comments\n"
	        "# document every key) for %s:\n"
	        "#   %s\n"
	        "# Set here: [server] listen, instance; [model] path; [backend] type, gpus;\n"
	        "# [numa] node, cpus, pin, membind. cpus = %s:\n",
	        e->template_found, e->desc ? e->desc : "this machine", e->topology, cpus);
	if (p->gpu >= 0)
		fprintf(f,
		        "# GPU %d's share of node %d's cores, split between the node's GPUs as the\n"
		        "# engine splits them; one CPU drives the GPU, the net thread takes another.\n",
		        p->gpu, p->node);
	else
		fprintf(f,
		        "# the cores the engine computes on when it serves node %d alone; its net\n"
		        "# thread takes the node's next free core (or shares one when there is none).\n",
		        p->node);
	fprintf(f,
	        "# Check it on the target machine:  engine --check-config %s.conf%s\n"
	        "# Syntax and precedence: docs/CONFIG.md.\n",
	        p->name, e->type == CFG_BACKEND_CUDA ? "\n# (add --assume-cuda with a build without CUDA)" : "");
	fputc('\n', f);

	/* Blank lines are held back until the next line that is not blank, so
	 * keys missing from a section land right after its last line. */
	const char *s = e->tmpl;
	char section[64] = "";
	bool started = false;
	int blanks = 0;
	while (*s) {
		const char *nl = strchr(s, '\n');
		size_t n = nl ? (size_t)(nl - s) : strlen(s);
		size_t t = 0;
		while (t < n && (s[t] == ' ' || s[t] == '\t' || s[t] == '\r'))
			t++;
		bool header = t < n && s[t] == '[';
		if (header) {
			if (started)
				put_missing(f, keys, n_keys, section);
			const char *rb = memchr(s + t, ']', n - t);
			size_t sl = rb ? (size_t)(rb - (s + t) - 1) : 0;
			if (sl >= sizeof(section))
				sl = sizeof(section) - 1;
			memcpy(section, s + t + 1, sl);
			section[sl] = '\0';
			started = true;
		}
		if (!started) {
			/* the template's own header comment: ours replaces it */
		} else if (t == n) {
			blanks++;
		} else {
			for (; blanks; blanks--)
				fputc('\n', f);
			char key[64];
			bool replaced = false;
			if (!header && line_key(s, n, key, sizeof(key)))
				for (int k = 0; k < n_keys && !replaced; k++)
					if (!keys[k].done && !strcmp(keys[k].section, section) &&
					    !strcmp(keys[k].key, key)) {
						fprintf(f, "%s = %s\n", key, keys[k].value);
						keys[k].done = replaced = true;
					}
			if (!replaced)
				fprintf(f, "%.*s\n", (int)n, s);
		}
		s += n + (nl != NULL);
	}
	put_missing(f, keys, n_keys, section);
	const char *secs[] = {"server", "model", "backend", "numa"};
	for (int i = 0; i < 4; i++)
		for (int k = 0; k < n_keys; k++)
			if (!keys[k].done && !strcmp(keys[k].section, secs[i])) {
				fprintf(f, "\n[%s]\n", secs[i]);
				put_missing(f, keys, n_keys, secs[i]);
			}
	return topo_close_file(f);
}

/* Reads a written config back as the engine will and resolves it on the
 * same topology: it must serve exactly its node (and GPU). */
static int emit_check(struct emit *e, const struct emit_proc *p)
{
	struct engine_config c;
	char err[1024];
	config_default(&c);
	if (config_parse(&c, p->text, strlen(p->text), p->name, err, sizeof(err))) {
		fprintf(stderr, "topo-capture: %s.conf does not parse: %s\n", p->name, err);
		return -EINVAL;
	}
	if (access(c.model_path, R_OK))
		c.model_path[0] = '\0'; /* the model lives on the target machine */
	if (emit_resolve(e, &c, err, sizeof(err))) {
		fprintf(stderr, "topo-capture: %s.conf does not plan: %s\n", p->name, err);
		return -EINVAL;
	}
	const struct plan_node *pn = &e->plan.nodes[0];
	if (e->plan.n_nodes != 1 || pn->node != p->node || (p->gpu >= 0 && pn->gpu != p->gpu)) {
		fprintf(stderr, "topo-capture: %s.conf plans %d node(s), node %d GPU %d: expected node %d GPU %d\n",
		        p->name, e->plan.n_nodes, pn->node, pn->gpu, p->node, p->gpu);
		return -EINVAL;
	}
	return 0;
}

/* nginx in front of the engines; every path relative to the prefix (-p). */
static int emit_nginx_text(struct emit *e)
{
	size_t size = 0;
	FILE *f = open_memstream(&e->nginx, &size);
	if (!f)
		return -ENOMEM;
	const struct engine_config *b = &e->base;
	int idle_s = b->idle_timeout_ms / 1000, ka_s = idle_s / 2;
	if (ka_s < 1)
		ka_s = 1;
	int req_s = b->request_timeout_ms ? b->request_timeout_ms / 1000 + 5 : 3600;
	if (req_s < 600)
		req_s = 600;
	fprintf(f,
	        "# nginx in front of the Locus engines on this machine, written by\n"
	        "# `topo-capture --emit-configs` for %s (%s).\n"
	        "#\n"
	        "# Run it as any user from the directory that holds this file (DIR below): every\n"
	        "# path here is relative to nginx's prefix (-p), where the pid file, the error\n"
	        "# log and the temporary directories go, so a non-root nginx needs nothing else:\n"
	        "#   nginx -t -p DIR -c DIR/nginx-locus.conf     check\n"
	        "#   nginx -p DIR -c DIR/nginx-locus.conf        start (in the background)\n"
	        "#   nginx -p DIR -c DIR/nginx-locus.conf -s reload | -s quit\n"
	        "# (Add -g 'daemon off;' to run it in the foreground, e.g. under systemd. nginx\n"
	        "# builds whose compiled-in error log is a file print an alert about it when run\n"
	        "# as non-root, before reading this file; -e DIR/nginx-error.log avoids it.)\n"
	        "# Which engine answered: the X-Locus-Instance response header, passed through.\n"
	        "# Prometheus: scrape each engine's /metrics on its own port, not through here\n"
	        "# (through here each scrape would reach whichever engine least_conn picks).\n"
	        "\n",
	        e->desc ? e->desc : "this machine", e->topology);
	fprintf(f, "# One worker per CPU (nginx's own work per request is small next to a generation;\n"
	           "# the workers only move bytes).\n"
	           "worker_processes auto;\n"
	           "# Each proxied request holds two descriptors (client and engine).\n"
	           "worker_rlimit_nofile 16384;\n"
	           "pid nginx.pid;\n"
	           "error_log nginx-error.log warn;\n"
	           "\n"
	           "events {\n"
	           "    worker_connections 4096;\n"
	           "}\n"
	           "\n"
	           "http {\n"
	           "    # No access log: one write per request on the serving path; the engines count\n"
	           "    # and time every request in /metrics (and the error log still records\n"
	           "    # failed upstreams).\n"
	           "    access_log off;\n"
	           "    server_tokens off;\n"
	           "\n"
	           "    # Temporary files under the prefix (the compiled-in /var/lib/nginx/... is\n"
	           "    # root's). With the buffering turned off below they stay empty, but nginx\n"
	           "    # creates them at start. Remove the fastcgi/uwsgi/scgi lines for an nginx\n"
	           "    # built without those modules.\n"
	           "    client_body_temp_path nginx-tmp-client-body;\n"
	           "    proxy_temp_path nginx-tmp-proxy;\n"
	           "    fastcgi_temp_path nginx-tmp-fastcgi;\n"
	           "    uwsgi_temp_path nginx-tmp-uwsgi;\n"
	           "    scgi_temp_path nginx-tmp-scgi;\n"
	           "\n"
	           "    upstream locus {\n"
	           "        # least_conn: each request goes to the engine with the fewest requests in\n"
	           "        # flight. Generations differ in length by orders of magnitude, so round\n"
	           "        # robin would pile long ones onto one engine; open requests are the load\n"
	           "        # signal nginx has (an engine with a full queue answers 429, or 503 when\n"
	           "        # its ring is full).\n"
	           "        least_conn;\n"
	           "        # Shared memory for the counts and failures above: without it each worker\n"
	           "        # balances and marks engines down on its own view.\n"
	           "        zone locus 64k;\n"
	           "        # Passive health checks: max_fails failures (connection errors, timeouts,\n"
	           "        # and the 502/503 answers passed to the next engine below) within\n"
	           "        # fail_timeout take an engine out for fail_timeout. A dead engine, or one\n"
	           "        # draining after SIGTERM (503 to new requests), stops getting traffic\n"
	           "        # after 2 failures and is tried again 5 s later.\n");
	for (int i = 0; i < e->n_procs; i++) {
		const struct emit_proc *p = &e->procs[i];
		char where[64];
		if (p->gpu >= 0)
			snprintf(where, sizeof(where), "GPU %d, NUMA node %d", p->gpu, p->node);
		else
			snprintf(where, sizeof(where), "NUMA node %d", p->node);
		fprintf(f, "        server 127.0.0.1:%d max_fails=2 fail_timeout=5s;  # %s.conf: %s, %s\n", p->port,
		        p->name, p->instance, where);
	}
	fprintf(f,
	        "        # Idle keep-alive connections to the engines kept per worker: no TCP\n"
	        "        # handshake per request.\n"
	        "        keepalive 64;\n"
	        "        # Close idle ones well before the engine does ([limits] idle_timeout = %ds):\n"
	        "        # a request sent on a connection the engine has just closed fails after\n"
	        "        # being sent, and costs a retry (see proxy_next_upstream) or, for a body\n"
	        "        # streamed through, the request.\n"
	        "        keepalive_timeout %ds;\n"
	        "    }\n"
	        "\n",
	        idle_s, ka_s);
	fprintf(f,
	        "    server {\n"
	        "        # The load balancer's address: 0.0.0.0:%d (or one interface) to serve other\n"
	        "        # hosts; the engines themselves listen on 127.0.0.1 only.\n"
	        "        listen 127.0.0.1:%d;\n"
	        "        # The engines' [limits] max_body: a larger body is refused here (413) before\n"
	        "        # it takes an engine connection.\n"
	        "        client_max_body_size %zu;\n"
	        "\n"
	        "        location / {\n"
	        "            proxy_pass http://locus;\n"
	        "            # Keep-alive to the engines: HTTP/1.1, and no \"Connection: close\" passed on.\n"
	        "            proxy_http_version 1.1;\n"
	        "            proxy_set_header Connection \"\";\n"
	        "            proxy_set_header Host $host;\n"
	        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
	        "            # Streamed completions (server-sent events, \"stream\": true) reach the\n"
	        "            # client event by event: no response buffering, and none turned back on\n"
	        "            # by an X-Accel-Buffering response header. Request bodies go to the\n"
	        "            # engine as they arrive, without a temporary file.\n"
	        "            proxy_buffering off;\n"
	        "            proxy_ignore_headers X-Accel-Buffering;\n"
	        "            proxy_request_buffering off;\n"
	        "            # Connect: fail fast, so a dead engine costs a request 2 s at most before\n"
	        "            # the next one is tried. Read/send: the longest silence between two reads\n"
	        "            # (writes); a whole (not streamed) response is silent for the entire\n"
	        "            # generation, so this is the engines' [limits] request_timeout plus 5 s\n"
	        "            # (at least 600 s), letting the engine's own timeout error (OpenAI JSON)\n"
	        "            # reach the client rather than a 504 from here.\n"
	        "            proxy_connect_timeout 2s;\n"
	        "            proxy_read_timeout %ds;\n"
	        "            proxy_send_timeout %ds;\n"
	        "            # Retries: one more engine (tries 2) on a connection error, a timeout, 502\n"
	        "            # or 503. nginx's default never passes a non-idempotent request (POST:\n"
	        "            # every generation) to another engine once it has been sent to one;\n"
	        "            # only a connection that failed before sending moves it. We add\n"
	        "            # non_idempotent, for two reasons. An engine's 503 means it did nothing\n"
	        "            # (loading, draining after SIGTERM, ring full): with the default, a\n"
	        "            # draining engine answers its share of POSTs with 503 for the whole\n"
	        "            # drain_timeout, and those 503s do not even count towards max_fails\n"
	        "            # (measured: half of the POSTs to two engines, one draining, got 503;\n"
	        "            # with non_idempotent none did). And a generation changes no state, so\n"
	        "            # running it again costs compute, never correctness. What bounds the cost:\n"
	        "            # proxy_next_upstream_timeout, so only a failure within 10 s of the first\n"
	        "            # try moves (never a 600 s read timeout, which would run a long generation\n"
	        "            # twice); and nginx cannot move a request whose response it has begun to\n"
	        "            # pass on, so a stream is never replayed to the client. With\n"
	        "            # proxy_request_buffering off nginx can resend a body it read whole before\n"
	        "            # sending (the usual prompt); a large body streamed through is not retried\n"
	        "            # after it was sent (set proxy_request_buffering on and\n"
	        "            # client_body_buffer_size to max_body to retry those too, at the cost of\n"
	        "            # reading each body before the engine sees it).\n"
	        "            proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n"
	        "            proxy_next_upstream_timeout 10s;\n"
	        "            proxy_next_upstream_tries 2;\n"
	        "        }\n"
	        "    }\n"
	        "}\n",
	        e->lb_port, e->lb_port, b->max_body_bytes, req_s, req_s);
	return topo_close_file(f);
}

/* The systemd template unit: engine@NAME serves /etc/locus/NAME.conf. */
static int emit_unit_text(struct emit *e)
{
	size_t size = 0;
	FILE *f = open_memstream(&e->unit, &size);
	if (!f)
		return -ENOMEM;
	int drain_s = (e->base.drain_timeout_ms + 999) / 1000, stop_s = drain_s + 15;
	fprintf(f,
	        "# Locus engine, one process per configuration file: engine@node0 serves\n"
	        "# /etc/locus/node0.conf, engine@gpu5 /etc/locus/gpu5.conf, and so on.\n"
	        "# Written by `topo-capture --emit-configs` (also configs/systemd/engine@.service).\n"
	        "#\n"
	        "# Paths (edit them to match your installation): Locus built in %s\n"
	        "# (the engine at %s/build/bin/engine), configurations in /etc/locus.\n"
	        "# Install, as root:\n"
	        "#   useradd --system --no-create-home --shell /usr/sbin/nologin locus\n"
	        "#   install -d /etc/locus && install -m 644 node*.conf /etc/locus/   (or gpu*.conf)\n"
	        "#   install -m 644 engine@.service /etc/systemd/system/ && systemctl daemon-reload\n"
	        "#   systemctl enable --now engine@node0 engine@node1\n"
	        "# Check a configuration first: %s/build/bin/engine --check-config /etc/locus/node0.conf\n"
	        "# Logs: journalctl -u engine@node0.\n"
	        "\n"
	        "[Unit]\n"
	        "Description=Locus inference engine (%%i)\n"
	        "Documentation=file:%s/README.md file:%s/docs/CONFIG.md\n"
	        "After=network.target\n"
	        "\n"
	        "[Service]\n"
	        "Type=simple\n"
	        "ExecStart=%s/build/bin/engine --config /etc/locus/%%i.conf\n"
	        "# Relative paths in the configuration ([model] path) are relative to this.\n"
	        "WorkingDirectory=%s\n"
	        "# A dedicated unprivileged user that can read the model and /etc/locus (see\n"
	        "# above). DynamicUser=yes would do as well, since the engine writes no file,\n"
	        "# if the model is world-readable.\n"
	        "User=locus\n"
	        "Group=locus\n"
	        "# An API key belongs in LOCUS_API_KEY rather than in the configuration: put\n"
	        "# LOCUS_API_KEY=... into /etc/locus/%%i.env (mode 600); '-': the file is optional.\n"
	        "EnvironmentFile=-/etc/locus/%%i.env\n"
	        "# CUDA numbers the GPUs as the engine's plan (and [backend] gpus) does.\n"
	        "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID\n"
	        "\n"
	        "Restart=on-failure\n"
	        "RestartSec=2s\n"
	        "# SIGTERM drains: /health and new requests get 503 (nginx stops sending after\n"
	        "# two), requests in flight get up to [limits] drain_timeout (%ds), then the\n"
	        "# engine exits 0. The stop timeout must exceed drain_timeout, or systemd's\n"
	        "# SIGKILL cuts the drain short: raise it with drain_timeout.\n"
	        "KillSignal=SIGTERM\n"
	        "TimeoutStopSec=%ds\n"
	        "# Connections: [server] max_conns per net thread, plus the model file.\n"
	        "LimitNOFILE=65536\n"
	        "# io_uring's rings and buffer rings count against RLIMIT_MEMLOCK on kernels\n"
	        "# before 5.12.\n"
	        "LimitMEMLOCK=infinity\n"
	        "# Not set on purpose: CPUAffinity=, NUMAPolicy=, Nice=. The engine pins its\n"
	        "# threads and binds its memory from [numa] in its configuration; a CPUAffinity=\n"
	        "# here would narrow the CPUs its plan may use (they are intersected) and would\n"
	        "# have to include the configuration's cpus.\n"
	        "\n"
	        "# Hardening that leaves io_uring, NUMA binding and the GPUs working:\n"
	        "NoNewPrivileges=yes\n"
	        "# The whole file system read-only: the engine only reads its configuration and\n"
	        "# the model, and logs to stderr (the journal). Nothing needs ReadWritePaths=; add\n"
	        "# one if you point something of your own at a file.\n"
	        "ProtectSystem=strict\n"
	        "ProtectHome=read-only\n"
	        "PrivateTmp=yes\n"
	        "# /sys and /proc/sys read-only: hwloc only reads them (topology, PCI locality).\n"
	        "ProtectKernelTunables=yes\n"
	        "ProtectKernelModules=yes\n"
	        "ProtectKernelLogs=yes\n"
	        "# Read-only too: hwloc reads the cgroup's cpuset from it.\n"
	        "ProtectControlGroups=yes\n"
	        "ProtectClock=yes\n"
	        "ProtectHostname=yes\n"
	        "RestrictRealtime=yes\n"
	        "RestrictSUIDSGID=yes\n"
	        "RestrictNamespaces=yes\n"
	        "LockPersonality=yes\n"
	        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n"
	        "CapabilityBoundingSet=\n"
	        "# Not set on purpose:\n"
	        "# - SystemCallFilter=: io_uring_setup/io_uring_enter/io_uring_register are in\n"
	        "#   @aio (and so @system-service) only in newer systemd versions (check with\n"
	        "#   systemd-analyze syscall-filter @aio); elsewhere a filter blocks io_uring\n"
	        "#   and the engine falls back to epoll. mbind/set_mempolicy (NUMA binding) and\n"
	        "#   sched_setaffinity (pinning) must stay allowed too.\n"
	        "# - MemoryDenyWriteExecute=: it breaks the tokenizer's PCRE2 JIT.\n"
	        "# - PrivateDevices=: it hides /dev/nvidia* from the CUDA backend.\n"
	        "\n"
	        "[Install]\n"
	        "WantedBy=multi-user.target\n",
	        EMIT_DEFAULT_ROOT, EMIT_DEFAULT_ROOT, EMIT_DEFAULT_ROOT, EMIT_DEFAULT_ROOT, EMIT_DEFAULT_ROOT,
	        EMIT_DEFAULT_ROOT, EMIT_DEFAULT_ROOT, drain_s, stop_s);
	return topo_close_file(f);
}

/* Writes DIR/name through a temporary file renamed into place. */
static int emit_write(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	int rc = topo_close_file(f);
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

int topo_emit_main(int argc, char **argv)
{
	struct emit *e = alloc_zmem(sizeof(*e));
	if (!e) {
		fprintf(stderr, "topo-capture: out of memory\n");
		return 1;
	}
	e->base_port = 8080;
	e->lb_port = 8000;
	int ret = 2;
	const char *backend = "auto", *base_port = NULL, *lb_port = NULL;
	const char *opts[] = {"--emit-configs", "--model",    "--base-port", "--lb-port",
	                      "--backend",      "--topology", "--synthetic", "--template"};
	const char **dst[] = {&e->dir,  &e->model, &base_port,    &lb_port,
	                      &backend, &e->xml,   &e->synthetic, &e->template_path};
	int rc = topo_parse_opts(argc, argv, opts, dst, (int)(sizeof(opts) / sizeof(opts[0])),
	                         "--emit-configs: ", "--emit-configs --help");
	if (rc == 1) {
		emit_usage(stdout);
		ret = 0;
		goto out;
	}
	if (rc)
		goto out;
	if (!e->dir) {
		emit_usage(stderr);
		goto out;
	}
	if (base_port && parse_port("--base-port", base_port, &e->base_port))
		goto out;
	if (lb_port && parse_port("--lb-port", lb_port, &e->lb_port))
		goto out;
	if (!strcmp(backend, "auto"))
		e->backend = CFG_BACKEND_AUTO;
	else if (!strcmp(backend, "cpu"))
		e->backend = CFG_BACKEND_CPU;
	else if (!strcmp(backend, "cuda"))
		e->backend = CFG_BACKEND_CUDA;
	else if (!strcmp(backend, "null"))
		e->backend = CFG_BACKEND_NULL;
	else {
		fprintf(stderr, "topo-capture: --backend '%s': expected auto, cpu, cuda or null\n", backend);
		goto out;
	}
	if ((ret = topo_check_source(e->xml, e->synthetic)) != 0)
		goto out;
	ret = 1;
	e->desc = e->xml ? e->xml : e->synthetic;
	if (emit_read_template(e))
		goto out;
	/* [model] path: --model, else the template's, absolute under the
	 * install root the unit names (services have no useful working
	 * directory of their own). */
	const char *m = e->model ? e->model : e->base.model_path;
	if (!m[0]) {
		fprintf(stderr, "topo-capture: the template has no [model] path: pass --model PATH\n");
		goto out;
	}
	if (m[0] == '/' || e->model)
		snprintf(e->model_abs, sizeof(e->model_abs), "%.1000s", m);
	else
		snprintf(e->model_abs, sizeof(e->model_abs), "%s/%.1000s", EMIT_DEFAULT_ROOT, m);
	char err[512];
	struct engine_config probe;
	config_default(&probe);
	if (config_set(&probe, "model", "path", e->model_abs, err, sizeof(err))) {
		fprintf(stderr, "topo-capture: --model: %s\n", err);
		goto out;
	}
	hwloc_topology_t t;
	if (plan_topology_load(&t, e->desc, err, sizeof(err))) {
		fprintf(stderr, "topo-capture: %s\n", err);
		goto out;
	}
	emit_host(e, t);
	hwloc_topology_destroy(t);
	if (emit_plan(e))
		goto out;
	for (int i = 0; i < e->n_procs; i++)
		if (emit_config_text(e, &e->procs[i]) || emit_check(e, &e->procs[i]))
			goto out;
	if (emit_nginx_text(e) || emit_unit_text(e)) {
		fprintf(stderr, "topo-capture: out of memory\n");
		goto out;
	}

	rc = topo_mkdir_p(e->dir);
	char abs[PATH_MAX];
	if (!rc && !realpath(e->dir, abs))
		rc = -errno;
	if (rc) {
		fprintf(stderr, "topo-capture: --emit-configs %s: %s\n", e->dir, strerror(-rc));
		goto out;
	}
	const char *step = "";
	for (int i = 0; i < e->n_procs && !rc; i++) {
		struct emit_proc *p = &e->procs[i];
		char name[64], cpus[4096];
		snprintf(name, sizeof(name), "%s.conf", p->name);
		step = p->name;
		rc = emit_write(abs, name, p->text);
		if (rc)
			break;
		plan_fmt_cpus(cpus, sizeof(cpus), p->cpus, p->n_cpus);
		if (p->gpu >= 0)
			printf("wrote %s/%s (instance %s: GPU %d on NUMA node %d, CPUs %s, backend %s, 127.0.0.1:%d)\n",
			       abs, name, p->instance, p->gpu, p->node, cpus, backend_word(e->type), p->port);
		else
			printf("wrote %s/%s (instance %s: NUMA node %d, CPUs %s, backend %s, 127.0.0.1:%d)\n", abs,
			       name, p->instance, p->node, cpus, backend_word(e->type), p->port);
	}
	if (!rc) {
		step = "nginx-locus.conf";
		rc = emit_write(abs, step, e->nginx);
		if (!rc)
			printf("wrote %s/%s (nginx: least_conn over %d engine%s, listening on 127.0.0.1:%d)\n", abs,
			       step, e->n_procs, e->n_procs == 1 ? "" : "s", e->lb_port);
	}
	if (!rc) {
		step = "engine@.service";
		rc = emit_write(abs, step, e->unit);
		if (!rc)
			printf("wrote %s/%s (systemd template unit: engine@NAME serves /etc/locus/NAME.conf)\n", abs,
			       step);
	}
	if (rc) {
		fprintf(stderr, "topo-capture: %s/%s: %s\n", abs, step, strerror(-rc));
		goto out;
	}
	printf("\nStart them (as root; edit the paths in engine@.service first if Locus is not in %s):\n",
	       EMIT_DEFAULT_ROOT);
	printf("  install -d /etc/locus && install -m 644");
	for (int i = 0; i < e->n_procs; i++)
		printf(" %s/%s.conf", abs, e->procs[i].name);
	printf(" /etc/locus/\n");
	printf("  install -m 644 %s/engine@.service /etc/systemd/system/ && systemctl daemon-reload\n", abs);
	printf("  systemctl start");
	for (int i = 0; i < e->n_procs; i++)
		printf(" engine@%s", e->procs[i].name);
	printf("\n  nginx -p %s -c %s/nginx-locus.conf\n", abs, abs);
	printf("Then: curl -si http://127.0.0.1:%d/health | grep -i x-locus-instance\n", e->lb_port);
	if (access(e->model_abs, R_OK))
		printf("Note: the model %s is not on this machine; the configs name it for the target (--model "
		       "PATH).\n",
		       e->model_abs);
	ret = 0;
out:
	for (int i = 0; i < e->n_procs; i++)
		free(e->procs[i].text);
	free(e->nginx);
	free(e->unit);
	alloc_free(e->tmpl);
	alloc_free(e);
	return ret;
}
