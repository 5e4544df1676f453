/*
 * server.h: the serving engine: HTTP routes on the net threads, requests
 * handed to the per-node dispatchers, output streamed back.
 *
 *   server_start()  starts the net threads at once (so /health answers 503
 *                   while the model loads), then loads the model and starts
 *                   one backend + dispatcher per node of the plan;
 *   server_stop()   refuses new generations (503), lets in-flight requests
 *                   finish up to the drain deadline, then stops everything.
 */
#ifndef LOCUS_ENGINE_SERVER_H
#define LOCUS_ENGINE_SERVER_H

#include <stddef.h>

#include "engine/config.h"

struct server;

int server_start(struct server **out, const struct engine_config *cfg, const struct plan *plan, char *err,
		 size_t errlen);
/* Waits until the model is loaded: 0, or -EINVAL with the reason. */
int server_wait_ready(struct server *s, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int server_port(const struct server *s);
/* Graceful stop (drain_ms from the config), then frees everything. */
void server_stop(struct server *s);

#endif
