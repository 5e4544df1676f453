/*
 * api_parse.c: decoding OpenAI / vLLM request bodies into struct api_request
 * and struct api_tokenize_request (api.h).
 *
 * Pipeline: a linear pre-scan of the raw bytes (nesting depth at most
 * API_MAX_DEPTH, no raw control characters, no \u0000 escape), then cJSON
 * builds a tree with an explicit length (the body need not be
 * NUL-terminated, nothing past len is read), one pass over the top-level
 * keys picks out the known fields (unknown ones are ignored, as OpenAI
 * clients send extras; a repeated key: the last wins, as in Python), and the
 * fields are checked in a fixed order so the first error does not depend on
 * key order. Every string kept is copied into the caller's arena; the cJSON
 * tree is freed before returning.
 *
 * Decisions (vLLM / OpenAI behaviour where they agree, OpenAI's ranges where
 * they differ):
 *   - JSON null for an optional field means "not given".
 *   - Strings must be valid UTF-8: a field that is not is refused (400,
 *     naming it) rather than silently repaired; lone surrogates in \u
 *     escapes are invalid JSON (cJSON refuses them). \u0000 is refused
 *     anywhere in the body: strings are NUL-terminated downstream and would
 *     be truncated silently otherwise.
 *   - Numbers: integers may be written 3 or 3.0; integer fields refuse
 *     fractions. Overflowing literals (1e999) are refused as not finite.
 *   - Booleans must be true/false (no 0/1 or "true").
 *   - Sampling defaults are OpenAI's (temperature 1, top_p 1, no top-k,
 *     min-p or penalties), not the sampler's llama.cpp-style ones;
 *     temperature < 1e-5 is greedy (vLLM's _SAMPLING_EPS).
 *   - top_k -1 or 0 is off; above 2^24 (no vocabulary is that large) also off.
 *   - Chat content parts of type "text" are joined with "\n", as vLLM does;
 *     role "developer" (OpenAI's newer name for system) becomes "system".
 *   - Refused with 400 because Locus does not implement them (silently
 *     ignoring them would change the output): echo=true, n or best_of other
 *     than 1, non-empty suffix, response_format other than text, non-empty
 *     tools or functions, tool_choice other than none/auto, non-empty
 *     logit_bias, min_tokens > 0, prompt_logprobs, batched prompts.
 *
 * Threading: no shared state of ours; the error position comes from
 * return_parse_end, never from cJSON_GetErrorPtr. Caveat: cJSON 1.7.15's
 * cJSON_ParseWithLengthOpts still stores to its static `global_error` on
 * every call, so concurrent parses race on a variable nobody here reads
 * (aligned word stores; harmless in practice, but a TSan report if cJSON is
 * ever built instrumented).
 */
#include "engine/api.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#define FAIL(err, param, ...) (api_error_set((err), 400, NULL, (param), __VA_ARGS__), -EINVAL)

/* Fields of every request kind, looked up once per top-level key. */
enum fld {
	F_MODEL,
	F_PROMPT,
	F_MESSAGES,
	F_MAX_TOKENS,
	F_MAX_COMPLETION_TOKENS,
	F_TEMPERATURE,
	F_TOP_P,
	F_TOP_K,
	F_MIN_P,
	F_PRESENCE_PENALTY,
	F_FREQUENCY_PENALTY,
	F_REPETITION_PENALTY,
	F_SEED,
	F_STOP,
	F_STOP_TOKEN_IDS,
	F_IGNORE_EOS,
	F_STREAM,
	F_STREAM_OPTIONS,
	F_LOGPROBS,
	F_TOP_LOGPROBS,
	F_ECHO,
	F_N,
	F_BEST_OF,
	F_SUFFIX,
	F_RESPONSE_FORMAT,
	F_TOOLS,
	F_TOOL_CHOICE,
	F_FUNCTIONS,
	F_LOGIT_BIAS,
	F_MIN_TOKENS,
	F_PROMPT_LOGPROBS,
	F_ADD_SPECIAL_TOKENS,
	F_ADD_GENERATION_PROMPT,
	F_TOKENS,
	F_COUNT
};

