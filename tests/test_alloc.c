/*
 * test_alloc: the heap wrappers and bump arenas of alloc/.
 *   - heap accounting goes up by at least what was asked and back down;
 *     alignment is honoured; alloc_array refuses overflowing sizes;
 *   - arena items are aligned, disjoint (each filled with its own pattern
 *     and checked after all allocations), larger-than-chunk items work,
 *     reset keeps one chunk and hands out memory again;
 *   - in an ASan build (the sanitizer CI build and the fuzzers): a write one
 *     byte past an arena item and one past a heap block are each reported
 *     by ASan in a child process (the heap is libc's there, the arena
 *     poisons what it has not handed out). Elsewhere these two are skipped.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc/alloc.h"
#include "tests/check.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif

static void test_heap(void)
{
	struct alloc_stats s0, s1, s2;
	alloc_stats_get(&s0);
	unsigned char *p = alloc_mem(1000);
	CHECK(p != NULL, "alloc_mem");
	alloc_stats_get(&s1);
	CHECK(s1.heap_bytes - s0.heap_bytes >= 1000, "accounted %lld", (long long)(s1.heap_bytes - s0.heap_bytes));
	memset(p, 0x5a, 1000);
	alloc_free(p);
	alloc_stats_get(&s2);
	CHECK(s2.heap_bytes == s0.heap_bytes, "back to %lld, got %lld", (long long)s0.heap_bytes,
	      (long long)s2.heap_bytes);

	unsigned char *z = alloc_zmem(4096);
	int nonzero = 0;
	for (int i = 0; z && i < 4096; i++)
		nonzero += z[i] != 0;
	CHECK(z && nonzero == 0, "alloc_zmem zeroes (%d non-zero)", nonzero);
	alloc_free(z);

	static const size_t aligns[] = {1, 8, 64, 4096};
	for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
		void *q = alloc_aligned(100, aligns[i]);
		CHECK(q && (uintptr_t)q % aligns[i] == 0, "alloc_aligned %zu: %p", aligns[i], q);
		alloc_free(q);
	}
	CHECK(alloc_array(SIZE_MAX / 8 + 1, 16) == NULL, "alloc_array overflow refused");
	alloc_free(NULL);
}

static void test_arena(void)
{
	struct alloc_arena a;
	alloc_arena_init(&a, 1024);
	enum { N = 200 };
	unsigned char *item[N];
	size_t len[N];
	uint32_t rng = 12345;
	for (int i = 0; i < N; i++) {
		rng = rng * 1103515245u + 12345u;
		len[i] = 1 + (rng >> 16) % (i % 50 == 49 ? 3000 : 100); /* some larger than a chunk */
		size_t align = (size_t)1 << ((rng >> 8) % 7);     /* 1..64 */
		item[i] = alloc_arena_get(&a, len[i], align);
		CHECK(item[i] && (uintptr_t)item[i] % align == 0, "item %d: %zu bytes aligned %zu: %p", i, len[i], align,
		      (void *)item[i]);
		if (item[i])
			memset(item[i], i & 0xff, len[i]);
	}
	int bad = 0;
	for (int i = 0; i < N; i++)
		for (size_t j = 0; item[i] && j < len[i]; j++)
			bad += item[i][j] != (i & 0xff);
	CHECK(bad == 0, "items overlap: %d bytes overwritten", bad);
	CHECK(alloc_arena_get(&a, 8, 3) == NULL && alloc_arena_get(&a, 8, 128) == NULL && alloc_arena_get(&a, 8, 0) == NULL,
	      "bad alignments refused");
	alloc_arena_reset(&a);
	CHECK(a.used_bytes == 0, "reset: used %zu", a.used_bytes);
	unsigned char *again = alloc_arena_get(&a, 512, 16);
	CHECK(again != NULL, "after reset");
	if (again)
		memset(again, 0xee, 512);
	alloc_arena_free(&a);
	CHECK(a.head == NULL && a.used_bytes == 0, "free");
}

#ifdef HAVE_ASAN
/* Runs fn in a child with stderr captured; the child must die reporting
 * `want`. */
static void expect_asan(const char *what, void (*fn)(void), const char *want)
{
	int fd[2];
	if (pipe(fd)) {
		CHECK(0, "pipe");
		return;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fd[1], 2);
		close(fd[0]);
		fn();
		_exit(0); /* reached only when ASan saw nothing */
	}
	close(fd[1]);
	char out[8192];
	size_t n = 0;
	ssize_t k;
	while (n < sizeof(out) - 1 && (k = read(fd[0], out + n, sizeof(out) - 1 - n)) > 0)
		n += (size_t)k;
	out[n] = 0;
	close(fd[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	bool died = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(died && strstr(out, want), "%s: want a report of %s, got status %d and:\n%.400s", what, want, st, out);
}

static void overflow_arena(void)
{
	struct alloc_arena a;
	alloc_arena_init(&a, 4096);
	volatile unsigned char *p = alloc_arena_get(&a, 10, 1);
	(void)alloc_arena_get(&a, 10, 1); /* a neighbour: the overflow must not land in it */
	p[10] = 1;
}

static void overflow_heap(void)
{
	volatile unsigned char *p = alloc_mem(24);
	p[24] = 1;
}
#endif

int main(void)
{
	test_heap();
	test_arena();
#ifdef HAVE_ASAN
	expect_asan("one byte past an arena item", overflow_arena, "use-after-poison");
	expect_asan("one byte past a heap block", overflow_heap, "heap-buffer-overflow");
#else
	printf("skip: overflow detection (not an ASan build)\n");
#endif
	return check_status("test_alloc");
}
