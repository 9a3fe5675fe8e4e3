/*
 * nsbench.c - throughput and latency of NameStore against the one-lock
 * baseline that shared-memory caches use today.
 *
 * nsbench forks N processes that run a closed loop of gets and sets on one
 * shared key set for a fixed time, and measures every operation.  It runs
 * the same loop on two backends, one after the other:
 *
 *   ns      a private NameStore segment, created by the parent with
 *           ns_attach(NS_CREATE), preloaded, then shared with the children
 *           through the handle they inherit across fork().
 *
 *   rwlock  what APCu and nginx's lua_shared_dict do: one chained hash table
 *           in a MAP_SHARED|MAP_ANONYMOUS region (a fixed bucket array,
 *           fixed-size entries carved from a preallocated array, offsets
 *           instead of pointers) behind ONE process-shared pthread_rwlock_t.
 *           A get takes the read lock and copies the value out; a set takes
 *           the write lock and overwrites the value in place.
 *
 * Both backends see the same keys ("key:%08u"), the same value size, the
 * same read/write mix and the same key distribution, drawn from the same
 * per-process random streams, so the difference in the numbers is the
 * difference between the stores.
 *
 * Latency.  Every operation is bracketed by two clock_gettime(CLOCK_MONOTONIC)
 * calls and the difference is recorded in a per-process histogram of the
 * HdrHistogram kind (Gil Tene, "HdrHistogram: A High Dynamic Range
 * Histogram", http://hdrhistogram.org/): values are grouped by their power
 * of two and each power of two is split into HIST_SUB linear sub-buckets, so
 * the error relative to the value is bounded everywhere while the table
 * stays small and recording is a few shifts.  The children write their
 * histograms and counters into their own slot of a MAP_SHARED region, and
 * the parent merges them after the run.  The cost of one timer call is
 * measured at start-up and printed, because every latency includes it.
 *
 * Output.  Lines starting with '#' describe the run; every other line is a
 * list of key=value fields, one line per backend and operation, so that
 * `grep -v '^#'` plus a split on spaces and '=' parses it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "namestore.h"
#include "common.h"
#include "hist.h"

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

enum { BACKEND_NS = 1u << 0, BACKEND_RWLOCK = 1u << 1 };

struct config {
	unsigned procs;         /* worker processes per backend */
	double seconds;         /* length of the timed loop */
	uint32_t keys;          /* size of the key set */
	size_t value_size;      /* bytes of every value */
	unsigned read_pct;      /* share of gets, 0 to 100 */
	bool zipf;              /* key distribution: Zipf or uniform */
	double zipf_s;          /* Zipf exponent */
	unsigned backends;      /* BACKEND_* bits */
	size_t size;            /* bytes of the NameStore segment */
	bool prefer_writer;     /* rwlock kind: see rw_setup() */
	uint64_t seed;          /* base of the per-process random streams */
	const char *nsd;        /* run this nsd on the segment; NULL: none */
};

/*
 * 0.99 is the Zipf constant of YCSB (Cooper et al., "Benchmarking Cloud
 * Serving Systems with YCSB", SoCC 2010), the usual stand-in for the skew of
 * real cache traffic.
 */
#define DEFAULT_ZIPF_S 0.99
#define DEFAULT_KEYS 100000u
#define DEFAULT_VALUE_SIZE 64u
#define DEFAULT_READ_PCT 90u
#define DEFAULT_SECONDS 5.0
#define DEFAULT_SIZE ((size_t)256 << 20)

/*
 * The largest value the rwlock table accepts; entries are fixed-size, so
 * this only guards against a typo allocating gigabytes per key.
 */
#define MAX_VALUE_SIZE ((size_t)1 << 20)

/* More processes than this is a typo, not a benchmark. */
#define MAX_PROCS 4096u

/*
 * How long the parent waits for the children to get ready (allocate their
 * buffers and report in) before it gives up on the run.  Setting up is a
 * few mallocs, so anything near this bound means a child is stuck.
 */
#define READY_TIMEOUT_NS (30ull * 1000000000ull)

/* Time, children and argument parsing: bench/common.h, shared with nsops. */

/* ------------------------------------------------------------------------ */
/* Random numbers                                                           */
/* ------------------------------------------------------------------------ */

/*
 * SplitMix64 (Steele, Lea and Flood, "Fast Splittable Pseudorandom Number
 * Generators", OOPSLA 2014): one add and three xor-shift-multiply rounds per
 * number, good enough statistically for choosing keys and operations, and
 * cheap enough to stay out of the way of a 50 ns operation.  Each process
 * seeds its own stream from its index, so runs repeat.
 */
static inline uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * A number in [0, n) from the top 32 bits of X by multiply-and-shift
 * (Lemire, "Fast Random Integer Generation in an Interval", ACM TOMACS
 * 2019, without the rejection step): the bias is below n / 2^32, far under
 * anything this benchmark can see, and there is no division.
 */
static inline uint32_t rng_below(uint64_t x, uint32_t n)
{
	return (uint32_t)(((x >> 32) * (uint64_t)n) >> 32);
}

/* A double in [0, 1) from the top 53 bits of X. */
static inline double rng_unit(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53;
}

