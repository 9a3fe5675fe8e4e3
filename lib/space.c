/*
 * space.c - namespaces: the table, their settings, their counters, and
 * clearing one in constant time.
 *
 * A namespace is an entry of a fixed table in the segment, found by its
 * prefix ("root:domain") and named in every item by its id (index + 1).
 * Entries are created under the table lock and never removed, so an id
 * stays valid for the life of the segment.
 *
 * Counters.  A get must not write a shared line (rule 3), so the event
 * counters (hits, misses, sets, deletes, evictions, expirations) live in
 * the client slots: each slot keeps NS_SLOT_SCTR counter sets, indexed by
 * namespace id.  When a slot needs an entry that another namespace holds,
 * it first adds that entry into the other namespace's shared totals.  A
 * namespace's count is its shared total plus every slot entry that names
 * it; a dead client's entries stay in its slot and keep counting, so
 * nothing is lost when a process dies.  items and bytes are shared atomics
 * instead, changed by writers (which write shared lines anyway), because a
 * quota check needs them at once; a process killed between its store and
 * the add leaves them off by one item until the next audit (ns__audit, run
 * by nsd when recovery asked for one and no other client is attached)
 * recounts them from the index.
 *
 * Clearing bumps the namespace's generation.  Items carry the generation
 * they were stored under; a read that finds an older one treats it as
 * absent, and eviction treats it like an expired item (victim first).  The
 * cost is one store whatever the namespace holds.  A generation is 32 bits:
 * it would take four billion clears for an uncollected item to look current.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "ns_internal.h"

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
		/* valid_prefix() bounded the length below sizeof(sp->prefix). */
		memset(sp->prefix, 0, sizeof(sp->prefix));
		memcpy(sp->prefix, prefix, strlen(prefix));
		sp->id = free_idx + 1;
		ns_store_release(&sp->state, 1u);
		i = (int)free_idx;
	}
	ns_store_release(&c->hdr->spaces_lock, 0u);
	if (i < 0)
		return NS_ESPACES;
	return space_handle(c, (uint32_t)i, out);
}

/* ---- counters ----------------------------------------------------------- */

struct ns_sctr_shm *ns__sctr_slow(ns_cache *c, struct ns_slot_shm *sl,
				  uint32_t space)
{
	struct ns_sctr_shm *e = &sl->sctr[space & (NS_SLOT_SCTR - 1)];
	uint32_t old = e->space;

	if (old != 0 && old <= c->hdr->nspaces) {
		struct ns_space_shm *sp = &c->spaces[old - 1];
		/* Fold first, then reuse: a reader summing meanwhile may
		 * count these twice for an instant, never lose them. */
		ns_add_return(&sp->hits, e->hits);
		ns_add_return(&sp->misses, e->misses);
		ns_add_return(&sp->sets, e->sets);
		ns_add_return(&sp->dels, e->dels);
		ns_add_return(&sp->evictions, e->evictions);
		ns_add_return(&sp->expirations, e->expirations);
	}
	ns_store_relaxed(&e->space, 0u);
	ns_store_relaxed(&e->hits, 0ull);
	ns_store_relaxed(&e->misses, 0ull);
	ns_store_relaxed(&e->sets, 0ull);
	ns_store_relaxed(&e->dels, 0ull);
	ns_store_relaxed(&e->evictions, 0ull);
	ns_store_relaxed(&e->expirations, 0ull);
	ns_store_release(&e->space, space);
	return e;
}

int ns__acct_gone(ns_cache *c, struct ns_thr *t, struct ns_item_shm *it,
		  int why)
{
	uint32_t id = it->space;
	struct ns_sctr_shm *e;
	int cls;

	if (id == 0 || id > c->hdr->nspaces)
		return NS_GONE_EXPIRE; /* no namespace: nobody's item */
	cls = ns__class_of(c, (ns_off_t)((uint8_t *)it - c->base));
	ns_add_return(&c->spaces[id - 1].items, (int64_t)-1);
	if (cls >= 0)
		ns_add_return(&c->spaces[id - 1].bytes,
			      -(int64_t)c->classes[cls].size);
	if (!ns__visible(c, it, ns__now_ms()))
		why = NS_GONE_EXPIRE;
	e = ns__sctr(c, t->slot, id);
	switch (why) {
	case NS_GONE_DEL:
		ns_store_relaxed(&e->dels, e->dels + 1);
		break;
	case NS_GONE_EVICT:
		ns_store_relaxed(&e->evictions, e->evictions + 1);
		break;
	default:
		ns_store_relaxed(&e->expirations, e->expirations + 1);
		break;
	}
	return why;
}

