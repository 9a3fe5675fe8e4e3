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
#include <dirent.h>
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

#include "bench.h"
#include "common.h"
#include "hist.h"

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

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
	uint64_t bad;                   /* hits whose value was not the key's */
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
 * Set by SIGINT or SIGTERM in the parent; the wait loops look at it.  A
 * volatile sig_atomic_t is the one type C promises a signal handler may
 * write and the interrupted code read; it is never shared between processes.
 */
volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* ------------------------------------------------------------------------ */
/* The stores                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Every store nsbench knows, in the order they run.  The peers are built
 * only when meson found their client library (bench/meson.build); a NULL
 * entry names one that was not, so asking for it gives a clear error
 * instead of a silent gap in a table.
 */
static const struct {
	const char *name;
	const struct backend *be;
	const char *needs;              /* Debian packages to build and run it */
} backends[] = {
	{ "ns", &be_ns, NULL },
	{ "rwlock", &be_rwlock, NULL },
#ifdef HAVE_LMDB
	{ "lmdb", &be_lmdb, NULL },
#else
	{ "lmdb", NULL, "liblmdb-dev" },
#endif
#ifdef HAVE_TDB
	{ "tdb", &be_tdb, NULL },
#else
	{ "tdb", NULL, "libtdb-dev" },
#endif
#ifdef HAVE_REDIS
	{ "redis", &be_redis, NULL },
#else
	{ "redis", NULL, "libhiredis-dev redis-server" },
#endif
#ifdef HAVE_MEMCACHED
	{ "memcached", &be_memcached, NULL },
#else
	{ "memcached", NULL, "libmemcached-dev memcached" },
#endif
};

#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

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
 * deadline.  Choosing the key and the operation, stamping the value and
 * checking a value read happen outside the two timer reads; only the
 * store's call is timed.  The end timestamp of each op doubles as the
 * deadline check, so the loop reads the clock exactly twice per op.
 *
 * Every hit is checked: a value is a function of its key (bench.h), so a
 * torn, stale-from-another-key or truncated value shows as a mismatch, and
 * a run with any is reported as failed.
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
	uint64_t deadline, t0 = 0, t1 = 0;
	uint32_t gen = idx << 24;       /* distinct per child */
	int status = 1;

	if (!val || !buf) {
		fprintf(stderr, "nsbench: child %u: out of memory\n", idx);
		goto out_noexit;
	}
	value_fill(val, vsize);
	if (be->child_init && be->child_init(b)) {
		fprintf(stderr, "nsbench: child %u: %s: cannot connect or open\n",
			idx, be->name);
		goto out_noexit;
	}

	atomic_fetch_add_explicit(&b->run->ready, 1, memory_order_relaxed);
	/* Pairs with the parent's release store of GO; see struct run_shm. */
	while (!atomic_load_explicit(&b->run->go, memory_order_acquire))
		sched_yield();
	deadline = b->run->deadline_ns;

	unsigned sample = cfg->sample, untimed = 0;
	do {
		uint64_t x = rng_next(&rng);
		uint32_t k;
		size_t klen;
		const char *key;
		enum op op;
		size_t got = 0;
		int rc;

		k = b->zipf_cdf ? zipf_pick(b->zipf_cdf, cfg->keys,
					    rng_unit(rng_next(&rng)))
				: rng_below(rng_next(&rng), cfg->keys);
		key = key_at(b, k, &klen);
		op = rng_below(x, 100) < cfg->read_pct ? OP_GET : OP_SET;
		value_stamp(val, vsize, k);
		if (op == OP_SET)
			value_set_gen(val, vsize, ++gen);

		/* With --sample N, N-1 operations in N run back to back,
		 * untimed: a timer read waits for the loads before it, so
		 * timing every operation also keeps the misses of one
		 * operation from overlapping with those of the next. */
		bool timed = ++untimed >= sample;
		if (timed) {
			untimed = 0;
			t0 = now_ns();
		}
		if (op == OP_GET)
			rc = be->get(b, key, klen, buf, vsize, &got);
		else
			rc = be->set(b, key, klen, val, vsize);
		r->ops[op]++;
		if (timed) {
			t1 = now_ns();
			hist_record(&r->lat[op], t1 - t0);
		}
		if (op == OP_GET && rc == 0) {
			r->hits++;
			if (!value_ok(buf, got, val, vsize))
				r->bad++;
		} else if (op == OP_GET && rc == NS_ENOTFOUND)
			r->misses++;
		else if (rc)
			note_error(r, op, rc);
	} while (t1 < deadline);
	r->end_ns = sample > 1 ? now_ns() : t1;
	status = 0;
	if (be->child_exit)
		be->child_exit(b);
