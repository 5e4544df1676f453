/*
 * chat.c: recognizes chat-template families from their Jinja text and renders
 * conversations as those templates would (see chat.h for the formats).
 *
 * Rendering writes through a snprintf-like sink: the full length is always
 * counted, bytes past the caller's capacity are dropped. Jinja's `trim` and
 * Python's `str.strip()` remove the characters Python's str.isspace() accepts;
 * strip_segs() applies that to a concatenation of strings without building it
 * (a whitespace character never straddles two strings).
 *
 * Threading: no state; everything works on the caller's data.
 */
#define _GNU_SOURCE /* memmem */
#include "engine/chat.h"

#include "engine/gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool has(const char *s, size_t n, const char *needle)
{
	return memmem(s, n, needle, strlen(needle)) != NULL;
}

const char *chat_tmpl_name(enum chat_tmpl kind)
{
	switch (kind) {
	case CHAT_TMPL_CHATML: return "chatml";
	case CHAT_TMPL_LLAMA2: return "llama2";
	case CHAT_TMPL_LLAMA3: return "llama3";
	default: return "none";
	}
}

int chat_tmpl_by_name(const char *name, struct chat_tmpl_info *out)
{
	memset(out, 0, sizeof(*out));
	if (!name)
		return -EINVAL;
	if (!strcmp(name, "chatml")) {
		out->kind = CHAT_TMPL_CHATML;
	} else if (!strcmp(name, "llama2")) {
		out->kind = CHAT_TMPL_LLAMA2;
		out->llama2_strip = true;
		out->llama2_bos_turns = true;
	} else if (!strcmp(name, "llama3")) {
		out->kind = CHAT_TMPL_LLAMA3;
	} else {
		return -ENOTSUP;
	}
	return 0;
}

/* Resolves Python/Jinja string escapes of s[0..n) into out (NUL-terminated).
 * Returns the length or -ENOSPC. Unknown escapes keep their backslash, as in
 * Python. */
static int unescape(const char *s, size_t n, char *out, size_t cap)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '\\' && i + 1 < n) {
			char e = s[++i];
			switch (e) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case '\\': c = '\\'; break;
			case '\'': c = '\''; break;
			case '"': c = '"'; break;
			default:
				if (w + 1 >= cap)
					return -ENOSPC;
				out[w++] = '\\';
				c = e;
				break;
			}
		}
		if (w + 1 >= cap)
			return -ENOSPC;
		out[w++] = c;
	}
	out[w] = '\0';
	return (int)w;
}

/* The end of a string literal's body starting at p (quote q), or NULL. */
static const char *literal_end(const char *p, const char *end, char q)
{
	for (; p < end; p++) {
		if (*p == '\\')
			p++;
		else if (*p == q)
			return p;
	}
	return NULL;
}

/* A '<|im_start|>system\n...<|im_end|>' literal: ChatML's default system prompt. */
static int find_default_system(const char *t, size_t n, struct chat_tmpl_info *out)
{
	static const char key[] = "<|im_start|>system";
	const char *end = t + n;
	for (const char *p = t; (p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1)); p++) {
		if (p == t || (p[-1] != '\'' && p[-1] != '"'))
			continue;
		char q = p[-1];
		const char *body = p + sizeof(key) - 1;
		if (end - body >= 2 && body[0] == '\\' && body[1] == 'n')
			body += 2;
		else if (body < end && body[0] == '\n')
			body += 1;
		else
			continue;
		const char *lit_end = literal_end(body, end, q);
		if (!lit_end)
			continue;
		const char *im_end = memmem(body, (size_t)(lit_end - body), "<|im_end|>", 10);
		if (!im_end || im_end == body)
			continue;
		int len = unescape(body, (size_t)(im_end - body), out->default_system, sizeof(out->default_system));
		if (len < 0)
			return -ENOSPC;
		out->has_default_system = true;
		return 0;
	}
	return 0;
}

/* The literal assigned to date_string (Llama 3.1+), or the Llama default. */
static void find_date(const char *t, size_t n, struct chat_tmpl_info *out)
{
	static const char key[] = "date_string = ";
	const char *end = t + n;
	snprintf(out->date, sizeof(out->date), "%s", "26 Jul 2024");
	for (const char *p = t; (p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1)); p++) {
		const char *v = p + sizeof(key) - 1;
		if (v >= end || (*v != '"' && *v != '\''))
			continue; /* e.g. strftime_now(...) */
		const char *e = literal_end(v + 1, end, *v);
		if (!e)
			continue;
		char tmp[CHAT_DATE_MAX];
		if (unescape(v + 1, (size_t)(e - v - 1), tmp, sizeof(tmp)) >= 0)
			memcpy(out->date, tmp, sizeof(tmp));
		return;
	}
}

