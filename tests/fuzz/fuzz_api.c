/*
 * fuzz_api: libFuzzer target for engine/api.h: request decoding and the
 * response writers over whatever strings a decode produced.
 *
 * Built by tools/scripts/fuzz.sh (cmake -DENABLE_FUZZING=ON, clang with
 * -fsanitize=fuzzer,address,undefined); by hand from the source root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
 *     tests/fuzz/fuzz_api.c engine/api.c engine/api_parse.c engine/sampler.c alloc/alloc.c \
 *     -lcjson -lmimalloc -lnuma -lm -o build-fuzz/fuzz_api
 *   build-fuzz/fuzz_api -max_total_time=120 build-fuzz/corpus/api tests/fuzz/corpus/api
 *
 * Input: byte 0 picks the parser (0 completions, 1 chat, 2 /tokenize,
 * 3 /detokenize; the value modulo 4); the rest is the body, in a buffer of
 * exactly its size (ASan sees any over-read). Checked for every input: no
 * crash or sanitizer report; a failure is a 400 (or a 500 for memory) with
 * a message; a success respects the documented limits (one prompt form,
 * stop counts and lengths, ranges); every writer, fed the decoded strings
 * (prompt, messages, stop strings, model), produces valid JSON that cJSON
 * parses back and that is valid UTF-8, and strings survive the round trip
 * when they were valid UTF-8 to start with.
 */