static const char *const fld_name[F_COUNT] = {
    [F_MODEL] = "model",
    [F_PROMPT] = "prompt",
    [F_MESSAGES] = "messages",
    [F_MAX_TOKENS] = "max_tokens",
    [F_MAX_COMPLETION_TOKENS] = "max_completion_tokens",
    [F_TEMPERATURE] = "temperature",
    [F_TOP_P] = "top_p",
    [F_TOP_K] = "top_k",
    [F_MIN_P] = "min_p",
    [F_PRESENCE_PENALTY] = "presence_penalty",
    [F_FREQUENCY_PENALTY] = "frequency_penalty",
    [F_REPETITION_PENALTY] = "repetition_penalty",
    [F_SEED] = "seed",
    [F_STOP] = "stop",
    [F_STOP_TOKEN_IDS] = "stop_token_ids",
    [F_IGNORE_EOS] = "ignore_eos",
    [F_STREAM] = "stream",
    [F_STREAM_OPTIONS] = "stream_options",
    [F_LOGPROBS] = "logprobs",
    [F_TOP_LOGPROBS] = "top_logprobs",
    [F_ECHO] = "echo",
    [F_N] = "n",
    [F_BEST_OF] = "best_of",
    [F_SUFFIX] = "suffix",
    [F_RESPONSE_FORMAT] = "response_format",
    [F_TOOLS] = "tools",
    [F_TOOL_CHOICE] = "tool_choice",
    [F_FUNCTIONS] = "functions",
    [F_LOGIT_BIAS] = "logit_bias",
    [F_MIN_TOKENS] = "min_tokens",
    [F_PROMPT_LOGPROBS] = "prompt_logprobs",
    [F_ADD_SPECIAL_TOKENS] = "add_special_tokens",
    [F_ADD_GENERATION_PROMPT] = "add_generation_prompt",
    [F_TOKENS] = "tokens",
};

/* v[f]: the field's value, NULL when absent or null. */
static void pick_fields(const cJSON *root, const cJSON *v[F_COUNT])
{
	for (int f = 0; f < F_COUNT; f++)
		v[f] = NULL;
	for (const cJSON *c = root->child; c; c = c->next) {
		if (!c->string)
			continue;
		for (int f = 0; f < F_COUNT; f++) {
			if (strcmp(c->string, fld_name[f]) == 0) {
				v[f] = cJSON_IsNull(c) ? NULL : c;
				break;
			}
		}
	}
}

/* ---- the raw body ---- */

/* Depth, control characters, \u0000; the rest of the syntax is cJSON's. */
static int prescan(const char *json, size_t len, struct api_error *err)
{
	int depth = 0;
	bool in_str = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)json[i];
		if (in_str) {
			if (c == '"') {
				in_str = false;
			} else if (c == '\\') {
				if (len - i >= 6 && memcmp(json + i + 1, "u0000", 5) == 0)
					return FAIL(err, "",
					            "Invalid request: strings must not contain \\u0000 (byte %zu)", i);
				i++; /* the escaped character (a '"' or '\\' must not end or start anything) */
			} else if (c < 0x20) {
				return FAIL(
				    err, "",
				    "We could not parse the JSON body of your request: control character 0x%02x "
				    "inside a string at byte %zu (escape it)",
				    c, i);
			}
			continue;
		}
		if (c == '"') {
			in_str = true;
		} else if (c == '[' || c == '{') {
			if (++depth > API_MAX_DEPTH)
				return FAIL(err, "", "Invalid request: JSON nested deeper than %d levels",
				            API_MAX_DEPTH);
		} else if (c == ']' || c == '}') {
			depth--;
		} else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
			return FAIL(
			    err, "",
			    "We could not parse the JSON body of your request: unexpected byte 0x%02x at byte %zu", c,
			    i);
		}
	}
	return 0;
}

static int parse_body(const char *json, size_t len, cJSON **out, struct api_error *err)
{
	*out = NULL;
	if (!json || len == 0)
		return FAIL(err, "", "We could not parse the JSON body of your request: the body is empty");
	int rc = prescan(json, len, err);
	if (rc)
		return rc;
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
	if (!root) {
		size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
		return FAIL(err, "", "We could not parse the JSON body of your request: invalid JSON at byte %zu", at);
	}
	size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
	while (at < len && (json[at] == ' ' || json[at] == '\t' || json[at] == '\n' || json[at] == '\r'))
		at++;
	if (at < len) {
		cJSON_Delete(root);
		return FAIL(err, "",
		            "We could not parse the JSON body of your request: unexpected data after the JSON value at "
		            "byte %zu",
		            at);
	}
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return FAIL(err, "", "Invalid request: the body must be a JSON object");
	}
	*out = root;
	return 0;
}

