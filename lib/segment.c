/*
 * segment.c - creating, checking, mapping and unmapping a segment.
 *
 * Creation is race-free (rule 8): the creator opens /dev/shm/NAME with
 * O_CREAT|O_EXCL, takes an exclusive OFD lock on byte NS_LOCK_INIT before
 * anything else, allocates every byte with posix_fallocate() (so a full
 * /dev/shm is NS_ENOSPC now, never SIGBUS later), lays out the tables, and
 * finally stores state = READY with release ordering and drops the lock.
 * An attacher takes a shared lock on the same byte, which waits until the
 * creator is done (or dead: the lock dies with it), and then checks magic,
 * version, layout fingerprint, state and file size before it maps the
 * whole file.  A segment left INIT with nobody holding the lock was
 * abandoned by a creator that died: NS_ECORRUPT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/membarrier.h>

#include "ns_internal.h"

/* Sizes and offsets of every shared struct; two builds agree on the layout
 * exactly when they agree on this number (rule 8). */
uint64_t ns__layout_fingerprint(void)
{
	static const uint64_t parts[] = {
		sizeof(void *), NS_CACHELINE, NS_PAGE_SIZE, NS_MAX_CLASSES,
		NS_SLOT_CACHE, NS_BUCKET_SLOTS,
		sizeof(struct ns_hdr_shm), offsetof(struct ns_hdr_shm, epoch),
		offsetof(struct ns_hdr_shm, next_page),
		offsetof(struct ns_hdr_shm, name),
		sizeof(struct ns_slot_shm), offsetof(struct ns_slot_shm, pid),
		offsetof(struct ns_slot_shm, in_bucket),
		offsetof(struct ns_slot_shm, cache),
		sizeof(struct ns_space_shm), offsetof(struct ns_space_shm, prefix),
		offsetof(struct ns_space_shm, items), offsetof(struct ns_space_shm, hits),
		sizeof(struct ns_flight_shm), NS_FLIGHTS, NS_SLOT_SCTR,
		offsetof(struct ns_slot_shm, sctr), offsetof(struct ns_slot_shm, wsec),
		offsetof(struct ns_hdr_shm, audit_off), offsetof(struct ns_hdr_shm, audit_active),
		sizeof(struct ns_class_shm), offsetof(struct ns_class_shm, pin),
		offsetof(struct ns_class_shm, evictions),
		offsetof(struct ns_hdr_shm, reclaim_ask_ms),
		offsetof(struct ns_space_shm, quota_evictions),
		offsetof(struct ns_class_shm, limbo_until_ms),
		sizeof(struct ns_page_shm),
		sizeof(struct ns_bucket_shm), sizeof(struct ns_item_shm),
		offsetof(struct ns_item_shm, version),
		offsetof(struct ns_item_shm, expire_ms),
		offsetof(struct ns_item_shm, vlen),
		offsetof(struct ns_item_shm, state),
		offsetof(struct ns_item_shm, ttl_code), NS_MIN_CHUNK,
	};
	return ns__hash(0x6e616d6573746f72ull, 0, parts, sizeof(parts));
}

/*
 * ns__hash - 64-bit keyed hash of (space, key).  The mixing step multiplies
 * two 64-bit words to 128 bits and folds the halves together, the "mum"
 * construction of wyhash (Wang Yi) and of MUM-hash (Vladimir Makarov); the
 * constants are odd 64-bit numbers with balanced bits.  Written here from
 * that idea; it is fast for short keys, which is what a cache sees.
 */
static inline uint64_t mum(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

uint64_t ns__hash(uint64_t seed, uint32_t space, const void *key, size_t len)
{
	static const uint64_t k0 = 0xa0761d6478bd642full,
			      k1 = 0xe7037ed1a0b428dbull,
			      k2 = 0x8ebc6af09c88c6e3ull,
			      k3 = 0x589965cc75374cc3ull;
	const uint8_t *p = key;
	uint64_t h = seed ^ mum(space ^ k0, len ^ k1);
	size_t n = len;

	while (n > 16) {
		h = mum(rd64(p) ^ k2, rd64(p + 8) ^ h);
		p += 16;
		n -= 16;
	}
	uint64_t a = 0, b = 0;
	if (n > 8) {
		a = rd64(p);
		memcpy(&b, p + 8, n - 8);
	} else {
		memcpy(&a, p, n);
	}
	return mum(mum(a ^ k3, b ^ h ^ k1), h ^ len ^ k0);
}

bool ns__valid_name(const char *s, size_t max)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n] != '\0'; n++) {
		char ch = s[n];
		if (n >= max)
			return false;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		      ch == '-'))
			return false;
	}
	/* "." and ".." are names of directories, not segments. */
	return n > 0 && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static uint64_t test_clock_ms; /* process-local; tests only */