out_noexit:
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

/* What one store did in one run, merged over its children. */
struct result {
	bool ran;                       /* false: setup or a child failed */
	double elapsed;                 /* seconds, start to last op's end */
	uint64_t ops[OP_COUNT], errors[OP_COUNT];
	uint64_t hits, misses, bad;
	int first_error;
	struct hist lat[OP_COUNT];
	uint64_t mem_bytes;             /* 0: the store does not say */
	const char *mem_what;
};

static double ops_per_s(const struct result *r, int op)
{
	uint64_t n = op < 0 ? r->ops[OP_GET] + r->ops[OP_SET] : r->ops[op];

	return r->elapsed > 0 ? (double)n / r->elapsed : 0.0;
}

static double hist_mean(const struct hist *h)
{
	return h->n ? (double)h->sum / (double)h->n : 0.0;
}

static void print_result(const struct bench *b, const char *name,
			 const struct result *r)
{
	for (int op = 0; op < OP_COUNT; op++) {
		const struct hist *h = &r->lat[op];

		printf("backend=%s op=%s ops=%" PRIu64 " ops_per_s=%.0f", name,
		       op_name[op], r->ops[op], ops_per_s(r, op));
		if (op == OP_GET)
			printf(" hits=%" PRIu64 " misses=%" PRIu64
			       " bad=%" PRIu64, r->hits, r->misses, r->bad);
		printf(" errors=%" PRIu64 " mean_ns=%.0f p50_ns=%" PRIu64
		       " p99_ns=%" PRIu64 " p999_ns=%" PRIu64 " max_ns=%" PRIu64
		       "\n", r->errors[op], hist_mean(h),
		       hist_quantile(h, 0.50), hist_quantile(h, 0.99),
		       hist_quantile(h, 0.999), h->max);
	}
	printf("backend=%s op=all ops=%" PRIu64 " ops_per_s=%.0f procs=%u "
	       "elapsed_s=%.3f errors=%" PRIu64 " bad=%" PRIu64 "\n", name,
	       r->ops[OP_GET] + r->ops[OP_SET], ops_per_s(r, -1),
	       b->cfg.procs, r->elapsed, r->errors[OP_GET] + r->errors[OP_SET], r->bad);
	if (r->first_error)
		printf("# backend=%s first_error=\"%s\"\n", name,
		       ns_strerror(r->first_error));
	if (r->mem_bytes)
		printf("# backend=%s memory_bytes=%" PRIu64 " per_item=%.1f "
		       "(%s)\n", name, r->mem_bytes,
		       (double)r->mem_bytes / b->cfg.keys, r->mem_what);
}

/* S as a JSON string: quotes, backslashes and control bytes escaped. */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void json_op(FILE *f, const struct result *r, int op)
{
	const struct hist *h = &r->lat[op];

	fprintf(f, "{\"ops\":%" PRIu64 ",\"ops_per_s\":%.0f,\"errors\":%" PRIu64
		",\"mean_ns\":%.0f,\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64
		",\"p99_ns\":%" PRIu64 ",\"p999_ns\":%" PRIu64
		",\"max_ns\":%" PRIu64 "}", r->ops[op], ops_per_s(r, op),
		r->errors[op], hist_mean(h), hist_quantile(h, 0.50),
		hist_quantile(h, 0.90), hist_quantile(h, 0.99),
		hist_quantile(h, 0.999), h->max);
}