/* ------------------------------------------------------------------------ */
/* Key distribution                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Zipf sampling by discrete inversion (Devroye, "Non-Uniform Random Variate
 * Generation", Springer 1986, chapter III, section 2: the inversion method
 * for discrete distributions, here searching the cumulative table by
 * bisection).  cdf[i] is P(rank <= i) for ranks 0..keys-1 with
 * P(rank = i) proportional to 1 / (i + 1)^s.  A uniform u in [0, 1) maps to
 * the first rank whose cdf reaches u: about log2(keys) probes (17 for the
 * default 100,000 keys) and 8 bytes of table per key, built once in the
 * parent and shared copy-on-write with the children.  Rank i is key i;
 * both stores hash the key, so where the hot keys sit in the key space
 * does not matter.
 */
static double *zipf_table(uint32_t keys, double s)
{
	double *cdf = malloc((size_t)keys * sizeof(*cdf));
	double sum = 0.0;

	if (!cdf)
		return NULL;
	for (uint32_t i = 0; i < keys; i++) {
		sum += 1.0 / pow((double)i + 1.0, s);
		cdf[i] = sum;
	}
	for (uint32_t i = 0; i < keys; i++)
		cdf[i] /= sum;
	/* Rounding must not leave a u in [cdf[keys-1], 1) without a rank. */
	cdf[keys - 1] = 1.0;
	return cdf;
}

