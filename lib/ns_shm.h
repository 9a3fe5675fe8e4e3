/*
 * ns_shm.h - the layout of a segment: every struct that lives in shared
 * memory, and the typed helpers that turn offsets into pointers.
 *
 * A segment is one file in /dev/shm, mapped by every process at an address
 * of its own choosing, so nothing in it is a pointer (rule 1 of DESIGN.md):
 * references are byte offsets from the segment base (ns_off_t) or indexes
 * into a fixed table.  Every offset read from the segment is untrusted and
 * goes through ns__ptr()/ns__item(), which check bounds and alignment and
 * return NULL for a bad value; callers turn NULL into NS_ECORRUPT.
 *
 *   0        4 KiB                                                 data_off
 *   +--------+-------------+--------+-------+-------+-------+-------+-----+---------+
 *   | header | client slots| spaces |flights|classes| pages | audit | index |over-| pages   |
 *   |        | (3 KiB each)| 320 B  | 16 B  | 128 B | 8 B   | 64 B  |flow | (1 MiB  |
 *   |        |             |        |       |       | each  |buckets|     | each)   |
 *   +--------+-------------+--------+-------+-------+-------+-------+-----+---------+
 *
 * Lock order, written once: a client holds at most one bucket lock at a
 * time, and the namespace table lock is never held together with a bucket
 * lock.  OFD file locks (slot liveness) are not waited on while a bucket
 * lock is held.  So there is nothing to order.
 */
#ifndef NS_SHM_H
#define NS_SHM_H

#include <stdint.h>
#include <stddef.h>

#include "namestore.h"

typedef uint64_t ns_off_t; /* byte offset from the segment base; 0 = none */

#define NS_CACHELINE 64
#define NS_MAGIC 0x314d485345534e4eull /* "NSESHM1" little-endian, + '1' */
#define NS_FORMAT_VERSION 2u
#define NS_HASH_ID 1u /* ns__hash() below; bump if the function changes */

#define NS_HDR_SIZE 4096u
#define NS_PAGE_SIZE (1u << 20) /* slab page; 1 MiB, see slab.c */
#define NS_MIN_CHUNK 72u /* item header + an 8-byte key */
#define NS_MAX_CLASSES 48 /* 64 * 1.25^k reaches 1 MiB at k = 44 */
#define NS_SLOT_CACHE 4   /* free chunks a slot keeps per class */
#define NS_BUCKET_SLOTS 7 /* 64-byte bucket: 8-byte head + 7 tag|offset */
#define NS_CHAIN_MAX 64   /* overflow buckets a chain may have; longer is corrupt */
#define NS_SLOT_SCTR 16   /* per-namespace counter sets a slot keeps (direct-mapped) */
#define NS_FLIGHTS 1024   /* single-flight table entries (a power of two) */

/* Segment states (ns_hdr_shm.state). */
enum { NS_SEG_INIT = 1, NS_SEG_READY = 2, NS_SEG_RETIRED = 3 };

/* Client slot states (ns_slot_shm.state). */
enum {
	NS_SLOT_FREE = 0,
	NS_SLOT_ACTIVE = 1,
	/* Detached with retired chunks still inside a grace period: nobody
	 * owns it; recovery frees the rest and then marks it FREE. */
	NS_SLOT_ORPHAN = 2,
};

/* ns_slot_shm.flags */
#define NS_SLOTF_MEMBARRIER 0x1u /* reader relies on the reclaimer's membarrier */

/* Intent phases (ns_slot_shm.in_phase); see ops.c for the protocol. */
enum {
	NS_PH_NONE = 0,
	NS_PH_BUILT = 1,     /* in_new holds a chunk being built; no lock */
	NS_PH_LOCKED = 2,    /* bucket locked, in_old chosen, not published */
	NS_PH_PUBLISHED = 3, /* the slot word was stored; still locked */
	NS_PH_UNLOCKED = 4,  /* lock released; only retiring in_old is left */
};

/* Chunk states (ns_item_shm.state); informative, for the audit. */
enum { NS_CH_FREE = 0x46524545u, NS_CH_LIVE = 0x4c495645u, NS_CH_RETIRED = 0x52455449u };

