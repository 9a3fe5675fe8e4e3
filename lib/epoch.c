/*
 * epoch.c - cross-process epoch reclamation (rule 4).
 *
 * liburcu's RCU flavors keep their reader registry in process memory, so
 * they cannot see readers in other processes.  This is the same idea
 * (epoch-based reclamation, Fraser 2004; membarrier as the asymmetric fence
 * of liburcu's urcu-memb flavor) with the registry in the segment:
 *
 *   reader                         writer / reclaimer
 *   e = E                          unlink X (release store)
 *   slot.epoch = e                 full fence
 *   [fence, or membarrier          X.retire_epoch = E; append to own list
 *    paid by the reclaimer]        ...
 *   read index, items              E' = ++E
 *   slot.epoch = 0 (release)       membarrier(GLOBAL_EXPEDITED) or fence
 *                                  min = least nonzero slot.epoch, else E'
 *                                  free every X with retire_epoch < min
 *
 * Why it is safe: X was unlinked before its retire epoch r was read, and E
 * only grows.  A reader whose slot shows e > r read E after E passed r, so
 * after the unlink, and (the reader's fence orders its epoch store before
 * its index loads) cannot find X.  A reader whose epoch store is not yet
 * visible to the scan will do its index loads after the membarrier, so after
 * the unlink.  Only readers showing e <= r can hold X, and they block it.
 *
 * Retire lists are per slot, so retiring writes no shared line, and only the
 * owner (or recovery, once the owner is dead) frees from a list.  A reader
 * in a dead process is found by its slot lock and recovered, so it blocks
 * reclamation for at most one liveness check.
 */
#define _GNU_SOURCE
#define NS_TR_FILE 3
#include "ns_internal.h"

#define NS_RETIRE_MIN_STUCK 16 /* retired items before we suspect a dead reader */

void ns__retire(ns_cache *c, struct ns_thr *t, ns_off_t off)
{
	ns__retire_slot(c, t->slot, off);
}

void ns__retire_slot(ns_cache *c, struct ns_slot_shm *s, ns_off_t off)
{
	struct ns_item_shm *it = ns__item(c, off);
	int cls = ns__class_of(c, off);

	if (it == NULL || cls < 0)
		return; /* cannot happen for an offset taken from the index */
	ns__shade(c, off);
	NS_TR(c, off);
	/* Orders the unlink store (and the unlock) before the load of E. */
	cmm_smp_mb();
	it->retire_epoch = (uint32_t)ns_load_relaxed(&c->hdr->epoch);
	/* next is racy: pop_free of another client may still read it from
	 * a chunk that was popped and reused under it (its CAS then fails). */
	ns_store_relaxed(&it->next, (ns_off_t)0);
	/* Readers never look at state; eviction and the audit do. */
	ns_store_relaxed(&it->state, (uint32_t)NS_CH_RETIRED);
	if (s->retire_tail) {
		struct ns_item_shm *tail = ns__item(c, s->retire_tail);
		if (tail)
			ns_store_relaxed(&tail->next, off);
	} else {
		s->retire_head = off;
	}
	s->retire_tail = off;
	s->retire_count++;
	s->retire_bytes += c->classes[cls].size;
}

/* The oldest epoch a reader may still be in, after making every reader's
 * epoch store visible.  Returns 0 when that cannot be known (membarrier
 * failed while some reader relies on it). */
static uint64_t reader_floor(ns_cache *c, uint64_t now, uint32_t *blocker)
{
	uint64_t min = now;
	/* Always issued, even by a process that did not register itself:
	 * registration is what the readers did, and they rely on it. */
	bool mb_ok = ns__membarrier(c) == 0;

	/* Orders our loads of the slots after the epoch increment. */
	cmm_smp_mb();
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		uint32_t st = ns_load_relaxed(&s->state);
		if (st != NS_SLOT_ACTIVE)
			continue;
		if (!mb_ok && (ns_load_relaxed(&s->flags) & NS_SLOTF_MEMBARRIER))
			return 0;
		uint64_t e = ns_load_acquire(&s->epoch);
		if (e != 0 && e < min) {
			min = e;
			*blocker = i;
		}
	}
	return min;
}