/*
 * One JSON object per line and per store and run: the run's settings, the
 * outcome, and per-operation figures.  A store that could not run gets a
 * line too ("ok": false), so a table built from the file shows the gap and
 * its reason instead of silently losing the cell.
 */
static void json_result(const struct bench *b, const char *name,
			const struct result *r, const char *why)
{
	const struct config *cfg = &b->cfg;
	FILE *f;

	if (!cfg->json)
		return;
	f = fopen(cfg->json, "a");
	if (!f) {
		fprintf(stderr, "nsbench: %s: %s\n", cfg->json, strerror(errno));
		return;
	}
	fprintf(f, "{\"backend\":");
	json_str(f, name);
	fprintf(f, ",\"label\":");
	json_str(f, cfg->label ? cfg->label : "");
	fprintf(f, ",\"procs\":%u,\"keys\":%" PRIu32 ",\"value_size\":%zu"
		",\"read_pct\":%u,\"dist\":\"%s\",\"zipf_s\":%g,\"seconds\":%g"
		",\"timer_ns\":%" PRIu64 ",\"sample\":%u,\"cpus\":%ld,\"ok\":%s",
		cfg->procs, cfg->keys, cfg->value_size, cfg->read_pct,
		cfg->zipf ? "zipf" : "uniform", cfg->zipf ? cfg->zipf_s : 0.0,
		cfg->seconds, b->timer_ns, cfg->sample, sysconf(_SC_NPROCESSORS_ONLN),
		r->ran ? "true" : "false");
	if (!r->ran) {
		fprintf(f, ",\"why\":");
		json_str(f, why);
	} else {
		fprintf(f, ",\"elapsed_s\":%.3f,\"ops_per_s\":%.0f,\"hits\":%"
			PRIu64 ",\"misses\":%" PRIu64 ",\"bad\":%" PRIu64
			",\"get\":", r->elapsed, ops_per_s(r, -1), r->hits,
			r->misses, r->bad);
		json_op(f, r, OP_GET);
		fprintf(f, ",\"set\":");
		json_op(f, r, OP_SET);
		if (r->first_error) {
			fprintf(f, ",\"first_error\":");
			json_str(f, ns_strerror(r->first_error));
		}
	}
	if (r->mem_bytes) {
		fprintf(f, ",\"mem_bytes\":%" PRIu64 ",\"mem_what\":",
			r->mem_bytes);
		json_str(f, r->mem_what);
	}
	fprintf(f, "}\n");
	fclose(f);
}

/* The pointer chase's JSON line (see chase_ns_per_hop()). */
static void json_chase(const struct bench *b, size_t bytes, double hop)
{
	FILE *f = b->cfg.json ? fopen(b->cfg.json, "a") : NULL;

	if (!f)
		return;
	fprintf(f, "{\"backend\":\"chase\",\"label\":");
	json_str(f, b->cfg.label ? b->cfg.label : "");
	fprintf(f, ",\"keys\":%" PRIu32 ",\"value_size\":%zu,\"bytes\":%zu"
		",\"ns_per_hop\":%.2f,\"timer_ns\":%" PRIu64 ",\"ok\":true}\n",
		b->cfg.keys, b->cfg.value_size, bytes, hop, b->timer_ns);
	fclose(f);
}

/*
 * Run one store: set it up, fork the children, start them together, reap
 * them, then merge their results into R.  Returns 0, or -1 if the run
 * could not be done (the reason is printed and left in *WHY).
 */
static int run_backend(struct bench *b, const struct backend *be,
		       struct result *res, const char **why)
{
	unsigned n = b->cfg.procs, started = 0;
	pid_t *pids = calloc(n, sizeof(*pids));
	uint64_t end = 0, t;
	int rc = -1;