void ns__test_clock(uint64_t ms) { ns_store_relaxed(&test_clock_ms, ms); }

/* CLOCK in ms, or the test clock when one is set (it stands for both
 * realtime clocks). */
static uint64_t clock_ms(clockid_t clock)
{
	uint64_t t = ns_load_relaxed(&test_clock_ms);
	struct timespec ts;

	if (ns_unlikely(t != 0))
		return t;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t ns__now_ms(void) { return clock_ms(CLOCK_REALTIME); }
uint64_t ns__coarse_ms(void) { return clock_ms(CLOCK_REALTIME_COARSE); }

uint64_t ns__mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int shm_path(char *buf, size_t cap, const char *name)
{
	int n = snprintf(buf, cap, "/%s", name);
	return (n < 0 || (size_t)n >= cap) ? NS_EINVAL : 0;
}

/* Offsets of every table, from the size and the expected item count. */
struct geometry {
	uint32_t nslots, nspaces, npages;
	uint64_t nbuckets, nover;
	ns_off_t audit_off;
	uint64_t audit_bytes;
	ns_off_t slots_off, spaces_off, flights_off, classes_off, pages_off, index_off,
		over_off, data_off;
};

#define NS_DEFAULT_SLOTS 256  /* threads + processes attached at once */
#define NS_DEFAULT_SPACES 256 /* namespaces per segment */
#define NS_ITEMS_PER_BUCKET 4 /* of 7 slots: load 57%, so few chains */

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static int plan(size_t size, uint64_t max_items, struct geometry *g)
{
	uint64_t off;

	memset(g, 0, sizeof(*g));
	g->nslots = NS_DEFAULT_SLOTS;
	g->nspaces = NS_DEFAULT_SPACES;
	if (max_items == 0)
		max_items = size / 256; /* a guess: 256 bytes per item */
	if (max_items > (1ull << 32))
		return NS_EINVAL;
	g->nbuckets = 64;
	while (g->nbuckets * NS_ITEMS_PER_BUCKET < max_items)
		g->nbuckets <<= 1;
	/* Overflow buckets for the unlucky chains: at load 4/7 a Poisson
	 * bucket overflows 7 slots with probability ~5%; give an eighth. */
	g->nover = g->nbuckets / 8 + 16;

	off = NS_HDR_SIZE;
	g->slots_off = off;
	off += (uint64_t)g->nslots * sizeof(struct ns_slot_shm);
	g->spaces_off = off = round_up(off, NS_CACHELINE);
	off += (uint64_t)g->nspaces * sizeof(struct ns_space_shm);
	g->flights_off = off = round_up(off, NS_CACHELINE);
	off += NS_FLIGHTS * sizeof(struct ns_flight_shm);
	g->classes_off = off = round_up(off, NS_CACHELINE);
	off += NS_MAX_CLASSES * sizeof(struct ns_class_shm);
	g->pages_off = off = round_up(off, NS_CACHELINE);
	/* Page descriptors for as many pages as could possibly fit. */
	off += (size / NS_PAGE_SIZE + 1) * sizeof(struct ns_page_shm);
	/* The audit map: a bit for every chunk any page could hold. */
	g->audit_off = off = round_up(off, NS_CACHELINE);
	g->audit_bytes = ((size / NS_PAGE_SIZE + 1) * (NS_PAGE_SIZE / NS_MIN_CHUNK) + 7) / 8;
	off += g->audit_bytes;
	g->index_off = off = round_up(off, NS_CACHELINE);
	off += g->nbuckets * sizeof(struct ns_bucket_shm);
	g->over_off = off;
	off += g->nover * sizeof(struct ns_bucket_shm);
	g->data_off = off = round_up(off, NS_PAGE_SIZE);
	if (off >= size || (size - off) / NS_PAGE_SIZE < 2)
		return NS_EINVAL; /* not even two pages of data */
	g->npages = (uint32_t)((size - off) / NS_PAGE_SIZE);
	return 0;
}

/* Fill the process-local view from a checked header. */
static void view(ns_cache *c)
{
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)c->base;

	c->hdr = h;
	c->slots = (struct ns_slot_shm *)(c->base + h->slots_off);
	c->spaces = (struct ns_space_shm *)(c->base + h->spaces_off);
	c->flights = (struct ns_flight_shm *)(c->base + h->flights_off);
	c->audit_map = c->base + h->audit_off;
	c->classes = (struct ns_class_shm *)(c->base + h->classes_off);
	c->pages = (struct ns_page_shm *)(c->base + h->pages_off);
	c->buckets = (struct ns_bucket_shm *)(c->base + h->index_off);
	c->over = (struct ns_bucket_shm *)(c->base + h->over_off);
	c->mask = h->nbuckets - 1;
	c->nslots = h->nslots;
	c->nclasses = h->nclasses;
	c->npages = h->npages;
	c->nover = h->nover;
	c->data_off = h->data_off;
	ns__retire_limits(c);
	ns__trace_open(c);
}