/* ---- typed fields ---- */

static const char *type_name(const cJSON *v)
{
	if (cJSON_IsString(v))
		return "a string";
	if (cJSON_IsNumber(v))
		return "a number";
	if (cJSON_IsBool(v))
		return "a boolean";
	if (cJSON_IsArray(v))
		return "an array";
	if (cJSON_IsObject(v))
		return "an object";
	return "null";
}

static int type_err(struct api_error *err, const char *name, const char *expected, const cJSON *v)
{
	return FAIL(err, name, "Invalid type for '%s': expected %s, but got %s instead.", name, expected, type_name(v));
}

static int get_bool(struct api_error *err, const cJSON *v, const char *name, bool *out)
{
	if (!cJSON_IsBool(v))
		return type_err(err, name, "a boolean", v);
	*out = cJSON_IsTrue(v);
	return 0;
}

/* A finite number in [lo, hi]; lo_open / hi_open exclude the bound. */
static int get_num(struct api_error *err, const cJSON *v, const char *name, double lo, bool lo_open, double hi,
                   bool hi_open, double *out)
{
	if (!cJSON_IsNumber(v))
		return type_err(err, name, "a number", v);
	double d = v->valuedouble;
	if (!isfinite(d))
		return FAIL(err, name, "'%s' must be a finite number", name);
	if (d < lo || (lo_open && d == lo) || d > hi || (hi_open && d == hi))
		return FAIL(err, name, "'%s' must be in %c%g, %g%c, got %g", name, lo_open ? '(' : '[', lo, hi,
		            hi_open ? ')' : ']', d);
	*out = d;
	return 0;
}

/* An integer in [lo, hi] (|bounds| <= 2^53 so the comparisons are exact). */
static int get_int(struct api_error *err, const cJSON *v, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
	if (!cJSON_IsNumber(v))
		return type_err(err, name, "an integer", v);
	double d = v->valuedouble;
	if (!isfinite(d) || d != floor(d))
		return FAIL(err, name, "Invalid type for '%s': expected an integer, but got a decimal number instead.",
		            name);
	if (d < (double)lo || d > (double)hi)
		return FAIL(err, name, "'%s' must be between %lld and %lld, got %.17g", name, (long long)lo,
		            (long long)hi, d);
	*out = (int64_t)d;
	return 0;
}

/* A string copied into the arena (NUL-terminated), valid UTF-8. */
static int get_str(struct alloc_arena *arena, struct api_error *err, const cJSON *v, const char *name, const char **out,
                   size_t *out_len)
{
	if (!cJSON_IsString(v) || !v->valuestring)
		return type_err(err, name, "a string", v);
	size_t n = strlen(v->valuestring);
	if (api_utf8_valid(v->valuestring, n) != n)
		return FAIL(err, name, "'%s' is not valid UTF-8", name);
	char *p = alloc_arena_get(arena, n + 1, 1);
	if (!p) {
		api_error_set(err, 500, NULL, "", "out of memory");
		return -ENOMEM;
	}
	memcpy(p, v->valuestring, n + 1);
	*out = p;
	if (out_len)
		*out_len = n;
	return 0;
}

/* A token id array into the arena; names elements "<name>[i]". */
static int get_ids(struct alloc_arena *arena, struct api_error *err, const cJSON *arr, const char *name, int32_t **out,
                   int64_t *n_out)
{
	int64_t n = 0;
	for (const cJSON *c = arr->child; c; c = c->next)
		n++;
	int32_t *ids = alloc_arena_get(arena, (size_t)(n ? n : 1) * sizeof(int32_t), alignof(int32_t));
	if (!ids) {
		api_error_set(err, 500, NULL, "", "out of memory");
		return -ENOMEM;
	}
	int64_t i = 0;
	for (const cJSON *c = arr->child; c; c = c->next, i++) {
		char pn[64];
		snprintf(pn, sizeof(pn), "%s[%lld]", name, (long long)i);
		int64_t id;
		int rc = get_int(err, c, pn, 0, INT32_MAX, &id);
		if (rc)
			return rc;
		ids[i] = (int32_t)id;
	}
	*out = ids;
	*n_out = n;
	return 0;
}

