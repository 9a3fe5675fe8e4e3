/*
 * ops.c - the key/value operations.
 *
 * Reads (ns_get and its relatives) take no lock and write no shared line
 * (rule 3): they publish the global epoch in the caller's own slot, walk
 * one bucket line (rarely a chain), compare one key, copy what they need,
 * and clear the slot's epoch.  Counters go to the caller's slot; the
 * access-time hint of an item is written only when it is stale by a second.
 *
 * Writes follow one protocol, built so that a process killed between any
 * two instructions leaves nothing that recovery (recover.c) cannot finish
 * or undo (rules 2 and 6).  The slot's intent record says how far it got:
 *
 *   1. take a chunk, build the whole item in it        in_new, BUILT
 *   2. lock the primary bucket (owner = our slot)
 *   3. find the old item of the key, or a free word    in_bucket, in_old, LOCKED
 *   4. one release store of tag|new into the word      (published)
 *                                                      PUBLISHED
 *   5. release the bucket lock                         UNLOCKED
 *   6. retire the old item (freed after a grace period)
 *   7. clear the intent                                NONE
 *
 * In LOCKED the lock is held, so recovery can look at the chain and see
 * whether step 4 happened.  PUBLISHED (a release store after step 4) says
 * it did, whether or not the lock is still held: step 5 releases the lock
 * before UNLOCKED is written, so recovery must not ask the lock there.
 * After PUBLISHED only step 6 is left, and the retire list's tail tells
 * whether it was done.  A delete and an eviction
 * are the same protocol with in_new = 0.
 *
 * Every conditional store (add, replace, cas, getset, incr) is that one
 * protocol with a check between steps 3 and 4, made under the bucket lock
 * against the item found there: if the check fails the unpublished chunk
 * goes back and nothing was visible.  ns_incr writes its digits into the
 * new chunk at that point, still unpublished.  TTL changes (expire,
 * persist, touch) store the expire_ms and ttl_code words of the item in
 * place under the lock; no other field of a published item changes.  ns_update is
 * optimistic: its callback runs with no lock held, and the result is stored
 * with a cas (or an add for an absent key), retried on conflict.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "ns_internal.h"

/* ---- helpers ------------------------------------------------------------ */

static inline uint16_t tag_of(uint64_t h) { return (uint16_t)(h >> 48); }

static inline uint8_t *item_key(struct ns_item_shm *it) { return (uint8_t *)(it + 1); }

static inline uint32_t rel_seconds(ns_cache *c, uint64_t now_ms)
{
	return (uint32_t)((now_ms - c->hdr->created_ms) / 1000u);
}

/* The expiry of a store made at NOW with TTL_MS as the API defines it. */
static uint64_t expiry_of(ns_space *s, uint64_t ttl_ms, uint64_t now)
{
	if (ttl_ms == 0)
		ttl_ms = ns_load_relaxed(&s->shm->default_ttl_ms);
	if (ttl_ms == 0 || ttl_ms == NS_TTL_NEVER)
		return 0;
	return ttl_ms > UINT64_MAX - now ? UINT64_MAX : now + ttl_ms;
}

size_t ns_max_value(ns_cache *c, size_t klen)
{
	size_t big = c->classes[c->nclasses - 1].size;
	return big - sizeof(struct ns_item_shm) - klen;
}

static void fill_info(ns_cache *c, struct ns_item_shm *it, uint64_t ver,
		      struct ns_item_info *in)
{
	in->version = ver;
	in->created_ms = c->hdr->created_ms + (uint64_t)it->ctime * 1000u;
	in->expire_ms = ns_load_relaxed(&it->expire_ms);
	in->ttl_ms = ns__ttl_decode(ns_load_relaxed(&it->ttl_code));
	in->vlen = it->vlen;
	in->flags = it->uflags;
	in->space_id = it->space;
}

/* ---- reads -------------------------------------------------------------- */

/* Look KEY up in the chain of bucket B.  Caller is inside a read section
 * (or holds the lock).  Returns the item's offset, 0 when absent, or sets
 * *err on a corrupt reference. */
static ns_off_t lookup(ns_cache *c, uint64_t b, uint16_t tag, uint32_t space,
		       const void *key, size_t klen, uint64_t **wordp, int *err)
{
	struct ns_bucket_shm *bk = &c->buckets[b];

	for (int depth = 0; bk; depth++) {
		if (ns_unlikely(depth > NS_CHAIN_MAX)) {
			*err = NS_ECORRUPT;
			return 0;
		}
		for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
			uint64_t w = ns_load_acquire(&bk->slot[i]);
			if (w == 0 || (uint16_t)(w >> 48) != tag)
				continue;
			ns_off_t off = w & NS_SLOT_OFF_MASK;
			struct ns_item_shm *it = ns__item(c, off);
			if (ns_unlikely(it == NULL ||
					ns__ptr(c, off + sizeof(*it), it->klen) == NULL)) {
				*err = NS_ECORRUPT;
				return 0;
			}
			if (it->klen == klen && it->space == space &&
			    memcmp(item_key(it), key, klen) == 0) {
				if (wordp)
					*wordp = &bk->slot[i];
				return off;
			}
		}
		bk = ns__chain_next(c, bk, err);
	}
	return 0;
}

#define NS_RDONLY_RETRIES 16 /* optimistic read attempts before NS_EBUSY */

/* What a read wants besides presence. */
struct rd {
	void *buf;                  /* value copy, if VLEN */
	size_t cap;
	size_t *vlen;               /* NULL: no value wanted */
	struct ns_item_info *info;  /* NULL: no metadata wanted */
	uint64_t stale_ms;          /* accept an item expired this long ago */
	bool stale;                 /* out: the item found had expired */
};

/* Look up at index hash H, precomputed by the caller (ns_mget hashes
 * ahead).  Always inlined so that ns_get pays only for what it asks. */
