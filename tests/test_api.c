/*
 * test_api.c: request decoding and response writing of engine/api.h.
 *
 * Decoding is table-driven: valid bodies decode to an expected summary (a
 * text dump of the fields that differ from the defaults), hostile ones give
 * 400 naming the expected field. Every body is parsed from right before a
 * PROT_NONE guard page, so a read past its end crashes; so is every prefix of
 * a few real requests. Writers are compared byte for byte with the expected
 * JSON and re-parsed with cJSON.
 *
 * LOCUS_API_DUMP=dir writes the writers' outputs there (one JSON document
 * per file) for checking against other parsers (e.g. the openai package).
 */
#include "engine/api.h"

#include "tests/check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- guard page ---- */

static char *g_guard_base;
static size_t g_guard_bytes, g_page;

/* Copies s[0..n) so that it ends right before a PROT_NONE page. */
static const char *guarded(const char *s, size_t n)
{
	size_t data_pages = (n + g_page - 1) / g_page + 1;
	size_t bytes = (data_pages + 1) * g_page;
	if (bytes > g_guard_bytes) {
		if (g_guard_base)
			munmap(g_guard_base, g_guard_bytes);
		g_guard_base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (g_guard_base == MAP_FAILED) {
			perror("mmap");
			exit(1);
		}
		g_guard_bytes = bytes;
	}
	char *guard = g_guard_base + g_guard_bytes - g_page;
	mprotect(g_guard_base, g_guard_bytes - g_page, PROT_READ | PROT_WRITE);
	mprotect(guard, g_page, PROT_NONE);
	char *p = guard - n;
	if (n)
		memcpy(p, s, n);
	return p;
}

/* ---- request summaries ---- */

struct sbuf {
	char s[4096];
	size_t n;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(b->s + b->n, sizeof(b->s) - b->n, fmt, ap);
	va_end(ap);
	if (k > 0)
		b->n = b->n + (size_t)k < sizeof(b->s) ? b->n + (size_t)k : sizeof(b->s) - 1;
}

/* "..." with \n, \", \\ and \xHH for other bytes outside printable ASCII. */
static void sb_quote(struct sbuf *b, const char *s, size_t n)
{
	sb_printf(b, "\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n')
			sb_printf(b, "\\n");
		else if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			sb_printf(b, "\\x%02x", c);
		else
			sb_printf(b, "%c", c);
	}
	sb_printf(b, "\"");
}

/* The fields that differ from the defaults, in a fixed order. */
static void dump_request(const struct api_request *r, struct sbuf *b)
{
	b->n = 0;
	b->s[0] = 0;
	if (r->model) {
		sb_printf(b, " model=");
		sb_quote(b, r->model, strlen(r->model));
	}
	if (r->prompt) {
		sb_printf(b, " prompt=");
		sb_quote(b, r->prompt, r->prompt_len);
	}
	if (r->prompt_ids) {
		sb_printf(b, " ids=[");
		for (int64_t i = 0; i < r->n_prompt_ids; i++)
			sb_printf(b, i ? ",%d" : "%d", r->prompt_ids[i]);
		sb_printf(b, "]");
	}
	if (r->messages) {
		sb_printf(b, " msgs=[");
		for (int i = 0; i < r->n_messages; i++) {
			sb_printf(b, i ? ",%s:" : "%s:", r->messages[i].role);
			sb_quote(b, r->messages[i].content, strlen(r->messages[i].content));
		}
		sb_printf(b, "]");
	}
	if (r->max_tokens != (r->kind == API_COMPLETION ? 16 : -1))
		sb_printf(b, " max_tokens=%lld", (long long)r->max_tokens);
	const struct sampler_params *p = &r->sp;
	if (p->temperature != 1.0f)
		sb_printf(b, " temperature=%g", p->temperature);
	if (p->top_p != 1.0f)
		sb_printf(b, " top_p=%g", p->top_p);
	if (p->top_k != 0)
		sb_printf(b, " top_k=%d", p->top_k);
	if (p->min_p != 0.0f)
		sb_printf(b, " min_p=%g", p->min_p);
	if (p->repeat_penalty != 1.0f)
		sb_printf(b, " repetition_penalty=%g", p->repeat_penalty);
	if (p->freq_penalty != 0.0f)
		sb_printf(b, " frequency_penalty=%g", p->freq_penalty);
	if (p->presence_penalty != 0.0f)
		sb_printf(b, " presence_penalty=%g", p->presence_penalty);
	if (r->seed_given)
		sb_printf(b, " seed=%llu", (unsigned long long)p->seed);
	else if (p->seed != 0)
		sb_printf(b, " seed-not-given-but=%llu", (unsigned long long)p->seed);
	if (r->n_stop) {
		sb_printf(b, " stop=[");
		for (int i = 0; i < r->n_stop; i++) {
			if (i)
				sb_printf(b, ",");
			sb_quote(b, r->stop[i], r->stop_len[i]);
		}
		sb_printf(b, "]");
	}
	if (r->n_stop_ids) {
		sb_printf(b, " stop_ids=[");
		for (int i = 0; i < r->n_stop_ids; i++)
			sb_printf(b, i ? ",%d" : "%d", r->stop_ids[i]);
		sb_printf(b, "]");
	}
	if (r->ignore_eos)
		sb_printf(b, " ignore_eos");
	if (r->stream)
		sb_printf(b, " stream");
	if (r->include_usage)
		sb_printf(b, " include_usage");
	if (r->logprobs != -1)
		sb_printf(b, " logprobs=%d", r->logprobs);
	if (r->echo)
		sb_printf(b, " echo");
	if (r->n != 1)
		sb_printf(b, " n=%d", r->n);
	/* the penalty window is the sampler's default, never set by a request */
	struct sampler_params d;
	sampler_params_default(&d);
	if (p->penalty_last_n != d.penalty_last_n)
		sb_printf(b, " penalty_last_n=%d", p->penalty_last_n);
}

struct valid_case {
	enum api_kind kind;
	const char *json;
	const char *want; /* dump_request() text, without the leading space */
};

#define C API_COMPLETION
#define H API_CHAT

