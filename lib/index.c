/*
 * index.c - the hash index: cache-line buckets of tag|offset words, their
 * breakable locks, and overflow chains.
 *
 *   primary bucket b = hash & mask               overflow pool
 *   +------+------+------+-----+------+          +------+------+----
 *   | lock | next | w0   | ... | w6   |  next -> | owner| next | w0 ...
 *   +------+------+------+-----+------+          +------+------+----
 *   w = tag(16 bits of hash) << 48 | item offset
 *
 * A reader loads each word once, compares the tag, and looks at an item
 * only on a tag match, so a miss rarely touches anything but one bucket
 * line and a hit compares one key (MemC3, MICA and CacheLib use the same
 * tag trick).  Writers serialize per primary bucket; the chain behind it
 * is covered by the same lock.  Every change of a word is one release
 * store, so a reader walking concurrently sees the old item or the new one.
 *
 * Overflow: when all seven words of a chain are taken, the writer claims a
 * free overflow bucket by one CAS on its owner word (0 -> primary + 1) and
 * links it with one release store of `next`.  Claimed buckets stay with
 * their primary.  The claim names its primary, so recovery can tell a
 * claimed-but-unlinked bucket (the claimer died between the two stores) and
 * give it back.  A key is never lost because its bucket filled: only when
 * the whole pool is taken does a set evict from its own chain.
 *
 * Locks (rule 6): the lock word holds the owner's slot index + 1.  A waiter
 * spins briefly, then yields, and every millisecond asks the kernel whether
 * the owner's slot lock is still held; if not, the owner is dead and the
 * waiter runs recovery on its slot, which finishes or undoes the owner's
 * write and releases the lock; a word still naming the dead slot after
 * that (its intent did not name the word: a damaged segment) is cleared
 * all the same, under the dead slot's OFD lock so that no new owner of
 * the slot can be taking it meanwhile.  A live owner that keeps the lock longer
 * than NS_LOCK_TIMEOUT_MS (it is stopped, or stuck) gets the waiter
 * NS_EBUSY instead of an endless wait (rule 7).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <time.h>

#include "ns_internal.h"

#define NS_SPIN_RELAX 200  /* pause loops before yielding: ~a short critical section */
#define NS_CHECK_EVERY_MS 1 /* owner liveness poll interval while waiting */

int ns__owner_lock(ns_cache *c, struct ns_thr *t, uint32_t *word)
{
	uint32_t me = t->idx + 1;
	uint64_t start = 0, last_check = 0;

	for (unsigned i = 0;; i++) {
		uint32_t owner = ns_load_relaxed(word);

		if (owner == 0 && ns_cmpxchg(word, 0u, me) == 0)
			return 0;
		if (ns_unlikely(owner == me)) {
			/* No path takes a lock word it holds, and this slot is
			 * ours (its OFD lock is held by us) for as long as we
			 * live: the word was left by a dead process that had the
			 * slot before us, in a segment where its intent did not
			 * name the word.  It is ours to take (rule 6). */
			return 0;
		}
		if (i < NS_SPIN_RELAX) {
			caa_cpu_relax();
			continue;
		}
		sched_yield();
		uint64_t now = ns__mono_ms();
		if (start == 0)
			start = last_check = now;
		if (owner != 0 && now - last_check >= NS_CHECK_EVERY_MS) {
			last_check = now;
			if (owner <= c->nslots &&
			    ns__slot_alive(c, t->fd, owner - 1) == 0)
				ns__break_lock(c, t, owner - 1, word);
			else if (owner > c->nslots)
				return NS_ECORRUPT;
		}
		if (now - start > NS_LOCK_TIMEOUT_MS)
			return NS_EBUSY;
	}
}

int ns__bucket_lock(ns_cache *c, struct ns_thr *t, uint64_t b)
{
	int err = ns__owner_lock(c, t, &c->buckets[b].lock);
	NS_FAULT("lock:taken");
	return err;
}

void ns__bucket_unlock(ns_cache *c, struct ns_thr *t, uint64_t b)
{
	if (ns_unlikely(ns_load_relaxed(&c->buckets[b].lock) != t->idx + 1))
		ns__die("unlock of bucket %llu not held by slot %u",
			(unsigned long long)b, t->idx);
	/* Release: every store of the critical section is visible first. */
	ns_store_release(&c->buckets[b].lock, 0u);
}

struct ns_bucket_shm *ns__chain_next(ns_cache *c, struct ns_bucket_shm *bk, int *err)
{
	uint32_t n = ns_load_acquire(&bk->next);

	if (n == 0)
		return NULL;
	if (n > c->nover) {
		*err = NS_ECORRUPT;
		return NULL;
	}
	return &c->over[n - 1];
}

uint64_t *ns__chain_find_locked(ns_cache *c, uint64_t b, ns_off_t off)
{
	struct ns_bucket_shm *bk = &c->buckets[b];
	int err = 0;

	for (int depth = 0; bk && depth <= NS_CHAIN_MAX; depth++) {
		for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
			uint64_t w = ns_load_relaxed(&bk->slot[i]);
			if (w && (w & NS_SLOT_OFF_MASK) == off)
				return &bk->slot[i];
		}
		bk = ns__chain_next(c, bk, &err);
	}
	return NULL;
}

int ns__over_claim_locked(ns_cache *c, uint64_t b, struct ns_bucket_shm *tail,
			  uint64_t **slotp)
{
	uint64_t n = c->nover;
	uint32_t hint = ns_load_relaxed(&c->hdr->over_hint);

	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = (hint + k) % n;
		struct ns_bucket_shm *ob = &c->over[i];

		if (ns_load_relaxed(&ob->lock) != 0)
			continue;
		if (ns_cmpxchg(&ob->lock, 0u, (uint32_t)(b + 1)) != 0)
			continue;
		NS_FAULT("over:claimed");
		/* A bucket given back by recovery is empty; make sure. */
		for (int j = 0; j < NS_BUCKET_SLOTS; j++)
			ns_store_relaxed(&ob->slot[j], 0ull);
		ns_store_relaxed(&ob->next, 0u);
		ns_store_release(&tail->next, (uint32_t)(i + 1));
		ns_store_relaxed(&c->hdr->over_hint, (uint32_t)(i + 1));
		*slotp = &ob->slot[0];
		return 0;
	}
	return NS_ENOMEM;
}
