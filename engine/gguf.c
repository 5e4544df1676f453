/*
 * gguf.c: GGUF v2/v3 reader with full validation, and a small writer.
 *
 * Invariant after gguf_open(): every (pointer, length) in struct gguf_file
 * lies inside the mapping, every tensor's byte size was computed without
 * overflow and fits in the data section. All checks happen here, once, so
 * the rest of the engine can index tensors without re-checking.
 */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc/alloc.h"
#include "kernels/kernels.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" little endian */
#define GGUF_MAX_KEY 65535u
#define GGUF_MAX_NAME 256u
#define GGUF_DEFAULT_ALIGN 32u

static const int g_vsize[GGUF_T_COUNT] = {
	[GGUF_T_UINT8] = 1, [GGUF_T_INT8] = 1,    [GGUF_T_UINT16] = 2, [GGUF_T_INT16] = 2,
	[GGUF_T_UINT32] = 4, [GGUF_T_INT32] = 4,  [GGUF_T_FLOAT32] = 4, [GGUF_T_BOOL] = 1,
	[GGUF_T_STRING] = 0, [GGUF_T_ARRAY] = 0,  [GGUF_T_UINT64] = 8, [GGUF_T_INT64] = 8,
	[GGUF_T_FLOAT64] = 8,
};

static const char *const g_vname[GGUF_T_COUNT] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

const char *gguf_vtype_name(enum gguf_vtype t)
{
	return (unsigned)t < GGUF_T_COUNT ? g_vname[t] : "invalid";
}

