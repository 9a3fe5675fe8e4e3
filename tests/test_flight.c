/*
 * test_flight.c - ns_get_or_set: read-through with single flight across
 * processes.
 *
 * First the single-process contract: a hit never calls the loader, a miss
 * calls it once and stores what it returns (with its TTL and flags), a
 * buffer too small gives NS_ERANGE with the length while the value is
 * still stored, and a loader error comes back unchanged with nothing
 * stored.  Then the flight itself, with forked callers that share one
 * segment: eight processes released at once load a key once; a loader
 * killed mid-load, or one that fails, is replaced by a single waiter; a
 * waiter with a short wait_ms gives up with NS_ETIMEDOUT, one with the
 * largest wait_ms waits; threads of one process share flights as processes
 * do; and with stale_ms, callers get an expired value at once while one
 * reloads.
 *
 * Every loader counts its calls in a MAP_SHARED anonymous mapping, so the
 * parent sees the total over all processes.  Loaders that must still be
 * running while other callers arrive first wait until those callers have
 * checked in (sh->ready), then sleep: the other callers are then already
 * inside ns_get_or_set, or about to be, when the load ends, without the
 * test depending on how fast fork() is.  Children always exit 0 once set up
 * and leave their results in the mapping; the parent asserts on them, and
 * bounds every child with t_wait so that a caller that never returns fails
 * the test instead of hanging it.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define SPACE "test:flight"
#define MAXCALLERS 16
#define CHILD_BOUND_MS 30000 /* far over any wait below: only hangs reach it */

/* What one forked caller saw. */
struct res {
	int rc;
	size_t vlen;
	char val[128];
	uint64_t start_ns, end_ns;  /* around its ns_get_or_set */
	int load_done_at_return;    /* sh->load_done when the call returned */
	int loader_calls;           /* its own loader's calls, in this process */
};

/* The mapping every process of a test shares. */
struct shared {
	atomic_int calls[4];   /* loader calls, by loader kind */
	atomic_int bad_key;    /* loader called with a key other than asked */
	atomic_int ready;      /* callers checked in */
	atomic_int go;         /* start line of the race */
	atomic_int loading;    /* a marked loader has started */
	atomic_int load_done;  /* ... and is about to return */
	atomic_int release;    /* lingering callers may exit now */
	uint64_t killed_ns;    /* when the parent SIGKILLed the loader */
	struct res res[MAXCALLERS];
};

static struct shared *shared_new(void)
{
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	return sh;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Poll FLAG until it reaches at least WANT; false after MS. */
static bool wait_flag(atomic_int *flag, int want, int ms)
{
	uint64_t end = t_now_ns() + (uint64_t)ms * 1000000ull;
	while (atomic_load(flag) < want) {
		if (t_now_ns() > end)
			return false;
		usleep(1000);
	}
	return true;
}

/* A loader and what it should do. */
struct ldr {
	struct shared *sh;
	int kind;           /* index into sh->calls */
	const char *key;    /* the key it expects to be asked for */
	const char *val;    /* NULL: a value of LEN bytes of 'x' */
	size_t len;
	uint64_t ttl_ms;
	uint32_t flags;
	int err;            /* returned instead of a value when not 0 */
	bool mark;          /* set sh->loading and sh->load_done */
	int wait_ready;     /* first wait for this many callers to check in */
	int sleep_ms;       /* then take this long */
	int local_calls;    /* calls in this process */
	char big[512];
};

static int loader(void *arg, const void *key, size_t klen, struct ns_value *out)
{
	struct ldr *l = arg;

	l->local_calls++;
	atomic_fetch_add(&l->sh->calls[l->kind], 1);
	if (klen != strlen(l->key) || memcmp(key, l->key, klen) != 0)
		atomic_fetch_add(&l->sh->bad_key, 1);
	if (l->mark)
		atomic_store(&l->sh->loading, 1);
	if (l->wait_ready)
		wait_flag(&l->sh->ready, l->wait_ready, 10000);
	if (l->sleep_ms)
		sleep_ms(l->sleep_ms);
	if (l->mark)
		atomic_store(&l->sh->load_done, 1);
	if (l->err)
		return l->err;
	if (l->val) {
		out->val = l->val;
		out->vlen = strlen(l->val);
	} else {
		memset(l->big, 'x', l->len);
		out->val = l->big;
		out->vlen = l->len;
	}
	out->ttl_ms = l->ttl_ms;
	out->flags = l->flags;
	return 0;
}

static struct ldr mkldr(struct shared *sh, int kind, const char *key, const char *val)
{
	struct ldr l = { .sh = sh, .kind = kind, .key = key, .val = val,
			 .ttl_ms = 60000 };
	return l;
}

/* How a forked caller starts. */
struct how {
	bool race;           /* check in, then wait for sh->go */
	bool check_in;       /* check in (sh->ready) just before the call */
	const char *attach;  /* attach this segment itself instead of inheriting */
	struct ns_load_opts opts;
	bool null_opts;
	bool linger;         /* stay alive after the call until sh->release */
};

/*
 * Fork a caller IDX of ns_get_or_set(KEY) with loader L.  It records its
 * result in sh->res[IDX].  Exit 0 once set up; 3 and 4 are set-up failures.
 */
static pid_t spawn(ns_space *s, struct shared *sh, int idx, const char *key,
		   struct ldr l, struct how h)
{
	pid_t p = fork();

