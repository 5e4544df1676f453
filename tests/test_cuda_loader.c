/*
 * test_cuda_loader: how programs find and open the CUDA module
 * (kernels/cuda_loader.c), without a GPU: a missing file, a file that is
 * not a shared object, a shared object that is not our module (no ABI
 * entry), each a clear error; and, in a CUDA build, the real module loads,
 * passes the ABI check and answers (a bad configuration is refused by the
 * module itself, before it looks for a GPU).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "kernels/kernels.h"

int main(void)
{
	char err[512], path[] = "/tmp/locus-t-cuda-XXXXXX.so";
	kern_backend_t *be;

	setenv("LOCUS_CUDA_MODULE", "/nonexistent/liblocus_cuda.so", 1);
	err[0] = '\0';
	CHECK(!kern_cuda_module(err, sizeof(err)) && strstr(err, "is missing"), "missing: %s", err);

	int fd = mkstemps(path, 3);
	CHECK(fd >= 0, "mkstemps");
	if (fd >= 0) {
		CHECK(write(fd, "not an ELF file", 15) == 15, "write");
		close(fd);
		setenv("LOCUS_CUDA_MODULE", path, 1);
		err[0] = '\0';
		CHECK(!kern_cuda_module(err, sizeof(err)) && strstr(err, "cannot load"), "garbage: %s", err);
		unlink(path);
	}

	/* libm: a real shared object without our entry points */
	Dl_info di;
	double (*volatile f)(double) = cos;
	if (dladdr((void *)f, &di) && di.dli_fname && strstr(di.dli_fname, ".so")) {
		setenv("LOCUS_CUDA_MODULE", di.dli_fname, 1);
		err[0] = '\0';
		CHECK(!kern_cuda_module(err, sizeof(err)) && strstr(err, "another version"), "%s: %s", di.dli_fname, err);
		printf("not our module (%s): %s\n", di.dli_fname, err);
	} else {
		CHECK(0, "cannot find libm's file to stand in for a foreign module");
	}

	unsetenv("LOCUS_CUDA_MODULE");
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 32);
	CHECK(n > 0, "readlink");
	if (n > 0) {
		self[n] = '\0';
		strcpy(strrchr(self, '/') + 1, "liblocus_cuda.so");
		if (access(self, F_OK) == 0) {
			err[0] = '\0';
			void *m = kern_cuda_module(err, sizeof(err));
			CHECK(m, "the build's module does not load: %s", err);
			struct kern_weights w = {0};
			struct kern_backend_config bc = {.kv_block_size = 0, .n_kv_blocks = 1, .max_batch_tokens = 1};
			err[0] = '\0';
			be = m ? kern_backend_cuda_open(&w, &bc, err, sizeof(err)) : NULL;
			CHECK(!be && strstr(err, "block size"), "bad config: %s", err);
			kern_backend_close(be);
			printf("module %s: loads, ABI matches\n", self);
		} else {
			printf("no CUDA module in this build: the real-module half is skipped\n");
		}
	}
	return check_status("test_cuda_loader");
}
