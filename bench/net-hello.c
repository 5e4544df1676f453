/*
 * net-hello: the smallest server on locus_net, for load tests of the front
 * end alone (bench/net-bench.sh drives it with wrk beside nginx).
 * Answers every request with a fixed JSON body of 200 bytes.
 *
 *   build/bin/net-hello [--port N] [--threads N] [--epoll] [--cpu N] [--seconds N]
 *
 * Runs until SIGINT/SIGTERM (or --seconds), then prints the per-thread
 * counters.
 */
#include "net/net.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 200 bytes, the same as the nginx config in net-bench.sh returns. */
static const char BODY[] = "{\"id\":\"hello-0001\",\"object\":\"chat.completion\",\"model\":\"locus-bench\","
                           "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hi from "
                           "locus.\"},\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":7}}";

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void on_request(net_conn_t *c, const struct http_request *req, void *ud)
{
	(void)req;
	(void)ud;
	net_respond(c, 200, "application/json", NULL, BODY, sizeof(BODY) - 1);
}

int main(int argc, char **argv)
{
	struct net_config cfg;
	net_config_default(&cfg);
	cfg.port = 8080;
	cfg.max_conns = 1024;
	int cpu = -1, seconds = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--port") && i + 1 < argc)
			cfg.port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			cfg.n_threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--epoll"))
			cfg.force_epoll = true;
		else if (!strcmp(argv[i], "--cpu") && i + 1 < argc)
			cpu = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s [--port N] [--threads N] [--epoll] [--cpu N] [--seconds N]\n",
			        argv[0]);
			return 2;
		}
	}
	if (cpu >= 0) {
		cfg.cpus = &cpu;
		cfg.n_cpus = 1;
	}
	if (sizeof(BODY) - 1 != 200)
		fprintf(stderr, "net-hello: body is %zu bytes\n", sizeof(BODY) - 1);
	struct net_callbacks cb = {.on_request = on_request};
	char err[256];
	net_server_t *s = net_server_start(&cfg, &cb, err, sizeof(err));
	if (!s) {
		fprintf(stderr, "net-hello: %s\n", err);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	printf("net-hello: %s on port %d\n", net_server_backend(s), net_server_port(s));
	fflush(stdout);
	for (int t = 0; !g_stop && (!seconds || t < seconds * 10); t++)
		usleep(100000);
	for (int i = 0; i < cfg.n_threads; i++) {
		struct net_stats st;
		net_stats_get(s, i, &st);
		printf("thread %d: accepted %llu requests %llu bad %llu timeouts %llu\n", i,
		       (unsigned long long)st.accepted, (unsigned long long)st.requests,
		       (unsigned long long)st.bad_requests, (unsigned long long)st.timeouts);
	}
	net_server_stop(s, 1000);
	return 0;
}
