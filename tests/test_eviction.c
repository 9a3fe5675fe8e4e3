/*
 * test_eviction.c - a full cache keeps taking sets by evicting, and says
 * NS_ENOMEM only when nothing can be evicted (a class that owns no page);
 * eviction approximates LRU, so keys that keep being read outlive the rest;
 * and a store does not evict for chunks that only wait on another writer's
 * retire list ("limbo"), unless they stay there past its wait.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define SEG_SIZE (8u << 20)

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *s;
	struct ns_thr *t;
	uint64_t t0;
};

static int setup_items(void **state, uint64_t items)
{
	struct fx *f = calloc(1, sizeof(*f));
	int err = 0;
	snprintf(f->name, sizeof(f->name), "%s", t_name("evict"));
	f->c = t_create(f->name, SEG_SIZE, items);
	assert_int_equal(ns_space_open(f->c, "test:evict", &f->s), 0);
	f->t = ns__thr(f->c, &err);
	assert_non_null(f->t);
	f->t0 = f->c->hdr->created_ms + 60000;
	ns__test_clock(f->t0);
	*state = f;
	return 0;
}

/* Index room for more items than memory holds: only memory runs out. */
static int setup_small_items(void **state) { return setup_items(state, 100000); }
static int setup(void **state) { return setup_items(state, 65536); }

static int teardown(void **state)
{
	struct fx *f = *state;
	ns__test_clock(0);
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}


static uint64_t reachable(ns_cache *c)
{
	struct ns_verify_report rep;
	assert_int_equal(ns__verify(c, &rep), 0);
	return rep.reachable;
}

/* ---- NS_ENOMEM ---------------------------------------------------------- */

/* An 8-byte key and no value: an item of exactly the 64-byte class. */
static void small_key(char key[9], uint32_t i) { snprintf(key, 9, "%08x", i); }

static void test_full_cache_keeps_setting_enomem_only_without_victims(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	char key[9];

	assert_int_equal(ns__class_for(c, sizeof(struct ns_item_shm) + 8), 0);
	uint64_t capacity = (uint64_t)c->npages * c->classes[0].per_page;

	/* Fill every page with class-0 items: nothing evicted on the way. */
	for (uint32_t i = 0; i < capacity; i++) {
		small_key(key, i);
		int r = ns_set(f->s, key, 8, NULL, 0, 0);
		if (r != 0)
			fail_msg("set %u of %llu = %d (%s)", i, (unsigned long long)capacity,
				 r, ns_strerror(r));
	}
	assert_int_equal(c->hdr->next_page, c->npages);
	assert_int_equal(c->classes[0].npages, c->npages);
	assert_int_equal(c->pages[c->npages - 1].carved, c->classes[0].per_page);
	assert_int_equal(c->classes[0].evictions, 0);
	assert_int_equal(reachable(c), capacity);

	/* Full: more sets of the small class still succeed, by evicting. */
	uint32_t more = (uint32_t)(capacity / 10);
	for (uint32_t i = 0; i < more; i++) {
		small_key(key, (uint32_t)capacity + i);
		int r = ns_set(f->s, key, 8, NULL, 0, 0);
		if (r != 0)
			fail_msg("set %u into a full cache = %d (%s)", i, r, ns_strerror(r));
	}
	assert_true(c->classes[0].evictions >= more);
	/* All by allocation: none by page moves, index chains or quotas. */
	assert_int_equal(c->classes[0].move_evictions, 0);
	assert_int_equal(c->hdr->index_evictions, 0);
	assert_int_equal(c->spaces[0].quota_evictions, 0);
	assert_int_equal(c->hdr->next_page, c->npages);
	size_t vl;
	small_key(key, (uint32_t)capacity + more - 1);
	assert_int_equal(ns_get(f->s, key, 8, NULL, 0, &vl), 0);

	/* A value of a class that owns no page: nothing of it to evict. */
	static char big[1000];
	memset(big, 'B', sizeof(big));
	int cls = ns__class_for(c, sizeof(struct ns_item_shm) + 8 + sizeof(big));
	assert_true(cls > 0);
	assert_int_equal(c->classes[cls].npages, 0);
	uint64_t before = reachable(c);
	assert_int_equal(ns_set(f->s, "bigvalue", 8, big, sizeof(big), 0), NS_ENOMEM);
	assert_int_equal(ns_set(f->s, "bigvalue", 8, big, sizeof(big), 0), NS_ENOMEM);
	/* Failing to replace a key leaves its old value. */
	assert_int_equal(ns_set(f->s, key, 8, big, sizeof(big), 0), NS_ENOMEM);
	assert_int_equal(ns_get(f->s, key, 8, NULL, 0, &vl), 0);
	assert_int_equal(vl, 0);
	assert_int_equal(reachable(c), before);
	assert_int_equal(f->t->slot->in_phase, NS_PH_NONE);
	assert_int_equal(f->t->slot->in_new, 0);
	t_assert_consistent(c);

	/* And the small class goes on working. */
	for (uint32_t i = 0; i < 1000; i++) {
		small_key(key, 0x40000000u + i);
		assert_int_equal(ns_set(f->s, key, 8, NULL, 0, 0), 0);
		assert_int_equal(ns_get(f->s, key, 8, NULL, 0, &vl), 0);
	}
	t_assert_consistent(c);
}

