/*
 * nsops.c - what the calls beyond get/set/del cost: batches, counters and
 * read-through with single flight.
 *
 * nsops runs the scenarios named on its command line (all of them without
 * one) and prints one result line per measurement:
 *
 *   mget      One process, a preloaded key set, uniform random keys.  For
 *             each batch size (16 and 100 by default) it times ns_mget of
 *             that many keys against the same number of ns_get calls, in
 *             alternating rounds so that both see the same machine, and
 *             reports keys/s for each and their ratio.  ns_mget prefetches
 *             the buckets and then the items of the whole batch, so the
 *             cache misses of one key overlap those of the others; the
 *             ratio is what that buys.
 *
 *   incr      Two processes (--incr-procs) call ns_incr(+1), first all on
 *             one hot key (every call contends for one bucket lock and one
 *             item), then on keys drawn uniformly from the key set.  At the
 *             end the counters are read back: they must add up to the
 *             increments that returned 0 (verified=yes).
 *
 *   stampede  N processes (--procs, default 8) call ns_get_or_set on one
 *             key in a closed loop.  The loader costs about --load-us
 *             (1 ms: a busy loop by default, or a sleep) and stores with a
 *             TTL of --ttl-ms (50 ms), so the key keeps expiring under
 *             load.  Every loader call logs its start time; calls less than
 *             half a TTL apart answer the same expiry, so loads/expiry is
 *             1.0 when single flight works and up to N when it does not.
 *             Three modes: flight (ns_get_or_set), stale (the same with
 *             --stale-ms: callers that find the expired value get it at once
 *             while one reloads) and naive (ns_get, and on a miss load and
 *             ns_set: the stampede that single flight prevents, for
 *             comparison).
 *
 * Latencies are per call (per batch for mget), bracketed by two
 * clock_gettime(CLOCK_MONOTONIC) reads, and kept in a histogram of the
 * HdrHistogram kind as in nsbench.c: each power of two is split into 32
 * linear sub-buckets, so every value is known within 3.1%.
 *
 * Output: lines starting with '#' describe the run; every other line is a
 * list of key=value fields, so `grep -v '^#'` plus a split on spaces and
 * '=' parses it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
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

#define MAX_BATCHES 8
#define MAX_BATCH 4096u
#define MAX_PROCS 1024u

struct config {
	double seconds;         /* per measurement */
	uint32_t keys;          /* mget and incr key set */
	size_t value_size;      /* mget values */
	size_t size;            /* segment bytes */
	unsigned batch[MAX_BATCHES];
	unsigned nbatch;
	unsigned incr_procs;
	unsigned procs;         /* stampede */
	uint64_t ttl_ms;        /* stampede TTL */
	uint64_t load_us;       /* stampede loader cost */
	bool load_sleep;        /* sleep instead of spinning */
	uint64_t stale_ms;      /* stampede stale mode */
	uint64_t wait_ms;       /* stampede wait_ms; 0: the library's default */
	uint64_t seed;
};

#define DEFAULT_SECONDS 3.0
#define DEFAULT_KEYS 100000u
#define DEFAULT_VALUE_SIZE 64u
#define DEFAULT_SIZE ((size_t)256 << 20)
#define DEFAULT_INCR_PROCS 2u
#define DEFAULT_PROCS 8u
#define DEFAULT_TTL_MS 50u
#define DEFAULT_LOAD_US 1000u
#define DEFAULT_STALE_MS 1000u

/* Children that take longer than this to check in are stuck. */
#define READY_TIMEOUT_NS (30ull * 1000000000ull)

/* ------------------------------------------------------------------------ */
/* Random numbers; time and parsing are bench/common.h, the histogram hist.h */
/* ------------------------------------------------------------------------ */

/* The clock the library measures expiry on. */
static uint64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* SplitMix64 (Steele, Lea and Flood, OOPSLA 2014). */
static inline uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* [0, n) by multiply-and-shift (Lemire 2019, without the rejection step). */
static inline uint32_t rng_below(uint64_t *state, uint32_t n)
{
	return (uint32_t)(((rng_next(state) >> 32) * (uint64_t)n) >> 32);
}

/*
 * " p50_ns=.. p99_ns=.. p999_ns=.. p9999_ns=.. max_ns=.." with PREFIX before
 * each.  p99.99 is there for the stampede, where the calls that wait for a
 * load are a few in ten thousand.
 */
static void print_lat(const char *prefix, const struct hist *h)
{
	printf(" %sp50_ns=%" PRIu64 " %sp99_ns=%" PRIu64 " %sp999_ns=%" PRIu64
	       " %sp9999_ns=%" PRIu64 " %smax_ns=%" PRIu64,
	       prefix, hist_quantile(h, 0.50), prefix, hist_quantile(h, 0.99),
	       prefix, hist_quantile(h, 0.999), prefix, hist_quantile(h, 0.9999),
	       prefix, h->max);
}

