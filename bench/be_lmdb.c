/*
 * be_lmdb.c - nsbench's LMDB store: a copy-on-write B+tree in one memory
 * mapped file, read without locks (MVCC: a reader pins a snapshot by
 * writing its transaction id into a slot of the lock file) and written by
 * one writer at a time under a mutex in the lock file.
 *
 * The environment is a data file and its lock file in the run's scratch
 * directory in /dev/shm (MDB_NOSUBDIR: B->dir/lmdb.mdb and lmdb.mdb-lock),
 * so its pages live in the same tmpfs memory as NameStore's segment.  It is
 * tuned the way one would tune LMDB as a host-local cache that is rebuilt
 * after a crash rather than recovered, following lmdb.h (0.9.x, the
 * mdb_env_open() flag list and the "Caveats" section):
 *
 *   MDB_NOSYNC | MDB_NOMETASYNC  a commit never calls fsync or msync; the
 *        data need not survive a system crash.  On tmpfs there is no disk
 *        to flush to anyway, but the calls would still cost.
 *
 *   MDB_WRITEMAP  a write transaction changes pages in the shared map in
 *        place of malloc'd copies written back with pwrite() at commit;
 *        lmdb.h: "may be slightly faster for DBs that fit entirely in RAM",
 *        which is this case.  Measured here (100,000 keys, 64 B, one
 *        process, half sets): 1.8 M ops/s with it, 0.5 M without it even
 *        with MDB_NOMEMINIT.  MDB_MAPASYNC only changes the msync() that
 *        MDB_NOSYNC already removes, so it is left out.
 *
 *   MDB_NOTLS  reader slots belong to the MDB_txn, not the thread, so a
 *        reset transaction keeps its slot and renewing it takes no lock.
 *
 *   map size  room for every key twice over (half-full leaf pages, the
 *        pages copied by the commits in flight, the free list), so the run
 *        never ends in MDB_MAP_FULL; the map is address space, and tmpfs
 *        gives pages to the file only as they are written.
 *
 * The preload runs in the parent in write transactions of PRELOAD_BATCH
 * puts, with MDB_APPEND while the keys arrive in sorted order (they do for
 * up to 10^8 keys: "key:%08u" sorts as its index), lmdb.h's "fast bulk
 * loading".  It changes little here (LMDB already splits a page at the end
 * when keys come in order: 21,277 leaf pages for a million keys with it,
 * 21,740 without), but it is what one writes for a sorted load.  Then the
 * parent closes the environment: an MDB_env may not be used after fork(),
 * so each child opens its own.
 *
 * A get is the pattern lmdb.h gives for short reads (mdb_txn_reset): each
 * child keeps one read-only transaction, and every get renews it, looks the
 * key up, copies the value out while the snapshot is pinned, and resets it
 * so that it holds back no freed pages between gets.  A set is one write
 * transaction, mdb_put() and commit: LMDB serializes writers, and a cache
 * client's sets come one at a time, so there is nothing to batch.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lmdb.h>

#include "bench.h"
#include "common.h"

/*
 * Puts per write transaction while preloading: big enough that the commit
 * (meta page, free-list update) is noise, small enough that the dirty page
 * list of one transaction (MDB_IDL_UM_MAX, 128 K pages without
 * MDB_WRITEMAP) is never near full even for large values.
 */
#define PRELOAD_BATCH 10000u

/* lmdb.h, mdb_env_open(); see the header comment for each one. */
#define LMDB_ENV_FLAGS                                                       \
	(MDB_NOSUBDIR | MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP | MDB_NOTLS)

/*
 * LMDB's page layout (mdb.c): a 16-byte page header, a 2-byte pointer per
 * node and an 8-byte node header before the key; a node larger than about
 * half a page moves its value to overflow pages of its own.
 */
#define LMDB_PAGE_HDR 16u
#define LMDB_NODE_HDR 8u
#define LMDB_NODE_PTR 2u

/* Minimum reader slots: LMDB's default, 126. */
#define LMDB_MIN_READERS 126u

