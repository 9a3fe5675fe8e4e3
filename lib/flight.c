/*
 * flight.c - ns_get_or_set: read-through with single flight across
 * processes.
 *
 * A miss on a popular key must not send every worker to the database at
 * once (the "thundering herd" or cache stampede).  The segment holds a
 * small table of flight entries, indexed by the key's hash.  The first
 * process that misses claims the entry with one CAS of a word naming its
 * slot and the key's hash bits, runs its loader, stores the value, clears
 * the word and bumps the entry's futex word, waking the waiters.  Everyone
 * else who misses the same key finds the entry claimed for that hash and
 * sleeps on the futex (FUTEX_WAIT on a shared mapping: the kernel keys it
 * by file and offset, so it works across processes mapping the segment at
 * different addresses); on waking it simply reads the key again.
 *
 * Nobody waits forever (rule 7).  Waiters sleep in short slices and, in
 * between, check that the claimer's slot is still owned (its OFD lock) by
 * the same claim; if the claimer died, or failed and cleared the word, a
 * waiter claims the entry itself and loads.  A waiter that has waited
 * wait_ms in total gives up with NS_ETIMEDOUT.  A key's flight may sit in
 * any of NS_FLIGHT_PROBE entries from its hash on (linear probing): a
 * caller first looks for one claimed for its hash in all of them, then
 * claims the first free one.  Only when all of them are held by other
 * keys does it load without single flight, which costs a duplicate load,
 * never a wrong value.  (With one entry a key, two of a thousand hot keys
 * sharing an entry and missing together cost a duplicate load each time:
 * the prefork demo of examples/ saw it.)
 *
 * Stale-while-revalidate: with stale_ms, a caller that finds the value
 * expired less than stale_ms ago and the key's flight already claimed gets
 * the stale value at once; only the claimer waits for the loader.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ns_internal.h"

#define NS_FLIGHT_WAIT_MS 5000 /* default total wait for another loader */
#define NS_FLIGHT_SLICE_MS 20  /* sleep between liveness checks of the claimer */
#define NS_FLIGHT_PROBE 4      /* entries a key's flight may use */

static void futex_wait(uint32_t *word, uint32_t seen, uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
			       .tv_nsec = (long)(ms % 1000) * 1000000L };

	/* Shared futex (no FUTEX_PRIVATE_FLAG): the waiters are other
	 * processes.  EAGAIN (the word moved), EINTR and ETIMEDOUT all mean
	 * "look again". */
	syscall(SYS_futex, word, FUTEX_WAIT, seen, &ts, NULL, 0);
}