/* ---- approximate LRU ---------------------------------------------------- */

#define HOT_EVERY 10       /* every tenth key is hot: 10% */
#define WRITE_BATCH 1000   /* new keys between two rounds of hot reads */

static void set_val(struct fx *f, const char *key, uint32_t seed)
{
	char val[256];
	size_t vl = t_make_value(val, sizeof(val), key, seed, 100);
	int r = ns_set(f->s, key, strlen(key), val, vl, 0);
	if (r != 0)
		fail_msg("set %s = %d (%s)", key, r, ns_strerror(r));
}

static int get_val(struct fx *f, const char *key)
{
	char buf[256];
	size_t vl = 0;
	int r = ns_get(f->s, key, strlen(key), buf, sizeof(buf), &vl);
	if (r == 0 && t_check_value(buf, vl, key) != 0)
		fail_msg("get %s: bad value", key);
	return r;
}

static void read_hot(struct fx *f, uint64_t n)
{
	char key[32];
	for (uint64_t i = 0; i < n; i += HOT_EVERY) {
		snprintf(key, sizeof(key), "key-%llu", (unsigned long long)i);
		get_val(f, key);
	}
}

/*
 * Fill to capacity, read a hot tenth of the keys once per fake second,
 * and write 80% of capacity in new keys between the rounds of reads.  The
 * hot keys must survive at more than twice the rate of the cold ones
 * (random eviction would give both the same rate).
 */
static void test_hot_keys_outlive_cold_ones(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	char key[32];
	uint64_t sec = 0;

	set_val(f, "probe", 0);
	int cls = ns__class_of(c, t_find_item(f->s, "probe", 5));
	assert_true(cls >= 0);
	assert_int_equal(ns_del(f->s, "probe", 5), 0);
	uint64_t n = (uint64_t)c->npages * c->classes[cls].per_page;

	for (uint64_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%llu", (unsigned long long)i);
		set_val(f, key, (uint32_t)i);
	}
	assert_int_equal(c->classes[cls].npages, c->npages);
	for (int round = 0; round < 3; round++) {
		ns__test_clock(f->t0 + ++sec * 1000);
		read_hot(f, n);
	}
	uint64_t nnew = n * 8 / 10;
	for (uint64_t i = 0; i < nnew; i++) {
		if (i % WRITE_BATCH == 0) {
			ns__test_clock(f->t0 + ++sec * 1000);
			read_hot(f, n);
		}
		snprintf(key, sizeof(key), "new-%llu", (unsigned long long)i);
		set_val(f, key, (uint32_t)i);
	}
	assert_true(c->classes[cls].evictions >= nnew - NS_SLOT_CACHE);

	uint64_t hot = 0, hot_in = 0, cold = 0, cold_in = 0;
	for (uint64_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "key-%llu", (unsigned long long)i);
		bool in = t_find_item(f->s, key, strlen(key)) != 0;
		if (i % HOT_EVERY == 0) {
			hot++;
			hot_in += in;
		} else {
			cold++;
			cold_in += in;
		}
	}
	double hs = (double)hot_in / (double)hot, cs = (double)cold_in / (double)cold;
	print_message("# %llu items, %llu new: hot survival %.3f (%llu/%llu), cold "
		      "survival %.3f (%llu/%llu)\n", (unsigned long long)n,
		      (unsigned long long)nnew, hs, (unsigned long long)hot_in,
		      (unsigned long long)hot, cs, (unsigned long long)cold_in,
		      (unsigned long long)cold);
	assert_true(cold_in < cold); /* eviction did happen to cold keys */
	if (!(hs > 2.0 * cs))
		fail_msg("hot survival %.3f not above twice cold survival %.3f", hs, cs);
	t_assert_consistent(c);
}

