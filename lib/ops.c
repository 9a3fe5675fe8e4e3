/*
 * ops.c - namespaces and the key/value operations.
 *
 * Reads (ns_get) take no lock and write no shared line (rule 3): they
 * publish the global epoch in the caller's own slot, walk one bucket line
 * (rarely a chain), compare one key, copy the value, and clear the slot's
 * epoch.  Counters go to the caller's slot; the access-time hint of an item
 * is written only when it is stale by a second or more.
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
 * Up to PUBLISHED the lock is held, so recovery can look at the chain and
 * see whether step 4 happened.  After UNLOCKED only step 6 is left, and the
 * retire list's tail tells whether it was done.  A delete and an eviction
 * are the same protocol with in_new = 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "ns_internal.h"

/* ---- namespaces --------------------------------------------------------- */

static bool valid_prefix(const char *p)
{
	const char *colon;
	char root[NS_NAME_MAX + 1];
	size_t n;

	if (p == NULL || (colon = strchr(p, ':')) == NULL)
		return false;
	n = (size_t)(colon - p);
	if (n == 0 || n > NS_NAME_MAX)
		return false;
	memcpy(root, p, n);
	root[n] = '\0';
	return ns__valid_name(root, NS_NAME_MAX) &&
	       ns__valid_name(colon + 1, NS_NAME_MAX) &&
	       strlen(p) <= NS_PREFIX_MAX;
}

static int space_handle(ns_cache *c, uint32_t i, ns_space **out)
{
	ns_space *s;

	pthread_mutex_lock(&ns__mu);
	for (s = c->open_spaces; s; s = s->next)
		if (s->id == i + 1)
			break;
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL) {
			pthread_mutex_unlock(&ns__mu);
			return ns__errno(ENOMEM);
		}
		s->c = c;
		s->id = i + 1;
		s->shm = &c->spaces[i];
		s->next = c->open_spaces;
		c->open_spaces = s;
	}
	pthread_mutex_unlock(&ns__mu);
	*out = s;
	return 0;
}

static int space_find(ns_cache *c, const char *prefix, uint32_t *free_idx)
{
	uint32_t n = c->hdr->nspaces;

	*free_idx = UINT32_MAX;
	for (uint32_t i = 0; i < n; i++) {
		struct ns_space_shm *sp = &c->spaces[i];
		if (ns_load_acquire(&sp->state) == 1) {
			if (strncmp(sp->prefix, prefix, sizeof(sp->prefix)) == 0)
				return (int)i;
		} else if (*free_idx == UINT32_MAX) {
			*free_idx = i;
		}
	}
	return -1;
}

int ns_space_open(ns_cache *c, const char *prefix, ns_space **out)
{
	struct ns_thr *t;
	uint32_t free_idx;
	int i, err = 0;

	if (c == NULL || out == NULL || !valid_prefix(prefix))
		return NS_EINVAL;
	i = space_find(c, prefix, &free_idx);
	if (i >= 0)
		return space_handle(c, (uint32_t)i, out);
	if (c->rdonly)
		return NS_ERDONLY;
	t = ns__thr(c, &err);
	if (t == NULL)
		return err;
	/* Creation is serialized by the table lock, so two processes opening
	 * the same new prefix agree on one entry.  The entry is written
	 * completely before state = 1 is stored (release). */
	err = ns__owner_lock(c, t, &c->hdr->spaces_lock);
	if (err)
		return err;
	i = space_find(c, prefix, &free_idx);
	if (i < 0 && free_idx != UINT32_MAX) {
		struct ns_space_shm *sp = &c->spaces[free_idx];
		memset(sp->prefix, 0, sizeof(sp->prefix));
		strcpy(sp->prefix, prefix);
		sp->id = free_idx + 1;
		ns_store_release(&sp->state, 1u);
		i = (int)free_idx;
	}
	ns_store_release(&c->hdr->spaces_lock, 0u);
	if (i < 0)
		return NS_ESPACES;
	return space_handle(c, (uint32_t)i, out);
}

/* ---- helpers ------------------------------------------------------------ */

static inline uint16_t tag_of(uint64_t h) { return (uint16_t)(h >> 48); }