static const struct valid_case valid_cases[] = {
    /* completions */
    {C, "{\"prompt\":\"hi\"}", "prompt=\"hi\""},
    {C, "{\"model\":\"m\",\"prompt\":\"Hello\",\"max_tokens\":5,\"temperature\":0}",
     "model=\"m\" prompt=\"Hello\" max_tokens=5 temperature=0"},
    {C, " \r\n\t{ \"prompt\" : \"a\" } \n", "prompt=\"a\""},
    {C, "{\"prompt\":[1,2,3]}", "ids=[1,2,3]"},
    {C, "{\"prompt\":[0, 2147483647]}", "ids=[0,2147483647]"},
    {C, "{\"prompt\":[5.0]}", "ids=[5]"},
    {C, "{\"prompt\":[\"one\"]}", "prompt=\"one\""},
    {C, "{\"prompt\":[[7,8]]}", "ids=[7,8]"},
    {C, "{\"prompt\":\"x\",\"stop\":\"\\n\"}", "prompt=\"x\" stop=[\"\\n\"]"},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",\"bb\",\"ccc\",\"dddd\"]}",
     "prompt=\"x\" stop=[\"a\",\"bb\",\"ccc\",\"dddd\"]"},
    {C, "{\"prompt\":\"x\",\"stop\":[]}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"stop\":null,\"max_tokens\":null,\"temperature\":null,\"seed\":null}", "prompt=\"x\""},
    {C,
     "{\"model\":\"tiny\",\"prompt\":\"The\",\"max_tokens\":100,\"temperature\":0.7,\"top_p\":0.9,"
     "\"top_k\":40,\"min_p\":0.05,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
     "\"repetition_penalty\":1.1,\"seed\":42,\"stop\":[\"\\n\\n\"],\"stop_token_ids\":[2,32000],"
     "\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":5,"
     "\"echo\":false,\"n\":1,\"best_of\":1,\"user\":\"u\",\"suffix\":null}",
     "model=\"tiny\" prompt=\"The\" max_tokens=100 temperature=0.7 top_p=0.9 top_k=40 min_p=0.05 "
     "repetition_penalty=1.1 frequency_penalty=-0.5 presence_penalty=0.5 seed=42 stop=[\"\\n\\n\"] "
     "stop_ids=[2,32000] ignore_eos stream include_usage logprobs=5"},
    {C, "{\"prompt\":\"x\",\"top_k\":-1}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"top_k\":0}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"top_k\":100000000}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"temperature\":2}", "prompt=\"x\" temperature=2"},
    {C, "{\"prompt\":\"x\",\"temperature\":1e-9}", "prompt=\"x\" temperature=0"},
    {C, "{\"prompt\":\"x\",\"seed\":-1}", "prompt=\"x\" seed=18446744073709551615"},
    {C, "{\"prompt\":\"x\",\"seed\":0}", "prompt=\"x\" seed=0"},
    {C, "{\"prompt\":\"x\",\"logprobs\":0}", "prompt=\"x\" logprobs=0"},
    {C, "{\"prompt\":\"x\",\"logprobs\":20,\"max_tokens\":2147483647}",
     "prompt=\"x\" max_tokens=2147483647 logprobs=20"},
    {C, "{\"prompt\":\"x\",\"suffix\":\"\"}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"stream\":false}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{}}", "prompt=\"x\" stream"},
    {C, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":false}}", "prompt=\"x\" stream"},
    {C, "{\"prompt\":\"x\",\"unknown\":{\"a\":[1,2,{\"b\":null}]},\"metadata\":{}}", "prompt=\"x\""},
    {C, "{\"prompt\":\"first\",\"prompt\":\"last\"}", "prompt=\"last\""},
    {C, "{\"PROMPT\":\"ignored\",\"prompt\":\"x\"}", "prompt=\"x\""},
    {C, "{\"prompt\":\"tab\\t quote\\\" bs\\\\ nl\\n u\\u00e9 \\ud83d\\ude00 /\\/\"}",
     "prompt=\"tab\\x09 quote\\\" bs\\\\ nl\\n u\\xc3\\xa9 \\xf0\\x9f\\x98\\x80 //\""},
    {C, "{\"prompt\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
     "prompt=\"\\xc3\\xa9\\xe2\\x82\\xac\\xf0\\x9f\\x98\\x80\""},
    {C, "\xef\xbb\xbf{\"prompt\":\"bom\"}", "prompt=\"bom\""},
    {C, "{\"prompt\":\"x\",\"logit_bias\":{},\"min_tokens\":0,\"prompt_logprobs\":null}", "prompt=\"x\""},
    {C, "{\"prompt\":\"x\",\"stop_token_ids\":[]}", "prompt=\"x\""},
    /* chat */
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", "msgs=[user:\"hi\"]"},
    {H,
     "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
     "{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello!\"},"
     "{\"role\":\"user\",\"content\":\"Bye\",\"name\":\"bob\"}],\"max_tokens\":64}",
     "model=\"m\" msgs=[system:\"Be brief.\",user:\"Hi\",assistant:\"Hello!\",user:\"Bye\"] max_tokens=64"},
    {H,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
     "{\"type\":\"text\",\"text\":\"b\"}]}]}",
     "msgs=[user:\"a\\nb\"]"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":[]}]}", "msgs=[user:\"\"]"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}", "msgs=[user:\"\"]"},
    {H, "{\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},{\"role\":\"user\",\"content\":\"u\"}]}",
     "msgs=[system:\"d\",user:\"u\"]"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":null}]}",
     "msgs=[user:\"q\",assistant:\"\"]"},
    {H, "{\"messages\":[{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"}]}", "msgs=[tool:\"42\"]"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":9}",
     "msgs=[user:\"x\"] max_tokens=9"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":3,\"max_completion_tokens\":9}",
     "msgs=[user:\"x\"] max_tokens=9"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true}", "msgs=[user:\"x\"] logprobs=0"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":3}",
     "msgs=[user:\"x\"] logprobs=3"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":false}", "msgs=[user:\"x\"]"},
    {H,
     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"text\"},"
     "\"tools\":[],\"tool_choice\":\"none\",\"n\":1,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
     "\"stop\":[\"END\"],\"seed\":7,\"temperature\":0.5,\"parallel_tool_calls\":false,\"user\":\"u\"}",
     "msgs=[user:\"x\"] temperature=0.5 seed=7 stop=[\"END\"] stream include_usage"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"auto\",\"functions\":[]}",
     "msgs=[user:\"x\"]"},
};