/*
 * A client killed with a long retire list (a reader held its grace period
 * open while it overwrote one key again and again) leaves that memory to
 * recovery, and nsd may be down.  A writer that ran out of memory evicted
 * live items instead of taking those chunks back: the 30-minute torture
 * lost incr counters that way while nsd was being restarted.
 */
static void test_dead_clients_retired_chunks_before_eviction(void **state)
{
	struct fx *f = *state;
	ns_cache *c = f->c;
	char val[100], key[16];
	int cls = ns__class_for(c, sizeof(struct ns_item_shm) + 8 + sizeof(val));
	int r2p[2], p2r[2], c2p[2];
	pid_t reader, churner;
	char b;

	assert_true(cls >= 0);
	/* The class may have every page of the segment: aim at a share of
	 * all of them.  60% retired by the dead client + 60% new > 100%. */
	uint64_t cap = (uint64_t)c->npages * c->classes[cls].per_page;
	uint64_t m = cap * 6 / 10;

	memset(val, 'k', sizeof(val));
	assert_int_equal(ns_set(f->s, "keep0000", 8, val, sizeof(val), 0), 0);
	assert_int_equal(pipe(r2p), 0);
	assert_int_equal(pipe(p2r), 0);
	assert_int_equal(pipe(c2p), 0);
	fflush(stdout);
	reader = fork();
	assert_true(reader >= 0);
	if (reader == 0) {
		int err = 0;
		struct ns_thr *t = ns__thr(c, &err);
		if (t == NULL)
			_exit(2);
		ns__read_enter(c, t->slot);
		if (write(r2p[1], "e", 1) != 1 || read(p2r[0], &b, 1) != 1)
			_exit(3);
		ns__read_exit(t->slot);
		_exit(0);
	}
	assert_int_equal(read(r2p[0], &b, 1), 1);
	churner = fork();
	assert_true(churner >= 0);
	if (churner == 0) {
		for (uint64_t i = 0; i < m; i++) {
			val[0] = (char)('a' + i % 26);
			if (ns_set(f->s, "churn000", 8, val, sizeof(val), 0) != 0)
				_exit(4);
		}
		if (write(c2p[1], "d", 1) != 1)
			_exit(5);
		pause();
		_exit(0);
	}
	assert_int_equal(read(c2p[0], &b, 1), 1);
	assert_int_equal(kill(churner, SIGKILL), 0);
	assert_int_not_equal(t_wait(churner, 10000), -1);
	assert_int_equal(write(p2r[1], "g", 1), 1);
	int st = t_wait(reader, 10000);
	assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);

	/* Nobody has recovered the churner (no nsd, no new slot claimed). */
	uint64_t ev0 = ns_load_relaxed(&c->classes[cls].evictions);
	for (uint64_t i = 1; i <= m; i++) {
		snprintf(key, sizeof(key), "new%05x", (unsigned)(i & 0xfffff));
		assert_int_equal(ns_set(f->s, key, 8, val, sizeof(val), 0), 0);
	}
	print_message("# %llu chunks of %u bytes, %llu retired by the dead client, "
		      "%llu evictions\n", (unsigned long long)cap, c->classes[cls].size,
		      (unsigned long long)m,
		      (unsigned long long)(ns_load_relaxed(&c->classes[cls].evictions) - ev0));
	assert_int_equal(ns_load_relaxed(&c->classes[cls].evictions) - ev0, 0);
	size_t n = 0;
	assert_int_equal(ns_get(f->s, "keep0000", 8, val, sizeof(val), &n), 0);
	for (int i = 0; i < 2; i++) {
		close(r2p[i]);
		close(p2r[i]);
		close(c2p[i]);
	}
	ns__recover_dead(c);
	t_assert_consistent(c);
}