static inline uint32_t zipf_pick(const double *cdf, uint32_t keys, double u)
{
	uint32_t lo = 0, hi = keys - 1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (cdf[mid] < u)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Latency histogram: bench/hist.h, shared with nsops. */

/* ------------------------------------------------------------------------ */
/* Shared run state                                                         */
/* ------------------------------------------------------------------------ */

enum op { OP_GET, OP_SET, OP_COUNT };

static const char *const op_name[OP_COUNT] = { "get", "set" };

/*
 * What one child reports.  The child is the only writer of its slot, and the
 * parent reads it only after waitpid() has returned for that child, which
 * orders the child's stores before the parent's loads.  The slot starts on
 * a cache line of its own so that neighbours do not share a line.
 */
struct proc_result {
	_Alignas(64) uint64_t ops[OP_COUNT];
	uint64_t errors[OP_COUNT];      /* unexpected return codes */
	int first_error;                /* the first of them, 0 if none */
	uint64_t hits, misses;          /* outcome of the gets */
	uint64_t end_ns;                /* when the child's last op ended */
	struct hist lat[OP_COUNT];
};

/*
 * The start line.  Children count themselves in on READY and then wait for
 * GO; the parent writes START_NS and DEADLINE_NS and then sets GO with a
 * release store, and each child reads them after an acquire load of GO, so
 * every child sees the same deadline.
 */
struct run_shm {
	atomic_uint ready;              /* children set up; atomic, relaxed */
	atomic_uint go;                 /* 0 until the run starts */
	uint64_t start_ns;              /* written by the parent before GO */
	uint64_t deadline_ns;           /* likewise */
	struct proc_result res[];       /* one per child */
};

/*
 * Keys live in one table built before fork: "key:%08u" is 12 bytes for the
 * default key counts and at most 14 for any 32-bit index, so each key gets
 * KEY_STRIDE bytes with its length in the last one.  Formatting a key per
 * operation would cost as much as a NameStore get and blur the comparison.
 */
#define KEY_STRIDE 16u

struct bench {
	struct config cfg;
	char *keytab;                   /* keys * KEY_STRIDE bytes */
	double *zipf_cdf;               /* NULL for the uniform distribution */
	struct run_shm *run;            /* MAP_SHARED, one slot per child */
	size_t run_size;
	uint64_t timer_ns;              /* cost of one clock_gettime() */

	/* ns backend. */
	char seg_name[NS_NAME_MAX + 1];
	ns_cache *cache;
	ns_space *space;
	pid_t nsd_pid;                  /* the janitor we started, or 0 */

	/* rwlock backend. */
	struct rw_shm *rw;
};

static inline const char *key_at(const struct bench *b, uint32_t k,
				 size_t *klen)
{
	const char *p = b->keytab + (size_t)k * KEY_STRIDE;

	*klen = (unsigned char)p[KEY_STRIDE - 1];
	return p;
}

/*
 * Values are filled deterministically: a fixed byte pattern with the key
 * index stamped in front, so a value depends only on its key and two runs
 * write the same bytes.
 */
static void value_fill(unsigned char *val, size_t len)
{
	for (size_t i = 0; i < len; i++)
		val[i] = (unsigned char)(i * 31u + 7u);
}

static inline void value_stamp(unsigned char *val, size_t len, uint32_t k)
{
	memcpy(val, &k, len < sizeof(k) ? len : sizeof(k));
}

/*
 * Set by SIGINT or SIGTERM in the parent; the wait loops look at it.  A
 * volatile sig_atomic_t is the one type C promises a signal handler may
 * write and the interrupted code read; it is never shared between processes.
 */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* ------------------------------------------------------------------------ */
/* Backend interface                                                        */
/* ------------------------------------------------------------------------ */

/*
 * The two stores behind one set of function pointers, so that the timed
 * loop is the same code for both and each pays the same indirect call.
 * get and set return 0, NS_ENOTFOUND (get only: a miss) or another negative
 * NS_E* code, which the loop counts as an error.
 */
struct backend {
	const char *name;
	unsigned bit;
	int (*setup)(struct bench *b);          /* parent, before fork */
	int (*get)(struct bench *b, const char *key, size_t klen, void *buf,
		   size_t cap);
	int (*set)(struct bench *b, const char *key, size_t klen,
		   const void *val, size_t vlen);
	void (*child_exit)(struct bench *b);    /* child, after its loop */
	void (*teardown)(struct bench *b);      /* parent, after the run */
};

/* ------------------------------------------------------------------------ */
/* Backend ns                                                               */
/* ------------------------------------------------------------------------ */

static int ns_be_setup(struct bench *b)
{
	struct ns_attach_opts opts = {
		.flags = NS_CREATE | NS_EXCL,
		.size = b->cfg.size,
		.max_items = b->cfg.keys,
		.mode = 0600,
	};
	unsigned char *val = NULL;
	uint64_t failed = 0;
	int first_err = 0, rc;
	size_t klen, max;

	snprintf(b->seg_name, sizeof(b->seg_name), "nsbench.%ld",
		 (long)getpid());
	rc = ns_attach(b->seg_name, &opts, &b->cache);
	if (rc == NS_EEXIST) {
		/*
		 * The name carries our pid, so an existing segment is a leftover
		 * of an earlier nsbench that had the same pid and was killed
		 * before it could unlink; it is ours to remove.
		 */
		fprintf(stderr, "nsbench: removing stale segment %s\n",
			b->seg_name);
		ns_unlink(b->seg_name);
		rc = ns_attach(b->seg_name, &opts, &b->cache);
	}
	if (rc) {
		fprintf(stderr, "nsbench: ns_attach(%s, %zu bytes): %s\n",
			b->seg_name, b->cfg.size, ns_strerror(rc));
		b->cache = NULL;
		goto out;
	}
	rc = ns_space_open(b->cache, "bench:kv", &b->space);
	if (rc) {
		fprintf(stderr, "nsbench: ns_space_open(bench:kv): %s\n",
			ns_strerror(rc));
		goto out;
	}
	key_at(b, b->cfg.keys - 1, &klen);
	max = ns_max_value(b->cache, klen);
	if (b->cfg.value_size > max) {
		fprintf(stderr,
			"nsbench: --value-size %zu is over the segment's largest "
			"value, %zu bytes\n", b->cfg.value_size, max);
		rc = NS_E2BIG;
		goto out;
	}

	val = malloc(b->cfg.value_size ? b->cfg.value_size : 1);
	if (!val) {
		rc = NS_ENOMEM;
		fprintf(stderr, "nsbench: out of memory\n");
		goto out;
	}
	value_fill(val, b->cfg.value_size);
	for (uint32_t k = 0; k < b->cfg.keys && !stop_requested; k++) {
		const char *key = key_at(b, k, &klen);
		int err;

		value_stamp(val, b->cfg.value_size, k);
		err = ns_set(b->space, key, klen, val, b->cfg.value_size, 0);
		if (err) {
			failed++;
			if (!first_err)
				first_err = err;
		}
	}
	if (failed)
		printf("# backend=ns preload_failed=%" PRIu64 " first_error=\"%s\""
		       " (those keys start as misses)\n",
		       failed, ns_strerror(first_err));
	rc = stop_requested ? NS_EINVAL : 0;
	if (rc == 0 && b->cfg.nsd) {
		/* The janitor, as in production: it pays the grace periods'
		 * membarrier, so the clients' sets do not. */
		b->nsd_pid = fork();
		if (b->nsd_pid == 0) {
			execl(b->cfg.nsd, "nsd", "--foreground", "--log-level", "error",
			      "--segment", b->seg_name, (char *)NULL);
			_exit(127);
		}
		if (b->nsd_pid < 0) {
			b->nsd_pid = 0;
			fprintf(stderr, "nsbench: cannot start nsd: %s\n", strerror(errno));
			rc = NS_EINVAL;
		} else {
			usleep(300000); /* its first ticks */
			printf("# backend=ns nsd=%s pid=%d\n", b->cfg.nsd, (int)b->nsd_pid);
		}
	}
out:
	free(val);
	return rc;
}

static int ns_be_get(struct bench *b, const char *key, size_t klen,
		     void *buf, size_t cap)
{
	size_t vlen;

	return ns_get(b->space, key, klen, buf, cap, &vlen);
}

static int ns_be_set(struct bench *b, const char *key, size_t klen,
		     const void *val, size_t vlen)
{
	return ns_set(b->space, key, klen, val, vlen, 0);
}

/*
 * A child gives its client slot back before exiting; the parent's
 * attachment is a separate mapping and is not affected.
 */
static void ns_be_child_exit(struct bench *b)
{
	ns_detach(b->cache);
}

static void ns_be_teardown(struct bench *b)
{
	if (b->nsd_pid > 0) {
		kill(b->nsd_pid, SIGTERM);
		waitpid(b->nsd_pid, NULL, 0);
		b->nsd_pid = 0;
	}
	if (b->cache) {
		ns_detach(b->cache);
		ns_unlink(b->seg_name);
	}
	b->cache = NULL;
	b->space = NULL;
}

/* ------------------------------------------------------------------------ */
/* Backend rwlock                                                           */
/* ------------------------------------------------------------------------ */

/*
 * The baseline table, laid out in one anonymous shared region:
 *
 *   +-----------+----------------------+--------------------------------+
 *   | rw_shm    | buckets[nbuckets]    | entries[nentries]              |
 *   | (lock,    | (offset of the first | (rw_entry + value, fixed size, |
 *   |  sizes)   |  entry, 0 = empty)   |  chained by offset)            |
 *   +-----------+----------------------+--------------------------------+
 *
 * Every link is a byte offset from the start of the region, as it would
 * have to be if unrelated processes mapped it at different addresses (the
 * children here inherit one address, but the baseline should pay what a
 * real one pays).  Offset 0 is the header, so it can mean "none".  Entries
 * are never freed: the key set is fixed and preloaded, and a set of an
 * existing key overwrites its value in place under the write lock.  The
 * bucket array is the next power of two at or above the key count, so the
 * average chain holds at most one entry, as in APCu's and lua_shared_dict's
 * tables sized for their load.
 */
#define RW_KEY_MAX KEY_STRIDE

struct rw_shm {
	pthread_rwlock_t lock;          /* guards everything below */
	uint64_t nbuckets;              /* a power of two; fixed at setup */
	uint64_t nentries;              /* capacity of the entry array */
	uint64_t used;                  /* entries handed out; write lock */
	uint64_t entry_size;            /* bytes per entry, value included */
	uint64_t buckets_off;           /* offset of buckets[] */
	uint64_t entries_off;           /* offset of entries[0] */
	size_t map_size;                /* bytes of the whole region */
};

struct rw_entry {
	uint64_t next;                  /* offset of the next entry, 0 = end */
	uint32_t hash;                  /* full hash, compared before the key */
	uint32_t vlen;                  /* bytes of value */
	uint8_t klen;
	char key[RW_KEY_MAX];
	unsigned char val[];            /* entry_size - sizeof(rw_entry) */
};

/*
 * FNV-1a (Fowler, Noll and Vo, http://www.isthe.com/chongo/tech/comp/fnv/),
 * 64-bit, folded to 32 bits with a xor-shift so that the low bits used to
 * pick a bucket depend on every input byte.  It is the kind of simple byte
 * hash such tables use, and it runs before the lock is taken, as a careful
 * implementation would do.
 */
static inline uint32_t rw_hash(const char *key, size_t klen)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < klen; i++) {
		h ^= (unsigned char)key[i];
		h *= 0x100000001b3ull;
	}
	return (uint32_t)(h ^ (h >> 32));
}

