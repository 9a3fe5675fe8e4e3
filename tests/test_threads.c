/*
 * test_threads.c - several threads of one process share one ns_cache.
 *
 * Every thread that calls into the library gets a client slot of its own
 * (slot.c binds it on first use and gives it back when the thread exits),
 * so the threads of one process race each other exactly as processes do,
 * but through one mapping and one set of process-local lists (ns__mu).
 * This is the test the ThreadSanitizer build runs: it sees every access of
 * every thread, which it cannot do across processes.
 *
 * What must hold: no read returns a torn or foreign value (each value names
 * its key and carries a checksum); counters moved by ns_incr, ns_cas loops
 * and ns_update lose no step; threads opening the same new namespaces at
 * once agree on one id per prefix; a thread that exits while others run
 * gives its slot back, and churning through more threads than there are
 * slots never runs out of them.
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#define SEG_SIZE (32u << 20) /* far more than the keys need: no eviction */
#define KEYS 512             /* hammered keys "k0".."k511" */
#define CTRS 4               /* ns_incr counters "ctr0".."ctr3" */
#define NTHR 4               /* hammer threads: two per core here */
#define RUN_MS 1000          /* per test; loops check the clock, so a slow
                              * (sanitized) build does fewer ops, not longer */

#define assert_code(expr, want)                                              \
	do {                                                                 \
		int r_ = (expr);                                             \
		if (r_ != (want))                                            \
			fail_msg("%s = %d (%s), want %d (%s)", #expr, r_,     \
				 ns_strerror(r_), (int)(want),               \
				 ns_strerror(want));                         \
	} while (0)

struct tally {
	uint64_t ops, hits, bad, errors;
	int64_t incrs;     /* ns_incr steps taken, all counters */
	int64_t cas_wins;  /* successful ns_cas increments of "cas" */
	int64_t updates;   /* ns_update increments of "upd" */
	int first_error;   /* the first unexpected return code, for the message */
};

struct hammer_arg {
	ns_space *s;
	uint64_t seed;
	uint64_t end_ns;
	struct tally t;
};

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void note_error(struct tally *t, int e)
{
	if (t->errors++ == 0)
		t->first_error = e;
}

static int64_t parse_i64(const char *buf, size_t n)
{
	char tmp[32];

	if (n >= sizeof(tmp))
		return -1;
	memcpy(tmp, buf, n);
	tmp[n] = '\0';
	return strtoll(tmp, NULL, 10);
}

/* One ns_cas increment of "cas": read value and version, store value + 1
 * only at that version.  Returns 1 on a win, 0 when another thread won. */
static int cas_step(ns_space *s, struct tally *t)
{
	char buf[32], nv[32];
	size_t n;
	struct ns_item_info in;
	int e = ns_get_ex(s, "cas", 3, buf, sizeof(buf), &n, &in);

	if (e != 0) {
		note_error(t, e);
		return 0;
	}
	int len = snprintf(nv, sizeof(nv), "%" PRId64, parse_i64(buf, n) + 1);
	e = ns_cas(s, "cas", 3, nv, (size_t)len, 0, in.version);
	if (e == 0)
		return 1;
	if (e != NS_ECHANGED)
		note_error(t, e);
	return 0;
}

static int upd_fn(void *arg, const void *old, size_t oldlen,
		  const struct ns_item_info *info, struct ns_value *out)
{
	char *nv = arg; /* 32 bytes, the caller's */
	int64_t v = old ? parse_i64(old, oldlen) : 0;
	(void)info;

	out->val = nv;
	out->vlen = (size_t)snprintf(nv, 32, "%" PRId64, v + 1);
	out->ttl_ms = 0;
	out->flags = 0;
	return NS_UPDATE_STORE;
}

static void check_read(struct tally *t, int e, const char *buf, size_t n,
		       const char *key)
{
	if (e == 0) {
		t->hits++;
		if (t_check_value(buf, n, key) != 0)
			t->bad++;
	} else if (e != NS_ENOTFOUND) {
		note_error(t, e);
	}
}

/* Hammer threads that hold a client slot; hammer_start waits for all. */
static int hammers_bound;