static bool array_empty(const cJSON *v)
{
	return !v->child;
}

/* ---- messages ---- */

static const char *msg_role(const char *r)
{
	static const char *const roles[] = {"system", "user", "assistant", "tool"};
	for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
		if (strcmp(r, roles[i]) == 0)
			return roles[i];
	if (strcmp(r, "developer") == 0)
		return "system";
	return NULL;
}

/* content: a string, or text parts joined with "\n" (vLLM). */
static int msg_content(struct alloc_arena *arena, struct api_error *err, const cJSON *v, int i, const char **out)
{
	char pn[64];
	snprintf(pn, sizeof(pn), "messages[%d].content", i);
	if (cJSON_IsString(v))
		return get_str(arena, err, v, pn, out, NULL);
	if (!cJSON_IsArray(v))
		return type_err(err, pn, "a string or an array of content parts", v);
	size_t total = 0;
	int j = 0;
	for (const cJSON *p = v->child; p; p = p->next, j++) {
		if (!cJSON_IsObject(p)) {
			snprintf(pn, sizeof(pn), "messages[%d].content[%d]", i, j);
			return type_err(err, pn, "an object", p);
		}
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
		snprintf(pn, sizeof(pn), "messages[%d].content[%d].type", i, j);
		if (!type || !cJSON_IsString(type))
			return type ? type_err(err, pn, "a string", type)
			            : FAIL(err, pn, "Missing required parameter: '%s'.", pn);
		if (strcmp(type->valuestring, "text") != 0)
			return FAIL(err, pn, "Content parts of type '%.40s' are not supported (only 'text')",
			            type->valuestring);
		const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
		snprintf(pn, sizeof(pn), "messages[%d].content[%d].text", i, j);
		if (!text || !cJSON_IsString(text))
			return text ? type_err(err, pn, "a string", text)
			            : FAIL(err, pn, "Missing required parameter: '%s'.", pn);
		size_t n = strlen(text->valuestring);
		if (api_utf8_valid(text->valuestring, n) != n)
			return FAIL(err, pn, "'%s' is not valid UTF-8", pn);
		total += n + (j > 0);
	}
	char *s = alloc_arena_get(arena, total + 1, 1);
	if (!s) {
		api_error_set(err, 500, NULL, "", "out of memory");
		return -ENOMEM;
	}
	size_t at = 0;
	j = 0;
	for (const cJSON *p = v->child; p; p = p->next, j++) {
		const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
		size_t n = strlen(t);
		if (j > 0)
			s[at++] = '\n';
		memcpy(s + at, t, n);
		at += n;
	}
	s[at] = '\0';
	*out = s;
	return 0;
}

static int get_messages(struct alloc_arena *arena, struct api_error *err, const cJSON *v, const struct chat_msg **out,
                        int *n_out)
{
	if (!cJSON_IsArray(v))
		return type_err(err, "messages", "an array", v);
	int n = 0;
	for (const cJSON *c = v->child; c; c = c->next)
		n++;
	if (n == 0)
		return FAIL(err, "messages", "'messages' must not be empty");
	struct chat_msg *msgs = alloc_arena_get(arena, (size_t)n * sizeof(*msgs), alignof(struct chat_msg));
	if (!msgs) {
		api_error_set(err, 500, NULL, "", "out of memory");
		return -ENOMEM;
	}
	int i = 0;
	for (const cJSON *m = v->child; m; m = m->next, i++) {
		char pn[64];
		snprintf(pn, sizeof(pn), "messages[%d]", i);
		if (!cJSON_IsObject(m))
			return type_err(err, pn, "an object", m);
		const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
		snprintf(pn, sizeof(pn), "messages[%d].role", i);
		if (!role || cJSON_IsNull(role))
			return FAIL(err, pn, "Missing required parameter: '%s'.", pn);
		if (!cJSON_IsString(role))
			return type_err(err, pn, "a string", role);
		msgs[i].role = msg_role(role->valuestring);
		if (!msgs[i].role)
			return FAIL(err, pn, "'%s' must be one of 'system', 'user', 'assistant', 'tool', 'developer'",
			            pn);
		const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
		if (!content || cJSON_IsNull(content)) {
			/* OpenAI allows a null content only beside tool calls, which are refused. */
			if (strcmp(msgs[i].role, "assistant") != 0) {
				snprintf(pn, sizeof(pn), "messages[%d].content", i);
				return FAIL(err, pn, "Missing required parameter: '%s'.", pn);
			}
			msgs[i].content = "";
			continue;
		}
		int rc = msg_content(arena, err, content, i, &msgs[i].content);
		if (rc)
			return rc;
	}
	*out = msgs;
	*n_out = n;
	return 0;
}