int chat_tmpl_detect(const char *t, size_t n, struct chat_tmpl_info *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!t || n == 0) {
		set_err(err, errlen, "empty chat template");
		return -ENOENT;
	}
	if (has(t, n, "<|im_start|>")) {
		if (has(t, n, "<|im_sep|>")) {
			set_err(err, errlen, "unsupported chat template: Phi-4 (<|im_sep|>)");
			return -ENOTSUP;
		}
		if (has(t, n, "<end_of_utterance>")) {
			set_err(err, errlen, "unsupported chat template: SmolVLM (<end_of_utterance>)");
			return -ENOTSUP;
		}
		out->kind = CHAT_TMPL_CHATML;
		if (find_default_system(t, n, out)) {
			set_err(err, errlen, "chat template's default system prompt exceeds %d bytes",
				CHAT_SYSTEM_MAX - 1);
			return -ENOTSUP;
		}
		return 0;
	}
	if (has(t, n, "[INST]")) {
		if (!has(t, n, "<<SYS>>")) {
			set_err(err, errlen, "unsupported chat template: [INST] without <<SYS>> (Mistral family)");
			return -ENOTSUP;
		}
		out->kind = CHAT_TMPL_LLAMA2;
		out->llama2_strip = has(t, n, ".strip()");
		out->llama2_bos_turns = has(t, n, "bos_token + '[INST]") || has(t, n, "bos_token + \"[INST]");
		return 0;
	}
	if (has(t, n, "<|start_header_id|>") && has(t, n, "<|end_header_id|>")) {
		out->kind = CHAT_TMPL_LLAMA3;
		if (has(t, n, "Cutting Knowledge Date")) {
			out->llama3_dated = true;
			find_date(t, n, out);
		}
		return 0;
	}
	size_t show = n < 48 ? n : 48;
	char head[64];
	for (size_t i = 0; i < show; i++)
		head[i] = (t[i] == '\n' || t[i] == '\r' || t[i] == '\t') ? ' ' : t[i];
	head[show] = '\0';
	set_err(err, errlen, "unrecognized chat template (supported: ChatML, Llama 2, Llama 3): '%s%s'", head,
		n > show ? "..." : "");
	return -ENOTSUP;
}

int chat_tmpl_from_gguf(const struct gguf_file *f, struct chat_tmpl_info *out, char *err, size_t errlen)
{
	struct gguf_str s;
	memset(out, 0, sizeof(*out));
	int rc = gguf_get_str(f, "tokenizer.chat_template", &s);
	if (rc) {
		set_err(err, errlen, "tokenizer.chat_template: %s", rc == -ENOENT ? "missing" : "not a string");
		return rc == -ENOENT ? -ENOENT : -EINVAL;
	}
	return chat_tmpl_detect(s.ptr, (size_t)s.len, out, err, errlen);
}

/* ---- rendering ---- */

struct sink {
	char *out;
	size_t cap; /* usable bytes: the caller's cap minus the NUL */
	size_t n;   /* full length so far */
};

static void put(struct sink *k, const char *s, size_t n)
{
	if (k->n < k->cap) {
		size_t room = k->cap - k->n;
		memcpy(k->out + k->n, s, n < room ? n : room);
	}
	k->n += n;
}

static void puts_(struct sink *k, const char *s)
{
	put(k, s, strlen(s));
}