/*
 * Offsets to pointers.  rw_be_setup() rounds every offset and the entry
 * size to a multiple of 8 (buckets and entries to 64), so the casts below
 * are always aligned.
 */
static inline uint64_t *rw_buckets(struct rw_shm *t)
{
	return (uint64_t *)((char *)t + t->buckets_off);
}

static inline struct rw_entry *rw_entry_at(struct rw_shm *t, uint64_t off)
{
	return (struct rw_entry *)((char *)t + off);
}

/* The entry for KEY, or NULL.  Caller holds the lock, read or write. */
static struct rw_entry *rw_find_locked(struct rw_shm *t, uint32_t hash,
				       const char *key, size_t klen)
{
	uint64_t off = rw_buckets(t)[hash & (t->nbuckets - 1)];

	while (off) {
		struct rw_entry *e = rw_entry_at(t, off);

		if (e->hash == hash && e->klen == klen &&
		    memcmp(e->key, key, klen) == 0)
			return e;
		off = e->next;
	}
	return NULL;
}

static int rw_be_get(struct bench *b, const char *key, size_t klen,
		     void *buf, size_t cap)
{
	struct rw_shm *t = b->rw;
	uint32_t hash = rw_hash(key, klen);
	struct rw_entry *e;
	int rc = NS_ENOTFOUND;

	pthread_rwlock_rdlock(&t->lock);
	e = rw_find_locked(t, hash, key, klen);
	if (e) {
		if (e->vlen <= cap) {
			memcpy(buf, e->val, e->vlen);
			rc = 0;
		} else {
			rc = NS_ERANGE;
		}
	}
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

static int rw_be_set(struct bench *b, const char *key, size_t klen,
		     const void *val, size_t vlen)
{
	struct rw_shm *t = b->rw;
	uint32_t hash = rw_hash(key, klen);
	struct rw_entry *e;
	int rc = 0;

	if (klen > RW_KEY_MAX || vlen > t->entry_size - sizeof(*e))
		return NS_E2BIG;
	pthread_rwlock_wrlock(&t->lock);
	e = rw_find_locked(t, hash, key, klen);
	if (!e) {
		uint64_t *bucket = &rw_buckets(t)[hash & (t->nbuckets - 1)];
		uint64_t off;

		if (t->used == t->nentries) {
			rc = NS_ENOMEM;
			goto unlock;
		}
		off = t->entries_off + t->used++ * t->entry_size;
		e = rw_entry_at(t, off);
		e->hash = hash;
		e->klen = (uint8_t)klen;
		memcpy(e->key, key, klen);
		e->next = *bucket;
		*bucket = off;
	}
	memcpy(e->val, val, vlen);
	e->vlen = (uint32_t)vlen;
unlock:
	pthread_rwlock_unlock(&t->lock);
	return rc;
}

/*
 * glibc's default rwlock prefers readers: a reader joins a read-held lock
 * even while a writer waits.  That is what APCu gets (it only sets
 * PTHREAD_PROCESS_SHARED), so it is the default here; --rwlock-prefer-writer
 * switches to PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP, which bounds the
 * wait of a set at the cost of the gets.
 */
static int rw_be_setup(struct bench *b)
{
	pthread_rwlockattr_t attr;
	struct rw_shm *t;
	uint64_t nbuckets = 1, entry_size, buckets_off, entries_off;
	size_t map_size;
	unsigned char *val = NULL;
	int rc = 0, err;

	while (nbuckets < b->cfg.keys)
		nbuckets <<= 1;
	entry_size = (sizeof(struct rw_entry) + b->cfg.value_size + 7u) &
		     ~(uint64_t)7u;
	buckets_off = (sizeof(struct rw_shm) + 63u) & ~(uint64_t)63u;
	entries_off = (buckets_off + nbuckets * sizeof(uint64_t) + 63u) &
		      ~(uint64_t)63u;
	map_size = (size_t)(entries_off + (uint64_t)b->cfg.keys * entry_size);

	t = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED) {
		fprintf(stderr, "nsbench: mmap of %zu bytes for rwlock: %s\n",
			map_size, strerror(errno));
		return NS_ENOMEM;
	}
	t->nbuckets = nbuckets;
	t->nentries = b->cfg.keys;
	t->used = 0;
	t->entry_size = entry_size;
	t->buckets_off = buckets_off;
	t->entries_off = entries_off;
	t->map_size = map_size;

	pthread_rwlockattr_init(&attr);
	err = pthread_rwlockattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (!err && b->cfg.prefer_writer)
		err = pthread_rwlockattr_setkind_np(
			&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	if (!err)
		err = pthread_rwlock_init(&t->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (err) {
		fprintf(stderr, "nsbench: process-shared rwlock: %s\n",
			strerror(err));
		munmap(t, map_size);
		return NS_EINVAL;
	}
	b->rw = t;

	val = malloc(b->cfg.value_size ? b->cfg.value_size : 1);
	if (!val) {
		fprintf(stderr, "nsbench: out of memory\n");
		rc = NS_ENOMEM;
		goto out;
	}
	value_fill(val, b->cfg.value_size);
	for (uint32_t k = 0; k < b->cfg.keys && !stop_requested; k++) {
		size_t klen;
		const char *key = key_at(b, k, &klen);

		value_stamp(val, b->cfg.value_size, k);
		rc = rw_be_set(b, key, klen, val, b->cfg.value_size);
		if (rc) {
			fprintf(stderr, "nsbench: rwlock preload: %s\n",
				ns_strerror(rc));
			goto out;
		}
	}
	rc = stop_requested ? NS_EINVAL : 0;
	if (rc == 0 && b->cfg.nsd) {
		/* The janitor, as in production: it pays the grace periods'
		 * membarrier, so the clients' sets do not. */
		b->nsd_pid = fork();
		if (b->nsd_pid == 0) {
			execl(b->cfg.nsd, "nsd", "--foreground", "--log-level", "error",
			      "--segment", b->seg_name, (char *)NULL);
			_exit(127);
		}
		if (b->nsd_pid < 0) {
			b->nsd_pid = 0;
			fprintf(stderr, "nsbench: cannot start nsd: %s\n", strerror(errno));
			rc = NS_EINVAL;
		} else {
			usleep(300000); /* its first ticks */
			printf("# backend=ns nsd=%s pid=%d\n", b->cfg.nsd, (int)b->nsd_pid);
		}
	}
out:
	free(val);
	return rc;
}

static void rw_be_child_exit(struct bench *b)
{
	(void)b;
}

static void rw_be_teardown(struct bench *b)
{
	if (b->rw) {
		pthread_rwlock_destroy(&b->rw->lock);
		munmap(b->rw, b->rw->map_size);
	}
	b->rw = NULL;
}

static const struct backend backends[] = {
	{ "ns", BACKEND_NS, ns_be_setup, ns_be_get, ns_be_set,
	  ns_be_child_exit, ns_be_teardown },
	{ "rwlock", BACKEND_RWLOCK, rw_be_setup, rw_be_get, rw_be_set,
	  rw_be_child_exit, rw_be_teardown },
};

/* ------------------------------------------------------------------------ */
/* The timed loop                                                           */
/* ------------------------------------------------------------------------ */

static inline void note_error(struct proc_result *r, enum op op, int rc)
{
	r->errors[op]++;
	if (!r->first_error)
		r->first_error = rc;
}

/*
 * One child: set up, check in, wait for the start, then loop until the
 * deadline.  Choosing the key and the operation and stamping the value
 * happen outside the two timer reads; only the store's call is timed.  The
 * end timestamp of each op doubles as the deadline check, so the loop reads
 * the clock exactly twice per op.
 */
static int child_main(struct bench *b, const struct backend *be,
		      unsigned idx)
{
	struct proc_result *r = &b->run->res[idx];
	const struct config *cfg = &b->cfg;
	uint64_t rng = cfg->seed ^ (0x2545f4914f6cdd1dull * (idx + 1u));
	size_t vsize = cfg->value_size;
	unsigned char *val = malloc(vsize ? vsize : 1);
	unsigned char *buf = malloc(vsize ? vsize : 1);
	uint64_t deadline, t0, t1 = 0;
	int status = 1;

	if (!val || !buf) {
		fprintf(stderr, "nsbench: child %u: out of memory\n", idx);
		goto out;
	}
	value_fill(val, vsize);

	atomic_fetch_add_explicit(&b->run->ready, 1, memory_order_relaxed);
	/* Pairs with the parent's release store of GO; see struct run_shm. */
	while (!atomic_load_explicit(&b->run->go, memory_order_acquire))
		sched_yield();
	deadline = b->run->deadline_ns;

	do {
		uint64_t x = rng_next(&rng);
		uint32_t k;
		size_t klen;
		const char *key;
		enum op op;
		int rc;

		k = b->zipf_cdf ? zipf_pick(b->zipf_cdf, cfg->keys,
					    rng_unit(rng_next(&rng)))
				: rng_below(rng_next(&rng), cfg->keys);
		key = key_at(b, k, &klen);
		op = rng_below(x, 100) < cfg->read_pct ? OP_GET : OP_SET;
		if (op == OP_SET)
			value_stamp(val, vsize, k);

		t0 = now_ns();
		if (op == OP_GET)
			rc = be->get(b, key, klen, buf, vsize);
		else
			rc = be->set(b, key, klen, val, vsize);
		t1 = now_ns();

		r->ops[op]++;
		hist_record(&r->lat[op], t1 - t0);
		if (op == OP_GET && rc == 0)
			r->hits++;
		else if (op == OP_GET && rc == NS_ENOTFOUND)
			r->misses++;
		else if (rc)
			note_error(r, op, rc);
	} while (t1 < deadline);
	r->end_ns = t1;
	status = 0;
out:
	be->child_exit(b);
	free(val);
	free(buf);
	return status;
}

/* Stop and reap every child still running, after a failure or a signal. */

/* Mark the child with process id PID as reaped; true if it was ours. */
static bool forget_child(pid_t *pids, unsigned n, pid_t pid)
{
	for (unsigned i = 0; i < n; i++) {
		if (pids[i] == pid) {
			pids[i] = 0;
			return true;
		}
	}
	return false;
}

struct totals {
	double ops_per_s;               /* all ops of all children */
};

static void print_op_line(const char *backend, enum op op,
			  const struct hist *h, uint64_t ops, uint64_t errors,
			  uint64_t hits, uint64_t misses, double elapsed)
{
	printf("backend=%s op=%s ops=%" PRIu64 " ops_per_s=%.0f", backend,
	       op_name[op], ops, (double)ops / elapsed);
	if (op == OP_GET)
		printf(" hits=%" PRIu64 " misses=%" PRIu64, hits, misses);
	printf(" errors=%" PRIu64 " mean_ns=%.0f p50_ns=%" PRIu64
	       " p99_ns=%" PRIu64 " p999_ns=%" PRIu64 " max_ns=%" PRIu64 "\n",
	       errors, h->n ? (double)h->sum / (double)h->n : 0.0,
	       hist_quantile(h, 0.50), hist_quantile(h, 0.99),
	       hist_quantile(h, 0.999), h->max);
}

/*
 * Run one backend: set it up, fork the children, start them together, reap
 * them, then merge and print their results.  Returns 0, or -1 if the run
 * could not be done (the reason is printed).
 */
static int run_backend(struct bench *b, const struct backend *be,
		       struct totals *tot)
{
	unsigned n = b->cfg.procs, started = 0;
	pid_t *pids = calloc(n, sizeof(*pids));
	struct hist *merged = calloc(OP_COUNT, sizeof(*merged));
	uint64_t ops[OP_COUNT] = { 0 }, errors[OP_COUNT] = { 0 };
	uint64_t hits = 0, misses = 0, end = 0, t;
	int first_error = 0, rc = -1;
	double elapsed;

	if (!pids || !merged) {
		fprintf(stderr, "nsbench: out of memory\n");
		goto out;
	}
	if (be->setup(b))
		goto teardown;
	memset(b->run, 0, b->run_size);

	fflush(stdout);
	fflush(stderr);
	for (started = 0; started < n; started++) {
		pid_t pid = fork();

		if (pid < 0) {
			fprintf(stderr, "nsbench: fork: %s\n", strerror(errno));
			goto kill;
		}
		if (pid == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			_exit(child_main(b, be, started));
		}
		pids[started] = pid;
	}

	/*
	 * Wait for every child to check in, watching for one that died during
	 * setup, which would otherwise leave the count short forever.
	 */
	t = now_ns();
	while (atomic_load_explicit(&b->run->ready, memory_order_relaxed) < n) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);

		if (pid > 0 && forget_child(pids, n, pid)) {
			fprintf(stderr, "nsbench: a %s child exited during "
				"setup\n", be->name);
			goto kill;
		}
		if (stop_requested || now_ns() - t > READY_TIMEOUT_NS) {
			if (!stop_requested)
				fprintf(stderr, "nsbench: %s children did not "
					"get ready in time\n", be->name);
			goto kill;
		}
		sleep_ns(1000000);
	}

	b->run->start_ns = now_ns();
	b->run->deadline_ns =
		b->run->start_ns + (uint64_t)(b->cfg.seconds * 1e9);
	/* Publishes START_NS and DEADLINE_NS to the children's acquire load. */
	atomic_store_explicit(&b->run->go, 1, memory_order_release);

	for (unsigned left = n; left > 0;) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);

		if (pid < 0) {
			if (errno == EINTR && !stop_requested)
				continue;
			if (errno != EINTR)
				fprintf(stderr, "nsbench: waitpid: %s\n",
					strerror(errno));
			goto kill;
		}
		if (!forget_child(pids, n, pid))
			continue;
		left--;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			if (WIFSIGNALED(st))
				fprintf(stderr, "nsbench: a %s child died of "
					"signal %d\n", be->name, WTERMSIG(st));
			else
				fprintf(stderr, "nsbench: a %s child exited "
					"with status %d\n", be->name,
					WEXITSTATUS(st));
			goto kill;
		}
	}

	for (unsigned i = 0; i < n; i++) {
		const struct proc_result *r = &b->run->res[i];

		for (int op = 0; op < OP_COUNT; op++) {
			ops[op] += r->ops[op];
			errors[op] += r->errors[op];
			hist_merge(&merged[op], &r->lat[op]);
		}
		if (!first_error)
			first_error = r->first_error;
		hits += r->hits;
		misses += r->misses;
		if (r->end_ns > end)
			end = r->end_ns;
	}
	/*
	 * The run lasts from the start signal to the end of the last op of
	 * the slowest child: a child blocked on a lock at the deadline
	 * finishes its op late, and that time is part of the result.
	 */
	elapsed = (double)(end - b->run->start_ns) / 1e9;
	if (elapsed <= 0)
		elapsed = 1e-9;
	for (int op = 0; op < OP_COUNT; op++)
		print_op_line(be->name, (enum op)op, &merged[op], ops[op],
			      errors[op], hits, misses, elapsed);
	tot->ops_per_s = (double)(ops[OP_GET] + ops[OP_SET]) / elapsed;
	printf("backend=%s op=all ops=%" PRIu64 " ops_per_s=%.0f procs=%u "
	       "elapsed_s=%.3f errors=%" PRIu64 "\n",
	       be->name, ops[OP_GET] + ops[OP_SET], tot->ops_per_s, n,
	       elapsed, errors[OP_GET] + errors[OP_SET]);
	if (first_error)
		printf("# backend=%s first_error=\"%s\"\n", be->name,
		       ns_strerror(first_error));
	fflush(stdout);
	rc = 0;
	goto teardown;