/* ---- completions prompt ---- */

static int get_prompt(struct alloc_arena *arena, struct api_error *err, const cJSON *v, struct api_request *out)
{
	if (!v)
		return FAIL(err, "prompt", "Missing required parameter: 'prompt'.");
	const char *name = "prompt";
	if (cJSON_IsArray(v)) {
		const cJSON *first = v->child;
		if (!first)
			return FAIL(err, "prompt", "'prompt' must not be empty");
		if (cJSON_IsString(first) || cJSON_IsArray(first)) {
			if (first->next)
				return FAIL(
				    err, "prompt",
				    "Batched prompts (an array of strings or of token arrays) are not supported: "
				    "send one prompt per request");
			v = first; /* a batch of one */
			name = "prompt[0]";
		}
	}
	if (cJSON_IsString(v)) {
		int rc = get_str(arena, err, v, name, &out->prompt, &out->prompt_len);
		if (rc)
			return rc;
		if (out->prompt_len == 0)
			return FAIL(err, name, "'%s' must not be empty", name);
		return 0;
	}
	if (!cJSON_IsArray(v))
		return type_err(err, name, "a string or an array of token ids", v);
	if (array_empty(v))
		return FAIL(err, name, "'%s' must not be empty", name);
	int32_t *ids;
	int rc = get_ids(arena, err, v, name, &ids, &out->n_prompt_ids);
	if (rc)
		return rc;
	out->prompt_ids = ids;
	return 0;
}

/* ---- requests ---- */

static int get_stop(struct alloc_arena *arena, struct api_error *err, const cJSON *v, struct api_request *out)
{
	char pn[64];
	const cJSON *one = cJSON_IsString(v) ? v : NULL;
	if (!one && !cJSON_IsArray(v))
		return type_err(err, "stop", "a string or an array of strings", v);
	int i = 0;
	for (const cJSON *c = one ? one : v->child; c; c = one ? NULL : c->next, i++) {
		if (one)
			snprintf(pn, sizeof(pn), "stop");
		else
			snprintf(pn, sizeof(pn), "stop[%d]", i);
		if (i >= API_MAX_STOP)
			return FAIL(err, "stop", "'stop' may hold at most %d sequences", API_MAX_STOP);
		int rc = get_str(arena, err, c, pn, &out->stop[i], &out->stop_len[i]);
		if (rc)
			return rc;
		if (out->stop_len[i] == 0)
			return FAIL(err, pn, "'%s' must not be empty", pn);
		if (out->stop_len[i] > STOP_MAX_LEN)
			return FAIL(err, pn, "'%s' must be at most %d bytes", pn, STOP_MAX_LEN);
		out->n_stop = i + 1;
	}
	return 0;
}

static int get_float_field(struct api_error *err, const cJSON *v, const char *name, double lo, bool lo_open, double hi,
                           bool hi_open, float *out)
{
	if (!v)
		return 0;
	double d = 0;
	int rc = get_num(err, v, name, lo, lo_open, hi, hi_open, &d);
	if (!rc)
		*out = (float)d;
	return rc;
}

/* Fields shared by both kinds, in a fixed order. */
static int decode_common(struct alloc_arena *arena, struct api_error *err, const cJSON *v[F_COUNT],
                         struct api_request *out)
{
	int rc;
	int64_t k;
	if (v[F_MODEL] && (rc = get_str(arena, err, v[F_MODEL], "model", &out->model, NULL)))
		return rc;