struct bad_case {
	enum api_kind kind;
	const char *json;
	const char *param; /* "" for whole-body errors */
};

static const struct bad_case bad_cases[] = {
    /* not JSON, or not an object */
    {C, "", ""},
    {C, "   ", ""},
    {C, "{", ""},
    {C, "{\"prompt\":\"x\"", ""},
    {C, "{\"prompt\":\"x\"}}", ""},
    {C, "{\"prompt\":\"x\"} {}", ""},
    {C, "{\"prompt\":\"x\",}", ""},
    {C, "{'prompt':'x'}", ""},
    {C, "{\"prompt\":\"x\\q\"}", ""},
    {C, "{\"prompt\":\"x\\u12\"}", ""},
    {C, "{\"prompt\":\"\\ud800\"}", ""},
    {C, "{\"prompt\":\"\\udc00x\"}", ""},
    {C, "{\"prompt\":\"a\\u0000b\"}", ""},
    {C, "{\"prompt\":\"raw\nnewline\"}", ""},
    {C, "{\"prompt\":\"x\",\"temperature\":NaN}", ""},
    {C, "{\"prompt\":\"x\",\"temperature\":Infinity}", ""},
    {C, "[]", ""},
    {C, "\"prompt\"", ""},
    {C, "null", ""},
    {C, "{\"prompt\":\"x\"}\x01", ""},
    {C, "{\x01\"prompt\":\"x\"}", ""},
    /* completions fields */
    {C, "{}", "prompt"},
    {C, "{\"prompt\":null}", "prompt"},
    {C, "{\"prompt\":\"\"}", "prompt"},
    {C, "{\"prompt\":[]}", "prompt"},
    {C, "{\"prompt\":42}", "prompt"},
    {C, "{\"prompt\":{\"text\":\"x\"}}", "prompt"},
    {C, "{\"prompt\":[\"a\",\"b\"]}", "prompt"},
    {C, "{\"prompt\":[[1],[2]]}", "prompt"},
    {C, "{\"prompt\":[\"\"]}", "prompt[0]"},
    {C, "{\"prompt\":[[]]}", "prompt[0]"},
    {C, "{\"prompt\":[[1,-2]]}", "prompt[0][1]"},
    {C, "{\"prompt\":[1,2,3,4,5,-1]}", "prompt[5]"},
    {C, "{\"prompt\":[1,2147483648]}", "prompt[1]"},
    {C, "{\"prompt\":[1,2.5]}", "prompt[1]"},
    {C, "{\"prompt\":[1,\"2\"]}", "prompt[1]"},
    {C, "{\"prompt\":[1,1e999]}", "prompt[1]"},
    {C, "{\"prompt\":\"\xff\"}", "prompt"},
    {C, "{\"prompt\":\"\xc0\xaf\"}", "prompt"},
    {C, "{\"prompt\":\"\xed\xa0\x80\"}", "prompt"},
    {C, "{\"prompt\":\"ok\xe2\x82\"}", "prompt"},
    {C, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens"},
    {C, "{\"prompt\":\"x\",\"max_tokens\":-5}", "max_tokens"},
    {C, "{\"prompt\":\"x\",\"max_tokens\":2147483648}", "max_tokens"},
    {C, "{\"prompt\":\"x\",\"max_tokens\":1e300}", "max_tokens"},
    {C, "{\"prompt\":\"x\",\"max_tokens\":1.5}", "max_tokens"},
    {C, "{\"prompt\":\"x\",\"max_tokens\":\"16\"}", "max_tokens"},
    {C, "{\"prompt\":\"x\",\"model\":5}", "model"},
    {C, "{\"prompt\":\"x\",\"model\":\"\xfe\"}", "model"},
    {C, "{\"prompt\":\"x\",\"temperature\":-0.1}", "temperature"},
    {C, "{\"prompt\":\"x\",\"temperature\":2.01}", "temperature"},
    {C, "{\"prompt\":\"x\",\"temperature\":1e999}", "temperature"},
    {C, "{\"prompt\":\"x\",\"temperature\":-1e999}", "temperature"},
    {C, "{\"prompt\":\"x\",\"temperature\":\"0.5\"}", "temperature"},
    {C, "{\"prompt\":\"x\",\"temperature\":true}", "temperature"},
    {C, "{\"prompt\":\"x\",\"top_p\":0}", "top_p"},
    {C, "{\"prompt\":\"x\",\"top_p\":1.5}", "top_p"},
    {C, "{\"prompt\":\"x\",\"top_k\":-2}", "top_k"},
    {C, "{\"prompt\":\"x\",\"top_k\":2.5}", "top_k"},
    {C, "{\"prompt\":\"x\",\"min_p\":-0.01}", "min_p"},
    {C, "{\"prompt\":\"x\",\"min_p\":1.01}", "min_p"},
    {C, "{\"prompt\":\"x\",\"presence_penalty\":2.5}", "presence_penalty"},
    {C, "{\"prompt\":\"x\",\"frequency_penalty\":-3}", "frequency_penalty"},
    {C, "{\"prompt\":\"x\",\"repetition_penalty\":0}", "repetition_penalty"},
    {C, "{\"prompt\":\"x\",\"repetition_penalty\":1000}", "repetition_penalty"},
    {C, "{\"prompt\":\"x\",\"seed\":1.5}", "seed"},
    {C, "{\"prompt\":\"x\",\"seed\":1e19}", "seed"},
    {C, "{\"prompt\":\"x\",\"seed\":\"42\"}", "seed"},
    {C, "{\"prompt\":\"x\",\"stop\":\"\"}", "stop"},
    {C, "{\"prompt\":\"x\",\"stop\":5}", "stop"},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"\"]}", "stop[2]"},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",null]}", "stop[1]"},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",\"\xe2\x28\xa1\"]}", "stop[1]"},
    {C, "{\"prompt\":\"x\",\"stop_token_ids\":[1,-1]}", "stop_token_ids[1]"},
    {C, "{\"prompt\":\"x\",\"stop_token_ids\":7}", "stop_token_ids"},
    {C, "{\"prompt\":\"x\",\"stop_token_ids\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}", "stop_token_ids"},
    {C, "{\"prompt\":\"x\",\"ignore_eos\":1}", "ignore_eos"},
    {C, "{\"prompt\":\"x\",\"stream\":\"true\"}", "stream"},
    {C, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}", "stream_options"},
    {C, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":true}", "stream_options"},
    {C, "{\"prompt\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":1}}", "stream_options.include_usage"},
    {C, "{\"prompt\":\"x\",\"logprobs\":21}", "logprobs"},
    {C, "{\"prompt\":\"x\",\"logprobs\":-1}", "logprobs"},
    {C, "{\"prompt\":\"x\",\"logprobs\":true}", "logprobs"},
    {C, "{\"prompt\":\"x\",\"echo\":true}", "echo"},
    {C, "{\"prompt\":\"x\",\"n\":2}", "n"},
    {C, "{\"prompt\":\"x\",\"n\":0}", "n"},
    {C, "{\"prompt\":\"x\",\"best_of\":3}", "best_of"},
    {C, "{\"prompt\":\"x\",\"suffix\":\"tail\"}", "suffix"},
    {C, "{\"prompt\":\"x\",\"suffix\":3}", "suffix"},
    {C, "{\"prompt\":\"x\",\"logit_bias\":{\"50256\":-100}}", "logit_bias"},
    {C, "{\"prompt\":\"x\",\"min_tokens\":5}", "min_tokens"},
    {C, "{\"prompt\":\"x\",\"prompt_logprobs\":1}", "prompt_logprobs"},
    /* chat */
    {H, "{}", "messages"},
    {H, "{\"messages\":[]}", "messages"},
    {H, "{\"messages\":{}}", "messages"},
    {H, "{\"messages\":\"hi\"}", "messages"},
    {H, "{\"messages\":[\"hi\"]}", "messages[0]"},
    {H, "{\"messages\":[{\"content\":\"hi\"}]}", "messages[0].role"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"robot\",\"content\":\"b\"}]}",
     "messages[1].role"},
    {H, "{\"messages\":[{\"role\":7,\"content\":\"b\"}]}", "messages[0].role"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\"}]}", "messages[1].content"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":5}]}",
     "messages[1].content"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"\xf8\"}]}",
     "messages[1].content"},
    {H,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
     "{\"type\":\"image_url\",\"image_url\":{\"url\":\"http://x\"}}]}]}",
     "messages[0].content[1].type"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]}", "messages[0].content[0].type"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", "messages[0].content[0].text"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]}",
     "messages[0].content[0].text"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":[\"a\"]}]}", "messages[0].content[0]"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\xc3\"}]}]}",
     "messages[0].content[0].text"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}", "max_completion_tokens"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":-1}", "max_tokens"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", "logprobs"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}", "top_logprobs"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}", "top_logprobs"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_object\"}}",
     "response_format"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":\"text\"}", "response_format"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", "tools"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", "tool_choice"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":[{\"name\":\"f\"}]}", "functions"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}", "n"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":3}", "temperature"},
    {H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"echo\":true}", "echo"},
};