struct lmdb_be {
	char path[PATH_MAX];            /* the data file; LMDB adds "-lock" */
	char lock_path[PATH_MAX];
	size_t map_size;                /* the same in the parent and children */
	unsigned max_readers;
	uint64_t used_bytes;            /* pages in use after the preload */
	bool reported;                  /* this process printed an error */
	/* The process's own handles: the parent's during setup, then each
	 * child's from child_init to child_exit. */
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *rtxn;                  /* long-lived, reset between gets */
};

/*
 * LMDB's code RC as an NS_E* code; the first failure a process sees is
 * printed with LMDB's own message, later ones only counted by the loop.
 */
static int lmdb_err(struct lmdb_be *s, const char *call, int rc)
{
	int code;

	switch (rc) {
	case MDB_NOTFOUND:
		return NS_ENOTFOUND;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
	case MDB_READERS_FULL:
	case ENOMEM:
		code = NS_ENOMEM;
		break;
	case MDB_BAD_VALSIZE:
		code = NS_E2BIG;
		break;
	default:
		code = NS_EINVAL;
		break;
	}
	if (!s->reported) {
		s->reported = true;
		fprintf(stderr, "nsbench: lmdb: %s: %s\n", call,
			mdb_strerror(rc));
	}
	return code;
}

/*
 * Bytes of map for the run: each key's leaf node (header, key, value or
 * overflow page number, pointer) counted twice for leaf pages split in
 * half, its overflow pages if the value does not fit in a node, all of it
 * twice again for the copies and free pages of the commits during the
 * run, plus 64 MiB for the branch pages, the meta pages and slack.
 */
static size_t lmdb_map_size(const struct bench *b, size_t psize)
{
	uint64_t vsize = b->cfg.value_size, node, ovf = 0, total;
	uint64_t node_max = (psize - LMDB_PAGE_HDR) / 2u;

	node = LMDB_NODE_HDR + KEY_STRIDE + vsize;
	if (node > node_max) {
		node = LMDB_NODE_HDR + KEY_STRIDE + sizeof(uint64_t);
		ovf = (vsize + LMDB_PAGE_HDR + psize - 1) / psize * psize;
	}
	total = (uint64_t)b->cfg.keys * (2u * (node + LMDB_NODE_PTR) + ovf);
	total = 2u * total + ((uint64_t)64 << 20);
	total = (total + psize - 1) / psize * psize;
	return total > SIZE_MAX ? SIZE_MAX / psize * psize : (size_t)total;
}

/* Create the process's MDB_env on the run's files and open it. */
static int lmdb_open_env(struct lmdb_be *s)
{
	int rc;

	rc = mdb_env_create(&s->env);
	if (rc) {
		s->env = NULL;
		return lmdb_err(s, "mdb_env_create", rc);
	}
	rc = mdb_env_set_mapsize(s->env, s->map_size);
	if (!rc)
		rc = mdb_env_set_maxreaders(s->env, s->max_readers);
	if (!rc)
		rc = mdb_env_open(s->env, s->path, LMDB_ENV_FLAGS, 0600);
	if (rc) {
		mdb_env_close(s->env);
		s->env = NULL;
		return lmdb_err(s, "opening the environment", rc);
	}
	return 0;
}

/*
 * Is key A after key B in LMDB's default order (memcmp over the shorter
 * length, then the shorter first)?  MDB_APPEND needs it to be.
 */
static bool lmdb_key_after(const char *a, size_t alen, const char *b,
			   size_t blen)
{
	int d = memcmp(a, b, alen < blen ? alen : blen);

	return d > 0 || (d == 0 && alen > blen);
}

