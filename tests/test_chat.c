/*
 * test_chat: engine/chat.h. Each supported template family renders a
 * 3-message conversation to the exact string its Jinja template produces
 * (expected strings written from the template definitions and checked with
 * Python's jinja2 on the files in tests/data/tokenizers/chat-templates, minus
 * the leading bos_token the tokenizer adds). Also: SmolLM2's default system
 * prompt, snprintf-style truncation, role errors, unknown templates, and the
 * rendered SmolLM2 prompt's token ids (cross-checked with llama.cpp).
 *
 * Run from the source root or with LOCUS_SRC set. Exit 0 pass, 1 fail.
 */
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"


static const char *g_src = ".";

static char *read_file(const char *rel, size_t *n)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", g_src, rel);
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *p = malloc((size_t)len + 1);
	if (!p || fread(p, 1, (size_t)len, f) != (size_t)len)
		exit(1);
	p[len] = 0;
	fclose(f);
	*n = (size_t)len;
	return p;
}

static const struct chat_msg k_sys3[] = {
	{"system", "You are a helpful assistant."},
	{"user", "Hello!"},
	{"assistant", "Hi there, how can I help?"},
};
static const struct chat_msg k_user3[] = {
	{"user", "  What is 2+2?\n"},
	{"assistant", " 4. "},
	{"user", "And 3+3?"},
};

static void expect_render(const struct chat_tmpl_info *t, const struct chat_msg *m, int n, bool gen,
			  const char *want, const char *what)
{
	char buf[4096];
	int64_t r = chat_apply(t, m, n, gen, buf, sizeof(buf));
	CHECK(r == (int64_t)strlen(want) && strcmp(buf, want) == 0, "%s:\n got: [%s]\nwant: [%s]", what,
	      r >= 0 ? buf : "(error)", want);
	/* snprintf semantics at every smaller capacity */
	size_t len = strlen(want);
	for (size_t cap = 0; cap <= len + 1; cap += (cap < 8 ? 1 : 7)) {
		char small[4096];
		memset(small, 'X', sizeof(small));
		int64_t r2 = chat_apply(t, m, n, gen, cap ? small : NULL, cap);
		CHECK(r2 == (int64_t)len, "%s: cap %zu returned %lld", what, cap, (long long)r2);
		if (cap) {
			size_t w = cap - 1 < len ? cap - 1 : len;
			CHECK(memcmp(small, want, w) == 0 && small[w] == '\0' && small[w + 1] == 'X',
			      "%s: cap %zu truncation", what, cap);
		}
	}
}

static void detect_file(const char *name, struct chat_tmpl_info *t, enum chat_tmpl kind)
{
	char rel[256], err[256] = "";
	size_t n;
	snprintf(rel, sizeof(rel), "tests/data/tokenizers/chat-templates/%s", name);
	char *s = read_file(rel, &n);
	int rc = chat_tmpl_detect(s, n, t, err, sizeof(err));
	CHECK(rc == 0 && t->kind == kind, "%s: rc %d kind %d (%s)", name, rc, t->kind, err);
	free(s);
}