static int parse_guarded(enum api_kind kind, const char *json, size_t len, struct alloc_arena *a, struct api_request *r,
                         struct api_error *e)
{
	return api_parse_request(kind, guarded(json, len), len, a, r, e);
}

static void test_valid(void)
{
	for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
		const struct valid_case *c = &valid_cases[i];
		struct alloc_arena a;
		alloc_arena_init(&a, 0);
		struct api_request r;
		struct api_error e;
		int rc = parse_guarded(c->kind, c->json, strlen(c->json), &a, &r, &e);
		CHECK(rc == 0, "valid[%zu] %s: rc %d: %s (param %s)", i, c->json, rc, e.message, e.param);
		if (rc == 0) {
			struct sbuf b;
			dump_request(&r, &b);
			CHECK(strcmp(b.s + (b.n ? 1 : 0), c->want) == 0, "valid[%zu] %s:\n  got  %s\n  want %s", i,
			      c->json, b.s + (b.n ? 1 : 0), c->want);
			CHECK(r.kind == c->kind, "valid[%zu] kind", i);
			CHECK(!r.echo && r.n == 1, "valid[%zu] echo/n", i);
			CHECK(!!r.prompt + !!r.prompt_ids + !!r.messages == 1, "valid[%zu]: exactly one prompt form",
			      i);
		}
		alloc_arena_free(&a);
	}
}

static void test_bad(void)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct alloc_arena a;
		alloc_arena_init(&a, 0);
		struct api_request r;
		struct api_error e;
		int rc = parse_guarded(c->kind, c->json, strlen(c->json), &a, &r, &e);
		CHECK(rc == -EINVAL, "bad[%zu] %s: rc %d", i, c->json, rc);
		CHECK(e.status == 400, "bad[%zu] %s: status %d", i, c->json, e.status);
		CHECK(strcmp(e.param, c->param) == 0, "bad[%zu] %s: param '%s', want '%s' (%s)", i, c->json, e.param,
		      c->param, e.message);
		CHECK(e.message[0] != 0 && e.type && strcmp(e.type, "invalid_request_error") == 0,
		      "bad[%zu]: message/type", i);
		alloc_arena_free(&a);
	}
}

