/*
 * types.c: geometry of every GGML element type, so that files holding types
 * we do not compute with can still be validated and listed; and which types
 * the backends support.
 */
#include "kernels/kernels.h"

struct type_row {
	const char *name;
	int block_elems;
	int block_bytes;
	bool supported;
};

/* Indexed by GGML type id; holes are ids GGML has retired. */
static const struct type_row g_types[KERN_TYPE_MAX] = {
	[0] = {"F32", 1, 4, true},
	[1] = {"F16", 1, 2, true},
	[2] = {"Q4_0", 32, 18, true},
	[3] = {"Q4_1", 32, 20, true},
	[6] = {"Q5_0", 32, 22, false},
	[7] = {"Q5_1", 32, 24, false},
	[8] = {"Q8_0", 32, 34, true},
	[9] = {"Q8_1", 32, 36, false},
	[10] = {"Q2_K", 256, 84, false},
	[11] = {"Q3_K", 256, 110, false},
	[12] = {"Q4_K", 256, 144, true},
	[13] = {"Q5_K", 256, 176, false},
	[14] = {"Q6_K", 256, 210, true},
	[15] = {"Q8_K", 256, 292, false},
	[16] = {"IQ2_XXS", 256, 66, false},
	[17] = {"IQ2_XS", 256, 74, false},
	[18] = {"IQ3_XXS", 256, 98, false},
	[19] = {"IQ1_S", 256, 50, false},
	[20] = {"IQ4_NL", 32, 18, false},
	[21] = {"IQ3_S", 256, 110, false},
	[22] = {"IQ2_S", 256, 82, false},
	[23] = {"IQ4_XS", 256, 136, false},
	[24] = {"I8", 1, 1, false},
	[25] = {"I16", 1, 2, false},
	[26] = {"I32", 1, 4, false},
	[27] = {"I64", 1, 8, false},
	[28] = {"F64", 1, 8, false},
	[29] = {"IQ1_M", 256, 56, false},
	[30] = {"BF16", 1, 2, true},
	[34] = {"TQ1_0", 256, 54, false},
	[35] = {"TQ2_0", 256, 66, false},
	[39] = {"MXFP4", 32, 17, false},
};

static const struct type_row *row(uint32_t type)
{
	if (type >= KERN_TYPE_MAX || !g_types[type].name)
		return NULL;
	return &g_types[type];
}

const char *kern_type_name(uint32_t type)
{
	const struct type_row *r = row(type);
	return r ? r->name : NULL;
}

int kern_type_block_elems(uint32_t type)
{
	const struct type_row *r = row(type);
	return r ? r->block_elems : 0;
}

int kern_type_block_bytes(uint32_t type)
{
	const struct type_row *r = row(type);
	return r ? r->block_bytes : 0;
}

bool kern_type_supported(uint32_t type)
{
	const struct type_row *r = row(type);
	return r && r->supported;
}

size_t kern_row_bytes(uint32_t type, int64_t n)
{
	const struct type_row *r = row(type);
	if (!r || n <= 0 || n % r->block_elems)
		return 0;
	return (size_t)(n / r->block_elems) * (size_t)r->block_bytes;
}
