/*
 * ring.c: Vyukov's bounded queue specialised to one consumer, plus a futex
 * for the consumer's sleep. Ordering: a producer publishes the item with a
 * release store of the cell's sequence; the consumer acquires it. For the
 * sleep, `sleeping` and `wake` are accessed seq_cst on both sides, so either
 * the consumer sees the new item before sleeping or the producer sees
 * `sleeping` and wakes it.
 */
#include "engine/ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int ring_init(struct ring *r, size_t capacity, int node, enum alloc_policy policy)
{
	memset(r, 0, sizeof(*r));
	if (capacity < 2 || (capacity & (capacity - 1)) || capacity > ((size_t)1 << 30))
		return -EINVAL;
	r->bytes = capacity * sizeof(struct ring_cell);
	r->cells = alloc_numa_map(r->bytes, node, policy, NULL);
	if (!r->cells)
		return -ENOMEM;
	r->mask = capacity - 1;
	r->node = node;
	for (size_t i = 0; i < capacity; i++)
		atomic_store_explicit(&r->cells[i].seq, i, memory_order_relaxed);
	return 0;
}

void ring_free(struct ring *r)
{
	alloc_numa_unmap(r->cells, r->bytes);
	r->cells = NULL;
}

static void futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void ring_kick(struct ring *r)
{
	atomic_fetch_add_explicit(&r->wake, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&r->sleeping, memory_order_seq_cst))
		futex_wake(&r->wake);
}

int ring_push_quiet(struct ring *r, void *item)
{
	size_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);
	for (;;) {
		struct ring_cell *c = &r->cells[pos & r->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t diff = (intptr_t)seq - (intptr_t)pos;
		if (diff == 0) {
			if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + 1, memory_order_relaxed,
								  memory_order_relaxed)) {
				c->item = item;
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				atomic_fetch_add_explicit(&r->pushed, 1, memory_order_relaxed);
				return 0;
			}
		} else if (diff < 0) {
			atomic_fetch_add_explicit(&r->rejected, 1, memory_order_relaxed);
			return -ENOSPC;
		} else {
			pos = atomic_load_explicit(&r->head, memory_order_relaxed);
		}
	}
}

int ring_push(struct ring *r, void *item)
{
	int rc = ring_push_quiet(r, item);
	if (rc == 0)
		ring_kick(r);
	return rc;
}

void *ring_pop(struct ring *r)
{
	size_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
	struct ring_cell *c = &r->cells[pos & r->mask];
	size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
	if ((intptr_t)seq - (intptr_t)(pos + 1) < 0)
		return NULL;
	void *item = c->item;
	atomic_store_explicit(&r->tail, pos + 1, memory_order_relaxed);
	atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
	return item;
}

size_t ring_depth(struct ring *r)
{
	size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
	size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
	return h >= t ? h - t : 0;
}

void ring_wait(struct ring *r, int timeout_ms)
{
	uint32_t w = atomic_load_explicit(&r->wake, memory_order_seq_cst);
	atomic_store_explicit(&r->sleeping, 1, memory_order_seq_cst);
	if (ring_depth(r) == 0 && atomic_load_explicit(&r->wake, memory_order_seq_cst) == w) {
		struct timespec ts, *tp = NULL;
		if (timeout_ms >= 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000;
			tp = &ts;
		}
		syscall(SYS_futex, (uint32_t *)&r->wake, FUTEX_WAIT_PRIVATE, w, tp, NULL, 0);
	}
	atomic_store_explicit(&r->sleeping, 0, memory_order_seq_cst);
}
