/*
 * namestore.h - the public interface of libnamestore.
 *
 * NameStore is a cache that unrelated processes on one Linux host share
 * through POSIX shared memory.  A process attaches a segment with
 * ns_attach(), opens a namespace ("root:domain") with ns_space_open(), and
 * from then on reads and writes with plain memory operations: no socket, no
 * server.  Reads take no lock; a process killed at any instant leaves the
 * segment usable by everybody else.
 *
 * Error model: every function that can fail returns 0 on success or a
 * negative NS_E* code.  ns_strerror() turns a code into a message.  Codes
 * below -NS__ERRNO_BASE are system errors: -code is the errno value.
 *
 * Threads and fork: an ns_cache and the ns_space handles opened from it may
 * be used from any number of threads at once.  A handle attached before
 * fork() keeps working in the child; each thread and each child process gets
 * its own client slot in the segment on first use, without the caller doing
 * anything.
 */
#ifndef NAMESTORE_H
#define NAMESTORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NS_VERSION_MAJOR 0
#define NS_VERSION_MINOR 1
#define NS_VERSION_PATCH 0
#define NS_VERSION_STRING "0.1.0"

#if defined(NS_BUILDING_LIBRARY) && defined(__GNUC__)
#define NS_EXPORT __attribute__((visibility("default")))
#else
#define NS_EXPORT
#endif

/*
 * Error codes.  NS_ERRORS is the one table; it also generates the messages
 * of ns_strerror().  X(name, value, message).
 */
#define NS_ERRORS(X)                                                         \
	X(NS_ENOTFOUND, -1, "key not found")                                 \
	X(NS_ERANGE, -2, "buffer too small for the value")                   \
	X(NS_E2BIG, -3, "key or value too large")                            \
	X(NS_EINVAL, -4, "invalid argument")                                 \
	X(NS_EVERSION, -5, "segment has an incompatible format or layout")   \
	X(NS_ECORRUPT, -6, "segment is damaged")                             \
	X(NS_ENOMEM, -7, "no memory left in the segment after eviction")     \
	X(NS_EEXIST, -8, "segment already exists")                           \
	X(NS_ENOENT, -9, "no such segment")                                  \
	X(NS_EBUSY, -10, "a lock is held too long by a live process")        \
	X(NS_ESLOTS, -11, "no free client slot in the segment")              \
	X(NS_ESPACES, -12, "namespace table is full")                        \
	X(NS_ERDONLY, -13, "segment is attached read-only")                  \
	X(NS_ENOSPC, -14, "not enough free space for the segment")          \
	X(NS_EPRESENT, -15, "key already present")                          \
	X(NS_ECHANGED, -16, "item changed since its version was read")      \
	X(NS_ENOTNUM, -17, "value is not a 64-bit decimal integer")         \
	X(NS_EOVERFLOW, -18, "counter would overflow 64 bits")              \
	X(NS_ETIMEDOUT, -19, "timed out waiting for another process's load")

enum ns_error {
#define NS__ERR_ENUM(name, value, msg) name = (value),
	NS_ERRORS(NS__ERR_ENUM)
#undef NS__ERR_ENUM
	NS__ERRNO_BASE = 1000 /* -(NS__ERRNO_BASE + errno) is a system error */
};

/* Limits a caller can rely on. */
#define NS_NAME_MAX 64      /* segment name, and each half of a prefix */
#define NS_PREFIX_MAX 96    /* "root:domain" including the colon */
#define NS_KEY_MAX 250      /* bytes of a key, like memcached */

/* Flags of struct ns_attach_opts. */
#define NS_CREATE 0x1u /* create the segment if it does not exist */
#define NS_RDONLY 0x2u /* map read-only: ns_get works, writes give NS_ERDONLY */
#define NS_EXCL 0x4u   /* with NS_CREATE: fail with NS_EEXIST if it exists */

typedef struct ns_cache ns_cache; /* one process's attachment; thread-safe */
typedef struct ns_space ns_space; /* a namespace "root:domain"; thread-safe */

struct ns_attach_opts {
	unsigned flags;     /* NS_CREATE, NS_RDONLY, NS_EXCL */
	size_t size;        /* bytes for a new segment */
	uint64_t max_items; /* expected number of items; sizes the index */
	mode_t mode;        /* permissions of a new segment; 0 means 0600 */
};

/*
 * ns_version - the library's version string, "MAJOR.MINOR.PATCH".
 */
