/*
 * gguf_write.c: a GGUF v3 writer for tools and tests (mkmodel, corrupt-file
 * tests). The header is built in memory, then the tensor data is streamed
 * from a callback, each tensor padded to the alignment. Errors are sticky:
 * the first failure is reported by gguf_writer_finish().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/alloc.h"
#include "engine/gguf.h"
#include "kernels/kernels.h"

struct wtensor {
	uint64_t n_bytes;
	uint64_t offset;
};

struct gguf_writer {
	FILE *fp;
	uint32_t alignment;
	int err;
	uint8_t *kv;       /* serialized key/values */
	size_t kv_len, kv_cap;
	uint64_t n_kv;
	uint8_t *ti;       /* serialized tensor infos */
	size_t ti_len, ti_cap;
	struct wtensor *t;
	uint64_t n_t, cap_t;
	uint64_t data_len;
};

static void put(struct gguf_writer *w, uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
	if (w->err)
		return;
	if (*len + n > *cap) {
		size_t nc = *cap ? *cap * 2 : 4096;
		while (nc < *len + n)
			nc *= 2;
		uint8_t *nb = realloc(*buf, nc);
		if (!nb) {
			w->err = -ENOMEM;
			return;
		}
		*buf = nb;
		*cap = nc;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
}

#define PUT_KV(w, p, n) put((w), &(w)->kv, &(w)->kv_len, &(w)->kv_cap, (p), (n))
#define PUT_TI(w, p, n) put((w), &(w)->ti, &(w)->ti_len, &(w)->ti_cap, (p), (n))

static void kv_key(struct gguf_writer *w, const char *key, uint32_t type)
{
	uint64_t n = strlen(key);
	PUT_KV(w, &n, 8);
	PUT_KV(w, key, n);
	PUT_KV(w, &type, 4);
	w->n_kv++;
}

struct gguf_writer *gguf_writer_open(const char *path, uint32_t alignment)
{
	struct gguf_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->fp = fopen(path, "wb");
	if (!w->fp) {
		free(w);
		return NULL;
	}
	w->alignment = alignment ? alignment : 32;
	if (w->alignment != 32) {
		kv_key(w, "general.alignment", GGUF_T_UINT32);
		PUT_KV(w, &w->alignment, 4);
	}
	return w;
}

void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
	kv_key(w, key, GGUF_T_UINT32);
	PUT_KV(w, &v, 4);
}

void gguf_w_f32(struct gguf_writer *w, const char *key, float v)
{
	kv_key(w, key, GGUF_T_FLOAT32);
	PUT_KV(w, &v, 4);
}

void gguf_w_bool(struct gguf_writer *w, const char *key, bool v)
{
	uint8_t b = v;
	kv_key(w, key, GGUF_T_BOOL);
	PUT_KV(w, &b, 1);
}

void gguf_w_str(struct gguf_writer *w, const char *key, const char *v)
{
	uint64_t n = strlen(v);
	kv_key(w, key, GGUF_T_STRING);
	PUT_KV(w, &n, 8);
	PUT_KV(w, v, n);
}

static void arr_header(struct gguf_writer *w, const char *key, enum gguf_vtype et, uint64_t n)
{
	uint32_t t = et;
	kv_key(w, key, GGUF_T_ARRAY);
	PUT_KV(w, &t, 4);
	PUT_KV(w, &n, 8);
}

void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
	arr_header(w, key, GGUF_T_STRING, n);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t len = strlen(v[i]);
		PUT_KV(w, &len, 8);
		PUT_KV(w, v[i], len);
	}
}

void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n)
{
	arr_header(w, key, GGUF_T_FLOAT32, n);
	PUT_KV(w, v, n * 4);
}

void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
	arr_header(w, key, GGUF_T_INT32, n);
	PUT_KV(w, v, n * 4);
}