static void *hammer(void *p)
{
	struct hammer_arg *a = p;
	struct tally *t = &a->t;
	char key[32], val[700], buf[700], nv[32];
	uint64_t x = a->seed;
	int err = 0;

	assert_non_null(ns__thr(a->s->c, &err));
	__atomic_add_fetch(&hammers_bound, 1, __ATOMIC_RELEASE);

	while (t_now_ns() < a->end_ns) {
		for (int i = 0; i < 32; i++, t->ops++) {
			unsigned op = (unsigned)(xorshift(&x) % 100);
			size_t n;
			int e;

			snprintf(key, sizeof(key), "k%u", (unsigned)(xorshift(&x) % KEYS));
			if (op < 45) {
				e = ns_get(a->s, key, strlen(key), buf, sizeof(buf), &n);
				check_read(t, e, buf, n, key);
			} else if (op < 65) {
				n = t_make_value(val, sizeof(val), key, (uint32_t)xorshift(&x),
						 (size_t)(xorshift(&x) % 600));
				e = ns_set(a->s, key, strlen(key), val, n, 0);
				if (e != 0)
					note_error(t, e);
			} else if (op < 70) {
				n = t_make_value(val, sizeof(val), key, (uint32_t)x, 16);
				e = ns_add(a->s, key, strlen(key), val, n, 0);
				if (e != 0 && e != NS_EPRESENT)
					note_error(t, e);
			} else if (op < 77) {
				e = ns_del(a->s, key, strlen(key));
				if (e != 0 && e != NS_ENOTFOUND)
					note_error(t, e);
			} else if (op < 85) {
				snprintf(key, sizeof(key), "ctr%u", (unsigned)(x % CTRS));
				int64_t r;
				e = ns_incr(a->s, key, strlen(key), 1, 1, 0, &r);
				if (e == 0)
					t->incrs++;
				else
					note_error(t, e);
			} else if (op < 90) {
				t->cas_wins += cas_step(a->s, t);
			} else if (op < 93) {
				e = ns_update(a->s, "upd", 3, upd_fn, nv);
				if (e == 0)
					t->updates++;
				else
					note_error(t, e);
			} else {
				/* A batch of 4 keys read at once. */
				char keys[4][16], bufs[4][700];
				struct ns_kv kv[4];
				for (int j = 0; j < 4; j++) {
					snprintf(keys[j], sizeof(keys[j]), "k%u",
						 (unsigned)(xorshift(&x) % KEYS));
					kv[j] = (struct ns_kv){ .key = keys[j],
								.klen = strlen(keys[j]),
								.buf = bufs[j],
								.cap = sizeof(bufs[j]) };
				}
				e = ns_mget(a->s, kv, 4);
				if (e < 0)
					note_error(t, e);
				for (int j = 0; e >= 0 && j < 4; j++)
					check_read(t, kv[j].err, bufs[j], kv[j].vlen, keys[j]);
			}
		}
	}
	return NULL;
}

static int64_t read_i64(ns_space *s, const char *key)
{
	char buf[32];
	size_t n;

	assert_code(ns_get(s, key, strlen(key), buf, sizeof(buf), &n), 0);
	return parse_i64(buf, n);
}

static uint32_t active_slots(ns_cache *c)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < c->nslots; i++)
		n += ns_load_acquire(&c->slots[i].state) == NS_SLOT_ACTIVE;
	return n;
}

/* Start NTHR hammer threads on S for RUN_MS. */
static void hammer_start(ns_space *s, pthread_t *th, struct hammer_arg *a)
{
	uint64_t end = t_now_ns() + RUN_MS * 1000000ull;

	for (int i = 0; i < NTHR; i++) {
		a[i] = (struct hammer_arg){ .s = s, .end_ns = end,
					    .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) };
		assert_int_equal(pthread_create(&th[i], NULL, hammer, &a[i]), 0);
	}
	/* Every hammer thread holds its slot before anything else runs: a
	 * slot that a brief thread gives back must not be taken by a hammer
	 * thread still starting (the check after each brief thread would see
	 * it ACTIVE again, legitimately). */
	while (__atomic_load_n(&hammers_bound, __ATOMIC_ACQUIRE) < NTHR)
		sched_yield();
	__atomic_store_n(&hammers_bound, 0, __ATOMIC_RELAXED);
}

/* Join them and check what they saw; the counters end exactly at the
 * number of steps taken. */
