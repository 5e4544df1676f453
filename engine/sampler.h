/*
 * sampler.h: turning a logits row into the next token.
 *
 * Order of transforms (llama.cpp's default chain): repetition / frequency /
 * presence penalties over the last `penalty_last_n` tokens, top-k, top-p,
 * min-p, temperature, then a draw from the remaining distribution with the
 * request's own generator (xoshiro256**, seeded: deterministic per request).
 * temperature <= 0 is greedy: the argmax after penalties.
 * The draw walks the remaining tokens from the largest logit down (ties by
 * lower id), without sorting the whole row: past the 64 largest, tokens
 * are summed in buckets of 1/32 nat and only the bucket where the draw (or
 * top_p's cut) lands is sorted. A backend's 64 top candidates (struct
 * kern_top) are the head of that order, so they decide alone every draw
 * that lands among them.
 * Log-probabilities are those of the model's distribution (log-softmax of
 * the raw logits), as the OpenAI API reports them.
 *
 * Threading: a sampler belongs to one request; no shared state.
 */
#ifndef LOCUS_ENGINE_SAMPLER_H
#define LOCUS_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

struct sampler_params {
	float temperature;      /* <= 0: greedy */
	int32_t top_k;          /* <= 0: off */
	float top_p;            /* >= 1: off */
	float min_p;            /* <= 0: off */
	float repeat_penalty;   /* 1: off */
	float freq_penalty;     /* 0: off */
	float presence_penalty; /* 0: off */
	int32_t penalty_last_n; /* tokens of history the penalties look at */
	uint64_t seed;
};

void sampler_params_default(struct sampler_params *p);
/* Checks ranges; on error writes the offending field's name to *field. */
int sampler_params_check(const struct sampler_params *p, const char **field);

struct sampler_logprob {
	int32_t token;
	float logprob;
};

/* Per-vocabulary scratch for sampling: one per thread that samples (a
 * dispatcher, a tool), shared by all the requests it serves. */
struct sampler_scratch {
	int32_t n_vocab;
	float *prob;   /* (n_vocab) */
	float *raw;    /* (n_vocab) copy of the raw logits for log-probabilities */
	int32_t *idx;  /* (n_vocab) candidate ids */
	uint8_t *mark; /* (n_vocab) all zero between calls */
	uint64_t *sortbuf; /* (2 n_vocab) for sorting long candidate lists */
	float *prob1;      /* (n_vocab) weights at temperature 1 */
	uint16_t *bkt;     /* (n_vocab) each logit's bucket below the maximum */
	double *bsum;      /* (2 x 1024) the buckets' weights */
};

int sampler_scratch_init(struct sampler_scratch *w, int32_t n_vocab);
void sampler_scratch_free(struct sampler_scratch *w);

/* Per-request state: parameters, generator, penalty history. */
struct sampler {
	struct sampler_params p;
	int32_t n_vocab;
	uint64_t rng[4];
	int32_t *hist;       /* (penalty_last_n) ring of recent tokens */
	int32_t n_hist, hist_head;
	uint16_t *counts;    /* (n_vocab) occurrences in hist; NULL when no penalty is on */
};

int sampler_init(struct sampler *s, const struct sampler_params *p, int32_t n_vocab);
void sampler_free(struct sampler *s);
/* True when the next token is simply the argmax of the raw logits (greedy,
 * no penalties), so a backend can pick it without handing out the logits. */
static inline bool sampler_is_argmax(const struct sampler *s)
{
	return s->p.temperature <= 0.0f && !s->counts;
}

/* Adds a token to the penalty history (prompt tokens and generated ones). */
void sampler_accept(struct sampler *s, int32_t token);
/*
 * Picks the next token from `logits` (n_vocab, modified in place). When
 * chosen_lp is not NULL it gets the chosen token's log-probability, and
 * top[0..n_top) the most likely tokens with theirs (n_top <= 20).
 */
int32_t sampler_sample(struct sampler *s, struct sampler_scratch *w, float *logits, float *chosen_lp,
		       struct sampler_logprob *top, int n_top);

struct kern_top;
/* True when the next token may be picked from the row's struct kern_top
 * (a backend's top candidates): no penalties, and greedy, top_k within the
 * candidates or top_k off. Whether they do for this row and this draw is
 * sampler_top_covers's to say, after the step. */
bool sampler_top_ok(const struct sampler *s);
/*
 * True when sampler_sample_top can pick the next token from c alone:
 * greedy or top_k within the candidates always; with top_k off, when the
 * top_p nucleus or the min_p set lies within the candidates, or the draw
 * (the generator's next number, peeked, not taken) lands among them. Else
 * the row is needed whole (sampler_sample).
 */
bool sampler_top_covers(const struct sampler *s, struct sampler_scratch *w, const struct kern_top *c);
/* sampler_sample from the candidates: the same token for the same generator
 * state, by the same truncation arithmetic (with top_k off, the sums over
 * the whole row come from c: where top_p's cumulative mass, or the draw,
 * falls within their rounding of a boundary, the two may differ); the
 * log-probabilities differ from the whole row's by the rounding of lse.
 * -1, the generator untouched, when sampler_top_covers(s, w, c) fails.
 * Temperatures below 1e-5 are greedy (sampler_init). */
int32_t sampler_sample_top(struct sampler *s, struct sampler_scratch *w, const struct kern_top *c, float *chosen_lp,
			   struct sampler_logprob *top, int n_top);

#endif