/* Table OFF of LEN bytes starts at or after *END and ends inside SIZE;
 * *END moves to its end.  Written so that no sum can wrap: every offset
 * in the header is untrusted, and an offset near 2^64 plus a length would
 * come out small and pass an "after the previous table" test. */
static bool table_fits(uint64_t off, uint64_t len, uint64_t size, uint64_t *end)
{
	if (off < *end || off > size || len > size - off)
		return false;
	*end = off + len;
	return true;
}

/* Check that every table of the header lies inside SIZE bytes, in order. */
static int check_geometry(const struct ns_hdr_shm *h, uint64_t size)
{
	uint64_t nb = h->nbuckets, end = NS_HDR_SIZE;

	if (h->size != size || h->page_size != NS_PAGE_SIZE ||
	    h->hash_id != NS_HASH_ID)
		return NS_ECORRUPT;
	if (nb == 0 || (nb & (nb - 1)) != 0 || nb > (1ull << 32) ||
	    h->nover > (1ull << 31) || h->nslots == 0 || h->nslots > 65535 ||
	    h->nspaces == 0 || h->nspaces > 65535 ||
	    h->nclasses == 0 || h->nclasses > NS_MAX_CLASSES)
		return NS_ECORRUPT;
	/* The counts above bound every product below far under 2^64. */
	if (h->slots_off != NS_HDR_SIZE ||
	    !table_fits(h->slots_off, (uint64_t)h->nslots * sizeof(struct ns_slot_shm), size, &end) ||
	    !table_fits(h->spaces_off, (uint64_t)h->nspaces * sizeof(struct ns_space_shm), size, &end) ||
	    !table_fits(h->flights_off, NS_FLIGHTS * sizeof(struct ns_flight_shm), size, &end) ||
	    !table_fits(h->classes_off, NS_MAX_CLASSES * sizeof(struct ns_class_shm), size, &end) ||
	    !table_fits(h->pages_off, ((uint64_t)h->npages + 1) * sizeof(struct ns_page_shm), size, &end) ||
	    h->audit_bytes < ((uint64_t)h->npages * (NS_PAGE_SIZE / NS_MIN_CHUNK) + 7) / 8 ||
	    !table_fits(h->audit_off, h->audit_bytes, size, &end) ||
	    !table_fits(h->index_off, nb * sizeof(struct ns_bucket_shm), size, &end) ||
	    h->over_off != end ||
	    !table_fits(h->over_off, h->nover * sizeof(struct ns_bucket_shm), size, &end) ||
	    !table_fits(h->data_off, 0, size, &end) ||
	    h->data_off % NS_PAGE_SIZE != 0 ||
	    h->npages > (size - h->data_off) / NS_PAGE_SIZE)
		return NS_ECORRUPT;
	return 0;
}

/* The class table steers every offset the allocator computes: sizes must
 * ascend in steps of 8 from NS_MIN_CHUNK to at most a page, and per_page
 * must match.  Checked once at attach; carve() also bounds each offset. */
static int check_classes(const ns_cache *c)
{
	uint32_t prev = 0;

	for (uint32_t k = 0; k < c->nclasses; k++) {
		const struct ns_class_shm *cl = &c->classes[k];
		if (cl->size < NS_MIN_CHUNK || cl->size > NS_PAGE_SIZE ||
		    cl->size % 8 != 0 || cl->size <= prev ||
		    cl->per_page != NS_PAGE_SIZE / cl->size ||
		    cl->cur_page > c->npages || cl->spare_page > c->npages)
			return NS_ECORRUPT;
		prev = cl->size;
	}
	return 0;
}

