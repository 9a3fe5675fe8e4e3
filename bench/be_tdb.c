/*
 * be_tdb.c - nsbench's TDB store: Samba's trivial database, a hash table
 * of chained records in one memory-mapped file, with a lock per hash chain
 * and a free list for the records.  This is what Samba's daemons share
 * between their processes (locking.tdb, brlock.tdb, ...).
 *
 * The file is B->dir/bench.tdb in /dev/shm, the same tmpfs memory
 * NameStore's segment lives in.  It is opened the way Samba opens its
 * volatile, host-local databases, following tdb.h (1.4.x) and
 * lib/tdb/common/open.c and mutex.c:
 *
 *   TDB_MUTEX_LOCKING  the chain locks and the free-list lock are robust
 *        process-shared pthread mutexes in an area at the start of the
 *        file, instead of fcntl() byte-range locks, which cost a system
 *        call each.  tdb.h makes it conditional: the caller must first
 *        check tdb_runtime_check_for_robust_mutexes(), and the open must
 *        also say TDB_CLEAR_IF_FIRST; TDB_MUTEX_LOCKING also turns on
 *        TDB_INCOMPATIBLE_HASH (Jenkins' lookup3 in place of the old
 *        hash), which we pass as well to say so.  Without mutexes setup
 *        fails; it does not fall back to fcntl() locks.
 *
 *   TDB_NOSYNC  a transaction would not fsync; a cache is rebuilt, not
 *        recovered.  Plain stores, the only writes here, never sync, so it
 *        changes nothing in this run but says how the file is meant.
 *
 *   hash_size  the smallest prime at or above the key count: chains of
 *        one record on average, as Samba sizes its hot databases (a prime
 *        is TDB's custom; its hash is taken modulo the size).
 *
 * TDB_CLEAR_IF_FIRST empties the file whenever it is opened with no other
 * process holding it open (a shared fcntl() lock on ACTIVE_LOCK says
 * who does).  So the parent cannot close the database before fork as the
 * LMDB store does: the first child to open it again would wipe the
 * preload.  It keeps it open through the run, as smbd's parent keeps its
 * databases, and each child calls tdb_reopen() on the handle it inherited,
 * which tdb.h gives for exactly this: "after a fork to ensure that we have
 * an independent seek pointer from our parent and to re-establish locks".
 * (tdb_open() of the same file in the child fails with EBUSY while the
 * inherited handle exists, since fcntl() locks do not nest in a process.)
 * The mutex area is a MAP_SHARED mapping and carries over the fork as is.
 *
 * The preload is a plain tdb_store() per key in the parent.  One transaction
 * around it was measured too: no faster for 64-byte values, twice as slow
 * for 1 KiB ones with a million keys, and it left a file 8 to 20% bigger
 * (the commit first writes a recovery record of every block it replaces into
 * the file, and that space stays allocated), so it is not used.  A get is
 * tdb_parse_record(): the chain mutex is held while a callback copies the
 * value straight out of the map, no malloc.  A set is
 * tdb_store(TDB_REPLACE), which for a value of the record's size rewrites it
 * in place under the chain mutex; no key is added during the run, so the
 * file never grows and never has to be remapped.
 *
 * tdb_store() of a value the size of the stored one first compares the
 * two and writes nothing if they are equal (tdb.c, tdb_update_hash(): "it
 * could be an exact duplicate of what is there").  That is why nsbench's
 * sets carry a generation that changes every time (bench.h): with values
 * that depended only on the key, every TDB set was a lookup and a compare,
 * and TDB did 25 to 35% more operations per second than it does when it
 * has to write (2 processes, half sets, 100,000 keys).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tdb.h>

#include "bench.h"
#include "common.h"

#define TDB_BENCH_FLAGS                                                      \
	(TDB_CLEAR_IF_FIRST | TDB_MUTEX_LOCKING | TDB_INCOMPATIBLE_HASH |    \
	 TDB_NOSYNC)

/*
 * Largest hash size we ask for.  TDB's offsets are 32 bits, so a file
 * holds at most 4 GiB of records, well under 2^28 records of even the
 * smallest size; past that a bigger table only costs memory.
 */
