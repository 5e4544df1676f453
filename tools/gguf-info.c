/*
 * gguf-info: print a GGUF file's metadata and tensor table, like gguf-dump.
 *
 *   gguf-info [--no-tensors] [--all-array] M.gguf
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/gguf.h"
#include "kernels/kernels.h"

static void print_str(struct gguf_str s, size_t max)
{
	putchar('\'');
	for (uint64_t i = 0; i < s.len && i < max; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\'' || c == '\\')
			printf("\\%c", c);
		else if (c < 32 || c == 127)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('\'');
	if (s.len > max)
		fputs("...", stdout);
}

static const uint8_t *print_scalar(enum gguf_vtype t, const uint8_t *p, size_t str_max)
{
	switch (t) {
	case GGUF_T_UINT8: printf("%u", *p); return p + 1;
	case GGUF_T_INT8: printf("%d", (int8_t)*p); return p + 1;
	case GGUF_T_UINT16: { uint16_t v; memcpy(&v, p, 2); printf("%u", v); return p + 2; }
	case GGUF_T_INT16: { int16_t v; memcpy(&v, p, 2); printf("%d", v); return p + 2; }
	case GGUF_T_UINT32: printf("%" PRIu32, gguf_rd_u32(p)); return p + 4;
	case GGUF_T_INT32: printf("%" PRId32, (int32_t)gguf_rd_u32(p)); return p + 4;
	case GGUF_T_FLOAT32: { float v; memcpy(&v, p, 4); printf("%g", v); return p + 4; }
	case GGUF_T_BOOL: fputs(*p ? "true" : "false", stdout); return p + 1;
	case GGUF_T_UINT64: printf("%" PRIu64, gguf_rd_u64(p)); return p + 8;
	case GGUF_T_INT64: printf("%" PRId64, (int64_t)gguf_rd_u64(p)); return p + 8;
	case GGUF_T_FLOAT64: { double v; memcpy(&v, p, 8); printf("%g", v); return p + 8; }
	case GGUF_T_STRING: {
		struct gguf_str s = {(const char *)p + 8, gguf_rd_u64(p)};
		print_str(s, str_max);
		return p + 8 + s.len;
	}
	default: return p;
	}
}

static void usage(FILE *o)
{
	fprintf(o, "usage: gguf-info [--no-tensors] [--all-array] M.gguf\n"
		   "  Prints the metadata (key, type, value) and the tensor table\n"
		   "  (name, type, shape, offset, bytes) of a GGUF file after validating it.\n"
		   "  --no-tensors  metadata only\n"
		   "  --all-array   print every array element (default: the first 8)\n");
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool tensors = true, all = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-tensors"))
			tensors = false;
		else if (!strcmp(argv[i], "--all-array"))
			all = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' || path) {
			usage(stderr);
			return 2;
		} else
			path = argv[i];
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	char err[512];
	struct gguf_file *f = gguf_open(path, 0, err, sizeof(err));
	if (!f) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	printf("GGUF v%u, %" PRIu64 " key/values, %" PRIu64 " tensors, alignment %" PRIu64
	       ", data at offset %" PRIu64 ", file %zu bytes\n",
	       f->version, f->n_kv, f->n_tensors, f->alignment, f->data_off, f->size);
	for (uint64_t i = 0; i < f->n_kv; i++) {
		const struct gguf_kv *kv = &f->kv[i];
		printf("%5" PRIu64 ": ", i + 1);
		if (kv->type == GGUF_T_ARRAY)
			printf("[%-7s] %8" PRIu64 " | ", gguf_vtype_name(kv->arr_type), kv->n);
		else
			printf("%-9s %8d | ", gguf_vtype_name(kv->type), 1);
		fwrite(kv->key.ptr, 1, kv->key.len, stdout);
		fputs(" = ", stdout);
		if (kv->type == GGUF_T_ARRAY) {
			const uint8_t *p = kv->data;
			uint64_t n = all ? kv->n : (kv->n < 8 ? kv->n : 8);
			putchar('[');
			for (uint64_t j = 0; j < n; j++) {
				if (j)
					fputs(", ", stdout);
				p = print_scalar(kv->arr_type, p, 60);
			}
			if (n < kv->n)
				fputs(", ...", stdout);
			putchar(']');
		} else {
			print_scalar(kv->type, kv->data, 60);
		}
		putchar('\n');
	}
	if (tensors) {
		printf("\n%5s  %-32s %-7s %-24s %12s %12s\n", "#", "name", "type", "shape", "offset", "bytes");
		uint64_t total = 0;
		for (uint64_t i = 0; i < f->n_tensors; i++) {
			const struct gguf_tensor *t = &f->tensors[i];
			char shape[64];
			int n = 0;
			for (uint32_t d = 0; d < t->n_dims; d++)
				n += snprintf(shape + n, sizeof(shape) - (size_t)n, d ? " x %" PRId64 : "%" PRId64,
					      t->ne[d]);
			printf("%5" PRIu64 "  %-32.*s %-7s %-24s %12" PRIu64 " %12" PRIu64 "\n", i + 1, (int)t->name.len,
			       t->name.ptr, kern_type_name(t->type), shape, t->offset, t->n_bytes);
			total += t->n_bytes;
		}
		printf("total tensor bytes: %" PRIu64 " (%.1f MiB)\n", total, (double)total / (1 << 20));
	}
	gguf_close(f);
	return 0;
}
