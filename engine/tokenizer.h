/*
 * tokenizer.h: text <-> token ids for Llama-family GGUF models, matching
 * llama.cpp's tokenizer (src/llama-vocab.cpp, src/unicode.cpp) token for token.
 *
 * Models (`tokenizer.ggml.model`):
 *   "llama"  SentencePiece-style: score-driven merges over UTF-8 characters,
 *            spaces as U+2581, byte fallback through <0xXX> tokens,
 *            add_space_prefix.
 *   "gpt2"   byte-level BPE: a regex pre-tokenizer splits the text into words
 *            (`tokenizer.ggml.pre`), bytes map to printable code points,
 *            merges apply by rank.
 * Pre-tokenizers: "default", "gpt2" family ("gpt-2", "phi-2", "mpt", "olmo",
 * ...), "llama3" family ("llama-bpe", "llama3", "llama-v3", "dbrx", ...),
 * "starcoder" family ("smollm", "refact", "command-r", ...), "qwen2" family
 * ("qwen2", "stablelm2", "deepseek-r1-qwen", ...). Anything else is refused at
 * load time with an error naming it.
 *
 * Special tokens (control, user-defined, unknown) are found in the text
 * before the model runs: user-defined ones always, control and unknown ones
 * only with parse_special. Invalid UTF-8 never fails: BPE turns each invalid
 * byte into U+FFFD as llama.cpp does, SPM falls back to byte tokens.
 *
 * Threading: a loaded vocab is immutable; every function may be called from
 * any number of threads at once. A struct tok_stream belongs to one thread.
 * Memory: tok_vocab_load copies what it needs, so the gguf file may be closed
 * afterwards. Encoding allocates scratch per call and frees it before
 * returning; pieces and the stream never allocate.
 */
#ifndef LOCUS_ENGINE_TOKENIZER_H
#define LOCUS_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_file;
typedef struct tok_vocab tok_vocab_t;

/* Token attributes (bit set), as llama.cpp derives them from token_type. */
enum tok_attr {
	TOK_ATTR_UNDEFINED = 0,
	TOK_ATTR_UNKNOWN = 1u << 0,
	TOK_ATTR_UNUSED = 1u << 1,
	TOK_ATTR_NORMAL = 1u << 2,
	TOK_ATTR_CONTROL = 1u << 3,
	TOK_ATTR_USER_DEFINED = 1u << 4,
	TOK_ATTR_BYTE = 1u << 5,
};

/* Loads the vocabulary from `tokenizer.ggml.*` keys. NULL on failure with a
 * message in err (an unknown model or pre-tokenizer is named there). */
tok_vocab_t *tok_vocab_load(const struct gguf_file *f, char *err, size_t errlen);
void tok_vocab_free(tok_vocab_t *v);

int32_t tok_n_vocab(const tok_vocab_t *v);
/* Special ids, -1 when the vocab has none. */
int32_t tok_bos(const tok_vocab_t *v);
int32_t tok_eos(const tok_vocab_t *v);
int32_t tok_eot(const tok_vocab_t *v);
int32_t tok_unk(const tok_vocab_t *v);
int32_t tok_pad(const tok_vocab_t *v);
/* End of generation: eos, eot, eom and tokens such as <|im_end|>,
 * <|eot_id|>, <|endoftext|>, <fim_pad> (llama.cpp's list). False for
 * out-of-range ids. */
bool tok_is_eog(const tok_vocab_t *v, int32_t id);
/* Number of end-of-generation ids and the ids themselves, ascending. */
int32_t tok_eog_ids(const tok_vocab_t *v, const int32_t **ids);
bool tok_is_control(const tok_vocab_t *v, int32_t id);
/* enum tok_attr bits; 0 for out-of-range ids. */
uint32_t tok_attr(const tok_vocab_t *v, int32_t id);
bool tok_add_bos(const tok_vocab_t *v);
bool tok_add_eos(const tok_vocab_t *v);
/* "llama" / "gpt2" and the pre-tokenizer name as written in the file
 * ("default" when absent). */
const char *tok_model_name(const tok_vocab_t *v);
const char *tok_pre_name(const tok_vocab_t *v);

/*
 * Tokenizes text[0..len) (any bytes). add_special adds BOS/EOS as the vocab
 * asks (tok_add_bos/tok_add_eos); parse_special turns control-token texts in
 * the input (e.g. "<|im_start|>") into their ids.
 * Returns the number of tokens. When it is > cap, out holds the first cap
 * tokens and the caller can retry with the returned size. -EINVAL for bad
 * arguments, -ENOMEM, -EOVERFLOW for inputs over 2^31 bytes or a regex
 * engine failure.
 */
int64_t tok_encode(const tok_vocab_t *v, const char *text, size_t len, bool add_special, bool parse_special,
		   int32_t *out, int64_t cap);

/* Exact id of a vocabulary entry's text (the raw vocab string: "▁the",
 * "Ġthe", "<|im_end|>"), or -1. */
int32_t tok_lookup(const tok_vocab_t *v, const char *piece, size_t len);
/* The raw vocabulary text of id (not NUL-terminated), NULL when out of range. */
const char *tok_text(const tok_vocab_t *v, int32_t id, size_t *len);

/*
 * The bytes id stands for: SPM U+2581 -> ' ', <0xXX> -> the byte, BPE
 * byte-level decoded; control and unknown tokens render their text only when
 * special is true (otherwise 0 bytes). Returns the piece's length n and copies
 * it when n <= cap (nothing otherwise, no NUL). -EINVAL for out-of-range ids.
 */
int tok_piece(const tok_vocab_t *v, int32_t id, bool special, char *buf, size_t cap);
/* Longest piece of this vocab, in bytes. */
int tok_piece_max(const tok_vocab_t *v);

/*
 * Detokenizes like llama_detokenize(): concatenated pieces; remove_special
 * drops a leading BOS / trailing EOS the vocab adds; for SPM one leading space
 * of the first piece is removed (the add_space_prefix space); BPE vocabs with
 * clean_up_tokenization_spaces get llama.cpp's " ," " 's" clean-up. Returns
 * the text length n, writing it when n <= cap (snprintf-like, no NUL);
 * -EINVAL for an out-of-range id.
 */
int64_t tok_decode(const tok_vocab_t *v, const int32_t *ids, int64_t n_ids, bool remove_special,
		   bool unparse_special, char *out, size_t cap);

/*
 * Streaming detokenizer: feeds ids one at a time and emits only complete,
 * valid UTF-8. Up to 3 bytes of an unfinished character wait for the next
 * token; ill-formed bytes become U+FFFD (one per maximal ill-formed subpart,
 * the Unicode recommendation). Caller-allocated, no allocation inside.
 */
struct tok_stream {
	const tok_vocab_t *v;
	bool special;    /* render control tokens */
	uint8_t n_pend;  /* bytes of an unfinished character held back */
	uint8_t pend[3];
};

void tok_stream_init(struct tok_stream *s, const tok_vocab_t *v, bool special);
/* Largest output of one tok_stream_push / tok_stream_flush for this vocab. */
size_t tok_stream_bound(const tok_vocab_t *v);
/* Appends id's text; returns the bytes written to out (possibly 0),
 * -EINVAL for an out-of-range id, -ENOSPC when cap is too small for this
 * push (the state is then unchanged; cap >= tok_stream_bound always fits). */
int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t cap);
/* Ends the stream: a dangling partial character becomes U+FFFD. Returns the
 * bytes written (0 or 3) or -ENOSPC; the stream is empty afterwards. */
int tok_stream_flush(struct tok_stream *s, char *out, size_t cap);

#endif
