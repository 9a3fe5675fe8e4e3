/*
 * recover.c - finishing what a dead client left, and proving the segment
 * consistent.
 *
 * Recovery of a slot runs with the slot's OFD lock held by the recoverer,
 * so it is the only one touching that slot; it can be started by anybody
 * who finds the slot dead (a waiter on one of its bucket locks, a reclaimer
 * blocked by its epoch, a process claiming the slot, nsd, a test).  It is
 * idempotent: each step leaves the slot in a state from which running
 * recovery again is correct, so a recoverer that dies halfway is simply
 * recovered in turn.
 *
 *   intent phase       lock held by the dead slot?   what recovery does
 *   BUILT / none       maybe (taken, nothing chosen)  free in_new; unlock
 *   LOCKED             yes                            look in the chain: new
 *                                                     there -> retire old;
 *                                                     not -> free new; unlock
 *   PUBLISHED          maybe (released just before    the word was stored:
 *                      UNLOCKED was written)          retire old unless the
 *                                                     retire list has it;
 *                                                     unlock if still held
 *   UNLOCKED           no                             retire old unless the
 *                                                     retire list has it
 *
 * PUBLISHED must not depend on the lock: the writer releases the lock and
 * only then writes UNLOCKED, so a writer killed in between leaves
 * PUBLISHED with the lock free (or already taken by somebody else).  The
 * old item is unlinked all the same, and nothing but this intent names it.
 *
 * Then the chunk caches go back to the free lists, the retire list is
 * reclaimed (what is still inside a grace period stays, and the slot is
 * left ORPHAN for a later pass), and the slot is freed.
 *
 * The consistency check (ns__verify) marks every carved chunk from every
 * record that can hold one and reports chunks found twice (corruption) or
 * nowhere (a leak).  The audit (ns__audit) is its mark-and-sweep twin: it
 * returns the unmarked chunks to their free lists.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NS_TR_FILE 4
#include "ns_internal.h"

static bool in_cache(struct ns_slot_shm *s, int cls, ns_off_t off)
{
	for (int i = 0; i < s->cache_n[cls] && i < NS_SLOT_CACHE; i++)
		if (s->cache[cls][i] == off)
			return true;
	return false;
}

/* Was OFF appended to S's retire list (completely or halfway)?  Repairs a
 * half-done append. */
static bool retired_already(ns_cache *c, struct ns_slot_shm *s, ns_off_t off)
{
	int cls = ns__class_of(c, off);

	if (s->retire_tail == off || (s->retire_tail == 0 && s->retire_head == off)) {
		if (s->retire_tail == 0) {
			s->retire_tail = off;
			s->retire_count++;
		}
		return true;
	}
	if (s->retire_tail) {
		struct ns_item_shm *tail = ns__item(c, s->retire_tail);
		if (tail && tail->next == off) {
			s->retire_tail = off;
			s->retire_count++;
			if (cls >= 0)
				s->retire_bytes += c->classes[cls].size;
			return true;
		}
	}
	return false;
}

/* Give back overflow buckets that primary B claimed but never linked. */
static void release_unlinked_over(ns_cache *c, uint64_t b)
{
	for (uint64_t i = 0; i < c->nover; i++) {
		struct ns_bucket_shm *ob = &c->over[i];
		if (ns_load_relaxed(&ob->lock) != b + 1)
			continue;
		bool linked = false;
		struct ns_bucket_shm *bk = &c->buckets[b];
		int err = 0;
		for (int d = 0; bk && d <= NS_CHAIN_MAX; d++) {
			if (ns_load_relaxed(&bk->next) == i + 1)
				linked = true;
			bk = ns__chain_next(c, bk, &err);
		}
		if (!linked)
			ns_store_release(&ob->lock, 0u);
	}
}

static void free_chunk_of(ns_cache *c, struct ns_slot_shm *s, ns_off_t off)
{
	int cls = ns__class_of(c, off);

	if (cls < 0 || in_cache(s, cls, off))
		return;
	s->slab_busy = 1;
	NS_TR(c, off);
	ns__push_free(c, cls, off);
	s->slab_busy = 0;
}

