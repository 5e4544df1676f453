/*
 * test_gguf: the GGUF reader accepts valid files and refuses every corrupt
 * one with an error naming the problem, never reading outside the image.
 *
 * Images are built byte by byte here (not with the project's writer, so the
 * two do not share mistakes) and placed right before a PROT_NONE page, so
 * any read past the end faults. Cases follow the classes behind llama.cpp's
 * GGUF CVEs: counts and lengths beyond the file, element-count and byte-size
 * overflow, n_dims out of range, zero dimensions, misaligned or out-of-file
 * tensor data, duplicate keys and names, array type confusion, bad bools,
 * bad alignment; then every truncation of a valid file and random mutations.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "kernels/kernels.h"
#include "tests/check.h"


/* ---- byte builder ---- */
struct buf {
	uint8_t d[1 << 16];
	size_t n;
};
static void b_raw(struct buf *b, const void *p, size_t n)
{
	memcpy(b->d + b->n, p, n);
	b->n += n;
}
static void b_u32(struct buf *b, uint32_t v) { b_raw(b, &v, 4); }
static void b_u64(struct buf *b, uint64_t v) { b_raw(b, &v, 8); }
static void b_str(struct buf *b, const char *s)
{
	b_u64(b, strlen(s));
	b_raw(b, s, strlen(s));
}
static void b_pad(struct buf *b, size_t a)
{
	while (b->n % a)
		b->d[b->n++] = 0;
}