/* File byte ranges used for OFD locks (not data: locks may lie past EOF). */
#define NS_LOCK_INIT 0          /* creator holds it exclusively while initializing */
#define NS_LOCK_SLOT_BASE 4096  /* + slot index: held by the slot's owner */
#define NS_LOCK_JANITOR 1       /* held by the one nsd of the segment */

/*
 * Header.  Written once by the creator (fields up to `state`), then
 * read-only except for the words in the two shared lines at the end.
 */
struct ns_hdr_shm {
	uint64_t magic;        /* NS_MAGIC */
	uint32_t version;      /* NS_FORMAT_VERSION */
	uint32_t state;        /* NS_SEG_*; release store READY ends creation */
	uint64_t fingerprint;  /* ns__layout_fingerprint() of the creator */
	uint64_t hash_seed;    /* per-segment seed of ns__hash() */
	uint32_t hash_id;      /* NS_HASH_ID */
	uint32_t page_size;    /* NS_PAGE_SIZE */
	uint64_t size;         /* bytes of the file */
	uint64_t created_ms;   /* CLOCK_REALTIME at creation */
	uint32_t nslots;       /* client slots */
	uint32_t nspaces;      /* namespace table entries */
	uint32_t nclasses;     /* slab classes in use */
	uint32_t npages;       /* slab pages in the data area */
	uint64_t nbuckets;     /* primary buckets; a power of two */
	uint64_t nover;        /* overflow buckets */
	ns_off_t slots_off, spaces_off, flights_off, classes_off, pages_off;
	ns_off_t audit_off;    /* audit map: a bit per possible chunk */
	uint64_t audit_bytes;
	ns_off_t index_off, over_off, data_off;
	char name[NS_NAME_MAX + 1]; /* the name it was created under */

	/* Line written by reclaimers only: the global epoch (rule 4). */
	uint64_t epoch __attribute__((aligned(NS_CACHELINE))); /* atomic; starts at 1 */

	/* Line of rarely written allocator and table words. */
	uint32_t next_page __attribute__((aligned(NS_CACHELINE))); /* atomic CAS; pages handed out */
	uint32_t over_hint;    /* atomic relaxed; where to look for a free overflow bucket */
	uint32_t spaces_lock;  /* owner slot + 1; breakable like a bucket lock */
	uint32_t audit_wanted; /* atomic add: requests for the audit (a chunk nobody
				* could place); it clears only those it saw */
	uint64_t next_version; /* atomic add; versions handed to slots in blocks */
	uint64_t recoveries;   /* atomic add; slots recovered so far */
	uint64_t index_evictions; /* atomic add: items evicted because their
				   * index chain was full */

	/* Line read by every write, written only by a store short of memory. */
	uint64_t reclaim_ask_ms __attribute__((aligned(NS_CACHELINE)));
			       /* CAS, at most one change per ms: a store found its
				* class's chunks waiting on retire lists (slab.c,
				* "limbo"); a writer that sees it change frees its
				* list at its next write (ops.c) */

	/* Line written by nsd only (and read by clients and nsctl). */
	uint64_t janitor_beat_ms __attribute__((aligned(NS_CACHELINE))); /* CLOCK_REALTIME of its last tick; 0 never */
	int32_t janitor_pid;   /* pid of the nsd holding NS_LOCK_JANITOR */
	uint32_t janitor_pad;
	uint64_t expire_hand;  /* next bucket the expiry cycle samples */
	uint64_t expired;      /* items the janitor expired, in total */
	uint64_t safe_epoch;   /* release: items retired before it are safe
				* to free (nsd paid the membarrier); 0 none */
	uint32_t audit_active; /* auditor's slot + 1 while an audit runs with
				* clients attached: every chunk moved is shaded
				* in the audit map; 0 none */
	uint32_t audit_pad;
} __attribute__((aligned(NS_CACHELINE)));

/*
 * Client slot: one per attached thread (rule 4, rule 5).  Owner = the
 * thread that holds the OFD lock on byte NS_LOCK_SLOT_BASE + index.  Only
 * the owner writes a slot, except recovery, which first takes that same OFD
 * lock and so is the owner while it runs.
 */
struct ns_slot_shm {
	/* Line 0, read by reclaimers: */
	uint64_t epoch;    /* global epoch at read entry, 0 when outside; owner store */
	uint32_t state;    /* NS_SLOT_*; owner */
	uint32_t flags;    /* NS_SLOTF_*; owner, set at claim */
	uint64_t gets, hits, misses, sets, dels, evictions; /* owner, relaxed */

