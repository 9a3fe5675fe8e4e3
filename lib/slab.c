/*
 * slab.c - the slab allocator: size classes, pages, free lists, per-slot
 * chunk caches, and eviction when memory runs out.
 *
 * Memory is cut into 1 MiB pages (a multiple of the 4 KiB page and half a
 * 2 MiB huge page, so two of them fill one huge page).  A page belongs to
 * one size class and is carved into equal chunks.  Classes grow by a factor
 * of 1.25 from 64 bytes, memcached's default growth factor: the internal
 * waste of a chunk is at most 20% and the class count stays under 48.
 *
 *   class k:  free_head --> chunk --> chunk --> 0   (next in the chunk)
 *             cur_page:  [chunk|chunk|chunk|....]   carved counter: bump
 *   slot s:   cache[k] = { up to NS_SLOT_CACHE chunks }
 *
 * Allocation tries, in order: the caller's own cache (no atomics); the
 * class free list (a Treiber stack whose head packs the chunk offset / 8
 * into 40 bits and a 24-bit tag into the rest of one 64-bit word, so a CAS
 * fails if the head was popped and pushed back meanwhile: the ABA problem);
 * the bump cursor of the class's current page; a fresh page from the pool;
 * then reclamation of the caller's retired items; then eviction.
 *
 * Crash safety: a chunk always sits in one record that recovery can read
 * (a free list, a slot cache, an intent, the index, a retire list), except
 * inside the few instructions between a CAS on a shared list and the store
 * that records the result.  Those windows are bracketed by slot.slab_busy;
 * a slot found dead with it set may have leaked one chunk, and recovery
 * raises hdr.audit_wanted so that the mark-and-sweep audit takes it back.
 * Every window errs towards a leak, never towards a chunk in two places.
 *
 * Eviction samples: it picks random carved chunks of the class that needs
 * memory, keeps the live ones, and evicts the expired one or else the one
 * with the oldest access hint, Redis's approximated LRU.  Readers never
 * write for this (the hint is written at most once a second per item).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic_ops.h>

#define NS_TR_FILE 1
#include "ns_internal.h"

#define TAG_SHIFT 40
#define OFF_MASK ((1ull << TAG_SHIFT) - 1)

static inline uint64_t pack(ns_off_t off, uint64_t tag)
{
	return (off >> 3) | (tag << TAG_SHIFT);
}
static inline ns_off_t head_off(uint64_t h) { return (h & OFF_MASK) << 3; }
static inline uint64_t head_tag(uint64_t h) { return h >> TAG_SHIFT; }

static bool cas64(uint64_t *p, uint64_t o, uint64_t n)
{
	return AO_compare_and_swap_full((volatile AO_t *)p, (AO_t)o, (AO_t)n);
}

void ns__slab_init(ns_cache *c)
{
	uint32_t size = NS_MIN_CHUNK, k = 0;

	for (;;) {
		struct ns_class_shm *cl = &c->classes[k];
		cl->size = size;
		cl->per_page = NS_PAGE_SIZE / size;
		k++;
		if (size == NS_PAGE_SIZE || k == NS_MAX_CLASSES)
			break;
		/* x1.25 rounded down to a multiple of 8 (the ratio stays in
		 * (1, 1.25]); half a page is a class of its own so that two
		 * such items share a page; above it only one chunk fits. */
		uint32_t next = (uint32_t)((size * 5ull / 4) & ~7ull);
		if (next <= size)
			next = size + 8;
		if (size < NS_PAGE_SIZE / 2 && next > NS_PAGE_SIZE / 2)
			next = NS_PAGE_SIZE / 2;
		else if (size >= NS_PAGE_SIZE / 2)
			next = NS_PAGE_SIZE;
		size = next;
	}
	c->hdr->nclasses = k;
}

