/*
 * cuda_loader.c: finds and opens liblocus_cuda.so (see cuda/cuda_module.h).
 * The module is looked for next to the running program, so build/bin/engine
 * finds build/bin/liblocus_cuda.so; $LOCUS_CUDA_MODULE names another file.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend_impl.h"
#include "kernels/cuda/cuda_module.h"

static pthread_mutex_t mod_mu = PTHREAD_MUTEX_INITIALIZER;
static void *mod;

void *kern_cuda_module(char *errbuf, size_t errlen)
{
	pthread_mutex_lock(&mod_mu);
	if (mod)
		goto out;
	char path[PATH_MAX];
	const char *env = getenv("LOCUS_CUDA_MODULE");
	if (env && *env) {
		snprintf(path, sizeof(path), "%s", env);
	} else {
		ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
		if (n <= 0) {
			snprintf(errbuf, errlen, "cuda backend: cannot find the program's directory: %s", strerror(errno));
			goto out;
		}
		path[n] = '\0';
		char *slash = strrchr(path, '/');
		size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
		if (dir + sizeof(LOCUS_CUDA_MODULE_NAME) > sizeof(path)) {
			snprintf(errbuf, errlen, "cuda backend: the program's path is too long");
			goto out;
		}
		memcpy(path + dir, LOCUS_CUDA_MODULE_NAME, sizeof(LOCUS_CUDA_MODULE_NAME));
	}
	if (access(path, F_OK) != 0) {
		snprintf(errbuf, errlen, "cuda backend: %s is missing (this build has no CUDA backend: nvcc was not found, "
			 "or it is a sanitizer build)", path);
		goto out;
	}
	void *m = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!m) {
		snprintf(errbuf, errlen, "cuda backend: cannot load %s: %s", path, dlerror());
		goto out;
	}
	locus_cuda_abi_fn abi;
	locus_cuda_init_fn init;
	*(void **)&abi = dlsym(m, "locus_cuda_abi");
	*(void **)&init = dlsym(m, "locus_cuda_init");
	if (!abi || !init || abi() != LCU_ABI) {
		snprintf(errbuf, errlen, "cuda backend: %s was built for another version of this program (module ABI %d, "
			 "program %d): rebuild both from one tree", path, abi ? abi() : -1, LCU_ABI);
		dlclose(m);
		goto out;
	}
	static const struct lcu_host host = {
		.dequantize_row = kern_dequantize_row,
		.numa_map = alloc_numa_map,
		.numa_unmap = alloc_numa_unmap,
		.rope_inv_freq = kern_rope_inv_freq,
	};
	init(&host);
	mod = m;
out:;
	void *r = mod;
	pthread_mutex_unlock(&mod_mu);
	return r;
}

kern_backend_t *kern_backend_cuda_open(const struct kern_weights *w, const struct kern_backend_config *cfg,
				       char *errbuf, size_t errlen)
{
	void *m = kern_cuda_module(errbuf, errlen);
	if (!m)
		return NULL;
	locus_cuda_open_fn fn;
	*(void **)&fn = dlsym(m, "locus_cuda_open");
	if (!fn) {
		snprintf(errbuf, errlen, "cuda backend: the module has no locus_cuda_open: %s", dlerror());
		return NULL;
	}
	return fn(w, cfg, errbuf, errlen);
}