static inline __attribute__((always_inline)) int
rd_hashed(ns_space *s, const void *key, size_t klen, uint64_t h, struct rd *r)
{
	ns_cache *c = s->c;
	struct ns_thr *t;
	struct ns_slot_shm *sl = NULL;
	uint64_t exp;
	uint32_t now_s = 0;
	int err = 0;

	if (!c->rdonly) {
		t = ns__thr(c, &err);
		if (t == NULL)
			return err;
		sl = t->slot;
	}

	for (int attempt = 0;; attempt++) {
		uint64_t *word = NULL;
		struct ns_item_shm *it;
		ns_off_t off;
		uint64_t ver;
		uint32_t n;

		err = 0;
		if (sl)
			ns__read_enter(c, sl);
		off = lookup(c, h & c->mask, tag_of(h), s->id, key, klen, &word, &err);
		if (off == 0) {
			if (err == 0)
				err = NS_ENOTFOUND;
			goto out;
		}
		it = (struct ns_item_shm *)(c->base + off);
		ver = ns_load_acquire(&it->version);
		n = it->vlen;
		if (it->gen != ns_load_relaxed(&s->shm->gen)) {
			err = NS_ENOTFOUND;
			goto out;
		}
		/* The precise clock only for items that can expire. */
		exp = ns_load_relaxed(&it->expire_ms);
		if (exp != 0) {
			uint64_t now = ns__now_ms();
			if (exp <= now) {
				if (r->stale_ms == 0 || now - exp >= r->stale_ms) {
					err = NS_ENOTFOUND;
					goto out;
				}
				r->stale = true;
			}
		}
		if (r->vlen) {
			if (ns__ptr(c, off + sizeof(*it) + klen, n) == NULL) {
				err = NS_ECORRUPT;
				goto out;
			}
			*r->vlen = n;
			/* memcpy with a NULL buffer is undefined even for
			 * 0 bytes, and NULL is allowed when CAP is 0. */
			if (n > r->cap)
				err = NS_ERANGE;
			else if (n != 0)
				memcpy(r->buf, item_key(it) + klen, n);
		}
		if (r->info)
			fill_info(c, it, ver, r->info);
		if (sl) {
			now_s = rel_seconds(c, ns__coarse_ms());
			if (ns_load_relaxed(&it->atime) != now_s)
				ns_store_relaxed(&it->atime, now_s);
		} else {
			/* Read-only mapping: no epoch protects us, so check
			 * that the chunk was not reused while we copied.  A
			 * builder stores the version before anything else. */
			cmm_smp_rmb();
			if (ns_load_relaxed(&it->version) != ver ||
			    ns_load_relaxed(word) != ((uint64_t)tag_of(h) << 48 | off)) {
				if (attempt < NS_RDONLY_RETRIES)
					continue;
				return NS_EBUSY;
			}
		}
	out:
		if (sl) {
			struct ns_sctr_shm *e;

			ns__read_exit(sl);
			if (now_s == 0)
				now_s = rel_seconds(c, ns__coarse_ms());
			if (sl->active_s != now_s)
				ns_store_relaxed(&sl->active_s, now_s);
			ns_store_relaxed(&sl->gets, sl->gets + 1);
			e = ns__sctr(c, sl, s->id);
			if (err == 0 || err == NS_ERANGE) {
				ns_store_relaxed(&sl->hits, sl->hits + 1);
				ns_store_relaxed(&e->hits, e->hits + 1);
			} else if (err == NS_ENOTFOUND) {
				ns_store_relaxed(&sl->misses, sl->misses + 1);
				ns_store_relaxed(&e->misses, e->misses + 1);
			}
		}
		return err;
	}
}

static inline __attribute__((always_inline)) int
rd(ns_space *s, const void *key, size_t klen, struct rd *r)
{
	int err;

	if (s == NULL)
		return NS_EINVAL;
	err = ns__check_key(key, klen);
	if (err)
		return err;
	return rd_hashed(s, key, klen,
			 ns__hash(s->c->hdr->hash_seed, s->id, key, klen), r);
}

int ns_get(ns_space *s, const void *key, size_t klen, void *buf, size_t cap,
	   size_t *vlen)
{
	struct rd r = { .buf = buf, .cap = cap, .vlen = vlen };

	if (vlen == NULL || (buf == NULL && cap != 0))
		return NS_EINVAL;
	return rd(s, key, klen, &r);
}

int ns_get_ex(ns_space *s, const void *key, size_t klen, void *buf, size_t cap,
	      size_t *vlen, struct ns_item_info *info)
{
	struct rd r = { .buf = buf, .cap = cap, .vlen = vlen, .info = info };

	if (vlen == NULL || (buf == NULL && cap != 0))
		return NS_EINVAL;
	return rd(s, key, klen, &r);
}

int ns__get_stale(ns_space *s, const void *key, size_t klen, uint64_t h,
		  void *buf, size_t cap, size_t *vlen, uint64_t stale_ms, bool *stale)
{
	struct rd r = { .buf = buf, .cap = cap, .vlen = vlen, .stale_ms = stale_ms };
	int err = rd_hashed(s, key, klen, h, &r);

	*stale = r.stale;
	return err;
}

int ns__get_hashed(ns_space *s, const void *key, size_t klen, uint64_t h,
		   struct ns_kv *kv)
{
	struct rd r = { .buf = kv->buf, .cap = kv->cap, .vlen = &kv->vlen };
	struct ns_item_info info = { 0 };
	int err;

	r.info = &info;
	err = rd_hashed(s, key, klen, h, &r);
	if (err == 0)
		kv->flags = info.flags;
	return err;
}

int ns_exists(ns_space *s, const void *key, size_t klen)
{
	struct rd r = { 0 };

	return rd(s, key, klen, &r);
}

