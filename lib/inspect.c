/*
 * inspect.c - a read-only census of a segment, for nsctl.
 *
 * nsctl maps segments read-only and must report on any of them: one in use
 * by writers, one left by crashed processes, one damaged or hostile.  The
 * census therefore writes nothing in the segment, takes no lock, and
 * treats every word it reads as untrusted input (rule 1): each offset goes
 * through ns__item()/ns__class_of() before it is followed, each walk of a
 * list or chain has a bound, and a value that fails a check is counted as a
 * problem instead of being used.
 *
 *   pages     -> per class: pages, carved chunks, draining pages
 *   free list -> per class: free chunks (bounded by the class's carved count)
 *   park list -> per class: parked chunks of draining pages
 *   slots     -> per class: chunks in slot caches and on retire lists
 *   index     -> per class: items and their header+key+value bytes;
 *                chain lengths, overflow buckets in use, bad references
 *
 * While writers run the walks race with them, so the counts are an
 * estimate (a chunk popped from a free list mid-walk can end the walk
 * early, or be counted in two places); on a quiet segment they are exact.
 * The census never decides that a segment is consistent - that is
 * ns__verify()'s job - but its item checks (lengths that fit the chunk, a
 * key of 1 to NS_KEY_MAX bytes, a namespace that exists) cover what the
 * chunk accounting of ns__verify() does not look at.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "ns_internal.h"

/* The free-list head packs the chunk offset / 8 in its low 40 bits (the
 * tagged word of slab.c; recover.c reads it the same way). */
#define HEAD_OFF_BITS 40

static void problem(struct ns_census *cs, const char *fmt, unsigned long long a,
		    unsigned long long b)
{
	if (cs->first_problem[0] == '\0')
		snprintf(cs->first_problem, sizeof(cs->first_problem), fmt, a, b);
}

static void census_pages(ns_cache *c, struct ns_census *cs)
{
	cs->pages_handed = ns_load_relaxed(&c->hdr->next_page);
	if (cs->pages_handed > c->npages)
		cs->pages_handed = c->npages;
	for (uint32_t p = 0; p < c->npages; p++) {
		const struct ns_page_shm *pg = &c->pages[p];
		uint32_t k = ns_load_relaxed(&pg->cls);
		uint32_t carved = ns_load_relaxed(&pg->carved);

		if (k == 0)
			continue;
		if (k > c->nclasses) {
			cs->bad_refs++;
			problem(cs, "page %llu names class %llu", p, k);
			continue;
		}
		struct ns_census_class *cl = &cs->cls[k - 1];
		cl->pages++;
		cl->carved += carved < cl->per_page ? carved : cl->per_page;
		if (ns_load_relaxed(&pg->drain) != NS_PG_NORMAL)
			cl->draining++;
	}
}

/* Follow a list of chunks through their `next` words from HEAD, at most
 * LIMIT of them, each of which must be a chunk of class K (and, if PAGE is
 * not NULL, of that page).  Returns the number counted; sets *BROKEN when
 * the list leaves the class or does not end within LIMIT. */
static uint64_t walk_list(ns_cache *c, ns_off_t head, int k,
			  const struct ns_page_shm *page, uint64_t limit, bool *broken)
{
	uint64_t n = 0;

	for (ns_off_t off = head; off != 0; n++) {
		struct ns_item_shm *it = ns__item(c, off);

		if (n >= limit || it == NULL || ns__class_of(c, off) != k ||
		    (page && ns__page_of(c, off) != page)) {
			*broken = true;
			break;
		}
		off = ns_load_relaxed(&it->next);
	}
	return n;
}

static void census_lists(ns_cache *c, struct ns_census *cs)
{
	for (uint32_t k = 0; k < c->nclasses; k++) {
		struct ns_census_class *cl = &cs->cls[k];
		uint64_t h = ns_load_relaxed(&c->classes[k].free_head);
		ns_off_t head = (h & ((1ull << HEAD_OFF_BITS) - 1)) << 3;
		bool broken = false;

		/* A list longer than the chunks carved so far has a loop. */
		cl->free = walk_list(c, head, (int)k, NULL, cl->carved + 1, &broken);
		if (broken) {
			cl->list_broken = true;
			cs->bad_lists++;
			problem(cs, "free list of class %llu broken after %llu chunks",
				k, cl->free);
		}
	}
	for (uint32_t p = 0; p < c->npages; p++) {
		const struct ns_page_shm *pg = &c->pages[p];
		uint32_t k = ns_load_relaxed(&pg->cls);
		ns_off_t head = ns_load_relaxed(&pg->park_head);
		bool broken = false;

		if (head == 0 || k == 0 || k > c->nclasses)
			continue;
		cs->cls[k - 1].parked += walk_list(c, head, (int)k - 1, pg,
						   cs->cls[k - 1].per_page + 1, &broken);
		if (broken) {
			cs->cls[k - 1].list_broken = true;
			cs->bad_lists++;
			problem(cs, "park list of page %llu broken%.0llu", p, 0);
		}
	}
}

