/*
 * test_ring: the bounded MPSC ring. Four producers push 200,000 tagged items
 * each while one consumer pops (sleeping in ring_wait when empty); every
 * item arrives exactly once and each producer's items in order; a full
 * ring refuses pushes; a kick wakes a sleeping consumer; a quiet push
 * (ring_push_quiet) does not, the kick after it does, and the consumer then
 * finds the item.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/ring.h"
#include "tests/check.h"

#define PRODUCERS 4
#define PER 200000

static struct ring g_ring;

static void *producer(void *arg)
{
	uintptr_t p = (uintptr_t)arg;
	for (uintptr_t i = 0; i < PER; i++) {
		void *item = (void *)((p << 32) | (i + 1));
		while (ring_push(&g_ring, item) == -ENOSPC)
			sched_yield();
	}
	return NULL;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *kicker(void *arg)
{
	(void)arg;
	struct timespec ts = {0, 100 * 1000 * 1000};
	nanosleep(&ts, NULL);
	ring_kick(&g_ring);
	return NULL;
}

static _Atomic double g_kick_at;

/* Waits until the consumer is going to sleep, gives it 100 ms to get into
 * the futex wait, pushes quietly, waits 200 ms, kicks. */
static void *quiet_pusher(void *arg)
{
	(void)arg;
	while (!atomic_load(&g_ring.sleeping))
		sched_yield();
	struct timespec ts = {0, 100 * 1000 * 1000};
	nanosleep(&ts, NULL);
	CHECK(ring_push_quiet(&g_ring, (void *)7) == 0, "quiet push");
	ts.tv_nsec = 200 * 1000 * 1000;
	nanosleep(&ts, NULL);
	atomic_store(&g_kick_at, now());
	ring_kick(&g_ring);
	return NULL;
}

int main(void)
{
	CHECK(ring_init(&g_ring, 1000, -1, ALLOC_POLICY_OFF) == -EINVAL, "capacity must be a power of two");
	CHECK(ring_init(&g_ring, 64, 0, ALLOC_POLICY_PREFERRED) == 0, "init");
	pthread_t th[PRODUCERS];
	for (uintptr_t p = 0; p < PRODUCERS; p++)
		pthread_create(&th[p], NULL, producer, (void *)p);
	uint32_t next[PRODUCERS] = {0};
	long got = 0, sleeps = 0;
	while (got < (long)PRODUCERS * PER) {
		void *item = ring_pop(&g_ring);
		if (!item) {
			ring_wait(&g_ring, 50);
			sleeps++;
			continue;
		}
		uintptr_t v = (uintptr_t)item, p = v >> 32, i = v & 0xffffffffu;
		if (p >= PRODUCERS || i != next[p] + 1) {
			CHECK(0, "item %lx out of order (producer %lu expected %u)", (unsigned long)v, (unsigned long)p,
			      next[p] + 1);
			break;
		}
		next[p] = (uint32_t)i;
		got++;
	}
	for (int p = 0; p < PRODUCERS; p++)
		pthread_join(th[p], NULL);
	CHECK(got == (long)PRODUCERS * PER && ring_pop(&g_ring) == NULL, "all %d items exactly once", PRODUCERS * PER);

	for (int i = 0; i < 64; i++)
		CHECK(ring_push(&g_ring, (void *)(uintptr_t)(i + 1)) == 0, "fill");
	CHECK(ring_push(&g_ring, (void *)1) == -ENOSPC && ring_depth(&g_ring) == 64, "full ring refuses");
	while (ring_pop(&g_ring))
		;
	pthread_t k;
	pthread_create(&k, NULL, kicker, NULL);
	double t0 = now();
	ring_wait(&g_ring, 5000);
	double dt = now() - t0;
	pthread_join(k, NULL);
	CHECK(dt < 2.0, "a kick wakes the sleeping consumer (woke after %.3f s)", dt);

	/* The consumer must sleep through the quiet push and wake at the kick
	 * (not before it: the order is checked, not a duration). */
	pthread_create(&k, NULL, quiet_pusher, NULL);
	t0 = now();
	ring_wait(&g_ring, 10000);
	double woke = now();
	pthread_join(k, NULL);
	double kick = atomic_load(&g_kick_at);
	CHECK(kick > 0 && woke >= kick, "a quiet push does not wake the consumer (woke %.3f s before the kick)",
	      kick - woke);
	CHECK(woke - t0 < 5.0, "the kick after a quiet push wakes the consumer (woke after %.3f s)", woke - t0);
	CHECK(ring_pop(&g_ring) == (void *)7 && ring_pop(&g_ring) == NULL, "the quietly pushed item is there");
	ring_free(&g_ring);
	printf("test_ring: %ld items, consumer slept %ld times\n", got, sleeps);
	return check_status("test_ring");
}