/* Recover slot IDX; the caller holds its OFD lock. */
static int recover_held(ns_cache *c, uint32_t idx)
{
	struct ns_slot_shm *s = &c->slots[idx];
	uint32_t phase = s->in_phase;
	uint64_t b1 = s->in_bucket;
	ns_off_t nw = s->in_new, old = s->in_old;
	bool locked = false;
	uint64_t b = 0;

	if (ns_load_relaxed(&s->state) == NS_SLOT_FREE)
		return 0;
	/* Recovery moves the dead client's chunks: a write section of its
	 * slot, which we own while we hold its lock. */
	ns__wsec_enter(c, s);
	/* Ask for the audit before anything below clears slab_busy: a
	 * recoverer killed halfway must not hide the dead client's window
	 * from the one that finishes its work. */
	if (s->slab_busy != 0)
		ns_add_return(&c->hdr->audit_wanted, 1u);
	/* An empty list whose tail still names a chunk: the owner died in
	 * free_before between taking the last chunk off the head and
	 * clearing the tail.  That chunk is free now; a later retire into
	 * this slot must not append to it. */
	if (s->retire_head == 0) {
		s->retire_tail = 0;
		s->retire_count = s->retire_bytes = 0;
	}
	/* The dead process's reads are over. */
	ns_store_relaxed(&s->epoch, 0ull);

	if (b1 != 0 && b1 - 1 <= c->mask) {
		b = b1 - 1;
		locked = ns_load_relaxed(&c->buckets[b].lock) == idx + 1;
	}
	if (nw != 0 && (phase == NS_PH_BUILT ||
			((phase == NS_PH_LOCKED || phase == NS_PH_PUBLISHED) &&
			 locked && ns__chain_find_locked(c, b, nw) == NULL))) {
		/* Never published: nobody can have seen it.  Busy before it
		 * leaves the intent: a recoverer killed before the push
		 * leaks it, and the flag calls the audit. */
		s->slab_busy = 1;
		cmm_barrier();
		s->in_new = 0;
		free_chunk_of(c, s, nw);
		s->slab_busy = 0; /* also when it was in the cache, or not a chunk */
	}
	if (old != 0) {
		bool gone;
		if (phase == NS_PH_UNLOCKED || phase == NS_PH_PUBLISHED)
			gone = true; /* the word no longer names it (see above) */
		else if (phase == NS_PH_LOCKED && locked)
			gone = ns__chain_find_locked(c, b, old) == NULL;
		else
			gone = false;
		if (gone && !retired_already(c, s, old))
			ns__retire_slot(c, s, old);
	}
	if (locked) {
		release_unlinked_over(c, b);
		ns_store_release(&c->buckets[b].lock, 0u);
	}
	if (ns_load_relaxed(&c->hdr->spaces_lock) == idx + 1)
		ns_store_release(&c->hdr->spaces_lock, 0u);
	ns__pins_release(c, idx); /* died sifting or auditing a free list */
	s->in_phase = NS_PH_NONE;
	s->in_bucket = s->in_new = s->in_old = 0;

	/* A chunk at the head of the retire list and in the cache was being
	 * moved from one to the other: it belongs to the cache. */
	if (s->retire_head) {
		int cls = ns__class_of(c, s->retire_head);
		if (cls >= 0 && in_cache(s, cls, s->retire_head)) {
			struct ns_item_shm *it = ns__item(c, s->retire_head);
			s->retire_head = it ? it->next : 0;
			if (s->retire_head == 0)
				s->retire_tail = 0;
			if (s->retire_count)
				s->retire_count--;
		}
	}
	for (int k = 0; k < NS_MAX_CLASSES; k++) {
		while (s->cache_n[k] > 0 && s->cache_n[k] <= NS_SLOT_CACHE) {
			ns_off_t off = s->cache[k][s->cache_n[k] - 1];
			s->slab_busy = 1;
			s->cache_n[k]--;
			if (ns__class_of(c, off) == k)
				ns__push_free(c, k, off);
			s->slab_busy = 0;
		}
		s->cache_n[k] = 0;
	}
	ns__reclaim_slot(c, s, false);
	ns_add_return(&c->hdr->recoveries, 1ull);
	ns__wsec_exit(s);
	ns_store_release(&s->state, (uint32_t)(s->retire_head ? NS_SLOT_ORPHAN
							      : NS_SLOT_FREE));
	return 1;
}

int ns__recover_slot(ns_cache *c, struct ns_thr *t, uint32_t idx)
{
	int fd, err, r;

	if (idx >= c->nslots)
		return NS_EINVAL;
	if (ns_load_relaxed(&c->slots[idx].state) == NS_SLOT_FREE)
		return 0;
	if (t == NULL) {
		/* Called from inside try_claim, which holds the lock. */
		return recover_held(c, idx);
	}
	fd = t->fd;
	err = ns__lock_byte(fd, NS_LOCK_SLOT_BASE + (off_t)idx, F_WRLCK, false);
	if (err == NS_EBUSY)
		return 0; /* alive, or somebody else is recovering it */
	if (err)
		return err;
	r = recover_held(c, idx);
	ns__lock_byte(fd, NS_LOCK_SLOT_BASE + (off_t)idx, F_UNLCK, false);
	return r;
}