/* Bodies that need lengths or sizes the tables cannot express. */
static void test_bad_special(void)
{
	struct alloc_arena a;
	alloc_arena_init(&a, 0);
	struct api_request r;
	struct api_error e;

	/* a NUL byte inside the body, outside and inside a string */
	static const char nul1[] = "{\"prompt\":\"x\"}\0";
	CHECK(parse_guarded(C, nul1, sizeof(nul1) - 1, &a, &r, &e) == -EINVAL && e.status == 400, "trailing NUL");
	static const char nul2[] = "{\"prompt\":\"a\0b\"}";
	CHECK(parse_guarded(C, nul2, sizeof(nul2) - 1, &a, &r, &e) == -EINVAL && e.status == 400, "NUL in string");

	/* nesting: API_MAX_DEPTH levels are fine, one more is refused, a huge one quickly */
	char deep[4 * 1024];
	for (int depth = API_MAX_DEPTH - 1; depth <= API_MAX_DEPTH; depth++) {
		size_t n = 0;
		n += (size_t)sprintf(deep + n, "{\"prompt\":\"x\",\"u\":");
		for (int i = 1; i < depth; i++)
			deep[n++] = '[';
		for (int i = 1; i < depth; i++)
			deep[n++] = ']';
		deep[n++] = '}';
		int rc = parse_guarded(C, deep, n, &a, &r, &e);
		CHECK(rc == 0, "depth %d: rc %d %s", depth, rc, e.message);
	}
	{
		size_t n = 0;
		n += (size_t)sprintf(deep + n, "{\"prompt\":\"x\",\"u\":");
		for (int i = 0; i < API_MAX_DEPTH; i++)
			deep[n++] = '[';
		for (int i = 0; i < API_MAX_DEPTH; i++)
			deep[n++] = ']';
		deep[n++] = '}';
		int rc = parse_guarded(C, deep, n, &a, &r, &e);
		CHECK(rc == -EINVAL && e.status == 400 && strstr(e.message, "nested"), "depth %d+1: %s", API_MAX_DEPTH,
		      e.message);
	}
	size_t big = 1 << 20;
	char *lots = malloc(big);
	memset(lots, '[', big);
	CHECK(parse_guarded(C, lots, big, &a, &r, &e) == -EINVAL && e.status == 400, "a megabyte of '['");
	/* an over-long stop string: STOP_MAX_LEN bytes pass, one more does not */
	for (int extra = 0; extra <= 1; extra++) {
		size_t n = (size_t)sprintf(lots, "{\"prompt\":\"x\",\"stop\":[\"a\",\"");
		memset(lots + n, 's', STOP_MAX_LEN + (size_t)extra);
		n += STOP_MAX_LEN + (size_t)extra;
		n += (size_t)sprintf(lots + n, "\"]}");
		int rc = parse_guarded(C, lots, n, &a, &r, &e);
		if (extra)
			CHECK(rc == -EINVAL && strcmp(e.param, "stop[1]") == 0, "stop of %d bytes: %s",
			      STOP_MAX_LEN + 1, e.param);
		else
			CHECK(rc == 0 && r.stop_len[1] == STOP_MAX_LEN, "stop of %d bytes", STOP_MAX_LEN);
	}
	/* a long token-id prompt, and a bad id far into it */
	{
		size_t n = (size_t)sprintf(lots, "{\"prompt\":[");
		for (int i = 0; i < 50000; i++)
			n += (size_t)sprintf(lots + n, i ? ",%d" : "%d", i);
		n += (size_t)sprintf(lots + n, "]}");
		int rc = parse_guarded(C, lots, n, &a, &r, &e);
		CHECK(rc == 0 && r.n_prompt_ids == 50000 && r.prompt_ids[49999] == 49999, "50000 ids: rc %d", rc);
		memcpy(lots + n - 2, ",-7]}", 5);
		rc = parse_guarded(C, lots, n + 3, &a, &r, &e);
		CHECK(rc == -EINVAL && strcmp(e.param, "prompt[50000]") == 0, "bad id 50000: %s", e.param);
	}
	free(lots);
	/* an unknown kind is the caller's bug, still no crash */
	CHECK(api_parse_request((enum api_kind)7, "{}", 2, &a, &r, &e) == -EINVAL, "unknown kind");
	alloc_arena_free(&a);
}

/* Every prefix of real requests, from right before the guard page: no
 * crash, no over-read, and only the whole body decodes. */
static void test_prefixes(void)
{
	static const struct valid_case reqs[] = {
	    {C,
	     "{\"model\":\"m\",\"prompt\":[1,2,3],\"stop\":[\"\\n\",\"\\u00e9\"],\"temperature\":0.5,"
	     "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"seed\":-3}",
	     NULL},
	    {H,
	     "{\"messages\":[{\"role\":\"system\",\"content\":\"s\\ud83d\\ude00\"},{\"role\":\"user\","
	     "\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}],\"logprobs\":true,\"top_logprobs\":2,"
	     "\"max_completion_tokens\":1e1,\"stop\":\"x\",\"tools\":[],\"x\":[true,false,null,-0.5e-3]}",
	     NULL},
	};
	for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
		size_t n = strlen(reqs[k].json);
		for (size_t len = 0; len <= n; len++) {
			struct alloc_arena a;
			alloc_arena_init(&a, 0);
			struct api_request r;
			struct api_error e;
			int rc = parse_guarded(reqs[k].kind, reqs[k].json, len, &a, &r, &e);
			if (len == n)
				CHECK(rc == 0, "req %zu whole: %s", k, e.message);
			else
				CHECK(rc == -EINVAL && e.status == 400 && e.param[0] == 0, "req %zu prefix %zu: rc %d",
				      k, len, rc);
			alloc_arena_free(&a);
		}
	}
}

static void test_tokenize(void)
{
	struct alloc_arena a;
	alloc_arena_init(&a, 0);
	struct api_tokenize_request t;
	struct api_error e;
	const char *j;

	j = "{\"prompt\":\"hello\"}";
	CHECK(api_parse_tokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e) == 0 && t.prompt_len == 5 &&
	          strcmp(t.prompt, "hello") == 0 && t.add_special && !t.messages,
	      "tokenize prompt");
	j = "{\"model\":\"m\",\"prompt\":\"\",\"add_special_tokens\":false}";
	CHECK(api_parse_tokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e) == 0 && t.prompt_len == 0 &&
	          !t.add_special,
	      "tokenize empty prompt");
	j = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
	CHECK(api_parse_tokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e) == 0 && t.n_messages == 1 &&
	          strcmp(t.messages[0].content, "hi") == 0 && !t.add_special && t.add_generation_prompt && !t.prompt,
	      "tokenize messages");
	j = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"add_generation_prompt\":false,"
	    "\"add_special_tokens\":true}";
	CHECK(api_parse_tokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e) == 0 && t.add_special &&
	          !t.add_generation_prompt,
	      "tokenize messages flags");

	static const struct {
		const char *json, *param;
	} bad_tok[] = {
	    {"{}", "prompt"},
	    {"{\"prompt\":1}", "prompt"},
	    {"{\"prompt\":\"a\",\"messages\":[]}", "messages"},
	    {"{\"messages\":[]}", "messages"},
	    {"{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content"},
	    {"{\"prompt\":\"a\",\"add_special_tokens\":\"no\"}", "add_special_tokens"},
	    {"{\"prompt\":\"\xff\"}", "prompt"},
	    {"[", ""},
	};
	for (size_t i = 0; i < sizeof(bad_tok) / sizeof(bad_tok[0]); i++) {
		j = bad_tok[i].json;
		int rc = api_parse_tokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e);
		CHECK(rc == -EINVAL && e.status == 400 && strcmp(e.param, bad_tok[i].param) == 0,
		      "bad tokenize %s: rc %d param '%s'", j, rc, e.param);
	}

	j = "{\"tokens\":[1,2,3]}";
	CHECK(api_parse_detokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e) == 0 && t.n_tokens == 3 &&
	          t.tokens[2] == 3,
	      "detokenize");
	j = "{\"tokens\":[]}";
	CHECK(api_parse_detokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e) == 0 && t.n_tokens == 0,
	      "detokenize empty");
	static const struct {
		const char *json, *param;
	} bad_detok[] = {
	    {"{}", "tokens"},
	    {"{\"tokens\":\"1 2\"}", "tokens"},
	    {"{\"tokens\":[1,-2]}", "tokens[1]"},
	    {"{\"tokens\":[1,0.5]}", "tokens[1]"},
	    {"{\"tokens\":[1,[2]]}", "tokens[1]"},
	    {"{\"tokens\":[1]", ""},
	};
	for (size_t i = 0; i < sizeof(bad_detok) / sizeof(bad_detok[0]); i++) {
		j = bad_detok[i].json;
		int rc = api_parse_detokenize(guarded(j, strlen(j)), strlen(j), &a, &t, &e);
		CHECK(rc == -EINVAL && e.status == 400 && strcmp(e.param, bad_detok[i].param) == 0,
		      "bad detokenize %s: rc %d param '%s'", j, rc, e.param);
	}
	alloc_arena_free(&a);
}

