/*
 * gguf-tokenize: tokenizes text with a GGUF file's vocabulary.
 *
 *   gguf-tokenize [options] MODEL.gguf < FILE
 *
 * By default the input is in llama.cpp's vocab-test format: texts separated by
 * "\n__ggml_vocab_test__\n" (a final separator ends the last text), and the
 * output is one line per text with every id preceded by a space, byte for
 * byte the format of llama.cpp's ggml-vocab-*.gguf.out files (which are made
 * with add_special and parse_special off, our defaults).
 *
 * Exit status: 0 ok, 1 bad file or input, 2 usage.
 */
#define _GNU_SOURCE /* memmem */
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char k_sep[] = "\n__ggml_vocab_test__\n";

static void usage(FILE *f)
{
	fprintf(f,
		"usage: gguf-tokenize [options] MODEL.gguf < FILE\n"
		"\n"
		"Reads texts in llama.cpp's vocab-test format (separated by lines\n"
		"'__ggml_vocab_test__') and prints one line of token ids per text,\n"
		"each id preceded by a space.\n"
		"\n"
		"options:\n"
		"  --add-special     add BOS/EOS as the vocabulary asks\n"
		"  --parse-special   turn special-token texts (<|im_start|>) into their ids\n"
		"  --whole           tokenize all of stdin as one text\n"
		"  --text STRING     tokenize STRING instead of reading stdin\n"
		"  --pieces          print 'id<TAB>piece' lines (special tokens shown)\n"
		"  --info            print the vocabulary's summary to stderr\n"
		"  --decode          the reverse: read lines of ids, print the texts in\n"
		"                    vocab-test format (special tokens rendered)\n"
		"  --remove-special  with --decode: drop the BOS/EOS the vocab adds\n"
		"  --hide-special    with --decode: render control tokens as nothing\n"
		"  -h, --help        this text\n");
}