/* ---- limbo -------------------------------------------------------------- */

/*
 * Every chunk of a class retired on one writer's list, none free, one live
 * item: the state the torture met (twenty thousand retired chunks of a
 * class, a hundred live items, and stores evicting counters).  A reader
 * held the floor while the list grew, and is gone; the list's owner frees
 * it at its next write.  A store of another client must wait for that
 * (asking every writer to reclaim), not evict the one live item.
 */
#define LIMBO_VALUE (100u << 10)
#define LIMBO_RESPOND_MS 200

struct limbo {
	ns_cache *c;
	ns_space *s;
	char *val;
	int r;          /* the store's result */
	uint64_t ns;    /* and how long it took */
	volatile int stage;
};

static void *limbo_reader(void *p)
{
	struct limbo *l = p;
	int err = 0;
	struct ns_thr *t = ns__thr(l->c, &err);

	if (t == NULL)
		return NULL;
	ns__read_enter(l->c, t->slot);
	__atomic_store_n(&l->stage, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&l->stage, __ATOMIC_ACQUIRE) < 2)
		usleep(1000);
	ns__read_exit(t->slot);
	return NULL;
}

static void *limbo_store(void *p)
{
	struct limbo *l = p;
	uint64_t t0 = t_now_ns();

	l->r = ns_set(l->s, "b", 1, l->val, LIMBO_VALUE, 0);
	l->ns = t_now_ns() - t0;
	return NULL;
}

/* Fill the big class with retired chunks on our own list; returns it. */
static int limbo_fill(struct fx *f, struct limbo *l)
{
	ns_cache *c = f->c;
	int cls = ns__class_for(c, sizeof(struct ns_item_shm) + 1 + LIMBO_VALUE);
	pthread_t rd;

	assert_true(cls >= 0);
	l->c = c;
	l->s = f->s;
	l->val = malloc(LIMBO_VALUE);
	assert_non_null(l->val);
	memset(l->val, 'v', LIMBO_VALUE);
	assert_int_equal(ns_set(f->s, "k", 1, l->val, LIMBO_VALUE, 0), 0);
	assert_int_equal(pthread_create(&rd, NULL, limbo_reader, l), 0);
	while (__atomic_load_n(&l->stage, __ATOMIC_ACQUIRE) < 1)
		usleep(1000);
	/* Overwrites while the reader holds the floor: every chunk of the
	 * segment carved, all but the live one retired. */
	uint64_t chunks = (uint64_t)c->npages * c->classes[cls].per_page;
	for (uint64_t i = 1; i < chunks; i++)
		assert_int_equal(ns_set(f->s, "k", 1, l->val, LIMBO_VALUE, 0), 0);
	assert_int_equal(c->hdr->next_page, c->npages);
	__atomic_store_n(&l->stage, 2, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(rd, NULL), 0);
	assert_true(f->t->slot->retire_count >= chunks - 1 - NS_SLOT_CACHE);
	assert_int_equal(c->classes[cls].evictions, 0);
	return cls;
}

/* The ask: a change of hdr.reclaim_ask_ms after BEFORE, within 10 s. */
static bool asked_after(ns_cache *c, uint64_t before)
{
	for (int i = 0; i < 50000; i++) {
		if (__atomic_load_n(&c->hdr->reclaim_ask_ms, __ATOMIC_ACQUIRE) != before)
			return true;
		usleep(200);
	}
	return false;
}

static void test_store_waits_for_retired_chunks_instead_of_evicting(void **state)
{
	struct fx *f = *state;
	struct limbo l = { 0 };
	int cls = limbo_fill(f, &l);
	uint64_t ask0 = f->c->hdr->reclaim_ask_ms;
	pthread_t st;

	/* The whole budget (500 ms), so that a loaded machine cannot make
	 * us answer too late; the default wait is 50 ms. */
	ns__limbo_wait_ms = 10000;
	assert_int_equal(pthread_create(&st, NULL, limbo_store, &l), 0);
	/* The store asks; the list's owner answers at its next write (a
	 * delete of the live item), freeing the chunks the store waits for. */
	bool asked = asked_after(f->c, ask0);
	assert_int_equal(ns_del(f->s, "k", 1), 0);
	assert_int_equal(pthread_join(st, NULL), 0);
	ns__limbo_wait_ms = 50;
	print_message("# store in limbo: %d after %llu ms, %llu eviction(s)\n", l.r,
		      (unsigned long long)(l.ns / 1000000u),
		      (unsigned long long)f->c->classes[cls].evictions);
	assert_true(asked);
	assert_int_equal(l.r, 0);
	assert_int_equal(f->c->classes[cls].evictions, 0);
	assert_int_equal(f->c->classes[cls].limbo_until_ms, 0);
	free(l.val);
	t_assert_consistent(f->c);
}