NS_EXPORT const char *ns_version(void);

/*
 * ns_attach - map the segment /dev/shm/NAME.
 *
 * NAME is a short identifier (letters, digits, '.', '_', '-'; at most
 * NS_NAME_MAX bytes).  OPTS NULL attaches an existing segment read-write.
 * With NS_CREATE a missing segment is created with opts->size bytes (all
 * allocated at once, so a full /dev/shm fails here with NS_ENOSPC) and an
 * index sized for opts->max_items (0: estimated from the size).  Creation is
 * race-free: concurrent creators agree on one segment.
 *
 * Returns 0 and sets *OUT, or NS_EINVAL (bad name or options), NS_ENOENT,
 * NS_EEXIST (NS_CREATE|NS_EXCL), NS_EVERSION (built with another layout),
 * NS_ECORRUPT (bad header or size), NS_ENOSPC, or a system error.
 */
NS_EXPORT int ns_attach(const char *name, const struct ns_attach_opts *opts,
			ns_cache **out);

/*
 * ns_detach - release this process's client slots and unmap.  Every
 * ns_space opened from C becomes invalid.  NULL is ignored.
 */
NS_EXPORT void ns_detach(ns_cache *c);

/*
 * ns_unlink - remove the name NAME.  Processes still attached keep working
 * on the old segment until they detach.  Returns 0, NS_EINVAL or NS_ENOENT.
 */
NS_EXPORT int ns_unlink(const char *name);

/*
 * ns_space_open - find or create the namespace PREFIX ("root:domain", each
 * half a short identifier).  The handle lives until ns_detach(C).
 * Returns 0, NS_EINVAL, NS_ESPACES (table full) or NS_ERDONLY (creating in
 * a read-only attachment).
 */
NS_EXPORT int ns_space_open(ns_cache *c, const char *prefix, ns_space **out);

/*
 * ns_set - store VAL under KEY, replacing any previous value.  TTL_MS 0 means
 * the namespace's default TTL, which is no expiry unless ns_space_config()
 * set one; NS_TTL_NEVER is no expiry in any case.  Atomic: readers see the old value or the new one, never a mix.
 * Returns 0, NS_EINVAL (empty key, NULL with a length), NS_E2BIG (key over
 * NS_KEY_MAX or item over the largest slab class), NS_ENOMEM (nothing left to
 * evict), NS_EBUSY, NS_ERDONLY or NS_ECORRUPT.
 */
NS_EXPORT int ns_set(ns_space *s, const void *key, size_t klen,
		     const void *val, size_t vlen, uint64_t ttl_ms);

/*
 * ns_get - copy the value of KEY into BUF (CAP bytes) and its length into
 * *VLEN.  Takes no lock and writes no shared cache line.
 * Returns 0, NS_ENOTFOUND (absent or expired), NS_ERANGE (CAP too small:
 * *VLEN holds the length needed, BUF is untouched), NS_EINVAL, NS_E2BIG or
 * NS_ECORRUPT.
 */
NS_EXPORT int ns_get(ns_space *s, const void *key, size_t klen, void *buf,
		     size_t cap, size_t *vlen);

/*
 * ns_del - remove KEY.  Returns 0, NS_ENOTFOUND, NS_EINVAL, NS_E2BIG,
 * NS_EBUSY, NS_ERDONLY or NS_ECORRUPT.
 */
NS_EXPORT int ns_del(ns_space *s, const void *key, size_t klen);

/* ---- the whole API --------------------------------------------------------
 *
 * Conventions.  The namespace comes first, then the key and its length,
 * then the value and its length, then options; outputs come last.  A time
 * to live (TTL_MS) is in milliseconds: 0 means the namespace's default TTL
 * (itself 0, no expiry, unless ns_space_config() set one), NS_TTL_NEVER
 * means no expiry whatever the default.  Expiry is measured on
 * CLOCK_REALTIME and shared by every process.  Every write is atomic per key:
 * readers see the old item or the new one, never a mix.
 */
#define NS_TTL_NEVER UINT64_MAX

/* Metadata of one item, without its value (ns_stat, ns_get_ex). */
struct ns_item_info {
	uint64_t version;    /* new on every store; what ns_cas compares */
	uint64_t created_ms; /* CLOCK_REALTIME ms when this value was stored
			      * (second resolution) */
	uint64_t expire_ms;  /* CLOCK_REALTIME ms when it expires; 0 never */
	uint64_t ttl_ms;     /* TTL it was given (what ns_touch restarts; beyond
			      * 24 days, whole seconds); 0 none */
	uint32_t vlen;       /* bytes of the value */
	uint32_t flags;      /* user flags word stored with the value */
	uint32_t space_id;   /* id of its namespace (ns_space_info.id) */
};