#include "engine/api.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUIRE(cond)                                                                                                  \
	do {                                                                                                           \
		if (!(cond)) {                                                                                         \
			fprintf(stderr, "fuzz_api: %s:%d: %s\n", __FILE__, __LINE__, #cond);                           \
			abort();                                                                                       \
		}                                                                                                      \
	} while (0)

/* Every JSON document in b (one, or SSE "data: ...\n\n" events) parses. */
static void check_json(const struct api_buf *b)
{
	REQUIRE(!b->oom && b->p);
	REQUIRE(api_utf8_valid(b->p, b->n) == b->n);
	REQUIRE(strlen(b->p) == b->n); /* no raw NUL */
	const char *p = b->p;
	if (strncmp(p, "data: ", 6) != 0) {
		cJSON *j = cJSON_ParseWithLength(p, b->n);
		REQUIRE(j != NULL);
		cJSON_Delete(j);
		return;
	}
	while (*p) {
		REQUIRE(strncmp(p, "data: ", 6) == 0);
		const char *doc = p + 6, *end = strstr(doc, "\n\n");
		REQUIRE(end != NULL);
		REQUIRE(memchr(doc, '\n', (size_t)(end - doc)) == NULL); /* one line per event */
		if (strncmp(doc, "[DONE]", 6) != 0) {
			cJSON *j = cJSON_ParseWithLength(doc, (size_t)(end - doc));
			REQUIRE(j != NULL);
			cJSON_Delete(j);
		}
		p = end + 2;
	}
}

/* A string written with api_buf_json_str reads back unchanged. */
static void check_string_roundtrip(const char *s, size_t n)
{
	if (api_utf8_valid(s, n) != n)
		return;
	struct api_buf b = {0};
	api_buf_json_str(&b, s, n);
	cJSON *j = cJSON_ParseWithLength(b.p, b.n);
	REQUIRE(j && cJSON_IsString(j));
	/* cJSON strings stop at a NUL; compare that much */
	size_t m = strnlen(s, n);
	REQUIRE(strlen(j->valuestring) == m && memcmp(j->valuestring, s, m) == 0);
	cJSON_Delete(j);
	api_buf_free(&b);
}

static void write_all(const char *model, const char *text, size_t text_len, const char *piece, size_t piece_len,
                      int logprobs)
{
	struct api_buf b = {0};
	struct sampler_logprob top[2] = {{1, -0.5f}, {2, -1e30f}};
	const char *top_piece[2] = {piece, text};
	size_t top_len[2] = {piece_len, text_len};
	struct api_token tok[2] = {
	    {.id = 1,
	     .text = text,
	     .text_len = text_len,
	     .piece = piece,
	     .piece_len = piece_len,
	     .logprob = -0.25f,
	     .top = top,
	     .top_piece = top_piece,
	     .top_piece_len = top_len,
	     .n_top = 2},
	    {.id = 2,
	     .text = piece,
	     .text_len = piece_len,
	     .piece = text,
	     .piece_len = text_len,
	     .logprob = -INFINITY,
	     .text_offset = 3},
	};
	struct api_usage u = {.prompt_tokens = 5, .completion_tokens = 2};
	for (int kind = 0; kind < 2; kind++) {
		struct api_resp_meta m = {
		    .kind = (enum api_kind)kind, .id = text, .created = 1, .model = model, .logprobs = logprobs};
		api_buf_reset(&b);
		api_write_response(&b, &m, text, text_len, tok, 2, API_FINISH_STOP, &u);
		check_json(&b);
		api_buf_reset(&b);
		api_write_stream_chunk(&b, &m, true, &tok[0], API_FINISH_NONE);
		api_write_stream_chunk(&b, &m, false, &tok[1], API_FINISH_NONE);
		api_write_stream_chunk(&b, &m, false, NULL, API_FINISH_LENGTH);
		api_write_stream_usage(&b, &m, &u);
		api_write_stream_done(&b);
		check_json(&b);
	}
	api_buf_reset(&b);
	api_write_models(&b, model, 0, 1);
	check_json(&b);
	api_buf_reset(&b);
	api_write_detokenize(&b, text, text_len);
	check_json(&b);
	api_buf_free(&b);
	check_string_roundtrip(text, text_len);
}

static void check_request(const struct api_request *r)
{
	REQUIRE(!!r->prompt + !!r->prompt_ids + !!r->messages == 1);
	if (r->prompt)
		REQUIRE(r->prompt_len > 0 && strlen(r->prompt) == r->prompt_len &&
		        api_utf8_valid(r->prompt, r->prompt_len) == r->prompt_len);
	if (r->prompt_ids) {
		REQUIRE(r->n_prompt_ids > 0);
		for (int64_t i = 0; i < r->n_prompt_ids; i++)
			REQUIRE(r->prompt_ids[i] >= 0);
	}
	if (r->messages) {
		REQUIRE(r->n_messages > 0);
		for (int i = 0; i < r->n_messages; i++)
			REQUIRE(r->messages[i].role && r->messages[i].content);
	}
	REQUIRE(r->n_stop >= 0 && r->n_stop <= API_MAX_STOP);
	for (int i = 0; i < r->n_stop; i++)
		REQUIRE(r->stop_len[i] >= 1 && r->stop_len[i] <= STOP_MAX_LEN && strlen(r->stop[i]) == r->stop_len[i]);
	REQUIRE(r->n_stop_ids >= 0 && r->n_stop_ids <= API_MAX_STOP_IDS);
	REQUIRE(r->logprobs >= -1 && r->logprobs <= API_MAX_LOGPROBS);
	REQUIRE(r->max_tokens == -1 || (r->max_tokens >= 1 && r->max_tokens <= INT32_MAX));
	REQUIRE(r->n == 1 && !r->echo);
	REQUIRE(r->sp.temperature >= 0.0f && r->sp.temperature <= 2.0f);
	REQUIRE(r->sp.top_p > 0.0f && r->sp.top_p <= 1.0f);
	REQUIRE(!r->include_usage || r->stream);
	const char *field;
	REQUIRE(sampler_params_check(&r->sp, &field) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int sel = data[0] % 4;
	size_t len = size - 1;
	char *body = malloc(len ? len : 1); /* exactly the body: ASan catches over-reads */
	if (!body)
		return 0;
	if (len)
		memcpy(body, data + 1, len);

	struct alloc_arena arena;
	alloc_arena_init(&arena, 0);
	struct api_error err;
	struct api_buf b = {0};
	int rc;
	if (sel < 2) {
		struct api_request r;
		rc = api_parse_request(sel == 0 ? API_COMPLETION : API_CHAT, body, len, &arena, &r, &err);
		if (rc == 0) {
			check_request(&r);
			const char *model = r.model ? r.model : "m";
			if (r.prompt)
				write_all(model, r.prompt, r.prompt_len, r.prompt, r.prompt_len > 3 ? 3 : r.prompt_len,
				          r.logprobs);
			for (int i = 0; i < r.n_messages; i++)
				write_all(model, r.messages[i].content, strlen(r.messages[i].content),
				          r.messages[i].role, strlen(r.messages[i].role), r.logprobs);
			for (int i = 0; i < r.n_stop; i++)
				write_all(model, r.stop[i], r.stop_len[i], r.stop[i], 1, i);
		}
	} else {
		struct api_tokenize_request t;
		rc = sel == 2 ? api_parse_tokenize(body, len, &arena, &t, &err)
		              : api_parse_detokenize(body, len, &arena, &t, &err);
		if (rc == 0) {
			if (t.prompt)
				write_all("m", t.prompt, t.prompt_len, t.prompt, t.prompt_len, 0);
			for (int i = 0; i < t.n_messages; i++)
				write_all("m", t.messages[i].content, strlen(t.messages[i].content), "", 0, -1);
			REQUIRE(sel == 2 || t.n_tokens >= 0);
			api_write_tokenize(&b, t.tokens, t.n_tokens, 4096);
			check_json(&b);
		}
	}
	if (rc != 0) {
		REQUIRE((rc == -EINVAL && err.status == 400) || (rc == -ENOMEM && err.status == 500));
		REQUIRE(err.message[0] != 0);
		api_buf_reset(&b);
		api_write_error(&b, &err);
		check_json(&b);
	}
	api_buf_free(&b);
	alloc_arena_free(&arena);
	free(body);
	return 0;
}