static inline uint8_t *item_key(struct ns_item_shm *it) { return (uint8_t *)(it + 1); }

static int check_key(const void *key, size_t klen)
{
	if (key == NULL || klen == 0)
		return NS_EINVAL;
	if (klen > NS_KEY_MAX)
		return NS_E2BIG;
	return 0;
}

static inline uint32_t rel_seconds(ns_cache *c, uint64_t now_ms)
{
	return (uint32_t)((now_ms - c->hdr->created_ms) / 1000u);
}

static inline bool is_expired(struct ns_item_shm *it, uint64_t now_ms)
{
	uint64_t e = ns_load_relaxed(&it->expire_ms);
	return e != 0 && e <= now_ms;
}

size_t ns_max_value(ns_cache *c, size_t klen)
{
	size_t big = c->classes[c->nclasses - 1].size;
	return big - sizeof(struct ns_item_shm) - klen;
}

/* ---- get ---------------------------------------------------------------- */

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

int ns_get(ns_space *s, const void *key, size_t klen, void *buf, size_t cap,
	   size_t *vlen)
{
	ns_cache *c;
	struct ns_thr *t = NULL;
	struct ns_slot_shm *sl = NULL;
	uint64_t h, exp;
	int err;

	if (s == NULL || vlen == NULL || (buf == NULL && cap != 0))
		return NS_EINVAL;
	err = check_key(key, klen);
	if (err)
		return err;
	c = s->c;
	if (!c->rdonly) {
		t = ns__thr(c, &err);
		if (t == NULL)
			return err;
		sl = t->slot;
	}
	h = ns__hash(c->hdr->hash_seed, s->id, key, klen);

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
		/* The precise clock only for items that can expire. */
		exp = ns_load_relaxed(&it->expire_ms);
		if (it->gen != ns_load_relaxed(&s->shm->gen) ||
		    (exp != 0 && exp <= ns__now_ms())) {
			err = NS_ENOTFOUND;
			goto out;
		}
		if (ns__ptr(c, off + sizeof(*it) + klen, n) == NULL) {
			err = NS_ECORRUPT;
			goto out;
		}
		*vlen = n;
		if (n > cap) {
			err = NS_ERANGE;
			goto out;
		}
		memcpy(buf, item_key(it) + klen, n);
		if (sl) {
			uint32_t a = rel_seconds(c, ns__coarse_ms());
			if (ns_load_relaxed(&it->atime) != a)
				ns_store_relaxed(&it->atime, a);
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
			ns__read_exit(sl);
			ns_store_relaxed(&sl->gets, sl->gets + 1);
			if (err == 0)
				ns_store_relaxed(&sl->hits, sl->hits + 1);
			else if (err == NS_ENOTFOUND)
				ns_store_relaxed(&sl->misses, sl->misses + 1);
		}
		return err;
	}
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
#define NS_RETIRE_BYTES (1u << 20)  /* or this many bytes, for big items */

static void maybe_reclaim(ns_cache *c, struct ns_thr *t)
{
	struct ns_slot_shm *sl = t->slot;
	if (sl->retire_count >= NS_RETIRE_BATCH || sl->retire_bytes >= NS_RETIRE_BYTES)
		ns__reclaim(c, t);
}

void ns__unlink_locked(ns_cache *c, struct ns_thr *t, uint64_t b, uint64_t *word,
		       ns_off_t off)
{
	struct ns_slot_shm *sl = t->slot;

	ns_store_relaxed(&sl->in_new, 0ull);
	ns_store_relaxed(&sl->in_old, off);
	ns_store_relaxed(&sl->in_bucket, b + 1);
	ns_store_release(&sl->in_phase, (uint32_t)NS_PH_LOCKED);
	NS_FAULT("del:intent");
	ns_store_release(word, 0ull);
	NS_FAULT("del:unlinked");
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_PUBLISHED);
	ns__bucket_unlock(c, t, b);
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_UNLOCKED);
	NS_FAULT("del:unlocked");
	ns__retire(c, t, off);
	NS_FAULT("del:retired");
	intent_clear(sl);
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
			uint64_t score = is_expired(it, now) ? 0 : 1u + it->atime;
			if (score < best_score) {
				best_score = score;
				best = &bk->slot[i];
			}
		}
		bk = ns__chain_next(c, bk, &err);
	}
	return best;
}