int ns__class_for(const ns_cache *c, size_t bytes)
{
	/* Binary search over at most 48 ascending sizes. */
	int lo = 0, hi = (int)c->nclasses - 1;

	if (bytes > c->classes[hi].size)
		return -1;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (c->classes[mid].size >= bytes)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

int ns__class_of(const ns_cache *c, ns_off_t off)
{
	uint64_t rel, p, in;
	uint32_t k;

	if (off < c->data_off)
		return -1;
	rel = off - c->data_off;
	p = rel / NS_PAGE_SIZE;
	if (p >= c->npages)
		return -1;
	k = ns_load_relaxed(&c->pages[p].cls);
	if (k == 0 || k > c->nclasses)
		return -1;
	in = rel % NS_PAGE_SIZE;
	/* The class table was checked at attach, but it lives in shared
	 * memory: never divide by a size somebody zeroed since. */
	uint32_t size = ns_load_relaxed(&c->classes[k - 1].size);
	if (size == 0 || in % size != 0 || in / size >= c->classes[k - 1].per_page)
		return -1;
	return (int)k - 1;
}

uint64_t ns__chunk_bit(const ns_cache *c, ns_off_t off)
{
	int cls = ns__class_of(c, off);
	uint64_t rel;

	if (cls < 0)
		return UINT64_MAX;
	rel = off - c->data_off;
	return rel / NS_PAGE_SIZE * (NS_PAGE_SIZE / NS_MIN_CHUNK) +
	       (rel % NS_PAGE_SIZE) / c->classes[cls].size;
}

void ns__shade_slow(ns_cache *c, ns_off_t off)
{
	uint64_t bit = ns__chunk_bit(c, off);

	if (bit != UINT64_MAX)
		__atomic_fetch_or(&c->audit_map[bit >> 3], (uint8_t)(1u << (bit & 7)),
				  __ATOMIC_SEQ_CST);
	/* The shade before any store that follows (a new state): the live
	 * sweep reads the state, then the shade (recover.c, sweep_snapshot). */
	cmm_smp_wmb();
}

struct ns_page_shm *ns__page_of(const ns_cache *c, ns_off_t off)
{
	uint64_t p = (off - c->data_off) / NS_PAGE_SIZE;

	return off >= c->data_off && p < c->npages ? &c->pages[p] : NULL;
}

static bool draining(const ns_cache *c, ns_off_t off)
{
	struct ns_page_shm *pg = ns__page_of(c, off);

	/* Not while MOVING: then the page's old chunks are all parked and
	 * the chunks being pushed belong to the new class, free to use (a
	 * client that parked them would strand them). */
	return pg && ns_load_acquire(&pg->drain) == NS_PG_DRAINING;
}

/* Put free chunk OFF of a draining page aside on the page's park list,
 * where nsd collects the whole page (see janitor.c). */
static void park(ns_cache *c, ns_off_t off)
{
	struct ns_page_shm *pg = ns__page_of(c, off);
	struct ns_item_shm *it = (struct ns_item_shm *)(c->base + off);
	ns_off_t h;

	ns__shade(c, off);
	NS_TR(c, off);
	ns_store_release(&it->state, (uint32_t)NS_CH_FREE);
	do {
		h = ns_load_acquire(&pg->park_head);
		ns_store_relaxed(&it->next, h);
	} while (ns_cmpxchg(&pg->park_head, h, off) != h);
}

/* Push without the draining check: nsd handing a moved page's chunks to
 * their new class. */
void ns__push_free_raw(ns_cache *c, int cls, ns_off_t off)
{
	struct ns_class_shm *cl = &c->classes[cls];
	struct ns_item_shm *it = (struct ns_item_shm *)(c->base + off);
	uint64_t h;

	ns__shade(c, off);
	NS_TR(c, off);
	ns_store_release(&it->state, (uint32_t)NS_CH_FREE);
	do {
		h = ns_load_acquire(&cl->free_head);
		ns_store_relaxed(&it->next, head_off(h));
	} while (!cas64(&cl->free_head, h, pack(off, head_tag(h) + 1)));
}

void ns__push_free(ns_cache *c, int cls, ns_off_t off)
{
	if (ns_unlikely(draining(c, off)))
		park(c, off);
	else
		ns__push_free_raw(c, cls, off);
}


/* ---- pinning a free list --------------------------------------------- */

/*
 * The janitor's sift and the live audit walk a free list while clients pop
 * and push.  A Treiber stack changes only at its head, so a chunk nobody
 * may pop freezes the list below it: its link and every link under it stay
 * as they are, and the walker may read them, or even unlink a chunk below
 * it.  cl->pin names that chunk and its pinner's slot; a popper that finds
 * the pinned chunk at the head waits until the pin moves on (the walker
 * moves it down as it goes, so the wait is rare and short).
 *
 * To pin the head, the pinner stores the pin, then bumps the head's tag by
 * CAS: a popper that read the head before the pin was visible fails its CAS
 * and reads both again; one that reads the head after sees the pin (it
 * loads the pin after the head).  From a pinned chunk the pin may move to
 * any chunk below it with a plain store: nobody can pop that one before
 * the chunks above it, and popping those needs a head that was written
 * after the move.  A pinner that died leaves its pin; a popper waiting on
 * it checks the pinner's liveness and clears it.
 */
#define PIN_OWNER_SHIFT 40
#define NS_PIN_WAIT_MS 200

static inline uint64_t pin_word(uint32_t owner, ns_off_t off)
{
	return (off >> 3) | ((uint64_t)owner << PIN_OWNER_SHIFT);
}
static inline ns_off_t pin_off(uint64_t w) { return (w & OFF_MASK) << 3; }
static inline uint32_t pin_owner(uint64_t w) { return (uint32_t)(w >> PIN_OWNER_SHIFT); }

/* Clear pin word W if its owner is gone; true if the pin is not W now.
 * Under the owner's slot lock: while we hold it nobody can claim the slot,
 * so no new pin can carry the same word while we clear the old one. */
static bool pin_clear_dead(ns_cache *c, struct ns_thr *t, int cls, uint64_t w)
{
	uint64_t *pin = &c->classes[cls].pin;
	uint32_t o = pin_owner(w);

	if (o == 0 || o - 1 >= c->nslots) {
		ns_cmpxchg(pin, w, 0ull); /* names no slot: damaged */
		return true;
	}
	if (o - 1 != t->idx &&
	    ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)(o - 1), F_WRLCK, false) == 0) {
		ns_cmpxchg(pin, w, 0ull);
		ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)(o - 1), F_UNLCK, false);
		return true;
	}
	return ns_load_acquire(pin) != w; /* alive, or being recovered */
}