/* ---- namespaces ---- */

/* Counters and settings of one namespace.  Counters are sums over every
 * client, exact while nobody writes; items and bytes count stored items,
 * including ones that expired or were cleared until they are reclaimed. */
struct ns_space_info {
	uint32_t id;                      /* 1..N, stored in every item */
	uint32_t generation;              /* bumped by ns_space_clear */
	char prefix[NS_PREFIX_MAX + 1];   /* "root:domain" */
	uint64_t default_ttl_ms;          /* 0: none */
	uint64_t quota_bytes;             /* 0: none */
	uint64_t items, bytes;            /* bytes: chunk bytes in use */
	uint64_t hits, misses, sets, deletes, evictions, expirations;
};

/*
 * ns_space_config - set the default TTL (0: none) and the memory quota in
 * bytes (0: none) of namespace S.  A namespace over its quota evicts its own
 * least recently used items to make room, never another namespace's; a
 * store that cannot make room gets NS_ENOMEM.  Settings are shared by every
 * process and apply to stores made after the call.
 * Returns 0, NS_EINVAL or NS_ERDONLY.
 */
NS_EXPORT int ns_space_config(ns_space *s, uint64_t default_ttl_ms,
			      uint64_t quota_bytes);

/* ns_space_info - counters and settings of S.  Returns 0 or NS_EINVAL. */
NS_EXPORT int ns_space_info(ns_space *s, struct ns_space_info *out);

/*
 * ns_space_list - fill OUT[0..CAP) with the namespaces of C in id order
 * and set *N to how many exist (which may exceed CAP: call again with a
 * larger array).  Returns 0 or NS_EINVAL.
 */
NS_EXPORT int ns_space_list(ns_cache *c, struct ns_space_info *out, size_t cap,
			    size_t *n);

/*
 * ns_space_clear - empty namespace S in constant time, whatever its size:
 * its generation is bumped, so every item stored before the call reads as
 * absent at once, and their memory is reclaimed lazily (by writers needing
 * room, by eviction, and by nsd).  Other namespaces are untouched.
 * Returns 0, NS_EINVAL or NS_ERDONLY.
 */
NS_EXPORT int ns_space_clear(ns_space *s);

/* ---- conditional stores ---- */

/*
 * ns_set_ex - ns_set() with a 32-bit user flags word stored beside the
 * value (returned by ns_get_ex, ns_stat, ns_mget), like memcached's flags.
 * VERSION, if not NULL, receives the new item's version.
 */
NS_EXPORT int ns_set_ex(ns_space *s, const void *key, size_t klen,
			const void *val, size_t vlen, uint64_t ttl_ms,
			uint32_t flags, uint64_t *version);

/* ns_add - store only if KEY is absent (SETNX).  NS_EPRESENT if present. */
NS_EXPORT int ns_add(ns_space *s, const void *key, size_t klen,
		     const void *val, size_t vlen, uint64_t ttl_ms);

/* ns_replace - store only if KEY is present.  NS_ENOTFOUND if absent. */
NS_EXPORT int ns_replace(ns_space *s, const void *key, size_t klen,
			 const void *val, size_t vlen, uint64_t ttl_ms);

/*
 * ns_cas - store only if KEY's current version is VERSION (as returned by
 * ns_get_ex, ns_stat or a store).  NS_ECHANGED if another store came in
 * between, NS_ENOTFOUND if the key is gone.
 */
NS_EXPORT int ns_cas(ns_space *s, const void *key, size_t klen,
		     const void *val, size_t vlen, uint64_t ttl_ms,
		     uint64_t version);

/*
 * ns_getset - store VAL and return the value it replaced in OLD (CAP bytes,
 * its length in *OLDLEN), atomically.  When KEY was absent the value is
 * stored and NS_ENOTFOUND returned.  When CAP is too small nothing is
 * stored: NS_ERANGE with the length needed in *OLDLEN.
 */
NS_EXPORT int ns_getset(ns_space *s, const void *key, size_t klen,
			const void *val, size_t vlen, uint64_t ttl_ms,
			void *old, size_t cap, size_t *oldlen);

/* ---- reads and metadata ---- */