static void census_slots(ns_cache *c, struct ns_census *cs)
{
	uint64_t chunks = 0;

	for (uint32_t k = 0; k < c->nclasses; k++)
		chunks += cs->cls[k].carved;
	for (uint32_t i = 0; i < c->nslots; i++) {
		const struct ns_slot_shm *s = &c->slots[i];

		if (ns_load_relaxed(&s->state) == NS_SLOT_FREE)
			continue;
		cs->slots_used++;
		for (int k = 0; k < NS_MAX_CLASSES; k++) {
			uint8_t n = ns_load_relaxed(&s->cache_n[k]);
			for (int j = 0; j < n && j < NS_SLOT_CACHE; j++) {
				int kk = ns__class_of(c, ns_load_relaxed(&s->cache[k][j]));
				if (kk >= 0)
					cs->cls[kk].cached++;
			}
		}
		uint64_t n = 0;
		for (ns_off_t off = ns_load_relaxed(&s->retire_head); off != 0; n++) {
			struct ns_item_shm *it = ns__item(c, off);
			int kk = ns__class_of(c, off);

			if (n > chunks || it == NULL || kk < 0) {
				cs->bad_lists++;
				problem(cs, "retire list of slot %llu broken after %llu chunks",
					i, n);
				break;
			}
			cs->cls[kk].retired++;
			off = ns_load_relaxed(&it->next);
		}
	}
}

/* Account for the item that index word W of bucket B points at. */
static void census_item(ns_cache *c, struct ns_census *cs, uint64_t b, uint64_t w,
			uint32_t space, uint64_t now)
{
	ns_off_t off = w & NS_SLOT_OFF_MASK;
	struct ns_item_shm *it = ns__item(c, off);
	int k = ns__class_of(c, off);

	if (it == NULL || k < 0) {
		cs->bad_refs++;
		problem(cs, "bucket %llu points at %llu, not a chunk",
			(unsigned long long)b, (unsigned long long)off);
		return;
	}
	uint32_t klen = it->klen, vlen = it->vlen, id = it->space;
	uint64_t bytes = sizeof(*it) + (uint64_t)klen + vlen;

	if (klen == 0 || klen > NS_KEY_MAX || bytes > c->classes[k].size ||
	    id == 0 || id > c->hdr->nspaces) {
		cs->bad_items++;
		problem(cs, "item %llu has bad lengths or namespace (bucket %llu)",
			(unsigned long long)off, (unsigned long long)b);
		return;
	}
	cs->items_all++;
	if (space != 0 && id != space)
		return;
	struct ns_census_class *cl = &cs->cls[k];
	cl->items++;
	cl->item_bytes += bytes;
	if (!ns__visible(c, it, now))
		cl->dead++;
}

static int census_index(ns_cache *c, struct ns_census *cs, uint32_t space)
{
	/* Which overflow buckets a chain went through: a second visit is a
	 * loop or two chains sharing one bucket. */
	uint8_t *seen = calloc(c->nover + 1, 1);
	uint64_t now = ns__now_ms();

	if (seen == NULL)
		return ns__errno(ENOMEM);
	for (uint64_t b = 0; b <= c->mask; b++) {
		struct ns_bucket_shm *bk = &c->buckets[b];
		uint64_t len = 0;
		int err = 0;

		if (ns_load_relaxed(&bk->lock) != 0)
			cs->locked++;
		while (bk != NULL) {
			if (++len > NS_CHAIN_MAX + 1) {
				cs->bad_chains++;
				problem(cs, "chain of bucket %llu too long%.0llu",
					(unsigned long long)b, 0);
				break;
			}
			for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
				uint64_t w = ns_load_relaxed(&bk->slot[i]);
				if (w != 0)
					census_item(c, cs, b, w, space, now);
			}
			bk = ns__chain_next(c, bk, &err);
			if (err) {
				cs->bad_chains++;
				problem(cs, "bad chain link in bucket %llu%.0llu",
					(unsigned long long)b, 0);
				break;
			}
			if (bk != NULL) {
				uint64_t oi = (uint64_t)(bk - c->over);
				if (seen[oi]) {
					cs->bad_chains++;
					problem(cs, "chain of bucket %llu meets overflow "
						"bucket %llu twice", (unsigned long long)b,
						(unsigned long long)oi);
					break;
				}
				seen[oi] = 1;
				cs->over_linked++;
			}
		}
		if (len > cs->longest_chain)
			cs->longest_chain = len;
	}
	free(seen);
	return 0;
}

int ns__census(ns_cache *c, uint32_t space, struct ns_census *cs)
{
	memset(cs, 0, sizeof(*cs));
	cs->nclasses = c->nclasses;
	for (uint32_t k = 0; k < c->nclasses; k++) {
		cs->cls[k].size = c->classes[k].size;
		cs->cls[k].per_page = c->classes[k].per_page;
		/* The cause before the total: nsd adds to them in the
		 * other order, so the total read is never below it. */
		cs->cls[k].move_evictions = ns_load_acquire(&c->classes[k].move_evictions);
		cs->cls[k].evictions = ns_load_acquire(&c->classes[k].evictions);
		cs->cls[k].enomem = ns_load_relaxed(&c->classes[k].enomem);
		cs->cls[k].rescues = ns_load_relaxed(&c->classes[k].rescues);
	}
	cs->index_evictions = ns_load_relaxed(&c->hdr->index_evictions);
	for (uint32_t i = 0; i < c->hdr->nspaces; i++)
		if (ns_load_acquire(&c->spaces[i].state) == 1)
			cs->quota_evictions += ns_load_relaxed(&c->spaces[i].quota_evictions);
	census_pages(c, cs);
	census_lists(c, cs);
	census_slots(c, cs);
	for (uint64_t i = 0; i < c->nover; i++)
		if (ns_load_relaxed(&c->over[i].lock) != 0)
			cs->over_claimed++;
	return census_index(c, cs, space);
}
