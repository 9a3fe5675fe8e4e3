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
	X(NS_ENOSPC, -14, "not enough free space for the segment")

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
 * no expiry.  Atomic: readers see the old value or the new one, never a mix.
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