/*
 * ns_get_ex - ns_get() that also fills *INFO (if not NULL) with the item's
 * metadata, read atomically with the value.
 */
NS_EXPORT int ns_get_ex(ns_space *s, const void *key, size_t klen, void *buf,
			size_t cap, size_t *vlen, struct ns_item_info *info);

/* ns_exists - 0 if KEY is present, NS_ENOTFOUND if not.  Takes no lock. */
NS_EXPORT int ns_exists(ns_space *s, const void *key, size_t klen);

/* ns_stat - the metadata of KEY without its value.  Takes no lock. */
NS_EXPORT int ns_stat(ns_space *s, const void *key, size_t klen,
		      struct ns_item_info *info);

/* ---- time to live ---- */

/*
 * ns_ttl - the time KEY has left, in ms, in *TTL_MS; -1 if it never
 * expires.  Returns 0 or NS_ENOTFOUND.
 */
NS_EXPORT int ns_ttl(ns_space *s, const void *key, size_t klen,
		     int64_t *ttl_ms);

/*
 * ns_expire - make KEY expire TTL_MS from now (TTL_MS 0: now, which removes
 * it, like Redis EXPIRE 0).  The value and version are unchanged.
 */
NS_EXPORT int ns_expire(ns_space *s, const void *key, size_t klen,
			uint64_t ttl_ms);

/* ns_persist - remove KEY's expiry.  Returns 0 or NS_ENOTFOUND. */
NS_EXPORT int ns_persist(ns_space *s, const void *key, size_t klen);

/*
 * ns_touch - restart KEY's TTL: it now expires the TTL it was stored with
 * from now (a sliding expiry: call it on each access to keep a session
 * alive).  A key without a TTL is left as it is.  Returns 0 or
 * NS_ENOTFOUND.
 */
NS_EXPORT int ns_touch(ns_space *s, const void *key, size_t klen);

/* ---- counters ---- */

/*
 * ns_incr - add DELTA to the 64-bit signed integer stored at KEY as decimal
 * text (like Redis INCRBY) and put the result in *RESULT (if not NULL).  If
 * KEY is absent it is created holding INITIAL with TTL_MS, and *RESULT is
 * INITIAL; an existing key keeps its TTL.  Atomic: N processes adding 1
 * M times end at exactly N*M.  Returns 0, NS_ENOTNUM (the value is not
 * such an integer), NS_EOVERFLOW (the sum leaves int64_t; nothing stored),
 * or the errors of ns_set.
 */
NS_EXPORT int ns_incr(ns_space *s, const void *key, size_t klen, int64_t delta,
		      int64_t initial, uint64_t ttl_ms, int64_t *result);

/* ns_decr - ns_incr with -DELTA (DELTA may be INT64_MIN..INT64_MAX). */
NS_EXPORT int ns_decr(ns_space *s, const void *key, size_t klen, int64_t delta,
		      int64_t initial, uint64_t ttl_ms, int64_t *result);

/* ---- read-modify-write ---- */

/* What an ns_update_fn or ns_loader_fn hands back: VAL must stay valid
 * until the call that invoked the callback returns. */
struct ns_value {
	const void *val;
	size_t vlen;
	uint64_t ttl_ms; /* as in ns_set */
	uint32_t flags;  /* user flags */
};

/* ns_update_fn results besides a negative error (which aborts the update
 * and is returned by ns_update unchanged). */
#define NS_UPDATE_STORE 0  /* store *OUT */
#define NS_UPDATE_DELETE 1 /* remove the key */
#define NS_UPDATE_KEEP 2   /* leave it as it is */

/* OLD is NULL when the key is absent; INFO is then NULL too. */
typedef int ns_update_fn(void *arg, const void *old, size_t oldlen,
			 const struct ns_item_info *info, struct ns_value *out);

/*
 * ns_update - atomic read-modify-write: FN sees the current value (or its
 * absence) and says what to store.  Optimistic: FN runs without any lock;
 * if another process changed the key meanwhile, FN runs again on the new
 * value, so no concurrent update is lost and FN must have no side effects
 * beyond *OUT.  Returns 0, FN's negative error, or the errors of ns_set.
 */
NS_EXPORT int ns_update(ns_space *s, const void *key, size_t klen,
			ns_update_fn *fn, void *arg);

/* ---- batches ---- */

