/*
 * model.h: a Llama-family model loaded from a GGUF file: hyperparameters and
 * weight views (struct kern_weights) into the mapped file, after checking
 * that every tensor the architecture needs is present, shaped as the
 * hyperparameters say, and of a type the backends compute with.
 *
 * Weights are never copied: the backends read them from the mapping.
 */
#ifndef LOCUS_ENGINE_MODEL_H
#define LOCUS_ENGINE_MODEL_H

#include <stddef.h>

#include "engine/gguf.h"
#include "kernels/kernels.h"

struct model {
	struct gguf_file *gguf;
	struct kern_weights w;
	char arch[32];
	char name[128];
	size_t weight_bytes; /* bytes of all weight tensors used */
	double load_ms;
};

#define MODEL_LOAD_POPULATE 1u /* pre-fault the file mapping */

/* 0 or -errno; on error errbuf says what is wrong (tensor, field, offset). */
int model_load(const char *path, unsigned flags, struct model **out, char *errbuf, size_t errlen);
/* The same on an already opened file; the model takes ownership of f (also
 * on failure). */
int model_load_gguf(struct gguf_file *f, struct model **out, char *errbuf, size_t errlen);
void model_free(struct model *m);

#endif