/* Serialized size of one value at p (validated file, so lengths are sane). */
static size_t value_bytes(enum gguf_vtype t, const uint8_t *p)
{
	static const int sz[GGUF_T_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
	if (t == GGUF_T_STRING)
		return 8 + gguf_rd_u64(p);
	return (size_t)sz[t];
}

void gguf_w_copy_kv(struct gguf_writer *w, const struct gguf_kv *kv)
{
	uint64_t n = kv->key.len;
	uint32_t type = kv->type;
	PUT_KV(w, &n, 8);
	PUT_KV(w, kv->key.ptr, n);
	PUT_KV(w, &type, 4);
	w->n_kv++;
	if (kv->type != GGUF_T_ARRAY) {
		PUT_KV(w, kv->data, value_bytes(kv->type, kv->data));
		return;
	}
	uint32_t et = kv->arr_type;
	PUT_KV(w, &et, 4);
	PUT_KV(w, &kv->n, 8);
	const uint8_t *p = kv->data;
	size_t total = 0;
	for (uint64_t i = 0; i < kv->n; i++) {
		size_t b = value_bytes(kv->arr_type, p + total);
		total += b;
	}
	PUT_KV(w, p, total);
}

void gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims, const int64_t *ne)
{
	if (w->err)
		return;
	if (w->n_t == w->cap_t) {
		uint64_t nc = w->cap_t ? w->cap_t * 2 : 64;
		struct wtensor *nt = realloc(w->t, nc * sizeof(*nt));
		if (!nt) {
			w->err = -ENOMEM;
			return;
		}
		w->t = nt;
		w->cap_t = nc;
	}
	int64_t nelem = 1;
	for (uint32_t d = 0; d < n_dims; d++)
		nelem *= ne[d];
	int be = kern_type_block_elems(type), bb = kern_type_block_bytes(type);
	if (be <= 0 || ne[0] % be) {
		w->err = -EINVAL;
		return;
	}
	uint64_t bytes = (uint64_t)(nelem / be) * (uint64_t)bb;
	struct wtensor *t = &w->t[w->n_t++];
	t->n_bytes = bytes;
	t->offset = w->data_len;
	w->data_len += (bytes + w->alignment - 1) / w->alignment * w->alignment;

	uint64_t n = strlen(name);
	PUT_TI(w, &n, 8);
	PUT_TI(w, name, n);
	PUT_TI(w, &n_dims, 4);
	for (uint32_t d = 0; d < n_dims; d++)
		PUT_TI(w, &ne[d], 8);
	PUT_TI(w, &type, 4);
	PUT_TI(w, &t->offset, 8);
}

static int wr(struct gguf_writer *w, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, w->fp) != n)
		return -EIO;
	return 0;
}

static int pad(struct gguf_writer *w, uint64_t at)
{
	static const uint8_t zeros[64];
	uint64_t n = (w->alignment - at % w->alignment) % w->alignment;
	while (n) {
		size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
		if (wr(w, zeros, k))
			return -EIO;
		n -= k;
	}
	return 0;
}

int gguf_writer_finish(struct gguf_writer *w, gguf_w_data_fn fn, void *user_data)
{
	int rc = w->err;
	void *buf = NULL;
	if (rc)
		goto out;
	uint32_t hdr[2] = {0x46554747u, 3};
	uint64_t counts[2] = {w->n_t, w->n_kv};
	if ((rc = wr(w, hdr, 8)) || (rc = wr(w, counts, 16)) || (rc = wr(w, w->kv, w->kv_len)) ||
	    (rc = wr(w, w->ti, w->ti_len)))
		goto out;
	if ((rc = pad(w, 24 + w->kv_len + w->ti_len)))
		goto out;
	for (uint64_t i = 0; i < w->n_t; i++) {
		void *nb = realloc(buf, w->t[i].n_bytes ? w->t[i].n_bytes : 1);
		if (!nb) {
			rc = -ENOMEM;
			goto out; /* buf is still ours: freed at out */
		}
		buf = nb;
		if ((rc = fn(user_data, i, buf, w->t[i].n_bytes)))
			goto out;
		if ((rc = wr(w, buf, w->t[i].n_bytes)) || (rc = pad(w, w->t[i].n_bytes)))
			goto out;
	}
out:
	free(buf);
	if (fclose(w->fp) != 0 && !rc)
		rc = -EIO;
	free(w->kv);
	free(w->ti);
	free(w->t);
	free(w);
	return rc;
}
