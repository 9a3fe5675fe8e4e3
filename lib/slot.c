/*
 * slot.c - client slots: who is attached, and whether they are alive.
 *
 * Every thread that uses a cache owns one client slot in the segment.  The
 * slot carries its reader epoch, its per-op counters, its intent record, its
 * retire list and its chunk caches, so that whatever a thread was doing
 * when its process died can be found and finished by somebody else.
 *
 * Liveness is never a bare pid (rule 5).  The owner holds an OFD lock
 * (F_OFD_SETLK) on byte NS_LOCK_SLOT_BASE + index of the segment file,
 * through an open file description of its own: each binding opens
 * /proc/self/fd/N anew, which creates a new description, because OFD locks
 * belong to the description and a description shared with a parent (after
 * fork) or another thread would make their locks one lock.  The kernel drops
 * the lock when the process dies, however it dies, whatever its pid
 * namespace.  So "nobody holds byte i" means "slot i has no live owner", and
 * whoever takes that lock becomes the only one allowed to touch slot i: a
 * claimer and a recoverer are the same thing (claim = take lock, recover
 * what the previous owner left, then use).
 *
 * Fork: pthread_atfork's child handler bumps ns__forkgen; a binding made
 * under another generation belongs to the parent, so the child's first
 * operation claims a slot of its own.  Attach-before-fork therefore needs
 * nothing from the caller.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "ns_internal.h"

pthread_mutex_t ns__mu = PTHREAD_MUTEX_INITIALIZER;
unsigned ns__forkgen;

static void atfork_prepare(void) { pthread_mutex_lock(&ns__mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&ns__mu); }
static void atfork_child(void)
{
	ns__forkgen++;
	pthread_mutex_unlock(&ns__mu);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void install_atfork(void)
{
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int ns__lock_byte(int fd, off_t byte, short type, bool wait)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	for (;;) {
		if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
			return 0;
		if (errno == EINTR && wait)
			continue;
		if (errno == EAGAIN || errno == EACCES)
			return NS_EBUSY;
		return ns__errno(errno);
	}
}

int ns__slot_alive(ns_cache *c, int fd, uint32_t idx)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = NS_LOCK_SLOT_BASE + (off_t)idx,
		.l_len = 1,
	};

	if (fd < 0)
		fd = c->fd;
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return ns__errno(errno);
	return fl.l_type != F_UNLCK;
}

int ns__open_own_fd(ns_cache *c)
{
	char path[NS_NAME_MAX + 32];
	int fd;

	/* A new open of the same file through procfs is a new description. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", c->fd);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	/* Without /proc, open the name again (fails if it was unlinked). */
	snprintf(path, sizeof(path), "/%s", c->name);
	fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
	return fd >= 0 ? fd : ns__errno(errno);
}

static void slot_init_identity(struct ns_slot_shm *s, bool mb)
{
	s->pid = (int32_t)getpid();
	s->claims++;
	s->attach_ms = ns__now_ms();
	memset(s->comm, 0, sizeof(s->comm));
	prctl(PR_GET_NAME, s->comm, 0, 0, 0);
	s->comm[sizeof(s->comm) - 1] = '\0';
	s->ver_next = s->ver_end = 0;
	/* A reclaimer may still be reading flags and epoch (it saw the slot
	 * ACTIVE under its previous owner), statistics readers the counters. */
	ns_store_relaxed(&s->flags, (uint32_t)(mb ? NS_SLOTF_MEMBARRIER : 0));
	ns_store_relaxed(&s->epoch, (uint64_t)0);
	ns_store_relaxed(&s->gets, (uint64_t)0);
	ns_store_relaxed(&s->hits, (uint64_t)0);
	ns_store_relaxed(&s->misses, (uint64_t)0);
	ns_store_relaxed(&s->sets, (uint64_t)0);
	ns_store_relaxed(&s->dels, (uint64_t)0);
	ns_store_relaxed(&s->evictions, (uint64_t)0);
}