int ns__break_lock(ns_cache *c, struct ns_thr *t, uint32_t idx, uint32_t *word)
{
	int err;

	if (idx >= c->nslots || idx == t->idx)
		return NS_EINVAL;
	/* Holding IDX's slot lock, nobody can claim the slot, so nobody can
	 * take WORD as IDX while we look: a word that still names IDX after
	 * recovery is left over, and ours to clear. */
	err = ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)idx, F_WRLCK, false);
	if (err == NS_EBUSY)
		return 0; /* alive, or somebody else is recovering it */
	if (err)
		return err;
	if (ns_load_relaxed(&c->slots[idx].state) != NS_SLOT_FREE)
		recover_held(c, idx);
	if (ns_load_relaxed(word) == idx + 1) {
		ns_cmpxchg(word, idx + 1, 0u);
		err = 1;
	}
	ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)idx, F_UNLCK, false);
	return err;
}

int ns__recover_dead(ns_cache *c)
{
	int n = 0, err = 0, fd;
	struct ns_thr *t = ns__thr(c, &err);

	if (t == NULL)
		return err;
	fd = t->fd;
	for (uint32_t i = 0; i < c->nslots; i++) {
		if (i == t->idx || ns_load_relaxed(&c->slots[i].state) == NS_SLOT_FREE)
			continue;
		if (ns__slot_alive(c, fd, i) == 0 && ns__recover_slot(c, t, i) > 0)
			n++;
	}
	return n;
}

/* ---- consistency check -------------------------------------------------- */

enum { M_NONE, M_REACH, M_FREE, M_CACHED, M_RETIRED, M_FLIGHT };

struct marks {
	ns_cache *c;
	uint8_t *m;
	bool live;             /* clients attached: seeing a chunk twice is a
				* move, not an error; walks must be stable */
	bool unstable;         /* live: a free list could not be pinned */
	struct ns_thr *t;      /* live: the auditor (the pins are its) */
	ns_off_t first_leak;   /* the first chunk sweep found in no record */
	uint64_t max_per_page;
	struct ns_verify_report *rep;
};

static void fail(struct ns_verify_report *rep, const char *fmt, unsigned long long a,
		 unsigned long long b)
{
	if (rep->first_error[0] == '\0')
		snprintf(rep->first_error, sizeof(rep->first_error), fmt, a, b);
}

/* Index of OFF in the mark array, or UINT64_MAX if OFF is not a carved chunk. */
static uint64_t chunk_id(struct marks *mk, ns_off_t off)
{
	ns_cache *c = mk->c;
	int cls = ns__class_of(c, off);
	if (cls < 0)
		return UINT64_MAX;
	uint64_t rel = off - c->data_off;
	uint64_t i = (rel % NS_PAGE_SIZE) / c->classes[cls].size;
	uint32_t carved = ns_load_relaxed(&c->pages[rel / NS_PAGE_SIZE].carved);
	if (i >= carved)
		return UINT64_MAX;
	return rel / NS_PAGE_SIZE * mk->max_per_page + i;
}

static bool mark(struct marks *mk, ns_off_t off, uint8_t how, const char *where)
{
	uint64_t id = chunk_id(mk, off);

	if (id == UINT64_MAX) {
		mk->rep->bad_refs++;
		if (mk->rep->first_error[0] == '\0')
			snprintf(mk->rep->first_error, sizeof(mk->rep->first_error),
				 "bad offset %llu in %s", (unsigned long long)off, where);
		return false;
	}
	if (mk->m[id] != M_NONE) {
		if (mk->live)
			return true; /* seen in two records: it is moving */
		mk->rep->doubled++;
		if (mk->rep->first_error[0] == '\0')
			snprintf(mk->rep->first_error, sizeof(mk->rep->first_error),
				 "chunk %llu in %s and in place %u",
				 (unsigned long long)off, where, mk->m[id]);
		return false;
	}
	mk->m[id] = how;
	return true;
}

static bool marked(struct marks *mk, ns_off_t off)
{
	uint64_t id = chunk_id(mk, off);
	return id != UINT64_MAX && mk->m[id] != M_NONE;
}