int ns_stat(ns_space *s, const void *key, size_t klen, struct ns_item_info *info)
{
	struct rd r = { .info = info };

	if (info == NULL)
		return NS_EINVAL;
	return rd(s, key, klen, &r);
}

int ns_ttl(ns_space *s, const void *key, size_t klen, int64_t *ttl_ms)
{
	struct ns_item_info in;
	int err;

	if (ttl_ms == NULL)
		return NS_EINVAL;
	err = ns_stat(s, key, klen, &in);
	if (err)
		return err;
	if (in.expire_ms == 0) {
		*ttl_ms = -1;
	} else {
		uint64_t now = ns__now_ms();
		*ttl_ms = in.expire_ms > now ? (int64_t)(in.expire_ms - now) : 0;
	}
	return 0;
}

/* ---- write protocol ----------------------------------------------------- */

static void intent_clear(struct ns_slot_shm *sl)
{
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_NONE);
	ns_store_relaxed(&sl->in_bucket, 0ull);
	ns_store_relaxed(&sl->in_old, 0ull);
	ns_store_relaxed(&sl->in_new, 0ull);
}

#define NS_RETIRE_BATCH 256 /* retired items per reclaim pass: one membarrier each */
/* With nsd paying the membarrier, a client waits for its floor (a tick)
 * and reclaims for free, unless its list grows past these. */
#define NS_RETIRE_JANITOR_COUNT 65536
/*
 * Retired chunks are memory nobody can use until their owner frees them,
 * so what a list may hold is a share of the data area, not a fixed size:
 * a writer doing 75,000 sets a second retires 15,000 chunks in the two
 * ticks a floor takes, and eight of them at 16 MiB each held three
 * quarters of a 45 MiB segment (the torture saw stores evict while a class
 * had a hundred live items and twenty thousand chunks on retire lists).
 * A reclaim pass after 1/256 of the data (64 KiB..1 MiB), and even while
 * nsd ticks, never more than 1/64 of it (up to 16 MiB): a few percent of
 * the segment per busy writer, one membarrier per few hundred sets.
 */
#define NS_RETIRE_BYTES_MIN (64u << 10)
#define NS_RETIRE_BYTES_MAX (1u << 20)
#define NS_RETIRE_JANITOR_BYTES (16u << 20)

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

void ns__retire_limits(ns_cache *c)
{
	uint64_t data = (uint64_t)c->npages * NS_PAGE_SIZE;

	c->retire_batch = clamp_u64(data / 256, NS_RETIRE_BYTES_MIN, NS_RETIRE_BYTES_MAX);
	c->retire_cap = clamp_u64(data / 64, c->retire_batch, NS_RETIRE_JANITOR_BYTES);
}
#define NS_JANITOR_STALE_MS 1000 /* a heartbeat older than this: nsd is gone */
#define NS_ANSWER_MIN_COUNT 16   /* retired chunks worth answering an ask for */

static void maybe_reclaim(ns_cache *c, struct ns_thr *t)
{
	struct ns_slot_shm *sl = t->slot;
	uint64_t ask = ns_load_relaxed(&c->hdr->reclaim_ask_ms);

	if (ns_unlikely(ask != t->reclaim_seen)) {
		/* A store is short of chunks that may be on our list (slab.c,
		 * "limbo"): free them now, onto the free lists where it looks
		 * (not into our cache).  At most once per ask, which changes
		 * at most once a millisecond, and not for a list too short to
		 * be worth a membarrier. */
		t->reclaim_seen = ask;
		if (sl->retire_count >= NS_ANSWER_MIN_COUNT ||
		    sl->retire_bytes >= NS_RETIRE_BYTES_MIN)
			ns__reclaim_slot(c, sl, false);
		return;
	}
	if (sl->retire_count < NS_RETIRE_BATCH && sl->retire_bytes < c->retire_batch)
		return;
	/* Only while nsd is ticking: a killed one leaves a stale floor. */
	if (ns_load_relaxed(&c->hdr->safe_epoch) != 0 &&
	    ns__coarse_ms() < ns_load_relaxed(&c->hdr->janitor_beat_ms) + NS_JANITOR_STALE_MS) {
		ns__reclaim_cheap(c, t);
		if (sl->retire_count < NS_RETIRE_JANITOR_COUNT &&
		    sl->retire_bytes < c->retire_cap)
			return;
	}
	ns__reclaim(c, t);
}

int ns__unlink_locked(ns_cache *c, struct ns_thr *t, uint64_t b, uint64_t *word,
		      ns_off_t off, int why)
{
	struct ns_slot_shm *sl = t->slot;

	ns_store_relaxed(&sl->in_new, 0ull);
	ns_store_relaxed(&sl->in_old, off);
	ns_store_relaxed(&sl->in_bucket, b + 1);
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_LOCKED);
	NS_FAULT("del:intent");
	ns_store_release(word, 0ull);
	NS_FAULT("del:unlinked");
	/* Release: PUBLISHED means the word was stored (recover.c). */
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_PUBLISHED);
	ns__bucket_unlock(c, t, b);
	NS_FAULT("del:released");
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_UNLOCKED);
	NS_FAULT("del:unlocked");
	why = ns__acct_gone(c, t, (struct ns_item_shm *)(c->base + off), why);
	ns__retire(c, t, off);
	NS_FAULT("del:retired");
	intent_clear(sl);
	return why;
}

int ns__unlink_chunk(ns_cache *c, struct ns_thr *t, ns_off_t off, int why,
		     uint32_t space, bool dead_only, uint64_t now)
{
	struct ns_item_shm *it = (struct ns_item_shm *)(c->base + off);
	uint64_t b = ns_load_relaxed(&it->hash) & c->mask, *word;
	int err;

	ns_store_relaxed(&t->slot->in_bucket, b + 1);
	err = ns__bucket_lock(c, t, b);
	if (err) {
		ns_store_relaxed(&t->slot->in_bucket, 0ull);
		return err;
	}
	word = ns__chain_find_locked(c, b, off);
	if (word == NULL || (space && it->space != space) ||
	    (dead_only && ns__visible(c, it, now))) {
		/* Replaced, removed or refreshed since it was chosen. */
		ns__bucket_unlock(c, t, b);
		ns_store_relaxed(&t->slot->in_bucket, 0ull);
		return 0;
	}
	return ns__unlink_locked(c, t, b, word, off, why) == NS_GONE_EVICT ? 2 : 1;
}