void ns__pins_release(ns_cache *c, uint32_t idx)
{
	for (uint32_t k = 0; k < c->nclasses; k++) {
		uint64_t w = ns_load_acquire(&c->classes[k].pin);
		if (w != 0 && pin_owner(w) == idx + 1)
			ns_cmpxchg(&c->classes[k].pin, w, 0ull);
	}
}

int ns__pin_head(ns_cache *c, struct ns_thr *t, int cls, ns_off_t *out)
{
	struct ns_class_shm *cl = &c->classes[cls];
	uint32_t me = t->idx + 1;
	uint64_t w = ns_load_acquire(&cl->pin);

	*out = 0;
	if (w != 0 && pin_owner(w) != me && !pin_clear_dead(c, t, cls, w))
		return NS_EBUSY;
	for (int tries = 0; tries < 1000; tries++) {
		uint64_t h = ns_load_acquire(&cl->free_head), cur = ns_load_acquire(&cl->pin);
		ns_off_t off = head_off(h);
		if (cur != 0 && pin_owner(cur) != me)
			return NS_EBUSY; /* somebody else took it meanwhile */
		if (off == 0) {
			if (cur != 0)
				ns_store_release(&cl->pin, 0ull);
			return 0;
		}
		if (ns_cmpxchg(&cl->pin, cur, pin_word(me, off)) != cur)
			continue;
		cmm_smp_mb();
		if (cas64(&cl->free_head, h, pack(off, head_tag(h) + 1))) {
			*out = off;
			return 0;
		}
	}
	ns__unpin(c, t, cls);
	return NS_EBUSY;
}

void ns__pin_move(ns_cache *c, struct ns_thr *t, int cls, ns_off_t off)
{
	ns_store_release(&c->classes[cls].pin, pin_word(t->idx + 1, off));
}

void ns__unpin(ns_cache *c, struct ns_thr *t, int cls)
{
	uint64_t w = ns_load_relaxed(&c->classes[cls].pin);

	if (w != 0 && pin_owner(w) == t->idx + 1)
		ns_cmpxchg(&c->classes[cls].pin, w, 0ull);
}

/* Pin W names the head of CLS's list: wait until the pin moves.  False
 * after NS_PIN_WAIT_MS with a pinner alive but not moving (stopped): the
 * caller looks for memory elsewhere, and so does every later pop that
 * meets the same pin, at once. */
static bool pin_wait(ns_cache *c, struct ns_thr *t, int cls, uint64_t w)
{
	struct ns_class_shm *cl = &c->classes[cls];
	uint64_t t0 = 0;

	if (t->pin_gave_up == w)
		return pin_clear_dead(c, t, cls, w);
	for (unsigned i = 1;; i++) {
		if (ns_load_acquire(&cl->pin) != w)
			return true;
		if (i < 128) {
			caa_cpu_relax();
			continue;
		}
		if ((i & 31) == 0) {
			uint64_t now = ns__mono_ms();
			if (pin_clear_dead(c, t, cls, w))
				return true;
			if (t0 == 0) {
				t0 = now;
			} else if (now - t0 > NS_PIN_WAIT_MS) {
				t->pin_gave_up = w;
				return false;
			}
		}
		sched_yield();
	}
}