static void mark_index(struct marks *mk)
{
	ns_cache *c = mk->c;
	struct ns_verify_report *rep = mk->rep;
	uint8_t *linked = calloc(c->nover + 1, 1);

	if (linked == NULL) {
		rep->bad_refs++;
		fail(rep, "out of memory for the overflow map%.0llu%.0llu", 0, 0);
		return;
	}
	for (uint64_t b = 0; b <= c->mask; b++) {
		struct ns_bucket_shm *bk = &c->buckets[b];
		int err = 0;
		if (ns_load_relaxed(&bk->lock) != 0)
			rep->locked++;
		for (int d = 0; bk; d++) {
			if (d > NS_CHAIN_MAX) {
				rep->bad_refs++;
				fail(rep, "chain of bucket %llu too long%.0llu",
				     (unsigned long long)b, 0);
				break;
			}
			for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
				uint64_t w = ns_load_relaxed(&bk->slot[i]);
				if (w == 0)
					continue;
				ns_off_t off = w & NS_SLOT_OFF_MASK;
				if (!mark(mk, off, M_REACH, "index"))
					continue;
				struct ns_item_shm *it = ns__item(c, off);
				int cls = ns__class_of(c, off);
				rep->reachable++;
				if (it->state != NS_CH_LIVE || (it->hash & c->mask) != b) {
					rep->bad_refs++;
					fail(rep, "item %llu misplaced in bucket %llu",
					     (unsigned long long)off, (unsigned long long)b);
				} else if (cls < 0 || it->klen == 0 || it->klen > NS_KEY_MAX ||
					   it->space == 0 || it->space > c->hdr->nspaces ||
					   sizeof(*it) + (uint64_t)it->klen + it->vlen >
					   c->classes[cls].size) {
					rep->bad_refs++;
					fail(rep, "item %llu in bucket %llu has bad lengths or namespace",
					     (unsigned long long)off, (unsigned long long)b);
				}
			}
			bk = ns__chain_next(c, bk, &err);
			if (bk) {
				uint64_t oi = (uint64_t)(bk - c->over);
				if (linked[oi]++) {
					rep->bad_refs++;
					fail(rep, "overflow bucket %llu linked twice%.0llu",
					     (unsigned long long)oi, 0);
					break;
				}
				if (ns_load_relaxed(&bk->lock) != b + 1) {
					rep->bad_refs++;
					fail(rep, "overflow bucket %llu not owned by %llu",
					     (unsigned long long)oi, (unsigned long long)b);
				}
			}
			if (err) {
				rep->bad_refs++;
				fail(rep, "bad chain link in bucket %llu%.0llu",
				     (unsigned long long)b, 0);
				break;
			}
		}
	}
	for (uint64_t i = 0; i < c->nover; i++) {
		if (ns_load_relaxed(&c->over[i].lock) != 0 && !linked[i]) {
			rep->bad_refs++;
			fail(rep, "overflow bucket %llu claimed, not linked%.0llu",
			     (unsigned long long)i, 0);
		}
	}
	free(linked);
}

/*
 * Free lists.  Alone, walk them.  Live, clients pop and push meanwhile, and
 * a walk standing on a chunk that is popped and reused may read a rewritten
 * link and miss the rest of the list.  So the walk pins the list first
 * (slab.c, "pinning"): below the pinned chunk nothing moves, and the pin
 * moves down with the walk.  Chunks pushed above it meanwhile are shaded.
 * (An earlier version trusted a walk only if the head's tag held still for
 * all of it, which under a steady write load a walk of a long list never
 * did: the live audit gave up every time and leaked chunks piled up.)
 */
