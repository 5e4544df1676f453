/*
 * alloc.c: heap (mimalloc), NUMA-bound mappings (mmap + mbind through
 * libnuma) and bump arenas, with process-wide byte accounting.
 *
 * Sanitizer builds (ASan, TSan, the fuzzers) define LOCUS_ALLOC_LIBC: the
 * heap is then libc's malloc, which the sanitizers intercept. Through
 * mimalloc, ASan would put no redzones around our blocks (overflows of
 * heap buffers would go unseen) and TSan would not see the hand-over of a
 * block freed on one thread and reused on another (false races).
 *
 * Accounting uses relaxed atomics: the figures are for reports and metrics,
 * never for control decisions.
 */
#include "alloc/alloc.h"

#ifdef LOCUS_ALLOC_LIBC
#include <malloc.h>
#include <stdlib.h>
#define heap_malloc(n)     malloc(n)
#define heap_zalloc(n)     calloc(1, (n))
#define heap_usable_size(p) malloc_usable_size(p)
#define heap_free(p)       free(p)
static void *heap_malloc_aligned(size_t n, size_t align)
{
	void *p = NULL;
	if (align < sizeof(void *))
		align = sizeof(void *);
	return posix_memalign(&p, align, n) ? NULL : p;
}
#else
#include <mimalloc.h>
#define heap_malloc(n)                mi_malloc(n)
#define heap_zalloc(n)                mi_zalloc(n)
#define heap_malloc_aligned(n, align) mi_malloc_aligned((n), (align))
#define heap_usable_size(p)           mi_usable_size(p)
#define heap_free(p)                  mi_free(p)
#endif
#include <numa.h>
#include <numaif.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static _Atomic int64_t g_heap_bytes;
static _Atomic int64_t g_map_bytes;
static _Atomic int64_t g_map_node[8];

void *alloc_mem(size_t bytes)
{
	void *p = heap_malloc(bytes ? bytes : 1);
	if (p)
		atomic_fetch_add_explicit(&g_heap_bytes, (int64_t)heap_usable_size(p), memory_order_relaxed);
	return p;
}

void *alloc_zmem(size_t bytes)
{
	void *p = heap_zalloc(bytes ? bytes : 1);
	if (p)
		atomic_fetch_add_explicit(&g_heap_bytes, (int64_t)heap_usable_size(p), memory_order_relaxed);
	return p;
}

void *alloc_aligned(size_t bytes, size_t align)
{
	void *p = heap_malloc_aligned(bytes ? bytes : 1, align);
	if (p)
		atomic_fetch_add_explicit(&g_heap_bytes, (int64_t)heap_usable_size(p), memory_order_relaxed);
	return p;
}

void *alloc_array(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	return alloc_zmem(n * size);
}

void alloc_free(void *p)
{
	if (!p)
		return;
	atomic_fetch_sub_explicit(&g_heap_bytes, (int64_t)heap_usable_size(p), memory_order_relaxed);
	heap_free(p);
}

static size_t page_round(size_t bytes)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	return (bytes + pg - 1) / pg * pg;
}

void *alloc_numa_map(size_t bytes, int node, enum alloc_policy policy, int *bound_out)
{
	if (bound_out)
		*bound_out = 0;
	if (bytes == 0)
		return NULL;
	size_t len = page_round(bytes);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (node >= 0 && policy != ALLOC_POLICY_OFF && numa_available() >= 0 && node <= numa_max_node()) {
		struct bitmask *nodes = numa_allocate_nodemask();
		numa_bitmask_setbit(nodes, (unsigned)node);
		int mode = policy == ALLOC_POLICY_STRICT ? MPOL_BIND : MPOL_PREFERRED;
		long rc = mbind(p, len, mode, nodes->maskp, nodes->size + 1, 0);
		numa_free_nodemask(nodes);
		if (rc == 0 && bound_out)
			*bound_out = 1;
	}
	atomic_fetch_add_explicit(&g_map_bytes, (int64_t)len, memory_order_relaxed);
	int slot = node < 0 ? 0 : node > 7 ? 7 : node;
	atomic_fetch_add_explicit(&g_map_node[slot], (int64_t)len, memory_order_relaxed);
	return p;
}