size_t ns__slab_sift(ns_cache *c, struct ns_thr *t, int cls)
{
	struct ns_class_shm *cl = &c->classes[cls];
	uint64_t limit = (uint64_t)ns_load_relaxed(&cl->npages) * cl->per_page + 1, n = 0;
	ns_off_t first, prev, off;
	size_t parked = 0;

	if (ns__pin_head(c, t, cls, &first) != 0 || first == 0)
		return 0;
	/* Below the pinned chunk the list holds still: unlink the chunks of
	 * draining pages and park them. */
	prev = first;
	while ((off = ns_load_relaxed(&((struct ns_item_shm *)(c->base + prev))->next)) != 0 &&
	       n++ < limit) {
		struct ns_item_shm *it = ns__item(c, off);
		if (it == NULL || ns__class_of(c, off) != cls)
			break; /* damaged: the audit's business */
		if (draining(c, off)) {
			/* Off the list, then parked: dying between the
			 * two leaks it to the audit. */
			t->slot->slab_busy = 1;
			ns_store_relaxed(&((struct ns_item_shm *)(c->base + prev))->next,
					 ns_load_relaxed(&it->next));
			NS_FAULT("sift:unlinked");
			park(c, off);
			t->slot->slab_busy = 0;
			parked++;
			continue;
		}
		prev = off;
		if ((n & 255) == 0)
			ns__pin_move(c, t, cls, prev);
	}
	ns__unpin(c, t, cls);
	/* The pinned chunk itself, if it is still at the head. */
	uint64_t h = ns_load_acquire(&cl->free_head);
	if (draining(c, first) && head_off(h) == first) {
		t->slot->slab_busy = 1;
		if (cas64(&cl->free_head, h,
			  pack(ns_load_relaxed(&((struct ns_item_shm *)(c->base + first))->next),
			       head_tag(h) + 1))) {
			park(c, first);
			parked++;
		}
		t->slot->slab_busy = 0;
	}
	return parked;
}

#define NS_POP_TRIES 64 /* CAS retries under contention before giving up */

/* Move one chunk from the class free list into T's cache. */
static int pop_free(ns_cache *c, struct ns_thr *t, int cls)
{
	struct ns_class_shm *cl = &c->classes[cls];
	struct ns_slot_shm *s = t->slot;

	for (int i = 0; i < NS_POP_TRIES; i++) {
		uint64_t h = ns_load_acquire(&cl->free_head), pw;
		ns_off_t off = head_off(h), next;
		struct ns_item_shm *it;

		if (off == 0)
			return 0;
		/* After the head: a pin made before this head is seen. */
		pw = ns_load_acquire(&cl->pin);
		if (ns_unlikely(pw != 0 && pin_off(pw) == off)) {
			if (!pin_wait(c, t, cls, pw))
				return 0;
			continue;
		}
		it = ns__item(c, off);
		if (it == NULL || ns__class_of(c, off) != cls)
			return NS_ECORRUPT;
		/* The chunk may be popped and reused by another process while
		 * we read its link; then the tag has moved and the CAS fails. */
		next = ns_load_relaxed(&it->next);
		s->slab_busy = 1;
		if (cas64(&cl->free_head, h, pack(next, head_tag(h) + 1))) {
			NS_FAULT("slab:popped");
			if (ns_unlikely(draining(c, off))) {
				park(c, off);
				s->slab_busy = 0;
				continue; /* its page is moving: not ours to use */
			}
			ns__shade(c, off);
			NS_TR(c, off);
			s->cache[cls][s->cache_n[cls]] = off;
			ns_store_relaxed(&s->cache_n[cls], (uint8_t)(s->cache_n[cls] + 1));
			s->slab_busy = 0;
			return 1;
		}
		s->slab_busy = 0;
	}
	return 0;
}

static int take_page(ns_cache *c)
{
	for (;;) {
		uint32_t n = ns_load_relaxed(&c->hdr->next_page);
		if (n >= c->npages)
			return -1;
		if (ns_cmpxchg(&c->hdr->next_page, n, n + 1) == n)
			return (int)n;
	}
}