/* ---- writers ---- */

static int g_dump_n;

static void expect_json(const struct api_buf *b, const char *want, const char *what)
{
	CHECK(!b->oom, "%s: oom", what);
	CHECK(b->p && strcmp(b->p, want) == 0, "%s:\n  got  %s\n  want %s", what, b->p ? b->p : "(null)", want);
	/* every event (SSE "data: ..." lines) or the whole text must parse */
	const char *p = b->p ? b->p : "";
	bool sse = strncmp(p, "data: ", 6) == 0;
	while (*p) {
		const char *doc = p, *end = p + strlen(p);
		if (sse) {
			CHECK(strncmp(p, "data: ", 6) == 0, "%s: event does not start with data:", what);
			doc = p + 6;
			end = strstr(doc, "\n\n");
			CHECK(end != NULL, "%s: event not terminated", what);
			if (!end)
				return;
		}
		if (strncmp(doc, "[DONE]", 6) != 0) {
			cJSON *j = cJSON_ParseWithLength(doc, (size_t)(end - doc));
			CHECK(j != NULL, "%s: not valid JSON: %.*s", what, (int)(end - doc), doc);
			cJSON_Delete(j);
			const char *dir = getenv("LOCUS_API_DUMP");
			if (dir && *dir) {
				char path[512];
				snprintf(path, sizeof(path), "%s/%03d-%s.json", dir, g_dump_n++, what);
				for (char *c = path + strlen(dir) + 1; *c; c++)
					if (*c == ' ' || *c == '/')
						*c = '_';
				FILE *f = fopen(path, "w");
				if (f) {
					fwrite(doc, 1, (size_t)(end - doc), f);
					fclose(f);
				}
			}
		}
		p = sse ? end + 2 : end;
	}
}