/* Undo step 1 when the write cannot go on: the chunk was never visible. */
static void drop_new(ns_cache *c, struct ns_thr *t, ns_off_t off)
{
	/* Off the intent first: if ns__free pushes it on a shared list,
	 * dying after the push must not leave it in the intent too.  The
	 * busy flag covers the leak window instead. */
	t->slot->slab_busy = 1;
	intent_clear(t->slot);
	ns__free(c, t, off);
	t->slot->slab_busy = 0;
}

/* A page move rescues the live items of the page it drains, as memcached's
 * slab rebalancer does (its slab_reassign_rescues), rather than evicting
 * them while their class has free chunks: the write protocol of a set, with
 * a copy of the item as the new one.  Under the bucket lock the item cannot
 * change, so the copy is exact; readers of the old chunk finish with it
 * before it is reclaimed. */
/* Lock bucket B for publishing new chunk NW (phase BUILT), in_bucket
 * first so that recovery finds a lock we die holding before the rest of
 * the intent is written; on failure NW is given back. */
static int lock_for_new(ns_cache *c, struct ns_thr *t, uint64_t b, ns_off_t nw)
{
	struct ns_slot_shm *sl = t->slot;
	int err;

	ns_store_relaxed(&sl->in_bucket, b + 1);
	err = ns__bucket_lock(c, t, b);
	if (err) {
		ns_store_relaxed(&sl->in_bucket, 0ull);
		drop_new(c, t, nw);
	}
	return err;
}

int ns__relocate_chunk(ns_cache *c, struct ns_thr *t, ns_off_t off)
{
	struct ns_slot_shm *sl = t->slot;
	struct ns_item_shm *it = (struct ns_item_shm *)(c->base + off), *nit;
	int cls = ns__class_of(c, off), err;
	uint64_t b = ns_load_relaxed(&it->hash) & c->mask, *word;
	ns_off_t nw;

	if (cls < 0)
		return 0;
	err = ns__alloc_free(c, t, cls, &nw);
	if (err)
		return err;
	nit = (struct ns_item_shm *)(c->base + nw);
	err = lock_for_new(c, t, b, nw);
	if (err)
		return err;
	word = ns__chain_find_locked(c, b, off);
	size_t len = sizeof(*it) + (size_t)it->klen + it->vlen;
	if (word == NULL || ns_load_relaxed(&it->state) != NS_CH_LIVE ||
	    len > c->classes[cls].size) {
		ns__bucket_unlock(c, t, b);
		ns_store_relaxed(&sl->in_bucket, 0ull);
		drop_new(c, t, nw);
		return 0; /* replaced or removed since it was chosen */
	}
	memcpy(nit, it, len);
	ns_store_relaxed(&nit->next, (ns_off_t)0);
	ns_store_relaxed(&sl->in_old, off);
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_LOCKED);
	ns_store_release(word, (ns_load_relaxed(word) & ~(uint64_t)NS_SLOT_OFF_MASK) | nw);
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_PUBLISHED);
	ns__bucket_unlock(c, t, b);
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_UNLOCKED);
	ns__retire(c, t, off);
	intent_clear(sl);
	return 1;
}

/* Eviction score: 0 for an item that no longer reads as present, else one
 * more than its access hint, so the smallest is the best victim. */
static uint64_t victim_score(ns_cache *c, struct ns_item_shm *it, uint64_t now)
{
	return ns__visible(c, it, now) ? 1u + ns_load_relaxed(&it->atime) : 0;
}

/* The victim when a chain is full and no overflow bucket is left: expired
 * first, else the least recently used by the access hint.  Lock held. */
static uint64_t *chain_victim_locked(ns_cache *c, uint64_t b, uint64_t now)
{
	struct ns_bucket_shm *bk = &c->buckets[b];
	uint64_t *best = NULL;
	uint64_t best_score = UINT64_MAX;
	int err = 0;

	for (int depth = 0; bk && depth <= NS_CHAIN_MAX; depth++) {
		for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
			uint64_t w = ns_load_relaxed(&bk->slot[i]);
			struct ns_item_shm *it = ns__item(c, w & NS_SLOT_OFF_MASK);
			if (w == 0 || it == NULL)
				continue;
			uint64_t score = victim_score(c, it, now);
			if (score < best_score) {
				best_score = score;
				best = &bk->slot[i];
			}
		}
		bk = ns__chain_next(c, bk, &err);
	}
	return best;
}

/* ---- namespace quota ---------------------------------------------------- */

#define NS_QUOTA_WINDOW 64   /* buckets a quota eviction looks at per step */
#define NS_QUOTA_STEPS 64    /* steps before giving up with NS_ENOMEM */
#define NS_QUOTA_SAMPLES 8   /* candidates compared, like NS_EVICT_SAMPLES */

/* Evict one item of namespace S, the coldest of a sample found by a
 * clock hand over the index: only S's items are candidates, so a
 * namespace over its quota never evicts another's.  0, or NS_ENOMEM when
 * no item of S was found. */