/* Carve one chunk of class CLS into S's cache, taking a page if needed. */
static int carve(ns_cache *c, struct ns_slot_shm *s, int cls)
{
	struct ns_class_shm *cl = &c->classes[cls];

	for (int tries = 0; tries < 4; tries++) {
		uint32_t p = ns_load_acquire(&cl->cur_page);
		if (p != 0 && p <= c->npages) {
			struct ns_page_shm *pg = &c->pages[p - 1];
			if (ns_load_relaxed(&pg->carved) < cl->per_page) {
				s->slab_busy = 1;
				uint32_t i = ns_add_return(&pg->carved, 1u) - 1;
				if (i < cl->per_page) {
					ns_off_t off = c->data_off +
						(uint64_t)(p - 1) * NS_PAGE_SIZE +
						(uint64_t)i * cl->size;
					if (ns__ptr(c, off, cl->size) == NULL) {
						s->slab_busy = 0;
						return 0; /* damaged class or page table */
					}
					ns__shade(c, off);
					NS_TR(c, off);
					s->cache[cls][s->cache_n[cls]] = off;
					ns_store_relaxed(&s->cache_n[cls],
							 (uint8_t)(s->cache_n[cls] + 1));
					s->slab_busy = 0;
					return 1;
				}
				s->slab_busy = 0;
			}
		}
		/* The current page is used up: install the spare or a new one. */
		int np;
		uint32_t sp = ns_load_relaxed(&cl->spare_page);
		if (sp != 0 && ns_cmpxchg(&cl->spare_page, sp, 0u) == sp) {
			np = (int)sp - 1;
		} else {
			s->slab_busy = 1;
			np = take_page(c);
			if (np < 0) {
				s->slab_busy = 0;
				return 0;
			}
			c->pages[np].carved = 0;
			ns_store_release(&c->pages[np].cls, (uint32_t)cls + 1);
			ns_add_return(&cl->npages, 1u);
		}
		if (ns_cmpxchg(&cl->cur_page, p, (uint32_t)np + 1) != p) {
			/* Another process installed a page first; keep ours
			 * as the spare (or, if there is one, it stays assigned
			 * and uncarved: wasted space, not a lost chunk). */
			ns_cmpxchg(&cl->spare_page, 0u, (uint32_t)np + 1);
		}
		s->slab_busy = 0;
	}
	return 0;
}