	assert_true(p >= 0);
	if (p != 0)
		return p;

	struct res *r = &sh->res[idx];
	if (h.attach) {
		/* Map it anew, at another address: the futex the waiters
		 * sleep on must be a shared one to wake them at all. */
		ns_cache *c2;
		void *junk = mmap(NULL, (size_t)(idx + 1) << 20, PROT_READ,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		(void)junk;
		if (ns_attach(h.attach, NULL, &c2) != 0)
			_exit(3);
		if (ns_space_open(c2, SPACE, &s) != 0)
			_exit(4);
	}
	if (h.race) {
		atomic_fetch_add(&sh->ready, 1);
		while (!atomic_load(&sh->go))
			sched_yield();
	} else if (h.check_in) {
		atomic_fetch_add(&sh->ready, 1);
	}
	r->start_ns = t_now_ns();
	r->rc = ns_get_or_set(s, key, strlen(key), r->val, sizeof(r->val) - 1,
			      &r->vlen, loader, &l, h.null_opts ? NULL : &h.opts);
	r->end_ns = t_now_ns();
	r->load_done_at_return = atomic_load(&sh->load_done);
	r->loader_calls = l.local_calls;
	if (h.linger)
		wait_flag(&sh->release, 1, CHILD_BOUND_MS / 2);
	_exit(0);
}

/* Reap a caller that must have exited normally. */
static void reap(pid_t p, int idx)
{
	int st = t_wait(p, CHILD_BOUND_MS);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		print_error("caller %d: status %d (-1: still running after %d ms)\n",
			    idx, st, CHILD_BOUND_MS);
	assert_true(st != -1);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* Caller IDX returned 0 with VAL. */
static void assert_got(const struct shared *sh, int idx, const char *val)
{
	const struct res *r = &sh->res[idx];
	if (r->rc != 0 || r->vlen != strlen(val) || memcmp(r->val, val, r->vlen) != 0)
		print_error("caller %d: rc %d (%s) vlen %zu, wanted 0 with \"%s\"\n",
			    idx, r->rc, ns_strerror(r->rc), r->vlen, val);
	assert_int_equal(r->rc, 0);
	assert_int_equal(r->vlen, strlen(val));
	assert_memory_equal(r->val, val, r->vlen);
}

static void assert_stored(ns_space *s, const char *key, const char *val)
{
	char buf[128];
	size_t n = 0;
	int e = ns_get(s, key, strlen(key), buf, sizeof(buf), &n);
	if (e != 0)
		print_error("ns_get(%s) = %d (%s)\n", key, e, ns_strerror(e));
	assert_int_equal(e, 0);
	assert_int_equal(n, strlen(val));
	assert_memory_equal(buf, val, n);
}

static uint64_t ms_of(uint64_t ns) { return ns / 1000000ull; }

struct fix {
	const char *name;
	ns_cache *c;
	ns_space *s;
	struct shared *sh;
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	f->name = t_name("flight");
	f->c = t_create(f->name, 16u << 20, 4096);
	assert_int_equal(ns_space_open(f->c, SPACE, &f->s), 0);
	f->sh = shared_new();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	/* Children that died (killed ones included) leave slots behind. */
	ns__recover_dead(f->c);
	t_assert_consistent(f->c);
	munmap(f->sh, sizeof(*f->sh));
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

/* ---- one process ------------------------------------------------------- */

/* A hit returns the stored value, also to a caller without options, and
 * never calls the loader. */
static void hit_does_not_load(void **state)
{
	struct fix *f = *state;
	struct ldr l = mkldr(f->sh, 0, "hit", "from-loader");
	struct ns_load_opts o = { .wait_ms = 1000, .stale_ms = 1000 };
	char buf[64];
	size_t n = 0;

	assert_int_equal(ns_set(f->s, "hit", 3, "stored", 6, 0), 0);
	assert_int_equal(ns_get_or_set(f->s, "hit", 3, buf, sizeof(buf), &n,
				       loader, &l, NULL), 0);
	assert_int_equal(n, 6);
	assert_memory_equal(buf, "stored", 6);
	n = 0;
	assert_int_equal(ns_get_or_set(f->s, "hit", 3, buf, sizeof(buf), &n,
				       loader, &l, &o), 0);
	assert_int_equal(n, 6);
	assert_memory_equal(buf, "stored", 6);
	/* A hit with a buffer too small: NS_ERANGE and the length, as ns_get,
	 * still without loading. */
	n = 0;
	assert_int_equal(ns_get_or_set(f->s, "hit", 3, buf, 2, &n, loader, &l, NULL),
			 NS_ERANGE);
	assert_int_equal(n, 6);
	assert_int_equal(l.local_calls, 0);
	assert_int_equal(atomic_load(&f->sh->calls[0]), 0);
}

/* A miss loads once, stores with the loader's TTL and flags, and returns
 * the value; the next call is a hit. */
static void miss_loads_once_and_stores(void **state)
{
	struct fix *f = *state;
	struct ldr l = mkldr(f->sh, 0, "miss", "loaded-value");
	struct ns_item_info info;
	char buf[64];
	size_t n = 0;

	l.ttl_ms = 60000;
	l.flags = 0xfeed1234u;
	assert_int_equal(ns_exists(f->s, "miss", 4), NS_ENOTFOUND);
	assert_int_equal(ns_get_or_set(f->s, "miss", 4, buf, sizeof(buf), &n,
				       loader, &l, NULL), 0);
	assert_int_equal(l.local_calls, 1);
	assert_int_equal(atomic_load(&f->sh->bad_key), 0);
	assert_int_equal(n, 12);
	assert_memory_equal(buf, "loaded-value", 12);

	/* Stored as the loader said. */
	memset(&info, 0, sizeof(info));
	n = 0;
	assert_int_equal(ns_get_ex(f->s, "miss", 4, buf, sizeof(buf), &n, &info), 0);
	assert_int_equal(n, 12);
	assert_memory_equal(buf, "loaded-value", 12);
	assert_int_equal(info.flags, 0xfeed1234u);
	assert_int_equal(info.ttl_ms, 60000);
	assert_true(info.expire_ms != 0);
	/* Both from one reading of the clock, or two close together. */
	assert_in_range(info.expire_ms - info.created_ms, 59900, 60100);
	int64_t left = 0;
	assert_int_equal(ns_ttl(f->s, "miss", 4, &left), 0);
	assert_true(left > 50000 && left <= 60000);

	/* Now a hit. */
	n = 0;
	assert_int_equal(ns_get_or_set(f->s, "miss", 4, buf, sizeof(buf), &n,
				       loader, &l, NULL), 0);
	assert_int_equal(l.local_calls, 1);
	assert_int_equal(n, 12);

	/* NS_TTL_NEVER from the loader: no expiry. */
	struct ldr l2 = mkldr(f->sh, 1, "forever", "v");
	l2.ttl_ms = NS_TTL_NEVER;
	assert_int_equal(ns_get_or_set(f->s, "forever", 7, buf, sizeof(buf), &n,
				       loader, &l2, NULL), 0);
	assert_int_equal(ns_ttl(f->s, "forever", 7, &left), 0);
	assert_int_equal(left, -1);
}

/* A miss into a buffer too small: NS_ERANGE with the length needed, the
 * buffer untouched (as ns_get), and the value stored all the same, so the
 * retry with a large enough buffer is a hit. */
static void small_buffer_gives_erange_and_stores(void **state)
{
	struct fix *f = *state;
	struct ldr l = mkldr(f->sh, 0, "big", NULL);
	char buf[256], want[200];
	size_t n = 0;

	l.len = 200;
	memset(buf, '#', sizeof(buf));
	assert_int_equal(ns_get_or_set(f->s, "big", 3, buf, 10, &n, loader, &l, NULL),
			 NS_ERANGE);
	assert_int_equal(n, 200);
	assert_int_equal(l.local_calls, 1);
	for (int i = 0; i < 10; i++)
		assert_int_equal(buf[i], '#');

	memset(want, 'x', sizeof(want));
	n = 0;
	assert_int_equal(ns_get(f->s, "big", 3, buf, sizeof(buf), &n), 0);
	assert_int_equal(n, 200);
	assert_memory_equal(buf, want, 200);
	n = 0;
	assert_int_equal(ns_get_or_set(f->s, "big", 3, buf, sizeof(buf), &n,
				       loader, &l, NULL), 0);
	assert_int_equal(n, 200);
	assert_int_equal(l.local_calls, 1);
}

/* A loader error comes back unchanged and nothing is stored; the flight is
 * over at once, so the next caller loads without waiting out wait_ms. */
static void loader_error_is_returned_and_nothing_stored(void **state)
{
	struct fix *f = *state;
	struct ldr bad = mkldr(f->sh, 0, "err", NULL);
	struct ldr good = mkldr(f->sh, 1, "err", "second-try");
	char buf[64];
	size_t n = 0;
	int errs[] = { ns__errno(EIO), NS_EINVAL, -4242 };

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		bad.err = errs[i];
		assert_int_equal(ns_get_or_set(f->s, "err", 3, buf, sizeof(buf), &n,
					       loader, &bad, NULL), errs[i]);
		assert_int_equal(ns_exists(f->s, "err", 3), NS_ENOTFOUND);
	}
	assert_int_equal(bad.local_calls, 3);

	/* Another process (this one stays alive) loads at once: a claim
	 * left behind by the failures would make it time out instead. */
	struct how h = { .opts = { .wait_ms = 1000 } };
	reap(spawn(f->s, f->sh, 0, "err", good, h), 0);
	assert_got(f->sh, 0, "second-try");
	assert_int_equal(atomic_load(&f->sh->calls[1]), 1);
	assert_stored(f->s, "err", "second-try");

	/* And this process too, now as a hit. */
	assert_int_equal(ns_get_or_set(f->s, "err", 3, buf, sizeof(buf), &n,
				       loader, &good, NULL), 0);
	assert_int_equal(good.local_calls, 0);
	assert_int_equal(n, 10);
	assert_memory_equal(buf, "second-try", 10);
}

/* A loader that breaks its contract (a positive result, or a NULL value
 * with a length) gets the caller NS_EINVAL, and nothing is stored. */
static int positive_loader(void *arg, const void *key, size_t klen, struct ns_value *out)
{
	(void)arg; (void)key; (void)klen;
	out->val = "x";
	out->vlen = 1;
	return 1;
}

static int null_value_loader(void *arg, const void *key, size_t klen, struct ns_value *out)
{
	(void)arg; (void)key; (void)klen;
	out->val = NULL;
	out->vlen = 5;
	return 0;
}

static void broken_loader_is_einval(void **state)
{
	struct fix *f = *state;
	char buf[16];
	size_t n = 0;

	assert_int_equal(ns_get_or_set(f->s, "bad", 3, buf, sizeof(buf), &n,
				       positive_loader, NULL, NULL), NS_EINVAL);
	assert_int_equal(ns_exists(f->s, "bad", 3), NS_ENOTFOUND);
	assert_int_equal(ns_get_or_set(f->s, "bad", 3, buf, sizeof(buf), &n,
				       null_value_loader, NULL, NULL), NS_EINVAL);
	assert_int_equal(ns_exists(f->s, "bad", 3), NS_ENOTFOUND);
	/* The flight was released: a good loader now loads at once. */
	struct ldr good = mkldr(f->sh, 0, "bad", "fine");
	assert_int_equal(ns_get_or_set(f->s, "bad", 3, buf, sizeof(buf), &n,
				       loader, &good, NULL), 0);
	assert_int_equal(n, 4);
}

/* ---- processes ---------------------------------------------------------- */

#define RACERS 8

/* Eight processes released together onto a missing key: one load in all,
 * and all eight get its value.  Half of them attach on their own. */
static void eight_racers_load_once(void **state)
{
	struct fix *f = *state;
	struct ldr l = mkldr(f->sh, 0, "race", "raced-value");
	struct how h = { .race = true, .opts = { .wait_ms = 10000 } };
	pid_t p[RACERS];

	l.sleep_ms = 200; /* keep the flight open while the others arrive */
	for (int i = 0; i < RACERS; i++) {
		h.attach = i % 2 ? f->name : NULL;
		p[i] = spawn(f->s, f->sh, i, "race", l, h);
	}
	bool ready = wait_flag(&f->sh->ready, RACERS, 20000);
	uint64_t go = t_now_ns();
	atomic_store(&f->sh->go, 1);
	for (int i = 0; i < RACERS; i++)
		reap(p[i], i);
	assert_true(ready);

	uint64_t last = 0;
	for (int i = 0; i < RACERS; i++) {
		assert_got(f->sh, i, "raced-value");
		if (f->sh->res[i].end_ns > last)
			last = f->sh->res[i].end_ns;
	}
	print_message("# %d racers: %d load(s), all done %llu ms after the start\n",
		      RACERS, atomic_load(&f->sh->calls[0]),
		      (unsigned long long)ms_of(last - go));
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
	assert_int_equal(atomic_load(&f->sh->bad_key), 0);
	/* Waiters are woken when the load ends, not at wait_ms (10 s). */
	assert_true(ms_of(last - go) < 5000);
	assert_stored(f->s, "race", "raced-value");
}

/*
 * Two keys whose hashes share a flight entry.  While key A's flight holds
 * the entry (its loader is slow), racers missing key B used to load
 * without single flight, one load each: the prefork demo of examples/
 * lost single flight that way on a thousand hot keys.  B's flight now
 * takes the next entry, and B loads once.
 */
static void colliding_keys_each_load_once(void **state)
{
	struct fix *f = *state;
	ns_cache *c = f->s->c;
	static char ka[32], kb[32];
	uint64_t ea = 0;
	int found = 0;

	for (unsigned i = 0; i < 1000000 && found < 2; i++) {
		char k[32];
		snprintf(k, sizeof(k), "collide%u", i);
		uint64_t e = ns__hash(c->hdr->hash_seed, f->s->id, k, strlen(k)) &
			     (NS_FLIGHTS - 1);
		if (found == 0) {
			memcpy(ka, k, sizeof(k));
			ea = e;
			found = 1;
		} else if (e == ea) {
			memcpy(kb, k, sizeof(k));
			found = 2;
		}
	}
	assert_int_equal(found, 2);

	struct ldr la = mkldr(f->sh, 0, ka, "value-a");
	struct ldr lb = mkldr(f->sh, 1, kb, "value-b");
	struct how ha = { .opts = { .wait_ms = 10000 } };
	struct how hb = { .race = true, .opts = { .wait_ms = 10000 } };
	pid_t pa, p[RACERS];

	la.mark = true;
	la.sleep_ms = 600;  /* A's flight holds the shared entry meanwhile */
	lb.sleep_ms = 200;  /* B's own flight stays open while B's racers arrive */
	pa = spawn(f->s, f->sh, RACERS, ka, la, ha);
	assert_true(wait_flag(&f->sh->loading, 1, 20000));
	for (int i = 0; i < RACERS; i++)
		p[i] = spawn(f->s, f->sh, i, kb, lb, hb);
	bool ready = wait_flag(&f->sh->ready, RACERS, 20000);
	atomic_store(&f->sh->go, 1);
	for (int i = 0; i < RACERS; i++)
		reap(p[i], i);
	reap(pa, RACERS);
	assert_true(ready);
	for (int i = 0; i < RACERS; i++)
		assert_got(f->sh, i, "value-b");
	assert_got(f->sh, RACERS, "value-a");
	print_message("# keys %s and %s share flight entry %llu: %d and %d load(s)\n",
		      ka, kb, (unsigned long long)ea, atomic_load(&f->sh->calls[0]),
		      atomic_load(&f->sh->calls[1]));
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
	assert_int_equal(atomic_load(&f->sh->calls[1]), 1);
	assert_int_equal(atomic_load(&f->sh->bad_key), 0);
}

#define WAITERS 3

/* The loader's process is SIGKILLed mid-load while three callers wait: one
 * of them loads instead, within the wait timeout, and all get its value. */
static void killed_loader_is_replaced(void **state)
{
	struct fix *f = *state;
	struct ldr slow = mkldr(f->sh, 0, "kill", "never-stored");
	struct ldr fast = mkldr(f->sh, 1, "kill", "after-kill");
	struct how h = { .opts = { .wait_ms = 10000 } };
	pid_t victim, p[WAITERS];

	slow.mark = true;
	slow.sleep_ms = 60000;
	victim = spawn(f->s, f->sh, MAXCALLERS - 1, "kill", slow, h);
	assert_true(wait_flag(&f->sh->loading, 1, 10000));

	h.check_in = true;
	for (int i = 0; i < WAITERS; i++) {
		h.attach = i == 0 ? f->name : NULL;
		p[i] = spawn(f->s, f->sh, i, "kill", fast, h);
	}
	assert_true(wait_flag(&f->sh->ready, WAITERS, 10000));
	sleep_ms(300); /* let them reach the wait */
	f->sh->killed_ns = t_now_ns();
	kill(victim, SIGKILL);
	int st = t_wait(victim, 10000);
	assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

	uint64_t last = 0;
	for (int i = 0; i < WAITERS; i++)
		reap(p[i], i);
	for (int i = 0; i < WAITERS; i++) {
		const struct res *r = &f->sh->res[i];
		assert_got(f->sh, i, "after-kill");
		/* They waited for the victim rather than loading beside it. */
		assert_true(r->end_ns >= f->sh->killed_ns);
		if (r->end_ns > last)
			last = r->end_ns;
	}
	print_message("# loader killed: %d takeover load(s), done %llu ms after the kill\n",
		      atomic_load(&f->sh->calls[1]),
		      (unsigned long long)ms_of(last - f->sh->killed_ns));
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
	assert_int_equal(atomic_load(&f->sh->calls[1]), 1);
	assert_stored(f->s, "kill", "after-kill");
	/* Deleted and asked for again, the key loads at once: the dead
	 * process's claim is gone for good. */
	char buf[64];
	size_t n;
	struct ldr again = mkldr(f->sh, 2, "kill", "reloaded");
	assert_int_equal(ns_del(f->s, "kill", 4), 0);
	uint64_t t0 = t_now_ns();
	assert_int_equal(ns_get_or_set(f->s, "kill", 4, buf, sizeof(buf), &n,
				       loader, &again, NULL), 0);
	assert_true(ms_of(t_now_ns() - t0) < 2000);
	assert_int_equal(again.local_calls, 1);
	ns__recover_dead(f->c);
	t_assert_consistent(f->c);
}

/* The first loader fails: its caller gets the error, one waiter loads
 * instead, and every waiter gets that value. */
static void failed_loader_is_replaced(void **state)
{
	struct fix *f = *state;
	struct ldr bad = mkldr(f->sh, 0, "fail", NULL);
	struct ldr good = mkldr(f->sh, 1, "fail", "after-failure");
	struct how h = { .opts = { .wait_ms = 10000 } };
	pid_t first, p[WAITERS];

	bad.mark = true;
	bad.err = ns__errno(EIO);
	bad.wait_ready = WAITERS;
	bad.sleep_ms = 300;
	/* The failing caller stays alive until the waiters are done: the
	 * failure itself, not its process's exit, must end the flight. */
	h.linger = true;
	first = spawn(f->s, f->sh, MAXCALLERS - 1, "fail", bad, h);
	assert_true(wait_flag(&f->sh->loading, 1, 10000));
	h.linger = false;
	h.check_in = true;
	for (int i = 0; i < WAITERS; i++)
		p[i] = spawn(f->s, f->sh, i, "fail", good, h);
	for (int i = 0; i < WAITERS; i++)
		reap(p[i], i);
	atomic_store(&f->sh->release, 1);
	reap(first, MAXCALLERS - 1);

	assert_int_equal(f->sh->res[MAXCALLERS - 1].rc, ns__errno(EIO));
	for (int i = 0; i < WAITERS; i++) {
		assert_got(f->sh, i, "after-failure");
		/* They waited for the failed load instead of loading beside it. */
		assert_int_equal(f->sh->res[i].load_done_at_return, 1);
	}
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
	assert_int_equal(atomic_load(&f->sh->calls[1]), 1);
	assert_int_equal(atomic_load(&f->sh->bad_key), 0);
	assert_stored(f->s, "fail", "after-failure");
}

/* A waiter whose wait_ms is shorter than the load gives up with
 * NS_ETIMEDOUT in about wait_ms, without loading itself; a waiter with the
 * default wait (5 s) gets the value.  Only generous upper bounds. */
static void short_wait_times_out(void **state)
{
	struct fix *f = *state;
	struct ldr slow = mkldr(f->sh, 0, "slow", "slow-value");
	struct ldr other = mkldr(f->sh, 1, "slow", "waiter-value");
	struct how h = { 0 };
	pid_t loader_pid, impatient, patient;
	const uint64_t wait_ms = 200;

	slow.mark = true;
	slow.wait_ready = 2;
	slow.sleep_ms = 3000;
	loader_pid = spawn(f->s, f->sh, 0, "slow", slow, h);
	assert_true(wait_flag(&f->sh->loading, 1, 10000));
	h.check_in = true;
	h.opts.wait_ms = wait_ms;
	impatient = spawn(f->s, f->sh, 1, "slow", other, h);
	h.null_opts = true;
	patient = spawn(f->s, f->sh, 2, "slow", other, h);
	reap(impatient, 1);
	reap(patient, 2);
	reap(loader_pid, 0);

	const struct res *r = &f->sh->res[1];
	uint64_t took = ms_of(r->end_ns - r->start_ns);
	print_message("# wait_ms %llu: NS_ETIMEDOUT after %llu ms\n",
		      (unsigned long long)wait_ms, (unsigned long long)took);
	assert_int_equal(r->rc, NS_ETIMEDOUT);
	assert_true(took < wait_ms + 2000);
	assert_int_equal(r->load_done_at_return, 0);
	assert_int_equal(r->loader_calls, 0);

	assert_got(f->sh, 0, "slow-value");
	assert_got(f->sh, 2, "slow-value");
	assert_int_equal(f->sh->res[2].loader_calls, 0);
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
	assert_int_equal(atomic_load(&f->sh->calls[1]), 0);
	assert_stored(f->s, "slow", "slow-value");
}

/* wait_ms is a uint64_t with no documented ceiling: the largest value means
 * "as long as it takes", never "not at all". */
static void huge_wait_ms_waits(void **state)
{
	struct fix *f = *state;
	struct ldr slow = mkldr(f->sh, 0, "huge", "huge-value");
	struct ldr other = mkldr(f->sh, 1, "huge", "waiter-value");
	struct how h = { 0 };
	pid_t a, b;

	slow.mark = true;
	slow.wait_ready = 1;
	slow.sleep_ms = 300;
	a = spawn(f->s, f->sh, 0, "huge", slow, h);
	assert_true(wait_flag(&f->sh->loading, 1, 10000));
	h.check_in = true;
	h.opts.wait_ms = UINT64_MAX;
	b = spawn(f->s, f->sh, 1, "huge", other, h);
	reap(b, 1);
	reap(a, 0);
	if (f->sh->res[1].rc != 0)
		print_error("wait_ms UINT64_MAX: %s after %llu ms\n",
			    ns_strerror(f->sh->res[1].rc),
			    (unsigned long long)ms_of(f->sh->res[1].end_ns -
						      f->sh->res[1].start_ns));
	assert_got(f->sh, 1, "huge-value");
	assert_int_equal(f->sh->res[1].loader_calls, 0);
}

/* Threads of one process have a slot each, so single flight holds between
 * them as between processes. */
#define THREADS 4

struct thr {
	ns_space *s;
	struct ldr l;
	pthread_barrier_t *bar;
	int rc;
	size_t n;
	char buf[64];
};

static void *thr_main(void *p)
{
	struct thr *t = p;
	struct ns_load_opts o = { .wait_ms = 10000 };

	pthread_barrier_wait(t->bar);
	t->rc = ns_get_or_set(t->s, "thr", 3, t->buf, sizeof(t->buf), &t->n,
			      loader, &t->l, &o);
	return NULL;
}

static void threads_load_once(void **state)
{
	struct fix *f = *state;
	pthread_barrier_t bar;
	pthread_t th[THREADS];
	struct thr t[THREADS];

	pthread_barrier_init(&bar, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].s = f->s;
		t[i].l = mkldr(f->sh, 0, "thr", "thread-value");
		t[i].l.sleep_ms = 200;
		t[i].bar = &bar;
		assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&bar);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(t[i].rc, 0);
		assert_int_equal(t[i].n, 12);
		assert_memory_equal(t[i].buf, "thread-value", 12);
	}
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
}

/*
 * Stale while revalidate.  "sw" is stored with a 200 ms TTL and left to
 * expire.  One caller (stale_ms large) reloads it slowly.  Meanwhile two
 * callers with stale_ms large get the old value at once, before the reload
 * ends; one without stale_ms and one whose stale_ms (50 ms) is shorter
 * than the time since expiry wait and get the new value.  Afterwards
 * everyone sees the new value without loading.
 */
static void stale_while_revalidate(void **state)
{
	struct fix *f = *state;
	struct ldr reload = mkldr(f->sh, 0, "sw", "new");
	struct ldr must_not = mkldr(f->sh, 1, "sw", "wrong");
	struct how h = { 0 };
	pid_t p[5];
	enum { RELOADER, STALE1, STALE2, FRESH, TOO_OLD, N };

	assert_int_equal(ns_set(f->s, "sw", 2, "old", 3, 200), 0);
	sleep_ms(400);
	assert_int_equal(ns_exists(f->s, "sw", 2), NS_ENOTFOUND);

	reload.mark = true;
	reload.wait_ready = N - 1;
	reload.sleep_ms = 1000;
	reload.ttl_ms = 60000;
	h.opts.stale_ms = 60000;
	p[RELOADER] = spawn(f->s, f->sh, RELOADER, "sw", reload, h);
	assert_true(wait_flag(&f->sh->loading, 1, 10000));
	h.check_in = true;
	h.opts.wait_ms = 10000;
	p[STALE1] = spawn(f->s, f->sh, STALE1, "sw", must_not, h);
	p[STALE2] = spawn(f->s, f->sh, STALE2, "sw", must_not, h);
	h.opts.stale_ms = 0;
	p[FRESH] = spawn(f->s, f->sh, FRESH, "sw", must_not, h);
	h.opts.stale_ms = 50;
	p[TOO_OLD] = spawn(f->s, f->sh, TOO_OLD, "sw", must_not, h);
	for (int i = 0; i < N; i++)
		reap(p[i], i);

	assert_got(f->sh, RELOADER, "new");
	for (int i = STALE1; i <= STALE2; i++) {
		const struct res *r = &f->sh->res[i];
		assert_got(f->sh, i, "old");
		/* At once: before the reload was over. */
		assert_int_equal(r->load_done_at_return, 0);
		print_message("# stale caller %d: old value in %llu us\n", i,
			      (unsigned long long)((r->end_ns - r->start_ns) / 1000));
	}
	for (int i = FRESH; i <= TOO_OLD; i++) {
		assert_got(f->sh, i, "new");
		assert_int_equal(f->sh->res[i].load_done_at_return, 1);
	}
	assert_int_equal(atomic_load(&f->sh->calls[0]), 1);
	assert_int_equal(atomic_load(&f->sh->calls[1]), 0);

	/* After the reload: the new value, for stale callers too, with the
	 * loader's TTL. */
	assert_stored(f->s, "sw", "new");
	atomic_store(&f->sh->ready, 0);
	h.check_in = false;
	h.opts.stale_ms = 60000;
	pid_t q = spawn(f->s, f->sh, 0, "sw", must_not, h);
	reap(q, 0);
	assert_got(f->sh, 0, "new");
	assert_int_equal(atomic_load(&f->sh->calls[1]), 0);
	int64_t left = 0;
	assert_int_equal(ns_ttl(f->s, "sw", 2, &left), 0);
	assert_true(left > 50000);
}

/* With stale_ms and nobody reloading, a caller that finds the expired value
 * reloads it itself and returns the new value. */
static void stale_alone_reloads(void **state)
{
	struct fix *f = *state;
	struct ldr l = mkldr(f->sh, 0, "sa", "fresh");
	struct ns_load_opts o = { .stale_ms = 60000 };
	char buf[64];
	size_t n = 0;

	assert_int_equal(ns_set(f->s, "sa", 2, "old", 3, 100), 0);
	sleep_ms(250);
	assert_int_equal(ns_get_or_set(f->s, "sa", 2, buf, sizeof(buf), &n,
				       loader, &l, &o), 0);
	assert_int_equal(l.local_calls, 1);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "fresh", 5);
	assert_stored(f->s, "sa", "fresh");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(hit_does_not_load, setup, teardown),
		cmocka_unit_test_setup_teardown(miss_loads_once_and_stores, setup, teardown),
		cmocka_unit_test_setup_teardown(small_buffer_gives_erange_and_stores, setup,
						teardown),
		cmocka_unit_test_setup_teardown(loader_error_is_returned_and_nothing_stored,
						setup, teardown),
		cmocka_unit_test_setup_teardown(broken_loader_is_einval, setup, teardown),
		cmocka_unit_test_setup_teardown(eight_racers_load_once, setup, teardown),
		cmocka_unit_test_setup_teardown(colliding_keys_each_load_once, setup, teardown),
		cmocka_unit_test_setup_teardown(killed_loader_is_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_loader_is_replaced, setup, teardown),
		cmocka_unit_test_setup_teardown(short_wait_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(huge_wait_ms_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(threads_load_once, setup, teardown),
		cmocka_unit_test_setup_teardown(stale_while_revalidate, setup, teardown),
		cmocka_unit_test_setup_teardown(stale_alone_reloads, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
