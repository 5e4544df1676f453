/*
 * gguf.h: a validating reader (and a small writer) for GGUF v2/v3 files.
 *
 * File layout (little endian):
 *   u32 magic "GGUF" | u32 version (2 or 3) | u64 n_tensors | u64 n_kv
 *   n_kv times:      str key | u32 value type | value
 *   n_tensors times: str name | u32 n_dims (1..4) | u64 ne[n_dims] | u32 ggml type | u64 offset
 *   padding to `general.alignment` (default 32)
 *   tensor data; each tensor at data_start + offset, offset aligned.
 *   str   = u64 length | bytes (no NUL)
 *   value = scalar by type | str | array: u32 elem type | u64 count | elems
 *
 * gguf_open() maps the file and checks every length, count and offset
 * before anything is used: string and array lengths against the bytes left,
 * element counts times type sizes against overflow, n_dims bounds, zero
 * dims, tensor types, offsets alignment and extent against the file size,
 * duplicate keys and tensor names. On failure it returns NULL and the error
 * text names the field and its file offset. After a successful open every
 * view below points inside the mapping and stays valid until gguf_close().
 */
#ifndef LOCUS_ENGINE_GGUF_H
#define LOCUS_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
	GGUF_T_UINT8 = 0,
	GGUF_T_INT8 = 1,
	GGUF_T_UINT16 = 2,
	GGUF_T_INT16 = 3,
	GGUF_T_UINT32 = 4,
	GGUF_T_INT32 = 5,
	GGUF_T_FLOAT32 = 6,
	GGUF_T_BOOL = 7,
	GGUF_T_STRING = 8,
	GGUF_T_ARRAY = 9,
	GGUF_T_UINT64 = 10,
	GGUF_T_INT64 = 11,
	GGUF_T_FLOAT64 = 12,
	GGUF_T_COUNT
};

/* A string view into the file: not NUL-terminated. */
struct gguf_str {
	const char *ptr;
	uint64_t len;
};

struct gguf_kv {
	struct gguf_str key;
	enum gguf_vtype type;
	enum gguf_vtype arr_type; /* when type == ARRAY */
	uint64_t n;               /* array length; 1 for scalars and strings */
	const uint8_t *data;      /* first value byte (array: first element) */
	uint64_t file_off;        /* offset of the key in the file */
};

struct gguf_tensor {
	struct gguf_str name;
	uint32_t n_dims;
	int64_t ne[4];      /* unused dims are 1 */
	uint32_t type;      /* GGML type id */
	uint64_t offset;    /* relative to the data section */
	uint64_t n_bytes;
	const void *data;
};

struct gguf_file {
	uint32_t version;
	uint64_t n_kv;
	uint64_t n_tensors;
	struct gguf_kv *kv;
	struct gguf_tensor *tensors;
	uint64_t alignment;
	uint64_t data_off;  /* file offset of the data section */
	const uint8_t *map;
	size_t size;
	bool mapped; /* the mapping is ours to unmap (gguf_open) */
};

/* Opens and validates. flags: GGUF_OPEN_* */
#define GGUF_OPEN_POPULATE 1u /* pre-fault the mapping (MAP_POPULATE) */
struct gguf_file *gguf_open(const char *path, unsigned flags, char *err, size_t errlen);
/* Validates an in-memory image (fuzzing, tests); buf must outlive the result. */
struct gguf_file *gguf_open_buffer(const void *buf, size_t size, char *err, size_t errlen);
void gguf_close(struct gguf_file *f);

const char *gguf_vtype_name(enum gguf_vtype t);

/* Lookup by exact key; NULL when absent. */
const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

/* Typed getters: 0 on success, -ENOENT when absent, -EINVAL on type
 * mismatch (integers convert between widths when the value fits). */
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
int gguf_get_i64(const struct gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out);
/* Arrays: element type must match `type`. *data points to the first element
 * (for string arrays use gguf_get_str_array). */
int gguf_get_array(const struct gguf_file *f, const char *key, enum gguf_vtype type, const void **data,
		   uint64_t *n);
/* Fills out[0..n) with the strings of a string array of exactly n entries. */
int gguf_get_str_array(const struct gguf_file *f, const char *key, struct gguf_str *out, uint64_t n);
/* Number of elements of an array key (any element type), -ENOENT/-EINVAL. */
int64_t gguf_array_len(const struct gguf_file *f, const char *key, enum gguf_vtype *elem_type);

/* Scalars read unaligned from the mapping. */
static inline uint32_t gguf_rd_u32(const void *p)
{
	uint32_t v;
	__builtin_memcpy(&v, p, 4);
	return v;
}
static inline uint64_t gguf_rd_u64(const void *p)
{
	uint64_t v;
	__builtin_memcpy(&v, p, 8);
	return v;
}

/* ---- writer (tools, tests) ---- */
struct gguf_writer;
struct gguf_writer *gguf_writer_open(const char *path, uint32_t alignment);
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gguf_w_f32(struct gguf_writer *w, const char *key, float v);
void gguf_w_bool(struct gguf_writer *w, const char *key, bool v);
void gguf_w_str(struct gguf_writer *w, const char *key, const char *v);
/* Arrays of strings, f32 and i32. */
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *v, uint64_t n);
void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* Copies a key/value (any type) from another file, keeping its key. */
void gguf_w_copy_kv(struct gguf_writer *w, const struct gguf_kv *kv);
/* Adds a tensor header; data is supplied later in the same order. */
void gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
		   const int64_t *ne);
/* Writes header + tensor data (callback per tensor in declaration order). */
typedef int (*gguf_w_data_fn)(void *user_data, uint64_t index, void *dst, uint64_t n_bytes);
int gguf_writer_finish(struct gguf_writer *w, gguf_w_data_fn fn, void *user_data);

#endif
