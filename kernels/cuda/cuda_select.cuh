/*
 * cuda_select.cuh: argmax and the top-64 candidates of logits rows.
 * Included by cuda_kernels.cuh only (it needs that file's helpers).
 */
#ifndef LOCUS_KERNELS_CUDA_CUDA_SELECT_CUH
#define LOCUS_KERNELS_CUDA_CUDA_SELECT_CUH

/*
 * Argmax and the top-64 candidates of logits rows, in two passes: the
 * segments of every row in parallel (SEL_SEG entries each, at most
 * SEL_MAX_SEG segments; 63 blocks for a 128k vocabulary), then one block per
 * row merges its segments' results. One block per whole row left most of
 * the GPU idle and read the row seven times from one SM (kbench measured
 * 736 us for the top-64 of one 128k row, 36 us for its argmax).
 */
#define SEL_SEG 2048
#define SEL_MAX_SEG 64
#define SEL_PART_THREADS 256
#define TOP_MERGE_THREADS 1024

static inline __host__ __device__ int sel_segments(int n)
{
	int s = (n + SEL_SEG - 1) / SEL_SEG;
	return s < 1 ? 1 : s > SEL_MAX_SEG ? SEL_MAX_SEG : s;
}

/* kern_top_key (kernels.h) on the device: NaN lowest, -0 equal to +0. */
__device__ __forceinline__ uint32_t top_key(float v)
{
	if (v != v)
		return 0;
	uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
	return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* Argmax order as one number: the larger value, then the lower index; a
 * NaN loses to everything, so an all-NaN row gives index 0 (kern_argmax). */
__device__ __forceinline__ unsigned long long amax_key(float v, int i)
{
	return (unsigned long long)top_key(v) << 32 | (uint32_t)~(uint32_t)i;
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v)
{
	for (int o = WARP / 2; o > 0; o >>= 1) {
		unsigned long long u = __shfl_xor_sync(0xffffffffu, v, o);
		v = u > v ? u : v;
	}
	return v;
}

/* part[row][segment] = the segment's best amax_key (0 when empty); block
 * (row, segment): rows on x, whose limit (2^31 - 1) is past any batch */
static __global__ void __launch_bounds__(SEL_PART_THREADS) k_argmax_part(const float *x, int n, int S,
									  unsigned long long *part)
{
	__shared__ unsigned long long red[SEL_PART_THREADS / WARP];
	pdl_trigger();
	pdl_wait();
	const int seg = (n + S - 1) / S, lo = blockIdx.y * seg, hi = min(n, lo + seg);
	const float *r = x + (size_t)blockIdx.x * n;
	unsigned long long best = 0;
	for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
		unsigned long long k = amax_key(r[i], i);
		best = k > best ? k : best;
	}
	best = warp_max_u64(best);
	if (threadIdx.x % WARP == 0)
		red[threadIdx.x / WARP] = best;
	__syncthreads();
	if (threadIdx.x < WARP) {
		best = threadIdx.x < blockDim.x / WARP ? red[threadIdx.x] : 0;
		best = warp_max_u64(best);
		if (threadIdx.x == 0)
			part[(size_t)blockIdx.x * S + blockIdx.y] = best;
	}
}

/* out[row] = the first index of the row's maximum; NaNs never win (0 when all are NaN). One warp per row. */
static __global__ void k_argmax_merge(const unsigned long long *part, int S, int32_t *out)
{
	pdl_trigger();
	pdl_wait();
	unsigned long long best = 0;
	for (int s = threadIdx.x; s < S; s += WARP) {
		unsigned long long k = part[(size_t)blockIdx.x * S + s];
		best = k > best ? k : best;
	}
	best = warp_max_u64(best);
	if (threadIdx.x == 0)
		out[blockIdx.x] = best ? (int32_t)~(uint32_t)best : 0;
}

/* A segment's candidates: its KERN_TOP_K largest (fewer when shorter), in
 * the order block_top leaves them, and the sums the merge needs. */