/* ---- settings, info, list, clear ---------------------------------------- */

int ns_space_config(ns_space *s, uint64_t default_ttl_ms, uint64_t quota_bytes)
{
	if (s == NULL || default_ttl_ms == NS_TTL_NEVER)
		return NS_EINVAL;
	if (s->c->rdonly)
		return NS_ERDONLY;
	ns_store_relaxed(&s->shm->default_ttl_ms, default_ttl_ms);
	ns_store_relaxed(&s->shm->quota_bytes, quota_bytes);
	return 0;
}

static void space_info(ns_cache *c, uint32_t i, struct ns_space_info *o)
{
	struct ns_space_shm *sp = &c->spaces[i];
	uint32_t id = i + 1;
	int64_t v;

	memset(o, 0, sizeof(*o));
	o->id = id;
	o->generation = ns_load_relaxed(&sp->gen);
	memcpy(o->prefix, sp->prefix, sizeof(o->prefix));
	o->prefix[NS_PREFIX_MAX] = '\0';
	o->default_ttl_ms = ns_load_relaxed(&sp->default_ttl_ms);
	o->quota_bytes = ns_load_relaxed(&sp->quota_bytes);
	v = ns_load_relaxed(&sp->items);
	o->items = v > 0 ? (uint64_t)v : 0;
	v = ns_load_relaxed(&sp->bytes);
	o->bytes = v > 0 ? (uint64_t)v : 0;
	o->hits = ns_load_relaxed(&sp->hits);
	o->misses = ns_load_relaxed(&sp->misses);
	o->sets = ns_load_relaxed(&sp->sets);
	o->deletes = ns_load_relaxed(&sp->dels);
	o->evictions = ns_load_relaxed(&sp->evictions);
	o->expirations = ns_load_relaxed(&sp->expirations);
	for (uint32_t k = 0; k < c->nslots; k++) {
		struct ns_sctr_shm *e = &c->slots[k].sctr[id & (NS_SLOT_SCTR - 1)];
		if (ns_load_acquire(&e->space) != id)
			continue;
		o->hits += ns_load_relaxed(&e->hits);
		o->misses += ns_load_relaxed(&e->misses);
		o->sets += ns_load_relaxed(&e->sets);
		o->deletes += ns_load_relaxed(&e->dels);
		o->evictions += ns_load_relaxed(&e->evictions);
		o->expirations += ns_load_relaxed(&e->expirations);
	}
}

int ns_space_info(ns_space *s, struct ns_space_info *out)
{
	if (s == NULL || out == NULL)
		return NS_EINVAL;
	space_info(s->c, s->id - 1, out);
	return 0;
}

int ns_space_list(ns_cache *c, struct ns_space_info *out, size_t cap, size_t *n)
{
	size_t k = 0;

	if (c == NULL || n == NULL || (out == NULL && cap != 0))
		return NS_EINVAL;
	for (uint32_t i = 0; i < c->hdr->nspaces; i++) {
		if (ns_load_acquire(&c->spaces[i].state) != 1)
			continue;
		if (k < cap)
			space_info(c, i, &out[k]);
		k++;
	}
	*n = k;
	return 0;
}

int ns_space_clear(ns_space *s)
{
	if (s == NULL)
		return NS_EINVAL;
	if (s->c->rdonly)
		return NS_ERDONLY;
	/* An atomic add, so that two concurrent clears both count. */
	ns_add_return(&s->shm->gen, 1u);
	return 0;
}
