/*
 * tok_load.c: builds a struct tok_vocab from a GGUF file's tokenizer.ggml.*
 * keys, reproducing llama.cpp's llama_vocab::impl::load() decisions:
 * per-model and per-pre-tokenizer defaults, special ids (out-of-range values
 * are ignored), token attributes from token_type, the text-based detection of
 * EOT/EOM/FIM tokens (which also marks them as control), the end-of-generation
 * set and the list of special tokens to cut out of input text.
 *
 * Where llama.cpp walks an unordered_map (EOT/FIM detection picks "the first"
 * match) we walk ids in ascending order, which is deterministic.
 * Per-model-name attribute tweaks (phi-3 rstrip, jina lstrip) are not done.
 *
 * Threading: runs once per vocab; touches nothing shared.
 */
#define _GNU_SOURCE /* memmem */
#include "engine/tok_impl.h"

#include "engine/gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
	PF_IGNORE_MERGES = 1 << 0,
	PF_ADD_BOS = 1 << 1,
	PF_NO_CLEAN = 1 << 2, /* clean_up_tokenization_spaces off */
	PF_NO_BOS = 1 << 3,
};

/* tokenizer.ggml.pre names llama.cpp maps onto the five supported regex sets */
static const struct {
	const char *name;
	enum tok_pre pre;
	unsigned flags;
} k_pre[] = {
	{"default", TOK_PRE_DEFAULT, 0},
	{"llama3", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"llama-v3", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"llama-bpe", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"falcon3", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"falcon-h1", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"pixtral", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"midm-2.0", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"lfm2", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"jina-v5-nano", TOK_PRE_LLAMA3, PF_IGNORE_MERGES | PF_ADD_BOS},
	{"dbrx", TOK_PRE_LLAMA3, 0},
	{"smaug-bpe", TOK_PRE_LLAMA3, 0},
	{"chatglm-bpe", TOK_PRE_LLAMA3, PF_NO_BOS},
	{"glm4", TOK_PRE_LLAMA3, PF_NO_BOS | PF_IGNORE_MERGES},
	{"glm5", TOK_PRE_LLAMA3, PF_NO_BOS | PF_IGNORE_MERGES},
	{"gpt-2", TOK_PRE_GPT2, 0},
	{"phi-2", TOK_PRE_GPT2, 0},
	{"jina-es", TOK_PRE_GPT2, 0},
	{"jina-de", TOK_PRE_GPT2, 0},
	{"gigachat", TOK_PRE_GPT2, 0},
	{"jina-v2-es", TOK_PRE_GPT2, 0},
	{"jina-v2-de", TOK_PRE_GPT2, 0},
	{"a.x-4.0", TOK_PRE_GPT2, 0},
	{"mellum", TOK_PRE_GPT2, 0},
	{"modern-bert", TOK_PRE_GPT2, 0},
	{"exaone4", TOK_PRE_GPT2, 0},
	{"mpt", TOK_PRE_GPT2, 0},
	{"olmo", TOK_PRE_GPT2, 0},
	{"jais", TOK_PRE_GPT2, 0},
	{"trillion", TOK_PRE_GPT2, PF_NO_CLEAN},
	{"granite-docling", TOK_PRE_GPT2, PF_NO_CLEAN},
	{"starcoder", TOK_PRE_STARCODER, 0},
	{"refact", TOK_PRE_STARCODER, 0},
	{"codeshell", TOK_PRE_STARCODER, 0},
	{"exaone", TOK_PRE_STARCODER, 0},
	{"minerva-7b", TOK_PRE_STARCODER, 0},
	{"mellum2", TOK_PRE_STARCODER, 0},
	{"command-r", TOK_PRE_STARCODER, PF_NO_CLEAN},
	{"smollm", TOK_PRE_STARCODER, PF_NO_CLEAN},
	{"qwen2", TOK_PRE_QWEN2, PF_NO_CLEAN},
	{"deepseek-r1-qwen", TOK_PRE_QWEN2, PF_NO_CLEAN},
	{"kormo", TOK_PRE_QWEN2, PF_NO_CLEAN},
	{"f2llmv2", TOK_PRE_QWEN2, PF_NO_CLEAN},
	{"megrez", TOK_PRE_QWEN2, 0},
	{"stablelm2", TOK_PRE_QWEN2, 0},
	{"hunyuan", TOK_PRE_QWEN2, PF_NO_CLEAN},
	{"solar-open", TOK_PRE_QWEN2, PF_NO_CLEAN},
	{"grok-2", TOK_PRE_QWEN2, PF_NO_CLEAN},
};

