/*
 * janitor.c - the background work of nsd, as library calls (rule 7: bulk
 * work belongs to the janitor; clients only ever do bounded work).
 *
 * Active expiry.  Lazy expiry makes an expired item a miss, but its memory
 * comes back only when somebody overwrites it, evicts it, or - here - the
 * janitor finds it.  The cycle is Redis's adaptive one (activeExpireCycle
 * in Redis's expire.c: sample, and repeat at once while a good share of the
 * sample was expired, within a CPU budget), applied to the index instead of
 * a hash table of volatile keys: a hand walks the primary buckets in order,
 * a step looks at a fixed number of chains, and every item that no longer
 * reads as present (expired, or left behind by ns_space_clear) is unlinked
 * with the ordinary delete protocol and retired.  The sample counts only
 * items that can die (those with a TTL, and cleared ones), as Redis samples
 * only keys with a TTL, so that many items without one do not hide a mass
 * expiry.  A step whose sample was more than NS_EXPIRE_AGAIN_PCT% dead is
 * followed by another at once; the
 * cycle ends when a step finds little, or when its time budget is spent.
 * An idle cache thus costs one step per tick, and a mass expiry is worked
 * through as fast as the budget allows.
 *
 * Page rebalancing moves slab pages to the classes that need them; see the
 * section below.
 *
 * The janitor's lock and heartbeat.  One nsd per segment: it holds an
 * exclusive OFD lock on byte NS_LOCK_JANITOR of the segment file (released
 * by the kernel when it dies, so a killed nsd never blocks the next one) and
 * writes its pid and, every tick, the time into the header, so that clients
 * and nsctl can tell whether a janitor is alive.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#define NS_TR_FILE 2
#include "ns_internal.h"

#define NS_EXPIRE_STEP_BUCKETS 256 /* chains looked at per step */
#define NS_EXPIRE_AGAIN_PCT 10     /* dead share of a sample that calls for another step */
#define NS_EXPIRE_BATCH 64         /* dead items remembered per chain walk */


int ns__expire_step(ns_cache *c, struct ns_thr *t, uint64_t nbuckets,
		    struct ns_expire_stats *st)
{
	uint64_t nb = c->mask + 1;
	uint64_t start = ns_add_return(&c->hdr->expire_hand, nbuckets) - nbuckets;
	uint64_t now = ns__now_ms();
	int err = 0;

	for (uint64_t k = 0; k < nbuckets; k++) {
		uint64_t b = (start + k) & (nb - 1);
		struct ns_bucket_shm *bk = &c->buckets[b];
		ns_off_t dead[NS_EXPIRE_BATCH];
		int ndead = 0;

		/* Look without the lock; confirm each under it. */
		ns__read_enter(c, t->slot);
		for (int depth = 0; bk && depth <= NS_CHAIN_MAX; depth++) {
			for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
				uint64_t w = ns_load_acquire(&bk->slot[i]);
				ns_off_t off = w & NS_SLOT_OFF_MASK;
				struct ns_item_shm *it = ns__item(c, off);
				if (w == 0 || it == NULL)
					continue;
				bool vis = ns__visible(c, it, now);
				/* Like Redis, the sample is of items that can
				 * die: those with a TTL (and the cleared). */
				if (!vis || ns_load_relaxed(&it->expire_ms) != 0)
					st->sampled++;
				if (!vis && ndead < NS_EXPIRE_BATCH)
					dead[ndead++] = off;
			}
			bk = ns__chain_next(c, bk, &err);
		}
		ns__read_exit(t->slot);
		st->buckets++;
		for (int i = 0; i < ndead; i++) {
			int r = ns__unlink_chunk(c, t, dead[i], NS_GONE_EXPIRE, 0, true, now);
			if (r < 0)
				return r;
			st->expired += (uint64_t)r;
		}
		if (ndead && t->slot->retire_count >= 256)
			ns__reclaim(c, t);
	}
	return 0;
}