/* One key of a batch.  Inputs and outputs by operation:
 *   ns_mget: in key, klen, buf, cap;   out vlen, flags, err
 *   ns_mset: in key, klen, val, vlen, ttl_ms, flags;   out err
 *   ns_mdel: in key, klen;   out err
 * err is that key's result, as the single-key call would return it. */
struct ns_kv {
	const void *key;
	size_t klen;
	const void *val;
	size_t vlen;
	void *buf;
	size_t cap;
	uint64_t ttl_ms;
	uint32_t flags;
	int err;
};

/*
 * ns_mget, ns_mset, ns_mdel - N keys in one call.  Each key is atomic on
 * its own (a batch is not a transaction).  ns_mget prefetches the buckets
 * and then the items of the whole batch before it reads any, so the memory
 * latencies overlap: 100 keys cost much less than 100 ns_get calls.
 * Return the number of keys that succeeded (hits, stores, deletions), or
 * NS_EINVAL for a bad array; per-key results are in KV[i].err.
 */
NS_EXPORT int ns_mget(ns_space *s, struct ns_kv *kv, size_t n);
NS_EXPORT int ns_mset(ns_space *s, struct ns_kv *kv, size_t n);
NS_EXPORT int ns_mdel(ns_space *s, struct ns_kv *kv, size_t n);

/* ---- iteration ---- */

/* A key returned by ns_scan, NUL-terminated for convenience (keys may hold
 * any bytes; use klen). */
struct ns_key {
	size_t klen;
	char key[NS_KEY_MAX + 1];
};

/*
 * ns_scan - one step of a cursor iteration over namespace S, like Redis
 * SCAN.  Start with *CURSOR = 0; each call looks at a bounded part of the
 * index (about COUNT keys' worth, 0 for a default), puts the keys found that
 * match the shell glob PATTERN (NULL: all; see fnmatch(3)) in KEYS[0..CAP),
 * sets *N, and advances *CURSOR; it is 0 again when the scan is complete.
 * Never takes a lock and holds nothing between calls.  A key present for
 * the whole scan is returned at least once; keys added or removed during it
 * may or may not be.  Returns 0, NS_EINVAL, NS_ERANGE when CAP cannot
 * hold the keys of a single bucket chain (retry with a larger array), or,
 * on a read-only attachment only, NS_EBUSY when a slot kept changing under
 * the scan (call again with the same cursor).
 */
NS_EXPORT int ns_scan(ns_space *s, uint64_t *cursor, const char *pattern,
		      size_t count, struct ns_key *keys, size_t cap, size_t *n);

/* ---- read-through with single flight ---- */

/*
 * ns_loader_fn - produce the value of a missing KEY into *OUT.  Return 0,
 * or a negative error that ns_get_or_set returns to its caller (waiters in
 * other processes then take over the load).
 */
typedef int ns_loader_fn(void *arg, const void *key, size_t klen,
			 struct ns_value *out);

struct ns_load_opts {
	uint64_t wait_ms;  /* how long to wait for another loader; 0: 5000 */
	uint64_t stale_ms; /* serve a value this long past its expiry while
			    * another process reloads it; 0: never stale */
};

/*
 * ns_get_or_set - ns_get, and on a miss run LOADER and store its value.
 * Single flight across processes: when many callers miss the same key at
 * once, one runs its loader and the others wait for the result on a futex
 * in the segment.  If the loader fails or its process dies, a waiter takes
 * over; a waiter gives up after OPTS->wait_ms with NS_ETIMEDOUT.  With
 * OPTS->stale_ms, callers that find an expired value younger than that
 * past its expiry get it at once while a single caller reloads.  OPTS may
 * be NULL.  Returns as ns_get (0 with the value, NS_ERANGE with the length
 * needed), the loader's error, NS_ETIMEDOUT, or the errors of ns_set.
 */
NS_EXPORT int ns_get_or_set(ns_space *s, const void *key, size_t klen,
			    void *buf, size_t cap, size_t *vlen,
			    ns_loader_fn *loader, void *arg,
			    const struct ns_load_opts *opts);

/*
 * ns_strerror - a message for an error code (never NULL; unknown codes get
 * a generic message).
 */
NS_EXPORT const char *ns_strerror(int err);

/*
 * ns_max_value - the largest value that fits beside a key of KLEN bytes in
 * segment C (the largest slab class less the item header and key).
 */
NS_EXPORT size_t ns_max_value(ns_cache *c, size_t klen);

#ifdef __cplusplus
}
#endif

#endif /* NAMESTORE_H */