static inline uint64_t rnd(struct ns_thr *t)
{
	/* xorshift64* (Marsaglia 2003, Vigna's multiplier) */
	uint64_t x = t->rng ? t->rng : (0x9e3779b97f4a7c15ull ^ (uintptr_t)t);
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	t->rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

#define NS_EVICT_SAMPLES 8    /* live items compared per eviction (Redis uses 5) */
#define NS_EVICT_PROBES 64    /* chunk probes to find them */

/* A carved chunk of class CLS picked at random: a random page of the
 * class (scanned for from a random start), a random chunk in it.  0 when
 * the page has none carved; -1 when the class has no page. */
static int64_t random_chunk(ns_cache *c, struct ns_thr *t, int cls)
{
	struct ns_class_shm *cl = &c->classes[cls];
	uint32_t used = ns_load_relaxed(&c->hdr->next_page), p = UINT32_MAX;

	if (used > c->npages)
		used = c->npages;
	if (used == 0 || ns_load_relaxed(&cl->npages) == 0)
		return -1;
	uint32_t start = (uint32_t)(rnd(t) % used);
	for (uint32_t k = 0; k < used; k++) {
		uint32_t q = (start + k) % used;
		if (ns_load_relaxed(&c->pages[q].cls) == (uint32_t)cls + 1) {
			p = q;
			break;
		}
	}
	if (p == UINT32_MAX)
		return -1;
	uint32_t carved = ns_load_relaxed(&c->pages[p].carved);
	if (carved > cl->per_page)
		carved = cl->per_page;
	if (carved == 0)
		return 0;
	return (int64_t)(c->data_off + (uint64_t)p * NS_PAGE_SIZE +
			 (rnd(t) % carved) * cl->size);
}

/*
 * Limbo: is class CLS short of chunks because they wait on retire lists,
 * rather than because live items fill it?  Eviction is the answer only to
 * the second: an evicted item is retired too, and comes back no sooner
 * than the chunks already waiting.  A sample of the class's chunks says
 * which, in the spirit of the eviction sample below: more retired than
 * live (pages being moved away left out: their chunks leave the class).
 * A full cache under churn has a few retired chunks in every sample and
 * mostly live ones, so it evicts at once as before.
 *
 * In limbo a store asks every writer to free its list at its next write
 * (hdr.reclaim_ask_ms, at most one change per millisecond whoever asks,
 * so answers cost one membarrier per writer per millisecond at most), and
 * takes what they free; it samples again at each ask and evicts as soon
 * as the class is no longer mostly retired.  Writers that do not write
 * (idle, or stopped) never answer: after NS_LIMBO_WAIT_MS with no chunk
 * the store evicts, and stores of that class skip the wait for
 * NS_LIMBO_FUTILE_MS.
 */
#define NS_LIMBO_SAMPLES 32
#define NS_LIMBO_STEP_US 100   /* how often a store in limbo looks again */
#define NS_LIMBO_ASK_US 1000   /* and samples and asks again */
#define NS_LIMBO_WAIT_MS 50
#define NS_LIMBO_FUTILE_MS 1000
unsigned ns__limbo_wait_ms = NS_LIMBO_WAIT_MS; /* tests lengthen it */

static void ask_reclaim(ns_cache *c, uint64_t now_us)
{
	uint64_t ms = now_us / 1000u, old = ns_load_relaxed(&c->hdr->reclaim_ask_ms);

	if (old < ms)
		ns_cmpxchg(&c->hdr->reclaim_ask_ms, old, ms);
}

static bool in_limbo(ns_cache *c, struct ns_thr *t, int cls)
{
	int live = 0, retired = 0;

	for (int i = 0; i < NS_LIMBO_SAMPLES; i++) {
		int64_t off = random_chunk(c, t, cls);
		if (off < 0)
			return false;
		struct ns_page_shm *pg = off > 0 ? ns__page_of(c, (ns_off_t)off) : NULL;
		if (pg == NULL || ns_load_relaxed(&pg->drain) != NS_PG_NORMAL)
			continue;
		uint32_t st = ns_load_relaxed(&((struct ns_item_shm *)(c->base + off))->state);
		live += st == NS_CH_LIVE;
		retired += st == NS_CH_RETIRED;
	}
	return retired > live;
}

int ns__evict(ns_cache *c, struct ns_thr *t, int cls)
{
	struct ns_class_shm *cl = &c->classes[cls];
	uint64_t now = ns__now_ms();
	ns_off_t best = 0;
	uint64_t best_score = UINT64_MAX;
	int found = 0;

	for (int probe = 0; probe < NS_EVICT_PROBES && found < NS_EVICT_SAMPLES; probe++) {
		int64_t r = random_chunk(c, t, cls);
		if (r < 0)
			return NS_ENOMEM;
		if (r == 0)
			continue;
		ns_off_t off = (ns_off_t)r;
		struct ns_item_shm *it = (struct ns_item_shm *)(c->base + off);
		if (ns_load_relaxed(&it->state) != NS_CH_LIVE)
			continue;
		found++;
		/* Expired or cleared items first, then the coldest. */
		uint64_t score = ns__visible(c, it, now) ? 1u + ns_load_relaxed(&it->atime) : 0;
		if (score < best_score) {
			best_score = score;
			best = off;
		}
	}
	if (best == 0)
		return NS_ENOMEM;

	/* The sample was read without a lock; confirm under the bucket lock
	 * that the chunk is still the item the index points at. */
	int err = ns__unlink_chunk(c, t, best, NS_GONE_EVICT, 0, false, now);
	if (err < 0)
		return err;
	if (err == 0)
		return NS_ENOTFOUND; /* it went away meanwhile: try again */
	if (err == 2) { /* an expired victim is counted as expired */
		ns_store_relaxed(&t->slot->evictions, t->slot->evictions + 1);
		ns_add_return(&cl->evictions, 1ull);
	}
	return 0;
}

#define NS_ALLOC_ROUNDS 32   /* reclaim/evict rounds before NS_ENOMEM */
#define NS_EVICT_PER_ROUND 4 /* evictions per round; a grace period each */
/*
 * Memory that is only waiting for a grace period is not gone.  A reader
 * that is descheduled or stopped (SIGSTOP, a debugger, a frozen cgroup)
 * inside its read section holds the reader floor back, and nothing retired
 * since can be freed (rule 4); writers that churn a few keys then retire
 * the whole segment in well under a tenth of a second, and evicting more
 * only retires more (and throws live items away for nothing).  The rounds
 * last well under a millisecond, so without a wait a 1 ms pause of any
 * reader failed every store with NS_ENOMEM.  As for a bucket lock held by a
 * live owner (NS_LOCK_TIMEOUT_MS), we wait for the reader instead, bounded
 * (rule 7): when some reader's epoch is what keeps retired chunks from
 * being freed, wait until it moves on (a dead blocker is recovered at
 * once) and reclaim before evicting; and when the rounds are spent, keep
 * waiting and reclaiming without evicting.  All of it within one budget of
 * NS_ALLOC_WAIT_MS per allocation: only a reader paused longer than that
 * costs a NS_ENOMEM.
 */
#define NS_ALLOC_WAIT_MS 500
#define NS_ALLOC_WAIT_STEP_US 500

/* Wait while the oldest reader keeps retired chunks from being freed:
 * true when it has moved on (or was dead and is recovered), so that a
 * reclaim can free now; false when no reader holds retired memory back, or
 * the time is up.  Polls the reader's epoch word: no membarrier while it
 * stays where it is. */
static bool wait_grace(ns_cache *c, struct ns_thr *t, uint64_t *deadline)
{
	uint64_t e = 0;
	int b = ns__grace_blocker(c, t, &e);
	uint64_t now = ns__mono_us();

	if (b < 0)
		return false;
	if (*deadline == 0)
		*deadline = now + NS_ALLOC_WAIT_MS * 1000ull;
	/* A reader that runs leaves within microseconds: yield first. */
	for (int i = 0; i < 16; i++) {
		if (ns_load_acquire(&c->slots[b].epoch) != e)
			return true;
		sched_yield();
	}
	for (; now < *deadline; now = ns__mono_us()) {
		if (ns__slot_alive(c, t->fd, (uint32_t)b) == 0) {
			ns__recover_slot(c, t, (uint32_t)b); /* its reads are over */
			return true;
		}
		usleep(NS_ALLOC_WAIT_STEP_US);
		if (ns_load_acquire(&c->slots[b].epoch) != e)
			return true;
	}
	return false;
}

/*
 * A dead client's retired chunks, and those of its chunk cache, come back
 * only when its slot is recovered: by nsd, which may be down, or by a
 * process that claims the slot.  Before evicting live items for memory that
 * is only held there, recover such slots ourselves (the torture lost
 * counters to evictions while nsd was being restarted).  Only for the
 * out-of-memory path: one F_OFD_GETLK per slot that holds something.
 * Returns how many slots were recovered.
 */
static int recover_holders(ns_cache *c, struct ns_thr *t, int cls)
{
	int n = 0;

	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *o = &c->slots[i];

		if (i == t->idx || ns_load_relaxed(&o->state) == NS_SLOT_FREE ||
		    (ns_load_relaxed(&o->retire_count) == 0 &&
		     ns_load_relaxed(&o->cache_n[cls]) == 0))
			continue;
		if (ns__slot_alive(c, t->fd, i) == 0 && ns__recover_slot(c, t, i) > 0)
			n++;
	}
	return n;
}