struct top_part {
	float m;     /* the NaN-free maximum (-inf when none) */
	float sum;   /* sum of exp(x - m) */
	float sum_t; /* sum of exp((x - m) inv_t) */
	float nan;   /* 1 when the segment holds a NaN */
	int32_t n, pad_[3];
	int32_t id[KERN_TOP_K];
	float v[KERN_TOP_K];
};

/* Shared state of block_top. */
struct sel_smem {
	uint32_t hist[256];
	uint32_t prefix, kk;
	int wgt[32], weq[32];
	int ngt, neq;
};

/*
 * The K largest by top_key of the n entries get(i, &v, &id) (false: no
 * entry at i) that a block holds, ties going to the lower i, into
 * out_id/out_v[0, K): first those above the K-th key, in order of i, then
 * the first entries equal to it, in order of i. The K-th largest key is
 * found a byte per pass (four passes, a 256-bin histogram of the keys that
 * match the bytes found so far); a compaction in order of i takes the
 * winners. K is at most the number of entries. Every thread calls it.
 */
template <typename G>
__device__ void block_top(int n, int K, G get, struct sel_smem *s, int32_t *out_id, float *out_v)
{
	const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP, nw = blockDim.x / WARP;
	uint32_t prefix = 0, mask = 0, kk = (uint32_t)K;
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (int i = tid; i < 256; i += blockDim.x)
			s->hist[i] = 0;
		__syncthreads();
		/* Real logits share few top bytes: lanes with the same bin add
		 * once for the warp (__match_any_sync), not 32 times on one address. */
		for (int base = 0; base < n; base += blockDim.x) {
			int i = base + tid, id = 0;
			float v = 0;
			bool ok = i < n && get(i, &v, &id);
			uint32_t k = ok ? top_key(v) : 0;
			bool in = ok && (k & mask) == prefix;
			uint32_t bin = in ? (k >> shift) & 255u : 256u + (uint32_t)lane; /* outsiders: alone */
			unsigned peers = __match_any_sync(0xffffffffu, bin);
			if (in && lane == __ffs(peers) - 1)
				atomicAdd(&s->hist[bin], (uint32_t)__popc(peers));
		}
		__syncthreads();
		if (w == 0) {
			/* Lane l holds bins 255 - 8l down to 248 - 8l; the bin where
			 * the count from the top reaches kk (bin 0 at the latest). */
			uint32_t c[8], tot = 0;
#pragma unroll
			for (int j = 0; j < 8; j++) {
				c[j] = s->hist[255 - 8 * lane - j];
				tot += c[j];
			}
			uint32_t incl = tot;
			for (int o = 1; o < WARP; o <<= 1) {
				uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
				if (lane >= o)
					incl += y;
			}
			unsigned hit = __ballot_sync(0xffffffffu, incl >= kk);
			if (lane == (hit ? __ffs(hit) - 1 : WARP - 1)) {
				uint32_t cum = incl - tot;
				int b = 255 - 8 * lane;
				for (int j = 0; j < 8; j++, b--) {
					if (cum + c[j] >= kk || b == 0)
						break;
					cum += c[j];
				}
				s->prefix = prefix | (uint32_t)b << shift;
				s->kk = kk - cum;
			}
		}
		__syncthreads();
		prefix = s->prefix;
		kk = s->kk;
		mask |= 255u << shift;
	}

	/* compaction in order of i: the K - kk keys above the threshold, then
	 * the first kk equal to it */
	if (tid == 0) {
		s->ngt = 0;
		s->neq = 0;
	}
	__syncthreads();
	const unsigned below = (1u << lane) - 1u;
	for (int base = 0; base < n; base += blockDim.x) {
		int i = base + tid, id = 0;
		float v = 0;
		bool ok = i < n && get(i, &v, &id);
		uint32_t k = ok ? top_key(v) : 0;
		bool gt = ok && k > prefix, eq = ok && k == prefix;
		unsigned bg = __ballot_sync(0xffffffffu, gt), be = __ballot_sync(0xffffffffu, eq);
		if (lane == 0) {
			s->wgt[w] = __popc(bg);
			s->weq[w] = __popc(be);
		}
		__syncthreads();
		int og = s->ngt + __popc(bg & below), oe = s->neq + __popc(be & below);
		for (int j = 0; j < w; j++) {
			og += s->wgt[j];
			oe += s->weq[j];
		}
		int at = gt ? og : eq && oe < (int)kk ? K - (int)kk + oe : -1;
		if (at >= 0) {
			out_id[at] = id;
			out_v[at] = v;
		}
		__syncthreads();
		if (tid == 0)
			for (int j = 0; j < nw; j++) {
				s->ngt += s->wgt[j];
				s->neq += s->weq[j];
			}
		__syncthreads();
	}
}