static void init_segment(ns_cache *c, const struct geometry *g, const char *name)
{
	struct ns_hdr_shm *h = (struct ns_hdr_shm *)c->base;
	uint64_t seed;

	/* The memory is fresh from fallocate, so all zero: only non-zero
	 * fields are written. */
	h->magic = NS_MAGIC;
	h->version = NS_FORMAT_VERSION;
	h->state = NS_SEG_INIT;
	h->fingerprint = ns__layout_fingerprint();
	seed = ns__now_ms() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c->base;
	h->hash_seed = ns__hash(seed, 0, &seed, sizeof(seed));
	h->hash_id = NS_HASH_ID;
	h->page_size = NS_PAGE_SIZE;
	h->size = c->size;
	h->created_ms = ns__now_ms();
	h->nslots = g->nslots;
	h->nspaces = g->nspaces;
	h->npages = g->npages;
	h->nbuckets = g->nbuckets;
	h->nover = g->nover;
	h->slots_off = g->slots_off;
	h->spaces_off = g->spaces_off;
	h->flights_off = g->flights_off;
	h->audit_off = g->audit_off;
	h->audit_bytes = g->audit_bytes;
	h->classes_off = g->classes_off;
	h->pages_off = g->pages_off;
	h->index_off = g->index_off;
	h->over_off = g->over_off;
	h->data_off = g->data_off;
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->epoch = 1;
	h->next_version = 1;
	view(c);
	ns__slab_init(c); /* sets h->nclasses */
	c->nclasses = h->nclasses;
}

