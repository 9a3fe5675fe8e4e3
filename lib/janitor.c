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
 * with the ordinary delete protocol and retired.  A step whose sample was
 * more than NS_EXPIRE_AGAIN_PCT% dead is followed by another at once; the
 * cycle ends when a step finds little, or when its time budget is spent.
 * An idle cache thus costs one step per tick, and a mass expiry is worked
 * through as fast as the budget allows.
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

#include "ns_internal.h"

#define NS_EXPIRE_STEP_BUCKETS 256 /* chains looked at per step */
#define NS_EXPIRE_AGAIN_PCT 10     /* dead share of a sample that calls for another step */
#define NS_EXPIRE_BATCH 64         /* dead items remembered per chain walk */

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Unlink OFF from primary bucket B if it is still there and still dead. */
static int expire_one(ns_cache *c, struct ns_thr *t, uint64_t b, ns_off_t off,
		      uint64_t now)
{
	uint64_t *word;
	int err;

	ns_store_relaxed(&t->slot->in_bucket, b + 1);
	err = ns__bucket_lock(c, t, b);
	if (err) {
		ns_store_relaxed(&t->slot->in_bucket, 0ull);
		return err;
	}
	word = ns__chain_find_locked(c, b, off);
	if (word == NULL || ns__visible(c, (struct ns_item_shm *)(c->base + off), now)) {
		ns__bucket_unlock(c, t, b);
		ns_store_relaxed(&t->slot->in_bucket, 0ull);
		return 0; /* replaced, removed or refreshed meanwhile */
	}
	ns__unlink_locked(c, t, b, word, off, NS_GONE_EXPIRE);
	return 1;
}

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
				st->sampled++;
				if (!ns__visible(c, it, now) && ndead < NS_EXPIRE_BATCH)
					dead[ndead++] = off;
			}
			bk = ns__chain_next(c, bk, &err);
		}
		ns__read_exit(t->slot);
		st->buckets++;
		for (int i = 0; i < ndead; i++) {
			int r = expire_one(c, t, b, dead[i], now);
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
	uint64_t t0 = mono_us();
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
		    mono_us() - t0 >= budget_us)
			break;
	}
	ns_add_return(&c->hdr->expired, st->expired - before);
	st->us += mono_us() - t0;
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