static int quota_evict_one(ns_space *s, struct ns_thr *t, uint64_t now)
{
	ns_cache *c = s->c;
	uint64_t nb = c->mask + 1;

	for (int step = 0; step < NS_QUOTA_STEPS; step++) {
		uint64_t start = ns_add_return(&s->shm->evict_hand,
					       (uint64_t)NS_QUOTA_WINDOW) - NS_QUOTA_WINDOW;
		ns_off_t best = 0;
		uint64_t best_score = UINT64_MAX;
		int found = 0, err = 0;

		/* Unlocked look: the chunk is confirmed under the lock. */
		ns__read_enter(c, t->slot);
		for (uint64_t k = 0; k < NS_QUOTA_WINDOW && found < NS_QUOTA_SAMPLES; k++) {
			struct ns_bucket_shm *bk = &c->buckets[(start + k) & (nb - 1)];
			for (int depth = 0; bk && depth <= NS_CHAIN_MAX; depth++) {
				for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
					uint64_t w = ns_load_acquire(&bk->slot[i]);
					ns_off_t off = w & NS_SLOT_OFF_MASK;
					struct ns_item_shm *it = ns__item(c, off);
					if (w == 0 || it == NULL || it->space != s->id)
						continue;
					found++;
					uint64_t score = victim_score(c, it, now);
					if (score < best_score) {
						best_score = score;
						best = off;
					}
				}
				bk = ns__chain_next(c, bk, &err);
			}
		}
		ns__read_exit(t->slot);
		if (best == 0)
			continue;

		err = ns__unlink_chunk(c, t, best, NS_GONE_EVICT, s->id, false, now);
		if (err < 0)
			return err;
		if (err == 0)
			continue; /* it went away meanwhile */
		if (err == 2) {
			ns_store_relaxed(&t->slot->evictions, t->slot->evictions + 1);
			ns_add_return(&s->shm->quota_evictions, 1ull);
		}
		return 0;
	}
	return NS_ENOMEM;
}

/* Make room for NEED more bytes in S if it has a quota. */
static int quota_room(ns_space *s, struct ns_thr *t, uint64_t need, uint64_t now)
{
	uint64_t q = ns_load_relaxed(&s->shm->quota_bytes);

	if (q == 0)
		return 0;
	if (need > q)
		return NS_ENOMEM;
	while ((uint64_t)ns_load_relaxed(&s->shm->bytes) + need > q) {
		int err = quota_evict_one(s, t, now);
		if (err)
			return err;
		maybe_reclaim(s->c, t);
	}
	return 0;
}

/* ---- stores ------------------------------------------------------------- */

enum { W_SET, W_ADD, W_REPLACE, W_CAS, W_INCR };

struct wr {
	unsigned mode;
	const void *val;
	size_t vlen;
	uint64_t ttl_ms;           /* as the API takes it */
	uint32_t flags;
	uint64_t version;          /* W_CAS: the version expected */
	int64_t delta, initial;    /* W_INCR */
	bool sub;                  /* W_INCR: subtract delta */
	int64_t result;            /* W_INCR: out */
	void *old;                 /* getset: where the old value goes */
	size_t cap;
	size_t *oldlen;            /* non-NULL: this is a getset */
	uint64_t version_out;
};

#define NS_I64_DIGITS 20 /* "-9223372036854775808" */

static int parse_i64(const uint8_t *p, size_t n, int64_t *out)
{
	bool neg;
	size_t i;
	uint64_t v = 0;

	if (n == 0 || n > NS_I64_DIGITS)
		return NS_ENOTNUM;
	neg = p[0] == '-';
	i = neg;
	if (i == n)
		return NS_ENOTNUM;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return NS_ENOTNUM;
		if (v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
			return NS_ENOTNUM;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return NS_ENOTNUM;
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return NS_ENOTNUM;
		*out = (int64_t)v;
	}
	return 0;
}

static size_t format_i64(int64_t v, uint8_t *out)
{
	char tmp[NS_I64_DIGITS + 1];
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	size_t n = 0, k = 0;

	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		out[k++] = '-';
	while (n)
		out[k++] = (uint8_t)tmp[--n];
	return k;
}

/* The check made under the lock against OLD (0: none), and the value of a
 * W_INCR written into the unpublished item IT.  0 means go on; any other
 * value is returned and nothing is stored. */
static int check_locked(ns_space *s, struct wr *w, struct ns_item_shm *it,
			ns_off_t old, uint64_t now, bool *was_visible)
{
	ns_cache *c = s->c;
	struct ns_item_shm *o = old ? (struct ns_item_shm *)(c->base + old) : NULL;
	bool vis = o && ns__visible(c, o, now);

	*was_visible = vis;
	switch (w->mode) {
	case W_ADD:
		if (vis)
			return NS_EPRESENT;
		break;
	case W_REPLACE:
		if (!vis)
			return NS_ENOTFOUND;
		break;
	case W_CAS:
		if (!vis)
			return NS_ENOTFOUND;
		if (ns_load_relaxed(&o->version) != w->version)
			return NS_ECHANGED;
		break;
	case W_INCR: {
		int64_t v = w->initial;
		if (vis) {
			int64_t cur;
			int err;

			if (ns__ptr(c, old + sizeof(*o) + o->klen, o->vlen) == NULL)
				return NS_ECORRUPT;
			err = parse_i64(item_key(o) + o->klen, o->vlen, &cur);
			if (err)
				return err;
			if (w->sub ? __builtin_sub_overflow(cur, w->delta, &v)
				   : __builtin_add_overflow(cur, w->delta, &v))
				return NS_EOVERFLOW;
			/* A counter keeps its TTL and flags. */
			it->expire_ms = ns_load_relaxed(&o->expire_ms);
			it->ttl_code = o->ttl_code;
			it->uflags = o->uflags;
		}
		it->vlen = (uint32_t)format_i64(v, item_key(it) + it->klen);
		w->result = v;
		break;
	}
	default:
		break;
	}
	if (w->oldlen && vis) {
		if (ns__ptr(c, old + sizeof(*o) + o->klen, o->vlen) == NULL)
			return NS_ECORRUPT;
		*w->oldlen = o->vlen;
		if (o->vlen > w->cap)
			return NS_ERANGE;
		if (o->vlen != 0) /* OLD may be NULL when CAP is 0 */
			memcpy(w->old, item_key(o) + o->klen, o->vlen);
	}
	return 0;
}