/* Python's str.isspace() for the code point starting at s (length in *len). */
static bool py_space(const unsigned char *s, size_t n, size_t *len)
{
	*len = 1;
	unsigned c = s[0];
	if (c < 0x80)
		return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
	uint32_t cp;
	if ((c & 0xE0) == 0xC0 && n >= 2) {
		cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
		*len = 2;
	} else if ((c & 0xF0) == 0xE0 && n >= 3) {
		cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
		*len = 3;
	} else {
		return false;
	}
	return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* length of leading whitespace of s[0..n) */
static size_t lspace(const char *s, size_t n)
{
	size_t i = 0, l;
	while (i < n && py_space((const unsigned char *)s + i, n - i, &l))
		i += l;
	return i;
}

/* length of s[0..n) without trailing whitespace */
static size_t rtrim_len(const char *s, size_t n)
{
	size_t keep = 0, i = 0, l;
	while (i < n) {
		bool sp = py_space((const unsigned char *)s + i, n - i, &l);
		i += l;
		if (!sp)
			keep = i;
	}
	return keep;
}

struct seg {
	const char *s;
	size_t n;
};

/* Emits strip(seg[0] + ... + seg[ns - 1]). */
static void strip_segs(struct sink *k, const struct seg *seg, int ns)
{
	int first = 0, last = ns - 1;
	size_t off = 0, end = 0;
	for (; first < ns; first++) {
		off = lspace(seg[first].s, seg[first].n);
		if (off < seg[first].n)
			break;
	}
	if (first == ns)
		return;
	for (; last >= first; last--) {
		size_t from = last == first ? off : 0;
		end = from + rtrim_len(seg[last].s + from, seg[last].n - from);
		if (end > from)
			break;
	}
	for (int i = first; i <= last; i++) {
		size_t a = i == first ? off : 0, b = i == last ? end : seg[i].n;
		put(k, seg[i].s + a, b - a);
	}
}

static void trimmed(struct sink *k, const char *s)
{
	struct seg one = {s, strlen(s)};
	strip_segs(k, &one, 1);
}

static int render_chatml(const struct chat_tmpl_info *t, const struct chat_msg *m, int n, bool gen,
			 struct sink *k)
{
	if (t->has_default_system && n > 0 && strcmp(m[0].role, "system") != 0) {
		puts_(k, "<|im_start|>system\n");
		puts_(k, t->default_system);
		puts_(k, "<|im_end|>\n");
	}
	for (int i = 0; i < n; i++) {
		puts_(k, "<|im_start|>");
		puts_(k, m[i].role);
		puts_(k, "\n");
		puts_(k, m[i].content);
		puts_(k, "<|im_end|>\n");
	}
	if (gen)
		puts_(k, "<|im_start|>assistant\n");
	return 0;
}

static int render_llama2(const struct chat_tmpl_info *t, const struct chat_msg *m, int n, struct sink *k)
{
	const char *sys = NULL;
	int i0 = 0;
	if (n > 0 && !strcmp(m[0].role, "system")) {
		sys = m[0].content;
		i0 = 1;
	}
	for (int i = i0; i < n; i++) {
		int turn = i - i0;
		bool user = !strcmp(m[i].role, "user");
		if (!user && strcmp(m[i].role, "assistant") != 0)
			return -EINVAL; /* a second system message or an unknown role */
		if (user != (turn % 2 == 0))
			return -EINVAL; /* the template raises: roles must alternate */
		struct seg seg[4];
		int ns = 0;
		if (turn == 0 && sys) {
			seg[ns++] = (struct seg){"<<SYS>>\n", 8};
			seg[ns++] = (struct seg){sys, strlen(sys)};
			seg[ns++] = (struct seg){"\n<</SYS>>\n\n", 11};
		}
		seg[ns++] = (struct seg){m[i].content, strlen(m[i].content)};
		if (user) {
			/* the prompt's first BOS is the tokenizer's */
			puts_(k, turn > 0 && t->llama2_bos_turns ? "<s>[INST] " : "[INST] ");
		} else {
			puts_(k, " ");
		}
		if (t->llama2_strip) {
			strip_segs(k, seg, ns);
		} else {
			for (int s = 0; s < ns; s++)
				put(k, seg[s].s, seg[s].n);
		}
		puts_(k, user ? " [/INST]" : " </s>");
	}
	return 0;
}

static int render_llama3(const struct chat_tmpl_info *t, const struct chat_msg *m, int n, bool gen,
			 struct sink *k)
{
	int i0 = 0;
	if (t->llama3_dated) {
		puts_(k, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ");
		puts_(k, t->date);
		puts_(k, "\n\n");
		if (n > 0 && !strcmp(m[0].role, "system")) {
			trimmed(k, m[0].content);
			i0 = 1;
		}
		puts_(k, "<|eot_id|>");
	}
	for (int i = i0; i < n; i++) {
		puts_(k, "<|start_header_id|>");
		puts_(k, m[i].role);
		puts_(k, "<|end_header_id|>\n\n");
		trimmed(k, m[i].content);
		puts_(k, "<|eot_id|>");
	}
	if (gen)
		puts_(k, "<|start_header_id|>assistant<|end_header_id|>\n\n");
	return 0;
}

int64_t chat_apply(const struct chat_tmpl_info *t, const struct chat_msg *msgs, int n, bool add_generation_prompt,
		   char *out, size_t cap)
{
	if (!t || n < 0 || (n > 0 && !msgs) || (!out && cap))
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		if (!msgs[i].role || !msgs[i].content)
			return -EINVAL;
	}
	struct sink k = {out, cap ? cap - 1 : 0, 0};
	int rc;
	switch (t->kind) {
	case CHAT_TMPL_CHATML:
		rc = render_chatml(t, msgs, n, add_generation_prompt, &k);
		break;
	case CHAT_TMPL_LLAMA2:
		rc = render_llama2(t, msgs, n, &k);
		break;
	case CHAT_TMPL_LLAMA3:
		rc = render_llama3(t, msgs, n, add_generation_prompt, &k);
		break;
	default:
		return -EINVAL;
	}
	if (rc)
		return rc;
	if (cap)
		out[k.n < k.cap ? k.n : k.cap] = '\0';
	return (int64_t)k.n;
}

const char *const *chat_stop_texts(const struct chat_tmpl_info *t)
{
	static const char *const chatml[] = {"<|im_end|>", NULL};
	static const char *const llama2[] = {"</s>", NULL};
	static const char *const llama3[] = {"<|eot_id|>", NULL};
	static const char *const none[] = {NULL};
	switch (t ? t->kind : CHAT_TMPL_NONE) {
	case CHAT_TMPL_CHATML: return chatml;
	case CHAT_TMPL_LLAMA2: return llama2;
	case CHAT_TMPL_LLAMA3: return llama3;
	default: return none;
	}
}
