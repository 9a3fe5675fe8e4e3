/*
 * ns_internal.h - private interface shared by the files of lib/, the
 * daemon, nsctl and the tests.  Nothing here is part of the public ABI.
 *
 * It holds the process-local side of every shared structure (the shared
 * side is in ns_shm.h), the atomic wrappers every racy access goes through,
 * and the internal entry points (ns__*) of each part.
 */
#ifndef NS_INTERNAL_H
#define NS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <urcu/arch.h>
#include <urcu/compiler.h>
#include <urcu/uatomic.h>

#include "ns_shm.h"

/* ---- atomics: every racy access names its ordering -------------------- */

/* NS_TSAN: built with ThreadSanitizer (gcc says so with __SANITIZE_THREAD__,
 * clang with __has_feature). */
#if defined(__SANITIZE_THREAD__)
#define NS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NS_TSAN 1
#endif
#endif

#ifndef NS_TSAN
#define ns_load_relaxed(p) CMM_LOAD_SHARED(*(p))
#define ns_store_relaxed(p, v) CMM_STORE_SHARED(*(p), (v))

/* Acquire: later loads and stores stay after this load.  liburcu's
 * cmm_smp_rmb() is a compiler barrier on x86 (TSO) and dmb ishld on arm64,
 * which orders the load before later loads and stores. */
#define ns_load_acquire(p)                                                   \
	__extension__({                                                      \
		__typeof__(*(p)) ns_v_ = CMM_LOAD_SHARED(*(p));              \
		cmm_smp_rmb();                                               \
		ns_v_;                                                       \
	})

/* Release: earlier loads and stores are visible before this store.  On x86
 * (TSO) only the compiler may reorder them; elsewhere a full fence. */
#if defined(__x86_64__) || defined(__i386__)
#define ns__release_fence() cmm_barrier()
#else
#define ns__release_fence() cmm_smp_mb()
#endif
#define ns_store_release(p, v)                                               \
	do {                                                                 \
		ns__release_fence();                                         \
		CMM_STORE_SHARED(*(p), (v));                                 \
	} while (0)

/* Full-barrier read-modify-writes (liburcu's uatomic_* imply cmm_smp_mb). */
#define ns_cmpxchg(p, o, n) uatomic_cmpxchg((p), (o), (n)) /* returns the old value */
#define ns_add_return(p, v) uatomic_add_return((p), (v))

#else /* NS_TSAN */
/*
 * ThreadSanitizer sees neither liburcu's volatile accesses as atomic (a
 * volatile load is a plain load to it) nor its uatomic_* and fences (inline
 * asm on x86), so every shared word would be reported as a race and no
 * acquire/release pair would order anything.  The same orderings through
 * the __atomic builtins, which it instruments.  The RMWs stay seq_cst, as
 * liburcu's are full barriers.
 */
