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
/* Options as "--opt VALUE" or "--opt=VALUE" into *dst[k] for opts[k]: 0,
 * 1 for -h/--help, -1 after a message for a missing, empty or unknown one
 * (ctx prefixes the unknown-option message, hint names the help to see). */
int topo_parse_opts(int argc, char **argv, const char *const *opts, const char **const *dst, int n_opts,
                    const char *ctx, const char *hint);
/* --topology FILE.xml / --synthetic DESC: 0 when usable, else a message and
 * the exit status (2: usage, both given or a misnamed file; 1: unreadable). */
int topo_check_source(const char *xml, const char *synthetic);
/* fclose, reporting a write error fclose or an earlier write hit: 0 or -EIO. */
int topo_close_file(FILE *f);

#endif