void alloc_numa_unmap(void *p, size_t bytes)
{
	if (!p)
		return;
	size_t len = page_round(bytes);
	munmap(p, len);
	atomic_fetch_sub_explicit(&g_map_bytes, (int64_t)len, memory_order_relaxed);
	/* Per-node counts are not tracked per mapping; the total stays exact. */
}

void alloc_stats_get(struct alloc_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->heap_bytes = atomic_load_explicit(&g_heap_bytes, memory_order_relaxed);
	out->map_bytes = atomic_load_explicit(&g_map_bytes, memory_order_relaxed);
	for (int i = 0; i < 8; i++)
		out->map_bytes_node[i] = atomic_load_explicit(&g_map_node[i], memory_order_relaxed);
}

int alloc_rss_get(struct alloc_rss *out)
{
	memset(out, 0, sizeof(*out));
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -errno;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		long long kb;
		if (sscanf(line, "RssAnon: %lld kB", &kb) == 1)
			out->anon_bytes = kb * 1024;
		else if (sscanf(line, "RssFile: %lld kB", &kb) == 1)
			out->file_bytes = kb * 1024;
	}
	fclose(f);
	return 0;
}

/* ---- arena ---- */

/* Under ASan, what an arena has not handed out is poisoned, and items are
 * kept ARENA_REDZONE bytes apart, so a read or write past an item's end is
 * reported as it would be for a malloc'd block. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define ARENA_REDZONE 16
#define arena_poison(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define arena_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ARENA_REDZONE 0
#define arena_poison(p, n)   ((void)(p), (void)(n))
#define arena_unpoison(p, n) ((void)(p), (void)(n))
#endif

struct alloc_chunk {
	struct alloc_chunk *next;
	size_t cap;
	size_t off;
	_Alignas(64) unsigned char data[];
};

void alloc_arena_init(struct alloc_arena *a, size_t chunk_bytes)
{
	a->head = NULL;
	a->chunk_bytes = chunk_bytes ? chunk_bytes : 64 * 1024;
	a->used_bytes = 0;
}

void *alloc_arena_get(struct alloc_arena *a, size_t bytes, size_t align)
{
	if (align == 0 || (align & (align - 1)) || align > 64)
		return NULL;
	if (ARENA_REDZONE && align < 8)
		align = 8; /* ASan's shadow granule: items start on one */
	struct alloc_chunk *c = a->head;
	if (c) {
		size_t off = (c->off + (c->off ? ARENA_REDZONE : 0) + align - 1) & ~(align - 1);
		if (off <= c->cap && bytes <= c->cap - off) {
			c->off = off + bytes;
			a->used_bytes += bytes;
			arena_unpoison(c->data + off, bytes);
			return c->data + off;
		}
	}
	size_t cap = bytes > a->chunk_bytes ? bytes : a->chunk_bytes;
	if (cap > SIZE_MAX - sizeof(struct alloc_chunk))
		return NULL;
	c = alloc_aligned(sizeof(struct alloc_chunk) + cap, 64);
	if (!c)
		return NULL;
	c->cap = cap;
	c->off = bytes;
	c->next = a->head;
	a->head = c;
	a->used_bytes += bytes;
	arena_poison(c->data + bytes, cap - bytes);
	return c->data;
}

void alloc_arena_reset(struct alloc_arena *a)
{
	struct alloc_chunk *c = a->head;
	if (!c)
		return;
	/* Keep the oldest chunk (the last in the list): it is the steady-state size. */
	while (c->next) {
		struct alloc_chunk *n = c->next;
		arena_unpoison(c->data, c->cap);
		alloc_free(c);
		c = n;
	}
	c->off = 0;
	arena_poison(c->data, c->cap);
	a->head = c;
	a->used_bytes = 0;
}

void alloc_arena_free(struct alloc_arena *a)
{
	struct alloc_chunk *c = a->head;
	while (c) {
		struct alloc_chunk *n = c->next;
		arena_unpoison(c->data, c->cap);
		alloc_free(c);
		c = n;
	}
	a->head = NULL;
	a->used_bytes = 0;
}
