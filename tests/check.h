/*
 * check.h: the assertion every test program uses. CHECK records a failure
 * with its location and message and carries on, so one run reports every
 * broken case; main() returns check_status().
 */
#ifndef LOCUS_TESTS_CHECK_H
#define LOCUS_TESTS_CHECK_H

#include <stdio.h>

static int g_fail;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                         \
			fputc('\n', stderr);                                  \
			g_fail++;                                             \
		}                                                             \
	} while (0)

/* Prints "name: ok" or "name: FAILED (n checks)" and returns the exit status. */
static inline int check_status(const char *name)
{
	if (g_fail)
		printf("%s: FAILED (%d checks)\n", name, g_fail);
	else
		printf("%s: ok\n", name);
	return g_fail ? 1 : 0;
}

#endif