#define TDB_MAX_HASH_SIZE (1u << 28)

struct tdb_be {
	char path[PATH_MAX];
	struct tdb_context *tdb;        /* the parent's, then each child's */
	bool reported;                  /* this process printed an error */
};

/* TDB's own messages, errors only, on stderr. */
static void tdb_be_log(struct tdb_context *tdb, enum tdb_debug_level level,
		       const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void tdb_be_log(struct tdb_context *tdb, enum tdb_debug_level level,
		       const char *fmt, ...)
{
	va_list ap;

	(void)tdb;
	if (level > TDB_DEBUG_ERROR)
		return;
	fputs("nsbench: tdb: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static const struct tdb_logging_context tdb_be_log_ctx = {
	.log_fn = tdb_be_log,
};

/*
 * The last TDB error of the handle as an NS_E* code; the first failure a
 * process sees is printed with TDB's message, later ones only counted.
 */
static int tdb_be_err(struct tdb_be *s, const char *call)
{
	enum TDB_ERROR e = tdb_error(s->tdb);
	int code;

	switch (e) {
	case TDB_ERR_NOEXIST:
		return NS_ENOTFOUND;
	case TDB_ERR_OOM:
		code = NS_ENOMEM;
		break;
	default:
		code = NS_EINVAL;
		break;
	}
	if (!s->reported) {
		s->reported = true;
		fprintf(stderr, "nsbench: tdb: %s: %s\n", call,
			tdb_errorstr(s->tdb));
	}
	return code;
}

static bool is_prime(uint32_t n)
{
	if (n < 2)
		return false;
	for (uint32_t d = 2; (uint64_t)d * d <= n; d++)
		if (n % d == 0)
			return false;
	return true;
}

/* The smallest prime at or above N, N capped at TDB_MAX_HASH_SIZE. */
static int tdb_hash_size_for(uint32_t n)
{
	if (n > TDB_MAX_HASH_SIZE)
		n = TDB_MAX_HASH_SIZE;
	while (!is_prime(n))
		n++;
	return (int)n;
}

static int tdb_preload(struct bench *b, struct tdb_be *s)
{
	unsigned char *val = malloc(b->cfg.value_size ? b->cfg.value_size : 1);
	int rc = 0;

	if (!val) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	value_fill(val, b->cfg.value_size);
	for (uint32_t k = 0; k < b->cfg.keys && !stop_requested; k++) {
		size_t klen;
		const char *key = key_at(b, k, &klen);
		TDB_DATA tk = { .dptr = (unsigned char *)key, .dsize = klen };
		TDB_DATA tv = { .dptr = val, .dsize = b->cfg.value_size };

		value_stamp(val, b->cfg.value_size, k);
		if (tdb_store(s->tdb, tk, tv, TDB_REPLACE) != 0) {
			rc = tdb_be_err(s, "preload tdb_store");
			break;
		}
	}
	if (!rc && stop_requested)
		rc = NS_EINVAL;
	free(val);
	return rc;
}

static int tdb_be_setup(struct bench *b)
{
	struct tdb_be *s = calloc(1, sizeof(*s));
	uint64_t t0 = now_ns();
	int hash_size, rc;

	if (!s) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	b->st = s;
	bench_path(b, "bench.tdb", s->path);
	if (!s->path[0]) {
		fprintf(stderr, "nsbench: tdb: path too long\n");
		return NS_EINVAL;
	}
	/* The check forks a child; do not let it inherit buffered output. */
	fflush(stdout);
	fflush(stderr);
	if (!tdb_runtime_check_for_robust_mutexes()) {
		fprintf(stderr, "nsbench: tdb: robust process-shared mutexes "
			"are not available here, so TDB_MUTEX_LOCKING cannot "
			"be used; not measuring tdb with fcntl() locks\n");
		return NS_EINVAL;
	}
	hash_size = tdb_hash_size_for(b->cfg.keys);
	s->tdb = tdb_open_ex(s->path, hash_size, TDB_BENCH_FLAGS,
			     O_RDWR | O_CREAT | O_EXCL, 0600, &tdb_be_log_ctx,
			     NULL);
	if (!s->tdb) {
		fprintf(stderr, "nsbench: tdb: tdb_open_ex(%s): %s\n", s->path,
			strerror(errno));
		return NS_EINVAL;
	}
	rc = tdb_preload(b, s);
	if (rc)
		return rc;
	printf("# backend=tdb locking=mutex flags=CLEAR_IF_FIRST|MUTEX_LOCKING|"
	       "INCOMPATIBLE_HASH|NOSYNC hash_size=%d preload_s=%.2f\n",
	       tdb_hash_size(s->tdb), (double)(now_ns() - t0) / 1e9);
	return 0;
}

/*
 * A fresh descriptor and map for this child on the inherited handle, and
 * its own shared ACTIVE_LOCK (fcntl() locks are not inherited).  On
 * failure tdb_reopen() has freed the handle.
 */
static int tdb_be_child_init(struct bench *b)
{
	struct tdb_be *s = b->st;

	s->reported = false; /* a flag copied from the parent */
	if (tdb_reopen(s->tdb) != 0) {
		s->tdb = NULL;
		fprintf(stderr, "nsbench: tdb: tdb_reopen(%s) failed\n",
			s->path);
		return NS_EINVAL;
	}
	return 0;
}

struct tdb_copy {
	void *buf;
	size_t cap;
	size_t *vlen;
};

/* Runs under the chain mutex: DATA points into the map. */
static int tdb_copy_out(TDB_DATA key, TDB_DATA data, void *private_data)
{
	struct tdb_copy *c = private_data;

	(void)key;
	*c->vlen = data.dsize;
	if (data.dsize > c->cap)
		return NS_ERANGE;
	memcpy(c->buf, data.dptr, data.dsize);
	return 0;
}

static int tdb_be_get(struct bench *b, const char *key, size_t klen,
		      void *buf, size_t cap, size_t *vlen)
{
	struct tdb_be *s = b->st;
	TDB_DATA tk = { .dptr = (unsigned char *)key, .dsize = klen };
	struct tdb_copy c = { .buf = buf, .cap = cap, .vlen = vlen };
	int rc;

	/*
	 * -1 is TDB's own failure (the parser never returns it); anything
	 * else is the parser's result.
	 */
	rc = tdb_parse_record(s->tdb, tk, tdb_copy_out, &c);
	if (rc == -1)
		return tdb_be_err(s, "tdb_parse_record");
	return rc;
}

static int tdb_be_set(struct bench *b, const char *key, size_t klen,
		      const void *val, size_t vlen)
{
	struct tdb_be *s = b->st;
	TDB_DATA tk = { .dptr = (unsigned char *)key, .dsize = klen };
	TDB_DATA tv = { .dptr = (unsigned char *)val, .dsize = vlen };

	if (tdb_store(s->tdb, tk, tv, TDB_REPLACE) != 0)
		return tdb_be_err(s, "tdb_store");
	return 0;
}

static void tdb_be_child_exit(struct bench *b)
{
	struct tdb_be *s = b->st;

	tdb_close(s->tdb);
	s->tdb = NULL;
}

/* The file's allocated pages: mutex area, hash table, records, free space. */
static int tdb_be_memory(struct bench *b, uint64_t *bytes, const char **what)
{
	struct tdb_be *s = b->st;
	struct stat st;

	if (stat(s->path, &st) != 0)
		return NS_EINVAL;
	*bytes = (uint64_t)st.st_blocks * 512u;
	*what = "the tdb file: chain mutexes + hash table + records + free "
		"space";
	return 0;
}

static void tdb_be_teardown(struct bench *b)
{
	struct tdb_be *s = b->st;

	if (!s)
		return;
	if (s->tdb)
		tdb_close(s->tdb);
	if (s->path[0])
		unlink(s->path);
	free(s);
	b->st = NULL;
}

const struct backend be_tdb = {
	.name = "tdb",
	.what = "Samba TDB: mmap'd chained hash file, robust mutex per chain",
	.setup = tdb_be_setup,
	.child_init = tdb_be_child_init,
	.get = tdb_be_get,
	.set = tdb_be_set,
	.child_exit = tdb_be_child_exit,
	.memory = tdb_be_memory,
	.teardown = tdb_be_teardown,
};
