/*
 * ring.h: a bounded lock-free queue of pointers, many producers (the net
 * threads) and one consumer (a node's dispatcher), in memory bound to the
 * consumer's NUMA node. A full ring refuses the push (-ENOSPC): it never
 * grows. The consumer can sleep until the next push (futex), and any thread
 * can kick it awake.
 *
 * Algorithm: Dmitry Vyukov's bounded queue: each cell carries a sequence
 * number telling producers and the consumer whose turn it is, so a push is
 * one CAS on the head and a release store on the cell.
 */
#ifndef LOCUS_ENGINE_RING_H
#define LOCUS_ENGINE_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/alloc.h"

struct ring_cell {
	_Atomic size_t seq;
	void *item;
};

struct ring {
	struct ring_cell *cells; /* (capacity) */
	size_t mask;
	size_t bytes;
	int node;
	_Alignas(64) _Atomic size_t head; /* next push position */
	_Alignas(64) _Atomic size_t tail; /* next pop position (consumer only) */
	_Alignas(64) _Atomic uint32_t wake;
	_Atomic int sleeping;
	_Atomic uint64_t pushed, rejected;
};

/* capacity: a power of two >= 2. node < 0: no binding. */
int ring_init(struct ring *r, size_t capacity, int node, enum alloc_policy policy);
void ring_free(struct ring *r);
/* 0, or -ENOSPC when full. Wakes a sleeping consumer. */
int ring_push(struct ring *r, void *item);
/* The same without the wake-up: the caller kicks later (ring_kick), for
 * example once for a batch of pushes. */
int ring_push_quiet(struct ring *r, void *item);
/* Consumer only: the oldest item or NULL. */
void *ring_pop(struct ring *r);
/* Approximate number of queued items. */
size_t ring_depth(struct ring *r);
/* Consumer only: sleeps until a push, a kick or timeout_ms (< 0: no limit). */
void ring_wait(struct ring *r, int timeout_ms);
/* Any thread: wakes the consumer if it sleeps. */
void ring_kick(struct ring *r);

#endif
