/*
 * bench.h - what nsbench's driver (nsbench.c) and its stores (be_*.c)
 * share: the run's configuration, the key table, the values, and the one
 * interface every store is measured through.
 *
 * Every store runs the same timed loop (nsbench.c) through the function
 * pointers of struct backend, so each pays the same indirect call and the
 * same key choice, and the numbers differ only by the store.  Functions
 * return 0, NS_ENOTFOUND (get: a miss) or another negative NS_E* code,
 * which the loop counts as an error; a store that is not NameStore maps its
 * own failures onto NS_EINVAL, NS_ENOMEM, NS_E2BIG or NS_ERANGE and prints
 * the cause once.
 */
#ifndef NS_BENCH_BENCH_H
#define NS_BENCH_BENCH_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "namestore.h"

struct config {
	unsigned procs;         /* worker processes per store */
	double seconds;         /* length of the timed loop */
	uint32_t keys;          /* size of the key set */
	size_t value_size;      /* bytes of every value */
	unsigned read_pct;      /* share of gets, 0 to 100 */
	bool zipf;              /* key distribution: Zipf or uniform */
	double zipf_s;          /* Zipf exponent */
	uint64_t backends;      /* bit i: backends[i] of nsbench.c */
	size_t size;            /* bytes of the NameStore segment; 0: sized
				 * from keys and value size */
	bool prefer_writer;     /* rwlock kind: see be_rwlock.c */
	uint64_t seed;          /* base of the per-process random streams */
	const char *nsd;        /* run this nsd on the segment; NULL: none */
	const char *json;       /* append JSON lines here; NULL: none */
	const char *label;      /* free text copied into every JSON line */
	unsigned server_threads; /* memcached -t (default: online CPUs) */
	unsigned sample;        /* time one operation in SAMPLE (1: all) */
};

/*
 * Keys live in one table built before fork: "key:%08u" is 12 bytes for the
 * default key counts and at most 14 for any 32-bit index, so each key gets
 * KEY_STRIDE bytes with its length in the last one.  Formatting a key per
 * operation would cost as much as a NameStore get and blur the comparison.
 */
#define KEY_STRIDE 16u

struct run_shm;

struct bench {
	struct config cfg;
	char *keytab;                   /* keys * KEY_STRIDE bytes */
	double *zipf_cdf;               /* NULL for the uniform distribution */
	struct run_shm *run;            /* MAP_SHARED, one slot per child */
	size_t run_size;
	uint64_t timer_ns;              /* cost of one clock_gettime() */
	char dir[PATH_MAX];             /* private scratch directory for the
					 * stores' files and sockets */
	void *st;                       /* the running store's own state */
	uint64_t ns_data_bytes;         /* NameStore's index + data pages in
					 * use after the preload (for the
					 * pointer chase); 0 until measured */
};

/*
 * One store.  setup runs in the parent before fork: create the store (start
 * its server), preload every key, and leave B->st set; child_init runs in
 * each child after fork (open its own handle or connection: none of the
 * client libraries may be used across fork); child_exit before the child
 * exits; teardown in the parent after the run (stop the server, remove its
 * files).  memory, if not NULL, reports after the preload the bytes the
 * store holds the data in, and what they are.
 */
struct backend {
	const char *name;
	const char *what;       /* one line: the design measured */
	int (*setup)(struct bench *b);
	int (*child_init)(struct bench *b);
	int (*get)(struct bench *b, const char *key, size_t klen, void *buf,
		   size_t cap, size_t *vlen);
	int (*set)(struct bench *b, const char *key, size_t klen,
		   const void *val, size_t vlen);
	void (*child_exit)(struct bench *b);
	int (*memory)(struct bench *b, uint64_t *bytes, const char **what);
	void (*teardown)(struct bench *b);
};

static inline const char *key_at(const struct bench *b, uint32_t k,
				 size_t *klen)
{
	const char *p = b->keytab + (size_t)k * KEY_STRIDE;

	*klen = (unsigned char)p[KEY_STRIDE - 1];
	return p;
}

/*
 * Values: a fixed byte pattern with the key index stamped in bytes 0-3 and
 * a generation in bytes 4-7 (values of 8 bytes or more).  A reader checks
 * everything but the generation, so a torn, foreign or truncated value is
 * caught; the generation changes with every set, so that each set really
 * writes new bytes (TDB, for one, skips a store whose value is unchanged,
 * which would turn its sets into lookups).
 */
static inline void value_fill(unsigned char *val, size_t len)
{
	for (size_t i = 0; i < len; i++)
		val[i] = (unsigned char)(i * 31u + 7u);
}

static inline void value_stamp(unsigned char *val, size_t len, uint32_t k)
{
	memcpy(val, &k, len < sizeof(k) ? len : sizeof(k));
}

static inline void value_set_gen(unsigned char *val, size_t len, uint32_t gen)
{
	if (len >= 8)
		memcpy(val + 4, &gen, sizeof(gen));
}

/* GOT bytes in BUF against the stamped template VAL of LEN bytes. */
static inline bool value_ok(const unsigned char *buf, size_t got,
			    const unsigned char *val, size_t len)
{
	if (got != len)
		return false;
	if (len < 8)
		return memcmp(buf, val, len) == 0;
	return memcmp(buf, val, 4) == 0 &&
	       memcmp(buf + 8, val + 8, len - 8) == 0;
}

/* Set by SIGINT or SIGTERM in the parent; long loops look at it. */
extern volatile sig_atomic_t stop_requested;

/*
 * Start PROG with ARGV (argv[0] included, NULL-terminated) as a child of
 * its own, with stdout and stderr sent to LOG (appended), and return its
 * pid, or -1 with the reason printed.  The servers of the peer stores are
 * started this way and always stopped by bench_stop_server().
 */
pid_t bench_spawn(const char *prog, char *const argv[], const char *log);

/*
 * Wait until a unix socket at PATH accepts a connection, or TIMEOUT_MS
 * passes or PID exits.  0 when it accepts; -1 if not, with the reason and
 * the end of the server's LOG (which says why it did not start) printed.
 */
int bench_wait_socket(const char *path, pid_t pid, const char *log,
		      unsigned timeout_ms);

/* SIGTERM, then SIGKILL after 5 s if it is still there; then reap it. */
void bench_stop_server(pid_t pid);

/* B->dir joined with NAME into OUT (PATH_MAX bytes). */
void bench_path(const struct bench *b, const char *name, char *out);

/* The stores, each in its be_*.c; NULL entries of nsbench.c's table are
 * the ones not built (their library was missing when meson configured). */
extern const struct backend be_ns, be_rwlock, be_lmdb, be_tdb, be_redis,
	be_memcached;

#endif /* NS_BENCH_BENCH_H */