/* ------------------------------------------------------------------------ */
/* Shared run state and the process runner                                  */
/* ------------------------------------------------------------------------ */

/* One child's counters; written only by it, read by the parent after
 * waitpid().  Own cache lines, so neighbours do not share one. */
struct proc_result {
	_Alignas(64) uint64_t ops;      /* calls made */
	uint64_t ok;                    /* calls that returned 0 */
	uint64_t errors;                /* calls that returned anything else */
	int first_error;
	uint64_t stale;                 /* stampede: values past their expiry */
	uint64_t end_ns;                /* end of its last call */
	struct hist lat;
};

/* Start times of the stampede's loader calls; more than this are counted
 * but not logged (at 50 ms a run of hours). */
#define LOAD_LOG_MAX 65536u

/*
 * The start line as in nsbench: children count themselves in on READY and
 * spin until GO; the parent writes START_NS and DEADLINE_NS, then sets GO
 * with a release store that the children's acquire load pairs with.
 */
struct run_shm {
	atomic_uint ready;
	atomic_uint go;
	uint64_t start_ns;
	uint64_t deadline_ns;
	atomic_uint_fast64_t loads;     /* stampede loader calls, all processes */
	uint64_t load_ns[LOAD_LOG_MAX]; /* their start times, slot = call number */
	struct proc_result res[];
};

#define KEY_STRIDE 16u

struct bench {
	struct config cfg;
	char *keytab;                   /* "key:%08u", length in the last byte */
	struct run_shm *run;
	size_t run_size;
	char seg_name[NS_NAME_MAX + 1];
	ns_cache *cache;
	ns_space *space;
};

static inline const char *key_at(const struct bench *b, uint32_t k, size_t *klen)
{
	const char *p = b->keytab + (size_t)k * KEY_STRIDE;

	*klen = (unsigned char)p[KEY_STRIDE - 1];
	return p;
}

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* A fresh private segment for ITEMS items, namespace "bench:ops". */
static int seg_open(struct bench *b, uint64_t items)
{
	struct ns_attach_opts opts = {
		.flags = NS_CREATE | NS_EXCL,
		.size = b->cfg.size,
		.max_items = items,
		.mode = 0600,
	};
	int rc;

	snprintf(b->seg_name, sizeof(b->seg_name), "nsops.%ld", (long)getpid());
	rc = ns_attach(b->seg_name, &opts, &b->cache);
	if (rc == NS_EEXIST) {
		/* Our pid is in the name: a leftover of a killed run. */
		ns_unlink(b->seg_name);
		rc = ns_attach(b->seg_name, &opts, &b->cache);
	}
	if (rc) {
		fprintf(stderr, "nsops: ns_attach(%s, %zu bytes): %s\n",
			b->seg_name, b->cfg.size, ns_strerror(rc));
		b->cache = NULL;
		return rc;
	}
	rc = ns_space_open(b->cache, "bench:ops", &b->space);
	if (rc) {
		fprintf(stderr, "nsops: ns_space_open: %s\n", ns_strerror(rc));
		return rc;
	}
	return 0;
}

static void seg_close(struct bench *b)
{
	if (b->cache) {
		ns_detach(b->cache);
		ns_unlink(b->seg_name);
	}
	b->cache = NULL;
	b->space = NULL;
}

/* Preload every key with VSIZE bytes, or with the text "0" when VSIZE is 0
 * (counters). */
static int preload(struct bench *b, size_t vsize)
{
	unsigned char *val = malloc(vsize ? vsize : 1);
	uint64_t failed = 0;
	int first = 0;

	if (!val)
		return NS_ENOMEM;
	for (size_t i = 0; i < vsize; i++)
		val[i] = (unsigned char)(i * 31u + 7u);
	for (uint32_t k = 0; k < b->cfg.keys && !stop_requested; k++) {
		size_t klen;
		const char *key = key_at(b, k, &klen);
		int err;

		if (vsize) {
			memcpy(val, &k, vsize < sizeof(k) ? vsize : sizeof(k));
			err = ns_set(b->space, key, klen, val, vsize, 0);
		} else {
			err = ns_set(b->space, key, klen, "0", 1, 0);
		}
		if (err && !failed++)
			first = err;
	}
	free(val);
	if (failed) {
		fprintf(stderr, "nsops: preload: %" PRIu64 " keys failed: %s\n",
			failed, ns_strerror(first));
		return first;
	}
	return stop_requested ? NS_EINVAL : 0;
}

static inline void note(struct proc_result *r, int rc)
{
	if (rc == 0) {
		r->ok++;
		return;
	}
	r->errors++;
	if (!r->first_error)
		r->first_error = rc;
}

typedef void child_fn(struct bench *b, unsigned idx, void *arg);