/* Nobody frees them: the store evicts after the wait, and the next store
 * of the class evicts at once, without asking. */
static void test_store_in_limbo_evicts_when_nobody_frees(void **state)
{
	struct fx *f = *state;
	struct limbo l = { 0 };
	int cls = limbo_fill(f, &l);
	pthread_t st;

	/* Another client: our own store would free our own list. */
	assert_int_equal(pthread_create(&st, NULL, limbo_store, &l), 0);
	assert_int_equal(pthread_join(st, NULL), 0);
	print_message("# store in limbo, nobody freeing: %d after %llu ms, %llu eviction(s)\n",
		      l.r, (unsigned long long)(l.ns / 1000000u),
		      (unsigned long long)f->c->classes[cls].evictions);
	assert_int_equal(l.r, 0);
	assert_int_equal(f->c->classes[cls].evictions, 1);
	assert_int_equal(ns_exists(f->s, "k", 1), NS_ENOTFOUND);
	assert_true(l.ns >= 50 * 1000000ull); /* NS_LIMBO_WAIT_MS */
	assert_true(f->c->classes[cls].limbo_until_ms > ns__mono_ms());

	uint64_t ask1 = f->c->hdr->reclaim_ask_ms;
	assert_int_equal(pthread_create(&st, NULL, limbo_store, &l), 0);
	assert_int_equal(pthread_join(st, NULL), 0);
	assert_int_equal(l.r, 0);
	assert_int_equal(f->c->hdr->reclaim_ask_ms, ask1);
	free(l.val);
	t_assert_consistent(f->c);
}

/* A writer frees its list onto the free lists at its next write when
 * asked, even a list that would otherwise wait for a batch; a list too
 * short to be worth a membarrier is left alone. */
static void test_writer_reclaims_when_asked(void **state)
{
	struct fx *f = *state;
	struct ns_slot_shm *sl = f->t->slot;
	char key[9];

	for (uint32_t i = 0; i < 20; i++) {
		small_key(key, i);
		assert_int_equal(ns_set(f->s, key, 8, NULL, 0, 0), 0);
	}
	small_key(key, 0);
	for (uint32_t i = 0; i < 10; i++)
		assert_int_equal(ns_set(f->s, key, 8, NULL, 0, 0), 0);
	assert_int_equal(sl->retire_count, 10);
	f->c->hdr->reclaim_ask_ms++;
	assert_int_equal(ns_set(f->s, key, 8, NULL, 0, 0), 0);
	assert_int_equal(sl->retire_count, 11); /* too short to answer */

	for (uint32_t i = 1; i < 20; i++) {
		small_key(key, i);
		assert_int_equal(ns_set(f->s, key, 8, NULL, 0, 0), 0);
	}
	assert_int_equal(sl->retire_count, 30); /* not asked again: kept */
	int cls = ns__class_of(f->c, t_find_item(f->s, key, 8));
	uint8_t cached = sl->cache_n[cls];
	f->c->hdr->reclaim_ask_ms++;
	assert_int_equal(ns_set(f->s, key, 8, NULL, 0, 0), 0);
	assert_int_equal(sl->retire_count, 0);
	assert_true(sl->cache_n[cls] <= cached); /* onto the free list */
	t_assert_consistent(f->c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_full_cache_keeps_setting_enomem_only_without_victims, setup_small_items, teardown),
		cmocka_unit_test_setup_teardown(test_hot_keys_outlive_cold_ones, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_clients_retired_chunks_before_eviction,
						setup_small_items, teardown),
		cmocka_unit_test_setup_teardown(test_store_waits_for_retired_chunks_instead_of_evicting,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_in_limbo_evicts_when_nobody_frees,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_reclaims_when_asked, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