static void hammer_finish(ns_space *s, pthread_t *th, struct hammer_arg *a)
{
	struct tally sum = { 0 };
	int64_t ctr = 0;
	char key[16];

	for (int i = 0; i < NTHR; i++) {
		pthread_join(th[i], NULL);
		if (a[i].t.errors && !sum.errors)
			sum.first_error = a[i].t.first_error;
		sum.ops += a[i].t.ops;
		sum.hits += a[i].t.hits;
		sum.bad += a[i].t.bad;
		sum.errors += a[i].t.errors;
		sum.incrs += a[i].t.incrs;
		sum.cas_wins += a[i].t.cas_wins;
		sum.updates += a[i].t.updates;
	}
	print_message("# %" PRIu64 " ops, %" PRIu64 " hits, %" PRId64 " incr, %" PRId64
		      " cas, %" PRId64 " update\n", sum.ops, sum.hits, sum.incrs,
		      sum.cas_wins, sum.updates);
	if (sum.bad || sum.errors)
		fail_msg("%" PRIu64 " torn or foreign values, %" PRIu64
			 " errors (first %d: %s)", sum.bad, sum.errors,
			 sum.first_error, ns_strerror(sum.first_error));
	for (unsigned i = 0; i < CTRS; i++) {
		snprintf(key, sizeof(key), "ctr%u", i);
		if (ns_exists(s, key, strlen(key)) == 0)
			ctr += read_i64(s, key);
	}
	if (ctr != sum.incrs)
		fail_msg("counters sum to %" PRId64 ", want %" PRId64, ctr, sum.incrs);
	if (read_i64(s, "cas") != sum.cas_wins)
		fail_msg("cas counter %" PRId64 ", want %" PRId64,
			 read_i64(s, "cas"), sum.cas_wins);
	if (sum.updates != 0 && read_i64(s, "upd") != sum.updates)
		fail_msg("update counter %" PRId64 ", want %" PRId64,
			 read_i64(s, "upd"), sum.updates);
}

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *s;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->name, sizeof(f->name), "%s", t_name("threads"));
	f->c = t_create(f->name, SEG_SIZE, 8192);
	assert_code(ns_space_open(f->c, "test:threads", &f->s), 0);
	assert_code(ns_set(f->s, "cas", 3, "0", 1, 0), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

static void threads_share_one_cache(void **state)
{
	struct fx *f = *state;
	pthread_t th[NTHR];
	struct hammer_arg a[NTHR];

	hammer_start(f->s, th, a);
	hammer_finish(f->s, th, a);
	/* Main thread plus the four: each had a slot of its own, and the
	 * four gave theirs back when they exited. */
	assert_int_equal(active_slots(f->c), 1);
	t_assert_consistent(f->c);
}

/* ---- regression: ns_set_ex's version ------------------------------------ */

struct ver_arg {
	ns_space *s;
	int n;
	uint64_t end_ns;
	uint64_t checked, wrong, errors;
};

static void *set_ex_and_read_back(void *p)
{
	struct ver_arg *a = p;
	char val[32], buf[32];

	for (uint32_t i = 0; t_now_ns() < a->end_ns; i++) {
		const char *key = i & 1 ? "v1" : "v0";
		struct ns_item_info in;
		uint64_t v;
		size_t n;
		int len = snprintf(val, sizeof(val), "t%d:%u", a->n, i);

		if (ns_set_ex(a->s, key, 2, val, (size_t)len, 0, 0, &v) != 0 ||
		    ns_get_ex(a->s, key, 2, buf, sizeof(buf), &n, &in) != 0) {
			a->errors++;
			continue;
		}
		/* Still our value: then it carries the version we were given. */
		if (n == (size_t)len && memcmp(buf, val, n) == 0) {
			a->checked++;
			a->wrong += in.version != v;
		}
	}
	return NULL;
}

/* Regression (found by TSan): ns_set_ex read the new item's version after
 * unlocking its bucket, when another thread could already have replaced
 * the item, reclaimed it and built a new item, with another version, in
 * the same chunk.  The version returned must be the one stored. */
static void test_set_ex_version_after_reuse(void **state)
{
	struct fx *f = *state;
	pthread_t th[NTHR];
	struct ver_arg a[NTHR];
	uint64_t end = t_now_ns() + RUN_MS / 2 * 1000000ull;
	uint64_t checked = 0;

	for (int i = 0; i < NTHR; i++) {
		a[i] = (struct ver_arg){ .s = f->s, .n = i, .end_ns = end };
		assert_int_equal(pthread_create(&th[i], NULL, set_ex_and_read_back,
						&a[i]), 0);
	}
	for (int i = 0; i < NTHR; i++) {
		pthread_join(th[i], NULL);
		checked += a[i].checked;
		if (a[i].wrong || a[i].errors)
			fail_msg("thread %d: %" PRIu64 " of %" PRIu64 " versions wrong, "
				 "%" PRIu64 " errors", i, a[i].wrong, a[i].checked,
				 a[i].errors);
	}
	assert_true(checked > 0);
	t_assert_consistent(f->c);
}

/* ---- namespaces opened concurrently ------------------------------------- */

#define OPENERS 4
#define PREFIXES 16

struct open_arg {
	ns_cache *c;
	pthread_barrier_t *bar;
	uint32_t ids[PREFIXES];
	int err;
};

static void *opener(void *p)
{
	struct open_arg *a = p;
	char prefix[32];

	pthread_barrier_wait(a->bar);
	for (int i = 0; i < PREFIXES && a->err == 0; i++) {
		struct ns_space_info in;
		ns_space *s;

		snprintf(prefix, sizeof(prefix), "open:p%d", i);
		a->err = ns_space_open(a->c, prefix, &s);
		if (a->err == 0)
			a->err = ns_space_info(s, &in);
		if (a->err == 0)
			a->err = ns_set(s, "k", 1, prefix, strlen(prefix), 0);
		a->ids[i] = in.id;
	}
	return NULL;
}

static void threads_open_spaces_at_once(void **state)
{
	struct fx *f = *state;
	pthread_t th[NTHR], op[OPENERS];
	struct hammer_arg a[NTHR];
	struct open_arg o[OPENERS];
	pthread_barrier_t bar;

	/* While the hammer runs, four threads create the same sixteen new
	 * namespaces at once: each prefix gets one id, whoever created it. */
	hammer_start(f->s, th, a);
	pthread_barrier_init(&bar, NULL, OPENERS);
	for (int i = 0; i < OPENERS; i++) {
		o[i] = (struct open_arg){ .c = f->c, .bar = &bar };
		assert_int_equal(pthread_create(&op[i], NULL, opener, &o[i]), 0);
	}
	for (int i = 0; i < OPENERS; i++)
		pthread_join(op[i], NULL);
	pthread_barrier_destroy(&bar);
	hammer_finish(f->s, th, a);

	for (int i = 0; i < OPENERS; i++) {
		assert_code(o[i].err, 0);
		for (int j = 0; j < PREFIXES; j++)
			if (o[i].ids[j] != o[0].ids[j])
				fail_msg("open:p%d: thread %d got id %u, thread 0 id %u",
					 j, i, o[i].ids[j], o[0].ids[j]);
	}
	for (int j = 0; j < PREFIXES; j++) {
		char prefix[32], buf[32];
		size_t n;
		ns_space *s;

		snprintf(prefix, sizeof(prefix), "open:p%d", j);
		assert_code(ns_space_open(f->c, prefix, &s), 0);
		assert_code(ns_get(s, "k", 1, buf, sizeof(buf), &n), 0);
		assert_memory_equal(buf, prefix, n);
		for (int k = 0; k < j; k++)
			if (o[0].ids[k] == o[0].ids[j])
				fail_msg("open:p%d and open:p%d share id %u", k, j,
					 o[0].ids[j]);
	}
	t_assert_consistent(f->c);
}

/* ---- threads that exit while others run --------------------------------- */

struct brief_arg {
	ns_space *s;
	int n;           /* which brief thread */
	uint32_t idx;    /* the slot it had */
	int err;
};

/* Use the cache a little, leaving retired items behind (overwrites and a
 * delete), then exit without any call to give the slot back. */
static void *brief(void *p)
{
	struct brief_arg *a = p;
	char key[32], val[128];
	int err = 0;

	snprintf(key, sizeof(key), "brief%d", a->n % 8);
	for (uint32_t i = 0; i < 4 && err == 0; i++) {
		size_t n = t_make_value(val, sizeof(val), key, i, 40);
		err = ns_set(a->s, key, strlen(key), val, n, 0);
	}
	if (err == 0)
		err = ns_del(a->s, key, strlen(key));
	if (err == 0) {
		struct ns_thr *t = ns__thr(a->s->c, &err);
		if (t != NULL)
			a->idx = t->idx;
	}
	a->err = err;
	return NULL;
}

static void exiting_threads_give_back_slots_while_others_run(void **state)
{
	struct fx *f = *state;
	pthread_t th[NTHR];
	struct hammer_arg a[NTHR];
	uint32_t rounds = f->c->nslots + 32;

	/* More threads than there are slots, one after another, while the
	 * hammer's four keep running: each exit must free its slot (or
	 * leave it ORPHAN for recovery, when a reader held its retired
	 * items), or the later ones would get NS_ESLOTS. */
	hammer_start(f->s, th, a);
	for (uint32_t i = 0; i < rounds; i++) {
		struct brief_arg b = { .s = f->s, .n = (int)i, .idx = UINT32_MAX };
		pthread_t bt;
		uint32_t st;

		assert_int_equal(pthread_create(&bt, NULL, brief, &b), 0);
		pthread_join(bt, NULL);
		if (b.err != 0)
			fail_msg("brief thread %u: %d (%s)", i, b.err, ns_strerror(b.err));
		assert_true(b.idx < f->c->nslots);
		st = ns_load_acquire(&f->c->slots[b.idx].state);
		if (st != NS_SLOT_FREE && st != NS_SLOT_ORPHAN)
			fail_msg("brief thread %u exited, its slot %u is in state %u",
				 i, b.idx, st);
	}
	hammer_finish(f->s, th, a);
	/* Recovery takes back what an orphaned slot still held. */
	assert_true(ns__recover_dead(f->c) >= 0);
	assert_int_equal(active_slots(f->c), 1);
	t_assert_consistent(f->c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(threads_share_one_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_ex_version_after_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(threads_open_spaces_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(exiting_threads_give_back_slots_while_others_run,
						setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