static void mark_free_lists(struct marks *mk)
{
	ns_cache *c = mk->c;

	for (uint32_t k = 0; k < c->nclasses; k++) {
		uint64_t h = ns_load_acquire(&c->classes[k].free_head);
		ns_off_t off = (h & ((1ull << 40) - 1)) << 3;
		uint64_t n = 0;

		if (mk->live && ns__pin_head(c, mk->t, (int)k, &off) != 0) {
			mk->unstable = true; /* another auditor or sifter */
			continue;
		}
		while (off) {
			if (ns__class_of(c, off) != (int)k || n++ > mk->rep->chunks) {
				mk->rep->bad_refs++;
				fail(mk->rep, "free list of class %llu broken at %llu",
				     k, (unsigned long long)off);
				mk->unstable = mk->live; /* sweep nothing after it */
				break;
			}
			if (!mark(mk, off, M_FREE, "free list")) {
				mk->unstable = mk->live;
				break;
			}
			mk->rep->free++;
			if (mk->live && (n & 255) == 0)
				ns__pin_move(c, mk->t, (int)k, off);
			off = ns_load_relaxed(&((struct ns_item_shm *)(c->base + off))->next);
		}
		if (mk->live)
			ns__unpin(c, mk->t, (int)k);
	}
	/* Chunks parked on the pages nsd is moving (or that a late parker
	 * left on a page no longer moving) are free too.  Parkers only push,
	 * and only the janitor takes chunks off: when nsd is the auditor, a
	 * walk cannot go astray.  Another auditor can meet nsd unparking a
	 * chunk the walk stands on, and follow it onto a free list: the walk
	 * then stops, and the marks cannot be trusted. */
	for (uint32_t p = 0; p < c->npages; p++) {
		ns_off_t off = ns_load_acquire(&c->pages[p].park_head);
		uint64_t n = 0;
		while (off) {
			if (ns__page_of(c, off) != &c->pages[p] || ns__class_of(c, off) < 0 ||
			    n++ > mk->rep->chunks) {
				mk->rep->bad_refs++;
				fail(mk->rep, "park list of page %llu broken at %llu",
				     p, (unsigned long long)off);
				mk->unstable = mk->live;
				break;
			}
			if (!mark(mk, off, M_FREE, "park list")) {
				mk->unstable = mk->live;
				break;
			}
			mk->rep->free++;
			off = ns_load_relaxed(&((struct ns_item_shm *)(c->base + off))->next);
		}
	}
}

static void mark_slot(struct marks *mk, struct ns_slot_shm *s);

static void mark_slots(struct marks *mk)
{
	ns_cache *c = mk->c;

	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		if (ns_load_relaxed(&s->state) != NS_SLOT_FREE)
			mark_slot(mk, s);
	}
}

static void mark_slot(struct marks *mk, struct ns_slot_shm *s)
{
	ns_cache *c = mk->c;
	uint64_t n = 0;

	/* Live, the owner may be changing its cache as we read it.  It
	 * removes and appends entries at the end only (the janitor's flush
	 * shades the entry it moves), and what it moves is shaded: an entry
	 * that stays in the cache stays in its place, below any count read
	 * later. */
	for (int k = 0; k < NS_MAX_CLASSES; k++) {
		uint8_t cn = ns_load_relaxed(&s->cache_n[k]);
		for (int j = 0; j < cn && j < NS_SLOT_CACHE; j++)
			if (mark(mk, ns_load_relaxed(&s->cache[k][j]), M_CACHED, "slot cache"))
				mk->rep->cached++;
	}
	/* Live, a retire list cannot be walked safely (its owner frees from
	 * its head); the sweep leaves every chunk in the RETIRED state alone
	 * instead (sweep_snapshot). */
	for (ns_off_t off = mk->live ? 0 : s->retire_head; off; n++) {
		if (n > mk->rep->chunks)
			break;
		/* The head may also sit in the cache (see recovery). */
		if (off == s->retire_head && marked(mk, off)) {
			off = ns__item(c, off)->next;
			continue;
		}
		if (!mark(mk, off, M_RETIRED, "retire list"))
			break;
		mk->rep->retired++;
		off = ns__item(c, off)->next;
	}
	ns_off_t nw = ns_load_relaxed(&s->in_new), old = ns_load_relaxed(&s->in_old);
	if (nw && !marked(mk, nw) && mark(mk, nw, M_FLIGHT, "intent"))
		mk->rep->in_flight++;
	if (old && !marked(mk, old) && mark(mk, old, M_FLIGHT, "intent"))
		mk->rep->in_flight++;
}

/* Mark every record; live (T, the auditor, not NULL) with clients at work. */
static int run_marks_mode(ns_cache *c, struct ns_verify_report *rep,
			  struct marks *mk, struct ns_thr *t)
{
	bool live = t != NULL;
	uint32_t used = ns_load_relaxed(&c->hdr->next_page);

	memset(rep, 0, sizeof(*rep));
	mk->c = c;
	mk->rep = rep;
	mk->live = live;
	mk->t = t;
	mk->unstable = false;
	mk->max_per_page = NS_PAGE_SIZE / NS_MIN_CHUNK;
	mk->m = calloc((size_t)c->npages * mk->max_per_page, 1);
	if (mk->m == NULL)
		return ns__errno(ENOMEM);
	if (used > c->npages)
		used = c->npages;
	for (uint32_t p = 0; p < used; p++) {
		uint32_t k = c->pages[p].cls, carved = c->pages[p].carved;
		if (k == 0 || k > c->nclasses)
			continue;
		if (carved > c->classes[k - 1].per_page)
			carved = c->classes[k - 1].per_page;
		rep->chunks += carved;
	}
	mark_index(mk);
	mark_free_lists(mk);
	mark_slots(mk);
	rep->items = rep->reachable;
	return 0;
}