kill:
	kill_children(pids, started);
teardown:
	be->teardown(b);
out:
	free(merged);
	free(pids);
	return rc;
}

/*
 * The cost of one clock_gettime(CLOCK_MONOTONIC): the median gap between
 * back-to-back calls.  Each latency below spans one such call (the tail of
 * the first read and the head of the second), so this is roughly the floor
 * of every reported figure.
 */
static uint64_t measure_timer(void)
{
	struct hist *h = calloc(1, sizeof(*h));
	uint64_t prev, cur, median;

	if (!h)
		return 0;
	prev = now_ns();
	for (int i = 0; i < 200000; i++) {
		cur = now_ns();
		hist_record(h, cur - prev);
		prev = cur;
	}
	median = hist_quantile(h, 0.5);
	free(h);
	return median;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                             */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
"usage: nsbench [options]\n"
"  -p, --procs N            worker processes (default: online CPUs)\n"
"  -t, --seconds S          length of each run (default %.0f)\n"
"  -k, --keys K             number of keys (default %u)\n"
"  -v, --value-size B       bytes per value (default %u)\n"
"  -r, --read-pct P         percentage of gets (default %u)\n"
"  -d, --dist uniform|zipf  key distribution (default zipf)\n"
"  -s, --zipf-s S           Zipf exponent (default %.2f)\n"
"  -b, --backend ns|rwlock|both   stores to measure (default both)\n"
"  -S, --size BYTES         NameStore segment size, k/m/g suffixes\n"
"                           allowed (default 256m)\n"
"      --rwlock-prefer-writer  writer-preferring rwlock for the baseline\n"
"      --seed N             base seed of the random streams (default 1)\n"
"      --nsd PATH           run the janitor PATH on the NameStore segment\n"
"  -h, --help               this text\n",
		DEFAULT_SECONDS, DEFAULT_KEYS, DEFAULT_VALUE_SIZE,
		DEFAULT_READ_PCT, DEFAULT_ZIPF_S);
}