static int store_body(ns_space *s, const void *key, size_t klen, struct wr *w);

/* Every write runs inside a write section of its slot (the audit's
 * handshake, recover.c).  *TP stays NULL on a read-only attachment, whose
 * body then reports NS_ERDONLY. */
static int write_begin(ns_space *s, struct ns_thr **tp)
{
	int err = 0;

	*tp = NULL;
	if (s == NULL || s->c->rdonly)
		return 0;
	*tp = ns__thr(s->c, &err);
	if (*tp == NULL)
		return err;
	ns__wsec_enter(s->c, (*tp)->slot);
	return 0;
}

static void write_end(struct ns_thr *t)
{
	if (t)
		ns__wsec_exit(t->slot);
}

static int store(ns_space *s, const void *key, size_t klen, struct wr *w)
{
	struct ns_thr *t;
	int err = write_begin(s, &t);

	if (err)
		return err;
	err = store_body(s, key, klen, w);
	write_end(t);
	return err;
}

static int store_body(ns_space *s, const void *key, size_t klen, struct wr *w)
{
	ns_cache *c;
	struct ns_thr *t;
	struct ns_slot_shm *sl;
	struct ns_item_shm *it;
	uint64_t h, b, now, *word = NULL, *empty = NULL;
	ns_off_t off, old;
	size_t vlen = w->mode == W_INCR ? NS_I64_DIGITS : w->vlen;
	uint64_t ver;
	bool was_visible = false;
	int cls, err = 0;

	if (s == NULL || (w->val == NULL && w->vlen != 0) ||
	    (w->oldlen && w->old == NULL && w->cap != 0))
		return NS_EINVAL;
	err = ns__check_key(key, klen);
	if (err)
		return err;
	c = s->c;
	if (c->rdonly)
		return NS_ERDONLY;
	if (vlen > UINT32_MAX)
		return NS_E2BIG;
	cls = ns__class_for(c, sizeof(struct ns_item_shm) + klen + vlen);
	if (cls < 0)
		return NS_E2BIG;
	t = ns__thr(c, &err);
	if (t == NULL)
		return err;
	sl = t->slot;
	h = ns__hash(c->hdr->hash_seed, s->id, key, klen);
	b = h & c->mask;
	now = ns__now_ms();
	err = quota_room(s, t, c->classes[cls].size, now);
	if (err)
		return err;

	/* 1. Build the item completely in a chunk nobody else can see. */
	err = ns__alloc(c, t, cls, &off);
	if (err)
		return err;
	it = (struct ns_item_shm *)(c->base + off);
	/* The version goes first: a read-only reader that sees any byte of
	 * the new contents then also sees the new version (seqlock-like). */
	ver = ns__next_version(t);
	ns_store_relaxed(&it->version, ver);
	cmm_smp_wmb();
	it->expire_ms = expiry_of(s, w->ttl_ms, now);
	it->ttl_code = it->expire_ms ? ns__ttl_encode(it->expire_ms - now) : 0;
	it->ctime = rel_seconds(c, now);
	it->hash = (uint32_t)h;
	it->atime = rel_seconds(c, now);
	it->vlen = (uint32_t)w->vlen;
	it->klen = (uint16_t)klen;
	it->space = (uint16_t)s->id;
	it->gen = ns_load_relaxed(&s->shm->gen);
	it->uflags = w->flags;
	it->state = NS_CH_LIVE;
	memcpy(item_key(it), key, klen);
	if (w->mode != W_INCR && w->vlen)
		memcpy(item_key(it) + klen, w->val, w->vlen);
	NS_FAULT("set:built");

	/* 2. Lock the bucket. */
	err = lock_for_new(c, t, b, off);
	if (err)
		return err;

	/* 3. Find the old item, or room; check the condition. */
	old = lookup(c, b, tag_of(h), s->id, key, klen, &word, &err);
	if (err)
		goto fail_locked;
	err = check_locked(s, w, it, old, now, &was_visible);
	if (err)
		goto fail_locked;
	if (old == 0) {
		struct ns_bucket_shm *bk = &c->buckets[b], *tail = bk;
		for (int depth = 0; bk && !empty; depth++) {
			for (int i = 0; i < NS_BUCKET_SLOTS; i++) {
				if (ns_load_relaxed(&bk->slot[i]) == 0) {
					empty = &bk->slot[i];
					break;
				}
			}
			tail = bk;
			bk = ns__chain_next(c, bk, &err);
			if (err || depth > NS_CHAIN_MAX) {
				err = NS_ECORRUPT;
				goto fail_locked;
			}
		}
		word = empty;
		if (word == NULL && ns__over_claim_locked(c, b, tail, &word) != 0) {
			/* Index full: replace the chain's coldest item. */
			word = chain_victim_locked(c, b, now);
			if (word == NULL) {
				err = NS_ENOMEM;
				goto fail_locked;
			}
			old = ns_load_relaxed(word) & NS_SLOT_OFF_MASK;
			ns_store_relaxed(&sl->evictions, sl->evictions + 1);
		}
	}
	ns_store_relaxed(&sl->in_old, old);
	ns_store_relaxed(&sl->in_bucket, b + 1);
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_LOCKED);
	NS_FAULT("set:intent");

	/* 4. Publish with one release store (also unlinks the old item). */
	ns_store_release(word, (uint64_t)tag_of(h) << 48 | off);
	NS_FAULT("set:published");
	/* Release: PUBLISHED means the word was stored (recover.c). */
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_PUBLISHED);

	/* 5. Unlock. */
	ns__bucket_unlock(c, t, b);
	NS_FAULT("set:released");
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_UNLOCKED);
	NS_FAULT("set:unlocked");

	/* Counters: the new item in, the old one out. */
	ns_add_return(&s->shm->items, (int64_t)1);
	ns_add_return(&s->shm->bytes, (int64_t)c->classes[cls].size);
	{
		struct ns_sctr_shm *e = ns__sctr(c, sl, s->id);
		ns_store_relaxed(&e->sets, e->sets + 1);
	}

	/* 6. Retire the old item; 7. done. */
	if (old) {
		struct ns_item_shm *o = (struct ns_item_shm *)(c->base + old);
		bool same = o->space == s->id && o->klen == klen &&
			    memcmp(item_key(o), key, klen) == 0;
		/* Replaced by its own key: not a removal unless it had
		 * expired (acct_gone counts that); a chain victim is an
		 * eviction. */
		if (same && was_visible) {
			int oc = ns__class_of(c, old);
			ns_add_return(&s->shm->items, (int64_t)-1);
			if (oc >= 0)
				ns_add_return(&s->shm->bytes,
					      -(int64_t)c->classes[oc].size);
		} else {
			if (ns__acct_gone(c, t, o, same ? NS_GONE_EXPIRE : NS_GONE_EVICT) ==
			    NS_GONE_EVICT)
				ns_add_return(&c->hdr->index_evictions, 1ull);
		}
		ns__retire(c, t, old);
		NS_FAULT("set:retired");
	}
	intent_clear(sl);
	ns_store_relaxed(&sl->sets, sl->sets + 1);
	ns_store_relaxed(&sl->active_s, rel_seconds(c, now));
	/* Not it->version: once unlocked, the item can be replaced, retired
	 * and freed by another writer (no epoch protects it here), and its
	 * chunk reused with another version. */
	w->version_out = ver;
	maybe_reclaim(c, t);
	/* A getset of an absent key stores and says so. */
	return (w->oldlen && !was_visible) ? NS_ENOTFOUND : 0;