int ns_set(ns_space *s, const void *key, size_t klen, const void *val,
	   size_t vlen, uint64_t ttl_ms)
{
	ns_cache *c;
	struct ns_thr *t;
	struct ns_slot_shm *sl;
	struct ns_item_shm *it;
	uint64_t h, b, now, *word = NULL, *empty = NULL;
	ns_off_t off, old;
	int cls, err = 0;

	if (s == NULL || (val == NULL && vlen != 0))
		return NS_EINVAL;
	err = check_key(key, klen);
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

	/* 1. Build the item completely in a chunk nobody else can see. */
	err = ns__alloc(c, t, cls, &off);
	if (err)
		return err;
	it = (struct ns_item_shm *)(c->base + off);
	/* The version goes first: a read-only reader that sees any byte of
	 * the new contents then also sees the new version (seqlock-like). */
	ns_store_relaxed(&it->version, ns__next_version(t));
	cmm_smp_wmb();
	it->expire_ms = ttl_ms ? now + ttl_ms : 0;
	it->hash = (uint32_t)h;
	it->atime = rel_seconds(c, now);
	it->vlen = (uint32_t)vlen;
	it->klen = (uint16_t)klen;
	it->space = (uint16_t)s->id;
	it->gen = ns_load_relaxed(&s->shm->gen);
	it->uflags = 0;
	it->state = NS_CH_LIVE;
	memcpy(item_key(it), key, klen);
	if (vlen)
		memcpy(item_key(it) + klen, val, vlen);
	NS_FAULT("set:built");

	/* 2. Lock the bucket; in_bucket first, so that recovery finds a lock
	 * we die holding before the rest of the intent is written. */
	ns_store_relaxed(&sl->in_bucket, b + 1);
	err = ns__bucket_lock(c, t, b);
	if (err) {
		ns_store_relaxed(&sl->in_bucket, 0ull);
		drop_new(c, t, off);
		return err;
	}

	/* 3. Find the old item, or room. */
	old = lookup(c, b, tag_of(h), s->id, key, klen, &word, &err);
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
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_PUBLISHED);

	/* 5. Unlock. */
	ns__bucket_unlock(c, t, b);
	ns_store_relaxed(&sl->in_phase, (uint32_t)NS_PH_UNLOCKED);
	NS_FAULT("set:unlocked");

	/* 6. Retire the old item; 7. done. */
	if (old) {
		ns__retire(c, t, old);
		NS_FAULT("set:retired");
	}
	intent_clear(sl);
	ns_store_relaxed(&sl->sets, sl->sets + 1);
	maybe_reclaim(c, t);
	return 0;

fail_locked:
	ns__bucket_unlock(c, t, b);
	ns_store_relaxed(&sl->in_bucket, 0ull);
	drop_new(c, t, off);
	return err;
}

int ns_del(ns_space *s, const void *key, size_t klen)
{
	ns_cache *c;
	struct ns_thr *t;
	uint64_t h, b, *word = NULL;
	ns_off_t old;
	int err;

	if (s == NULL)
		return NS_EINVAL;
	err = check_key(key, klen);
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
	ns_store_relaxed(&t->slot->in_bucket, b + 1);
	err = ns__bucket_lock(c, t, b);
	if (err) {
		intent_clear(t->slot);
		return err;
	}
	old = lookup(c, b, tag_of(h), s->id, key, klen, &word, &err);
	if (old == 0) {
		ns__bucket_unlock(c, t, b);
		intent_clear(t->slot);
		return err ? err : NS_ENOTFOUND;
	}
	/* An expired or cleared item is removed, but reads as absent. */
	struct ns_item_shm *it = (struct ns_item_shm *)(c->base + old);
	bool visible = !is_expired(it, ns__now_ms()) &&
		       it->gen == ns_load_relaxed(&s->shm->gen);
	ns__unlink_locked(c, t, b, word, old);
	ns_store_relaxed(&t->slot->dels, t->slot->dels + 1);
	maybe_reclaim(c, t);
	return visible ? 0 : NS_ENOTFOUND;
}