static char *read_all(FILE *f, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		return NULL;
	for (;;) {
		if (n + 1 >= cap) { /* keep a spare byte for a terminator */
			char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

static void print_piece(const tok_vocab_t *v, int32_t id)
{
	char buf[512];
	int n = tok_piece(v, id, true, buf, sizeof(buf));
	printf("%d\t", id);
	if (n < 0 || n > (int)sizeof(buf)) {
		printf("<piece of %d bytes>\n", n);
		return;
	}
	for (int i = 0; i < n; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('\n');
}

static int tokenize_one(const tok_vocab_t *v, const char *text, size_t len, bool add, bool parse, bool pieces)
{
	int64_t cap = (int64_t)len + 8;
	int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
	if (!ids)
		return -ENOMEM;
	int64_t n = tok_encode(v, text, len, add, parse, ids, cap);
	if (n > cap) {
		/* cannot happen (at most one token per byte plus BOS/EOS), but the API allows it */
		free(ids);
		cap = n;
		ids = malloc((size_t)cap * sizeof(int32_t));
		if (!ids)
			return -ENOMEM;
		n = tok_encode(v, text, len, add, parse, ids, cap);
	}
	if (n < 0) {
		free(ids);
		return (int)n;
	}
	if (pieces) {
		for (int64_t i = 0; i < n; i++)
			print_piece(v, ids[i]);
	} else {
		for (int64_t i = 0; i < n; i++)
			printf(" %d", ids[i]);
		putchar('\n');
	}
	free(ids);
	return 0;
}

/* Each input line: ids separated by spaces. Prints text + separator. */
static int decode_lines(const tok_vocab_t *v, char *in, size_t len, bool remove_special, bool unparse)
{
	size_t cap_ids = 1024, cap_out = 1 << 16;
	int32_t *ids = malloc(cap_ids * sizeof(int32_t));
	char *out = malloc(cap_out);
	int rc = 0;
	for (size_t pos = 0; rc == 0 && pos < len;) {
		char *nl = memchr(in + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - in) : len;
		in[end] = '\0'; /* in has a spare byte at len */
		size_t n = 0;
		for (char *p = in + pos;;) {
			char *q;
			long id = strtol(p, &q, 10);
			if (q == p)
				break;
			if (n == cap_ids) {
				int32_t *t = realloc(ids, 2 * cap_ids * sizeof(int32_t));
				if (!t) {
					rc = -ENOMEM;
					break;
				}
				ids = t;
				cap_ids *= 2;
			}
			ids[n++] = (int32_t)id;
			p = q;
		}
		int64_t m = rc ? rc : tok_decode(v, ids, (int64_t)n, remove_special, unparse, out, cap_out);
		if (m > (int64_t)cap_out) {
			char *t = realloc(out, (size_t)m);
			if (!t) {
				rc = -ENOMEM;
				break;
			}
			out = t;
			cap_out = (size_t)m;
			m = tok_decode(v, ids, (int64_t)n, remove_special, unparse, out, cap_out);
		}
		if (m < 0) {
			rc = (int)m;
			break;
		}
		fwrite(out, 1, (size_t)m, stdout);
		fputs(k_sep, stdout);
		pos = end + 1;
	}
	free(ids);
	free(out);
	return rc;
}

int main(int argc, char **argv)
{
	bool add = false, parse = false, whole = false, pieces = false, info = false;
	bool decode = false, remove_special = false, unparse = true;
	const char *path = NULL, *text = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--add-special")) {
			add = true;
		} else if (!strcmp(a, "--parse-special")) {
			parse = true;
		} else if (!strcmp(a, "--whole")) {
			whole = true;
		} else if (!strcmp(a, "--pieces")) {
			pieces = true;
		} else if (!strcmp(a, "--info")) {
			info = true;
		} else if (!strcmp(a, "--decode")) {
			decode = true;
		} else if (!strcmp(a, "--remove-special")) {
			remove_special = true;
		} else if (!strcmp(a, "--hide-special")) {
			unparse = false;
		} else if (!strcmp(a, "--text")) {
			if (++i >= argc) {
				fprintf(stderr, "gguf-tokenize: --text needs an argument\n");
				return 2;
			}
			text = argv[i];
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "gguf-tokenize: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		} else if (!path) {
			path = a;
		} else {
			fprintf(stderr, "gguf-tokenize: more than one model given\n");
			return 2;
		}
	}
	if (!path) {
		usage(stderr);
		return 2;
	}

	char err[256];
	struct gguf_file *f = gguf_open(path, 0, err, sizeof(err));
	if (!f) {
		fprintf(stderr, "gguf-tokenize: %s: %s\n", path, err);
		return 1;
	}
	tok_vocab_t *v = tok_vocab_load(f, err, sizeof(err));
	gguf_close(f);
	if (!v) {
		fprintf(stderr, "gguf-tokenize: %s: %s\n", path, err);
		return 1;
	}
	if (info) {
		const int32_t *eog;
		int32_t n_eog = tok_eog_ids(v, &eog);
		fprintf(stderr, "model %s pre %s n_vocab %d bos %d eos %d eot %d unk %d pad %d add_bos %d add_eos %d eog",
			tok_model_name(v), tok_pre_name(v), tok_n_vocab(v), tok_bos(v), tok_eos(v), tok_eot(v),
			tok_unk(v), tok_pad(v), tok_add_bos(v), tok_add_eos(v));
		for (int32_t i = 0; i < n_eog; i++)
			fprintf(stderr, " %d", eog[i]);
		fputc('\n', stderr);
	}

	int rc = 0;
	if (text) {
		rc = tokenize_one(v, text, strlen(text), add, parse, pieces);
	} else {
		size_t len;
		char *in = read_all(stdin, &len);
		if (!in) {
			fprintf(stderr, "gguf-tokenize: cannot read stdin\n");
			tok_vocab_free(v);
			return 1;
		}
		size_t pos = 0, sl = sizeof(k_sep) - 1;
		if (decode) {
			rc = decode_lines(v, in, len, remove_special, unparse);
			pos = len;
		} else if (whole) {
			rc = tokenize_one(v, in, len, add, parse, pieces);
			pos = len;
		}
		/* the same splitting as llama.cpp's test-tokenizer-0 */
		while (rc == 0 && pos < len) {
			const char *hit = memmem(in + pos, len - pos, k_sep, sl);
			size_t n = hit ? (size_t)(hit - (in + pos)) : len - pos;
			rc = tokenize_one(v, in + pos, n, add, parse, pieces);
			if (!hit)
				break;
			pos += n + sl;
		}
		free(in);
	}
	if (rc)
		fprintf(stderr, "gguf-tokenize: tokenizing failed: %s\n", strerror(-rc));
	tok_vocab_free(v);
	return rc ? 1 : 0;
}