int ns__expire_cycle(ns_cache *c, struct ns_thr *t, uint64_t budget_us,
		     struct ns_expire_stats *st)
{
	uint64_t t0 = ns__mono_us();
	uint64_t nb = c->mask + 1;
	uint64_t step = nb < NS_EXPIRE_STEP_BUCKETS ? nb : NS_EXPIRE_STEP_BUCKETS;
	uint64_t before = st->expired;
	int err;

	for (;;) {
		uint64_t sampled = st->sampled, expired = st->expired;

		err = ns__expire_step(c, t, step, st);
		if (err)
			break;
		sampled = st->sampled - sampled;
		expired = st->expired - expired;
		/* Little dead in this sample: the rest waits for the next
		 * tick.  Many: go on while the budget lasts. */
		if (expired * 100 <= sampled * NS_EXPIRE_AGAIN_PCT ||
		    ns__mono_us() - t0 >= budget_us)
			break;
	}
	ns_add_return(&c->hdr->expired, st->expired - before);
	st->us += ns__mono_us() - t0;
	return err;
}

int ns__janitor_lock(ns_cache *c, int *pid)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = NS_LOCK_JANITOR,
		.l_len = 1,
	};

	if (c->rdonly)
		return NS_ERDONLY;
	if (fcntl(c->fd, F_OFD_SETLK, &fl) == 0) {
		ns_store_relaxed(&c->hdr->janitor_pid, (int32_t)getpid());
		ns__janitor_beat(c);
		return 0;
	}
	if (errno != EAGAIN && errno != EACCES)
		return ns__errno(errno);
	if (pid)
		*pid = ns_load_relaxed(&c->hdr->janitor_pid);
	return NS_EBUSY;
}

void ns__janitor_beat(ns_cache *c)
{
	ns_store_relaxed(&c->hdr->janitor_beat_ms, ns__now_ms());
}

int ns__janitor_alive(ns_cache *c)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = NS_LOCK_JANITOR,
		.l_len = 1,
	};

	if (fcntl(c->fd, F_OFD_GETLK, &fl) < 0)
		return ns__errno(errno);
	return fl.l_type != F_UNLCK;
}

/* ---- page rebalancing --------------------------------------------------- */

/*
 * When the mix of value sizes shifts, the classes of the new sizes have no
 * pages while the old ones hold the whole segment: without moving pages,
 * stores of the new size could only evict each other, or fail with
 * NS_ENOMEM.  memcached moves whole slab pages between classes (its
 * slab_reassign and slab_automove); so does nsd, one page at a time:
 *
 *   1. mark the page DRAINING: from now on a free chunk of it is parked on
 *      the page's own list instead of being reused (ns__push_free, pop and
 *      the slot caches check the mark), and sift the class's free list once
 *      to park what was already free;
 *   2. every step, move the page's live items to free chunks of their
 *      class (a copy published like a set: same key, value and version),
 *      or, where the class has no free chunk, evict them with the delete
 *      protocol; reclaim the old chunks after their grace period, so that
 *      readers that still look at one are never disturbed: a chunk is
 *      parked only once freed;
 *   3. when all of the page's chunks are parked, nobody but nsd can refer
 *      to any of them: mark it MOVING, give it to the new class, and push
 *      its new chunks onto that class's free list.
 *
 * A page that does not empty within NS_MOVE_TIMEOUT_MS (a chunk sits in an
 * idle client's cache or retire list) is given back: the mark is cleared
 * and its parked chunks return to their free list.  A killed nsd leaves a
 * DRAINING page, which the next one gives back, or a MOVING one, which it
 * finishes: from the park list if the page had not changed class yet, or
 * from the page's carved counter, the cursor of the pushes, if it had (the
 * one chunk in flight may be lost to the audit; a page's worth was, when
 * the rest of the pushes were left to it).
 */
#define NS_MOVE_TIMEOUT_MS 10000
#define NS_MOVE_CANDIDATES 8 /* pages compared when choosing one to move */

