/*
 * demo.c - ns-demo: several processes share one NameStore segment.
 *
 * This is the shape of a prefork server's use of the cache, without the
 * server: the parent creates a private segment, opens a namespace and fills
 * it, then forks workers that inherit the attachment (attach before fork is
 * supported: each child gets its own client slot on first use).  The
 * workers run a mixed workload of gets, sets and deletes on one shared key
 * set for a few seconds, some of the sets with a TTL, and report their
 * counts through a MAP_SHARED anonymous region.  The parent prints the
 * throughput, the hits and misses of every worker, checks every key one last
 * time, and removes the segment.
 *
 * Every value read is verified, because a cache shared by processes that
 * write concurrently is exactly where a torn or misplaced value would show:
 *
 *   +-----+---+-----------------------------+----------------+----------+
 *   | key | | | writer, seq, expires_ms     | filler bytes   | checksum |
 *   +-----+---+-----------------------------+----------------+----------+
 *     klen  1   struct demo_hdr (16 bytes)    up to ~100 in     8 bytes,
 *                                             total             FNV-1a 64
 *
 * A value that does not start with its own key, or whose checksum does not
 * match, is counted as corrupt, and any corrupt read makes ns-demo exit with
 * status 1.  expires_ms lets a reader notice a value returned well after its
 * TTL ran out; that is reported as "stale" but is not an error, because the
 * library's clock and ours may differ by a little.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
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

#define DEFAULT_SECONDS 3.0
#define DEFAULT_WORKERS 4u
#define DEFAULT_KEYS 20000u
#define MAX_WORKERS 256u

/* 64 MiB holds the 20,000 keys many times over, so sets never evict. */
#define SEGMENT_SIZE ((size_t)64 << 20)

/* The workload: percentages of gets and sets; the rest are deletes. */
#define GET_PCT 80u
#define SET_PCT 15u

/* One set in TTL_ONE_IN gets a TTL between TTL_MIN_MS and TTL_MAX_MS. */
#define TTL_ONE_IN 5u
#define TTL_MIN_MS 200u
#define TTL_MAX_MS 2000u

/* Values are VAL_MIN to VAL_MAX bytes, about 100, header included. */
#define VAL_MIN 90u
#define VAL_MAX 110u

/*
 * A hit returned more than this long after the TTL its writer set is
 * counted as stale.  A second is far above any clock skew between the
 * library's expiry check and ours, so a stale count means expiry is broken.
 */
#define STALE_SLACK_MS 1000u

/*
 * How long after the end of the run the parent waits for the workers.  A
 * worker finishes its last op right after the deadline; taking much longer
 * means it is stuck, and the demo reports it instead of hanging.
 */
#define REAP_GRACE_NS (30ull * 1000000000ull)

struct demo_hdr {
	uint32_t writer;        /* worker index, or UINT32_MAX for the parent */
	uint32_t seq;           /* the writer's set counter */
	uint64_t expires_ms;    /* CLOCK_MONOTONIC ms, 0 for no TTL */
};

#define CHECKSUM_LEN 8u

/*
 * One worker's counters.  The worker is the only writer; the parent reads
 * them after waitpid() has returned for that worker, which orders the
 * worker's stores before the parent's loads.  Each slot starts on its own
 * cache line so that workers do not share one.
 */
struct worker_stats {
	_Alignas(64) uint64_t gets, hits, misses;
	uint64_t sets, dels, del_found;
	uint64_t corrupt;       /* reads that failed verification */
	uint64_t stale;         /* hits past their TTL; see STALE_SLACK_MS */
	uint64_t errors;        /* unexpected return codes */
	int first_error;
	uint64_t elapsed_ns;    /* the worker's own run time */
};

struct demo {
	double seconds;
	unsigned workers;
	uint32_t keys;
	char seg_name[NS_NAME_MAX + 1];
	ns_cache *cache;
	ns_space *space;
	struct worker_stats *stats;     /* MAP_SHARED, one per worker */
	size_t stats_size;
};