/* Take slot IDX if nobody holds it.  Returns 1 when taken, 0 when busy. */
static int try_claim(ns_cache *c, struct ns_thr *t, uint32_t idx)
{
	struct ns_slot_shm *s = &c->slots[idx];
	int err;

	/* Cheap pre-check: a slot that looks active is most likely alive. */
	if (ns_load_relaxed(&s->state) == NS_SLOT_ACTIVE &&
	    ns__slot_alive(c, t->fd, idx) == 1)
		return 0;
	err = ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)idx, F_WRLCK, false);
	if (err)
		return 0;
	/* Acquire, pairing with the release of FREE/ORPHAN in
	 * ns__thr_release: the previous owner's writes to the slot happen
	 * before ours.  The OFD lock orders them too (through the kernel),
	 * but that is invisible to the C memory model and to TSan. */
	if (ns_load_acquire(&s->state) != NS_SLOT_FREE) {
		/* A dead or orphaned owner left it: finish its work first.
		 * We already hold the slot's lock, so recovery is ours. */
		t->idx = idx;
		t->slot = s;
		err = ns__recover_slot(c, NULL, idx);
		if (err < 0 || ns_load_relaxed(&s->state) != NS_SLOT_FREE) {
			ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)idx,
				      F_UNLCK, false);
			return 0;
		}
	}
	slot_init_identity(s, c->membarrier_ok);
	ns_store_release(&s->state, (uint32_t)NS_SLOT_ACTIVE);
	t->idx = idx;
	t->slot = s;
	return 1;
}

struct ns_thr *ns__thr_slow(ns_cache *c, int *err)
{
	struct ns_thr *t;
	uint32_t start;

	if (c->rdonly) {
		*err = NS_ERDONLY;
		return NULL;
	}
	pthread_once(&atfork_once, install_atfork);
	t = calloc(1, sizeof(*t));
	if (t == NULL) {
		*err = ns__errno(ENOMEM);
		return NULL;
	}
	t->c = c;
	t->forkgen = ns__forkgen;
	t->reclaim_seen = ns_load_relaxed(&c->hdr->reclaim_ask_ms);
	t->fd = ns__open_own_fd(c);
	if (t->fd < 0) {
		*err = t->fd;
		free(t);
		return NULL;
	}
	/* Start the search at a pid-dependent place so that processes
	 * attaching at once do not all fight for slot 0. */
	start = (uint32_t)getpid() % c->nslots;
	for (uint32_t i = 0; i < c->nslots; i++) {
		if (try_claim(c, t, (start + i) % c->nslots))
			goto claimed;
	}
	close(t->fd);
	free(t);
	*err = NS_ESLOTS;
	return NULL;
claimed:
	pthread_mutex_lock(&ns__mu);
	t->next = c->thrs;
	c->thrs = t;
	pthread_mutex_unlock(&ns__mu);
	pthread_setspecific(c->key, t);
	return t;
}

#define NS_DETACH_GRACE_TRIES 50 /* x 1 ms: wait for readers before orphaning */

/* Give the slot back.  Called under ns__mu by ns_detach. */
void ns__thr_release(struct ns_thr *t)
{
	ns_cache *c = t->c;
	struct ns_slot_shm *s = t->slot;

	ns__wsec_enter(c, s);
	/* Free what we retired once readers are past it; a reader stuck in a
	 * stopped process must not stall detach, so after a bounded wait the
	 * rest is left to recovery (state ORPHAN). */
	for (int i = 0; s->retire_count && i < NS_DETACH_GRACE_TRIES; i++) {
		ns__reclaim(c, t);
		if (s->retire_count)
			usleep(1000);
	}
	for (int k = 0; k < NS_MAX_CLASSES; k++) {
		while (s->cache_n[k] > 0) {
			ns_off_t off = s->cache[k][s->cache_n[k] - 1];
			s->slab_busy = 1;
			s->cache_n[k]--;
			ns__push_free(c, k, off);
			s->slab_busy = 0;
		}
	}
	ns__wsec_exit(s);
	ns_store_release(&s->state,
			 (uint32_t)(s->retire_count ? NS_SLOT_ORPHAN : NS_SLOT_FREE));
	ns__lock_byte(t->fd, NS_LOCK_SLOT_BASE + (off_t)t->idx, F_UNLCK, false);
	close(t->fd);
}

/* pthread key destructor: a thread that exits gives its slot back, so a
 * pool that replaces its threads does not run out of slots. */
void ns__thr_exit(void *p)
{
	struct ns_thr *t = p, **pp;

	pthread_mutex_lock(&ns__mu);
	for (pp = &t->c->thrs; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			/* A binding inherited from a parent is the parent's. */
			if (t->forkgen == ns__forkgen)
				ns__thr_release(t);
			free(t);
			break;
		}
	}
	pthread_mutex_unlock(&ns__mu);
}

#define NS_VERSION_BLOCK 1024 /* versions a slot takes from the header at once */

uint64_t ns__next_version(struct ns_thr *t)
{
	struct ns_slot_shm *s = t->slot;

	if (ns_unlikely(s->ver_next >= s->ver_end)) {
		uint64_t end = ns_add_return(&t->c->hdr->next_version,
					     (uint64_t)NS_VERSION_BLOCK);
		s->ver_next = end - NS_VERSION_BLOCK;
		s->ver_end = end;
	}
	return s->ver_next++;
}