/* Take a chunk of CLS from S's cache into the intent (phase BUILT).
 * 1 taken; 0 the cache is empty; -1 a chunk of a draining page was
 * parked instead (look again). */
static int take_cached(ns_cache *c, struct ns_slot_shm *s, int cls, ns_off_t *out)
{
	int n = s->cache_n[cls];
	ns_off_t off;

	if (n == 0)
		return 0;
	off = s->cache[cls][n - 1];
	if (ns_unlikely(draining(c, off))) {
		/* Cached before its page began to move. */
		s->slab_busy = 1;
		ns_store_relaxed(&s->cache_n[cls], (uint8_t)(n - 1));
		park(c, off);
		s->slab_busy = 0;
		return -1;
	}
	/* Record the intent first, then leave the cache: dying in between
	 * leaves it in both, and recovery counts it once. */
	ns__shade(c, off);
	NS_TR(c, off);
	ns_store_relaxed(&s->in_new, off);
	ns_store_relaxed(&s->in_phase, (uint32_t)NS_PH_BUILT);
	ns_store_relaxed(&s->cache_n[cls], (uint8_t)(n - 1));
	NS_FAULT("alloc:taken");
	*out = off;
	return 1;
}

int ns__alloc_free(ns_cache *c, struct ns_thr *t, int cls, ns_off_t *out)
{
	for (int round = 0; round < NS_SLOT_CACHE + 2; round++) {
		int r = take_cached(c, t->slot, cls, out);
		if (r > 0)
			return 0;
		if (r < 0)
			continue;
		r = pop_free(c, t, cls);
		if (r < 0)
			return r;
		if (r == 0 && !carve(c, t->slot, cls))
			return NS_ENOMEM;
	}
	return NS_ENOMEM;
}

