/*
 * api.h: the OpenAI-compatible API's data: requests decoded from JSON into
 * struct api_request (validated, every bad field named), and the JSON /
 * server-sent-event texts of responses, errors and the other endpoints.
 * Pure functions: no I/O, no threads; memory for a request's strings comes
 * from the caller's arena and lives as long as the request.
 *
 * Endpoints: POST /v1/completions, POST /v1/chat/completions,
 * GET /v1/models, POST /tokenize, POST /detokenize (vLLM's shapes),
 * GET /health, GET /metrics (engine/metrics.h).
 */
#ifndef LOCUS_ENGINE_API_H
#define LOCUS_ENGINE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc/alloc.h"
#include "engine/chat.h"
#include "engine/sampler.h"
#include "engine/stop.h"

enum api_kind { API_COMPLETION = 0, API_CHAT = 1 };

#define API_MAX_STOP 4         /* stop strings, as OpenAI */
#define API_MAX_STOP_IDS 16    /* stop_token_ids (vLLM extension) */
#define API_MAX_LOGPROBS 20
#define API_MAX_DEPTH 64       /* JSON nesting (objects and arrays) a request may use */

struct api_error {
	int status;          /* 400, 401, 404, 405, 413, 429, 500, 503 */
	const char *type;    /* "invalid_request_error", "authentication_error", ... */
	const char *code;    /* NULL or a short code ("context_length_exceeded") */
	char param[64];      /* the offending field ("temperature", "messages[2].content"), or "" */
	char message[256];
};

struct api_request {
	enum api_kind kind;
	const char *model;          /* as sent (NULL when absent) */
	/* Prompt: exactly one of text, token ids (completions) or messages (chat). */
	const char *prompt;         /* completions, text */
	size_t prompt_len;
	const int32_t *prompt_ids;  /* completions, token ids */
	int64_t n_prompt_ids;
	const struct chat_msg *messages; /* chat */
	int n_messages;
	int64_t max_tokens;         /* -1: not given (the engine fills the rest of the context) */
	struct sampler_params sp;   /* temperature, top_p, top_k, min_p, penalties, seed */
	bool seed_given;
	const char *stop[API_MAX_STOP];
	size_t stop_len[API_MAX_STOP];
	int n_stop;
	int32_t stop_ids[API_MAX_STOP_IDS];
	int n_stop_ids;
	bool ignore_eos;            /* vLLM extension */
	bool stream;
	bool include_usage;         /* stream_options.include_usage */
	int logprobs;               /* -1: off; completions: top-n (0..20); chat: top_logprobs when logprobs=true */
	bool echo;                  /* completions: refused with 400 when true (not supported) */
	int n;                      /* choices; only 1 is supported (others: 400 naming "n") */
};

/* Decodes a request body. 0, or -EINVAL with *err filled (status 400 and
 * the field), or -ENOMEM (status 500) when the arena or the JSON parser runs
 * out of memory. Strings are copied into arena, NUL-terminated; nothing else
 * outlives the call. Strings must be valid UTF-8 (a field that is not is
 * refused, naming it) and must not contain U+0000. On error *out is
 * unspecified. Field by field semantics: engine/api_parse.c. */
int api_parse_request(enum api_kind kind, const char *json, size_t len, struct alloc_arena *arena,
		      struct api_request *out, struct api_error *err);

/* /tokenize: {"prompt": "..."} or {"messages": [...]} with "add_special_tokens"
 * (default: true for a prompt, false for messages, as vLLM) and, for
 * messages, "add_generation_prompt" (default true);
 * /detokenize: {"tokens": [...]}. */
struct api_tokenize_request {
	const char *prompt;
	size_t prompt_len;
	const struct chat_msg *messages;
	int n_messages;
	bool add_special;
	bool add_generation_prompt; /* messages only */
	const int32_t *tokens;
	int64_t n_tokens;
};
int api_parse_tokenize(const char *json, size_t len, struct alloc_arena *arena, struct api_tokenize_request *out,
		       struct api_error *err);
int api_parse_detokenize(const char *json, size_t len, struct alloc_arena *arena, struct api_tokenize_request *out,
			 struct api_error *err);

/* ---- output ---- */

