/* DEV-ONLY (not built by CMake, not run by any test): dump llama.cpp's logits
 * for every prompt position, to validate tests/ref/llama_ref.py against the
 * real llama.cpp.  Build against a llama.cpp build tree L:
 *
 *   cc -O2 -o /tmp/llamacpp_logits tests/ref/dev/llamacpp_logits.c \
 *      -I$L/include -I$L/ggml/include -L$L/build/bin -lllama -lggml -lggml-base \
 *      -Wl,-rpath,$L/build/bin
 *   /tmp/llamacpp_logits MODEL.gguf 1,2,3 OUT.f32 [N_GREEDY]
 *
 * Writes float32 (n_tokens, n_vocab) and prints N_GREEDY greedy token ids.
 * LCPP_KV_F32=1 in the environment: f32 KV cache and no flash attention.
 * Weight repacking (extra buffer types, e.g. AMX) is disabled: it crashes in
 * this sandbox and changes numerics anyway. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL ids OUT.f32 [n_greedy]\n", argv[0]);
        return 2;
    }
    int n_greedy = argc > 4 ? atoi(argv[4]) : 0;
    int cap = 4096, n = 0;
    llama_token *toks = malloc(sizeof(*toks) * cap);
    for (char *s = strtok(argv[2], ","); s; s = strtok(NULL, ",")) toks[n++] = atoi(s);

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_extra_bufts = false;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 1024;
    cp.n_ubatch = 1024;
    cp.n_threads = cp.n_threads_batch = 2;
    if (getenv("LCPP_KV_F32")) { /* all-f32 attention: isolates the reference's math */
        cp.type_k = cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;

    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = toks[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b)) return 1;
    FILE *f = fopen(argv[3], "wb");
    for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, f);
    fclose(f);

    int pos = n;
    const float *last = llama_get_logits_ith(ctx, n - 1);
    for (int g = 0; g < n_greedy; g++) {
        int best = 0;
        for (int v = 1; v < n_vocab; v++)
            if (last[v] > last[best]) best = v;
        printf(g ? ",%d" : "%d", best);
        llama_token t = best;
        struct llama_batch one = llama_batch_get_one(&t, 1);
        (void)pos;
        pos++;
        if (llama_decode(ctx, one)) return 1;
        last = llama_get_logits_ith(ctx, -1);
    }
    if (n_greedy) printf("\n");
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    free(toks);
    return 0;
}