/*
 * Set by SIGINT or SIGTERM in the parent; the wait loop looks at it.  A
 * volatile sig_atomic_t is the one type C promises a signal handler may
 * write and the interrupted code read; it is never shared between processes.
 */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * SplitMix64 (Steele, Lea and Flood, OOPSLA 2014), one stream per worker:
 * small, fast and good enough to pick keys and operations.
 */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rng_below(uint64_t *state, uint32_t n)
{
	return (uint32_t)(((rng_next(state) >> 32) * (uint64_t)n) >> 32);
}

/* FNV-1a, 64-bit (http://www.isthe.com/chongo/tech/comp/fnv/). */
static uint64_t checksum(const unsigned char *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static size_t make_key(char *buf, size_t cap, uint32_t k)
{
	return (size_t)snprintf(buf, cap, "user:%05" PRIu32, k);
}

/*
 * Build a value for KEY into VAL (at least VAL_MAX bytes) and return its
 * length.  The filler comes from the writer's random stream, so two writes
 * of one key differ and a value spliced from two of them fails the checksum.
 */
static size_t make_value(unsigned char *val, const char *key, size_t klen,
			 const struct demo_hdr *hdr, uint64_t *rng)
{
	size_t len = VAL_MIN + rng_below(rng, VAL_MAX - VAL_MIN + 1u);
	size_t pos = 0;
	uint64_t sum;

	memcpy(val, key, klen);
	pos += klen;
	val[pos++] = '|';
	memcpy(val + pos, hdr, sizeof(*hdr));
	pos += sizeof(*hdr);
	while (pos < len - CHECKSUM_LEN)
		val[pos++] = (unsigned char)('a' + rng_below(rng, 26));
	sum = checksum(val, pos);
	memcpy(val + pos, &sum, CHECKSUM_LEN);
	return len;
}

/*
 * Check a value read for KEY.  Returns true if it is intact, and then fills
 * *HDR from it.
 */
static bool check_value(const unsigned char *val, size_t vlen,
			const char *key, size_t klen, struct demo_hdr *hdr)
{
	uint64_t want;

	if (vlen < klen + 1 + sizeof(*hdr) + CHECKSUM_LEN || vlen > VAL_MAX)
		return false;
	if (memcmp(val, key, klen) != 0 || val[klen] != '|')
		return false;
	memcpy(&want, val + vlen - CHECKSUM_LEN, CHECKSUM_LEN);
	if (checksum(val, vlen - CHECKSUM_LEN) != want)
		return false;
	memcpy(hdr, val + klen + 1, sizeof(*hdr));
	return true;
}

static void note_error(struct worker_stats *st, int rc)
{
	st->errors++;
	if (!st->first_error)
		st->first_error = rc;
}

/* Count one get's outcome: a hit that verifies, a miss, or a problem. */
static void account_get(struct worker_stats *st, int rc,
			const unsigned char *buf, size_t vlen, const char *key,
			size_t klen)
{
	struct demo_hdr hdr;

	if (rc == NS_ENOTFOUND) {
		st->misses++;
	} else if (rc == NS_ERANGE || rc == NS_ECORRUPT) {
		/* No value we write is larger than the buffer. */
		st->corrupt++;
	} else if (rc) {
		note_error(st, rc);
	} else if (!check_value(buf, vlen, key, klen, &hdr)) {
		st->corrupt++;
	} else {
		st->hits++;
		if (hdr.expires_ms &&
		    now_ns() / 1000000u > hdr.expires_ms + STALE_SLACK_MS)
			st->stale++;
	}
}

/*
 * One worker: GET_PCT% gets, SET_PCT% sets and the rest deletes, on keys
 * drawn uniformly, until the deadline.
 */
static int worker_main(struct demo *d, unsigned idx)
{
	struct worker_stats *st = &d->stats[idx];
	uint64_t rng = 0x5eed0000ull + idx;
	uint64_t start = now_ns(), end;
	uint64_t deadline = start + (uint64_t)(d->seconds * 1e9);
	unsigned char val[VAL_MAX], buf[2 * VAL_MAX];
	uint32_t seq = 0;
	char key[32];

	for (unsigned n = 0;; n++) {
		uint32_t k = rng_below(&rng, d->keys);
		uint32_t pick = rng_below(&rng, 100);
		size_t klen = make_key(key, sizeof(key), k), vlen = 0;
		int rc;

		/* Reading the clock every 64 ops keeps it off the profile. */
		if (n % 64 == 0 && now_ns() >= deadline)
			break;
		if (pick < GET_PCT) {
			st->gets++;
			rc = ns_get(d->space, key, klen, buf, sizeof(buf),
				    &vlen);
			account_get(st, rc, buf, vlen, key, klen);
		} else if (pick < GET_PCT + SET_PCT) {
			struct demo_hdr hdr = { .writer = idx, .seq = ++seq };
			uint64_t ttl = 0;

			if (rng_below(&rng, TTL_ONE_IN) == 0) {
				ttl = TTL_MIN_MS +
				      rng_below(&rng, TTL_MAX_MS - TTL_MIN_MS);
				hdr.expires_ms = now_ns() / 1000000u + ttl;
			}
			vlen = make_value(val, key, klen, &hdr, &rng);
			st->sets++;
			rc = ns_set(d->space, key, klen, val, vlen, ttl);
			if (rc)
				note_error(st, rc);
		} else {
			st->dels++;
			rc = ns_del(d->space, key, klen);
			if (rc == 0)
				st->del_found++;
			else if (rc != NS_ENOTFOUND)
				note_error(st, rc);
		}
	}
	end = now_ns();
	st->elapsed_ns = end - start;
	/* The parent's attachment is another mapping; this one is ours. */
	ns_detach(d->cache);
	return 0;
}

/* Fill every key from the parent, so the workers start with hits. */
static int preload(struct demo *d)
{
	struct demo_hdr hdr = { .writer = UINT32_MAX };
	unsigned char val[VAL_MAX];
	uint64_t rng = 0x9a4e47;
	char key[32];

	for (uint32_t k = 0; k < d->keys; k++) {
		size_t klen = make_key(key, sizeof(key), k);
		size_t vlen;
		int rc;

		hdr.seq = k;
		vlen = make_value(val, key, klen, &hdr, &rng);
		rc = ns_set(d->space, key, klen, val, vlen, 0);
		if (rc) {
			fprintf(stderr, "ns-demo: preload of %s: %s\n", key,
				ns_strerror(rc));
			return rc;
		}
	}
	return 0;
}

/*
 * After the run, read every key once more from the parent: whatever the
 * workers left behind must verify too.
 */
static void final_check(struct demo *d, uint64_t *present, uint64_t *absent,
			uint64_t *corrupt, uint64_t *errors)
{
	struct worker_stats st = { 0 };
	unsigned char buf[2 * VAL_MAX];
	char key[32];

	for (uint32_t k = 0; k < d->keys; k++) {
		size_t klen = make_key(key, sizeof(key), k), vlen = 0;
		int rc = ns_get(d->space, key, klen, buf, sizeof(buf), &vlen);

		account_get(&st, rc, buf, vlen, key, klen);
	}
	*present = st.hits;
	*absent = st.misses;
	*corrupt = st.corrupt;
	*errors = st.errors;
	if (st.first_error)
		fprintf(stderr, "ns-demo: final check: %s\n",
			ns_strerror(st.first_error));
}

/*
 * Wait for every worker until DEADLINE.  Returns the number of workers that
 * did not exit cleanly (killed ones included).
 */
static unsigned reap_workers(pid_t *pids, unsigned n, uint64_t deadline)
{
	unsigned left = n, bad = 0;

	while (left > 0) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid > 0) {
			for (unsigned i = 0; i < n; i++) {
				if (pids[i] != pid)
					continue;
				pids[i] = 0;
				left--;
				if (WIFSIGNALED(status)) {
					fprintf(stderr, "ns-demo: worker %u "
						"died of signal %d\n", i,
						WTERMSIG(status));
					bad++;
				} else if (WEXITSTATUS(status) != 0) {
					fprintf(stderr, "ns-demo: worker %u "
						"exited with status %d\n", i,
						WEXITSTATUS(status));
					bad++;
				}
			}
			continue;
		}
		if (pid < 0 && errno != EINTR)
			break;
		if (stop_requested || now_ns() > deadline) {
			fprintf(stderr, "ns-demo: %s; killing %u worker(s)\n",
				stop_requested ? "interrupted"
					       : "workers did not finish in time",
				left);
			break;
		}
		{
			struct timespec ts = { 0, 10 * 1000 * 1000 };

			nanosleep(&ts, NULL);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (pids[i] <= 0)
			continue;
		kill(pids[i], SIGKILL);
		while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
			;
		pids[i] = 0;
		bad++;
	}
	return bad;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: ns-demo [options]\n"
"  -t, --seconds S   how long the workers run (default %.0f)\n"
"  -w, --workers N   worker processes (default %u)\n"
"  -k, --keys K      number of keys (default %u)\n"
"  -h, --help        this text\n",
		DEFAULT_SECONDS, DEFAULT_WORKERS, DEFAULT_KEYS);
}