	*why = "out of memory";
	memset(res, 0, sizeof(*res));
	if (!pids) {
		fprintf(stderr, "nsbench: out of memory\n");
		goto out;
	}
	*why = "setup failed (see stderr)";
	fflush(stdout);
	if (be->setup(b))
		goto teardown;
	if (be->memory && be->memory(b, &res->mem_bytes, &res->mem_what))
		res->mem_bytes = 0;
	memset(b->run, 0, b->run_size);

	fflush(stdout);
	fflush(stderr);
	*why = "a child failed (see stderr)";
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
			res->ops[op] += r->ops[op];
			res->errors[op] += r->errors[op];
			hist_merge(&res->lat[op], &r->lat[op]);
		}
		if (!res->first_error)
			res->first_error = r->first_error;
		res->hits += r->hits;
		res->misses += r->misses;
		res->bad += r->bad;
		if (r->end_ns > end)
			end = r->end_ns;
	}
	/*
	 * The run lasts from the start signal to the end of the last op of
	 * the slowest child: a child blocked on a lock at the deadline
	 * finishes its op late, and that time is part of the result.
	 */
	res->elapsed = (double)(end - b->run->start_ns) / 1e9;
	if (res->elapsed <= 0)
		res->elapsed = 1e-9;
	res->ran = true;
	rc = 0;
	goto teardown;
kill:
	kill_children(pids, started);
teardown:
	be->teardown(b);
out:
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
"  -b, --backend LIST       stores to measure, comma-separated: ns, rwlock,\n"
"                           lmdb, tdb, redis, memcached; all; both = ns,rwlock\n"
"                           (default both)\n"
"  -S, --size BYTES         NameStore segment size, k/m/g suffixes\n"
"                           allowed (default: from keys and value size)\n"
"      --rwlock-prefer-writer  writer-preferring rwlock for the baseline\n"
"      --seed N             base seed of the random streams (default 1)\n"
"      --nsd PATH           run the janitor PATH on the NameStore segment\n"
"      --json FILE          append one JSON line per store to FILE\n"
"      --label TEXT         copied into every JSON line\n"
"      --chase              also time a pointer chase over as many bytes as\n"
"                           NameStore's index and data (the memory limit)\n"
"      --server-threads N   memcached worker threads (default: online CPUs)\n"
"      --sample N           time one operation in N (default 1: every one);\n"
"                           the others run back to back, untimed\n"
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

enum {
	OPT_PREFER_WRITER = 256, OPT_SEED, OPT_NSD, OPT_JSON, OPT_LABEL,
	OPT_CHASE, OPT_SERVER_THREADS, OPT_SAMPLE,
};

/*
 * "ns,rwlock,lmdb": a comma-separated list of store names, "all" for every
 * store this binary was built with, or "both" for ns,rwlock (the default,
 * as before the peers existed).
 */
static bool parse_backends(const char *arg, uint64_t *out)
{
	char *copy = strdup(arg), *save = NULL;
	uint64_t set = 0;
	bool ok = copy != NULL;

	for (char *w = copy ? strtok_r(copy, ",", &save) : NULL; w && ok;
	     w = strtok_r(NULL, ",", &save)) {
		size_t i;

		if (strcmp(w, "all") == 0) {
			for (i = 0; i < NBACKENDS; i++)
				if (backends[i].be)
					set |= 1ull << i;
			continue;
		}
		if (strcmp(w, "both") == 0) {
			set |= 3u;
			continue;
		}
		for (i = 0; i < NBACKENDS; i++)
			if (strcmp(w, backends[i].name) == 0)
				break;
		if (i == NBACKENDS) {
			fprintf(stderr, "nsbench: unknown store '%s' (stores: "
				"ns, rwlock, lmdb, tdb, redis, memcached, all)\n",
				w);
			ok = false;
		} else if (!backends[i].be) {
			fprintf(stderr, "nsbench: store '%s' is not built: "
				"install %s and configure the build again "
				"(bench/setup-peers.sh does both)\n", w,
				backends[i].needs);
			ok = false;
		} else {
			set |= 1ull << i;
		}
	}
	free(copy);
	if (ok && !set) {
		fprintf(stderr, "nsbench: no store named in '%s'\n", arg);
		ok = false;
	}
	*out = set;
	return ok;
}