fail_locked:
	ns__bucket_unlock(c, t, b);
	ns_store_relaxed(&sl->in_bucket, 0ull);
	drop_new(c, t, off);
	return err;
}

int ns_set(ns_space *s, const void *key, size_t klen, const void *val,
	   size_t vlen, uint64_t ttl_ms)
{
	struct wr w = { .mode = W_SET, .val = val, .vlen = vlen, .ttl_ms = ttl_ms };

	return store(s, key, klen, &w);
}

int ns_set_ex(ns_space *s, const void *key, size_t klen, const void *val,
	      size_t vlen, uint64_t ttl_ms, uint32_t flags, uint64_t *version)
{
	struct wr w = { .mode = W_SET, .val = val, .vlen = vlen,
			.ttl_ms = ttl_ms, .flags = flags };
	int err = store(s, key, klen, &w);

	if (err == 0 && version)
		*version = w.version_out;
	return err;
}

int ns_add(ns_space *s, const void *key, size_t klen, const void *val,
	   size_t vlen, uint64_t ttl_ms)
{
	struct wr w = { .mode = W_ADD, .val = val, .vlen = vlen, .ttl_ms = ttl_ms };

	return store(s, key, klen, &w);
}

int ns_replace(ns_space *s, const void *key, size_t klen, const void *val,
	       size_t vlen, uint64_t ttl_ms)
{
	struct wr w = { .mode = W_REPLACE, .val = val, .vlen = vlen, .ttl_ms = ttl_ms };

	return store(s, key, klen, &w);
}

int ns_cas(ns_space *s, const void *key, size_t klen, const void *val,
	   size_t vlen, uint64_t ttl_ms, uint64_t version)
{
	struct wr w = { .mode = W_CAS, .val = val, .vlen = vlen,
			.ttl_ms = ttl_ms, .version = version };

	return store(s, key, klen, &w);
}

int ns_getset(ns_space *s, const void *key, size_t klen, const void *val,
	      size_t vlen, uint64_t ttl_ms, void *old, size_t cap, size_t *oldlen)
{
	struct wr w = { .mode = W_SET, .val = val, .vlen = vlen, .ttl_ms = ttl_ms,
			.old = old, .cap = cap, .oldlen = oldlen };

	if (oldlen == NULL)
		return NS_EINVAL;
	return store(s, key, klen, &w);
}

static int incr(ns_space *s, const void *key, size_t klen, int64_t delta,
		bool sub, int64_t initial, uint64_t ttl_ms, int64_t *result)
{
	struct wr w = { .mode = W_INCR, .ttl_ms = ttl_ms, .delta = delta,
			.sub = sub, .initial = initial };
	int err = store(s, key, klen, &w);

	if (err == 0 && result)
		*result = w.result;
	return err;
}

int ns_incr(ns_space *s, const void *key, size_t klen, int64_t delta,
	    int64_t initial, uint64_t ttl_ms, int64_t *result)
{
	return incr(s, key, klen, delta, false, initial, ttl_ms, result);
}

int ns_decr(ns_space *s, const void *key, size_t klen, int64_t delta,
	    int64_t initial, uint64_t ttl_ms, int64_t *result)
{
	return incr(s, key, klen, delta, true, initial, ttl_ms, result);
}

/* ---- deletes and TTL changes -------------------------------------------- */

enum { K_DEL, K_EXPIRE, K_PERSIST, K_TOUCH };

/* Lock KEY's bucket and act on its item: delete it (if VERSION is given,
 * only at that version), or change its expiry in place. */
static int keyop_body(ns_space *s, const void *key, size_t klen, int op,
		      uint64_t ttl_ms, const uint64_t *version);

static int keyop(ns_space *s, const void *key, size_t klen, int op,
		 uint64_t ttl_ms, const uint64_t *version)
{
	struct ns_thr *t;
	int err = write_begin(s, &t);

	if (err)
		return err;
	err = keyop_body(s, key, klen, op, ttl_ms, version);
	write_end(t);
	return err;
}