static uint64_t park_count(ns_cache *c, struct ns_page_shm *pg, uint64_t max)
{
	ns_off_t off = ns_load_acquire(&pg->park_head);
	uint64_t n = 0;

	/* Only nsd takes chunks off a park list; others push at the head, so
	 * the list below a head we read stays as it is. */
	while (off && n <= max && ns__page_of(c, off) == pg) {
		n++;
		off = ((struct ns_item_shm *)(c->base + off))->next;
	}
	return n;
}

static ns_off_t page_base(ns_cache *c, uint32_t p)
{
	return c->data_off + (uint64_t)p * NS_PAGE_SIZE;
}

/* Hand every parked chunk of page P back to its class's free list, one at
 * a time: only the janitor takes chunks off a park list (parkers only push
 * on it), so a pop cannot meet ABA, and a janitor killed here loses at most
 * the one chunk between the two lists (its slab_busy calls the audit).
 * Taking the whole list at once lost all of it, half a page, to a kill. */
static void unpark_all(ns_cache *c, uint32_t p)
{
	struct ns_page_shm *pg = &c->pages[p];
	int err = 0;
	struct ns_thr *t = ns__thr(c, &err);
	ns_off_t off;

	while ((off = ns_load_acquire(&pg->park_head)) != 0) {
		int cls = ns__class_of(c, off);
		if (cls < 0 || ns__page_of(c, off) != pg) {
			/* Not a chunk of this page: drop the list, the
			 * audit finds what it held. */
			ns_store_relaxed(&pg->park_head, 0ull);
			ns_add_return(&c->hdr->audit_wanted, 1u);
			break;
		}
		ns_off_t next = ns_load_relaxed(&((struct ns_item_shm *)(c->base + off))->next);
		if (t)
			t->slot->slab_busy = 1;
		if (ns_cmpxchg(&pg->park_head, off, next) == off) {
			NS_TR(c, off);
			NS_FAULT("move:unparking");
			ns__push_free(c, cls, off);
		}
		if (t)
			t->slot->slab_busy = 0;
	}
}

/* A client that saw a page draining just before the move was given up
 * parks its chunk after the abort's unpark_all: on a page nobody moves,
 * where nothing would use it until the page moved again or the next nsd
 * started.  Each look of the rebalancer gives such chunks back. */
static void unpark_late(ns_cache *c)
{
	uint32_t used = ns_load_relaxed(&c->hdr->next_page);

	if (used > c->npages)
		used = c->npages;
	for (uint32_t p = 0; p < used; p++)
		if (ns_load_acquire(&c->pages[p].drain) == NS_PG_NORMAL &&
		    ns_load_relaxed(&c->pages[p].park_head) != 0)
			unpark_all(c, p);
}

/* Whether a client's chunk cache holds a chunk of page P (class CLS).  A
 * cached chunk can only go back through its owner, and an idle owner may
 * keep it for ever: such pages are not chosen.  SKIP: our own slot, whose
 * cache we empty ourselves. */
static bool page_cached(ns_cache *c, uint32_t p, int cls, uint32_t skip)
{
	ns_off_t lo = page_base(c, p), hi = lo + NS_PAGE_SIZE;

	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ns_slot_shm *s = &c->slots[i];
		uint8_t n = ns_load_relaxed(&s->cache_n[cls]);
		if (i == skip || ns_load_relaxed(&s->state) == NS_SLOT_FREE)
			continue;
		for (uint8_t k = 0; k < n && k < NS_SLOT_CACHE; k++) {
			ns_off_t off = ns_load_relaxed(&s->cache[cls][k]);
			if (off >= lo && off < hi)
				return true;
		}
	}
	return false;
}