static void test_json_str(void)
{
	struct api_buf b = {0};
	static const struct {
		const char *in;
		size_t n;
		const char *want;
	} cases[] = {
	    {"", 0, "\"\""},
	    {"plain", 5, "\"plain\""},
	    {"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
	    {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
	    {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\""},
	    {"a\0b", 3, "\"a\\u0000b\""},
	    {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
	    /* invalid UTF-8: one U+FFFD per maximal subpart, as Python's errors="replace" */
	    {"\xff", 1, "\"\xef\xbf\xbd\""},
	    {"\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\""},
	    {"\xe2\x82", 2, "\"\xef\xbf\xbd\""},
	    {"\xe2\x82"
	     "A",
	     3,
	     "\"\xef\xbf\xbd"
	     "A\""},
	    {"\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
	    {"\xf4\x90\x80\x80", 4, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
	    {"\xf0\x9f\x98", 3, "\"\xef\xbf\xbd\""},
	    {"\xf0\x9f\x98\"", 4, "\"\xef\xbf\xbd\\\"\""},
	    {"a\x80\x80z", 4, "\"a\xef\xbf\xbd\xef\xbf\xbdz\""},
	    {"\xe0\x80\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
	    {"\xf1\x80\x80\xe1\x80\xc2", 6, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		api_buf_reset(&b);
		api_buf_json_str(&b, cases[i].in, cases[i].n);
		CHECK(b.n == strlen(cases[i].want) && memcmp(b.p, cases[i].want, b.n) == 0, "json_str[%zu]: got %s", i,
		      b.p);
		cJSON *j = cJSON_ParseWithLength(b.p, b.n);
		CHECK(j && cJSON_IsString(j), "json_str[%zu] not a JSON string", i);
		cJSON_Delete(j);
	}
	/* every byte value in a row */
	char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	api_buf_reset(&b);
	api_buf_json_str(&b, all, sizeof(all));
	cJSON *j = cJSON_ParseWithLength(b.p, b.n);
	CHECK(j && cJSON_IsString(j), "all bytes: not a JSON string");
	cJSON_Delete(j);
	CHECK(api_utf8_valid(b.p, b.n) == b.n, "all bytes: output not UTF-8");

	CHECK(api_utf8_valid("abc\xc3\xa9", 5) == 5, "utf8 valid");
	CHECK(api_utf8_valid("abc\xc3", 4) == 3, "utf8 truncated");
	CHECK(api_utf8_valid("ab\xed\xbf\xbf", 5) == 2, "utf8 surrogate");
	CHECK(api_utf8_valid("\xf4\x8f\xbf\xbf", 4) == 4, "utf8 U+10FFFF");
	CHECK(api_utf8_valid("\xc1\xbf", 2) == 0, "utf8 overlong");
	CHECK(api_utf8_chars("a\xc3\xa9\xf0\x9f\x98\x80", 7) == 3, "chars");
	CHECK(api_utf8_chars("\xe2\x82"
	                     "A\xff",
	                     4) == 3,
	      "chars with replaced subparts");
	CHECK(api_utf8_chars("", 0) == 0, "chars empty");

	api_buf_reset(&b);
	api_buf_printf(&b, "%s=%d", "x", 42);
	api_buf_printf(&b, "%0300d", 7);
	CHECK(b.n == 304 && strncmp(b.p, "x=42000", 7) == 0 && b.p[b.n - 1] == '7' && b.p[b.n] == 0, "printf");
	api_buf_free(&b);
	CHECK(b.p == NULL && b.n == 0, "free");
}

static void test_writers(void)
{
	struct api_buf b = {0};
	struct api_resp_meta cm = {
	    .kind = API_COMPLETION, .id = "cmpl-1", .created = 1700000000, .model = "m", .logprobs = -1};
	struct api_resp_meta hm = {
	    .kind = API_CHAT, .id = "chatcmpl-1", .created = 1700000000, .model = "m", .logprobs = -1};
	struct api_usage u = {.prompt_tokens = 3, .completion_tokens = 2};

	api_write_response(&b, &cm, "Hi there", 8, NULL, 0, API_FINISH_LENGTH, &u);
	expect_json(&b,
	            "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"text\":\"Hi there\",\"logprobs\":null,\"finish_reason\":\"length\"}],"
	            "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}",
	            "completion");

	api_buf_reset(&b);
	static const char odd[] = "say \"hi\"\n\tback\\slash \x01 bad\xff end \xe2\x82\xac";
	api_write_response(&b, &hm, odd, sizeof(odd) - 1, NULL, 0, API_FINISH_STOP, &u);
	expect_json(&b,
	            "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"say \\\"hi\\\"\\n"
	            "\\tback\\\\slash \\u0001 bad\xef\xbf\xbd end \xe2\x82\xac\"},\"logprobs\":null,"
	            "\"finish_reason\":\"stop\"}],"
	            "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}",
	            "chat");

	/* logprobs: two tokens, the second a partial UTF-8 piece with an -inf alternative */
	struct sampler_logprob top0[2] = {{10, -0.25f}, {11, -1.5f}};
	const char *tp0[2] = {"He", "I"};
	size_t tl0[2] = {2, 1};
	struct sampler_logprob top1[1] = {{12, -INFINITY}};
	const char *tp1[1] = {"\""};
	size_t tl1[1] = {1};
	struct api_token toks[2] = {
	    {.id = 10,
	     .text = "He",
	     .text_len = 2,
	     .piece = "He",
	     .piece_len = 2,
	     .logprob = -0.25f,
	     .top = top0,
	     .top_piece = tp0,
	     .top_piece_len = tl0,
	     .n_top = 2},
	    {.id = 12,
	     .text = "\xc3\xa9",
	     .text_len = 2,
	     .piece = "\xc3",
	     .piece_len = 1,
	     .logprob = -0.1f,
	     .top = top1,
	     .top_piece = tp1,
	     .top_piece_len = tl1,
	     .n_top = 1},
	};
	cm.logprobs = 2;
	api_buf_reset(&b);
	api_write_response(&b, &cm, "He\xc3\xa9", 4, toks, 2, API_FINISH_STOP, &u);
	expect_json(
	    &b,
	    "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
	    "\"choices\":[{\"index\":0,\"text\":\"He\xc3\xa9\",\"logprobs\":{\"tokens\":[\"He\",\"\xef\xbf\xbd\"],"
	    "\"token_logprobs\":[-0.25,-0.1],\"top_logprobs\":[{\"He\":-0.25,\"I\":-1.5},{\"\\\"\":-9999}],"
	    "\"text_offset\":[0,2]},\"finish_reason\":\"stop\"}],"
	    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}",
	    "completion logprobs");

	hm.logprobs = 2;
	api_buf_reset(&b);
	api_write_response(&b, &hm, "He\xc3\xa9", 4, toks, 2, API_FINISH_LENGTH, &u);
	expect_json(&b,
	            "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"He\xc3\xa9\"},"
	            "\"logprobs\":{\"content\":["
	            "{\"token\":\"He\",\"logprob\":-0.25,\"bytes\":[72,101],\"top_logprobs\":["
	            "{\"token\":\"He\",\"logprob\":-0.25,\"bytes\":[72,101]},"
	            "{\"token\":\"I\",\"logprob\":-1.5,\"bytes\":[73]}]},"
	            "{\"token\":\"\xef\xbf\xbd\",\"logprob\":-0.1,\"bytes\":[195],\"top_logprobs\":["
	            "{\"token\":\"\\\"\",\"logprob\":-9999,\"bytes\":[34]}]}]},"
	            "\"finish_reason\":\"length\"}],"
	            "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}",
	            "chat logprobs");

	/* chat logprobs on, nothing generated */
	api_buf_reset(&b);
	api_write_response(&b, &hm, "", 0, NULL, 0, API_FINISH_ABORT, NULL);
	expect_json(&b,
	            "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"\"},"
	            "\"logprobs\":{\"content\":[]},\"finish_reason\":\"abort\"}]}",
	            "chat empty");

	/* streams */
	hm.logprobs = -1;
	cm.logprobs = -1;
	struct api_token t1 = {.id = 5, .text = "Hel", .text_len = 3, .piece = "Hel", .piece_len = 3, .logprob = -0.5f};
	api_buf_reset(&b);
	api_write_stream_chunk(&b, &hm, true, NULL, API_FINISH_NONE);
	api_write_stream_chunk(&b, &hm, false, &t1, API_FINISH_NONE);
	api_write_stream_chunk(&b, &hm, false, NULL, API_FINISH_STOP);
	api_write_stream_usage(&b, &hm, &u);
	api_write_stream_done(&b);
	expect_json(&b,
	            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
	            "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
	            "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
	            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
	            "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
	            "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
	            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
	            "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
	            "\"finish_reason\":\"stop\"}]}\n\n"
	            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
	            "\"model\":\"m\",\"choices\":[],"
	            "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n"
	            "data: [DONE]\n\n",
	            "chat stream");

	/* chat stream with logprobs, first chunk carrying text, last token with the finish reason */
	hm.logprobs = 0;
	api_buf_reset(&b);
	api_write_stream_chunk(&b, &hm, true, &t1, API_FINISH_LENGTH);
	expect_json(&b,
	            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
	            "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},"
	            "\"logprobs\":{\"content\":[{\"token\":\"Hel\",\"logprob\":-0.5,\"bytes\":[72,101,108],"
	            "\"top_logprobs\":[]}]},\"finish_reason\":\"length\"}]}\n\n",
	            "chat stream logprobs");

	api_buf_reset(&b);
	api_write_stream_chunk(&b, &cm, true, &t1, API_FINISH_NONE);
	api_write_stream_chunk(&b, &cm, false, NULL, API_FINISH_LENGTH);
	api_write_stream_usage(&b, &cm, &u);
	api_write_stream_done(&b);
	expect_json(&b,
	            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"text\":\"Hel\",\"logprobs\":null,\"finish_reason\":null}]}\n\n"
	            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n"
	            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n"
	            "data: [DONE]\n\n",
	            "completion stream");

	cm.logprobs = 1;
	toks[1].text_offset = 7;
	api_buf_reset(&b);
	api_write_stream_chunk(&b, &cm, false, &toks[1], API_FINISH_NONE);
	expect_json(&b,
	            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
	            "\"choices\":[{\"index\":0,\"text\":\"\xc3\xa9\",\"logprobs\":{\"tokens\":[\"\xef\xbf\xbd\"],"
	            "\"token_logprobs\":[-0.1],\"top_logprobs\":[{\"\\\"\":-9999}],\"text_offset\":[7]},"
	            "\"finish_reason\":null}]}\n\n",
	            "completion stream logprobs");

	/* errors */
	struct api_error e;
	api_buf_reset(&b);
	api_write_error(&b, api_error_set(&e, 400, NULL, "messages[1].content", "bad \"%s\"", "x"));
	expect_json(&b,
	            "{\"error\":{\"message\":\"bad \\\"x\\\"\",\"type\":\"invalid_request_error\","
	            "\"param\":\"messages[1].content\",\"code\":null}}",
	            "error 400");
	api_buf_reset(&b);
	api_error_set(&e, 400, NULL, NULL, "This model's maximum context length is %d tokens", 2048);
	e.code = "context_length_exceeded";
	api_write_error(&b, &e);
	expect_json(&b,
	            "{\"error\":{\"message\":\"This model's maximum context length is 2048 tokens\","
	            "\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"context_length_exceeded\"}}",
	            "error code");
	static const struct {
		int status;
		const char *type;
	} types[] = {{401, "authentication_error"}, {403, "permission_error"}, {404, "not_found_error"},
	             {429, "rate_limit_error"},     {500, "server_error"},     {503, "server_error"},
	             {413, "invalid_request_error"}};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		api_error_set(&e, types[i].status, NULL, "", "m");
		CHECK(strcmp(e.type, types[i].type) == 0 && e.status == types[i].status, "type of %d", types[i].status);
	}
	api_error_set(&e, 400, NULL, "a-very-long-parameter-name-that-does-not-fit-into-sixty-four-bytes-at-all", "%s",
	              "x");
	CHECK(strlen(e.param) == sizeof(e.param) - 1, "param truncated");

	api_buf_reset(&b);
	api_write_models(&b, "smollm2-\"135m\"", 1700000000, 8192);
	expect_json(&b,
	            "{\"object\":\"list\",\"data\":[{\"id\":\"smollm2-\\\"135m\\\"\",\"object\":\"model\","
	            "\"created\":1700000000,\"owned_by\":\"locus\",\"max_model_len\":8192}]}",
	            "models");
	int32_t ids[3] = {1, 15043, 2147483647};
	api_buf_reset(&b);
	api_write_tokenize(&b, ids, 3, 8192);
	expect_json(&b, "{\"count\":3,\"max_model_len\":8192,\"tokens\":[1,15043,2147483647]}", "tokenize");
	api_buf_reset(&b);
	api_write_tokenize(&b, ids, 0, 8192);
	expect_json(&b, "{\"count\":0,\"max_model_len\":8192,\"tokens\":[]}", "tokenize empty");
	api_buf_reset(&b);
	api_write_detokenize(&b, "a\nb\xf0", 4);
	expect_json(&b, "{\"prompt\":\"a\\nb\xef\xbf\xbd\"}", "detokenize");

	CHECK(api_finish_name(API_FINISH_NONE) == NULL && strcmp(api_finish_name(API_FINISH_STOP), "stop") == 0 &&
	          strcmp(api_finish_name(API_FINISH_LENGTH), "length") == 0 &&
	          strcmp(api_finish_name(API_FINISH_ABORT), "abort") == 0,
	      "finish names");
	api_buf_free(&b);
}

/* The strings a request decodes to go through the writers as valid JSON. */
static void test_roundtrip(void)
{
	const char *j = "{\"messages\":[{\"role\":\"user\",\"content\":\"\\u0001\\u001f\\\"\\\\ \\ud83d\\ude00\"}],"
	                "\"model\":\"m\\u2028x\"}";
	struct alloc_arena a;
	alloc_arena_init(&a, 0);
	struct api_request r;
	struct api_error e;
	CHECK(api_parse_request(API_CHAT, j, strlen(j), &a, &r, &e) == 0, "roundtrip parse: %s", e.message);
	struct api_buf b = {0};
	struct api_resp_meta m = {.kind = API_CHAT, .id = "x", .created = 0, .model = r.model, .logprobs = -1};
	api_write_response(&b, &m, r.messages[0].content, strlen(r.messages[0].content), NULL, 0, API_FINISH_STOP,
	                   NULL);
	cJSON *root = cJSON_ParseWithLength(b.p, b.n);
	CHECK(root != NULL, "roundtrip output parses");
	const cJSON *content = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0),
	                                     "message"),
	    "content");
	CHECK(cJSON_IsString(content) && strcmp(content->valuestring, r.messages[0].content) == 0, "roundtrip content");
	cJSON_Delete(root);
	api_buf_free(&b);
	alloc_arena_free(&a);
}

int main(void)
{
	g_page = (size_t)sysconf(_SC_PAGESIZE);
	test_valid();
	test_bad();
	test_bad_special();
	test_prefixes();
	test_tokenize();
	test_json_str();
	test_writers();
	test_roundtrip();
	printf("test_api: %zu valid, %zu malformed bodies\n", sizeof(valid_cases) / sizeof(valid_cases[0]),
	       sizeof(bad_cases) / sizeof(bad_cases[0]));
	return check_status("test_api");
}
