/*
 * alloc: memory for the engine, with byte accounting.
 *
 *   - alloc_mem / alloc_free: general heap memory (mimalloc underneath),
 *     cache-line aligned on request.
 *   - alloc_numa_map / alloc_numa_unmap: large page-granular buffers (KV
 *     cache, activation scratch) mapped with mmap and bound to a NUMA node
 *     with libnuma; the binding policy is explicit and a refused binding is
 *     reported, not hidden.
 *   - struct alloc_arena: a bump allocator for per-request or per-step memory,
 *     freed all at once (nginx pools).
 *
 * Threading: alloc_mem/alloc_free and the accounting are thread-safe; an
 * arena belongs to one thread at a time.
 */
#ifndef LOCUS_ALLOC_H
#define LOCUS_ALLOC_H

#include <stddef.h>
#include <stdint.h>

enum alloc_policy {
	ALLOC_POLICY_OFF = 0,   /* let the kernel decide (first touch) */
	ALLOC_POLICY_PREFERRED, /* prefer the node, fall back silently */
	ALLOC_POLICY_STRICT,    /* bind to the node; pages come only from it */
};

struct alloc_stats {
	int64_t heap_bytes; /* live bytes from alloc_mem */
	int64_t map_bytes;  /* live bytes from alloc_numa_map */
	int64_t map_bytes_node[8]; /* per node, nodes >= 8 are counted in [7] */
};

void *alloc_mem(size_t bytes);
void *alloc_zmem(size_t bytes);
void *alloc_aligned(size_t bytes, size_t align);
void alloc_free(void *p);
/* Overflow-checked n * size, NULL on overflow or failure. */
void *alloc_array(size_t n, size_t size);

/*
 * Map `bytes` (rounded up to pages) bound to `node` with `policy`
 * (node < 0 means no binding). On return *bound_out (if not NULL) is 1 when
 * the binding was applied, 0 when it was refused or not asked for; the
 * memory is usable either way. Pages are touched (zeroed) by the caller's
 * thread, so call it from a thread running on the node.
 */
void *alloc_numa_map(size_t bytes, int node, enum alloc_policy policy, int *bound_out);
void alloc_numa_unmap(void *p, size_t bytes);

void alloc_stats_get(struct alloc_stats *out);

/* The process's resident memory from /proc/self/status, in bytes:
 * anonymous (heap, KV cache, scratch) and file-backed (mapped weights). */
struct alloc_rss {
	int64_t anon_bytes;
	int64_t file_bytes;
};
int alloc_rss_get(struct alloc_rss *out);

/* ---- arena ---- */
struct alloc_chunk;
struct alloc_arena {
	struct alloc_chunk *head;
	size_t chunk_bytes;
	size_t used_bytes;
};

void alloc_arena_init(struct alloc_arena *a, size_t chunk_bytes);
void *alloc_arena_get(struct alloc_arena *a, size_t bytes, size_t align);
void alloc_arena_reset(struct alloc_arena *a); /* keeps the first chunk */
void alloc_arena_free(struct alloc_arena *a);

#endif