static int lmdb_preload(struct bench *b, struct lmdb_be *s)
{
	unsigned char *val = malloc(b->cfg.value_size ? b->cfg.value_size : 1);
	const char *prev = NULL;
	size_t prev_len = 0;
	MDB_txn *txn = NULL;
	int rc = 0, err;

	if (!val) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	value_fill(val, b->cfg.value_size);
	for (uint32_t k = 0; k < b->cfg.keys && !stop_requested; k++) {
		size_t klen;
		const char *key = key_at(b, k, &klen);
		MDB_val mk = { .mv_size = klen, .mv_data = (void *)key };
		MDB_val mv = { .mv_size = b->cfg.value_size, .mv_data = val };
		unsigned flags = 0;

		if (!txn) {
			err = mdb_txn_begin(s->env, NULL, 0, &txn);
			if (err) {
				txn = NULL;
				rc = lmdb_err(s, "preload mdb_txn_begin", err);
				goto out;
			}
		}
		if (!prev || lmdb_key_after(key, klen, prev, prev_len))
			flags = MDB_APPEND;
		value_stamp(val, b->cfg.value_size, k);
		err = mdb_put(txn, s->dbi, &mk, &mv, flags);
		if (err) {
			rc = lmdb_err(s, "preload mdb_put", err);
			goto out;
		}
		prev = key;
		prev_len = klen;
		if ((k + 1) % PRELOAD_BATCH == 0 || k + 1 == b->cfg.keys) {
			err = mdb_txn_commit(txn);
			txn = NULL;
			if (err) {
				rc = lmdb_err(s, "preload mdb_txn_commit", err);
				goto out;
			}
		}
	}
	if (stop_requested)
		rc = NS_EINVAL;
out:
	if (txn)
		mdb_txn_abort(txn);
	free(val);
	return rc;
}

static int lmdb_be_setup(struct bench *b)
{
	struct lmdb_be *s = calloc(1, sizeof(*s));
	long psize = sysconf(_SC_PAGESIZE);
	uint64_t t0 = now_ns();
	MDB_envinfo info;
	MDB_stat st;
	MDB_txn *txn;
	int rc, err;

	if (!s) {
		fprintf(stderr, "nsbench: out of memory\n");
		return NS_ENOMEM;
	}
	b->st = s;
	bench_path(b, "lmdb.mdb", s->path);
	bench_path(b, "lmdb.mdb-lock", s->lock_path);
	if (!s->path[0] || !s->lock_path[0]) {
		fprintf(stderr, "nsbench: lmdb: path too long\n");
		return NS_EINVAL;
	}
	s->map_size = lmdb_map_size(b, psize > 0 ? (size_t)psize : 4096u);
	/* One slot per child (MDB_NOTLS: one per read transaction). */
	s->max_readers = b->cfg.procs + 2u > LMDB_MIN_READERS
				 ? b->cfg.procs + 2u : LMDB_MIN_READERS;

	rc = lmdb_open_env(s);
	if (rc)
		return rc;
	err = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (!err) {
		err = mdb_dbi_open(txn, NULL, 0, &s->dbi);
		if (err)
			mdb_txn_abort(txn);
		else
			err = mdb_txn_commit(txn);
	}
	if (err)
		return lmdb_err(s, "opening the database", err);

	rc = lmdb_preload(b, s);
	if (rc)
		return rc;

	err = mdb_env_info(s->env, &info);
	if (!err)
		err = mdb_env_stat(s->env, &st);
	if (err)
		return lmdb_err(s, "mdb_env_info", err);
	s->used_bytes = ((uint64_t)info.me_last_pgno + 1u) * st.ms_psize;
	printf("# backend=lmdb version=\"%s\" map_size=%zu flags=NOSUBDIR|"
	       "NOSYNC|NOMETASYNC|WRITEMAP|NOTLS depth=%u leaf_pages=%zu "
	       "preload_s=%.2f\n", MDB_VERSION_STRING, s->map_size,
	       st.ms_depth, st.ms_leaf_pages, (double)(now_ns() - t0) / 1e9);

	/* lmdb.h: an MDB_env may not be used after fork(). */
	mdb_env_close(s->env);
	s->env = NULL;
	return 0;
}

/*
 * The child's own environment, its handle on the main database (MAIN_DBI,
 * which a read-only transaction may open), and the read transaction every
 * get renews.
 */