/* Park the chunks of draining pages that sit in our own cache. */
static void flush_own_cache(ns_cache *c, struct ns_thr *t, int cls)
{
	struct ns_slot_shm *s = t->slot;

	for (int k = (int)s->cache_n[cls] - 1; k >= 0; k--) {
		ns_off_t off = s->cache[cls][k];
		struct ns_page_shm *pg = ns__page_of(c, off);
		if (pg == NULL || ns_load_relaxed(&pg->drain) != NS_PG_DRAINING)
			continue;
		/* Out of the cache first (the last entry moves into the
		 * hole), then onto the park list: dying in between loses
		 * the chunk to the audit, never puts it in two places. */
		s->slab_busy = 1;
		/* The last entry changes place: shaded for a live audit, and
		 * out of the count before it fills the hole (in both places,
		 * recovery would push it twice; this way a kill leaks it). */
		ns_off_t last = s->cache[cls][s->cache_n[cls] - 1];
		ns__shade(c, last);
		ns_store_relaxed(&s->cache_n[cls], (uint8_t)(s->cache_n[cls] - 1));
		s->cache[cls][k] = last;
		NS_TR(c, off);
		ns__push_free(c, cls, off); /* parks it: the page is draining */
		s->slab_busy = 0;
	}
}

int ns__page_move_start(ns_cache *c, struct ns_thr *t, uint32_t p, int to)
{
	struct ns_page_shm *pg;
	int from;

	if (p >= c->npages || to < 0 || (uint32_t)to >= c->nclasses)
		return NS_EINVAL;
	pg = &c->pages[p];
	from = (int)ns_load_relaxed(&pg->cls) - 1;
	if (from < 0 || from == to || ns_load_relaxed(&pg->drain) != NS_PG_NORMAL ||
	    ns_load_relaxed(&pg->carved) < c->classes[from].per_page ||
	    ns_load_relaxed(&c->classes[from].cur_page) == p + 1 ||
	    ns_load_relaxed(&c->classes[from].spare_page) == p + 1)
		return NS_EINVAL; /* not a whole page of another class at rest */
	if (page_cached(c, p, from, t->idx))
		return NS_EBUSY;
	ns_store_relaxed(&pg->move_to, (uint32_t)to + 1);
	ns_store_release(&pg->drain, (uint32_t)NS_PG_DRAINING);
	flush_own_cache(c, t, from);
	/* Free chunks already on the list would otherwise wait there. */
	ns__slab_sift(c, t, from);
	return 0;
}

/* Page PG is no longer draining or moving: clients free into its class
 * again.  NORMAL first: a MOVING page always names its class in move_to. */
static void stop_draining(struct ns_page_shm *pg)
{
	ns_store_release(&pg->drain, (uint32_t)NS_PG_NORMAL);
	ns_store_relaxed(&pg->move_to, 0u);
}

void ns__page_move_abort(ns_cache *c, uint32_t p)
{
	stop_draining(&c->pages[p]);
	unpark_all(c, p);
}

/* Hand the chunks of moved page P to its (new) class's free list, from its
 * carved counter on: the counter is the cursor of the hand-over, so a
 * janitor killed halfway is continued by the next one (ns__pages_resume). */
static void move_push(ns_cache *c, uint32_t p)
{
	struct ns_page_shm *pg = &c->pages[p];
	int to = (int)pg->cls - 1;
	struct ns_class_shm *cl = &c->classes[to];

	for (uint32_t k = pg->carved; k < cl->per_page; k++) {
		/* Counted before pushed: dying between the two loses this
		 * one chunk to the audit, and never pushes it twice. */
		ns_store_release(&pg->carved, k + 1);
		if (k == cl->per_page / 2)
			NS_FAULT("move:pushing");
		ns__push_free_raw(c, to, page_base(c, p) + (uint64_t)k * cl->size);
	}
	stop_draining(pg);
}

/* All chunks of P are parked: give the page to its new class.  The store of
 * cls is the commit point: before it, a resume starts the move over from
 * the park list; after it, the resume goes on pushing from the cursor. */
