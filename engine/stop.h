/*
 * stop.h: stop strings over a stream of generated text.
 *
 * Text goes in as it is detokenized; what comes out is the text that can no
 * longer be part of a stop string. A suffix that could still grow into one
 * is held back. When a stop string appears, the text before it is released
 * and the rest (the stop string included) is dropped, as the OpenAI API does.
 *
 * Threading: one matcher per request.
 */
#ifndef LOCUS_ENGINE_STOP_H
#define LOCUS_ENGINE_STOP_H

#include <stdbool.h>
#include <stddef.h>

#define STOP_MAX 8        /* stop strings per request (OpenAI allows 4) */
#define STOP_MAX_LEN 256  /* bytes per stop string */

struct stop_matcher {
	int n;
	size_t len[STOP_MAX];
	char str[STOP_MAX][STOP_MAX_LEN];
	size_t n_hold;
	char hold[STOP_MAX_LEN];
	bool hit;
};

void stop_init(struct stop_matcher *m);
/* Adds a stop string; -EINVAL when empty or too long, -ENOSPC when full. */
int stop_add(struct stop_matcher *m, const char *s, size_t len);
/*
 * Feeds text; writes the releasable text to out (needs room for
 * len + STOP_MAX_LEN bytes) and returns its length. After a hit, m->hit is
 * set and further input is ignored.
 */
size_t stop_feed(struct stop_matcher *m, const char *text, size_t len, char *out);
/* End of generation: releases what is held (no stop string completed). */
size_t stop_flush(struct stop_matcher *m, char *out);

#endif