static int parse_args(int argc, char **argv, struct config *cfg, bool *chase)
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
		{ "json", required_argument, NULL, OPT_JSON },
		{ "label", required_argument, NULL, OPT_LABEL },
		{ "chase", no_argument, NULL, OPT_CHASE },
		{ "server-threads", required_argument, NULL, OPT_SERVER_THREADS },
		{ "sample", required_argument, NULL, OPT_SAMPLE },
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
		.backends = 3u,
		.size = 0,
		.server_threads = ncpu > 0 ? (unsigned)ncpu : 1u,
		.sample = 1,
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
			if (!parse_backends(optarg, &cfg->backends))
				return -1;
			break;
		case 'S':
			if (!parse_size(optarg, &cfg->size) || cfg->size == 0)
				goto bad;
			break;
		case OPT_JSON:
			cfg->json = optarg;
			break;
		case OPT_LABEL:
			cfg->label = optarg;
			break;
		case OPT_CHASE:
			*chase = true;
			break;
		case OPT_SERVER_THREADS:
			if (!parse_u64(optarg, &u) || u < 1 || u > 64)
				goto bad;
			cfg->server_threads = (unsigned)u;
			break;
		case OPT_SAMPLE:
			if (!parse_u64(optarg, &u) || u < 1 || u > 1000000)
				goto bad;
			cfg->sample = (unsigned)u;
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

/* ------------------------------------------------------------------------ */
/* The memory limit                                                         */
/* ------------------------------------------------------------------------ */

/*
 * What a get cannot avoid: on a table too big for the caches, the line
 * that holds the value is a cache miss (and, with 4 KiB pages, a TLB miss)
 * whatever the store's design.  The pointer chase measures exactly that:
 * BYTES of shared anonymous memory (tmpfs pages, as a segment in /dev/shm
 * has) cut into 64-byte nodes linked in one random cycle (Sattolo's
 * algorithm: a uniformly random cyclic permutation, so the walk visits
 * every node and the hardware prefetcher cannot guess the next address),
 * then followed hop by hop, each load depending on the one before.  Such
 * loops are the standard way to measure memory latency (lmbench's
 * lat_mem_rd, McVoy and Staelin, USENIX 1996).  Returns ns per hop, or a
 * negative number if the memory could not be had.
 */
