/*
 * batch.c - ns_mget, ns_mset, ns_mdel: many keys in one call.
 *
 * A get costs about two dependent cache misses: the bucket line, then the
 * item it points at.  One get cannot overlap them, but a batch can: ns_mget
 * hashes a window of keys and prefetches all their buckets, then peeks at
 * each bucket (now arriving) for the tag of its key and prefetches that
 * item, and only then does the real lookups, which find their lines in
 * the cache.  The misses of a window overlap instead of adding up (the
 * memory-level parallelism that batched lookups in MICA and in Cuckoo++
 * rely on).  The peek reads bucket words without a read section: it only
 * computes addresses to prefetch and never dereferences them, and the real
 * lookup that follows is the ordinary protected one.
 */
#define _GNU_SOURCE
#include "ns_internal.h"

#define NS_MGET_WINDOW 16 /* keys in flight: about the line fill buffers of a core */

/* The count of successes is an int. */
static bool bad_batch(const ns_space *s, const struct ns_kv *kv, size_t n)
{
	return s == NULL || (kv == NULL && n != 0) || n > INT32_MAX;
}

int ns_mget(ns_space *s, struct ns_kv *kv, size_t n)
{
	ns_cache *c;
	uint64_t h[NS_MGET_WINDOW];
	int hits = 0;

	if (bad_batch(s, kv, n))
		return NS_EINVAL;
	c = s->c;
	for (size_t base = 0; base < n; base += NS_MGET_WINDOW) {
		size_t m = n - base;

		if (m > NS_MGET_WINDOW)
			m = NS_MGET_WINDOW;

		for (size_t i = 0; i < m; i++) {
			struct ns_kv *k = &kv[base + i];
			k->err = ns__check_key(k->key, k->klen);
			if (k->err == 0 && k->buf == NULL && k->cap != 0)
				k->err = NS_EINVAL;
			h[i] = 0; /* never read for a key in error */
			if (k->err)
				continue;
			h[i] = ns__hash(c->hdr->hash_seed, s->id, k->key, k->klen);
			__builtin_prefetch(&c->buckets[h[i] & c->mask], 0, 3);
		}
		for (size_t i = 0; i < m; i++) {
			struct ns_bucket_shm *bk;
			uint16_t tag;

			if (kv[base + i].err)
				continue; /* h[i] was never computed */
			tag = (uint16_t)(h[i] >> 48);
			bk = &c->buckets[h[i] & c->mask];
			for (int j = 0; j < NS_BUCKET_SLOTS; j++) {
				uint64_t w = ns_load_relaxed(&bk->slot[j]);
				ns_off_t off = w & NS_SLOT_OFF_MASK;
				if (w == 0 || (uint16_t)(w >> 48) != tag ||
				    off >= c->size - 128)
					continue;
				/* Header and key, and the value's first line. */
				__builtin_prefetch(c->base + off, 0, 3);
				__builtin_prefetch(c->base + off + 64, 0, 3);
				break;
			}
		}
		for (size_t i = 0; i < m; i++) {
			struct ns_kv *k = &kv[base + i];
			if (k->err)
				continue;
			k->err = ns__get_hashed(s, k->key, k->klen, h[i], k);
			if (k->err == 0)
				hits++;
		}
	}
	return hits;
}

int ns_mset(ns_space *s, struct ns_kv *kv, size_t n)
{
	int done = 0;

	if (bad_batch(s, kv, n))
		return NS_EINVAL;
	for (size_t i = 0; i < n; i++) {
		kv[i].err = ns_set_ex(s, kv[i].key, kv[i].klen, kv[i].val,
				      kv[i].vlen, kv[i].ttl_ms, kv[i].flags, NULL);
		if (kv[i].err == 0)
			done++;
	}
	return done;
}

int ns_mdel(ns_space *s, struct ns_kv *kv, size_t n)
{
	int done = 0;

	if (bad_batch(s, kv, n))
		return NS_EINVAL;
	for (size_t i = 0; i < n; i++) {
		kv[i].err = ns_del(s, kv[i].key, kv[i].klen);
		if (kv[i].err == 0)
			done++;
	}
	return done;
}
