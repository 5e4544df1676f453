/*
 * engine: the Locus serving engine.
 *
 *   engine --config configs/node0.conf [--listen HOST:PORT] [--model M.gguf]
 *          [--backend auto|cpu|cuda|null]
 *   engine --check-config configs/node0.conf [overrides]   print the plan, serve nothing
 *          [--topology SYNTHETIC|FILE.xml] [--assume-cuda]
 *
 * SIGTERM / SIGINT: stop accepting generations, let in-flight requests
 * finish up to [limits] drain_timeout, exit 0.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/server.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: engine --config FILE [--listen HOST:PORT] [--model PATH] [--backend auto|cpu|cuda|null]\n"
		   "       engine --check-config FILE [the same overrides] [--topology SYNTHETIC] [--assume-cuda]\n"
		   "  --config FILE        serve with this INI file (see configs/node0.conf, docs/CONFIG.md)\n"
		   "  --check-config FILE  validate the file and print the resolved plan (nodes, cores,\n"
		   "                       threads, memory) without serving\n"
		   "  --listen HOST:PORT   override [server] listen\n"
		   "  --model PATH         override [model] path\n"
		   "  --backend NAME       override [backend] type\n"
		   "  --topology SYNTH     with --check-config: plan for an hwloc synthetic topology\n"
		   "                       (e.g. \"pack:2 numa:1 core:8 pu:2\", or an hwloc FILE.xml) instead of\n"
		   "                       this machine\n"
		   "  --assume-cuda        with --check-config: plan as a build with the CUDA backend would\n"
		   "                       (check a GPU machine's configs with a build that has no CUDA)\n");
}

int main(int argc, char **argv)
{
	const char *path = NULL, *topo = NULL;
	bool check = false, assume_cuda = false;
	const char *ov_key[8], *ov_sec[8], *ov_val[8];
	int n_ov = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--assume-cuda")) {
			assume_cuda = true;
			continue;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "engine: %s needs a value (see --help)\n", a);
			return 2;
		}
		const char *v = argv[++i];
		if (!strcmp(a, "--config"))
			path = v;
		else if (!strcmp(a, "--check-config")) {
			path = v;
			check = true;
		} else if (!strcmp(a, "--topology"))
			topo = v;
		else if (!strcmp(a, "--listen") || !strcmp(a, "--model") || !strcmp(a, "--backend")) {
			ov_sec[n_ov] = !strcmp(a, "--listen") ? "server" : !strcmp(a, "--model") ? "model" : "backend";
			ov_key[n_ov] = !strcmp(a, "--listen") ? "listen" : !strcmp(a, "--model") ? "path" : "type";
			ov_val[n_ov++] = v;
		} else {
			fprintf(stderr, "engine: unknown option '%s' (see --help)\n", a);
			return 2;
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	static struct engine_config cfg;
	static struct plan plan;
	char err[1024];
	config_default(&cfg);
	if (config_load(&cfg, path, err, sizeof(err))) {
		fprintf(stderr, "engine: %s\n", err);
		return 2;
	}
	for (int i = 0; i < n_ov; i++)
		if (config_set(&cfg, ov_sec[i], ov_key[i], ov_val[i], err, sizeof(err))) {
			fprintf(stderr, "engine: --%s: %s\n", ov_key[i][0] == 'p' ? "model" : ov_sec[i][0] == 's' ? "listen" : "backend", err);
			return 2;
		}
	if (assume_cuda && !check) {
		fprintf(stderr, "engine: --assume-cuda only plans (with --check-config); it cannot serve\n");
		return 2;
	}
	if (plan_resolve_ex(&cfg, topo, assume_cuda ? PLAN_ASSUME_CUDA : 0, &plan, err, sizeof(err))) {
		fprintf(stderr, "engine: %s\n", err);
		return 2;
	}
	if (check) {
		plan_print(&cfg, &plan, stdout);
		return 0;
	}
	if (topo) {
		fprintf(stderr, "engine: --topology only plans (with --check-config); it cannot serve\n");
		return 2;
	}
	/* Signals are taken by sigwait on this thread: block them before any
	 * thread starts so every thread inherits the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct server *s;
	if (server_start(&s, &cfg, &plan, err, sizeof(err))) {
		fprintf(stderr, "engine: %s\n", err);
		return 1;
	}
	if (server_wait_ready(s, err, sizeof(err))) {
		fprintf(stderr, "engine: %s\n", err);
		server_stop(s);
		return 1;
	}
	int sig = 0;
	sigwait(&set, &sig);
	fprintf(stderr, "engine: %s: draining (up to %d ms)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
		cfg.drain_timeout_ms);
	server_stop(s);
	fprintf(stderr, "engine: stopped\n");
	return 0;
}
