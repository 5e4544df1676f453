/*
 * fuzz_config: the INI loader on arbitrary bytes (config_parse, which is what
 * config_load runs on the file's contents), and, when a file parses, the
 * placement plan on a fixed synthetic 2-socket topology with the null
 * backend and no model (so no input makes it open a file), and plan_print.
 * Seeds: tests/fuzz/corpus/config: the shipped configs (node0.conf, node1.conf)
 * and a few edge cases.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct plan plan; /* 270 KB: too large for the fuzzer's stack; one run at a time */
	struct engine_config c;
	char err[512];
	config_default(&c);
	if (config_parse(&c, (const char *)data, size, "fuzz.conf", err, sizeof(err)) != 0)
		return 0;
	c.backend = CFG_BACKEND_NULL;
	c.model_path[0] = '\0';
	if (plan_resolve(&c, "pack:2 numa:1 core:4 pu:2", &plan, err, sizeof(err)) != 0)
		return 0;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f) {
		plan_print(&c, &plan, f);
		fclose(f);
		free(buf);
	}
	return 0;
}