static void move_finish(ns_cache *c, uint32_t p)
{
	struct ns_page_shm *pg = &c->pages[p];
	int from = (int)pg->cls - 1, to = (int)pg->move_to - 1;

	ns_store_release(&pg->drain, (uint32_t)NS_PG_MOVING);
	NS_FAULT("move:moving");
	ns_store_relaxed(&pg->carved, 0u);
	ns_store_release(&pg->cls, (uint32_t)to + 1);
	ns_store_relaxed(&pg->park_head, 0ull);
	ns_add_return(&c->classes[from].npages, (uint32_t)-1);
	ns_add_return(&c->classes[to].npages, 1u);
	move_push(c, p);
}

/* One step of moving page P; MAY_EVICT false: NS_ENOMEM rather than
 * evict an item no free chunk of its class can take. */
static int move_step(ns_cache *c, struct ns_thr *t, uint32_t p, bool may_evict)
{
	struct ns_page_shm *pg = &c->pages[p];
	int from = (int)ns_load_relaxed(&pg->cls) - 1;
	struct ns_class_shm *cl;
	int err;

	if (from < 0 || ns_load_relaxed(&pg->drain) != NS_PG_DRAINING)
		return NS_EINVAL;
	cl = &c->classes[from];
	/* Evict what lives in the page; confirm each under its lock. */
	for (uint32_t k = 0; k < cl->per_page; k++) {
		ns_off_t off = page_base(c, p) + (uint64_t)k * cl->size;
		struct ns_item_shm *it = (struct ns_item_shm *)(c->base + off);

		if (ns_load_relaxed(&it->state) != NS_CH_LIVE)
			continue;
		/* Rescued into a free chunk of the class if there is one;
		 * evicted only if not. */
		err = ns__relocate_chunk(c, t, off);
		if (err > 0)
			ns_add_return(&cl->rescues, 1ull);
		if (err >= 0) {
			if (t->slot->retire_count >= 256)
				ns__reclaim(c, t);
			continue;
		}
		if (err != NS_ENOMEM || !may_evict)
			return err;
		err = ns__unlink_chunk(c, t, off, NS_GONE_EVICT, 0, false, 0);
		if (err < 0)
			return err;
		if (err == 0)
			continue; /* being built, or just replaced */
		if (err == 2) {
			/* The cause first: readers load it first (inspect.c),
			 * so the total is never below it. */
			ns_add_return(&cl->move_evictions, 1ull);
			ns_add_return(&cl->evictions, 1ull);
		}
		if (t->slot->retire_count >= 256)
			ns__reclaim(c, t);
	}
	ns__reclaim(c, t);
	/* Whatever was pushed on the free list or into our cache by a client
	 * that looked at the page before it was marked. */
	flush_own_cache(c, t, from);
	ns__slab_sift(c, t, from);
	uint64_t parked = park_count(c, pg, cl->per_page);
	if (parked > cl->per_page) {
		/* More than the page holds: a chunk parked twice, or a
		 * cycle (a damaged list).  Moving now would give away a
		 * chunk still in use, and giving the list back would push
		 * one twice: drop it, and let the audit find its chunks. */
		stop_draining(pg);
		ns_store_release(&pg->park_head, 0ull);
		ns_add_return(&c->hdr->audit_wanted, 1u);
		return NS_ECORRUPT;
	}
	if (parked < cl->per_page)
		return 0;
	move_finish(c, p);
	return 1;
}

int ns__page_move_step(ns_cache *c, struct ns_thr *t, uint32_t p)
{
	return move_step(c, t, p, true);
}