static int run_marks(ns_cache *c, struct ns_verify_report *rep, struct marks *mk)
{
	return run_marks_mode(c, rep, mk, NULL);
}

/* Call FN on every carved chunk no record holds. */
static uint64_t sweep(struct marks *mk, void (*fn)(ns_cache *, int, ns_off_t))
{
	ns_cache *c = mk->c;
	uint32_t used = ns_load_relaxed(&c->hdr->next_page);
	uint64_t n = 0;

	if (used > c->npages)
		used = c->npages;
	for (uint32_t p = 0; p < used; p++) {
		uint32_t k = c->pages[p].cls, carved = c->pages[p].carved;
		if (k == 0 || k > c->nclasses)
			continue;
		if (carved > c->classes[k - 1].per_page)
			carved = c->classes[k - 1].per_page;
		for (uint32_t i = 0; i < carved; i++) {
			if (mk->m[p * mk->max_per_page + i] != M_NONE)
				continue;
			ns_off_t off = c->data_off + (uint64_t)p * NS_PAGE_SIZE +
				       (uint64_t)i * c->classes[k - 1].size;
			if (n++ == 0)
				mk->first_leak = off;
			if (fn)
				fn(c, (int)k - 1, off);
		}
	}
	return n;
}

int ns__verify(ns_cache *c, struct ns_verify_report *rep)
{
	struct marks mk;
	int err = run_marks(c, rep, &mk);

	if (err)
		return err;
	rep->leaked = sweep(&mk, NULL);
	if (rep->leaked && rep->first_error[0] == '\0') {
		/* Which chunk, and what it last was, says where it leaked. */
		struct ns_item_shm *it = ns__item(c, mk.first_leak);
		uint32_t st = it ? ns_load_relaxed(&it->state) : 0;
		snprintf(rep->first_error, sizeof(rep->first_error),
			 "%llu chunks held by no record; the first at offset %llu "
			 "(class %d, state %s)", (unsigned long long)rep->leaked,
			 (unsigned long long)mk.first_leak, ns__class_of(c, mk.first_leak),
			 st == NS_CH_FREE ? "free" : st == NS_CH_LIVE ? "live" :
			 st == NS_CH_RETIRED ? "retired" : "never used");
	}
	free(mk.m);
	return (rep->leaked || rep->doubled || rep->bad_refs) ? NS_ECORRUPT : 0;
}

/* Set every namespace's items and bytes from the index.  Exact only with
 * no other writer, so only the audit calls it: a client killed between its
 * store and its counter update leaves them off by one until then. */
static void recount_spaces(ns_cache *c)
{
	uint32_t n = c->hdr->nspaces;
	int64_t *cnt = calloc((size_t)n * 2, sizeof(*cnt));

	if (cnt == NULL)
		return;
	for (uint64_t b = 0; b <= c->mask; b++) {
		struct ns_bucket_shm *bk = &c->buckets[b];
		int err = 0;
		for (int d = 0; bk && d <= NS_CHAIN_MAX; d++) {
			for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
				ns_off_t off = ns_load_relaxed(&bk->slot[i]) & NS_SLOT_OFF_MASK;
				struct ns_item_shm *it = ns__item(c, off);
				int cls = off ? ns__class_of(c, off) : -1;
				if (it == NULL || cls < 0 || it->space == 0 || it->space > n)
					continue;
				size_t at = 2 * (size_t)(it->space - 1);

				cnt[at]++;
				cnt[at + 1] += c->classes[cls].size;
			}
			bk = ns__chain_next(c, bk, &err);
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		ns_store_relaxed(&c->spaces[i].items, cnt[2 * (size_t)i]);
		ns_store_relaxed(&c->spaces[i].bytes, cnt[2 * (size_t)i + 1]);
	}
	free(cnt);
}