static bool parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return *s && !*end && !errno;
}

enum { OPT_PREFER_WRITER = 256, OPT_SEED, OPT_NSD };

static int parse_args(int argc, char **argv, struct config *cfg)
{
	static const struct option longopts[] = {
		{ "procs", required_argument, NULL, 'p' },
		{ "seconds", required_argument, NULL, 't' },
		{ "keys", required_argument, NULL, 'k' },
		{ "value-size", required_argument, NULL, 'v' },
		{ "read-pct", required_argument, NULL, 'r' },
		{ "dist", required_argument, NULL, 'd' },
		{ "zipf-s", required_argument, NULL, 's' },
		{ "backend", required_argument, NULL, 'b' },
		{ "size", required_argument, NULL, 'S' },
		{ "rwlock-prefer-writer", no_argument, NULL, OPT_PREFER_WRITER },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "nsd", required_argument, NULL, OPT_NSD },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t u;
	int c;

	*cfg = (struct config){
		.procs = ncpu > 0 ? (unsigned)ncpu : 1u,
		.seconds = DEFAULT_SECONDS,
		.keys = DEFAULT_KEYS,
		.value_size = DEFAULT_VALUE_SIZE,
		.read_pct = DEFAULT_READ_PCT,
		.zipf = true,
		.zipf_s = DEFAULT_ZIPF_S,
		.backends = BACKEND_NS | BACKEND_RWLOCK,
		.size = DEFAULT_SIZE,
		.seed = 1,
	};

	while ((c = getopt_long(argc, argv, "p:t:k:v:r:d:s:b:S:h", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'p':
			if (!parse_u64(optarg, &u) || u < 1 || u > MAX_PROCS)
				goto bad;
			cfg->procs = (unsigned)u;
			break;
		case 't':
			if (!parse_double(optarg, &cfg->seconds) ||
			    !(cfg->seconds > 0 && cfg->seconds < 1e6))
				goto bad;
			break;
		case 'k':
			if (!parse_u64(optarg, &u) || u < 1 || u > UINT32_MAX)
				goto bad;
			cfg->keys = (uint32_t)u;
			break;
		case 'v':
			if (!parse_size(optarg, &cfg->value_size) ||
			    cfg->value_size > MAX_VALUE_SIZE)
				goto bad;
			break;
		case 'r':
			if (!parse_u64(optarg, &u) || u > 100)
				goto bad;
			cfg->read_pct = (unsigned)u;
			break;
		case 'd':
			if (strcmp(optarg, "zipf") == 0)
				cfg->zipf = true;
			else if (strcmp(optarg, "uniform") == 0)
				cfg->zipf = false;
			else
				goto bad;
			break;
		case 's':
			if (!parse_double(optarg, &cfg->zipf_s) ||
			    !(cfg->zipf_s > 0 && cfg->zipf_s < 100))
				goto bad;
			break;
		case 'b':
			if (strcmp(optarg, "ns") == 0)
				cfg->backends = BACKEND_NS;
			else if (strcmp(optarg, "rwlock") == 0)
				cfg->backends = BACKEND_RWLOCK;
			else if (strcmp(optarg, "both") == 0)
				cfg->backends = BACKEND_NS | BACKEND_RWLOCK;
			else
				goto bad;
			break;
		case 'S':
			if (!parse_size(optarg, &cfg->size) || cfg->size == 0)
				goto bad;
			break;
		case OPT_PREFER_WRITER:
			cfg->prefer_writer = true;
			break;
		case OPT_SEED:
			if (!parse_u64(optarg, &cfg->seed))
				goto bad;
			break;
		case OPT_NSD:
			cfg->nsd = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "nsbench: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	return 0;
bad:
	for (const struct option *o = longopts; o->name; o++)
		if (o->val == c)
			fprintf(stderr, "nsbench: bad value '%s' for --%s\n",
				optarg, o->name);
	usage(stderr);
	return -1;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct totals tot[2] = { { 0 } };
	struct sigaction sa = { 0 };
	int status = 1;
	bool ran[2] = { false, false };

	if (parse_args(argc, argv, &b.cfg))
		return 2;

	/* No SA_RESTART: a signal must interrupt the parent's waitpid(). */
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	b.keytab = malloc((size_t)b.cfg.keys * KEY_STRIDE);
	if (!b.keytab) {
		fprintf(stderr, "nsbench: out of memory for %u keys\n",
			b.cfg.keys);
		goto out;
	}
	for (uint32_t k = 0; k < b.cfg.keys; k++) {
		char *p = b.keytab + (size_t)k * KEY_STRIDE;
		int len = snprintf(p, KEY_STRIDE - 1, "key:%08" PRIu32, k);

		p[KEY_STRIDE - 1] = (char)len;
	}
	if (b.cfg.zipf) {
		b.zipf_cdf = zipf_table(b.cfg.keys, b.cfg.zipf_s);
		if (!b.zipf_cdf) {
			fprintf(stderr, "nsbench: out of memory for the Zipf "
				"table\n");
			goto out;
		}
	}
	b.run_size = sizeof(struct run_shm) +
		     (size_t)b.cfg.procs * sizeof(struct proc_result);
	b.run = mmap(NULL, b.run_size, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b.run == MAP_FAILED) {
		fprintf(stderr, "nsbench: mmap: %s\n", strerror(errno));
		b.run = NULL;
		goto out;
	}
	b.timer_ns = measure_timer();

	printf("# nsbench libnamestore=%s procs=%u seconds=%g keys=%" PRIu32
	       " value_size=%zu read_pct=%u dist=%s",
	       ns_version(), b.cfg.procs, b.cfg.seconds, b.cfg.keys,
	       b.cfg.value_size, b.cfg.read_pct,
	       b.cfg.zipf ? "zipf" : "uniform");
	if (b.cfg.zipf)
		printf(" zipf_s=%g", b.cfg.zipf_s);
	printf(" size=%zu rwlock_kind=%s seed=%" PRIu64 "\n", b.cfg.size,
	       b.cfg.prefer_writer ? "prefer-writer" : "default", b.cfg.seed);
	printf("# timer=CLOCK_MONOTONIC overhead_ns=%" PRIu64
	       " (every latency below includes about one timer call)\n",
	       b.timer_ns);
	printf("# histogram: exact below %u ns, then %u sub-buckets per power "
	       "of two (bucket width <= 3.1%%, midpoint reported)\n",
	       HIST_EXACT, HIST_SUB);
#ifndef __OPTIMIZE__
	/*
	 * The library is built with the same build type; numbers from an
	 * unoptimized build say little about either store.
	 */
	printf("# warning: built without optimization; configure with "
	       "--buildtype=release for meaningful numbers\n");
#endif

	status = 0;
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (!(b.cfg.backends & backends[i].bit) || stop_requested)
			continue;
		if (run_backend(&b, &backends[i], &tot[i]))
			status = 1;
		else
			ran[i] = true;
	}
	if (ran[0] && ran[1] && tot[1].ops_per_s > 0)
		printf("compare=ns/rwlock ns_ops_per_s=%.0f rwlock_ops_per_s=%.0f"
		       " ratio=%.2f\n", tot[0].ops_per_s, tot[1].ops_per_s,
		       tot[0].ops_per_s / tot[1].ops_per_s);
	if (stop_requested) {
		fprintf(stderr, "nsbench: interrupted\n");
		status = 130;
	}
out:
	if (b.run)
		munmap(b.run, b.run_size);
	free(b.zipf_cdf);
	free(b.keytab);
	return status;
}