static void futex_wake_all(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Whether the claimer named by W (for entry FL) can no longer finish. */
static bool claimer_gone(ns_cache *c, struct ns_thr *t, struct ns_flight_shm *fl,
			 uint64_t w)
{
	uint32_t idx = (uint32_t)(w >> 48) - 1;
	uint32_t claims;

	if (idx >= c->nslots)
		return true; /* not a slot: a damaged word; take it over */
	claims = ns_load_relaxed(&fl->claims);
	if (claims != 0 && ns_load_relaxed(&c->slots[idx].claims) != claims)
		return true; /* the slot was given to somebody else since */
	return ns__slot_alive(c, t->fd, idx) == 0;
}

static void release(struct ns_flight_shm *fl)
{
	/* claims first: the next claimer's word is never seen with ours. */
	ns_store_relaxed(&fl->claims, 0u);
	ns_store_release(&fl->word, 0ull);
	ns_add_return(&fl->seq, 1u);
	futex_wake_all(&fl->seq);
}

/* Run LOADER, store its value and copy it to the caller. */
static int load(ns_space *s, const void *key, size_t klen, void *buf,
		size_t cap, size_t *vlen, ns_loader_fn *loader, void *arg)
{
	struct ns_value v = { 0 };
	int err = loader(arg, key, klen, &v);

	if (err > 0)
		err = NS_EINVAL; /* a loader returns 0 or a negative error */
	if (err)
		return err;
	if (v.val == NULL && v.vlen != 0)
		return NS_EINVAL;
	err = ns_set_ex(s, key, klen, v.val, v.vlen, v.ttl_ms, v.flags, NULL);
	if (err)
		return err;
	*vlen = v.vlen;
	if (v.vlen > cap)
		return NS_ERANGE;
	if (v.vlen)
		memcpy(buf, v.val, v.vlen);
	return 0;
}

int ns_get_or_set(ns_space *s, const void *key, size_t klen, void *buf,
		  size_t cap, size_t *vlen, ns_loader_fn *loader, void *arg,
		  const struct ns_load_opts *opts)
{
	ns_cache *c;
	struct ns_thr *t;
	struct ns_flight_shm *fl = NULL, *free_fl;
	uint64_t h, mine, wait_ms, stale_ms, deadline;
	int err = 0;

	if (s == NULL || loader == NULL || vlen == NULL || (buf == NULL && cap != 0))
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
	wait_ms = opts && opts->wait_ms ? opts->wait_ms : NS_FLIGHT_WAIT_MS;
	stale_ms = opts ? opts->stale_ms : 0;
	h = ns__hash(c->hdr->hash_seed, s->id, key, klen);
	mine = (uint64_t)(t->idx + 1) << 48 | (h & NS_SLOT_OFF_MASK);
	deadline = ns__mono_ms();
	deadline = wait_ms > UINT64_MAX - deadline ? UINT64_MAX : deadline + wait_ms;

	for (;;) {
		bool stale = false;
		uint32_t seq = 0;
		uint64_t w = 0;

		err = ns__get_stale(s, key, klen, h, buf, cap, vlen, stale_ms, &stale);
		if ((err == 0 || err == NS_ERANGE) && !stale)
			return err;
		if (err != 0 && err != NS_ERANGE && err != NS_ENOTFOUND)
			return err;
		/* A miss, or a stale value: somebody must load.  A hit never
		 * touches the flight entry.  Reading seq only now loses no
		 * wake-up: a flight that ended since our read shows as a
		 * free word, which we claim and then read the key again. */
		fl = NULL;
		free_fl = NULL;
		for (unsigned i = 0; i < NS_FLIGHT_PROBE; i++) {
			struct ns_flight_shm *f = &c->flights[(h + i) & (NS_FLIGHTS - 1)];
			uint32_t sq = ns_load_acquire(&f->seq);
			uint64_t fw = ns_load_acquire(&f->word);

			if (fw == 0) {
				if (free_fl == NULL)
					free_fl = f;
			} else if ((fw & NS_SLOT_OFF_MASK) == (h & NS_SLOT_OFF_MASK)) {
				fl = f; /* this key's flight */
				seq = sq;
				w = fw;
				break;
			}
		}
		if (fl == NULL && free_fl != NULL) {
			if (ns_cmpxchg(&free_fl->word, 0ull, mine) == 0) {
				fl = free_fl;
				break;
			}
			continue;
		}
		if (fl == NULL || w == mine) {
			/* Other keys' flights hold every entry we may use, or
			 * the flight is this very thread's (a loader asking for
			 * its own key): load without single flight. */
			if (stale)
				return err;
			return load(s, key, klen, buf, cap, vlen, loader, arg);
		}
		if (stale)
			return err; /* served stale while the claimer reloads */
		if (claimer_gone(c, t, fl, w)) {
			if (ns_cmpxchg(&fl->word, w, mine) == w)
				break;
			continue;
		}
		uint64_t now = ns__mono_ms();
		if (now >= deadline)
			return NS_ETIMEDOUT;
		futex_wait(&fl->seq, seq, deadline - now < NS_FLIGHT_SLICE_MS ?
			   deadline - now : NS_FLIGHT_SLICE_MS);
	}

	/* Claimed.  The flight before ours may have stored the value between
	 * our read and our claim: look once more before loading. */
	ns_store_relaxed(&fl->claims, t->slot->claims);
	{
		bool stale = false;
		err = ns__get_stale(s, key, klen, h, buf, cap, vlen, 0, &stale);
		if (err == 0 || err == NS_ERANGE) {
			release(fl);
			return err;
		}
	}
	NS_FAULT("flight:claimed");
	err = load(s, key, klen, buf, cap, vlen, loader, arg);
	release(fl);
	return err;
}