/*
 * Fork N children running FN(b, idx, ARG) from one start line until
 * run->deadline_ns; wait for them all.  Their results are in b->run->res.
 * Returns the elapsed seconds (start to the end of the slowest child's
 * last call) or a negative number if the run failed.
 */
static double run_procs(struct bench *b, unsigned n, child_fn *fn, void *arg)
{
	pid_t *pids = calloc(n, sizeof(*pids));
	uint64_t t, end = 0;
	unsigned started, left;
	bool failed = false;

	if (!pids)
		return -1;
	memset(b->run, 0, b->run_size);
	fflush(stdout);
	fflush(stderr);
	for (started = 0; started < n; started++) {
		pid_t pid = fork();

		if (pid < 0) {
			fprintf(stderr, "nsops: fork: %s\n", strerror(errno));
			goto kill;
		}
		if (pid == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			atomic_fetch_add_explicit(&b->run->ready, 1,
						  memory_order_relaxed);
			while (!atomic_load_explicit(&b->run->go,
						     memory_order_acquire))
				sched_yield();
			fn(b, started, arg);
			/* Give the client slot back; the parent's mapping is
			 * its own. */
			ns_detach(b->cache);
			_exit(0);
		}
		pids[started] = pid;
	}
	t = now_ns();
	while (atomic_load_explicit(&b->run->ready, memory_order_relaxed) < n) {
		if (stop_requested || now_ns() - t > READY_TIMEOUT_NS) {
			fprintf(stderr, "nsops: children did not get ready\n");
			goto kill;
		}
		sleep_ns(1000000);
	}
	b->run->start_ns = now_ns();
	b->run->deadline_ns = b->run->start_ns + (uint64_t)(b->cfg.seconds * 1e9);
	atomic_store_explicit(&b->run->go, 1, memory_order_release);

	for (left = n; left > 0;) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);

		if (pid < 0) {
			if (errno == EINTR && !stop_requested)
				continue;
			goto kill;
		}
		for (unsigned i = 0; i < n; i++) {
			if (pids[i] != pid)
				continue;
			pids[i] = 0;
			left--;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				fprintf(stderr, "nsops: a child %s %d\n",
					WIFSIGNALED(st) ? "died of signal"
							: "exited with status",
					WIFSIGNALED(st) ? WTERMSIG(st)
							: WEXITSTATUS(st));
				failed = true;
			}
		}
	}
	free(pids);
	if (failed)
		return -1;
	for (unsigned i = 0; i < n; i++)
		if (b->run->res[i].end_ns > end)
			end = b->run->res[i].end_ns;
	return end > b->run->start_ns ? (double)(end - b->run->start_ns) / 1e9 : 1e-9;
kill:
	kill_children(pids, started);
	free(pids);
	return -1;
}

/* Sum the children's results into *TOT (histograms merged). */
static void merge(const struct bench *b, unsigned n, struct proc_result *tot)
{
	memset(tot, 0, sizeof(*tot));
	for (unsigned i = 0; i < n; i++) {
		const struct proc_result *r = &b->run->res[i];

		tot->ops += r->ops;
		tot->ok += r->ok;
		tot->errors += r->errors;
		tot->stale += r->stale;
		if (!tot->first_error)
			tot->first_error = r->first_error;
		hist_merge(&tot->lat, &r->lat);
	}
}

static void print_first_error(const char *what, int err)
{
	if (err)
		printf("# %s first_error=\"%s\"\n", what, ns_strerror(err));
}

/* ------------------------------------------------------------------------ */
/* mget                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * The parent alone.  Rounds alternate the two methods (ROUNDS of each, each
 * round a tenth of --seconds) so that a change in the machine's load during
 * the run hits both alike.  Keys are drawn before the clock starts; only the
 * calls are timed, and keys/s is keys over the summed time of the calls.
 */
#define MGET_ROUNDS 10

struct mget_side {
	uint64_t keys, hits, errors, ns;
	int first_error;
	struct hist lat;                /* per batch */
};

