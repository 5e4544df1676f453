/*
 * test_batch: continuous batching is exact. Sequences run alone (prefill in
 * one chunk, then decode) give reference logits; the same sequences run
 * interleaved in mixed steps (prefill chunks of one sequence next to decode
 * tokens of others, sequences joining and leaving, a new sequence reusing
 * freed KV blocks) must give bitwise identical logits, because every kernel
 * computes a token's result independently of its batch.
 * The model is a synthetic one written by build/bin/mkmodel (LOCUS_BIN).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "tests/check.h"


#define N_SEQ 4
#define N_DEC 6
static const int prompt_len[N_SEQ] = {37, 20, 5, 29};

static int32_t tok_of(int s, int i) /* deterministic, varied ids */
{
	return (int32_t)((s * 7919 + i * 104729 + 13) % 500) + 3;
}

/* ref[s][j]: logits after position prompt_len + j - 1 (j = 0: end of prompt). */
static float *ref[N_SEQ][N_DEC + 1];

static void run_alone(struct engine_core *c, int s, int V)
{
	struct kv_seq q;
	kv_seq_init(&q);
	int32_t toks[64];
	for (int i = 0; i < prompt_len[s]; i++)
		toks[i] = tok_of(s, i);
	ref[s][0] = malloc(sizeof(float) * V);
	CHECK(engine_seq_feed(c, &q, toks, prompt_len[s], ref[s][0], NULL) == 0, "alone prefill");
	for (int j = 1; j <= N_DEC; j++) {
		int32_t t = tok_of(s, prompt_len[s] + j - 1);
		ref[s][j] = malloc(sizeof(float) * V);
		CHECK(engine_seq_feed(c, &q, &t, 1, ref[s][j], NULL) == 0, "alone decode");
	}
	kv_seq_free(&c->kv, &q);
}

struct live {
	struct kv_seq kv;
	int fed;   /* tokens fed so far */
	int total; /* prompt + decode tokens */
};

int main(void)
{
	const char *bin = getenv("LOCUS_BIN") ? getenv("LOCUS_BIN") : "build/bin";
	char path[] = "/tmp/locus-test-batch-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return 1;
	close(fd);
	char cmd[1024];
	const char *types[] = {"Q4_K", "Q8_0", "F16"};
	for (int ty = 0; ty < 3; ty++) {
		snprintf(cmd, sizeof(cmd),
			 "%s/mkmodel -o %s --layers 2 --dim 256 --heads 4 --kv-heads 2 --ffn 512 --type %s --seed 5", bin,
			 path, types[ty]);
		if (system(cmd) != 0) {
			fprintf(stderr, "cannot run %s\n", cmd);
			return 1;
		}
		struct engine_opts o;
		engine_opts_default(&o);
		o.model_path = path;
		o.n_threads = 2;
		o.kv_block_size = 8; /* small blocks: sequences span many, reuse is visible */
		o.kv_tokens = 8 * 24;
		o.max_batch_tokens = 64;
		struct engine_core c;
		char err[512];
		if (engine_core_open(&c, &o, err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		const int V = c.model->w.hp.n_vocab;
		for (int s = 0; s < N_SEQ; s++)
			run_alone(&c, s, V);

		/* Interleaved: seq 3 starts only after seq 1 has finished and given
		 * its blocks back. Each step: up to 11 prompt tokens per prefilling
		 * sequence, one token per decoding sequence. */
		struct live L[N_SEQ];
		for (int s = 0; s < N_SEQ; s++) {
			kv_seq_init(&L[s].kv);
			L[s].fed = 0;
			L[s].total = prompt_len[s] + N_DEC;
		}
		float *logits = malloc(sizeof(float) * V * 64);
		int steps = 0, checked = 0;
		for (;;) {
			batch_clear(&c.batch);
			int want_seq[64], want_j[64], n_want = 0;
			bool any = false;
			for (int s = 0; s < N_SEQ; s++) {
				if (L[s].fed >= L[s].total)
					continue;
				if (s == 3 && L[1].fed < L[1].total)
					continue; /* waits for seq 1's blocks */
				if (s == 2 && steps < 1)
					continue; /* joins one step late */
				int n = L[s].fed < prompt_len[s] ? prompt_len[s] - L[s].fed : 1;
				n = n > 11 ? 11 : n;
				CHECK(kv_seq_reserve(&c.kv, &L[s].kv, L[s].fed + n) == 0, "reserve");
				int si = batch_add_seq(&c.batch, &L[s].kv);
				for (int i = 0; i < n; i++) {
					int p = L[s].fed + i;
					/* logits wanted at the end of the prompt and at each decode step */
					bool want = p >= prompt_len[s] - 1;
					batch_add_token(&c.batch, si, tok_of(s, p), p, want);
					if (want) {
						want_seq[n_want] = s;
						want_j[n_want++] = p - (prompt_len[s] - 1);
					}
				}
				L[s].fed += n;
				any = true;
			}
			if (!any)
				break;
			CHECK(kern_backend_step(c.be, &c.batch.kb, logits) == 0, "mixed step");
			for (int i = 0; i < n_want; i++) {
				int s = want_seq[i], j = want_j[i];
				if (memcmp(logits + (size_t)i * V, ref[s][j], sizeof(float) * V) != 0) {
					double md = 0;
					for (int v = 0; v < V; v++)
						md = fmax(md, fabs(logits[(size_t)i * V + v] - ref[s][j][v]));
					CHECK(0, "%s: seq %d step %d: logits differ from the sequence run alone (max |diff| %g)",
					      types[ty], s, j, md);
				}
				checked++;
			}
			for (int s = 0; s < N_SEQ; s++)
				if (L[s].fed >= L[s].total && L[s].kv.n_blocks)
					kv_seq_release(&c.kv, &L[s].kv);
			steps++;
		}
		CHECK(checked == N_SEQ * (N_DEC + 1), "%s: %d logits rows checked", types[ty], checked);
		CHECK(c.kv.n_free == c.kv.n_blocks, "%s: every KV block returned", types[ty]);
		printf("test_batch %s: %d mixed steps, %d logits rows bitwise equal to solo runs\n", types[ty], steps,
		       checked);
		for (int s = 0; s < N_SEQ; s++) {
			kv_seq_free(&c.kv, &L[s].kv);
			for (int j = 0; j <= N_DEC; j++)
				free(ref[s][j]);
		}
		free(logits);
		engine_core_close(&c);
	}
	unlink(path);
	return check_status("test_batch");
}
