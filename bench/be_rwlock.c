/*
 * be_rwlock.c - nsbench's baseline: what APCu and nginx's lua_shared_dict
 * do.  One chained hash table in a MAP_SHARED|MAP_ANONYMOUS region (a fixed
 * bucket array, fixed-size entries carved from a preallocated array,
 * offsets instead of pointers) behind ONE process-shared pthread_rwlock_t.
 * A get takes the read lock and copies the value out; a set takes the
 * write lock and overwrites the value in place.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"

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
		     void *buf, size_t cap, size_t *vlen)
{
	struct rw_shm *t = b->st;
	uint32_t hash = rw_hash(key, klen);
	struct rw_entry *e;
	int rc = NS_ENOTFOUND;

	pthread_rwlock_rdlock(&t->lock);
	e = rw_find_locked(t, hash, key, klen);
	if (e) {
		*vlen = e->vlen;
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
	struct rw_shm *t = b->st;
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
	b->st = t;

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
out:
	free(val);
	return rc;
}

static int rw_be_memory(struct bench *b, uint64_t *bytes, const char **what)
{
	struct rw_shm *t = b->st;

	*bytes = t->map_size;
	*what = "the whole region: buckets + fixed-size entries";
	return 0;
}

static void rw_be_teardown(struct bench *b)
{
	struct rw_shm *t = b->st;

	if (t) {
		pthread_rwlock_destroy(&t->lock);
		munmap(t, t->map_size);
	}
	b->st = NULL;
}

const struct backend be_rwlock = {
	.name = "rwlock",
	.what = "one chained hash table behind one process-shared rwlock "
		"(APCu, lua_shared_dict)",
	.setup = rw_be_setup,
	.get = rw_be_get,
	.set = rw_be_set,
	.memory = rw_be_memory,
	.teardown = rw_be_teardown,
};