#define ns_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ns_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ns_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ns_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ns_cmpxchg(p, o, n)                                                  \
	__extension__({                                                      \
		__typeof__(*(p)) ns_o_ = (o);                                \
		__atomic_compare_exchange_n((p), &ns_o_, (n), false,         \
					    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
		ns_o_;                                                       \
	})
#define ns_add_return(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
#endif /* NS_TSAN */

#define ns_likely(x) __builtin_expect(!!(x), 1)
#define ns_unlikely(x) __builtin_expect(!!(x), 0)

/* ---- process-local handles ---------------------------------------------- */

/* One thread's binding to a client slot of one cache. */
struct ns_thr {
	struct ns_cache *c;
	uint32_t idx;              /* slot index */
	struct ns_slot_shm *slot;
	int fd;                    /* own open file description: holds the slot's OFD lock */
	unsigned forkgen;          /* ns__forkgen when claimed; a child sees a mismatch */
	uint64_t rng;              /* xorshift state for eviction sampling */
	uint64_t pin_gave_up;      /* a free-list pin we waited out once (slab.c) */
	uint64_t reclaim_seen;     /* hdr.reclaim_ask_ms when we last answered it */
	struct ns_thr *next;       /* c->thrs list, under ns__mu */
};

struct ns_space {
	struct ns_cache *c;
	uint32_t id;
	struct ns_space_shm *shm;
	struct ns_space *next;     /* c->spaces list, under ns__mu */
};

struct ns_cache {
	char name[NS_NAME_MAX + 1];
	int fd;                    /* the attach descriptor */
	bool rdonly;
	bool membarrier_ok;        /* this process registered for global expedited */
	uint8_t *base;
	size_t size;
	struct ns_hdr_shm *hdr;
	struct ns_slot_shm *slots;
	struct ns_space_shm *spaces;
	struct ns_flight_shm *flights;
	uint8_t *audit_map;
	struct ns_class_shm *classes;
	struct ns_page_shm *pages;
	struct ns_bucket_shm *buckets;
	struct ns_bucket_shm *over;
	uint64_t mask;             /* nbuckets - 1 */
	uint32_t nslots, nclasses, npages;
	uint64_t nover;
	uint64_t retire_batch;     /* retired bytes that call for a reclaim (ops.c) */
	uint64_t retire_cap;       /* ... even while nsd ticks */
	ns_off_t data_off;
	pthread_key_t key;         /* -> struct ns_thr of the calling thread */
	struct ns_thr *thrs;       /* every binding this process made; ns__mu */
	struct ns_space *open_spaces; /* ns__mu */
};

/* Serializes the process-local lists above; held across fork by atfork
 * handlers so a child never inherits it locked. */
extern pthread_mutex_t ns__mu;
extern unsigned ns__forkgen;

/* ---- error.c ------------------------------------------------------------ */
#define ns__die(...) ns__die_at(__FILE__, __LINE__, __VA_ARGS__)
__attribute__((noreturn, format(printf, 3, 4))) void
ns__die_at(const char *file, int line, const char *fmt, ...);
static inline int ns__errno(int e) { return -(NS__ERRNO_BASE + e); }

/* ---- fault.c: fault points (empty in release builds) -------------------- */
#ifdef NS_FAULT_POINTS
void ns__fault_hit(const char *name);
extern const char *ns__fault_name; /* from $NS_FAULT or ns__fault_set() */
#define NS_FAULT(name)                                                       \
	do {                                                                 \
		if (ns_unlikely(ns__fault_name != NULL))                     \
			ns__fault_hit(name);                                 \
	} while (0)
#else
#define NS_FAULT(name) do { } while (0)
#endif
/* Set the fault point this process stops at; ACTION 'k' SIGKILLs itself,
 * 's' SIGSTOPs itself.  Returns false when fault points are compiled out. */
bool ns__fault_set(const char *name, char action);

/* ---- segment.c ---------------------------------------------------------- */
uint64_t ns__layout_fingerprint(void);
bool ns__valid_name(const char *s, size_t max);
extern unsigned ns__create_wait_ms; /* attach's wait for a creator, ms */
uint64_t ns__now_ms(void);          /* CLOCK_REALTIME, or the test clock */
/* The same at tick resolution (a few ms), for hints that count seconds:
 * CLOCK_REALTIME_COARSE reads a word the kernel updates, no TSC read. */
uint64_t ns__coarse_ms(void);
uint64_t ns__mono_us(void);        /* CLOCK_MONOTONIC, for timeouts and budgets */
static inline uint64_t ns__mono_ms(void) { return ns__mono_us() / 1000u; }

/* The checks every call makes of a key: NS_EINVAL or NS_E2BIG. */
static inline int ns__check_key(const void *key, size_t klen)
{
	if (key == NULL || klen == 0)
		return NS_EINVAL;
	if (klen > NS_KEY_MAX)
		return NS_E2BIG;
	return 0;
}
void ns__test_clock(uint64_t ms);   /* 0: real clock again */
uint64_t ns__hash(uint64_t seed, uint32_t space, const void *key, size_t len);
/* A pointer to LEN bytes at OFF, or NULL when that range is outside the
 * segment. */
static inline void *ns__ptr(const ns_cache *c, ns_off_t off, size_t len)
{
	if (off == 0 || off > c->size || len > c->size - off)
		return NULL;
	return c->base + off;
}

/* ---- slot.c: client slots, liveness, thread binding -------------------- */
struct ns_thr *ns__thr_slow(ns_cache *c, int *err);
static inline struct ns_thr *ns__thr(ns_cache *c, int *err)
{
	struct ns_thr *t = pthread_getspecific(c->key);
	if (ns_likely(t != NULL && t->forkgen == ns__forkgen))
		return t;
	return ns__thr_slow(c, err);
}
void ns__thr_release(struct ns_thr *t);
void ns__thr_exit(void *t);
/* 1: a live process owns slot IDX; 0: nobody does; <0: error. */
int ns__slot_alive(ns_cache *c, int fd, uint32_t idx);
int ns__lock_byte(int fd, off_t byte, short type, bool wait);
int ns__open_own_fd(ns_cache *c);
uint64_t ns__next_version(struct ns_thr *t);

/* ---- epoch.c: cross-process reclamation --------------------------------- */
static inline void ns__read_enter(ns_cache *c, struct ns_slot_shm *s)
{
	uint64_t e = ns_load_relaxed(&c->hdr->epoch);

#ifndef NS_TSAN
	ns_store_relaxed(&s->epoch, e);
	/* Orders the store of our epoch before the loads of the index that
	 * follow.  With membarrier registered the reclaimer pays this fence
	 * for us (it runs MEMBARRIER_CMD_GLOBAL_EXPEDITED before scanning);
	 * otherwise we pay it here. */
	if (ns_likely(c->membarrier_ok))
		cmm_barrier();
	else
		cmm_smp_mb();
#else
	/* TSan models neither membarrier nor fences (and gcc refuses
	 * atomic_thread_fence under -fsanitize=thread), so its build never
	 * registers membarrier and the reader's fence is a seq_cst store,
	 * the store-load order in terms of C11 atomics.  TSan still cannot
	 * check that order (it does not model weak memory); what it checks
	 * is that every item access is ordered by the release/acquire
	 * pairs of the index words and of slot.epoch. */
	(void)c;
	__atomic_store_n(&s->epoch, e, __ATOMIC_SEQ_CST);
#endif
}
static inline void ns__read_exit(struct ns_slot_shm *s)
{
	/* Release: our reads of items happen before we are seen as gone. */
	ns_store_release(&s->epoch, 0);
}
void ns__retire(ns_cache *c, struct ns_thr *t, ns_off_t off);
void ns__retire_slot(ns_cache *c, struct ns_slot_shm *s, ns_off_t off);
/* Advance the epoch and free what this slot retired that no reader can see.
 * Returns the number of chunks freed. */
size_t ns__reclaim(ns_cache *c, struct ns_thr *t);
/* nsd, once a tick: advance the epoch, pay the membarrier, and publish the
 * reader floor as hdr.safe_epoch.  Returns the floor (0: unknown). */
size_t ns__janitor_floor(ns_cache *c);
/* Free what the caller retired before hdr.safe_epoch: no membarrier, no
 * scan.  Returns the number freed. */
size_t ns__reclaim_cheap(ns_cache *c, struct ns_thr *t);
/* The same for any slot S whose owner we are (ourselves, or a dead slot we
 * hold the lock of).  CACHE: may free into S's chunk cache. */
size_t ns__reclaim_slot(ns_cache *c, struct ns_slot_shm *s, bool cache);
/* Whether retired chunks (in any slot) wait only for a grace period that
 * another slot's reader holds open: the slot with the oldest reader epoch,
 * or -1, and that epoch in *EPOCH.  A hint read without locks, for
 * ns__alloc's bounded wait. */
int ns__grace_blocker(ns_cache *c, struct ns_thr *t, uint64_t *epoch);
int ns__membarrier(ns_cache *c);

/* ---- slab.c ------------------------------------------------------------- */
void ns__slab_init(ns_cache *c);
int ns__class_for(const ns_cache *c, size_t bytes); /* <0: too big */
int ns__class_of(const ns_cache *c, ns_off_t off);  /* <0: not a chunk start */
struct ns_page_shm *ns__page_of(const ns_cache *c, ns_off_t off); /* NULL: not in a page */
void ns__push_free_raw(ns_cache *c, int cls, ns_off_t off);
/* Park the chunks of draining pages that sit on class CLS's free list,
 * unlinking them under a pin (clients keep allocating).  Returns the number
 * parked.  nsd only. */
size_t ns__slab_sift(ns_cache *c, struct ns_thr *t, int cls);
/* Pin the head of CLS's free list for T: *OUT is the pinned chunk (0: the
 * list is empty, nothing pinned), and every link below it holds still until
 * ns__unpin.  NS_EBUSY if another live slot holds the class's pin. */
int ns__pin_head(ns_cache *c, struct ns_thr *t, int cls, ns_off_t *out);
/* Move T's pin of CLS down to OFF, a chunk below the pinned one. */
void ns__pin_move(ns_cache *c, struct ns_thr *t, int cls, ns_off_t off);
void ns__unpin(ns_cache *c, struct ns_thr *t, int cls);
/* Clear every pin of slot IDX; its recoverer holds its lock. */
void ns__pins_release(ns_cache *c, uint32_t idx);
/* Take a chunk of class CLS; on success it is recorded as t->slot->in_new
 * with phase BUILT.  May reclaim and evict.  NS_ENOMEM when nothing is left. */
int ns__alloc(ns_cache *c, struct ns_thr *t, int cls, ns_off_t *out);
/* The same from free memory only (cache, free list, uncarved pages): no
 * reclamation wait, no eviction.  NS_ENOMEM when there is none. */
int ns__alloc_free(ns_cache *c, struct ns_thr *t, int cls, ns_off_t *out);
/* Give a chunk no reader can see back to the allocator (own cache first). */
void ns__free(ns_cache *c, struct ns_thr *t, ns_off_t off);
/* Push OFF on its class free list.  The caller has set BUSY->slab_busy (the
 * slot whose record the chunk just left), so a death here flags an audit. */
void ns__push_free(ns_cache *c, int cls, ns_off_t off);
/* Evict about one item of class CLS (expired ones first).  0 if it
 * unlinked something. */
int ns__evict(ns_cache *c, struct ns_thr *t, int cls);
/* How long a store waits for retired chunks of its class before evicting
 * (slab.c, "limbo"); 50 ms, and only tests change it. */
extern unsigned ns__limbo_wait_ms;

/* ---- index.c ------------------------------------------------------------ */
#define NS_LOCK_TIMEOUT_MS 2000 /* a live owner holding longer gets NS_EBUSY */
int ns__bucket_lock(ns_cache *c, struct ns_thr *t, uint64_t b);
void ns__bucket_unlock(ns_cache *c, struct ns_thr *t, uint64_t b);
int ns__owner_lock(ns_cache *c, struct ns_thr *t, uint32_t *word);
/* The next bucket of a chain, NULL at the end; *err NS_ECORRUPT on a bad link. */
struct ns_bucket_shm *ns__chain_next(ns_cache *c, struct ns_bucket_shm *bk, int *err);
/* The slot word of B's chain that holds OFF, or NULL.  Lock held. */
uint64_t *ns__chain_find_locked(ns_cache *c, uint64_t b, ns_off_t off);
int ns__over_claim_locked(ns_cache *c, uint64_t b, struct ns_bucket_shm *tail,
			  uint64_t **slotp);
/* The item at OFF, or NULL when OFF cannot be the start of a chunk. */
static inline struct ns_item_shm *ns__item(const ns_cache *c, ns_off_t off)
{
	if (off < c->data_off || (off & 7) != 0 ||
	    off > c->size - sizeof(struct ns_item_shm))
		return NULL;
	return (struct ns_item_shm *)(c->base + off);
}

/* ---- the audit's handshake (recover.c) --------------------------------- */

/* An operation that moves chunks between records runs inside a write
 * section of its slot: wsec is odd inside.  The audit waits until every
 * section that may not have seen hdr.audit_active has ended.  Entering from
 * an odd value (a dead owner's, during recovery) still changes it. */
static inline void ns__wsec_enter(ns_cache *c, struct ns_slot_shm *s)
{
	ns_store_relaxed(&s->wsec, (s->wsec + 1u) | 1u);
	/* Orders the store before our loads of audit_active; with membarrier
	 * the auditor pays this fence, as for the read-side epoch.  The odd
	 * value must also be seen before any store the section makes (an
	 * auditor trusts a walk of our lists only if wsec stayed even):
	 * store-store order, free on x86. */
	if (ns_likely(c->membarrier_ok))
		cmm_smp_wmb();
	else
		cmm_smp_mb();
}

static inline void ns__wsec_exit(struct ns_slot_shm *s)
{
	ns_store_release(&s->wsec, s->wsec + 1u);
}

/* The chunk trace (trace.c; meson -Dchunk_trace=true): NS_TR records that
 * this line moved chunk OFF.  NS_TR_FILE names the file (trace.c's table). */
void ns__trace_open(ns_cache *c);
void ns__trace_print(ns_cache *c, ns_off_t off, FILE *f);
#ifdef NS_CHUNK_TRACE
void ns__trace(ns_cache *c, ns_off_t off, unsigned file, unsigned line);
#ifndef NS_TR_FILE
#define NS_TR_FILE 0
#endif
#define NS_TR(c, off) ns__trace((c), (off), NS_TR_FILE, __LINE__)
#else
#define NS_TR(c, off) do { } while (0)
#endif
void ns__shade_slow(ns_cache *c, ns_off_t off);
/* A chunk changes records: while an audit runs, say so in the audit map. */
static inline void ns__shade(ns_cache *c, ns_off_t off)
{
	if (ns_unlikely(ns_load_relaxed(&c->hdr->audit_active) != 0))
		ns__shade_slow(c, off);
}
/* The bit of OFF in the audit map (page * chunks a page can hold + index
 * in the page), or UINT64_MAX when OFF is not a chunk start. */
uint64_t ns__chunk_bit(const ns_cache *c, ns_off_t off);

/* ---- space.c ------------------------------------------------------------ */
struct ns_sctr_shm *ns__sctr_slow(ns_cache *c, struct ns_slot_shm *sl, uint32_t space);
/* The caller's counter set for namespace SPACE (owner only). */
static inline struct ns_sctr_shm *ns__sctr(ns_cache *c, struct ns_slot_shm *sl,
					   uint32_t space)
{
	struct ns_sctr_shm *e = &sl->sctr[space & (NS_SLOT_SCTR - 1)];
	if (ns_likely(e->space == space))
		return e;
	return ns__sctr_slow(c, sl, space);
}
/* Whether item IT reads as present at NOW: stored in its namespace's
 * current generation and not expired. */
static inline bool ns__visible(const ns_cache *c, const struct ns_item_shm *it,
			       uint64_t now)
{
	uint32_t id = it->space;
	uint64_t e = ns_load_relaxed(&it->expire_ms);
	if (id == 0 || id > c->hdr->nspaces ||
	    it->gen != ns_load_relaxed(&c->spaces[id - 1].gen))
		return false;
	return e == 0 || e > now;
}
/* Why an item leaves the index, for the namespace counters.  An item that
 * no longer reads as present always counts as an expiration; returns what
 * it was counted as. */
enum { NS_GONE_DEL, NS_GONE_EVICT, NS_GONE_EXPIRE };
int ns__acct_gone(ns_cache *c, struct ns_thr *t, struct ns_item_shm *it, int why);

/* ---- ops.c -------------------------------------------------------------- */
/* Unlink OFF from bucket B (found by the caller) and retire it, following
 * the intent protocol.  Lock held on entry, released on return. */
int ns__unlink_locked(ns_cache *c, struct ns_thr *t, uint64_t b, uint64_t *word,
		      ns_off_t off, int why);
/* Unlink chunk OFF, chosen without a lock, under its bucket's lock if it
 * is still linked there, still an item of SPACE (0: any) and, with
 * DEAD_ONLY, still reads as absent at NOW.  2 unlinked and retired, and
 * counted as an eviction (WHY was NS_GONE_EVICT and the item still read
 * as present); 1 unlinked and retired otherwise; 0 no longer there; or a
 * lock error. */
/* Move the live item in chunk OFF to a fresh chunk of its class, from free
 * memory only: the same bytes (key, value, version, times) under the same
 * index word.  1 moved; 0 replaced or removed meanwhile; NS_ENOMEM. */
int ns__relocate_chunk(ns_cache *c, struct ns_thr *t, ns_off_t off);
/* Set C's retire-list thresholds from the size of its data area. */
void ns__retire_limits(ns_cache *c);
int ns__unlink_chunk(ns_cache *c, struct ns_thr *t, ns_off_t off, int why,
		     uint32_t space, bool dead_only, uint64_t now);
/* ns_get of a checked key with its hash H already computed, that also
 * accepts an item expired less than STALE_MS ago and says so in *STALE
 * (ns_get_or_set). */
int ns__get_stale(ns_space *s, const void *key, size_t klen, uint64_t h,
		  void *buf, size_t cap, size_t *vlen, uint64_t stale_ms, bool *stale);
/* ns_get of KV with the hash H already computed (ns_mget).  The key was
 * checked by the caller. */
int ns__get_hashed(ns_space *s, const void *key, size_t klen, uint64_t h,
		   struct ns_kv *kv);

/* ---- janitor.c ---------------------------------------------------------- */
struct ns_expire_stats {
	uint64_t buckets;  /* chains looked at */
	uint64_t sampled;  /* items seen that can die (a TTL, or cleared) */
	uint64_t expired;  /* items unlinked because they no longer read as present */
	uint64_t us;       /* time spent in cycles */
};
/* Unlink the dead items of the next NBUCKETS chains of the expiry hand. */
int ns__expire_step(ns_cache *c, struct ns_thr *t, uint64_t nbuckets,
		    struct ns_expire_stats *st);
/* Redis-like adaptive cycle: steps while they find many dead items, for at
 * most BUDGET_US microseconds.  Adds to *ST. */
int ns__expire_cycle(ns_cache *c, struct ns_thr *t, uint64_t budget_us,
		     struct ns_expire_stats *st);
/* Become the segment's one janitor: 0, or NS_EBUSY with the holder's pid in
 * *PID (if not NULL), or a system error. */
int ns__janitor_lock(ns_cache *c, int *pid);
void ns__janitor_beat(ns_cache *c);
/* 1: some process holds the janitor lock; 0: none; <0: error. */
int ns__janitor_alive(ns_cache *c);

/* Page rebalancing (nsd).  Moves page P to class TO: start marks it
 * draining; each step rescues or evicts what lives in it, and returns 1
 * once the page belongs to TO, 0 while it drains, NS_ECORRUPT (the page
 * given back, the audit asked for) when its park list holds more chunks
 * than the page. */
int ns__page_move_start(ns_cache *c, struct ns_thr *t, uint32_t p, int to);
int ns__page_move_step(ns_cache *c, struct ns_thr *t, uint32_t p);
void ns__page_move_abort(ns_cache *c, uint32_t p);
/* At nsd start: finish or undo the page moves a killed nsd left. */
void ns__pages_resume(ns_cache *c);
/* The policy's memory between ticks (process-local). */
struct ns_rebalance {
	uint64_t evictions[NS_MAX_CLASSES], enomem[NS_MAX_CLASSES];
	uint64_t last_ms, interval_ms, started_ms;
	int page, from, to, last_from, last_to; /* page < 0: none moving */
	uint64_t moved, aborted;
	bool exercise;  /* move pages with or without need (janitor.c) */
};
/* One tick of rebalancing: 1 when a page move finished, 2 when one was
 * given up, 0 otherwise, <0 on error. */
int ns__rebalance(ns_cache *c, struct ns_thr *t, struct ns_rebalance *rb);

/* ---- recover.c ---------------------------------------------------------- */
/* Finish or undo what dead slot IDX left (intent, locks, chunk cache,
 * retire list) and free the slot.  T is the caller's binding (may be NULL
 * for a process without a slot).  Returns 1 if it recovered the slot, 0 if
 * the slot was alive or free, <0 on error. */
int ns__recover_slot(ns_cache *c, struct ns_thr *t, uint32_t idx);
/* WORD is a lock word naming slot IDX, which is not alive: recover IDX
 * if it needs it, then clear WORD if it still names IDX (a word whose
 * owner's intent did not name it, as in a damaged segment, is broken all
 * the same: rule 6).  Returns 1 if it cleared WORD, 0 if IDX turned out
 * alive or busy, <0 on error. */
int ns__break_lock(ns_cache *c, struct ns_thr *t, uint32_t idx, uint32_t *word);
/* Recover every dead slot.  Returns how many were recovered. */
int ns__recover_dead(ns_cache *c);

struct ns_verify_report {
	uint64_t chunks;      /* carved chunks in all pages */
	uint64_t reachable;   /* published in the index */
	uint64_t free;        /* on a class free list */
	uint64_t cached;      /* in a slot's chunk cache */
	uint64_t retired;     /* on a retire list */
	uint64_t in_flight;   /* held by a live slot's intent */
	uint64_t leaked;      /* none of the above */
	uint64_t doubled;     /* found in two places */
	uint64_t bad_refs;    /* offsets that do not point at a chunk */
	uint64_t locked;      /* bucket locks held */
	uint64_t items;       /* == reachable */
	char first_error[160];
};
/* Walk the index and the allocator and account for every chunk.  Exact
 * only while no other client writes.  Returns 0 when consistent, else
 * NS_ECORRUPT with REP filled in. */
int ns__verify(ns_cache *c, struct ns_verify_report *rep);
/* Mark and sweep: return every leaked chunk to its free list.  Only when
 * the caller is the only live client.  Returns the number recovered or <0. */
int64_t ns__audit(ns_cache *c);

/* ---- inspect.c: read-only census for nsctl ------------------------------ */
struct ns_census_class {
	uint32_t size, per_page;  /* chunk bytes, chunks in one page */
	uint32_t pages;           /* pages whose descriptor names the class */
	uint32_t draining;        /* of those, pages nsd is moving away */
	uint64_t carved;          /* chunks handed out from those pages */
	uint64_t free;            /* on the class free list */
	uint64_t parked;          /* on the park lists of its draining pages */
	uint64_t cached;          /* in client slots' chunk caches */
	uint64_t retired;         /* on client slots' retire lists */
	uint64_t items;           /* reachable from the index (of the space asked) */
	uint64_t item_bytes;      /* their header + key + value bytes */
	uint64_t dead;            /* of those, expired or cleared */
	uint64_t evictions, enomem; /* the class's counters */
	uint64_t move_evictions, rescues;
	bool list_broken;         /* a free or park list walk stopped early */
};
struct ns_census {
	uint32_t nclasses;
	struct ns_census_class cls[NS_MAX_CLASSES];
	uint32_t pages_handed;    /* hdr.next_page, bounded */
	uint32_t slots_used;      /* client slots not FREE */
	uint64_t items_all;       /* sane items in the index, every namespace */
	uint64_t over_claimed;    /* overflow buckets with an owner */
	uint64_t over_linked;     /* overflow buckets reached through chains */
	uint64_t longest_chain;   /* buckets in the longest chain */
	uint64_t locked;          /* primary bucket locks held */
	uint64_t index_evictions; /* the header's counter */
	uint64_t quota_evictions; /* summed over the namespaces */
	uint64_t bad_refs;        /* index words or pages naming no chunk/class */
	uint64_t bad_items;       /* items with impossible lengths or namespace */
	uint64_t bad_chains;      /* chains with a bad link, a loop, or too long */
	uint64_t bad_lists;       /* free, park or retire lists that break off */
	char first_problem[160];
};
/* Count, without writing anything or taking any lock, what every page,
 * list, slot and index chain holds; item figures only for namespace id
 * SPACE (0: all).  Every offset is checked and every walk bounded, so any
 * segment gives an answer; while writers run it is an estimate.  Returns 0
 * or a system error (out of memory). */
int ns__census(ns_cache *c, uint32_t space, struct ns_census *cs);

#endif /* NS_INTERNAL_H */