/*
 * The audit with clients attached.  A leaked chunk (a client died between a
 * CAS on a free list and recording its result) sits in no record, and no
 * live client will ever touch it.  A live chunk may be missed by a marking
 * pass that runs while clients move it from a record not yet looked at to
 * one already looked at; so, while the audit runs (hdr.audit_active), every
 * client marks each chunk it moves in the audit map (ns__shade: a write
 * barrier, as in an incremental collector).  The handshake:
 *
 *   1. clear the map, set audit_active, fence (membarrier: clients pay none);
 *   2. wait until every write section open at that moment has ended (a
 *      slot's wsec is even, or has changed): later sections see the flag;
 *   3. mark every record, as the exact audit does;
 *   4. wait again, so that every section that ran during 3 has ended;
 *   5. sweep: a carved chunk neither marked nor shaded was in no record
 *      and moved by nobody for the whole time: leaked.  Free it.
 *
 * Walking a list that changes under the walk can go astray (a popped
 * chunk's link is rewritten) and miss chunks that never moved.  Free lists
 * are walked under a pin (mark_free_lists); slot caches are arrays whose
 * entries stay in place; retire lists are not walked, their chunks are
 * known by their RETIRED state instead (sweep_snapshot).  A chunk seen in
 * two records is moving, not an error.  A dead slot inside a section is
 * recovered by the auditor on the spot (its recovery is a section that sees
 * the flag).  A section that does not end in time (a client stopped inside
 * it) or a pin held by another live process makes the audit give up:
 * NS_EBUSY, try later.
 */
#define NS_AUDIT_WAIT_MS 1000

static int wait_sections(ns_cache *c, struct ns_thr *t, const uint32_t *seen)
{
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		for (int waited = 0; i != t->idx; waited++) {
			uint32_t w = ns_load_acquire(&s->wsec);
			if ((w & 1u) == 0 || w != seen[i] ||
			    ns_load_relaxed(&s->state) == NS_SLOT_FREE)
				break;
			if (waited >= NS_AUDIT_WAIT_MS * 10)
				return NS_EBUSY;
			if (ns__slot_alive(c, t->fd, i) == 0) {
				/* Died inside: finish its work ourselves (0:
				 * somebody else is at it; wait for them). */
				int r = ns__recover_slot(c, t, i);
				if (r < 0)
					return r;
				if (r > 0)
					continue;
			}
			usleep(100);
		}
	}
	return 0;
}

struct page_snap {
	uint32_t cls, carved;
};

/*
 * The live sweep: chunks of pages whose class is still the snapshot's and
 * that are not changing class (MOVING), carved by the snapshot, neither
 * marked nor shaded, and not retired (a retire list is not walked live:
 * see mark_slot; a chunk leaves one as FREE, in a cache or on a free list,
 * so a chunk leaked on its way out of either is swept).
 *
 * A page being drained is swept like any other: its free chunks sit on
 * its park list, which is marked, and one that is leaked goes back through
 * ns__push_free, onto the park list, where the move needs it.  Leaving
 * such pages out let a chunk leaked by a janitor killed while unparking
 * stay lost for good: the next nsd chose that page again (few live items),
 * the audit skipped it as draining and cleared its request, and the move
 * waited for the chunk until it gave up, again and again (the torture with
 * nsd's --rebalance-exercise).  A leaked chunk also keeps a drained page
 * from ever becoming MOVING, so no page can change class under the sweep
 * while it holds one.
 *
 * *PARTIAL is set when a page was left out (MOVING, or of another class
 * since the snapshot): the caller leaves the audit request standing.
 */
static uint64_t sweep_snapshot(struct marks *mk, const struct page_snap *snap,
			       const uint8_t *shade, bool *partial)
{
	ns_cache *c = mk->c;
	uint64_t n = 0;

	for (uint32_t p = 0; p < c->npages; p++) {
		uint32_t k = snap[p].cls, carved = snap[p].carved;
		if (k == 0 || k > c->nclasses)
			continue;
		if (ns_load_acquire(&c->pages[p].cls) != k ||
		    ns_load_acquire(&c->pages[p].drain) == NS_PG_MOVING) {
			*partial = true;
			continue;
		}
		if (carved > c->classes[k - 1].per_page)
			carved = c->classes[k - 1].per_page;
		for (uint32_t i = 0; i < carved; i++) {
			uint64_t id = p * mk->max_per_page + i;
			ns_off_t off = c->data_off + (uint64_t)p * NS_PAGE_SIZE +
				       (uint64_t)i * c->classes[k - 1].size;
			if (mk->m[id] != M_NONE)
				continue;
			/* The state first: whoever takes a chunk off a retire
			 * list shades it before it changes the state, so a
			 * state read as not RETIRED comes with its shade. */
			if (ns_load_acquire(&((struct ns_item_shm *)(c->base + off))->state) ==
			    NS_CH_RETIRED ||
			    (ns_load_relaxed(&shade[id >> 3]) & (1u << (id & 7))))
				continue;
			n++;
			NS_TR(c, off);
			ns__push_free(c, (int)k - 1, off);
		}
	}
	return n;
}