static void test_smollm2(void)
{
	char path[1024], err[256] = "";
	snprintf(path, sizeof(path), "%s/tests/data/tokenizers/ggml-vocab-smollm2.gguf", g_src);
	struct gguf_file *f = gguf_open(path, 0, err, sizeof(err));
	CHECK(f, "open %s: %s", path, err);
	if (!f)
		return;
	struct chat_tmpl_info t;
	int rc = chat_tmpl_from_gguf(f, &t, err, sizeof(err));
	CHECK(rc == 0 && t.kind == CHAT_TMPL_CHATML, "SmolLM2 template: %d %s", rc, err);
	CHECK(t.has_default_system &&
		      !strcmp(t.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
	      "default system: [%s]", t.default_system);
	expect_render(&t, k_sys3, 3, true,
		      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
		      "<|im_start|>assistant\nHi there, how can I help?<|im_end|>\n<|im_start|>assistant\n",
		      "smollm2 sys3");
	expect_render(&t, k_user3, 3, true,
		      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
		      "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n 4. <|im_end|>\n"
		      "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n",
		      "smollm2 user3");
	expect_render(&t, k_user3, 1, false,
		      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
		      "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n",
		      "smollm2 one message, no generation prompt");
	expect_render(&t, k_user3, 0, true, "<|im_start|>assistant\n", "smollm2 no messages");

	/* the rendered prompt tokenizes like llama.cpp does it (add_special, parse_special) */
	tok_vocab_t *v = tok_vocab_load(f, err, sizeof(err));
	CHECK(v, "vocab: %s", err);
	if (v) {
		static const int32_t want[] = {1,   9690, 198, 2683, 359, 253, 5356,  11173, 30,  2,    198, 1,
					       4093, 198,  19556, 17,  2,   198, 1,    520,   9531, 198, 26843, 665,
					       28,  638,  416, 339,  724, 47,  2,    198,   1,    520, 9531, 198};
		char buf[1024];
		int64_t len = chat_apply(&t, k_sys3, 3, true, buf, sizeof(buf));
		int32_t ids[128];
		int64_t n = tok_encode(v, buf, (size_t)len, true, true, ids, 128);
		CHECK(n == (int64_t)(sizeof(want) / sizeof(want[0])) && !memcmp(ids, want, sizeof(want)),
		      "SmolLM2 chat prompt ids (n=%lld)", (long long)n);
		const char *const *stops = chat_stop_texts(&t);
		CHECK(stops[0] && tok_is_eog(v, tok_lookup(v, stops[0], strlen(stops[0]))), "stop text is EOG");
		tok_vocab_free(v);
	}
	gguf_close(f);
}

static void test_others(void)
{
	struct chat_tmpl_info t;

	detect_file("Qwen-Qwen2.5-7B-Instruct.jinja", &t, CHAT_TMPL_CHATML);
	CHECK(t.has_default_system &&
		      !strcmp(t.default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
	      "qwen default system: [%s]", t.default_system);
	expect_render(&t, k_user3, 3, true,
		      "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
		      "<|im_start|>user\n  What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n 4. <|im_end|>\n"
		      "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n",
		      "qwen2.5 user3");

	detect_file("llama2-chat.jinja", &t, CHAT_TMPL_LLAMA2);
	CHECK(t.llama2_strip && t.llama2_bos_turns, "llama2 flags");
	expect_render(&t, k_sys3, 3, true,
		      "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there, how can I help? </s>",
		      "llama2 sys3");
	expect_render(&t, k_user3, 3, true, "[INST] What is 2+2? [/INST] 4. </s><s>[INST] And 3+3? [/INST]",
		      "llama2 user3");
	/* strip() runs over the whole concatenation: an empty user turn eats the SYS tail */
	const struct chat_msg empty_user[] = {{"system", " S "}, {"user", " \n"}};
	expect_render(&t, empty_user, 2, false, "[INST] <<SYS>>\n S \n<</SYS>> [/INST]", "llama2 empty user");
	char buf[256];
	const struct chat_msg bad_order[] = {{"user", "a"}, {"user", "b"}};
	CHECK(chat_apply(&t, bad_order, 2, false, buf, sizeof(buf)) == -EINVAL, "llama2 alternation");
	const struct chat_msg bad_role[] = {{"user", "a"}, {"tool", "b"}};
	CHECK(chat_apply(&t, bad_role, 2, false, buf, sizeof(buf)) == -EINVAL, "llama2 role");
	const struct chat_msg sys_late[] = {{"user", "a"}, {"assistant", "b"}, {"system", "c"}};
	CHECK(chat_apply(&t, sys_late, 3, false, buf, sizeof(buf)) == -EINVAL, "llama2 late system");

	detect_file("llama3-instruct.jinja", &t, CHAT_TMPL_LLAMA3);
	CHECK(!t.llama3_dated, "llama3.0 has no date block");
	expect_render(&t, k_sys3, 3, true,
		      "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
		      "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
		      "<|start_header_id|>assistant<|end_header_id|>\n\nHi there, how can I help?<|eot_id|>"
		      "<|start_header_id|>assistant<|end_header_id|>\n\n",
		      "llama3 sys3");
	expect_render(&t, k_user3, 3, true,
		      "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
		      "<|start_header_id|>assistant<|end_header_id|>\n\n4.<|eot_id|>"
		      "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
		      "<|start_header_id|>assistant<|end_header_id|>\n\n",
		      "llama3 user3");

	static const char *const dated[] = {"meta-llama-Llama-3.1-8B-Instruct.jinja",
					    "meta-llama-Llama-3.2-3B-Instruct.jinja"};
	for (int i = 0; i < 2; i++) {
		detect_file(dated[i], &t, CHAT_TMPL_LLAMA3);
		CHECK(t.llama3_dated && !strcmp(t.date, "26 Jul 2024"), "%s: date [%s]", dated[i], t.date);
		expect_render(&t, k_sys3, 3, true,
			      "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
			      "Today Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|>"
			      "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
			      "<|start_header_id|>assistant<|end_header_id|>\n\nHi there, how can I help?<|eot_id|>"
			      "<|start_header_id|>assistant<|end_header_id|>\n\n",
			      dated[i]);
		expect_render(&t, k_user3, 3, true,
			      "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
			      "Today Date: 26 Jul 2024\n\n<|eot_id|>"
			      "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
			      "<|start_header_id|>assistant<|end_header_id|>\n\n4.<|eot_id|>"
			      "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
			      "<|start_header_id|>assistant<|end_header_id|>\n\n",
			      dated[i]);
	}

	/* Jinja trim is Python's strip: Unicode spaces go, other characters stay */
	const struct chat_msg uni[] = {{"user", "\xE3\x80\x80\xC2\xA0x\xE2\x80\x8B \t"}};
	expect_render(&t, uni, 1, false,
		      "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
		      "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
		      "x\xE2\x80\x8B<|eot_id|>",
		      "unicode trim");
}

static void test_errors(void)
{
	struct chat_tmpl_info t;
	char err[256];
	static const struct {
		const char *tmpl;
		int rc;
		const char *msg;
	} cases[] = {
		{"", -ENOENT, "empty"},
		{"{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>{% endfor %}",
		 -ENOTSUP, "unrecognized chat template"},
		{"{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}", -ENOTSUP,
		 "Mistral"},
		{"<|im_start|>{{ role }}<|im_sep|>", -ENOTSUP, "Phi-4"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = 0;
		int rc = chat_tmpl_detect(cases[i].tmpl, strlen(cases[i].tmpl), &t, err, sizeof(err));
		CHECK(rc == cases[i].rc && strstr(err, cases[i].msg), "case %zu: rc %d err '%s'", i, rc, err);
	}
	CHECK(chat_tmpl_detect(NULL, 0, &t, NULL, 0) == -ENOENT, "NULL template");

	CHECK(chat_tmpl_by_name("chatml", &t) == 0 && t.kind == CHAT_TMPL_CHATML && !t.has_default_system, "chatml");
	CHECK(chat_tmpl_by_name("llama3", &t) == 0 && t.kind == CHAT_TMPL_LLAMA3, "llama3");
	CHECK(chat_tmpl_by_name("llama2", &t) == 0 && t.kind == CHAT_TMPL_LLAMA2, "llama2");
	CHECK(chat_tmpl_by_name("vicuna", &t) == -ENOTSUP, "unknown name");
	CHECK(!strcmp(chat_tmpl_name(CHAT_TMPL_LLAMA2), "llama2"), "name");

	chat_tmpl_by_name("chatml", &t);
	const struct chat_msg null_content[] = {{"user", NULL}};
	char buf[64];
	CHECK(chat_apply(&t, null_content, 1, true, buf, sizeof(buf)) == -EINVAL, "NULL content");
	CHECK(chat_apply(&t, NULL, 1, true, buf, sizeof(buf)) == -EINVAL, "NULL msgs");
	CHECK(chat_apply(&t, k_sys3, 3, true, NULL, 5) == -EINVAL, "NULL out with cap");
	/* ChatML passes other roles through */
	const struct chat_msg tool[] = {{"tool", "42"}};
	expect_render(&t, tool, 1, false, "<|im_start|>tool\n42<|im_end|>\n", "chatml tool role");
}

int main(void)
{
	const char *e = getenv("LOCUS_SRC");
	if (e && *e)
		g_src = e;
	test_smollm2();
	test_others();
	test_errors();
	if (g_fail) {
		fprintf(stderr, "test_chat: %d failure(s)\n", g_fail);
		return 1;
	}
	printf("test_chat: ok\n");
	return 0;
}