static int map_and_check(ns_cache *c)
{
	struct stat st;
	struct ns_hdr_shm hdr;
	int prot = c->rdonly ? PROT_READ : PROT_READ | PROT_WRITE;
	int err;

	if (fstat(c->fd, &st) < 0)
		return ns__errno(errno);
	if ((uint64_t)st.st_size < NS_HDR_SIZE)
		return NS_ECORRUPT;
	if (pread(c->fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		return NS_ECORRUPT;
	if (hdr.magic != NS_MAGIC)
		return NS_ECORRUPT;
	if (hdr.version != NS_FORMAT_VERSION ||
	    hdr.fingerprint != ns__layout_fingerprint())
		return NS_EVERSION;
	if (hdr.state != NS_SEG_READY)
		return NS_ECORRUPT; /* INIT with the init lock free: creator died */
	err = check_geometry(&hdr, (uint64_t)st.st_size);
	if (err)
		return err;
	c->size = (size_t)st.st_size;
	c->base = mmap(NULL, c->size, prot, MAP_SHARED, c->fd, 0);
	if (c->base == MAP_FAILED) {
		c->base = NULL;
		return ns__errno(errno);
	}
	view(c);
	err = check_classes(c);
	if (err) {
		munmap(c->base, c->size);
		c->base = NULL;
		return err;
	}
	return 0;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool membarrier_registered;

static void register_membarrier(void)
{
	long r = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	if (r > 0 && (r & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
	    (r & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
	    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
		    0, 0) == 0)
		membarrier_registered = true;
	if (getenv("NS_NO_MEMBARRIER") != NULL) /* tests cover the fence path */
		membarrier_registered = false;
#ifdef NS_TSAN
	membarrier_registered = false; /* the fence path: see ns__read_enter */
#endif
}

int ns__membarrier(ns_cache *c)
{
	(void)c;
	if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0)
		return ns__errno(errno);
	return 0;
}

static int create(ns_cache *c, const char *path, const struct ns_attach_opts *o)
{
	struct geometry g;
	mode_t mode = o->mode ? o->mode : 0600;
	int err;

	err = plan(o->size, o->max_items, &g);
	if (err)
		return err;
	c->fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (c->fd < 0)
		return errno == EEXIST ? NS_EEXIST : ns__errno(errno);
	/* Attachers that open before this lock is taken see a zero size and
	 * retry; after it they wait on their shared lock.  One of them may
	 * hold that shared lock for an instant (to look at the size), so we
	 * wait for it rather than fail: it never waits for us while holding. */
	err = ns__lock_byte(c->fd, NS_LOCK_INIT, F_WRLCK, true);
	if (err)
		goto fail;
	if (fchmod(c->fd, mode) < 0) { /* shm_open's mode is masked by umask */
		err = ns__errno(errno);
		goto fail;
	}
	err = posix_fallocate(c->fd, 0, (off_t)o->size);
	if (err) {
		err = (err == ENOSPC || err == EFBIG) ? NS_ENOSPC : ns__errno(err);
		goto fail;
	}
	c->size = o->size;
	c->base = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->base == MAP_FAILED) {
		c->base = NULL;
		err = ns__errno(errno);
		goto fail;
	}
	init_segment(c, &g, c->name);
	NS_FAULT("create:initialized");
	ns_store_release(&c->hdr->state, (uint32_t)NS_SEG_READY);
	ns__lock_byte(c->fd, NS_LOCK_INIT, F_UNLCK, false);
	return 0;
fail:
	if (c->base)
		munmap(c->base, c->size);
	c->base = NULL;
	shm_unlink(path);
	close(c->fd);
	c->fd = -1;
	return err;
}

#define NS_ATTACH_RETRY_MS 1000 /* how long a zero-size file may stay so */
/* How long a creator may take to initialize (fallocate of a large
 * segment); process-local so that a test can shorten it. */
unsigned ns__create_wait_ms = 30000;

static int open_existing(ns_cache *c, const char *path)
{
	int flags = (c->rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	int err;

	for (int waited = 0;; waited++) {
		struct stat st;

		c->fd = shm_open(path, flags, 0);
		if (c->fd < 0)
			return errno == ENOENT ? NS_ENOENT : ns__errno(errno);
		/* Wait for a creator still initializing; it holds the lock.
		 * Not for ever: a creator stopped (or stuck) mid-creation
		 * gets us NS_EBUSY (rule 7). */
		for (int ms = 0;; ms++) {
			err = ns__lock_byte(c->fd, NS_LOCK_INIT, F_RDLCK, false);
			if (err != NS_EBUSY || ms >= (int)ns__create_wait_ms)
				break;
			usleep(1000);
		}
		if (err)
			goto fail;
		if (fstat(c->fd, &st) < 0) {
			err = ns__errno(errno);
			goto fail;
		}
		if (st.st_size != 0)
			break;
		/* Opened between the creator's open and its lock. */
		ns__lock_byte(c->fd, NS_LOCK_INIT, F_UNLCK, false);
		close(c->fd);
		c->fd = -1;
		if (waited * 10 >= NS_ATTACH_RETRY_MS)
			return NS_ECORRUPT;
		usleep(10000);
	}
	err = map_and_check(c);
	ns__lock_byte(c->fd, NS_LOCK_INIT, F_UNLCK, false);
	if (err)
		goto fail;
	return 0;
fail:
	close(c->fd);
	c->fd = -1;
	return err;
}

int ns_attach(const char *name, const struct ns_attach_opts *opts, ns_cache **out)
{
	char path[NS_NAME_MAX + 2];
	ns_cache *c;
	int err;

	if (out == NULL || !ns__valid_name(name, NS_NAME_MAX))
		return NS_EINVAL;
	*out = NULL;
	if (opts && (opts->flags & ~(NS_CREATE | NS_RDONLY | NS_EXCL)))
		return NS_EINVAL;
	if (opts && (opts->flags & NS_CREATE) && (opts->flags & NS_RDONLY))
		return NS_EINVAL;
	if (shm_path(path, sizeof(path), name))
		return NS_EINVAL;
	pthread_once(&once, register_membarrier);

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return ns__errno(ENOMEM);
	c->fd = -1;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->rdonly = opts && (opts->flags & NS_RDONLY);
	c->membarrier_ok = membarrier_registered;

	if (opts && (opts->flags & NS_CREATE)) {
		err = create(c, path, opts);
		if (err == NS_EEXIST && !(opts->flags & NS_EXCL))
			err = open_existing(c, path);
	} else {
		err = open_existing(c, path);
	}
	if (err)
		goto fail;
	if (pthread_key_create(&c->key, ns__thr_exit) != 0) {
		err = ns__errno(EAGAIN);
		goto fail_map;
	}
	*out = c;
	return 0;
fail_map:
	munmap(c->base, c->size);
	close(c->fd);
fail:
	free(c);
	return err;
}

void ns_detach(ns_cache *c)
{
	struct ns_thr *t, *next;
	struct ns_space *s, *snext;

	if (c == NULL)
		return;
	pthread_mutex_lock(&ns__mu);
	for (t = c->thrs; t; t = next) {
		next = t->next;
		/* Bindings inherited from a parent belong to the parent. */
		if (t->forkgen == ns__forkgen)
			ns__thr_release(t);
		free(t);
	}
	c->thrs = NULL;
	for (s = c->open_spaces; s; s = snext) {
		snext = s->next;
		free(s);
	}
	pthread_mutex_unlock(&ns__mu);
	pthread_key_delete(c->key);
	munmap(c->base, c->size);
	close(c->fd);
	free(c);
}

int ns_unlink(const char *name)
{
	char path[NS_NAME_MAX + 2];

	if (!ns__valid_name(name, NS_NAME_MAX) || shm_path(path, sizeof(path), name))
		return NS_EINVAL;
	if (shm_unlink(path) < 0)
		return errno == ENOENT ? NS_ENOENT : ns__errno(errno);
	return 0;
}