/* A growable text buffer from an arena-free heap (alloc_mem); reset between uses.
 * A zeroed struct is an empty buffer. p is kept NUL-terminated once anything
 * was written. After an allocation failure oom is set and further writes are
 * dropped until api_buf_reset. */
struct api_buf {
	char *p;
	size_t n, cap;
	bool oom;
};
void api_buf_free(struct api_buf *b);
void api_buf_reset(struct api_buf *b);
void api_buf_put(struct api_buf *b, const char *s, size_t n);
void api_buf_printf(struct api_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes s[0..n) as a quoted JSON string: any bytes (invalid UTF-8 becomes
 * U+FFFD per maximal subpart, as Python's errors="replace"; control
 * characters are escaped, \uXXXX where there is no short form). */
void api_buf_json_str(struct api_buf *b, const char *s, size_t n);
/* The length of the longest prefix of s[0..n) made of whole, well-formed
 * UTF-8 sequences (no overlongs, surrogates or code points past U+10FFFF);
 * n when all of it is valid. */
size_t api_utf8_valid(const char *s, size_t n);
/* Characters (code points) of s[0..n) as a client sees it: each ill-formed
 * subpart counts as the one U+FFFD that replaces it. For text_offset. */
int64_t api_utf8_chars(const char *s, size_t n);

/* One generated token as reported to the client. */
struct api_token {
	int32_t id;
	const char *text;  /* its text as emitted to the client (complete UTF-8, may be empty) */
	size_t text_len;
	const char *piece; /* the token's own bytes (for logprobs "token"), may be partial UTF-8 */
	size_t piece_len;
	float logprob;
	const struct sampler_logprob *top; /* n_top entries, with their pieces below */
	const char *const *top_piece;
	const size_t *top_piece_len;
	int n_top;
	int64_t text_offset; /* streamed completions with logprobs: characters of completion
				text before this token (api_utf8_chars of the text sent so
				far); api_write_response computes it itself */
};

enum api_finish { API_FINISH_NONE = 0, API_FINISH_STOP, API_FINISH_LENGTH, API_FINISH_ABORT };
/* "stop", "length", "abort" (as vLLM), NULL for API_FINISH_NONE (JSON null). */
const char *api_finish_name(enum api_finish f);

struct api_usage {
	int64_t prompt_tokens, completion_tokens;
};

/* Identity of a response: id ("cmpl-..." / "chatcmpl-..."), created (unix s), model name. */
struct api_resp_meta {
	enum api_kind kind;
	const char *id;
	int64_t created;
	const char *model;
	int logprobs; /* -1: off */
};

/* Whole (non-streamed) response: text of all tokens, logprobs if asked. */
void api_write_response(struct api_buf *b, const struct api_resp_meta *m, const char *text, size_t text_len,
			const struct api_token *toks, int64_t n_toks, enum api_finish finish,
			const struct api_usage *usage);
/* Streamed: one "data: {...}\n\n" event per call. first: chat sends the
 * assistant role delta. A final event carries finish_reason; usage (when
 * include_usage) goes in its own event with empty choices, then "data: [DONE]\n\n". */
void api_write_stream_chunk(struct api_buf *b, const struct api_resp_meta *m, bool first, const struct api_token *tok,
			    enum api_finish finish);
void api_write_stream_usage(struct api_buf *b, const struct api_resp_meta *m, const struct api_usage *usage);
void api_write_stream_done(struct api_buf *b);

void api_write_error(struct api_buf *b, const struct api_error *e);
/* Fills e (code = NULL; param NULL or "" = none; type NULL = the usual type
 * for the status: invalid_request_error, authentication_error,
 * permission_error, not_found_error, rate_limit_error, server_error);
 * returns e for chaining. */
struct api_error *api_error_set(struct api_error *e, int status, const char *type, const char *param,
				const char *fmt, ...) __attribute__((format(printf, 5, 6)));

void api_write_models(struct api_buf *b, const char *model_name, int64_t created, int64_t max_model_len);
void api_write_tokenize(struct api_buf *b, const int32_t *ids, int64_t n, int64_t max_model_len);
void api_write_detokenize(struct api_buf *b, const char *text, size_t len);

#endif
