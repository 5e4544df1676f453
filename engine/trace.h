/*
 * trace.h: NVTX ranges around the dispatcher's host-side stages (internal
 * to engine/). In builds with CUDA they are NVTX v3 ranges (header-only:
 * a no-op unless a tool such as `nsys profile` is attached); elsewhere they
 * compile to nothing. Ranges nest per thread; every push has its pop.
 */
#ifndef LOCUS_ENGINE_TRACE_H
#define LOCUS_ENGINE_TRACE_H

#ifdef LOCUS_NVTX
#include <stdio.h>
#include <nvtx3/nvToolsExt.h>
#define TRACE_PUSH(name) nvtxRangePushA(name)
#define TRACE_PUSHF(...)                                    \
	do {                                                \
		char trace_name_[96];                       \
		snprintf(trace_name_, sizeof(trace_name_), __VA_ARGS__); \
		nvtxRangePushA(trace_name_);                \
	} while (0)
#define TRACE_POP() nvtxRangePop()
#else
#define TRACE_PUSH(name) ((void)0)
#define TRACE_PUSHF(...) ((void)0)
#define TRACE_POP() ((void)0)
#endif

#endif