int ns__alloc(ns_cache *c, struct ns_thr *t, int cls, ns_off_t *out)
{
	struct ns_slot_shm *s = t->slot;
	uint64_t deadline = 0, next_ask = 0, limbo_end = 0;
	bool waiting = false, recovered = false, limbo = false, sampled = false;

	/* While WAITING, a chunk found (on the free list, or freed by a
	 * reclaim) goes on to the cache and out whatever the round. */
	for (int round = 0; round <= NS_ALLOC_ROUNDS || waiting; round++) {
		int taken = take_cached(c, s, cls, out);
		if (taken > 0)
			return 0;
		if (taken < 0) {
			round--;
			continue;
		}
		int r = pop_free(c, t, cls);
		if (r < 0)
			return r;
		if (r > 0 || carve(c, s, cls))
			continue;
		if (s->retire_count && ns__reclaim(c, t) > 0)
			continue;
		if (waiting) {
			/* Freed chunks of other owners reach the free list
			 * once they run again: look again each step. */
			if (!wait_grace(c, t, &deadline))
				waiting = false; /* then one last full round */
			round--;
			continue;
		}
		/* Retired chunks held back by a reader: wait for it before
		 * evicting live items, which would only be retired too. */
		if (wait_grace(c, t, &deadline) && s->retire_count &&
		    ns__reclaim(c, t) > 0)
			continue;
		/* Chunks held by dead clients: take them back first, once. */
		if (!recovered) {
			recovered = true;
			if (recover_holders(c, t, cls) > 0) {
				round--;
				continue;
			}
		}
		/* The class's chunks wait on retire lists: ask every writer to
		 * reclaim (ops.c, maybe_reclaim) and take what they free, for
		 * what is left of the budget, before evicting anything. */
		if (!sampled) {
			uint64_t now = ns__mono_us();
			sampled = true;
			limbo = now / 1000u >= ns_load_relaxed(&c->classes[cls].limbo_until_ms) &&
				in_limbo(c, t, cls);
			if (limbo) {
				if (deadline == 0)
					deadline = now + NS_ALLOC_WAIT_MS * 1000ull;
				limbo_end = now + ns__limbo_wait_ms * 1000ull;
				if (limbo_end > deadline)
					limbo_end = deadline;
			}
		}
		if (limbo) {
			uint64_t now = ns__mono_us();
			if (now >= next_ask) {
				/* Still mostly retired?  Others may have taken
				 * what was freed: then evict. */
				if (next_ask != 0 && !in_limbo(c, t, cls))
					limbo = false;
				else
					ask_reclaim(c, now);
				next_ask = now + NS_LIMBO_ASK_US;
			}
			if (limbo && now < limbo_end) {
				usleep(NS_LIMBO_STEP_US);
				round--;
				continue;
			}
			if (limbo) /* nobody answered: don't wait here for a while */
				ns_store_relaxed(&c->classes[cls].limbo_until_ms,
						 now / 1000u + NS_LIMBO_FUTILE_MS);
			limbo = false;
		}
		/* Out of memory: evict a few of this class, then reclaim. */
		int evicted = 0;
		for (int i = 0; i < NS_EVICT_PER_ROUND; i++) {
			int e = ns__evict(c, t, cls);
			if (e == 0)
				evicted++;
			else if (e == NS_ENOMEM || e == NS_EBUSY || e == NS_ECORRUPT)
				break;
		}
		if (s->retire_count)
			ns__reclaim(c, t);
		if (evicted == 0 && ns_load_relaxed(&c->classes[cls].npages) == 0) {
			/* No page, no item of this class: nothing to evict.
			 * Counted, so that nsd moves a page here. */
			ns_add_return(&c->classes[cls].enomem, 1ull);
			return NS_ENOMEM;
		}
		if (s->cache_n[cls] == 0)
			sched_yield(); /* readers inside a grace period, or lost races */
		if (round == NS_ALLOC_ROUNDS && deadline == 0 && s->cache_n[cls] == 0 &&
		    wait_grace(c, t, &deadline)) {
			waiting = true;
			round--;
		}
	}
	ns_add_return(&c->classes[cls].enomem, 1ull);
	return NS_ENOMEM;
}

void ns__free(ns_cache *c, struct ns_thr *t, ns_off_t off)
{
	struct ns_slot_shm *s = t->slot;
	int cls = ns__class_of(c, off);

	if (cls < 0)
		return; /* not a chunk: never ours to free */
	if (s->cache_n[cls] < NS_SLOT_CACHE && !draining(c, off)) {
		ns__shade(c, off);
		NS_TR(c, off);
		s->cache[cls][s->cache_n[cls]] = off;
		ns_store_relaxed(&s->cache_n[cls], (uint8_t)(s->cache_n[cls] + 1));
		/* A cached chunk reads as FREE (see free_before): not as
		 * an eviction candidate, nor as retired to a live audit. */
		ns_store_relaxed(&((struct ns_item_shm *)(c->base + off))->state,
				 (uint32_t)NS_CH_FREE);
		return;
	}
	s->slab_busy = 1;
	ns__push_free(c, cls, off);
	s->slab_busy = 0;
}