/* texts llama.cpp treats as end of turn / end of generation */
static const char *const k_eot_text[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
	"_<EOT>", "[EOT]", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "<end_of_utterance>",
	NULL,
};
static const char *const k_eom_text[] = {"<|eom_id|>", NULL};
static const char *const k_fim_pre_text[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
					     "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>",
					     "\xE2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const k_fim_suf_text[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
					     "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>", "<SUF>",
					     "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const k_fim_mid_text[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
					     "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>",
					     "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const k_fim_pad_text[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const k_fim_rep_text[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
					     "<reponame>", NULL};
static const char *const k_fim_sep_text[] = {"<|file_sep|>", NULL};
static const char *const k_eog_text[] = {
	"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
	"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
	"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
	"<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~[", NULL,
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool str_is(const char *s, size_t n, const char *z)
{
	size_t zn = strlen(z);
	return n == zn && memcmp(s, z, n) == 0;
}

static bool in_list(const char *s, size_t n, const char *const *list)
{
	for (; *list; list++) {
		if (str_is(s, n, *list))
			return true;
	}
	return false;
}

/* llama.cpp's LLAMA_TOKEN_TYPE_* -> attribute */
static uint32_t attr_of_type(int32_t t)
{
	switch (t) {
	case 1: return TOK_ATTR_NORMAL;
	case 2: return TOK_ATTR_UNKNOWN;
	case 3: return TOK_ATTR_CONTROL;
	case 4: return TOK_ATTR_USER_DEFINED;
	case 5: return TOK_ATTR_UNUSED;
	case 6: return TOK_ATTR_BYTE;
	default: return TOK_ATTR_UNDEFINED;
	}
}

static const char *tok_str(const struct tok_vocab *v, int32_t id, size_t *n)
{
	*n = v->text.len[id];
	return v->text.pool + v->text.off[id];
}

/* An id key overrides *id when it is present and in range. */
static void read_id(const struct gguf_file *f, const char *key, int32_t n_vocab, int32_t *id)
{
	if (*id >= n_vocab)
		*id = -1; /* default out of range: disabled */
	uint32_t u;
	if (gguf_get_u32(f, key, &u) == 0 && u < (uint32_t)n_vocab)
		*id = (int32_t)u;
}

static void read_bool(const struct gguf_file *f, const char *key, bool *b)
{
	bool t;
	if (gguf_get_bool(f, key, &t) == 0)
		*b = t;
}

static int load_model_kind(struct tok_vocab *v, const struct gguf_file *f, char *err, size_t errlen)
{
	struct gguf_str s;
	int rc = gguf_get_str(f, "tokenizer.ggml.model", &s);
	if (rc) {
		set_err(err, errlen, "tokenizer.ggml.model: %s", rc == -ENOENT ? "missing" : "not a string");
		return -EINVAL;
	}
	if (str_is(s.ptr, s.len, "llama")) {
		v->model = TOK_MODEL_SPM;
	} else if (str_is(s.ptr, s.len, "gpt2")) {
		v->model = TOK_MODEL_BPE;
	} else {
		set_err(err, errlen, "unknown tokenizer model '%.*s' (supported: llama, gpt2)",
			(int)(s.len > 64 ? 64 : s.len), s.ptr);
		return -EINVAL;
	}
	snprintf(v->model_name, sizeof(v->model_name), "%s", v->model == TOK_MODEL_SPM ? "llama" : "gpt2");

	struct gguf_str pre = {"", 0};
	rc = gguf_get_str(f, "tokenizer.ggml.pre", &pre);
	if (rc == -EINVAL) {
		set_err(err, errlen, "tokenizer.ggml.pre: not a string");
		return -EINVAL;
	}
	if (pre.len >= sizeof(v->pre_name))
		pre.len = sizeof(v->pre_name) - 1;
	snprintf(v->pre_name, sizeof(v->pre_name), "%.*s", (int)pre.len, pre.len ? pre.ptr : "default");

	if (v->model == TOK_MODEL_SPM) {
		/* llama.cpp's SPM has no pre-tokenizer; the key is ignored */
		v->pre = TOK_PRE_NONE;
		v->bos = 1;
		v->eos = 2;
		v->unk = 0;
		v->add_space_prefix = true;
		v->add_bos = true;
		return 0;
	}
	v->bos = 11;
	v->eos = 11;
	v->clean_spaces = true;
	if (pre.len == 0) {
		v->pre = TOK_PRE_DEFAULT; /* llama.cpp warns and degrades the same way */
		return 0;
	}
	for (size_t i = 0; i < sizeof(k_pre) / sizeof(k_pre[0]); i++) {
		if (!str_is(pre.ptr, pre.len, k_pre[i].name))
			continue;
		v->pre = k_pre[i].pre;
		v->ignore_merges = k_pre[i].flags & PF_IGNORE_MERGES;
		v->add_bos = k_pre[i].flags & PF_ADD_BOS;
		v->clean_spaces = !(k_pre[i].flags & PF_NO_CLEAN);
		if (k_pre[i].flags & PF_NO_BOS)
			v->bos = -1;
		return 0;
	}
	set_err(err, errlen, "unknown pre-tokenizer '%s' (tokenizer.ggml.pre)", v->pre_name);
	return -EINVAL;
}

static int load_tokens(struct tok_vocab *v, const struct gguf_file *f, char *err, size_t errlen)
{
	enum gguf_vtype et;
	int64_t n = gguf_array_len(f, "tokenizer.ggml.tokens", &et);
	if (n < 0 || et != GGUF_T_STRING) {
		set_err(err, errlen, "tokenizer.ggml.tokens: %s", n == -ENOENT ? "missing" : "not a string array");
		return -EINVAL;
	}
	if (n < 1 || n > INT32_MAX / 2) {
		set_err(err, errlen, "tokenizer.ggml.tokens: bad count %lld", (long long)n);
		return -EINVAL;
	}
	v->n_vocab = (int32_t)n;

	const void *scores = NULL, *types = NULL;
	enum gguf_vtype score_t = GGUF_T_FLOAT32;
	uint64_t cnt;
	int64_t sn = gguf_array_len(f, "tokenizer.ggml.scores", &score_t);
	if (sn != -ENOENT) {
		if (sn < 0 || (score_t != GGUF_T_FLOAT32 && score_t != GGUF_T_INT32) ||
		    gguf_get_array(f, "tokenizer.ggml.scores", score_t, &scores, &cnt)) {
			set_err(err, errlen, "tokenizer.ggml.scores: not an f32/i32 array");
			return -EINVAL;
		}
		if (cnt < (uint64_t)n) {
			set_err(err, errlen, "tokenizer.ggml.scores: %llu entries for %lld tokens",
				(unsigned long long)cnt, (long long)n);
			return -EINVAL;
		}
	}
	int rc = gguf_get_array(f, "tokenizer.ggml.token_type", GGUF_T_INT32, &types, &cnt);
	if (rc == -EINVAL) {
		set_err(err, errlen, "tokenizer.ggml.token_type: not an i32 array");
		return -EINVAL;
	}
	if (rc == 0 && cnt < (uint64_t)n) {
		set_err(err, errlen, "tokenizer.ggml.token_type: %llu entries for %lld tokens",
			(unsigned long long)cnt, (long long)n);
		return -EINVAL;
	}

	struct gguf_str *strs = tok_calloc((size_t)n, sizeof(*strs));
	if (!strs)
		return -ENOMEM;
	rc = gguf_get_str_array(f, "tokenizer.ggml.tokens", strs, (uint64_t)n);
	size_t pool = 0;
	for (int64_t i = 0; rc == 0 && i < n; i++)
		pool += strs[i].len ? strs[i].len : 32; /* room for "[EMPTY_<i>]" */
	if (rc || pool > UINT32_MAX) {
		tok_mfree(strs);
		set_err(err, errlen, "tokenizer.ggml.tokens: unreadable or too large");
		return -EINVAL;
	}
	v->score = tok_calloc((size_t)n, sizeof(float));
	v->attr = tok_calloc((size_t)n, sizeof(uint32_t));
	if (!v->score || !v->attr || tok_strtab_init(&v->text, (uint32_t)n, pool)) {
		tok_mfree(strs);
		return -ENOMEM;
	}
	for (int64_t i = 0; i < n; i++) {
		char empty[32];
		const char *s = strs[i].ptr;
		size_t len = strs[i].len;
		if (len == 0) {
			/* llama.cpp renames empty entries so they stay unique */
			len = (size_t)snprintf(empty, sizeof(empty), "[EMPTY_%lld]", (long long)i);
			s = empty;
		}
		int64_t dup = tok_strtab_add(&v->text, s, len, true);
		if (dup >= 0) {
			tok_mfree(strs);
			set_err(err, errlen, "tokenizer.ggml.tokens: token %lld repeats token %lld", (long long)i,
				(long long)dup);
			return -EINVAL;
		}
		if (scores) {
			if (score_t == GGUF_T_FLOAT32) {
				memcpy(&v->score[i], (const char *)scores + 4 * i, 4);
			} else {
				int32_t t;
				memcpy(&t, (const char *)scores + 4 * i, 4);
				v->score[i] = (float)t;
			}
		}
		v->attr[i] = TOK_ATTR_NORMAL;
		if (types) {
			int32_t t;
			memcpy(&t, (const char *)types + 4 * i, 4);
			v->attr[i] = attr_of_type(t);
		}
	}
	tok_mfree(strs);
	return 0;
}

static int load_merges(struct tok_vocab *v, const struct gguf_file *f, char *err, size_t errlen)
{
	enum gguf_vtype et;
	int64_t n = gguf_array_len(f, "tokenizer.ggml.merges", &et);
	if (n < 0 || et != GGUF_T_STRING) {
		set_err(err, errlen, "tokenizer.ggml.merges: %s", n == -ENOENT ? "missing" : "not a string array");
		return -EINVAL;
	}
	if (n > INT32_MAX / 2) {
		set_err(err, errlen, "tokenizer.ggml.merges: too many");
		return -EINVAL;
	}
	struct gguf_str *strs = tok_calloc((size_t)n, sizeof(*strs));
	if (!strs)
		return -ENOMEM;
	int rc = gguf_get_str_array(f, "tokenizer.ggml.merges", strs, (uint64_t)n);
	size_t pool = 0;
	for (int64_t i = 0; rc == 0 && i < n; i++)
		pool += strs[i].len;
	if (rc || pool > UINT32_MAX) {
		tok_mfree(strs);
		set_err(err, errlen, "tokenizer.ggml.merges: unreadable or too large");
		return -EINVAL;
	}
	if (tok_strtab_init(&v->merges, (uint32_t)n, pool)) {
		tok_mfree(strs);
		return -ENOMEM;
	}
	/* a repeated line keeps its first (lowest) rank, like llama.cpp's emplace */
	for (int64_t i = 0; i < n; i++)
		tok_strtab_add(&v->merges, strs[i].ptr, strs[i].len, true);
	tok_mfree(strs);
	return 0;
}

/* Finds the first id whose text is in list; marks it control. */
static void detect_special(struct tok_vocab *v, int32_t *id, const char *const *list)
{
	if (*id >= 0)
		return;
	for (int32_t i = 0; i < v->n_vocab; i++) {
		size_t n;
		const char *s = tok_str(v, i, &n);
		if (in_list(s, n, list)) {
			*id = i;
			v->attr[i] |= TOK_ATTR_CONTROL;
			return;
		}
	}
}

static int find_text(const struct tok_vocab *v, const char *z)
{
	return (int)tok_strtab_find(&v->text, z, strlen(z));
}

static int build_eog(struct tok_vocab *v, int32_t fim_pad, int32_t fim_rep, int32_t fim_sep)
{
	uint8_t *mark = tok_calloc((size_t)v->n_vocab, 1);
	if (!mark)
		return -ENOMEM;
	int32_t extra[] = {fim_pad, fim_rep, fim_sep, v->eos, v->eot, v->eom};
	for (size_t k = 0; k < sizeof(extra) / sizeof(extra[0]); k++) {
		if (extra[k] >= 0)
			mark[extra[k]] = 1;
	}
	for (int32_t i = 0; i < v->n_vocab; i++) {
		size_t n;
		const char *s = tok_str(v, i, &n);
		if (in_list(s, n, k_eog_text)) {
			mark[i] = 1;
			v->attr[i] |= TOK_ATTR_CONTROL;
		}
	}
	/* gpt-oss: always rendered, never end-of-generation by attribute */
	static const char *const always_render[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
	for (size_t k = 0; k < 4; k++) {
		int id = find_text(v, always_render[k]);
		if (id >= 0)
			v->attr[id] = TOK_ATTR_USER_DEFINED;
	}
	/* o200k_harmony / solar-open: <|end|> ends a message, not generation */
	int ret = find_text(v, "<|return|>"), call = find_text(v, "<|call|>"), calls = find_text(v, "<|calls|>");
	int flush = find_text(v, "<|flush|>"), end = find_text(v, "<|end|>");
	bool has_return = ret >= 0 && mark[ret], has_call = (call >= 0 && mark[call]) || (calls >= 0 && mark[calls]);
	bool has_flush = flush >= 0 && mark[flush], has_end = end >= 0 && mark[end];
	if (has_end && has_call && (has_return || has_flush)) {
		mark[end] = 0;
		v->attr[end] = TOK_ATTR_USER_DEFINED;
	}
	/* gemma4 / plamo: </s> is an ordinary token there */
	int s_end = find_text(v, "</s>"), tr = find_text(v, "<|tool_response>"), pe = find_text(v, "<|plamo:eos|>");
	if (s_end >= 0 && mark[s_end] && ((tr >= 0 && mark[tr]) || (pe >= 0 && mark[pe]))) {
		mark[s_end] = 0;
		v->attr[s_end] = TOK_ATTR_NORMAL;
	}
	int32_t n = 0;
	for (int32_t i = 0; i < v->n_vocab; i++)
		n += mark[i];
	v->eog = tok_calloc((size_t)n, sizeof(int32_t));
	if (!v->eog) {
		tok_mfree(mark);
		return -ENOMEM;
	}
	for (int32_t i = 0; i < v->n_vocab; i++) {
		if (mark[i])
			v->eog[v->n_eog++] = i;
	}
	tok_mfree(mark);
	return 0;
}

struct len_id {
	uint32_t len;
	int32_t id;
};

static int cmp_len_desc(const void *a, const void *b)
{
	const struct len_id *x = a, *y = b;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int build_special(struct tok_vocab *v)
{
	int32_t n = 0;
	for (int32_t i = 0; i < v->n_vocab; i++)
		n += (v->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) != 0;
	struct len_id *tmp = tok_calloc((size_t)n, sizeof(*tmp));
	v->special = tok_calloc((size_t)n, sizeof(int32_t));
	if (!tmp || !v->special) {
		tok_mfree(tmp);
		return -ENOMEM;
	}
	int32_t k = 0;
	for (int32_t i = 0; i < v->n_vocab; i++) {
		if (v->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN))
			tmp[k++] = (struct len_id){v->text.len[i], i};
	}
	/* longest first so a long special token wins over one it contains */
	qsort(tmp, (size_t)n, sizeof(*tmp), cmp_len_desc);
	for (int32_t i = 0; i < n; i++)
		v->special[i] = tmp[i].id;
	v->n_special = n;
	tok_mfree(tmp);
	return 0;
}

static void build_byte_tokens(struct tok_vocab *v)
{
	static const char hex[] = "0123456789ABCDEF";
	for (int b = 0; b < 256; b++) {
		char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
		int64_t id = tok_strtab_find(&v->text, name, 6);
		if (id < 0) {
			char c = (char)b;
			id = tok_strtab_find(&v->text, &c, 1);
		}
		v->byte_tok[b] = (int32_t)id;
	}
}

tok_vocab_t *tok_vocab_load(const struct gguf_file *f, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = '\0';
	if (!f) {
		set_err(err, errlen, "no file");
		return NULL;
	}
	struct tok_vocab *v = tok_calloc(1, sizeof(*v));
	if (!v) {
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	v->bos = v->eos = v->eot = v->eom = v->unk = v->pad = -1;
	int rc = load_model_kind(v, f, err, errlen);
	if (!rc)
		read_bool(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
	if (!rc)
		rc = load_tokens(v, f, err, errlen);
	if (!rc && v->model == TOK_MODEL_BPE)
		rc = load_merges(v, f, err, errlen);
	if (rc)
		goto fail;

	int32_t fim_pre = -1, fim_suf = -1, fim_mid = -1, fim_pad = -1, fim_rep = -1, fim_sep = -1;
	read_id(f, "tokenizer.ggml.bos_token_id", v->n_vocab, &v->bos);
	read_id(f, "tokenizer.ggml.eos_token_id", v->n_vocab, &v->eos);
	read_id(f, "tokenizer.ggml.eot_token_id", v->n_vocab, &v->eot);
	read_id(f, "tokenizer.ggml.eom_token_id", v->n_vocab, &v->eom);
	read_id(f, "tokenizer.ggml.unknown_token_id", v->n_vocab, &v->unk);
	read_id(f, "tokenizer.ggml.padding_token_id", v->n_vocab, &v->pad);
	read_id(f, "tokenizer.ggml.fim_pre_token_id", v->n_vocab, &fim_pre);
	read_id(f, "tokenizer.ggml.fim_suf_token_id", v->n_vocab, &fim_suf);
	read_id(f, "tokenizer.ggml.fim_mid_token_id", v->n_vocab, &fim_mid);
	read_id(f, "tokenizer.ggml.fim_pad_token_id", v->n_vocab, &fim_pad);
	read_id(f, "tokenizer.ggml.fim_rep_token_id", v->n_vocab, &fim_rep);
	read_id(f, "tokenizer.ggml.fim_sep_token_id", v->n_vocab, &fim_sep);
	read_id(f, "tokenizer.ggml.prefix_token_id", v->n_vocab, &fim_pre);
	read_id(f, "tokenizer.ggml.suffix_token_id", v->n_vocab, &fim_suf);
	read_id(f, "tokenizer.ggml.middle_token_id", v->n_vocab, &fim_mid);
	read_bool(f, "tokenizer.ggml.add_bos_token", &v->add_bos);
	read_bool(f, "tokenizer.ggml.add_eos_token", &v->add_eos);
	/* llama.cpp asserts when asked to add a token the vocab lacks */
	if (v->bos < 0)
		v->add_bos = false;
	if (v->eos < 0)
		v->add_eos = false;

	detect_special(v, &v->eot, k_eot_text);
	detect_special(v, &v->eom, k_eom_text);
	detect_special(v, &fim_pre, k_fim_pre_text);
	detect_special(v, &fim_suf, k_fim_suf_text);
	detect_special(v, &fim_mid, k_fim_mid_text);
	detect_special(v, &fim_pad, k_fim_pad_text);
	detect_special(v, &fim_rep, k_fim_rep_text);
	detect_special(v, &fim_sep, k_fim_sep_text);
	for (int32_t i = 0; i < v->n_vocab; i++) {
		size_t n;
		const char *s = tok_str(v, i, &n);
		if ((v->attr[i] & TOK_ATTR_CONTROL) && memmem(s, n, "unused", 6))
			v->attr[i] |= TOK_ATTR_UNUSED;
	}
	if (build_eog(v, fim_pad, fim_rep, fim_sep) || build_special(v)) {
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	if (v->model == TOK_MODEL_SPM)
		build_byte_tokens(v);
	else
		memset(v->byte_tok, 0xff, sizeof(v->byte_tok));
	if (tok_load_pieces(v)) {
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	if (tok_pretok_init(&v->pretok, v->pre, err, errlen))
		goto fail;
	return v;
fail:
	if (err && errlen && !err[0])
		set_err(err, errlen, "out of memory");
	tok_vocab_free(v);
	return NULL;
}

/* ---- pieces ---- */

struct pool {
	char *p;
	size_t n, cap;
};

static int pool_put(struct pool *pl, const void *s, size_t n)
{
	if (tok_grow((void **)&pl->p, &pl->cap, pl->n + n, 1))
		return -ENOMEM;
	memcpy(pl->p + pl->n, s, n);
	pl->n += n;
	return 0;
}

/* <0xXX> -> the byte (llama.cpp reads two hex digits after "<0x") */
static uint8_t byte_of(const char *s, size_t n)
{
	unsigned v = 0;
	for (size_t i = 3; i < 5 && i < n; i++) {
		char c = s[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
			   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
			   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
						  : 16u;
		if (d == 16)
			break;
		v = v * 16 + d;
	}
	return (uint8_t)v;
}

/* Byte-level text -> bytes. A code point outside the byte alphabet is
 * rendered as llama.cpp does: "[UNK_BYTE_0x<hex of its UTF-8>" + the whole
 * token text + "]". */
static int bpe_decode(struct pool *pl, const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t adv;
		uint32_t cp = tok_utf8_decode((const uint8_t *)s + i, n - i, &adv);
		i += adv;
		int b = tok_cp_to_byte(cp);
		if (b >= 0) {
			char c = (char)b;
			if (pool_put(pl, &c, 1))
				return -ENOMEM;
			continue;
		}
		char u8[4], hex[16];
		int k = tok_utf8_encode(cp, u8), h = 0;
		for (int j = 0; j < k; j++)
			h += snprintf(hex + h, sizeof(hex) - (size_t)h, "%02x", (uint8_t)u8[j]);
		if (pool_put(pl, "[UNK_BYTE_0x", 12) || pool_put(pl, hex, (size_t)h) || pool_put(pl, s, n) ||
		    pool_put(pl, "]", 1))
			return -ENOMEM;
	}
	return 0;
}

int tok_load_pieces(struct tok_vocab *v)
{
	struct pool pl = {0};
	v->piece_off = tok_calloc((size_t)v->n_vocab, sizeof(uint32_t));
	v->piece_len = tok_calloc((size_t)v->n_vocab, sizeof(uint32_t));
	if (!v->piece_off || !v->piece_len)
		return -ENOMEM;
	for (int32_t id = 0; id < v->n_vocab; id++) {
		size_t n, start = pl.n;
		const char *s = tok_str(v, id, &n);
		uint32_t a = v->attr[id];
		int rc = 0;
		if (a & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED)) {
			rc = pool_put(&pl, s, n);
		} else if (a & TOK_ATTR_NORMAL) {
			if (v->model == TOK_MODEL_BPE) {
				rc = bpe_decode(&pl, s, n);
			} else {
				for (size_t i = 0; i < n && !rc; i++) {
					if (i + 2 < n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
						rc = pool_put(&pl, " ", 1);
						i += 2;
					} else {
						rc = pool_put(&pl, s + i, 1);
					}
				}
			}
		} else if (a & TOK_ATTR_BYTE) {
			uint8_t b = byte_of(s, n);
			rc = pool_put(&pl, &b, 1);
		}
		/* unused / undefined tokens render as nothing */
		if (rc || pl.n > UINT32_MAX) {
			tok_mfree(pl.p);
			return -ENOMEM;
		}
		v->piece_off[id] = (uint32_t)start;
		v->piece_len[id] = (uint32_t)(pl.n - start);
		if ((int)(pl.n - start) > v->piece_max)
			v->piece_max = (int)(pl.n - start);
	}
	v->piece_pool = pl.p ? pl.p : tok_malloc(1);
	return v->piece_pool ? 0 : -ENOMEM;
}

void tok_vocab_free(tok_vocab_t *v)
{
	if (!v)
		return;
	tok_pretok_free(&v->pretok);
	tok_strtab_free(&v->text);
	tok_strtab_free(&v->merges);
	tok_mfree(v->score);
	tok_mfree(v->attr);
	tok_mfree(v->piece_pool);
	tok_mfree(v->piece_off);
	tok_mfree(v->piece_len);
	tok_mfree(v->special);
	tok_mfree(v->eog);
	tok_mfree(v);
}
