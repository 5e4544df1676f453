/*
 * chat.h: chat prompt formats chosen from a model's `tokenizer.chat_template`.
 *
 * There is no Jinja engine here: chat_tmpl_detect() recognizes the template
 * family from marker strings (as llama.cpp's llm_chat_detect_template does)
 * and pulls the few literals that vary between models out of the template
 * text; chat_apply() then renders what that Jinja template would produce.
 *
 *   CHAT_TMPL_CHATML  <|im_start|>{role}\n{content}<|im_end|>\n ...
 *                     generation prompt <|im_start|>assistant\n. If the
 *                     template has a default system prompt (SmolLM2, Qwen2.5:
 *                     a '<|im_start|>system\n...<|im_end|>' literal), it is
 *                     inserted when the first message is not a system one.
 *   CHAT_TMPL_LLAMA2  Meta's Llama 2 chat: the system message folds into the
 *                     first user turn as <<SYS>>\n...\n<</SYS>>\n\n; user turns
 *                     "[INST] {content} [/INST]", answers " {content} </s>",
 *                     later turns start with "<s>"; roles must alternate.
 *   CHAT_TMPL_LLAMA3  <|start_header_id|>{role}<|end_header_id|>\n\n{content}
 *                     <|eot_id|>, contents trimmed; Llama 3.1+ templates
 *                     ("Cutting Knowledge Date") always open with a system
 *                     block carrying the template's default date string.
 *
 * The BOS token that starts a prompt is not rendered: tokenize the result
 * with tok_encode(add_special = true, parse_special = true), which adds BOS
 * as the vocabulary asks and turns the rendered special-token texts (<s>,
 * </s>, <|im_end|>, ...) into their ids.
 *
 * Threading: pure functions; a struct chat_tmpl_info is plain data.
 */
#ifndef LOCUS_ENGINE_CHAT_H
#define LOCUS_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_file;

enum chat_tmpl {
	CHAT_TMPL_NONE = 0,
	CHAT_TMPL_CHATML,
	CHAT_TMPL_LLAMA2,
	CHAT_TMPL_LLAMA3,
};

#define CHAT_SYSTEM_MAX 2048
#define CHAT_DATE_MAX 32

struct chat_tmpl_info {
	enum chat_tmpl kind;
	/* ChatML: default system prompt, used when messages[0] is not "system" */
	bool has_default_system;
	char default_system[CHAT_SYSTEM_MAX]; /* NUL-terminated, escapes resolved */
	/* Llama 2: content.strip() applied; "<s>" before every later [INST] */
	bool llama2_strip;
	bool llama2_bos_turns;
	/* Llama 3.1+: dated system block ("Today Date: " + date) */
	bool llama3_dated;
	char date[CHAT_DATE_MAX];
};

struct chat_msg {
	const char *role;    /* "system", "user", "assistant" (ChatML: any) */
	const char *content; /* NUL-terminated UTF-8 */
};

/*
 * Recognizes jinja[0..len). 0 on success; -ENOENT for an empty template,
 * -ENOTSUP for a template of another or unknown family, with a message in
 * err that says which.
 */
int chat_tmpl_detect(const char *jinja, size_t len, struct chat_tmpl_info *out, char *err, size_t errlen);
/* Reads tokenizer.chat_template from f and detects it (-ENOENT when the key
 * is absent). */
int chat_tmpl_from_gguf(const struct gguf_file *f, struct chat_tmpl_info *out, char *err, size_t errlen);
/* A plain format by name: "chatml", "llama2", "llama3"; -ENOTSUP otherwise. */
int chat_tmpl_by_name(const char *name, struct chat_tmpl_info *out);
const char *chat_tmpl_name(enum chat_tmpl kind);

/*
 * Renders msgs[0..n) (plus the assistant header when add_generation_prompt)
 * into out, snprintf-style: returns the full length, writes at most cap - 1
 * bytes and a NUL when cap > 0. -EINVAL for NULL roles or contents, roles a
 * format does not allow, or (Llama 2) turns that do not alternate.
 */
int64_t chat_apply(const struct chat_tmpl_info *t, const struct chat_msg *msgs, int n, bool add_generation_prompt,
		   char *out, size_t cap);

/* Texts that end the assistant's turn in this format (the end-of-generation
 * tokens cover them too); a NULL-terminated static list. */
const char *const *chat_stop_texts(const struct chat_tmpl_info *t);

#endif