void ns__pages_resume(ns_cache *c)
{
	for (uint32_t p = 0; p < c->npages; p++) {
		struct ns_page_shm *pg = &c->pages[p];
		uint32_t d = ns_load_acquire(&pg->drain);

		if (d == NS_PG_MOVING) {
			uint32_t to = pg->move_to, cls = pg->cls;
			if (to != 0 && cls != to && cls != 0 && cls <= c->nclasses &&
			    park_count(c, pg, NS_PAGE_SIZE) >= c->classes[cls - 1].per_page) {
				move_finish(c, p); /* killed before the commit */
			} else if (to != 0 && cls == to && to <= c->nclasses) {
				/* Killed while pushing: go on from the cursor.
				 * The chunk it names may not have been pushed;
				 * the audit finds it if not. */
				ns_store_relaxed(&pg->park_head, 0ull);
				if (pg->carved != 0)
					ns_add_return(&c->hdr->audit_wanted, 1u);
				move_push(c, p);
			} else {
				/* Not a state a move leaves (a damaged
				 * record): the audit finds what is lost. */
				stop_draining(pg);
				ns_add_return(&c->hdr->audit_wanted, 1u);
			}
		} else if (d == NS_PG_DRAINING) {
			ns__page_move_abort(c, p);
		} else if (ns_load_relaxed(&pg->park_head) != 0) {
			unpark_all(c, p); /* a late parker after an abort */
		}
	}
}

/* ---- when to move a page ---- */

/* Evictions by stores: a page move's own evictions are not pressure on
 * the class it takes the page from. */
static uint64_t store_evictions(ns_cache *c, int k)
{
	uint64_t mv = ns_load_acquire(&c->classes[k].move_evictions);
	uint64_t ev = ns_load_acquire(&c->classes[k].evictions);

	return ev > mv ? ev - mv : 0;
}

static uint64_t need_score(const struct ns_rebalance *rb, ns_cache *c, int k)
{
	uint64_t now_ev = store_evictions(c, k);
	uint64_t ev = now_ev > rb->evictions[k] ? now_ev - rb->evictions[k] : 0;
	uint64_t nm = ns_load_relaxed(&c->classes[k].enomem) - rb->enomem[k];

	/* A failed store weighs more than an eviction. */
	return nm * 64 + ev;
}

/* The page of class FROM with the fewest live items among a few. */
static int pick_page(ns_cache *c, struct ns_thr *t, int from)
{
	struct ns_class_shm *cl = &c->classes[from];
	uint32_t used = ns_load_relaxed(&c->hdr->next_page), best = UINT32_MAX;
	uint64_t best_live = UINT64_MAX;
	int seen = 0;

	if (used > c->npages)
		used = c->npages;
	for (uint32_t i = 0, p = (uint32_t)(t->rng++ % (used ? used : 1));
	     i < used && seen < NS_MOVE_CANDIDATES; i++, p = (p + 1) % used) {
		struct ns_page_shm *pg = &c->pages[p];
		uint64_t live = 0;

		if (ns_load_relaxed(&pg->cls) != (uint32_t)from + 1 ||
		    ns_load_relaxed(&pg->drain) != NS_PG_NORMAL ||
		    ns_load_relaxed(&pg->carved) < cl->per_page ||
		    ns_load_relaxed(&cl->cur_page) == p + 1 ||
		    ns_load_relaxed(&cl->spare_page) == p + 1 ||
		    page_cached(c, p, from, t->idx))
			continue;
		seen++;
		for (uint32_t k = 0; k < cl->per_page; k++) {
			struct ns_item_shm *it = (struct ns_item_shm *)
				(c->base + page_base(c, p) + (uint64_t)k * cl->size);
			live += ns_load_relaxed(&it->state) == NS_CH_LIVE;
		}
		if (live < best_live) {
			best_live = live;
			best = p;
		}
	}
	return best == UINT32_MAX ? -1 : (int)best;
}

/* Start moving a page of FROM (the one with the fewest live items among a
 * few) to TO, and remember it in RB.  Returns 0 either way. */
static int start_move(ns_cache *c, struct ns_thr *t, struct ns_rebalance *rb,
		      int from, int to, uint64_t now)
{
	int p = pick_page(c, t, from);

	if (p < 0 || ns__page_move_start(c, t, (uint32_t)p, to) != 0)
		return 0;
	rb->page = p;
	rb->from = from;
	rb->to = to;
	rb->started_ms = now;
	return 0;
}

