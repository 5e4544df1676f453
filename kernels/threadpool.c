/*
 * threadpool.c: persistent worker pool with a spin-then-futex start signal
 * and a sense-reversing spin barrier.
 *
 * Start: the caller publishes (fn, ctx) and bumps `gen`; workers wait for
 * gen to change. Finish: everyone meets at a last barrier. The barrier
 * counts arrivals and flips `sense`; the last arriving thread resets the
 * count and wakes sleepers. Waits spin first and then sleep on a futex. Memory ordering: release on publish /
 * arrive, acquire on observe, so everything written before a barrier is
 * visible after it.
 */
#define _GNU_SOURCE
#include "kernels/threadpool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc/alloc.h"

#define SPIN_BEFORE_SLEEP 200000 /* idle workers: pause iterations (about 1-5 ms) before the futex */
#define SPIN_BEFORE_WAIT 2000   /* barriers: pause iterations (tens of us) before the futex:
				  * when the machine is oversubscribed the thread we wait for may
				  * be descheduled; sleeping frees this CPU so the scheduler can
				  * run it here (sched_yield would not migrate it) */

struct tp_worker {
	struct tp_pool *pool;
	pthread_t thread;
	int ith;
	int cpu;
};

struct tp_pool {
	int n;
	_Alignas(64) _Atomic uint32_t gen;       /* start signal, also the futex word */
	_Alignas(64) _Atomic int bar_count;
	_Atomic uint32_t bar_sense;       /* flips each barrier; futex word */
	_Atomic int bar_sleepers;
	_Alignas(64) tp_fn fn;
	void *ctx;
	_Atomic int stop;
	_Atomic int sleepers;
	struct tp_worker *workers;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static int pin_self(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

void tp_barrier(struct tp_pool *p)
{
	if (p->n == 1)
		return;
	uint32_t sense = atomic_load_explicit(&p->bar_sense, memory_order_relaxed);
	if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->n - 1) {
		atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
		atomic_store_explicit(&p->bar_sense, sense ^ 1u, memory_order_seq_cst);
		if (atomic_load_explicit(&p->bar_sleepers, memory_order_seq_cst) > 0)
			futex_wake_all(&p->bar_sense);
		return;
	}
	for (int spins = 0; atomic_load_explicit(&p->bar_sense, memory_order_acquire) == sense;) {
		if (++spins < SPIN_BEFORE_WAIT) {
			cpu_relax();
			continue;
		}
		atomic_fetch_add_explicit(&p->bar_sleepers, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&p->bar_sense, memory_order_seq_cst) == sense)
			futex_wait(&p->bar_sense, sense);
		atomic_fetch_sub_explicit(&p->bar_sleepers, 1, memory_order_relaxed);
	}
}

static void *worker_main(void *arg)
{
	struct tp_worker *w = arg;
	struct tp_pool *p = w->pool;
	char name[16];
	snprintf(name, sizeof(name), "locus-work%d", w->ith);
	pthread_setname_np(pthread_self(), name);
	if (w->cpu >= 0)
		pin_self(w->cpu);
	/* gen is 0 at creation; reading it here instead would miss a tp_run
	 * issued before this thread got to run. */
	uint32_t seen = 0;
	for (;;) {
		uint32_t g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (++spins < SPIN_BEFORE_SLEEP) {
				cpu_relax();
				continue;
			}
			atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
			if (atomic_load_explicit(&p->gen, memory_order_seq_cst) == seen)
				futex_wait(&p->gen, seen);
			atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
			spins = 0;
		}
		seen = g;
		if (atomic_load_explicit(&p->stop, memory_order_acquire))
			return NULL;
		p->fn(p->ctx, w->ith, p->n);
		tp_barrier(p); /* tells tp_run this worker is done with fn and ctx */
	}
}

struct tp_pool *tp_create(int n_threads, const int *cpus, int n_cpus, int pin_caller, char *err, size_t errlen)
{
	if (n_threads < 1 || n_threads > 1024) {
		snprintf(err, errlen, "threadpool: %d threads is out of range 1..1024", n_threads);
		return NULL;
	}
	struct tp_pool *p = alloc_aligned(sizeof(*p), 64);
	if (!p) {
		snprintf(err, errlen, "threadpool: out of memory");
		return NULL;
	}
	memset(p, 0, sizeof(*p));
	p->n = n_threads;
	p->workers = alloc_array((size_t)n_threads, sizeof(*p->workers));
	if (!p->workers) {
		alloc_free(p);
		snprintf(err, errlen, "threadpool: out of memory");
		return NULL;
	}
	if (pin_caller && cpus && n_cpus > 0 && pin_self(cpus[0]) != 0) {
		/* Not fatal: the caller runs unpinned; say so. */
		fprintf(stderr, "threadpool: could not pin the calling thread to CPU %d\n", cpus[0]);
	}
	for (int i = 1; i < n_threads; i++) {
		struct tp_worker *w = &p->workers[i];
		w->pool = p;
		w->ith = i;
		w->cpu = cpus && n_cpus > 0 ? cpus[i % n_cpus] : -1;
		int rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc) {
			snprintf(err, errlen, "threadpool: pthread_create: %s", strerror(rc));
			p->n = i; /* join the ones started */
			tp_destroy(p);
			return NULL;
		}
	}
	return p;
}

int tp_threads(const struct tp_pool *p)
{
	return p->n;
}

void tp_run(struct tp_pool *p, tp_fn fn, void *ctx)
{
	p->fn = fn;
	p->ctx = ctx;
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
	if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0)
		futex_wake_all(&p->gen);
	fn(ctx, 0, p->n);
	tp_barrier(p);
}

void tp_destroy(struct tp_pool *p)
{
	if (!p)
		return;
	atomic_store_explicit(&p->stop, 1, memory_order_release);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
	futex_wake_all(&p->gen);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->workers[i].thread, NULL);
	alloc_free(p->workers);
	alloc_free(p);
}
