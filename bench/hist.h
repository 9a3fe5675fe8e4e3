/*
 * hist.h - the latency histogram of nsbench and nsops (one definition for
 * both): log-linear buckets in the manner of HdrHistogram (Gil Tene, "HDR
 * Histogram", http://hdrhistogram.org/), written here from that idea.
 * Everything is static: each benchmark is one translation unit.
 */
#ifndef NS_BENCH_HIST_H
#define NS_BENCH_HIST_H

#include <math.h>
#include <stdint.h>

/*
 * Bucket layout.  Values below HIST_EXACT (64 ns) get one bucket each.  A
 * value v >= 64 with highest set bit e falls in the power-of-two range
 * [2^e, 2^(e+1)), which is cut into HIST_SUB = 32 equal sub-buckets of
 * width 2^(e-5); the sub-bucket is bits e-1..e-5 of v.  A bucket is thus at
 * most 1/32 (3.1%) of the values it holds, and reporting its midpoint puts
 * the error under 1.6%: 1 ns below 64 ns, 8 ns around 500 ns, 31 µs
 * around 1 ms.  Powers of two from 2^6 to 2^63 need 58 * 32 buckets; the
 * whole histogram is 15 KiB.
 */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_EXACT (2u * HIST_SUB)
#define HIST_BUCKETS (HIST_EXACT + (64u - HIST_SUB_BITS - 1u) * HIST_SUB)

struct hist {
	uint64_t n;                     /* values recorded */
	uint64_t sum;                   /* their sum, for the mean */
	uint64_t max;                   /* the largest, exact */
	uint64_t count[HIST_BUCKETS];
};

static inline unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < HIST_EXACT)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	return HIST_EXACT + (e - HIST_SUB_BITS - 1u) * HIST_SUB +
	       (unsigned)((v >> (e - HIST_SUB_BITS)) - HIST_SUB);
}

/* The midpoint of bucket I, the value reported for everything in it. */
static inline uint64_t hist_value(unsigned i)
{
	unsigned j, e;
	uint64_t lo, width;

	if (i < HIST_EXACT)
		return i;
	j = i - HIST_EXACT;
	e = j / HIST_SUB + HIST_SUB_BITS + 1u;
	width = (uint64_t)1 << (e - HIST_SUB_BITS);
	lo = (uint64_t)(HIST_SUB + j % HIST_SUB) * width;
	return lo + width / 2;
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->n++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	h->count[hist_index(v)]++;
}

static inline void hist_merge(struct hist *into, const struct hist *from)
{
	into->n += from->n;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->count[i] += from->count[i];
}

/*
 * The value at quantile Q (0.5 for the median): the bucket holding the
 * ceil(Q * n)-th smallest value.  The top bucket is reported as the exact
 * maximum, which it always contains.
 */
static inline uint64_t hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->n == 0)
		return 0;
	rank = (uint64_t)ceil(q * (double)h->n);
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);

			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

#endif /* NS_BENCH_HIST_H */