static double chase_ns_per_hop(size_t bytes)
{
	size_t n = bytes / 64, hops = 4u << 20;
	uint64_t *mem, rng = 12345, t0, t1;
	uint32_t *perm;
	volatile uint64_t sink;
	uint64_t at = 0;

	if (n < 2)
		return -1;
	mem = mmap(NULL, n * 64, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	perm = malloc(n * sizeof(*perm));
	if (mem == MAP_FAILED || !perm) {
		if (mem != MAP_FAILED)
			munmap(mem, n * 64);
		free(perm);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rng_below(rng_next(&rng), (uint32_t)i);
		uint32_t tmp = perm[i];

		perm[i] = perm[j];
		perm[j] = tmp;
	}
	/* perm is now one cycle; node perm[i] links to node perm[i + 1]. */
	for (size_t i = 0; i < n; i++)
		mem[(size_t)perm[i] * 8] = (uint64_t)perm[(i + 1) % n] * 8;
	free(perm);
	for (size_t i = 0; i < n && i < hops; i++) /* warm the TLB and caches */
		at = mem[at];
	t0 = now_ns();
	for (size_t i = 0; i < hops; i++)
		at = mem[at];
	t1 = now_ns();
	sink = at;
	(void)sink;
	munmap(mem, n * 64);
	return (double)(t1 - t0) / (double)hops;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

/* Remove the scratch directory and whatever a store left in it. */
static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX];

	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (unlink(path) != 0 && errno == EISDIR)
			remove_dir(path);
	}
	closedir(d);
	rmdir(dir);
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct result *res = NULL;
	struct sigaction sa = { 0 };
	bool chase = false;
	int status = 1;

	if (parse_args(argc, argv, &b.cfg, &chase))
		return 2;

	/* No SA_RESTART: a signal must interrupt the parent's waitpid(). */
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	res = calloc(NBACKENDS, sizeof(*res));
	b.keytab = malloc((size_t)b.cfg.keys * KEY_STRIDE);
	if (!b.keytab || !res) {
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
	/*
	 * The peers' files (LMDB, TDB) and sockets (Redis, memcached) go in
	 * a private directory in /dev/shm, so that every store keeps its data
	 * in the same tmpfs memory NameStore's segment lives in.
	 */
	snprintf(b.dir, sizeof(b.dir), "/dev/shm/nsbench.XXXXXX");
	if (!mkdtemp(b.dir)) {
		fprintf(stderr, "nsbench: mkdtemp(%s): %s\n", b.dir,
			strerror(errno));
		b.dir[0] = '\0';
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
	printf(" size=%zu rwlock_kind=%s seed=%" PRIu64 " sample=%u\n", b.cfg.size,
	       b.cfg.prefer_writer ? "prefer-writer" : "default", b.cfg.seed, b.cfg.sample);
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
	for (size_t i = 0; i < NBACKENDS; i++) {
		const struct backend *be = backends[i].be;
		const char *why = NULL;

		if (!(b.cfg.backends & (1ull << i)) || stop_requested)
			continue;
		printf("# backend=%s what=\"%s\"\n", be->name, be->what);
		if (run_backend(&b, be, &res[i], &why)) {
			status = 1;
			printf("# backend=%s failed: %s\n", be->name, why);
		} else {
			print_result(&b, be->name, &res[i]);
			if (res[i].bad || res[i].errors[OP_GET] ||
			    res[i].errors[OP_SET])
				status = 1;
		}
		json_result(&b, be->name, &res[i], why);
		fflush(stdout);
	}
	for (size_t i = 1; i < NBACKENDS; i++)
		if (res[0].ran && res[i].ran && ops_per_s(&res[i], -1) > 0)
			printf("compare=ns/%s ns_ops_per_s=%.0f %s_ops_per_s=%.0f"
			       " ratio=%.2f\n", backends[i].name,
			       ops_per_s(&res[0], -1), backends[i].name,
			       ops_per_s(&res[i], -1),
			       ops_per_s(&res[0], -1) / ops_per_s(&res[i], -1));
	if (chase && !stop_requested) {
		/* NameStore's own footprint if it ran; else an estimate of
		 * header + key + value + index slot per key. */
		size_t bytes = b.ns_data_bytes ? b.ns_data_bytes
			: (size_t)b.cfg.keys * (64u + KEY_STRIDE +
						b.cfg.value_size + 64u);
		double hop = chase_ns_per_hop(bytes);

		if (hop <= 0) {
			fprintf(stderr, "nsbench: no memory for the chase\n");
			status = 1;
		} else {
			printf("backend=chase bytes=%zu ns_per_hop=%.1f\n", bytes,
			       hop);
			if (res[0].ran && res[0].lat[OP_GET].n)
				printf("compare=ns_get/chase get_mean_ns=%.0f "
				       "minus_timer_ns=%.0f ratio=%.2f\n",
				       hist_mean(&res[0].lat[OP_GET]),
				       hist_mean(&res[0].lat[OP_GET]) -
				       (double)b.timer_ns,
				       (hist_mean(&res[0].lat[OP_GET]) -
					(double)b.timer_ns) / hop);
			json_chase(&b, bytes, hop);
		}
	}
	if (stop_requested) {
		fprintf(stderr, "nsbench: interrupted\n");
		status = 130;
	}
out:
	if (b.dir[0])
		remove_dir(b.dir);
	if (b.run)
		munmap(b.run, b.run_size);
	free(res);
	free(b.zipf_cdf);
	free(b.keytab);
	return status;
}