static int keyop_body(ns_space *s, const void *key, size_t klen, int op,
		      uint64_t ttl_ms, const uint64_t *version)
{
	ns_cache *c;
	struct ns_thr *t;
	struct ns_item_shm *it;
	uint64_t h, b, now, *word = NULL;
	ns_off_t old;
	bool visible;
	int err;

	if (s == NULL)
		return NS_EINVAL;
	err = ns__check_key(key, klen);
	if (err)
		return err;
	c = s->c;
	if (c->rdonly)
		return NS_ERDONLY;
	t = ns__thr(c, &err);
	if (t == NULL)
		return err;
	h = ns__hash(c->hdr->hash_seed, s->id, key, klen);
	b = h & c->mask;
	ns_store_relaxed(&t->slot->active_s, rel_seconds(c, ns__coarse_ms()));
	ns_store_relaxed(&t->slot->in_bucket, b + 1);
	err = ns__bucket_lock(c, t, b);
	if (err) {
		intent_clear(t->slot);
		return err;
	}
	NS_FAULT("key:locked");
	old = lookup(c, b, tag_of(h), s->id, key, klen, &word, &err);
	if (old == 0) {
		err = err ? err : NS_ENOTFOUND;
		goto unlock;
	}
	it = (struct ns_item_shm *)(c->base + old);
	now = ns__now_ms();
	visible = ns__visible(c, it, now);
	if (version && (!visible || it->version != *version)) {
		err = visible ? NS_ECHANGED : NS_ENOTFOUND;
		goto unlock;
	}
	if (op == K_DEL || (op == K_EXPIRE && ttl_ms == 0) || !visible) {
		/* An expired or cleared item is removed, but reads as
		 * absent: what the caller asked for was not there. */
		ns__unlink_locked(c, t, b, word, old,
				  op == K_DEL ? NS_GONE_DEL : NS_GONE_EXPIRE);
		maybe_reclaim(c, t);
		if (op == K_DEL && visible)
			ns_store_relaxed(&t->slot->dels, t->slot->dels + 1);
		return visible ? 0 : NS_ENOTFOUND;
	}
	/* Single atomic words of a published item: readers see the old
	 * expiry or the new one.  The TTL ns_touch restarts follows. */
	if (op == K_EXPIRE) {
		ns_store_relaxed(&it->ttl_code, ns__ttl_encode(ttl_ms));
		ns_store_relaxed(&it->expire_ms, ttl_ms > UINT64_MAX - now ?
				 UINT64_MAX : now + ttl_ms);
	} else if (op == K_PERSIST) {
		ns_store_relaxed(&it->ttl_code, 0u);
		ns_store_relaxed(&it->expire_ms, 0ull);
	}
	else if (op == K_TOUCH && it->ttl_code)
		ns_store_relaxed(&it->expire_ms, now + ns__ttl_decode(it->ttl_code));
	err = 0;
unlock:
	ns__bucket_unlock(c, t, b);
	intent_clear(t->slot);
	return err;
}

int ns_del(ns_space *s, const void *key, size_t klen)
{
	return keyop(s, key, klen, K_DEL, 0, NULL);
}

int ns_expire(ns_space *s, const void *key, size_t klen, uint64_t ttl_ms)
{
	return keyop(s, key, klen, K_EXPIRE, ttl_ms, NULL);
}

int ns_persist(ns_space *s, const void *key, size_t klen)
{
	return keyop(s, key, klen, K_PERSIST, 0, NULL);
}

int ns_touch(ns_space *s, const void *key, size_t klen)
{
	return keyop(s, key, klen, K_TOUCH, 0, NULL);
}

/* ---- read-modify-write -------------------------------------------------- */

#define NS_UPDATE_STACK 512 /* value bytes read without malloc */

int ns_update(ns_space *s, const void *key, size_t klen, ns_update_fn *fn,
	      void *arg)
{
	uint8_t stackbuf[NS_UPDATE_STACK];
	uint8_t *buf = stackbuf;
	size_t cap = sizeof(stackbuf);
	int err;

	if (fn == NULL)
		return NS_EINVAL;
	for (;;) {
		struct ns_item_info info;
		struct ns_value out = { 0 };
		size_t vlen = 0;
		bool found;
		int r;

		err = ns_get_ex(s, key, klen, buf, cap, &vlen, &info);
		if (err == NS_ERANGE && vlen > cap) {
			uint8_t *nb = malloc(vlen);
			if (nb == NULL) {
				err = ns__errno(ENOMEM);
				break;
			}
			if (buf != stackbuf)
				free(buf);
			buf = nb;
			cap = vlen;
			continue;
		}
		if (err != 0 && err != NS_ENOTFOUND)
			break;
		found = err == 0;
		r = fn(arg, found ? buf : NULL, found ? vlen : 0,
		       found ? &info : NULL, &out);
		if (r < 0 || r == NS_UPDATE_KEEP) {
			err = r < 0 ? r : 0;
			break;
		}
		if (r == NS_UPDATE_DELETE) {
			if (!found) {
				err = 0;
				break;
			}
			err = keyop(s, key, klen, K_DEL, 0, &info.version);
		} else if (r == NS_UPDATE_STORE) {
			struct wr w = { .mode = found ? W_CAS : W_ADD,
					.val = out.val, .vlen = out.vlen,
					.ttl_ms = out.ttl_ms, .flags = out.flags,
					.version = info.version };
			err = store(s, key, klen, &w);
		} else {
			err = NS_EINVAL;
			break;
		}
		/* Somebody else got in between: run FN on what is there. */
		if (err == NS_ECHANGED || err == NS_EPRESENT ||
		    (found && err == NS_ENOTFOUND))
			continue;
		break;
	}
	if (buf != stackbuf)
		free(buf);
	return err;
}