/* Free what S retired before epoch MIN. */
static size_t free_before(ns_cache *c, struct ns_slot_shm *s, bool cache,
			  uint64_t min)
{
	size_t freed = 0;

	while (s->retire_head) {
		ns_off_t off = s->retire_head;
		struct ns_item_shm *it = ns__item(c, off);
		int cls = ns__class_of(c, off);

		if (it == NULL || cls < 0) {
			/* A damaged list: drop the rest rather than free
			 * garbage; the audit finds what it held. */
			s->retire_head = s->retire_tail = 0;
			s->retire_count = s->retire_bytes = 0;
			ns_add_return(&c->hdr->audit_wanted, 1u);
			break;
		}
		if ((int32_t)((uint32_t)min - it->retire_epoch) <= 0)
			break; /* retired at or after the oldest reader's epoch */
		ns_off_t next = it->next;
		if (cache && s->cache_n[cls] < NS_SLOT_CACHE) {
			/* Into the cache first, then off the list: dying in
			 * between leaves it in both, which recovery expects.
			 * FREE once in the cache: a chunk that leaks on its
			 * way out of a cache must not read as RETIRED, which
			 * a live audit leaves alone (recover.c). */
			ns__shade(c, off);
			NS_TR(c, off);
			s->cache[cls][s->cache_n[cls]] = off;
			ns_store_relaxed(&s->cache_n[cls], (uint8_t)(s->cache_n[cls] + 1));
			ns_store_relaxed(&it->state, (uint32_t)NS_CH_FREE);
			s->retire_head = next;
		} else {
			/* Free while still on the list, then busy before it
			 * leaves: dying between the two steps leaks it, the
			 * flag calls the audit, and the state lets a live
			 * audit take it back (it leaves RETIRED chunks alone,
			 * recover.c).  Shaded first, for an audit running. */
			ns__shade(c, off);
			NS_TR(c, off);
			ns_store_relaxed(&it->state, (uint32_t)NS_CH_FREE);
			s->slab_busy = 1;
			cmm_barrier();
			s->retire_head = next;
			ns__push_free(c, cls, off);
			s->slab_busy = 0;
		}
		if (next == 0) {
			/* Dying here leaves an empty list with a stale tail;
			 * recovery clears it (recover.c). */
			NS_FAULT("reclaim:emptied");
			s->retire_tail = 0;
		}
		if (s->retire_count)
			s->retire_count--;
		s->retire_bytes -= s->retire_bytes < c->classes[cls].size ?
				   s->retire_bytes : c->classes[cls].size;
		freed++;
	}
	return freed;
}

static size_t reclaim(ns_cache *c, struct ns_slot_shm *s, bool cache,
		      uint32_t *blockerp)
{
	uint64_t now, min;
	uint32_t blocker = UINT32_MAX;

	if (s->retire_count == 0)
		return 0;
	now = ns_add_return(&c->hdr->epoch, 1);
	min = reader_floor(c, now, &blocker);
	if (min == 0)
		return 0;
	*blockerp = blocker;
	return free_before(c, s, cache, min);
}

size_t ns__janitor_floor(ns_cache *c)
{
	uint32_t blocker = UINT32_MAX;
	uint64_t now = ns_add_return(&c->hdr->epoch, 1);
	uint64_t min = reader_floor(c, now, &blocker);

	if (min != 0)
		ns_store_release(&c->hdr->safe_epoch, min);
	return min;
}

/*
 * nsd advances the epoch and pays the membarrier once a tick, and publishes
 * the reader floor it found as hdr.safe_epoch.  The floor stays valid: an
 * item retired before it was unlinked before nsd's membarrier, and every
 * reader then in a section had a later epoch, while readers that came
 * after cannot find it.  So a client frees what it retired before that
 * floor with no membarrier and no scan of its own.
 */
size_t ns__reclaim_cheap(ns_cache *c, struct ns_thr *t)
{
	struct ns_slot_shm *s = t->slot;
	uint64_t floor = ns_load_acquire(&c->hdr->safe_epoch);
	struct ns_item_shm *head;

	if (floor == 0 || s->retire_head == 0)
		return 0;
	head = ns__item(c, s->retire_head);
	if (head == NULL || (int32_t)((uint32_t)floor - head->retire_epoch) <= 0)
		return 0; /* nothing old enough yet */
	return free_before(c, s, true, floor);
}

size_t ns__reclaim_slot(ns_cache *c, struct ns_slot_shm *s, bool cache)
{
	uint32_t blocker;
	return reclaim(c, s, cache, &blocker);
}

size_t ns__reclaim(ns_cache *c, struct ns_thr *t)
{
	uint32_t blocker = UINT32_MAX;
	size_t freed = reclaim(c, t->slot, true, &blocker);

	/* Nothing freed while a reader holds an old epoch: if that reader's
	 * process is dead, recover its slot now instead of waiting for nsd;
	 * one liveness check, so the cost stays bounded. */
	if (freed == 0 && t->slot->retire_count >= NS_RETIRE_MIN_STUCK &&
	    blocker != UINT32_MAX && blocker != t->idx &&
	    ns__slot_alive(c, t->fd, blocker) == 0) {
		ns__recover_slot(c, t, blocker);
		freed = reclaim(c, t->slot, true, &blocker);
	}
	return freed;
}

int ns__grace_blocker(ns_cache *c, struct ns_thr *t, uint64_t *epoch)
{
	uint64_t min = 0;
	int blocker = -1;

	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		if (i == t->idx || ns_load_relaxed(&s->state) != NS_SLOT_ACTIVE)
			continue;
		uint64_t e = ns_load_acquire(&s->epoch);
		if (e != 0 && (min == 0 || e < min)) {
			min = e;
			blocker = (int)i;
		}
	}
	if (blocker < 0)
		return -1;
	*epoch = min;
	/* Something retired at or after that epoch?  A list's tail is its
	 * newest entry; another owner may change it under us, so the item is
	 * only looked at through the bounds-checked helper (a hint). */
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		if (ns_load_relaxed(&s->state) == NS_SLOT_FREE)
			continue;
		struct ns_item_shm *it = ns__item(c, ns_load_relaxed(&s->retire_tail));
		if (it && (int32_t)(ns_load_relaxed(&it->retire_epoch) - (uint32_t)min) >= 0)
			return blocker;
	}
	return -1;
}