static int scenario_mget(struct bench *b)
{
	const struct config *cfg = &b->cfg;
	unsigned maxb = 0;
	struct ns_kv *kv = NULL;
	unsigned char *bufs = NULL;
	uint32_t *idx = NULL;
	struct mget_side *side = NULL;
	uint64_t rng = cfg->seed;
	size_t cap = cfg->value_size ? cfg->value_size : 1;
	int rc = -1;

	for (unsigned i = 0; i < cfg->nbatch; i++)
		if (cfg->batch[i] > maxb)
			maxb = cfg->batch[i];
	kv = calloc(maxb, sizeof(*kv));
	bufs = malloc((size_t)maxb * cap);
	idx = calloc(maxb, sizeof(*idx));
	side = calloc(2, sizeof(*side));
	if (!kv || !bufs || !idx || !side) {
		fprintf(stderr, "nsops: out of memory\n");
		goto out;
	}
	if (seg_open(b, cfg->keys) || preload(b, cfg->value_size))
		goto out;
	/*
	 * Warm up for one round, untimed, so that the first measurement does
	 * not also pay for leaving the preload's sequential walk behind (in
	 * trial runs it tended to come out slower than the same one
	 * repeated).
	 */
	for (uint64_t end = now_ns() + (uint64_t)(cfg->seconds * 1e9 / MGET_ROUNDS);
	     now_ns() < end;) {
		for (unsigned i = 0; i < 64; i++) {
			size_t klen, vlen;
			const char *key = key_at(b, rng_below(&rng, cfg->keys), &klen);

			ns_get(b->space, key, klen, bufs, cap, &vlen);
		}
	}

	for (unsigned bi = 0; bi < cfg->nbatch && !stop_requested; bi++) {
		unsigned n = cfg->batch[bi];
		uint64_t round_ns = (uint64_t)(cfg->seconds * 1e9 / MGET_ROUNDS);

		memset(side, 0, 2 * sizeof(*side));
		for (int round = 0; round < 2 * MGET_ROUNDS && !stop_requested;
		     round++) {
			struct mget_side *sd = &side[round & 1];
			uint64_t end = now_ns() + round_ns;
			uint64_t t0, t1;

			do {
				for (unsigned i = 0; i < n; i++)
					idx[i] = rng_below(&rng, cfg->keys);
				if ((round & 1) == 0) {
					/* n separate gets */
					int hits = 0;

					t0 = now_ns();
					for (unsigned i = 0; i < n; i++) {
						size_t klen, vlen;
						const char *key = key_at(b, idx[i], &klen);
						int e = ns_get(b->space, key, klen,
							       bufs + (size_t)i * cap,
							       cap, &vlen);

						if (e == 0) {
							hits++;
						} else {
							sd->errors++;
							if (!sd->first_error)
								sd->first_error = e;
						}
					}
					t1 = now_ns();
					sd->hits += (uint64_t)hits;
				} else {
					int got;

					for (unsigned i = 0; i < n; i++) {
						kv[i].key = key_at(b, idx[i], &kv[i].klen);
						kv[i].buf = bufs + (size_t)i * cap;
						kv[i].cap = cap;
					}
					t0 = now_ns();
					got = ns_mget(b->space, kv, n);
					t1 = now_ns();
					if (got < 0) {
						sd->errors += n;
						if (!sd->first_error)
							sd->first_error = got;
					} else {
						sd->hits += (uint64_t)got;
						for (unsigned i = 0; i < n; i++) {
							if (kv[i].err == 0 &&
							    kv[i].vlen != cfg->value_size)
								kv[i].err = NS_ECORRUPT;
							if (kv[i].err == 0)
								continue;
							sd->errors++;
							if (!sd->first_error)
								sd->first_error = kv[i].err;
						}
					}
				}
				sd->keys += n;
				sd->ns += t1 - t0;
				hist_record(&sd->lat, t1 - t0);
			} while (t1 < end);
		}
		double get_kps = side[0].ns ? (double)side[0].keys * 1e9 / (double)side[0].ns : 0;
		double mget_kps = side[1].ns ? (double)side[1].keys * 1e9 / (double)side[1].ns : 0;

		printf("scenario=mget batch=%u procs=1 keys=%" PRIu32
		       " value_size=%zu get_keys_per_s=%.0f mget_keys_per_s=%.0f"
		       " ratio=%.2f get_ns_per_key=%.1f mget_ns_per_key=%.1f",
		       n, cfg->keys, cfg->value_size, get_kps, mget_kps,
		       get_kps > 0 ? mget_kps / get_kps : 0.0,
		       get_kps > 0 ? 1e9 / get_kps : 0.0,
		       mget_kps > 0 ? 1e9 / mget_kps : 0.0);
		print_lat("get_batch_", &side[0].lat);
		print_lat("mget_batch_", &side[1].lat);
		printf(" hits=%" PRIu64 " errors=%" PRIu64 "\n",
		       side[0].hits + side[1].hits, side[0].errors + side[1].errors);
		print_first_error("mget get", side[0].first_error);
		print_first_error("mget mget", side[1].first_error);
		fflush(stdout);
	}
	rc = stop_requested ? -1 : 0;
out:
	seg_close(b);
	free(kv);
	free(bufs);
	free(idx);
	free(side);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* incr                                                                     */
/* ------------------------------------------------------------------------ */

static const char hot_key[] = "ctr:hot";

static void incr_child(struct bench *b, unsigned idx, void *arg)
{
	bool hot = *(bool *)arg;
	struct proc_result *r = &b->run->res[idx];
	uint64_t rng = b->cfg.seed ^ (0x2545f4914f6cdd1dull * (idx + 1u));
	uint64_t deadline = b->run->deadline_ns, t0, t1;

	do {
		size_t klen = sizeof(hot_key) - 1;
		const char *key = hot_key;
		int64_t res;
		int rc;

		if (!hot)
			key = key_at(b, rng_below(&rng, b->cfg.keys), &klen);
		t0 = now_ns();
		/* INITIAL 1: an absent key (none is, after the preload)
		 * would count this call too. */
		rc = ns_incr(b->space, key, klen, 1, 1, 0, &res);
		t1 = now_ns();
		r->ops++;
		note(r, rc);
		hist_record(&r->lat, t1 - t0);
	} while (t1 < deadline);
	r->end_ns = t1;
}

static int read_counter(struct bench *b, const char *key, size_t klen, int64_t *v)
{
	char buf[32];
	size_t n;
	char *end;
	int rc = ns_get(b->space, key, klen, buf, sizeof(buf) - 1, &n);

	if (rc)
		return rc;
	buf[n] = '\0';
	errno = 0;
	*v = strtoll(buf, &end, 10);
	return errno || *end || end == buf ? NS_ENOTNUM : 0;
}

static int scenario_incr(struct bench *b)
{
	const struct config *cfg = &b->cfg;
	unsigned n = cfg->incr_procs;
	struct proc_result *tot = malloc(sizeof(*tot));
	int rc = -1;

	if (!tot)
		return -1;
	for (int v = 0; v < 2 && !stop_requested; v++) {
		bool hot = v == 0;
		int64_t sum = 0, x;
		int bad = 0, first_bad = 0;
		double elapsed;

		if (seg_open(b, cfg->keys + 16u) || preload(b, 0) ||
		    ns_set(b->space, hot_key, sizeof(hot_key) - 1, "0", 1, 0)) {
			seg_close(b);
			goto out;
		}
		elapsed = run_procs(b, n, incr_child, &hot);
		if (elapsed < 0) {
			seg_close(b);
			goto out;
		}
		merge(b, n, tot);
		if (hot) {
			bad = read_counter(b, hot_key, sizeof(hot_key) - 1, &sum);
			first_bad = bad;
		} else {
			for (uint32_t k = 0; k < cfg->keys; k++) {
				size_t klen;
				const char *key = key_at(b, k, &klen);
				int e = read_counter(b, key, klen, &x);

				if (e) {
					if (!bad++)
						first_bad = e;
					continue;
				}
				sum += x;
			}
		}
		printf("scenario=incr keys=%s procs=%u ops=%" PRIu64
		       " ops_per_s=%.0f elapsed_s=%.3f",
		       hot ? "hot" : "spread", n, tot->ops,
		       (double)tot->ops / elapsed, elapsed);
		if (!hot)
			printf(" nkeys=%" PRIu32, cfg->keys);
		print_lat("", &tot->lat);
		printf(" errors=%" PRIu64 " increments=%" PRIu64 " sum=%" PRId64
		       " verified=%s\n", tot->errors, tot->ok, sum,
		       !bad && sum >= 0 && (uint64_t)sum == tot->ok ? "yes" : "no");
		print_first_error("incr", tot->first_error);
		if (bad)
			printf("# incr: %d counter(s) unreadable: %s\n", bad,
			       ns_strerror(first_bad));
		fflush(stdout);
		seg_close(b);
	}
	rc = stop_requested ? -1 : 0;
out:
	free(tot);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* stampede                                                                 */
/* ------------------------------------------------------------------------ */

enum stampede_mode { MODE_FLIGHT, MODE_STALE, MODE_NAIVE, MODE_COUNT };

static const char *const mode_name[MODE_COUNT] = { "flight", "stale", "naive" };

static const char stampede_key[] = "stampede:hot";

/* The value: which load made it and when it expires (CLOCK_REALTIME ms,
 * the loader's estimate), padded to 64 bytes. */
struct stampede_val {
	uint64_t load;
	uint64_t expire_ms;
	unsigned char pad[48];
};

struct loader_ctx {
	struct bench *b;
	struct stampede_val v;
};

/* Costs about load_us of CPU (a busy loop on the clock) or of sleep. */
static int stampede_loader(void *arg, const void *key, size_t klen,
			   struct ns_value *out)
{
	struct loader_ctx *l = arg;
	struct bench *b = l->b;
	uint64_t t0 = now_ns();
	uint64_t n = atomic_fetch_add_explicit(&b->run->loads, 1,
					       memory_order_relaxed);

	(void)key;
	(void)klen;
	if (n < LOAD_LOG_MAX)
		b->run->load_ns[n] = t0;
	if (b->cfg.load_sleep)
		sleep_ns((long)(b->cfg.load_us * 1000u));
	else
		while (now_ns() - t0 < b->cfg.load_us * 1000u)
			;
	memset(&l->v, 0, sizeof(l->v));
	l->v.load = n + 1;
	l->v.expire_ms = realtime_ms() + b->cfg.ttl_ms;
	out->val = &l->v;
	out->vlen = sizeof(l->v);
	out->ttl_ms = b->cfg.ttl_ms;
	out->flags = 0;
	return 0;
}

static void stampede_child(struct bench *b, unsigned idx, void *arg)
{
	enum stampede_mode mode = *(enum stampede_mode *)arg;
	struct proc_result *r = &b->run->res[idx];
	struct loader_ctx l = { .b = b };
	struct ns_load_opts opts = {
		.wait_ms = b->cfg.wait_ms,
		.stale_ms = mode == MODE_STALE ? b->cfg.stale_ms : 0,
	};
	struct stampede_val got;
	uint64_t deadline = b->run->deadline_ns, t0, t1;
	const size_t klen = sizeof(stampede_key) - 1;

	do {
		size_t vlen = 0;
		uint64_t called_ms = realtime_ms();
		int rc;

		t0 = now_ns();
		if (mode == MODE_NAIVE) {
			rc = ns_get(b->space, stampede_key, klen, &got,
				    sizeof(got), &vlen);
			if (rc == NS_ENOTFOUND) {
				struct ns_value v;

				stampede_loader(&l, stampede_key, klen, &v);
				rc = ns_set(b->space, stampede_key, klen,
					    v.val, v.vlen, v.ttl_ms);
				memcpy(&got, v.val, sizeof(got));
				vlen = v.vlen;
			}
		} else {
			rc = ns_get_or_set(b->space, stampede_key, klen, &got,
					   sizeof(got), &vlen, stampede_loader,
					   &l, &opts);
		}
		t1 = now_ns();
		r->ops++;
		if (rc == 0 && vlen != sizeof(got))
			rc = NS_ECORRUPT;
		note(r, rc);
		hist_record(&r->lat, t1 - t0);
		/*
		 * Stale: expired before the call began (a value that expires
		 * during a call may be either).  One ms of slack: the loader's
		 * expiry is an estimate of the library's.
		 */
		if (rc == 0 && called_ms > got.expire_ms + 1)
			r->stale++;
	} while (t1 < deadline);
	r->end_ns = t1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int scenario_stampede(struct bench *b)
{
	const struct config *cfg = &b->cfg;
	unsigned n = cfg->procs;
	struct proc_result *tot = malloc(sizeof(*tot));
	uint64_t *log = malloc(LOAD_LOG_MAX * sizeof(*log));
	int rc = -1;

	if (!tot || !log)
		goto out;
	for (int m = 0; m < MODE_COUNT && !stop_requested; m++) {
		enum stampede_mode mode = (enum stampede_mode)m;
		uint64_t loads, logged, episodes = 0, most = 0, in_ep = 0;
		uint64_t ep_start = 0, gap = cfg->ttl_ms * 1000000u / 2;
		double elapsed;

		if (seg_open(b, 1024)) {
			seg_close(b);
			goto out;
		}
		elapsed = run_procs(b, n, stampede_child, &mode);
		if (elapsed < 0) {
			seg_close(b);
			goto out;
		}
		merge(b, n, tot);
		/*
		 * Loads that start less than half a TTL after the first load
		 * of an episode answer the same expiry: a new value lives a
		 * whole TTL, so the next expiry is at least that far away.
		 */
		loads = atomic_load(&b->run->loads);
		logged = loads < LOAD_LOG_MAX ? loads : LOAD_LOG_MAX;
		memcpy(log, b->run->load_ns, logged * sizeof(*log));
		qsort(log, logged, sizeof(*log), cmp_u64);
		for (uint64_t i = 0; i < logged; i++) {
			if (episodes == 0 || log[i] - ep_start >= gap) {
				episodes++;
				ep_start = log[i];
				in_ep = 0;
			}
			if (++in_ep > most)
				most = in_ep;
		}
		printf("scenario=stampede mode=%s procs=%u ttl_ms=%" PRIu64
		       " load_us=%" PRIu64 " loader=%s stale_ms=%" PRIu64
		       " ops=%" PRIu64 " ops_per_s=%.0f elapsed_s=%.3f"
		       " loads=%" PRIu64 " expiries=%" PRIu64
		       " loads_per_expiry=%.2f max_loads_per_expiry=%" PRIu64
		       " stale_served=%" PRIu64,
		       mode_name[mode], n, cfg->ttl_ms, cfg->load_us,
		       cfg->load_sleep ? "sleep" : "spin",
		       mode == MODE_STALE ? cfg->stale_ms : 0, tot->ops,
		       (double)tot->ops / elapsed, elapsed, loads, episodes,
		       episodes ? (double)logged / (double)episodes : 0.0, most,
		       tot->stale);
		print_lat("", &tot->lat);
		printf(" errors=%" PRIu64 "\n", tot->errors);
		print_first_error("stampede", tot->first_error);
		fflush(stdout);
		seg_close(b);
	}
	rc = stop_requested ? -1 : 0;
out:
	free(tot);
	free(log);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                             */
/* ------------------------------------------------------------------------ */

static const struct scenario {
	const char *name;
	int (*run)(struct bench *b);
} scenarios[] = {
	{ "mget", scenario_mget },
	{ "incr", scenario_incr },
	{ "stampede", scenario_stampede },
};
#define NSCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

static void usage(FILE *f)
{
	fprintf(f,
"usage: nsops [options] [mget|incr|stampede|all]...\n"
"  -t, --seconds S        length of each measurement (default %.0f)\n"
"  -k, --keys K           key set of mget and incr (default %u)\n"
"  -v, --value-size B     bytes per mget value (default %u)\n"
"  -b, --batch N[,N...]   mget batch sizes (default 16,100)\n"
"      --incr-procs N     incr processes (default %u)\n"
"  -p, --procs N          stampede processes (default %u)\n"
"      --ttl-ms MS        stampede TTL (default %u)\n"
"      --load-us US       stampede loader cost (default %u)\n"
"      --loader spin|sleep  busy loop or sleep in the loader (default spin)\n"
"      --stale-ms MS      stale_ms of the stampede's stale mode (default %u)\n"
"      --wait-ms MS       wait_ms of the stampede (default 0: the library's)\n"
"  -S, --size BYTES       segment size, k/m/g suffixes (default 256m)\n"
"      --seed N           base of the random streams (default 1)\n"
"  -h, --help             this text\n",
		DEFAULT_SECONDS, DEFAULT_KEYS, DEFAULT_VALUE_SIZE,
		DEFAULT_INCR_PROCS, DEFAULT_PROCS, DEFAULT_TTL_MS,
		DEFAULT_LOAD_US, DEFAULT_STALE_MS);
}

static bool parse_batches(char *s, struct config *cfg)
{
	cfg->nbatch = 0;
	for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
		uint64_t u;

		if (cfg->nbatch == MAX_BATCHES || !parse_u64(tok, &u) || u < 1 ||
		    u > MAX_BATCH)
			return false;
		cfg->batch[cfg->nbatch++] = (unsigned)u;
	}
	return cfg->nbatch > 0;
}

enum { OPT_INCR_PROCS = 256, OPT_TTL, OPT_LOAD_US, OPT_LOADER, OPT_STALE,
       OPT_WAIT, OPT_SEED };

static int parse_args(int argc, char **argv, struct config *cfg, bool *want)
{
	static const struct option longopts[] = {
		{ "seconds", required_argument, NULL, 't' },
		{ "keys", required_argument, NULL, 'k' },
		{ "value-size", required_argument, NULL, 'v' },
		{ "batch", required_argument, NULL, 'b' },
		{ "incr-procs", required_argument, NULL, OPT_INCR_PROCS },
		{ "procs", required_argument, NULL, 'p' },
		{ "ttl-ms", required_argument, NULL, OPT_TTL },
		{ "load-us", required_argument, NULL, OPT_LOAD_US },
		{ "loader", required_argument, NULL, OPT_LOADER },
		{ "stale-ms", required_argument, NULL, OPT_STALE },
		{ "wait-ms", required_argument, NULL, OPT_WAIT },
		{ "size", required_argument, NULL, 'S' },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t u;
	char *end;
	int c;
	bool any = false;

	*cfg = (struct config){
		.seconds = DEFAULT_SECONDS,
		.keys = DEFAULT_KEYS,
		.value_size = DEFAULT_VALUE_SIZE,
		.size = DEFAULT_SIZE,
		.batch = { 16, 100 },
		.nbatch = 2,
		.incr_procs = DEFAULT_INCR_PROCS,
		.procs = DEFAULT_PROCS,
		.ttl_ms = DEFAULT_TTL_MS,
		.load_us = DEFAULT_LOAD_US,
		.stale_ms = DEFAULT_STALE_MS,
		.seed = 1,
	};
	while ((c = getopt_long(argc, argv, "t:k:v:b:p:S:h", longopts, NULL)) != -1) {
		switch (c) {
		case 't':
			errno = 0;
			cfg->seconds = strtod(optarg, &end);
			if (errno || *end || !(cfg->seconds > 0 && cfg->seconds < 1e6))
				goto bad;
			break;
		case 'k':
			if (!parse_u64(optarg, &u) || u < 1 || u > UINT32_MAX - 16u)
				goto bad;
			cfg->keys = (uint32_t)u;
			break;
		case 'v':
			if (!parse_size(optarg, &cfg->value_size) ||
			    cfg->value_size > (1u << 20))
				goto bad;
			break;
		case 'b':
			if (!parse_batches(optarg, cfg))
				goto bad;
			break;
		case OPT_INCR_PROCS:
			if (!parse_u64(optarg, &u) || u < 1 || u > MAX_PROCS)
				goto bad;
			cfg->incr_procs = (unsigned)u;
			break;
		case 'p':
			if (!parse_u64(optarg, &u) || u < 1 || u > MAX_PROCS)
				goto bad;
			cfg->procs = (unsigned)u;
			break;
		case OPT_TTL:
			if (!parse_u64(optarg, &u) || u < 2 || u > 3600000)
				goto bad;
			cfg->ttl_ms = u;
			break;
		case OPT_LOAD_US:
			if (!parse_u64(optarg, &u) || u > 10000000)
				goto bad;
			cfg->load_us = u;
			break;
		case OPT_LOADER:
			if (strcmp(optarg, "spin") == 0)
				cfg->load_sleep = false;
			else if (strcmp(optarg, "sleep") == 0)
				cfg->load_sleep = true;
			else
				goto bad;
			break;
		case OPT_STALE:
			if (!parse_u64(optarg, &cfg->stale_ms) || cfg->stale_ms < 1)
				goto bad;
			break;
		case OPT_WAIT:
			if (!parse_u64(optarg, &cfg->wait_ms))
				goto bad;
			break;
		case 'S':
			if (!parse_size(optarg, &cfg->size) || cfg->size == 0)
				goto bad;
			break;
		case OPT_SEED:
			if (!parse_u64(optarg, &cfg->seed))
				goto bad;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	for (int i = optind; i < argc; i++) {
		bool found = false;

		for (size_t j = 0; j < NSCENARIOS; j++) {
			if (strcmp(argv[i], "all") == 0 ||
			    strcmp(argv[i], scenarios[j].name) == 0) {
				want[j] = true;
				found = true;
			}
		}
		if (!found) {
			fprintf(stderr, "nsops: unknown scenario '%s'\n", argv[i]);
			usage(stderr);
			return -1;
		}
		any = true;
	}
	if (!any)
		for (size_t j = 0; j < NSCENARIOS; j++)
			want[j] = true;
	return 0;
bad:
	for (const struct option *o = longopts; o->name; o++)
		if (o->val == c)
			fprintf(stderr, "nsops: bad value '%s' for --%s\n",
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
	struct sigaction sa = { 0 };
	bool want[NSCENARIOS] = { false };
	unsigned maxprocs;
	int status = 0;

	if (parse_args(argc, argv, &b.cfg, want))
		return 2;
	/* No SA_RESTART: a signal must interrupt the parent's waitpid(). */
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	b.keytab = malloc((size_t)b.cfg.keys * KEY_STRIDE);
	if (!b.keytab) {
		fprintf(stderr, "nsops: out of memory for %u keys\n", b.cfg.keys);
		return 1;
	}
	for (uint32_t k = 0; k < b.cfg.keys; k++) {
		char *p = b.keytab + (size_t)k * KEY_STRIDE;
		int len = snprintf(p, KEY_STRIDE - 1, "key:%08" PRIu32, k);

		p[KEY_STRIDE - 1] = (char)len;
	}
	maxprocs = b.cfg.procs > b.cfg.incr_procs ? b.cfg.procs : b.cfg.incr_procs;
	b.run_size = sizeof(struct run_shm) +
		     (size_t)maxprocs * sizeof(struct proc_result);
	b.run = mmap(NULL, b.run_size, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b.run == MAP_FAILED) {
		fprintf(stderr, "nsops: mmap: %s\n", strerror(errno));
		free(b.keytab);
		return 1;
	}

	printf("# nsops libnamestore=%s seconds=%g keys=%" PRIu32
	       " value_size=%zu size=%zu cpus=%ld seed=%" PRIu64 "\n",
	       ns_version(), b.cfg.seconds, b.cfg.keys, b.cfg.value_size,
	       b.cfg.size, sysconf(_SC_NPROCESSORS_ONLN), b.cfg.seed);
	printf("# latencies include about one clock_gettime(CLOCK_MONOTONIC);"
	       " mget latencies are per batch\n");
#ifndef __OPTIMIZE__
	printf("# warning: built without optimization; configure with "
	       "--buildtype=release for meaningful numbers\n");
#endif
	for (size_t j = 0; j < NSCENARIOS && !stop_requested; j++) {
		if (want[j] && scenarios[j].run(&b)) {
			fprintf(stderr, "nsops: scenario %s failed\n",
				scenarios[j].name);
			status = 1;
		}
	}
	if (stop_requested) {
		fprintf(stderr, "nsops: interrupted\n");
		status = 130;
	}
	munmap(b.run, b.run_size);
	free(b.keytab);
	return status;
}