	struct sampler_params *sp = &out->sp;
	sampler_params_default(sp);
	sp->temperature = 1.0f;
	sp->top_k = 0;
	sp->top_p = 1.0f;
	sp->min_p = 0.0f;
	sp->repeat_penalty = 1.0f;
	sp->freq_penalty = 0.0f;
	sp->presence_penalty = 0.0f;
	sp->seed = 0;
	if ((rc = get_float_field(err, v[F_TEMPERATURE], "temperature", 0, false, 2, false, &sp->temperature)))
		return rc;
	if (sp->temperature < 1e-5f)
		sp->temperature = 0.0f;
	if ((rc = get_float_field(err, v[F_TOP_P], "top_p", 0, true, 1, false, &sp->top_p)))
		return rc;
	if (v[F_TOP_K]) {
		if ((rc = get_int(err, v[F_TOP_K], "top_k", -1, INT32_MAX, &k)))
			return rc;
		sp->top_k = k <= 0 || k > (1 << 24) ? 0 : (int32_t)k;
	}
	if ((rc = get_float_field(err, v[F_MIN_P], "min_p", 0, false, 1, false, &sp->min_p)))
		return rc;
	if ((rc = get_float_field(err, v[F_PRESENCE_PENALTY], "presence_penalty", -2, false, 2, false,
	                          &sp->presence_penalty)))
		return rc;
	if ((rc = get_float_field(err, v[F_FREQUENCY_PENALTY], "frequency_penalty", -2, false, 2, false,
	                          &sp->freq_penalty)))
		return rc;
	if ((rc = get_float_field(err, v[F_REPETITION_PENALTY], "repetition_penalty", 0, true, 100, false,
	                          &sp->repeat_penalty)))
		return rc;
	if (v[F_SEED]) {
		const cJSON *s = v[F_SEED];
		if (!cJSON_IsNumber(s))
			return type_err(err, "seed", "an integer", s);
		double d = s->valuedouble;
		if (!isfinite(d) || d != floor(d))
			return FAIL(err, "seed",
			            "Invalid type for 'seed': expected an integer, but got a decimal number instead.");
		if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
			return FAIL(err, "seed", "'seed' must fit in a signed 64-bit integer");
		sp->seed = (uint64_t)(int64_t)d;
		out->seed_given = true;
	}
	const char *field;
	if (sampler_params_check(sp, &field)) /* a backstop: the ranges above are narrower */
		return FAIL(err, field, "'%s' is out of range", field);

	if (v[F_STOP] && (rc = get_stop(arena, err, v[F_STOP], out)))
		return rc;
	if (v[F_STOP_TOKEN_IDS]) {
		const cJSON *a = v[F_STOP_TOKEN_IDS];
		if (!cJSON_IsArray(a))
			return type_err(err, "stop_token_ids", "an array of integers", a);
		int i = 0;
		for (const cJSON *c = a->child; c; c = c->next, i++) {
			if (i >= API_MAX_STOP_IDS)
				return FAIL(err, "stop_token_ids", "'stop_token_ids' may hold at most %d ids",
				            API_MAX_STOP_IDS);
			char pn[64];
			snprintf(pn, sizeof(pn), "stop_token_ids[%d]", i);
			if ((rc = get_int(err, c, pn, 0, INT32_MAX, &k)))
				return rc;
			out->stop_ids[i] = (int32_t)k;
			out->n_stop_ids = i + 1;
		}
	}
	if (v[F_IGNORE_EOS] && (rc = get_bool(err, v[F_IGNORE_EOS], "ignore_eos", &out->ignore_eos)))
		return rc;
	if (v[F_STREAM] && (rc = get_bool(err, v[F_STREAM], "stream", &out->stream)))
		return rc;
	if (v[F_STREAM_OPTIONS]) {
		const cJSON *so = v[F_STREAM_OPTIONS];
		if (!cJSON_IsObject(so))
			return type_err(err, "stream_options", "an object", so);
		if (!out->stream)
			return FAIL(err, "stream_options", "'stream_options' is only allowed when 'stream' is true");
		const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
		if (iu && !cJSON_IsNull(iu) &&
		    (rc = get_bool(err, iu, "stream_options.include_usage", &out->include_usage)))
			return rc;
	}
	if (v[F_ECHO]) {
		bool echo = false;
		if ((rc = get_bool(err, v[F_ECHO], "echo", &echo)))
			return rc;
		if (echo)
			return FAIL(err, "echo", "'echo' is not supported");
	}
	out->n = 1;
	if (v[F_N]) {
		if ((rc = get_int(err, v[F_N], "n", 1, 128, &k)))
			return rc;
		if (k != 1)
			return FAIL(err, "n", "Only n=1 is supported");
	}
	if (v[F_BEST_OF]) {
		if ((rc = get_int(err, v[F_BEST_OF], "best_of", 1, 128, &k)))
			return rc;
		if (k != 1)
			return FAIL(err, "best_of", "Only best_of=1 is supported");
	}
	if (v[F_LOGIT_BIAS]) {
		if (!cJSON_IsObject(v[F_LOGIT_BIAS]))
			return type_err(err, "logit_bias", "an object", v[F_LOGIT_BIAS]);
		if (v[F_LOGIT_BIAS]->child)
			return FAIL(err, "logit_bias", "'logit_bias' is not supported");
	}
	if (v[F_MIN_TOKENS]) {
		if ((rc = get_int(err, v[F_MIN_TOKENS], "min_tokens", 0, INT32_MAX, &k)))
			return rc;
		if (k != 0)
			return FAIL(err, "min_tokens", "'min_tokens' is not supported");
	}
	if (v[F_PROMPT_LOGPROBS])
		return FAIL(err, "prompt_logprobs", "'prompt_logprobs' is not supported");
	return 0;
}