/* Places the image right before a guard page and opens it. */
static struct gguf_file *open_guarded(const uint8_t *img, size_t n, char *err, size_t errlen)
{
	static uint8_t *region;
	static size_t region_len;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t need = (n + pg - 1) / pg * pg + pg;
	if (region)
		munmap(region, region_len);
	region = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	region_len = need;
	if (region == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	mprotect(region + need - pg, pg, PROT_NONE);
	uint8_t *p = region + need - pg - n;
	memcpy(p, img, n);
	return gguf_open_buffer(p, n, err, errlen);
}

/* A valid image: 3 keys (string, u32 array, string array) and 2 tensors. */
struct spec {
	uint32_t version;
	uint64_t n_tensors_override, n_kv_override; /* 0: actual */
	uint64_t str_len_override;                  /* 0: actual */
	uint64_t arr_n_override;
	uint32_t arr_type_override;                 /* UINT32_MAX: actual */
	uint32_t n_dims_override;                   /* 0: actual */
	uint64_t ne0_override, ne1_override;        /* UINT64_MAX: actual */
	uint32_t type_override;                     /* UINT32_MAX: actual */
	uint64_t off1_override;                     /* UINT64_MAX: actual */
	bool dup_key, dup_tensor, bad_bool, with_bool;
	uint32_t align;                             /* 0: default, no key */
	size_t truncate_data;                       /* bytes cut from the end */
};

static void spec_default(struct spec *s)
{
	memset(s, 0, sizeof(*s));
	s->version = 3;
	s->arr_type_override = UINT32_MAX;
	s->ne0_override = s->ne1_override = UINT64_MAX;
	s->type_override = UINT32_MAX;
	s->off1_override = UINT64_MAX;
}

static size_t build(struct buf *b, const struct spec *s)
{
	b->n = 0;
	uint64_t n_kv = 3 + (s->align ? 1 : 0) + (s->dup_key ? 1 : 0) + (s->with_bool || s->bad_bool ? 1 : 0);
	uint64_t n_t = s->dup_tensor ? 3 : 2;
	b_u32(b, 0x46554747u);
	b_u32(b, s->version);
	b_u64(b, s->n_tensors_override ? s->n_tensors_override : n_t);
	b_u64(b, s->n_kv_override ? s->n_kv_override : n_kv);
	/* key 1: string */
	b_str(b, "general.architecture");
	b_u32(b, GGUF_T_STRING);
	if (s->str_len_override) {
		b_u64(b, s->str_len_override);
		b_raw(b, "llama", 5);
	} else
		b_str(b, "llama");
	/* key 2: u32 array */
	b_str(b, "test.numbers");
	b_u32(b, GGUF_T_ARRAY);
	b_u32(b, s->arr_type_override != UINT32_MAX ? s->arr_type_override : GGUF_T_UINT32);
	b_u64(b, s->arr_n_override ? s->arr_n_override : 4);
	for (uint32_t i = 0; i < 4; i++)
		b_u32(b, 1000 + i);
	/* key 3: string array */
	b_str(b, "test.words");
	b_u32(b, GGUF_T_ARRAY);
	b_u32(b, GGUF_T_STRING);
	b_u64(b, 3);
	b_str(b, "alpha");
	b_str(b, "");
	b_str(b, "gamma");
	if (s->align) {
		b_str(b, "general.alignment");
		b_u32(b, GGUF_T_UINT32);
		b_u32(b, s->align);
	}
	if (s->dup_key) {
		b_str(b, "test.numbers");
		b_u32(b, GGUF_T_UINT32);
		b_u32(b, 7);
	}
	if (s->with_bool || s->bad_bool) {
		b_str(b, "test.flag");
		b_u32(b, GGUF_T_BOOL);
		uint8_t v = s->bad_bool ? 2 : 1;
		b_raw(b, &v, 1);
	}
	uint32_t align = s->align ? s->align : 32;
	/* tensor 0: F32 [8, 2] = 64 bytes at 0; tensor 1: Q8_0 [64, 2] = 136 bytes at 64 */
	b_str(b, "a.weight");
	b_u32(b, s->n_dims_override ? s->n_dims_override : 2);
	b_u64(b, s->ne0_override != UINT64_MAX ? s->ne0_override : 8);
	b_u64(b, s->ne1_override != UINT64_MAX ? s->ne1_override : 2);
	b_u32(b, s->type_override != UINT32_MAX ? s->type_override : KERN_TYPE_F32);
	b_u64(b, 0);
	b_str(b, "b.weight");
	b_u32(b, 2);
	b_u64(b, 64);
	b_u64(b, 2);
	b_u32(b, KERN_TYPE_Q8_0);
	uint64_t off1 = (64 + align - 1) / align * align;
	b_u64(b, s->off1_override != UINT64_MAX ? s->off1_override : off1);
	if (s->dup_tensor) {
		b_str(b, "a.weight");
		b_u32(b, 1);
		b_u64(b, 4);
		b_u32(b, KERN_TYPE_F32);
		b_u64(b, 0);
	}
	b_pad(b, align);
	size_t data0 = b->n;
	for (size_t i = 0; i < off1 + 136; i++)
		b->d[b->n++] = (uint8_t)(i * 7 + 1);
	(void)data0;
	return b->n - s->truncate_data;
}

static void expect_ok(const struct spec *s, const char *what)
{
	static struct buf b;
	size_t n = build(&b, s);
	char err[512] = "";
	struct gguf_file *f = open_guarded(b.d, n, err, sizeof(err));
	CHECK(f != NULL, "%s: valid image refused: %s", what, err);
	if (f)
		gguf_close(f);
}

static void expect_err(const struct spec *s, const char *what, const char *needle)
{
	static struct buf b;
	size_t n = build(&b, s);
	char err[512] = "";
	struct gguf_file *f = open_guarded(b.d, n, err, sizeof(err));
	CHECK(f == NULL, "%s: corrupt image accepted", what);
	if (f) {
		gguf_close(f);
		return;
	}
	CHECK(strstr(err, "offset") != NULL, "%s: error does not name an offset: %s", what, err);
	CHECK(!needle || strstr(err, needle) != NULL, "%s: error '%s' lacks '%s'", what, err, needle);
}

static void test_valid_contents(void)
{
	static struct buf b;
	struct spec s;
	spec_default(&s);
	s.with_bool = true;
	size_t n = build(&b, &s);
	char err[512];
	struct gguf_file *f = open_guarded(b.d, n, err, sizeof(err));
	CHECK(f, "valid: %s", err);
	if (!f)
		return;
	struct gguf_str str;
	CHECK(gguf_get_str(f, "general.architecture", &str) == 0 && str.len == 5 && !memcmp(str.ptr, "llama", 5),
	      "string key");
	const void *data;
	uint64_t cnt;
	CHECK(gguf_get_array(f, "test.numbers", GGUF_T_UINT32, &data, &cnt) == 0 && cnt == 4 &&
		      gguf_rd_u32((const uint8_t *)data + 12) == 1003,
	      "u32 array");
	CHECK(gguf_get_array(f, "test.numbers", GGUF_T_INT32, &data, &cnt) == -EINVAL, "array type mismatch");
	struct gguf_str words[3];
	CHECK(gguf_get_str_array(f, "test.words", words, 3) == 0 && words[1].len == 0 && words[2].len == 5 &&
		      !memcmp(words[2].ptr, "gamma", 5),
	      "string array");
	CHECK(gguf_get_str_array(f, "test.words", words, 2) == -EINVAL, "string array wrong count");
	uint32_t u;
	CHECK(gguf_get_u32(f, "general.architecture", &u) == -EINVAL, "string read as u32");
	CHECK(gguf_get_u32(f, "missing.key", &u) == -ENOENT, "missing key");
	bool bv = false;
	CHECK(gguf_get_bool(f, "test.flag", &bv) == 0 && bv, "bool");
	const struct gguf_tensor *t = gguf_find_tensor(f, "b.weight");
	CHECK(t && t->ne[0] == 64 && t->ne[1] == 2 && t->n_bytes == 136 && t->type == KERN_TYPE_Q8_0, "tensor b");
	CHECK(t && (const uint8_t *)t->data == f->map + f->data_off + 64, "tensor b data");
	CHECK(!gguf_find_tensor(f, "c.weight"), "absent tensor");
	gguf_close(f);
}

int main(void)
{
	struct spec s;

	spec_default(&s);
	expect_ok(&s, "baseline");
	s.version = 2;
	expect_ok(&s, "version 2");
	spec_default(&s);
	s.align = 64;
	expect_ok(&s, "alignment 64");
	test_valid_contents();

	spec_default(&s);
	s.version = 1;
	expect_err(&s, "version 1", "version");
	spec_default(&s);
	s.n_kv_override = UINT64_MAX / 2;
	expect_err(&s, "huge n_kv", "count");
	spec_default(&s);
	s.n_tensors_override = 1ull << 40;
	expect_err(&s, "huge n_tensors", "count");
	spec_default(&s);
	s.n_kv_override = 5;
	expect_err(&s, "n_kv too large by a little", NULL);
	spec_default(&s);
	s.str_len_override = 1ull << 62;
	expect_err(&s, "string length overflow", "length");
	spec_default(&s);
	s.str_len_override = UINT64_MAX;
	expect_err(&s, "string length -1", "length");
	spec_default(&s);
	s.arr_n_override = 1ull << 62;
	expect_err(&s, "array count * size overflow", "array");
	spec_default(&s);
	s.arr_n_override = 1000;
	expect_err(&s, "array past the end", NULL);
	spec_default(&s);
	s.arr_type_override = GGUF_T_ARRAY;
	expect_err(&s, "nested array", "element type");
	spec_default(&s);
	s.arr_type_override = 77;
	expect_err(&s, "bad array type", "element type");
	spec_default(&s);
	s.arr_type_override = GGUF_T_STRING;
	expect_err(&s, "u32 data read as strings", NULL);
	spec_default(&s);
	s.n_dims_override = 5;
	expect_err(&s, "n_dims 5", "n_dims");
	spec_default(&s);
	s.n_dims_override = 0xffffffffu;
	expect_err(&s, "n_dims -1", "n_dims");
	spec_default(&s);
	s.ne0_override = 0;
	expect_err(&s, "zero dim", "dimension");
	spec_default(&s);
	s.ne1_override = 1ull << 63;
	expect_err(&s, "dim above INT64_MAX", "dimension");
	spec_default(&s);
	s.ne0_override = 1ull << 40;
	s.ne1_override = 1ull << 40;
	expect_err(&s, "element count overflow", "overflow");
	spec_default(&s);
	s.ne0_override = 1ull << 40;
	s.ne1_override = 1;
	expect_err(&s, "tensor larger than the file", "end of the file");
	spec_default(&s);
	s.type_override = 4; /* retired Q4_2 */
	expect_err(&s, "unknown type", "type");
	spec_default(&s);
	s.type_override = 1000;
	expect_err(&s, "type out of range", "type");
	spec_default(&s);
	s.type_override = KERN_TYPE_Q8_0; /* ne0 = 8 is not a multiple of 32 */
	expect_err(&s, "row not multiple of block", "block");
	spec_default(&s);
	s.off1_override = 65;
	expect_err(&s, "misaligned offset", "aligned");
	spec_default(&s);
	s.off1_override = 1ull << 62;
	expect_err(&s, "offset beyond file", "end of the file");
	spec_default(&s);
	s.off1_override = UINT64_MAX - 31; /* aligned, wraps when added */
	expect_err(&s, "offset + size wraps", "end of the file");
	spec_default(&s);
	s.truncate_data = 1;
	expect_err(&s, "data past EOF", "end of the file");
	spec_default(&s);
	s.dup_key = true;
	expect_err(&s, "duplicate key", "duplicate key");
	spec_default(&s);
	s.dup_tensor = true;
	expect_err(&s, "duplicate tensor", "duplicate tensor");
	spec_default(&s);
	s.bad_bool = true;
	expect_err(&s, "bool 2", "bool");
	spec_default(&s);
	s.align = 48;
	expect_err(&s, "alignment not a power of two", "alignment");

	/* Every truncation of a valid image fails cleanly (or, when only the
	 * tail padding is cut, may still be valid: never a crash). */
	static struct buf b;
	spec_default(&s);
	size_t n = build(&b, &s);
	char err[512];
	int refused = 0;
	for (size_t cut = 0; cut < n; cut++) {
		struct gguf_file *f = open_guarded(b.d, cut, err, sizeof(err));
		if (f)
			gguf_close(f);
		else
			refused++;
	}
	CHECK(refused == (int)n, "every strict truncation must be refused (%d of %zu were)", refused, n);

	/* Random byte mutations: no crash, and any accepted file is self-consistent. */
	uint64_t rng = 12345;
	int accepted = 0;
	for (int it = 0; it < 20000; it++) {
		static struct buf m;
		memcpy(m.d, b.d, n);
		int flips = 1 + (int)(rng % 4);
		for (int k = 0; k < flips; k++) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			size_t at = (size_t)(rng >> 33) % n;
			m.d[at] = (uint8_t)(rng >> 17);
		}
		struct gguf_file *f = open_guarded(m.d, n, err, sizeof(err));
		if (!f)
			continue;
		accepted++;
		for (uint64_t i = 0; i < f->n_tensors; i++) {
			const struct gguf_tensor *t = &f->tensors[i];
			const uint8_t *d = t->data;
			CHECK(d >= f->map + f->data_off && d + t->n_bytes <= f->map + f->size, "tensor outside the image");
		}
		gguf_close(f);
	}
	printf("test_gguf: %d mutated images accepted (data-only changes), %d refused; %s\n", accepted,
	       20000 - accepted, g_fail ? "FAILED" : "ok");
	return g_fail ? 1 : 0;
}