/* Pass 1: part[row][segment], the segment's candidates and sums at the
 * row's inverse temperature inv_t[row] (1 when inv_t is NULL); block
 * (row, segment). */
static __global__ void __launch_bounds__(SEL_PART_THREADS) k_top_part(const float *x, int n, const float *inv_t, int S,
								       struct top_part *part)
{
	__shared__ struct sel_smem s;
	__shared__ float red[SEL_PART_THREADS / WARP];
	pdl_trigger();
	pdl_wait();
	const int seg = (n + S - 1) / S, lo = blockIdx.y * seg, len = max(0, min(n - lo, seg));
	const float *r = x + (size_t)blockIdx.x * n + lo;
	struct top_part *p = part + (size_t)blockIdx.x * S + blockIdx.y;
	const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP, nw = blockDim.x / WARP;

	float m = -INFINITY, nan = 0;
	for (int i = tid; i < len; i += blockDim.x) {
		float v = r[i];
		if (v != v)
			nan = 1;
		else
			m = fmaxf(m, v);
	}
	for (int o = WARP / 2; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	if (lane == 0)
		red[w] = m;
	__syncthreads();
	m = -INFINITY;
	for (int j = 0; j < nw; j++)
		m = fmaxf(m, red[j]);
	__syncthreads();
	nan = block_sum(nan, red);
	const float it = inv_t ? inv_t[blockIdx.x] : 1.0f;
	float sum = 0, sum_t = 0;
	if (nan == 0 && m > -INFINITY)
		for (int i = tid; i < len; i += blockDim.x) {
			sum += expf(r[i] - m);
			sum_t += expf((r[i] - m) * it);
		}
	sum = block_sum(sum, red);
	sum_t = block_sum(sum_t, red);
	const int K = len < KERN_TOP_K ? len : KERN_TOP_K;
	block_top(
	    len, K,
	    [=](int i, float *v, int *id) {
		    *v = r[i];
		    *id = lo + i;
		    return true;
	    },
	    &s, p->id, p->v);
	if (tid == 0) {
		p->m = m;
		p->sum = sum;
		p->sum_t = sum_t;
		p->nan = nan;
		p->n = K;
	}
}

/*
 * Pass 2, one block per row: its KERN_TOP_K largest entries by top_key,
 * ties by lower id, sorted, its log-sum-exp and the sums relative to its
 * maximum (lz, and lz_t at the row's inverse temperature) as kern_top_row
 * computes them (the host samples from these; see sampler_sample_top).
 * Segment s's candidates precede segment s + 1's, and within a segment
 * equal keys come in id order, so block_top's "ties in order of i" is
 * "ties by lower id" here too.
 */
static __global__ void __launch_bounds__(TOP_MERGE_THREADS) k_top_merge(const struct top_part *part, int S, int n,
									 const float *inv_t, struct kern_top *out)
{
	__shared__ struct sel_smem s;
	__shared__ int32_t ci[KERN_TOP_K];
	__shared__ float cv[KERN_TOP_K];
	pdl_trigger();
	pdl_wait();
	const struct top_part *pp = part + (size_t)blockIdx.x * S;
	struct kern_top *o = out + blockIdx.x;
	const int tid = threadIdx.x, K = n < KERN_TOP_K ? n : KERN_TOP_K;
	if (tid < WARP) {
		/* the row's sums from the segments' (S <= 64: two per lane) */
		float m = -INFINITY, nan = 0;
		for (int j = tid; j < S; j += WARP) {
			m = fmaxf(m, pp[j].m);
			nan += pp[j].nan;
		}
		for (int d = WARP / 2; d > 0; d >>= 1) {
			m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, d));
			nan += __shfl_xor_sync(0xffffffffu, nan, d);
		}
		const float it = inv_t ? inv_t[blockIdx.x] : 1.0f;
		float sum = 0, sum_t = 0;
		if (nan == 0 && m > -INFINITY)
			for (int j = tid; j < S; j += WARP)
				if (pp[j].m > -INFINITY) {
					sum += pp[j].sum * expf(pp[j].m - m);
					sum_t += pp[j].sum_t * expf((pp[j].m - m) * it);
				}
		sum = warp_sum(sum);
		sum_t = warp_sum(sum_t);
		if (tid == 0) {
			o->n = K > 0 ? K : 0;
			o->lse = nan != 0 ? NAN : m > -INFINITY ? m + logf(sum) : -INFINITY;
			o->lz = nan != 0 ? NAN : m > -INFINITY ? logf(sum) : -INFINITY;
			o->lz_t = nan != 0 ? NAN : m > -INFINITY ? logf(sum_t) : -INFINITY;
		}
	}
	if (K <= 0)
		return;
	block_top(
	    S * KERN_TOP_K, K,
	    [=](int i, float *v, int *id) {
		    const struct top_part *q = pp + i / KERN_TOP_K;
		    const int j = i % KERN_TOP_K;
		    if (j >= q->n)
			    return false;
		    *v = q->v[j];
		    *id = q->id[j];
		    return true;
	    },
	    &s, ci, cv);
	__syncthreads();
	/* placed by rank: larger key first, then lower id */
	if (tid < K) {
		uint32_t k = top_key(cv[tid]);
		int32_t id = ci[tid];
		int rank = 0;
		for (int j = 0; j < K; j++) {
			uint32_t kj = top_key(cv[j]);
			rank += kj > k || (kj == k && ci[j] < id);
		}
		o->id[rank] = id;
		o->logit[rank] = cv[tid];
	}
}