static int decode_completion(struct alloc_arena *arena, struct api_error *err, const cJSON *v[F_COUNT],
                             struct api_request *out)
{
	int rc;
	int64_t k;
	if ((rc = get_prompt(arena, err, v[F_PROMPT], out)))
		return rc;
	out->max_tokens = 16; /* OpenAI's default for completions */
	if (v[F_MAX_TOKENS]) {
		if ((rc = get_int(err, v[F_MAX_TOKENS], "max_tokens", 1, INT32_MAX, &k)))
			return rc;
		out->max_tokens = k;
	}
	if ((rc = decode_common(arena, err, v, out)))
		return rc;
	if (v[F_LOGPROBS]) {
		if ((rc = get_int(err, v[F_LOGPROBS], "logprobs", 0, API_MAX_LOGPROBS, &k)))
			return rc;
		out->logprobs = (int)k;
	}
	if (v[F_SUFFIX]) {
		if (!cJSON_IsString(v[F_SUFFIX]))
			return type_err(err, "suffix", "a string", v[F_SUFFIX]);
		if (v[F_SUFFIX]->valuestring[0])
			return FAIL(err, "suffix", "'suffix' is not supported");
	}
	return 0;
}

static int decode_chat(struct alloc_arena *arena, struct api_error *err, const cJSON *v[F_COUNT],
                       struct api_request *out)
{
	int rc;
	int64_t k;
	if (!v[F_MESSAGES])
		return FAIL(err, "messages", "Missing required parameter: 'messages'.");
	if ((rc = get_messages(arena, err, v[F_MESSAGES], &out->messages, &out->n_messages)))
		return rc;
	/* max_completion_tokens supersedes the deprecated max_tokens (as vLLM). */
	int mf = v[F_MAX_COMPLETION_TOKENS] ? F_MAX_COMPLETION_TOKENS : F_MAX_TOKENS;
	if (v[mf]) {
		if ((rc = get_int(err, v[mf], fld_name[mf], 1, INT32_MAX, &k)))
			return rc;
		out->max_tokens = k;
	}
	if ((rc = decode_common(arena, err, v, out)))
		return rc;
	bool lp = false;
	if (v[F_LOGPROBS] && (rc = get_bool(err, v[F_LOGPROBS], "logprobs", &lp)))
		return rc;
	if (lp)
		out->logprobs = 0;
	if (v[F_TOP_LOGPROBS]) {
		if ((rc = get_int(err, v[F_TOP_LOGPROBS], "top_logprobs", 0, API_MAX_LOGPROBS, &k)))
			return rc;
		if (!lp)
			return FAIL(err, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
		out->logprobs = (int)k;
	}
	if (v[F_RESPONSE_FORMAT]) {
		const cJSON *rf = v[F_RESPONSE_FORMAT];
		if (!cJSON_IsObject(rf))
			return type_err(err, "response_format", "an object", rf);
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
		if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0)
			return FAIL(err, "response_format", "Only response_format {\"type\": \"text\"} is supported");
	}
	if (v[F_TOOLS]) {
		if (!cJSON_IsArray(v[F_TOOLS]))
			return type_err(err, "tools", "an array", v[F_TOOLS]);
		if (!array_empty(v[F_TOOLS]))
			return FAIL(err, "tools", "'tools' are not supported");
	}
	if (v[F_FUNCTIONS]) {
		if (!cJSON_IsArray(v[F_FUNCTIONS]))
			return type_err(err, "functions", "an array", v[F_FUNCTIONS]);
		if (!array_empty(v[F_FUNCTIONS]))
			return FAIL(err, "functions", "'functions' are not supported");
	}
	if (v[F_TOOL_CHOICE]) {
		const cJSON *tc = v[F_TOOL_CHOICE];
		if (!cJSON_IsString(tc) ||
		    (strcmp(tc->valuestring, "none") != 0 && strcmp(tc->valuestring, "auto") != 0))
			return FAIL(err, "tool_choice",
			            "'tool_choice' must be \"none\" or \"auto\" (tools are not supported)");
	}
	return 0;
}

