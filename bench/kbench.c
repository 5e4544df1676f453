/*
 * kbench: microbenchmarks of the backends' kernel paths.
 *
 *   kbench [--gpu N] [--quick]       the CUDA backend's paths (liblocus_cuda.so), Llama-3-8B shapes
 *   kbench --cpu [kbench_cpu args]   the CPU backend's (runs kbench_cpu from the same directory)
 *
 * GPU: each path is timed with CUDA events, median of 25 runs (9 with
 * --quick) after 3 warm-ups, weights rotated over copies that exceed the
 * L2 cache; printed as achieved TFLOP/s and GB/s next to the device's
 * copy bandwidth and bf16 GEMM peak, measured in the same run.
 * Exit status 77 when there is no CUDA module or no usable GPU.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cuda/cuda_module.h"
#include "kernels/kernels.h"

static int run_cpu(int argc, char **argv)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
	if (n <= 0) {
		perror("kbench: /proc/self/exe");
		return 1;
	}
	path[n] = '\0';
	char *slash = strrchr(path, '/');
	strcpy(slash ? slash + 1 : path, "kbench_cpu");
	argv[0] = path;
	(void)argc;
	execv(path, argv);
	perror("kbench: kbench_cpu");
	return 1;
}

int main(int argc, char **argv)
{
	int gpu = 0, quick = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cpu"))
			return run_cpu(argc - i, argv + i);
		if (!strcmp(argv[i], "--gpu") && i + 1 < argc) {
			gpu = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else {
			fprintf(stderr, "usage: kbench [--gpu N] [--quick] | kbench --cpu [kbench_cpu options]\n");
			return !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help") ? 0 : 2;
		}
	}
	char err[512];
	void *mod = kern_cuda_module(err, sizeof(err));
	if (!mod) {
		printf("skip: %s (kbench --cpu for the CPU paths)\n", err);
		return 77;
	}
	locus_cuda_kbench_fn fn;
	*(void **)&fn = dlsym(mod, "locus_cuda_kbench");
	if (!fn) {
		printf("kbench: the CUDA module has no locus_cuda_kbench\n");
		return 1;
	}
	if (fn(gpu, quick, err, sizeof(err))) {
		printf("kbench: %s\n", err);
		return strstr(err, "driver") || strstr(err, "no CUDA-capable") ? 77 : 1;
	}
	return 0;
}
