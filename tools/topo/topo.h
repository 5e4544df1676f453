/*
 * topo.h: the parts of topo-capture shared between its two files
 * (tools/topo-capture.c: the capture; tools/topo/emit_configs.c:
 * --emit-configs).
 */
#ifndef LOCUS_TOOLS_TOPO_H
#define LOCUS_TOOLS_TOPO_H

#include <stdio.h>

/* topo-capture --emit-configs ...: exit status 0, 1 (failure) or 2 (usage). */
int topo_emit_main(int argc, char **argv);
/* mkdir -p: 0 or -errno (-ENOTDIR when the path is a file). */
int topo_mkdir_p(const char *dir);
/* fclose, reporting a write error fclose or an earlier write hit: 0 or -EIO. */
int topo_close_file(FILE *f);

#endif
