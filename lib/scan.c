/*
 * scan.c - ns_scan: cursor iteration over one namespace.
 *
 * The index never moves an item to another primary bucket (it has a fixed
 * number of buckets and is never rehashed; overflow buckets belong to the
 * chain of one primary), so a cursor can simply be a primary bucket index:
 * every call walks a bounded number of whole chains from the cursor and
 * returns the next index.  A key present for the whole scan sits in one
 * chain the whole time and is seen when that chain is walked, which gives
 * Redis SCAN's guarantee without its reverse-binary cursor (which exists to
 * survive rehashing, which this index never does).
 *
 * A call holds a read section only while it walks, takes no lock, and
 * writes nothing shared; between calls it holds nothing.  Keys are copied
 * out inside the read section.  When the caller's array cannot take a whole
 * chain, the keys of that chain are dropped again and the cursor stays on
 * it, so a chain is never returned in part.
 */
#define _GNU_SOURCE
#include <fnmatch.h>

#include "ns_internal.h"

#define NS_SCAN_COUNT 64 /* default keys' worth of buckets per call */
#define NS_ITEMS_PER_BUCKET_EST 4 /* index load the segment is sized for */
#define NS_SCAN_RETRIES 16 /* read-only: rereads of a slot being rewritten */

/* Append the matching keys of chain B to KEYS[*K..CAP).  false when the
 * array is full (the chain's keys are then dropped again). */
static bool scan_chain(ns_space *s, uint64_t b, const char *pattern,
		       uint64_t now, struct ns_key *keys, size_t cap, size_t *k,
		       bool *busy)
{
	bool ro = s->c->rdonly;
	ns_cache *c = s->c;
	struct ns_bucket_shm *bk = &c->buckets[b];
	size_t start = *k;
	int err = 0;

	for (int depth = 0; bk && depth <= NS_CHAIN_MAX; depth++) {
		for (int i = 0, tries = 0; i < NS_BUCKET_SLOTS; i++, tries = 0) {
		again:;
			uint64_t w = ns_load_acquire(&bk->slot[i]);
			ns_off_t off = w & NS_SLOT_OFF_MASK;
			struct ns_item_shm *it = ns__item(c, off);
			char key[NS_KEY_MAX + 1];
			uint64_t ver;
			size_t kl;

			if (w == 0 || it == NULL || it->space != s->id)
				continue;
			ver = ns_load_acquire(&it->version);
			kl = it->klen;
			if (kl == 0 || kl > NS_KEY_MAX ||
			    ns__ptr(c, off + sizeof(*it), kl) == NULL ||
			    !ns__visible(c, it, now))
				continue;
			memcpy(key, it + 1, kl);
			key[kl] = '\0';
			/* A read-only mapping has no read section: make sure
			 * the chunk was not reused while we copied, and if it
			 * was, read the slot again: the key may still be
			 * there under a new item, and must not be skipped. */
			if (ro) {
				cmm_smp_rmb();
				if (ns_load_relaxed(&it->version) != ver ||
				    ns_load_relaxed(&bk->slot[i]) != w) {
					if (++tries < NS_SCAN_RETRIES)
						goto again;
					*busy = true;
					continue;
				}
			}
			if (pattern && fnmatch(pattern, key, 0) != 0)
				continue;
			if (*k >= cap) {
				*k = start;
				return false;
			}
			keys[*k].klen = kl;
			memcpy(keys[*k].key, key, kl + 1);
			(*k)++;
		}
		bk = ns__chain_next(c, bk, &err);
	}
	return true;
}

int ns_scan(ns_space *s, uint64_t *cursor, const char *pattern, size_t count,
	    struct ns_key *keys, size_t cap, size_t *n)
{
	ns_cache *c;
	struct ns_slot_shm *sl = NULL;
	uint64_t cur, nb, now, budget;
	size_t k = 0;
	bool busy = false;
	int err = 0;

	if (s == NULL || cursor == NULL || n == NULL || (keys == NULL && cap != 0))
		return NS_EINVAL;
	c = s->c;
	nb = c->mask + 1;
	cur = *cursor;
	if (cur >= nb)
		return NS_EINVAL;
	if (!c->rdonly) {
		struct ns_thr *t = ns__thr(c, &err);
		if (t == NULL)
			return err;
		sl = t->slot;
	}
	if (count == 0)
		count = NS_SCAN_COUNT;
	budget = count / NS_ITEMS_PER_BUCKET_EST + 1;
	now = ns__now_ms();

	if (sl)
		ns__read_enter(c, sl);
	for (uint64_t v = 0; v < budget && cur < nb; v++) {
		if (!scan_chain(s, cur, pattern, now, keys, cap, &k, &busy)) {
			if (k == 0)
				err = NS_ERANGE;
			break;
		}
		cur++;
	}
	if (sl)
		ns__read_exit(sl);
	*n = k;
	if (!err && busy)
		err = NS_EBUSY; /* read-only: a slot kept changing under us */
	if (err)
		return err;
	*cursor = cur >= nb ? 0 : cur;
	return 0;
}