/* WANTED: hdr.audit_wanted before the audit began; a request made since
 * (a client that died meanwhile) may name a chunk this audit saw in a
 * record, so it is left standing for the next one, and so is every request
 * when the sweep had to leave a page out. */
static int64_t audit_live(ns_cache *c, struct ns_thr *t, uint32_t wanted)
{
	struct ns_verify_report rep;
	struct marks mk;
	struct page_snap *snap = NULL;
	uint32_t *seen = calloc(c->nslots, sizeof(*seen));
	uint64_t n = 0;
	bool partial = false;
	int err;

	if (seen == NULL)
		return ns__errno(ENOMEM);
	/* One audit at a time: audit_active names its auditor's slot.  An
	 * auditor that died leaves it set (clients shading for nothing until
	 * the next one takes over). */
	uint32_t me = t->idx + 1, cur = ns_load_relaxed(&c->hdr->audit_active);
	if (cur != 0 && (cur - 1 >= c->nslots || ns__slot_alive(c, t->fd, cur - 1) != 0 ||
			 ns_cmpxchg(&c->hdr->audit_active, cur, 0u) != cur)) {
		free(seen);
		return NS_EBUSY;
	}
	if (ns_cmpxchg(&c->hdr->audit_active, 0u, me) != 0) {
		free(seen);
		return NS_EBUSY;
	}
	memset(c->audit_map, 0, c->hdr->audit_bytes);
	cmm_smp_mb();
	if (ns__membarrier(c) != 0) {
		/* Clients relying on membarrier cannot be fenced: give up. */
		for (uint32_t i = 0; i < c->nslots; i++)
			if (ns_load_relaxed(&c->slots[i].flags) & NS_SLOTF_MEMBARRIER &&
			    ns_load_relaxed(&c->slots[i].state) != NS_SLOT_FREE) {
				err = NS_EBUSY;
				goto out;
			}
	}
	for (uint32_t i = 0; i < c->nslots; i++)
		seen[i] = ns_load_acquire(&c->slots[i].wsec);
	err = wait_sections(c, t, seen);
	if (err)
		goto out;
	/* The pages and their carved chunks as of now: a chunk carved later
	 * is counted before it is shaded, and a page given to another class
	 * meanwhile is numbered differently; the sweep looks at neither. */
	snap = calloc(c->npages, sizeof(*snap));
	if (snap == NULL) {
		err = ns__errno(ENOMEM);
		goto out;
	}
	for (uint32_t p = 0; p < c->npages; p++) {
		snap[p].cls = ns_load_acquire(&c->pages[p].cls);
		snap[p].carved = ns_load_acquire(&c->pages[p].carved);
	}
	err = run_marks_mode(c, &rep, &mk, t);
	if (err)
		goto out;
	for (uint32_t i = 0; i < c->nslots; i++)
		seen[i] = ns_load_acquire(&c->slots[i].wsec);
	err = wait_sections(c, t, seen);
	if (err == 0 && mk.unstable)
		err = NS_EBUSY; /* a list kept changing: cannot trust the marks */
	if (err == 0)
		n = sweep_snapshot(&mk, snap, c->audit_map, &partial);
	free(mk.m);
out:
	ns_store_release(&c->hdr->audit_active, 0u);
	free(snap);
	free(seen);
	if (err)
		return err;
	if (!partial)
		ns_cmpxchg(&c->hdr->audit_wanted, wanted, 0u);
	return (int64_t)n;
}

int64_t ns__audit(ns_cache *c)
{
	struct ns_verify_report rep;
	struct marks mk;
	int err = 0;
	struct ns_thr *t = ns__thr(c, &err);
	uint64_t n;

	if (t == NULL)
		return err;
	ns__recover_dead(c);
	uint32_t wanted = ns_load_acquire(&c->hdr->audit_wanted);
	for (uint32_t i = 0; i < c->nslots; i++) {
		if (i != t->idx && ns_load_relaxed(&c->slots[i].state) != NS_SLOT_FREE &&
		    ns__slot_alive(c, t->fd, i) != 0)
			return audit_live(c, t, wanted); /* others attached */
	}
	err = run_marks(c, &rep, &mk);
	if (err)
		return err;
	if (rep.doubled || rep.bad_refs) {
		free(mk.m);
		return NS_ECORRUPT;
	}
	n = sweep(&mk, ns__push_free);
	free(mk.m);
	recount_spaces(c);
	ns_cmpxchg(&c->hdr->audit_wanted, wanted, 0u);
	return (int64_t)n;
}