int api_parse_request(enum api_kind kind, const char *json, size_t len, struct alloc_arena *arena,
                      struct api_request *out, struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	memset(err, 0, sizeof(*err));
	out->kind = kind;
	out->max_tokens = -1;
	out->logprobs = -1;
	out->n = 1;
	if (kind != API_COMPLETION && kind != API_CHAT) {
		api_error_set(err, 500, NULL, "", "unknown request kind");
		return -EINVAL;
	}
	cJSON *root;
	int rc = parse_body(json, len, &root, err);
	if (rc)
		return rc;
	const cJSON *v[F_COUNT];
	pick_fields(root, v);
	rc = kind == API_CHAT ? decode_chat(arena, err, v, out) : decode_completion(arena, err, v, out);
	cJSON_Delete(root);
	return rc;
}

/* ---- /tokenize, /detokenize ---- */

int api_parse_tokenize(const char *json, size_t len, struct alloc_arena *arena, struct api_tokenize_request *out,
                       struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	memset(err, 0, sizeof(*err));
	cJSON *root;
	int rc = parse_body(json, len, &root, err);
	if (rc)
		return rc;
	const cJSON *v[F_COUNT];
	pick_fields(root, v);
	if (v[F_PROMPT] && v[F_MESSAGES]) {
		rc = FAIL(err, "messages", "Give either 'prompt' or 'messages', not both");
	} else if (v[F_PROMPT]) {
		out->add_special = true;
		rc = get_str(arena, err, v[F_PROMPT], "prompt", &out->prompt, &out->prompt_len);
	} else if (v[F_MESSAGES]) {
		out->add_generation_prompt = true;
		rc = get_messages(arena, err, v[F_MESSAGES], &out->messages, &out->n_messages);
		if (!rc && v[F_ADD_GENERATION_PROMPT])
			rc = get_bool(err, v[F_ADD_GENERATION_PROMPT], "add_generation_prompt",
			              &out->add_generation_prompt);
	} else {
		rc = FAIL(err, "prompt", "Missing required parameter: 'prompt' (or 'messages').");
	}
	if (!rc && v[F_ADD_SPECIAL_TOKENS])
		rc = get_bool(err, v[F_ADD_SPECIAL_TOKENS], "add_special_tokens", &out->add_special);
	cJSON_Delete(root);
	return rc;
}

int api_parse_detokenize(const char *json, size_t len, struct alloc_arena *arena, struct api_tokenize_request *out,
                         struct api_error *err)
{
	memset(out, 0, sizeof(*out));
	memset(err, 0, sizeof(*err));
	cJSON *root;
	int rc = parse_body(json, len, &root, err);
	if (rc)
		return rc;
	const cJSON *v[F_COUNT];
	pick_fields(root, v);
	if (!v[F_TOKENS]) {
		rc = FAIL(err, "tokens", "Missing required parameter: 'tokens'.");
	} else if (!cJSON_IsArray(v[F_TOKENS])) {
		rc = type_err(err, "tokens", "an array of integers", v[F_TOKENS]);
	} else {
		int32_t *ids;
		rc = get_ids(arena, err, v[F_TOKENS], "tokens", &ids, &out->n_tokens);
		if (!rc)
			out->tokens = ids;
	}
	cJSON_Delete(root);
	return rc;
}