/* ---- cursor over the untrusted image ---- */
struct cur {
	const uint8_t *base;
	size_t size;
	size_t off;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 3, 4))) static int fail(struct cur *c, size_t at, const char *fmt, ...)
{
	if (c->err && c->errlen) {
		int n = snprintf(c->err, c->errlen, "gguf: at offset %zu: ", at);
		if (n >= 0 && (size_t)n < c->errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

static int need(struct cur *c, uint64_t n, const char *what)
{
	if (n > c->size - c->off)
		return fail(c, c->off, "%s: needs %llu bytes, %zu left in the file", what, (unsigned long long)n,
			    c->size - c->off);
	return 0;
}

static int rd_u32(struct cur *c, uint32_t *v, const char *what)
{
	int rc = need(c, 4, what);
	if (rc)
		return rc;
	*v = gguf_rd_u32(c->base + c->off);
	c->off += 4;
	return 0;
}

static int rd_u64(struct cur *c, uint64_t *v, const char *what)
{
	int rc = need(c, 8, what);
	if (rc)
		return rc;
	*v = gguf_rd_u64(c->base + c->off);
	c->off += 8;
	return 0;
}

static int rd_str(struct cur *c, struct gguf_str *s, uint64_t max_len, const char *what)
{
	uint64_t len;
	size_t at = c->off;
	int rc = rd_u64(c, &len, what);
	if (rc)
		return rc;
	if (len > max_len)
		return fail(c, at, "%s: length %llu exceeds the limit %llu", what, (unsigned long long)len,
			    (unsigned long long)max_len);
	rc = need(c, len, what);
	if (rc)
		return rc;
	s->ptr = (const char *)c->base + c->off;
	s->len = len;
	c->off += len;
	return 0;
}

/* ---- duplicate detection: open-addressing set of string views ---- */
struct strset {
	const struct gguf_str **slots;
	uint64_t cap;
};

static uint64_t str_hash(const char *p, uint64_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (uint64_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
	return h;
}

static int strset_init(struct strset *s, uint64_t n)
{
	uint64_t cap = 16;
	while (cap < n * 2)
		cap <<= 1;
	s->cap = cap;
	s->slots = alloc_array(cap, sizeof(*s->slots));
	return s->slots ? 0 : -ENOMEM;
}

/* 1 when already present, 0 when inserted. */
static int strset_add(struct strset *s, const struct gguf_str *v)
{
	uint64_t i = str_hash(v->ptr, v->len) & (s->cap - 1);
	while (s->slots[i]) {
		const struct gguf_str *o = s->slots[i];
		if (o->len == v->len && memcmp(o->ptr, v->ptr, v->len) == 0)
			return 1;
		i = (i + 1) & (s->cap - 1);
	}
	s->slots[i] = v;
	return 0;
}

static bool str_eq(struct gguf_str s, const char *z)
{
	size_t n = strlen(z);
	return s.len == n && memcmp(s.ptr, z, n) == 0;
}

static void key_print(char *dst, size_t cap, struct gguf_str s)
{
	size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s.ptr[i];
		dst[i] = ch >= 32 && ch < 127 ? (char)ch : '?';
	}
	dst[n] = 0;
}

static int parse_value(struct cur *c, struct gguf_kv *kv, const char *kname)
{
	char what[160];
	size_t at = c->off;
	if (kv->type >= GGUF_T_COUNT)
		return fail(c, at, "key '%s': invalid value type %u", kname, (unsigned)kv->type);
	if (kv->type == GGUF_T_ARRAY) {
		uint32_t et;
		uint64_t n;
		snprintf(what, sizeof(what), "key '%s' array header", kname);
		int rc = rd_u32(c, &et, what);
		if (rc)
			return rc;
		rc = rd_u64(c, &n, what);
		if (rc)
			return rc;
		if (et >= GGUF_T_COUNT || et == GGUF_T_ARRAY)
			return fail(c, at, "key '%s': invalid array element type %u", kname, et);
		kv->arr_type = (enum gguf_vtype)et;
		kv->n = n;
		kv->data = c->base + c->off;
		if (et == GGUF_T_STRING) {
			/* Each string needs at least its 8-byte length. */
			if (n > (c->size - c->off) / 8)
				return fail(c, at, "key '%s': %llu strings cannot fit in the %zu bytes left", kname,
					    (unsigned long long)n, c->size - c->off);
			snprintf(what, sizeof(what), "key '%s' string element", kname);
			for (uint64_t i = 0; i < n; i++) {
				struct gguf_str s;
				rc = rd_str(c, &s, UINT32_MAX, what);
				if (rc)
					return rc;
			}
			return 0;
		}
		uint64_t es = (uint64_t)g_vsize[et];
		if (n > (c->size - c->off) / es)
			return fail(c, at, "key '%s': array of %llu x %s exceeds the %zu bytes left", kname,
				    (unsigned long long)n, g_vname[et], c->size - c->off);
		c->off += n * es;
		return 0;
	}
	kv->n = 1;
	kv->data = c->base + c->off;
	if (kv->type == GGUF_T_STRING) {
		struct gguf_str s;
		snprintf(what, sizeof(what), "key '%s' string value", kname);
		return rd_str(c, &s, UINT32_MAX, what);
	}
	snprintf(what, sizeof(what), "key '%s' value", kname);
	int rc = need(c, (uint64_t)g_vsize[kv->type], what);
	if (rc)
		return rc;
	if (kv->type == GGUF_T_BOOL && c->base[c->off] > 1)
		return fail(c, c->off, "key '%s': bool value %u is not 0 or 1", kname, c->base[c->off]);
	c->off += (size_t)g_vsize[kv->type];
	return 0;
}

static int parse_tensor(struct cur *c, struct gguf_tensor *t, uint64_t idx)
{
	char what[96], name[80];
	size_t at = c->off;
	snprintf(what, sizeof(what), "tensor #%llu name", (unsigned long long)idx);
	int rc = rd_str(c, &t->name, GGUF_MAX_NAME, what);
	if (rc)
		return rc;
	if (t->name.len == 0)
		return fail(c, at, "tensor #%llu: empty name", (unsigned long long)idx);
	key_print(name, sizeof(name), t->name);
	snprintf(what, sizeof(what), "tensor '%s' header", name);
	rc = rd_u32(c, &t->n_dims, what);
	if (rc)
		return rc;
	if (t->n_dims < 1 || t->n_dims > 4)
		return fail(c, at, "tensor '%s': n_dims %u outside 1..4", name, t->n_dims);
	int64_t nelem = 1;
	for (uint32_t d = 0; d < 4; d++) {
		uint64_t ne = 1;
		if (d < t->n_dims) {
			size_t dat = c->off;
			rc = rd_u64(c, &ne, what);
			if (rc)
				return rc;
			if (ne == 0 || ne > (uint64_t)INT64_MAX)
				return fail(c, dat, "tensor '%s': dimension %u is %llu", name, d,
					    (unsigned long long)ne);
			if ((uint64_t)nelem > (uint64_t)INT64_MAX / ne)
				return fail(c, dat, "tensor '%s': element count overflows", name);
			nelem *= (int64_t)ne;
		}
		t->ne[d] = (int64_t)ne;
	}
	size_t tat = c->off;
	rc = rd_u32(c, &t->type, what);
	if (rc)
		return rc;
	int be = kern_type_block_elems(t->type), bb = kern_type_block_bytes(t->type);
	if (be <= 0)
		return fail(c, tat, "tensor '%s': unknown type id %u", name, t->type);
	if (t->ne[0] % be)
		return fail(c, tat, "tensor '%s': row of %lld elements is not a multiple of the %s block (%d)", name,
			    (long long)t->ne[0], kern_type_name(t->type), be);
	uint64_t nblk = (uint64_t)nelem / (uint64_t)be;
	if (nblk > UINT64_MAX / (uint64_t)bb)
		return fail(c, tat, "tensor '%s': byte size overflows", name);
	t->n_bytes = nblk * (uint64_t)bb;
	return rd_u64(c, &t->offset, what);
}

static struct gguf_file *parse(const uint8_t *base, size_t size, char *err, size_t errlen)
{
	struct cur c = {.base = base, .size = size, .off = 0, .err = err, .errlen = errlen};
	struct gguf_file *f = alloc_zmem(sizeof(*f));
	struct strset set = {0};
	if (!f) {
		snprintf(err, errlen, "gguf: out of memory");
		return NULL;
	}
	f->map = base;
	f->size = size;
	f->alignment = GGUF_DEFAULT_ALIGN;

	uint32_t magic;
	if (rd_u32(&c, &magic, "magic"))
		goto err;
	if (magic != GGUF_MAGIC) {
		fail(&c, 0, "not a GGUF file (magic %08x)", magic);
		goto err;
	}
	if (rd_u32(&c, &f->version, "version"))
		goto err;
	if (f->version != 2 && f->version != 3) {
		fail(&c, 4, "unsupported GGUF version %u (2 and 3 are supported)", f->version);
		goto err;
	}
	if (rd_u64(&c, &f->n_tensors, "tensor count") || rd_u64(&c, &f->n_kv, "key/value count"))
		goto err;
	/* Smallest possible entries bound the counts before any allocation. */
	if (f->n_kv > (size - c.off) / 13) {
		fail(&c, 16, "key/value count %llu cannot fit in the file", (unsigned long long)f->n_kv);
		goto err;
	}
	if (f->n_tensors > (size - c.off) / 33) {
		fail(&c, 8, "tensor count %llu cannot fit in the file", (unsigned long long)f->n_tensors);
		goto err;
	}
	f->kv = alloc_array(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
	f->tensors = alloc_array(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
	if (!f->kv || !f->tensors || strset_init(&set, f->n_kv > f->n_tensors ? f->n_kv : f->n_tensors)) {
		snprintf(err, errlen, "gguf: out of memory");
		goto err;
	}

	for (uint64_t i = 0; i < f->n_kv; i++) {
		struct gguf_kv *kv = &f->kv[i];
		char kname[80], what[48];
		kv->file_off = c.off;
		snprintf(what, sizeof(what), "key #%llu", (unsigned long long)i);
		if (rd_str(&c, &kv->key, GGUF_MAX_KEY, what))
			goto err;
		if (kv->key.len == 0) {
			fail(&c, kv->file_off, "key #%llu is empty", (unsigned long long)i);
			goto err;
		}
		key_print(kname, sizeof(kname), kv->key);
		if (strset_add(&set, &kv->key)) {
			fail(&c, kv->file_off, "duplicate key '%s'", kname);
			goto err;
		}
		uint32_t ty;
		if (rd_u32(&c, &ty, "value type"))
			goto err;
		kv->type = (enum gguf_vtype)ty;
		if (parse_value(&c, kv, kname))
			goto err;
		if (str_eq(kv->key, "general.alignment")) {
			if (kv->type != GGUF_T_UINT32) {
				fail(&c, kv->file_off, "general.alignment must be u32, is %s", gguf_vtype_name(kv->type));
				goto err;
			}
			uint32_t a = gguf_rd_u32(kv->data);
			if (a == 0 || (a & (a - 1)) || a > (1u << 20)) {
				fail(&c, kv->file_off, "general.alignment %u is not a power of two <= 1 MiB", a);
				goto err;
			}
			f->alignment = a;
		}
	}

	memset(set.slots, 0, set.cap * sizeof(*set.slots));
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		size_t at = c.off;
		if (parse_tensor(&c, &f->tensors[i], i))
			goto err;
		if (strset_add(&set, &f->tensors[i].name)) {
			char name[80];
			key_print(name, sizeof(name), f->tensors[i].name);
			fail(&c, at, "duplicate tensor name '%s'", name);
			goto err;
		}
	}

	uint64_t data_off = (c.off + f->alignment - 1) / f->alignment * f->alignment;
	if (f->n_tensors && data_off > size) {
		fail(&c, c.off, "data section at %llu starts past the end of the file (%zu bytes)",
		     (unsigned long long)data_off, size);
		goto err;
	}
	f->data_off = data_off;
	uint64_t data_size = data_off <= size ? size - data_off : 0;
	for (uint64_t i = 0; i < f->n_tensors; i++) {
		struct gguf_tensor *t = &f->tensors[i];
		char name[80];
		key_print(name, sizeof(name), t->name);
		if (t->offset % f->alignment) {
			fail(&c, data_off, "tensor '%s': data offset %llu is not aligned to %llu", name,
			     (unsigned long long)t->offset, (unsigned long long)f->alignment);
			goto err;
		}
		if (t->offset > data_size || t->n_bytes > data_size - t->offset) {
			fail(&c, data_off, "tensor '%s': data [%llu, +%llu) extends past the end of the file", name,
			     (unsigned long long)t->offset, (unsigned long long)t->n_bytes);
			goto err;
		}
		t->data = base + data_off + t->offset;
	}
	alloc_free(set.slots);
	return f;
err:
	alloc_free(set.slots);
	alloc_free(f->kv);
	alloc_free(f->tensors);
	alloc_free(f);
	return NULL;
}

struct gguf_file *gguf_open_buffer(const void *buf, size_t size, char *err, size_t errlen)
{
	return parse(buf, size, err, errlen);
}

struct gguf_file *gguf_open(const char *path, unsigned flags, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "gguf: cannot open '%s': %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "gguf: '%s' is not a regular file", path);
		close(fd);
		return NULL;
	}
	if (st.st_size < 24) {
		snprintf(err, errlen, "gguf: '%s' is too small (%lld bytes) to be a GGUF file", path,
			 (long long)st.st_size);
		close(fd);
		return NULL;
	}
	int mflags = MAP_PRIVATE | ((flags & GGUF_OPEN_POPULATE) ? MAP_POPULATE : 0);
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, mflags, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		snprintf(err, errlen, "gguf: cannot map '%s': %s", path, strerror(errno));
		return NULL;
	}
	struct gguf_file *f = parse(map, (size_t)st.st_size, err, errlen);
	if (!f)
		munmap(map, (size_t)st.st_size);
	else
		f->mapped = true;
	return f;
}

void gguf_close(struct gguf_file *f)
{
	if (!f)
		return;
	if (f->mapped)
		munmap((void *)f->map, f->size);
	alloc_free(f->kv);
	alloc_free(f->tensors);
	alloc_free(f);
}

/* ---- lookups ---- */
const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key)
{
	for (uint64_t i = 0; i < f->n_kv; i++)
		if (str_eq(f->kv[i].key, key))
			return &f->kv[i];
	return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
	for (uint64_t i = 0; i < f->n_tensors; i++)
		if (str_eq(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

/* Integer scalar of any width as i64 (u64 above INT64_MAX is refused). */
static int kv_int(const struct gguf_kv *kv, int64_t *out)
{
	const uint8_t *p = kv->data;
	switch (kv->type) {
	case GGUF_T_UINT8: *out = *p; return 0;
	case GGUF_T_INT8: *out = (int8_t)*p; return 0;
	case GGUF_T_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return 0; }
	case GGUF_T_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return 0; }
	case GGUF_T_UINT32: *out = gguf_rd_u32(p); return 0;
	case GGUF_T_INT32: *out = (int32_t)gguf_rd_u32(p); return 0;
	case GGUF_T_INT64: *out = (int64_t)gguf_rd_u64(p); return 0;
	case GGUF_T_UINT64: {
		uint64_t v = gguf_rd_u64(p);
		if (v > (uint64_t)INT64_MAX)
			return -EINVAL;
		*out = (int64_t)v;
		return 0;
	}
	default: return -EINVAL;
	}
}

int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	return kv_int(kv, out);
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
	int64_t v;
	int rc = gguf_get_i64(f, key, &v);
	if (rc)
		return rc;
	if (v < 0 || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	if (kv->type == GGUF_T_FLOAT32) {
		memcpy(out, kv->data, 4);
		return 0;
	}
	if (kv->type == GGUF_T_FLOAT64) {
		double d;
		memcpy(&d, kv->data, 8);
		*out = (float)d;
		return 0;
	}
	int64_t v;
	if (kv_int(kv, &v))
		return -EINVAL;
	*out = (float)v;
	return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_T_BOOL)
		return -EINVAL;
	*out = kv->data[0] != 0;
	return 0;
}

int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_T_STRING)
		return -EINVAL;
	out->len = gguf_rd_u64(kv->data);
	out->ptr = (const char *)kv->data + 8;
	return 0;
}

int gguf_get_array(const struct gguf_file *f, const char *key, enum gguf_vtype type, const void **data,
		   uint64_t *n)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_T_ARRAY || kv->arr_type != type)
		return -EINVAL;
	*data = kv->data;
	*n = kv->n;
	return 0;
}

int64_t gguf_array_len(const struct gguf_file *f, const char *key, enum gguf_vtype *elem_type)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_T_ARRAY)
		return -EINVAL;
	if (elem_type)
		*elem_type = kv->arr_type;
	return (int64_t)kv->n;
}

int gguf_get_str_array(const struct gguf_file *f, const char *key, struct gguf_str *out, uint64_t n)
{
	const struct gguf_kv *kv = gguf_find(f, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING || kv->n != n)
		return -EINVAL;
	/* Lengths were all checked by gguf_open(). */
	const uint8_t *p = kv->data;
	for (uint64_t i = 0; i < n; i++) {
		out[i].len = gguf_rd_u64(p);
		out[i].ptr = (const char *)p + 8;
		p += 8 + out[i].len;
	}
	return 0;
}