/* Device scratch the two selections need for rows rows of n logits. */
static inline size_t sel_scratch_bytes(int rows, int n)
{
	return (size_t)rows * sel_segments(n) * sizeof(struct top_part);
}

/* out[rows]: each row's argmax (kern_argmax's), through scratch. */
static inline void argmax_launch(const float *x, int n, int rows, void *scratch, int32_t *out, cudaStream_t st,
				 bool pdl = false)
{
	const int S = sel_segments(n);
	launch(k_argmax_part, dim3(rows, S), dim3(SEL_PART_THREADS), 0, st, pdl, x, n, S, (unsigned long long *)scratch);
	launch(k_argmax_merge, dim3(rows), dim3(WARP), 0, st, pdl, (const unsigned long long *)scratch, S, out);
}

/* out[rows]: each row's candidates (kern_top_row's), through scratch. */
static inline void top_launch(const float *x, int n, const float *inv_t, int rows, void *scratch, struct kern_top *out,
			      cudaStream_t st)
{
	const int S = sel_segments(n);
	k_top_part<<<dim3(rows, S), SEL_PART_THREADS, 0, st>>>(x, n, inv_t, S, (struct top_part *)scratch);
	k_top_merge<<<rows, TOP_MERGE_THREADS, 0, st>>>((const struct top_part *)scratch, S, n, inv_t, out);
}

#endif