static int parse_args(int argc, char **argv, struct demo *d)
{
	static const struct option longopts[] = {
		{ "seconds", required_argument, NULL, 't' },
		{ "workers", required_argument, NULL, 'w' },
		{ "keys", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	unsigned long v;
	int c;

	d->seconds = DEFAULT_SECONDS;
	d->workers = DEFAULT_WORKERS;
	d->keys = DEFAULT_KEYS;
	while ((c = getopt_long(argc, argv, "t:w:k:h", longopts, NULL)) != -1) {
		errno = 0;
		switch (c) {
		case 't':
			d->seconds = strtod(optarg, &end);
			if (*end || errno || !(d->seconds > 0 &&
					       d->seconds < 86400))
				goto bad;
			break;
		case 'w':
			v = strtoul(optarg, &end, 10);
			if (*end || errno || v < 1 || v > MAX_WORKERS)
				goto bad;
			d->workers = (unsigned)v;
			break;
		case 'k':
			v = strtoul(optarg, &end, 10);
			if (*end || errno || v < 1 || v > 99999)
				goto bad;
			d->keys = (uint32_t)v;
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
		fprintf(stderr, "ns-demo: unexpected argument '%s'\n",
			argv[optind]);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "ns-demo: bad value '%s' for -%c\n", optarg, c);
	usage(stderr);
	return -1;
}

int main(int argc, char **argv)
{
	struct demo d = { 0 };
	struct ns_attach_opts opts = {
		.flags = NS_CREATE | NS_EXCL,
		.size = SEGMENT_SIZE,
		.mode = 0600,
	};
	struct worker_stats tot = { 0 };
	struct sigaction sa = { 0 };
	pid_t *pids = NULL;
	uint64_t present = 0, absent = 0, corrupt_end = 0, errors_end = 0;
	unsigned started = 0, failed_workers = 0;
	double rate_total = 0;
	int rc, status = 1;

	if (parse_args(argc, argv, &d))
		return 2;
	opts.max_items = d.keys;

	/* No SA_RESTART, so that a signal interrupts the wait for workers. */
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	d.stats_size = d.workers * sizeof(struct worker_stats);
	d.stats = mmap(NULL, d.stats_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pids = calloc(d.workers, sizeof(*pids));
	if (d.stats == MAP_FAILED || !pids) {
		fprintf(stderr, "ns-demo: out of memory\n");
		d.stats = NULL;
		goto out;
	}

	/* The pid makes the name private to this run. */
	snprintf(d.seg_name, sizeof(d.seg_name), "ns-demo.%ld",
		 (long)getpid());
	rc = ns_attach(d.seg_name, &opts, &d.cache);
	if (rc) {
		fprintf(stderr, "ns-demo: ns_attach(%s): %s\n", d.seg_name,
			ns_strerror(rc));
		d.cache = NULL;
		goto out;
	}
	rc = ns_space_open(d.cache, "demo:kv", &d.space);
	if (rc) {
		fprintf(stderr, "ns-demo: ns_space_open(demo:kv): %s\n",
			ns_strerror(rc));
		goto out;
	}
	printf("ns-demo: libnamestore %s, segment %s (%zu MiB), space demo:kv\n",
	       ns_version(), d.seg_name, SEGMENT_SIZE >> 20);
	if (preload(&d))
		goto out;
	printf("ns-demo: %" PRIu32 " keys preloaded; %u workers for %.1f s "
	       "(%u%% get, %u%% set, %u%% del; 1 set in %u has a TTL of "
	       "%u-%u ms)\n", d.keys, d.workers, d.seconds, GET_PCT, SET_PCT,
	       100u - GET_PCT - SET_PCT, TTL_ONE_IN, TTL_MIN_MS, TTL_MAX_MS);
	fflush(stdout);

	for (started = 0; started < d.workers; started++) {
		pid_t pid = fork();

		if (pid < 0) {
			fprintf(stderr, "ns-demo: fork: %s\n", strerror(errno));
			break;
		}
		if (pid == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			_exit(worker_main(&d, started));
		}
		pids[started] = pid;
	}
	failed_workers = reap_workers(pids, started,
				      now_ns() + (uint64_t)(d.seconds * 1e9) +
					      REAP_GRACE_NS);
	if (started < d.workers || failed_workers || stop_requested)
		goto out;

	printf("%6s %10s %10s %10s %10s %10s %9s %9s %8s %7s %6s\n", "worker",
	       "ops", "ops/s", "gets", "hits", "misses", "sets", "dels",
	       "corrupt", "stale", "errors");
	for (unsigned i = 0; i < d.workers; i++) {
		const struct worker_stats *st = &d.stats[i];
		uint64_t ops = st->gets + st->sets + st->dels;
		double rate = st->elapsed_ns
				      ? (double)ops * 1e9 / (double)st->elapsed_ns
				      : 0.0;

		printf("%6u %10" PRIu64 " %10.0f %10" PRIu64 " %10" PRIu64
		       " %10" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8" PRIu64
		       " %7" PRIu64 " %6" PRIu64 "\n", i, ops, rate, st->gets,
		       st->hits, st->misses, st->sets, st->dels, st->corrupt,
		       st->stale, st->errors);
		if (st->first_error)
			fprintf(stderr, "ns-demo: worker %u: first error: %s\n",
				i, ns_strerror(st->first_error));
		rate_total += rate;
		tot.gets += st->gets;
		tot.hits += st->hits;
		tot.misses += st->misses;
		tot.sets += st->sets;
		tot.dels += st->dels;
		tot.corrupt += st->corrupt;
		tot.stale += st->stale;
		tot.errors += st->errors;
	}
	printf("%6s %10" PRIu64 " %10.0f %10" PRIu64 " %10" PRIu64 " %10" PRIu64
	       " %9" PRIu64 " %9" PRIu64 " %8" PRIu64 " %7" PRIu64
	       " %6" PRIu64 "\n", "total", tot.gets + tot.sets + tot.dels,
	       rate_total, tot.gets, tot.hits, tot.misses, tot.sets, tot.dels,
	       tot.corrupt, tot.stale, tot.errors);
	printf("ns-demo: throughput %.0f ops/s over %u workers, hit ratio "
	       "%.1f%%\n", rate_total, d.workers,
	       tot.gets ? 100.0 * (double)tot.hits / (double)tot.gets : 0.0);

	final_check(&d, &present, &absent, &corrupt_end, &errors_end);
	printf("ns-demo: final check: %" PRIu64 " keys present, %" PRIu64
	       " absent, %" PRIu64 " corrupt\n", present, absent, corrupt_end);
	if (tot.stale)
		printf("ns-demo: warning: %" PRIu64 " hits came more than %u ms "
		       "after their TTL\n", tot.stale, STALE_SLACK_MS);

	if (tot.corrupt || corrupt_end || tot.errors || errors_end) {
		printf("ns-demo: FAILED: %" PRIu64 " corrupt reads, %" PRIu64
		       " errors\n", tot.corrupt + corrupt_end,
		       tot.errors + errors_end);
		goto out;
	}
	printf("ns-demo: OK, every value read was intact\n");
	status = 0;
out:
	if (d.cache) {
		ns_detach(d.cache);
		ns_unlink(d.seg_name);
	}
	if (d.stats)
		munmap(d.stats, d.stats_size);
	free(pids);
	return status;
}
