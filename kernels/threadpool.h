/*
 * threadpool.h: the CPU backend's persistent workers (internal to kernels/).
 *
 * tp_run(pool, fn, ctx) runs fn(ctx, ith, nth) on every thread of the pool,
 * the caller being thread 0, and returns when all have finished. Inside fn
 * the threads meet at tp_barrier() between the phases of a forward step, so
 * a whole step is one dispatch: no wake-ups between operations.
 *
 * Idle workers spin briefly (a step usually follows soon), then sleep on a
 * futex. Workers can be pinned to CPUs at creation.
 *
 * Threading: tp_run must be called by one thread at a time.
 */
#ifndef LOCUS_KERNELS_THREADPOOL_H
#define LOCUS_KERNELS_THREADPOOL_H

#include <stddef.h>

struct tp_pool;
typedef void (*tp_fn)(void *ctx, int ith, int nth);

/* n_threads >= 1 including the caller. cpus[i % n_cpus] is the CPU of
 * thread i (thread 0 = the caller is pinned too when pin_caller is set). */
struct tp_pool *tp_create(int n_threads, const int *cpus, int n_cpus, int pin_caller, char *err, size_t errlen);
void tp_destroy(struct tp_pool *p);
int tp_threads(const struct tp_pool *p);
void tp_run(struct tp_pool *p, tp_fn fn, void *ctx);
void tp_barrier(struct tp_pool *p);

#endif