/*
 * The exercise (nsd --rebalance-exercise, for the torture): a page from a
 * random class with two or more to another random class in use at every
 * look,
 * whether or not any class is short, so that page moves, and kills in the
 * middle of them, happen in a cache that never runs out of memory.  Its
 * items are rescued into free chunks of their class; a move that would
 * have to evict one gives up instead, and there is no exercise once the
 * pages are all handed out (a class it took from gets a fresh page rather
 * than evict): the torture checks that nothing is evicted.
 */
static int exercise_start(ns_cache *c, struct ns_thr *t, struct ns_rebalance *rb,
			  uint64_t now)
{
	uint64_t r = (ns__mono_us() + rb->moved + rb->aborted) * 0x9e3779b97f4a7c15ull;
	uint32_t n = c->nclasses;
	int from = -1, to;

	if (n < 2)
		return 0;
	for (uint32_t i = 0; i < n && from < 0; i++) {
		uint32_t k = (uint32_t)((r >> 32) + i) % n;
		if (ns_load_relaxed(&c->classes[k].npages) >= 2)
			from = (int)k;
	}
	if (from < 0)
		return 0;
	/* To a class in use: one that never had a page has no items to
	 * place in it. */
	to = -1;
	for (uint32_t i = 0; i < n && to < 0; i++) {
		uint32_t k = (uint32_t)((uint32_t)r + i) % n;
		if ((int)k != from && ns_load_relaxed(&c->classes[k].npages) >= 1)
			to = (int)k;
	}
	if (to < 0)
		return 0;
	return start_move(c, t, rb, from, to, now);
}

int ns__rebalance(ns_cache *c, struct ns_thr *t, struct ns_rebalance *rb)
{
	uint64_t now = ns__now_ms();

	if (rb->page >= 0) {
		int r = move_step(c, t, (uint32_t)rb->page, !rb->exercise);

		if (r == 1) {
			rb->moved++;
			rb->last_from = rb->from;
			rb->last_to = rb->to;
			rb->page = -1;
			return 1;
		}
		if (r < 0 || now - rb->started_ms > NS_MOVE_TIMEOUT_MS) {
			ns__page_move_abort(c, (uint32_t)rb->page);
			rb->aborted++;
			rb->page = -1;
			/* An exercise move gives up rather than evict. */
			return r < 0 && !(rb->exercise && r == NS_ENOMEM) ? r : 2;
		}
		return 0;
	}
	if (now - rb->last_ms < rb->interval_ms)
		return 0;
	unpark_late(c);

	/* Only while pages are left to hand out: a class the exercise took
	 * a page from gets a fresh one rather than evict. */
	if (rb->exercise && ns_load_relaxed(&c->hdr->next_page) + 2 <= c->npages) {
		rb->last_ms = now;
		return exercise_start(c, t, rb, now);
	}

	/* The neediest class, and the least needy one that has pages. */
	int to = -1, from = -1;
	uint64_t to_score = 0, from_score = UINT64_MAX;
	for (uint32_t k = 0; k < c->nclasses; k++) {
		uint64_t sc = need_score(rb, c, (int)k);
		if (sc > to_score) {
			to_score = sc;
			to = (int)k;
		}
	}
	for (uint32_t k = 0; to >= 0 && k < c->nclasses; k++) {
		uint64_t sc = need_score(rb, c, (int)k);
		if ((int)k == to || ns_load_relaxed(&c->classes[k].npages) < 2)
			continue;
		if (sc < from_score || (sc == from_score &&
		    c->classes[k].npages > c->classes[from].npages)) {
			from_score = sc;
			from = (int)k;
		}
	}
	for (uint32_t k = 0; k < c->nclasses; k++) {
		rb->evictions[k] = store_evictions(c, (int)k);
		rb->enomem[k] = ns_load_relaxed(&c->classes[k].enomem);
	}
	rb->last_ms = now;
	/* Move only towards a class clearly needier than the donor, and only
	 * when memory is all taken (a free page would be used first). */
	if (to < 0 || from < 0 || from_score * 4 >= to_score ||
	    ns_load_relaxed(&c->hdr->next_page) < c->npages)
		return 0;
	return start_move(c, t, rb, from, to, now);
}