	/* Line 1: identity, for nsctl and humans; owner. */
	int32_t pid;
	uint32_t claims;       /* how many times this slot was claimed */
	uint64_t attach_ms;
	char comm[16];
	uint64_t ver_next, ver_end; /* owner's block of item versions */
	uint32_t active_s;     /* seconds since segment creation of the owner's
				* last operation (second resolution; nsctl) */
	uint32_t wsec;         /* odd inside an operation that moves chunks
				* (the audit's handshake, recover.c) */
	uint64_t pad1;

	/* Line 2: write-side records that recovery reads (rule 6). */
	uint64_t in_bucket;  /* primary bucket index + 1 of the write in flight */
	ns_off_t in_new;     /* chunk being published, or 0 */
	ns_off_t in_old;     /* chunk being unlinked, or 0 */
	uint32_t in_phase;   /* NS_PH_* */
	uint32_t slab_busy;  /* nonzero inside a global free-list or page step */
	ns_off_t retire_head, retire_tail; /* this slot's retire list */
	uint64_t retire_count, retire_bytes;

	/* Per-class caches of free chunks (recovery returns them). */
	uint8_t cache_n[NS_MAX_CLASSES];
	ns_off_t cache[NS_MAX_CLASSES][NS_SLOT_CACHE];

	/* Per-namespace counters of this slot's operations, so that a get
	 * counts its hit without writing a shared line (rule 3).  Entry
	 * space & (NS_SLOT_SCTR - 1); when another namespace needs the entry
	 * the owner folds it into that namespace's shared totals first. */
	struct ns_sctr_shm {
		uint32_t space; /* namespace id, 0 unused */
		uint32_t pad;
		uint64_t hits, misses, sets, dels, evictions, expirations;
		uint64_t pad1;
	} sctr[NS_SLOT_SCTR] __attribute__((aligned(NS_CACHELINE)));
} __attribute__((aligned(NS_CACHELINE)));

/* Namespace table entry.  Created under hdr.spaces_lock; id and prefix never
 * change after state becomes 1 (release store).  The first lines are read
 * by every operation and written rarely; the counters live on lines of
 * their own so that writers adding to them do not slow readers down. */
struct ns_space_shm {
	uint32_t state;      /* 0 empty, 1 ready */
	uint32_t id;         /* index + 1; stored in items */
	uint32_t gen;        /* atomic; items of an older generation are misses */
	uint32_t pad;
	uint64_t default_ttl_ms; /* atomic relaxed; 0 none */
	uint64_t quota_bytes;    /* atomic relaxed; 0 none */
	char prefix[NS_PREFIX_MAX + 1];

	/* Written by every store and removal (atomic add). */
	int64_t items __attribute__((aligned(NS_CACHELINE)));
	int64_t bytes;       /* chunk bytes */
	uint64_t evict_hand; /* atomic add: where quota eviction looks next */
	uint64_t quota_evictions; /* atomic add: items its quota evicted */

	/* Slot counters folded in when a slot's entry changed namespace. */
	uint64_t hits __attribute__((aligned(NS_CACHELINE)));
	uint64_t misses, sets, dels, evictions, expirations;
} __attribute__((aligned(NS_CACHELINE)));

/*
 * Single-flight entry (ns_get_or_set).  A loader claims the entry of its
 * key's hash by CAS of `word` from 0 to owner slot + 1 << 48 | hash bits;
 * waiters sleep on the futex `seq`, which the loader bumps when it is done.
 */
struct ns_flight_shm {
	uint64_t word;   /* 0 free; (slot + 1) << 48 | (hash & NS_SLOT_OFF_MASK) */
	uint32_t seq;    /* futex word; bumped (and woken) when a flight ends */
	uint32_t claims; /* the owner slot's claim count, to spot a reused slot */
};

/* Slab class: two lines each, the allocator's words and its counters. */
struct ns_class_shm {
	uint64_t free_head;  /* tagged: off/8 in low 40 bits, ABA tag in high 24; AO CAS */
	uint32_t size;       /* chunk bytes */
	uint32_t per_page;   /* chunks in one page */
	uint32_t cur_page;   /* page index + 1 being carved; atomic CAS */
	uint32_t spare_page; /* page index + 1 assigned but not yet carved; CAS */
	uint32_t npages;     /* atomic add: pages assigned to this class */
	uint32_t pad;
	uint64_t pin;        /* free-list chunk poppers must not take: pinner slot + 1
			      * << 40 | off / 8; 0 none (slab.c, "pinning") */