static int lmdb_be_child_init(struct bench *b)
{
	struct lmdb_be *s = b->st;
	MDB_txn *txn;
	int rc, err;

	s->reported = false; /* a flag copied from the parent */
	rc = lmdb_open_env(s);
	if (rc)
		return rc;
	err = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
	if (!err) {
		err = mdb_dbi_open(txn, NULL, 0, &s->dbi);
		if (err)
			mdb_txn_abort(txn);
		else
			err = mdb_txn_commit(txn);
	}
	if (!err)
		err = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
	if (err) {
		s->rtxn = NULL;
		mdb_env_close(s->env);
		s->env = NULL;
		return lmdb_err(s, "child's read transaction", err);
	}
	mdb_txn_reset(s->rtxn);
	return 0;
}

static int lmdb_be_get(struct bench *b, const char *key, size_t klen,
		       void *buf, size_t cap, size_t *vlen)
{
	struct lmdb_be *s = b->st;
	MDB_val mk = { .mv_size = klen, .mv_data = (void *)key }, mv;
	int rc, err;

	err = mdb_txn_renew(s->rtxn);
	if (err)
		return lmdb_err(s, "mdb_txn_renew", err);
	err = mdb_get(s->rtxn, s->dbi, &mk, &mv);
	if (err) {
		rc = lmdb_err(s, "mdb_get", err);
	} else {
		/* MV points into the snapshot: copy before the reset. */
		*vlen = mv.mv_size;
		if (mv.mv_size <= cap) {
			memcpy(buf, mv.mv_data, mv.mv_size);
			rc = 0;
		} else {
			rc = NS_ERANGE;
		}
	}
	mdb_txn_reset(s->rtxn);
	return rc;
}

static int lmdb_be_set(struct bench *b, const char *key, size_t klen,
		       const void *val, size_t vlen)
{
	struct lmdb_be *s = b->st;
	MDB_val mk = { .mv_size = klen, .mv_data = (void *)key };
	MDB_val mv = { .mv_size = vlen, .mv_data = (void *)val };
	MDB_txn *txn;
	int err;

	err = mdb_txn_begin(s->env, NULL, 0, &txn);
	if (err)
		return lmdb_err(s, "mdb_txn_begin", err);
	err = mdb_put(txn, s->dbi, &mk, &mv, 0);
	if (err) {
		mdb_txn_abort(txn);
		return lmdb_err(s, "mdb_put", err);
	}
	err = mdb_txn_commit(txn);
	if (err)
		return lmdb_err(s, "mdb_txn_commit", err);
	return 0;
}

static void lmdb_be_child_exit(struct bench *b)
{
	struct lmdb_be *s = b->st;

	mdb_txn_abort(s->rtxn);
	s->rtxn = NULL;
	mdb_env_close(s->env);
	s->env = NULL;
}

/* Pages up to the last one used, measured by setup before it closed. */
static int lmdb_be_memory(struct bench *b, uint64_t *bytes,
			  const char **what)
{
	struct lmdb_be *s = b->st;

	*bytes = s->used_bytes;
	*what = "data file pages in use: (me_last_pgno + 1) * page size";
	return 0;
}

static void lmdb_be_teardown(struct bench *b)
{
	struct lmdb_be *s = b->st;

	if (!s)
		return;
	if (s->env)
		mdb_env_close(s->env);
	if (s->path[0])
		unlink(s->path);
	if (s->lock_path[0])
		unlink(s->lock_path);
	free(s);
	b->st = NULL;
}

const struct backend be_lmdb = {
	.name = "lmdb",
	.what = "LMDB: mmap'd copy-on-write B+tree, lock-free MVCC readers, "
		"one writer",
	.setup = lmdb_be_setup,
	.child_init = lmdb_be_child_init,
	.get = lmdb_be_get,
	.set = lmdb_be_set,
	.child_exit = lmdb_be_child_exit,
	.memory = lmdb_be_memory,
	.teardown = lmdb_be_teardown,
};