	/* Counters (atomic add), read by nsd's rebalancer and nsctl. */
	uint64_t evictions __attribute__((aligned(NS_CACHELINE)));
			     /* items evicted from the class's chunks: by an
			      * allocation out of memory, or by a page move */
	uint64_t move_evictions; /* of those, by page moves (nsd) */
	uint64_t rescues;    /* items a page move copied to another chunk */
	uint64_t enomem;     /* allocations that failed (nsd moves pages) */
	uint64_t limbo_until_ms; /* relaxed, CLOCK_MONOTONIC ms: a wait for its
				  * retired chunks came to nothing; stores evict
				  * at once until then (slab.c) */
} __attribute__((aligned(NS_CACHELINE)));

/* Page states (ns_page_shm.drain), for moving a page to another class. */
enum {
	NS_PG_NORMAL = 0,
	NS_PG_DRAINING = 1, /* its chunks are parked instead of reused */
	NS_PG_MOVING = 2,   /* all parked; being handed to class move_to - 1 */
};

/* Slab page descriptor. */
struct ns_page_shm {
	uint32_t cls;      /* class + 1, 0 unassigned; changed only by a move */
	uint32_t carved;   /* atomic add: chunks handed out from the page's bump cursor */
	uint32_t drain;    /* NS_PG_*; written by nsd only */
	uint32_t move_to;  /* class + 1 the page is moving to; nsd only */
	ns_off_t park_head; /* chunks parked while draining: CAS push by anyone,
			     * taken whole only by nsd */
};

/*
 * Index bucket: one cache line.  A primary bucket's `lock` names the owner
 * slot + 1 of the writer in it (0 free); an overflow bucket's `lock` names
 * the primary bucket + 1 that claimed it.  `next` is the overflow bucket
 * index + 1 that continues the chain.  Slot words are tag << 48 | offset and
 * change only under the primary's lock, by one release store each.
 */
struct ns_bucket_shm {
	uint32_t lock;
	uint32_t next;
	uint64_t slot[NS_BUCKET_SLOTS];
};

#define NS_SLOT_OFF_MASK ((1ull << 48) - 1)

/*
 * Item header, followed by the key and the value.  Built completely before
 * it is published and never modified afterwards, except expire_ms, ttl_code
 * and atime (single atomic words, under the bucket lock but for atime)
 * (rule 2).  `next` and `retire_epoch` are used only
 * by the chunk's owner on free and retire lists; readers never look at them.
 */
struct ns_item_shm {
	ns_off_t next;         /* free/retire list link */
	uint64_t version;      /* written first when built; unique per store */
	uint64_t expire_ms;    /* CLOCK_REALTIME ms; 0 never; atomic relaxed */
	uint32_t hash;         /* low 32 bits of ns__hash(): finds the bucket */
	uint32_t atime;        /* seconds since creation; relaxed hint, ~1 write/s */
	uint32_t vlen;
	uint16_t klen;
	uint16_t space;        /* namespace id */
	uint32_t gen;          /* namespace generation when stored */
	uint32_t uflags;       /* user flags word */
	uint32_t retire_epoch; /* low 32 bits of the epoch at retire */
	uint32_t state;        /* NS_CH_* */
	uint32_t ctime;        /* seconds since segment creation when stored */
	uint32_t ttl_code;     /* the TTL it was stored with, for ns_touch; see
				* ns__ttl_encode(); 0 none */
};

/* A TTL in 32 bits: milliseconds below 2^31 (24 days), else seconds with
 * the top bit set (68 years), which keeps the item header at 64 bytes. */
static inline uint32_t ns__ttl_encode(uint64_t ms)
{
	if (ms < (1ull << 31))
		return (uint32_t)ms;
	ms /= 1000;
	return (uint32_t)(1u << 31) | (uint32_t)(ms < (1ull << 31) ? ms : (1ull << 31) - 1);
}

static inline uint64_t ns__ttl_decode(uint32_t code)
{
	return (code & (1u << 31)) ? (uint64_t)(code & ~(1u << 31)) * 1000u : code;
}

#endif /* NS_SHM_H */
