/*
 * test_space.c - the namespace API: per-namespace counters, the list of
 * namespaces, constant-time clear (seen at once by every process, other
 * namespaces untouched), memory quotas that evict only the namespace's own
 * items, the default TTL, and argument and read-only errors.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

struct fx {
	char name[64];
	ns_cache *c;
	ns_space *a, *b;
	uint64_t t0; /* a fake "now" some seconds after creation */
};

static int setup_sized(void **state, size_t size, uint64_t items)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", t_name("space"));
	f->c = t_create(f->name, size, items);
	assert_int_equal(ns_space_open(f->c, "test:a", &f->a), 0);
	assert_int_equal(ns_space_open(f->c, "test:b", &f->b), 0);
	f->t0 = f->c->hdr->created_ms + 60000;
	ns__test_clock(f->t0);
	*state = f;
	return 0;
}

static int setup(void **state) { return setup_sized(state, 16u << 20, 20000); }
static int setup_big(void **state) { return setup_sized(state, 64u << 20, 200000); }
static int setup_quota(void **state) { return setup_sized(state, 32u << 20, 65536); }

static int teardown(void **state)
{
	struct fx *f = *state;
	ns__test_clock(0);
	ns_detach(f->c);
	ns_unlink(f->name);
	free(f);
	return 0;
}

static struct ns_space_info info_of(ns_space *s)
{
	struct ns_space_info i;
	memset(&i, 0xa5, sizeof(i)); /* catch fields left unset */
	int r = ns_space_info(s, &i);
	if (r != 0)
		fail_msg("ns_space_info = %d (%s)", r, ns_strerror(r));
	return i;
}

static void set_ok(ns_space *s, const char *key, uint32_t seed, size_t len, uint64_t ttl)
{
	char val[1024];
	size_t vl = t_make_value(val, sizeof(val), key, seed, len);
	int r = ns_set(s, key, strlen(key), val, vl, ttl);
	if (r != 0)
		fail_msg("set %s = %d (%s)", key, r, ns_strerror(r));
}

/* 0 and a well-formed value for KEY, or the error. */
static int get_chk(ns_space *s, const char *key)
{
	char buf[1024];
	size_t vl = 0;
	int r = ns_get(s, key, strlen(key), buf, sizeof(buf), &vl);
	if (r == 0 && t_check_value(buf, vl, key) != 0)
		fail_msg("get %s: bad value", key);
	return r;
}

static void assert_counters(const struct ns_space_info *i, uint64_t hits,
			    uint64_t misses, uint64_t sets, uint64_t deletes)
{
	if (i->hits != hits || i->misses != misses || i->sets != sets ||
	    i->deletes != deletes)
		fail_msg("%s: hits %llu misses %llu sets %llu deletes %llu, "
			 "expected %llu %llu %llu %llu", i->prefix,
			 (unsigned long long)i->hits, (unsigned long long)i->misses,
			 (unsigned long long)i->sets, (unsigned long long)i->deletes,
			 (unsigned long long)hits, (unsigned long long)misses,
			 (unsigned long long)sets, (unsigned long long)deletes);
}

static void assert_idle(const struct ns_space_info *i)
{
	assert_counters(i, 0, 0, 0, 0);
	assert_int_equal(i->items, 0);
	assert_int_equal(i->bytes, 0);
	assert_int_equal(i->evictions, 0);
	assert_int_equal(i->expirations, 0);
}

/* ---- counters ----------------------------------------------------------- */

static void test_fresh_space_info(void **state)
{
	struct fx *f = *state;
	struct ns_space_info a = info_of(f->a), b = info_of(f->b);

	assert_true(a.id >= 1 && b.id >= 1 && a.id != b.id);
	assert_string_equal(a.prefix, "test:a");
	assert_string_equal(b.prefix, "test:b");
	assert_int_equal(a.default_ttl_ms, 0);
	assert_int_equal(a.quota_bytes, 0);
	assert_idle(&a);
	assert_idle(&b);
	/* Opening the prefix again gives the same namespace. */
	ns_space *again;
	assert_int_equal(ns_space_open(f->c, "test:a", &again), 0);
	assert_int_equal(info_of(again).id, a.id);
}

/* A known single-threaded sequence moves each counter by exactly its ops. */
static void test_counters_follow_ops(void **state)
{
	struct fx *f = *state;
	struct ns_space_info i;

	set_ok(f->a, "k1", 1, 40, 0);
	set_ok(f->a, "k2", 2, 40, 0);
	set_ok(f->a, "k3", 3, 40, 0);
	i = info_of(f->a);
	assert_counters(&i, 0, 0, 3, 0);
	assert_int_equal(i.items, 3);
	/* Chunks hold at least key and value. */
	assert_true(i.bytes >= 3 * (2 + 40));
	uint64_t bytes3 = i.bytes;

	assert_int_equal(get_chk(f->a, "k1"), 0);
	assert_int_equal(get_chk(f->a, "k2"), 0);
	assert_int_equal(get_chk(f->a, "nope"), NS_ENOTFOUND);
	i = info_of(f->a);
	assert_counters(&i, 2, 1, 3, 0);

	/* An overwrite is a set, not a new item; same size, same chunk. */
	set_ok(f->a, "k1", 4, 40, 0);
	i = info_of(f->a);
	assert_counters(&i, 2, 1, 4, 0);
	assert_int_equal(i.items, 3);
	assert_int_equal(i.bytes, bytes3);

	assert_int_equal(ns_del(f->a, "k2", 2), 0);
	i = info_of(f->a);
	assert_counters(&i, 2, 1, 4, 1);
	assert_int_equal(i.items, 2);
	assert_int_equal(i.bytes, bytes3 / 3 * 2);

	/* A delete of an absent key deletes nothing. */
	assert_int_equal(ns_del(f->a, "k2", 2), NS_ENOTFOUND);
	i = info_of(f->a);
	assert_int_equal(i.deletes, 1);
	assert_int_equal(i.sets, 4);
	assert_int_equal(i.hits, 2);

	/* B saw none of it. */
	i = info_of(f->b);
	assert_idle(&i);

	/* And A sees none of B's traffic. */
	struct ns_space_info before = info_of(f->a);
	set_ok(f->b, "k1", 5, 40, 0);
	assert_int_equal(get_chk(f->b, "k1"), 0);
	assert_int_equal(get_chk(f->b, "k2"), NS_ENOTFOUND);
	assert_int_equal(ns_del(f->b, "k1", 2), 0);
	i = info_of(f->a);
	assert_counters(&i, before.hits, before.misses, before.sets, before.deletes);
	assert_int_equal(i.items, before.items);
	assert_int_equal(i.bytes, before.bytes);
	i = info_of(f->b);
	assert_counters(&i, 1, 1, 1, 1);
	assert_int_equal(i.items, 0);
	assert_int_equal(i.bytes, 0);

	/* Deleting the rest leaves nothing stored. */
	assert_int_equal(ns_del(f->a, "k1", 2), 0);
	assert_int_equal(ns_del(f->a, "k3", 2), 0);
	i = info_of(f->a);
	assert_int_equal(i.items, 0);
	assert_int_equal(i.bytes, 0);
	assert_int_equal(i.deletes, 3);
	assert_int_equal(i.evictions, 0);
	assert_int_equal(i.expirations, 0);
	t_assert_consistent(f->c);
}

/* Expired items still count as items until something removes them; the
 * removal (an overwrite, a delete) counts as an expiration. */
static void test_expirations_count_removed_expired_items(void **state)
{
	struct fx *f = *state;
	struct ns_space_info i;

	set_ok(f->a, "e1", 1, 40, 1000);
	set_ok(f->a, "e2", 2, 40, 1000);
	set_ok(f->a, "live", 3, 40, 0);
	ns__test_clock(f->t0 + 1000);
	assert_int_equal(get_chk(f->a, "e1"), NS_ENOTFOUND);
	assert_int_equal(get_chk(f->a, "live"), 0);
	i = info_of(f->a);
	assert_int_equal(i.items, 3); /* lazy: not reclaimed yet */
	assert_int_equal(i.hits, 1);
	assert_int_equal(i.misses, 1);

	/* Overwriting an expired item removes it. */
	set_ok(f->a, "e1", 4, 40, 0);
	i = info_of(f->a);
	assert_true(i.expirations >= 1);
	assert_int_equal(i.items, 3);
	assert_int_equal(get_chk(f->a, "e1"), 0);

	/* Deleting one reports it absent, and removes it. */
	uint64_t e = i.expirations;
	assert_int_equal(ns_del(f->a, "e2", 2), NS_ENOTFOUND);
	i = info_of(f->a);
	assert_true(i.expirations >= e + 1);
	assert_true(i.expirations >= 2);
	assert_int_equal(i.items, 2);
	assert_int_equal(i.evictions, 0);

	i = info_of(f->b);
	assert_idle(&i);
	t_assert_consistent(f->c);
}

/* Counters are sums over every client, the dead ones included. */
static void test_counters_include_other_processes(void **state)
{
	struct fx *f = *state;

	set_ok(f->a, "k", 1, 40, 0);
	struct ns_space_info before = info_of(f->a);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		int ok = 1;
		for (int j = 0; j < 5; j++)
			ok &= get_chk(f->a, "k") == 0;
		ok &= get_chk(f->a, "absent") == NS_ENOTFOUND;
		ok &= ns_set(f->a, "c1", 2, "v1", 2, 0) == 0;
		ok &= ns_set(f->a, "c2", 2, "v2", 2, 0) == 0;
		ok &= ns_del(f->a, "c2", 2) == 0;
		_exit(ok ? 0 : 1);
	}
	int st = t_wait(p, 10000);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);

	struct ns_space_info i = info_of(f->a);
	assert_counters(&i, before.hits + 5, before.misses + 1, before.sets + 2,
			before.deletes + 1);
	assert_int_equal(i.items, 2);
	/* Recovering the dead child's slot must not lose what it counted. */
	ns__recover_dead(f->c);
	i = info_of(f->a);
	assert_counters(&i, before.hits + 5, before.misses + 1, before.sets + 2,
			before.deletes + 1);
	assert_int_equal(i.items, 2);

	/* Nor must a new client that takes the freed slot over. */
	p = fork();
	assert_true(p >= 0);
	if (p == 0)
		_exit(get_chk(f->a, "k") == 0 ? 0 : 1);
	st = t_wait(p, 10000);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	ns__recover_dead(f->c);
	i = info_of(f->a);
	assert_counters(&i, before.hits + 6, before.misses + 1, before.sets + 2,
			before.deletes + 1);
	t_assert_consistent(f->c);
}

/* Many namespaces used in turn by one client: each keeps its own exact
 * counts (however the client files them). */
#define MANY 40

static void test_counters_exact_across_many_namespaces(void **state)
{
	struct fx *f = *state;
	ns_space *s[MANY];
	char pfx[32];

	for (int j = 0; j < MANY; j++) {
		snprintf(pfx, sizeof(pfx), "many:n%02d", j);
		assert_int_equal(ns_space_open(f->c, pfx, &s[j]), 0);
	}
	for (int round = 0; round < 5; round++) {
		for (int j = 0; j < MANY; j++) {
			set_ok(s[j], "k", (uint32_t)j, 40, 0);
			assert_int_equal(get_chk(s[j], "k"), 0);
			assert_int_equal(get_chk(s[j], "x"), NS_ENOTFOUND);
			if (j % 2)
				assert_int_equal(ns_del(s[j], "k", 1), 0);
		}
	}
	for (int j = 0; j < MANY; j++) {
		struct ns_space_info i = info_of(s[j]);
		assert_counters(&i, 5, 5, 5, j % 2 ? 5 : 0);
		assert_int_equal(i.items, j % 2 ? 0 : 1);
		assert_int_equal(i.evictions, 0);
	}
	struct ns_space_info a = info_of(f->a);
	assert_idle(&a);
	t_assert_consistent(f->c);
}

/* ---- ns_space_list ------------------------------------------------------ */

static void test_list_in_id_order(void **state)
{
	struct fx *f = *state;
	const char *more[] = { "zz:last", "aa:first", "test:c", "m:mid" };
	uint32_t id_of[8] = { 0 };
	const char *pfx[8];
	size_t total = 2 + 4, n;

	pfx[0] = "test:a";
	pfx[1] = "test:b";
	id_of[0] = info_of(f->a).id;
	id_of[1] = info_of(f->b).id;
	for (int j = 0; j < 4; j++) {
		ns_space *s;
		assert_int_equal(ns_space_open(f->c, more[j], &s), 0);
		pfx[2 + j] = more[j];
		id_of[2 + j] = info_of(s).id;
	}

	struct ns_space_info out[16];
	memset(out, 0, sizeof(out));
	n = 12345;
	assert_int_equal(ns_space_list(f->c, out, 16, &n), 0);
	assert_int_equal(n, total);
	for (size_t j = 0; j < n; j++) {
		if (j > 0)
			assert_true(out[j - 1].id < out[j].id);
		/* Each id names the prefix it was opened with. */
		size_t k;
		for (k = 0; k < total && id_of[k] != out[j].id; k++)
			;
		assert_true(k < total);
		assert_string_equal(out[j].prefix, pfx[k]);
	}

	/* A short array: the first CAP, and the total in *n. */
	struct ns_space_info two[3];
	memset(two, 0x5a, sizeof(two));
	n = 0;
	assert_int_equal(ns_space_list(f->c, two, 2, &n), 0);
	assert_int_equal(n, total);
	assert_int_equal(two[0].id, out[0].id);
	assert_string_equal(two[0].prefix, out[0].prefix);
	assert_int_equal(two[1].id, out[1].id);
	assert_string_equal(two[1].prefix, out[1].prefix);
	unsigned char canary[sizeof(two[2])];
	memset(canary, 0x5a, sizeof(canary));
	assert_memory_equal(&two[2], canary, sizeof(canary)); /* not written */

	/* Just the count. */
	n = 0;
	assert_int_equal(ns_space_list(f->c, NULL, 0, &n), 0);
	assert_int_equal(n, total);
}

/* The table is shared: a namespace another process created is listed, and
 * the list carries the same settings and counters as ns_space_info. */
static void test_list_sees_other_processes(void **state)
{
	struct fx *f = *state;
	size_t n = 0;

	set_ok(f->a, "k", 1, 40, 0);
	assert_int_equal(get_chk(f->a, "k"), 0);
	assert_int_equal(ns_space_config(f->a, 1234, 1u << 20), 0);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		ns_cache *c;
		ns_space *s;
		if (ns_attach(f->name, NULL, &c) != 0 ||
		    ns_space_open(c, "child:made", &s) != 0)
			_exit(1);
		_exit(0);
	}
	int st = t_wait(p, 10000);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);

	struct ns_space_info out[8];
	assert_int_equal(ns_space_list(f->c, out, 8, &n), 0);
	assert_int_equal(n, 3);
	size_t j;
	for (j = 0; j < n && strcmp(out[j].prefix, "child:made") != 0; j++)
		;
	assert_true(j < n);
	struct ns_space_info a = info_of(f->a);
	for (j = 0; j < n && out[j].id != a.id; j++)
		;
	assert_true(j < n);
	assert_string_equal(out[j].prefix, "test:a");
	assert_int_equal(out[j].default_ttl_ms, 1234);
	assert_int_equal(out[j].quota_bytes, 1u << 20);
	assert_int_equal(out[j].generation, a.generation);
	assert_int_equal(out[j].items, a.items);
	assert_int_equal(out[j].bytes, a.bytes);
	assert_int_equal(out[j].sets, a.sets);
	assert_int_equal(out[j].hits, a.hits);
}

/* ---- ns_space_clear ----------------------------------------------------- */

#define CLEAR_KEYS 100000
#define OTHER_KEYS 2000

static void akey(char *k, size_t n, int i) { snprintf(k, n, "a:%06d", i); }
static void bkey(char *k, size_t n, int i) { snprintf(k, n, "b:%06d", i); }

/* What a process sees of A and B after the clear: 0 if all as expected. */
static int check_cleared(ns_space *a, ns_space *b, uint32_t gen)
{
	char key[32], buf[256];
	size_t vl;
	struct ns_space_info i;

	if (ns_space_info(a, &i) != 0 || i.generation != gen)
		return 10;
	for (int j = 0; j < CLEAR_KEYS; j++) {
		akey(key, sizeof(key), j);
		if (ns_get(a, key, strlen(key), buf, sizeof(buf), &vl) != NS_ENOTFOUND)
			return 11;
		if (ns_exists(a, key, strlen(key)) != NS_ENOTFOUND)
			return 12;
	}
	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		if (ns_get(b, key, strlen(key), buf, sizeof(buf), &vl) != 0 ||
		    t_check_value(buf, vl, key) != 0)
			return 13;
		if (ns_exists(b, key, strlen(key)) != 0)
			return 14;
	}
	return 0;
}

static void test_clear_100k(void **state)
{
	struct fx *f = *state;
	char key[32];
	int go[2], ready[2];

	for (int j = 0; j < CLEAR_KEYS; j++) {
		akey(key, sizeof(key), j);
		set_ok(f->a, key, (uint32_t)j, 24, 0);
	}
	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		set_ok(f->b, key, (uint32_t)j, 24, 0);
	}
	struct ns_space_info a0 = info_of(f->a), b0 = info_of(f->b);
	assert_int_equal(a0.items, CLEAR_KEYS);
	assert_int_equal(b0.items, OTHER_KEYS);
	assert_int_equal(a0.evictions, 0);

	/* A child holding handles from before the clear, waiting for it. */
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		char ch;
		close(go[1]);
		close(ready[0]);
		/* Touch the handle first so the child has its own slot. */
		if (get_chk(f->a, "a:000000") != 0)
			_exit(2);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &ch, 1) != 1)
			_exit(3);
		_exit(check_cleared(f->a, f->b, a0.generation + 1));
	}
	close(go[0]);
	close(ready[1]);
	char ch;
	assert_int_equal(read(ready[0], &ch, 1), 1);

	assert_int_equal(ns_space_clear(f->a), 0);
	/* Nothing was walked: the items are still counted, to be reclaimed
	 * lazily, and B did not move at all. */
	struct ns_space_info a1 = info_of(f->a), b1 = info_of(f->b);
	assert_int_equal(a1.generation, a0.generation + 1);
	assert_int_equal(a1.items, a0.items);
	assert_int_equal(a1.bytes, a0.bytes);
	assert_int_equal(a1.evictions, 0);
	assert_int_equal(b1.generation, b0.generation);
	assert_int_equal(b1.items, b0.items);
	assert_int_equal(b1.bytes, b0.bytes);
	assert_int_equal(a1.id, a0.id);
	assert_string_equal(a1.prefix, "test:a");

	assert_int_equal(write(go[1], "g", 1), 1);
	int st = t_wait(p, 60000);
	assert_true(st != -1 && WIFEXITED(st));
	if (WEXITSTATUS(st) != 0)
		fail_msg("child after clear: check %d failed", WEXITSTATUS(st));
	close(go[1]);
	close(ready[0]);

	/* A process that attaches afterwards sees the same. */
	p = fork();
	assert_true(p >= 0);
	if (p == 0) {
		ns_cache *c;
		ns_space *a, *b;
		if (ns_attach(f->name, NULL, &c) != 0 ||
		    ns_space_open(c, "test:a", &a) != 0 ||
		    ns_space_open(c, "test:b", &b) != 0)
			_exit(1);
		_exit(check_cleared(a, b, a0.generation + 1));
	}
	st = t_wait(p, 60000);
	assert_true(st != -1 && WIFEXITED(st));
	if (WEXITSTATUS(st) != 0)
		fail_msg("late child after clear: check %d failed", WEXITSTATUS(st));

	assert_int_equal(check_cleared(f->a, f->b, a0.generation + 1), 0);
	/* Reads take no lock and reclaim nothing. */
	assert_int_equal(info_of(f->a).items, a0.items);

	/* A delete of a cleared key: absent. */
	assert_int_equal(ns_del(f->a, "a:000007", 8), NS_ENOTFOUND);
	assert_int_equal(get_chk(f->a, "a:000007"), NS_ENOTFOUND);

	/* New writes work, old names included; the rest stay absent. */
	for (int j = 0; j < 1000; j++) {
		akey(key, sizeof(key), j * 3);
		set_ok(f->a, key, (uint32_t)j + 777, 30, 0);
	}
	set_ok(f->a, "fresh", 1, 30, 0);
	for (int j = 0; j < 3000; j++) {
		akey(key, sizeof(key), j);
		assert_int_equal(get_chk(f->a, key), j % 3 == 0 ? 0 : NS_ENOTFOUND);
	}
	assert_int_equal(get_chk(f->a, "fresh"), 0);
	assert_int_equal(info_of(f->a).generation, a0.generation + 1);

	/* A second clear takes the new ones too, and only bumps once more. */
	assert_int_equal(ns_space_clear(f->a), 0);
	assert_int_equal(info_of(f->a).generation, a0.generation + 2);
	assert_int_equal(get_chk(f->a, "fresh"), NS_ENOTFOUND);
	assert_int_equal(get_chk(f->a, "a:000000"), NS_ENOTFOUND);
	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		assert_int_equal(get_chk(f->b, key), 0);
	}
	assert_int_equal(info_of(f->b).generation, b0.generation);
	ns__recover_dead(f->c);
	t_assert_consistent(f->c);
}

/*
 * Cleared items are reclaimed by writers that need room: fill a small
 * segment with A until it evicts, clear A, then write half as many keys to
 * B.  Every set succeeds and B's keys stay: at least half of what the
 * writers find is dead (cleared) memory, which must go before B's live
 * items do.
 */
static int setup_small(void **state) { return setup_sized(state, 8u << 20, 100000); }

static void test_cleared_memory_is_reused(void **state)
{
	struct fx *f = *state;
	char key[32];
	int n = 0;

	for (; n < 1000000 && info_of(f->a).evictions == 0; n++) {
		akey(key, sizeof(key), n);
		set_ok(f->a, key, (uint32_t)n, 100, 0);
	}
	assert_true(n < 1000000);
	uint64_t items = info_of(f->a).items;
	assert_int_equal(ns_space_clear(f->a), 0);

	int nb = (int)(items / 2);
	for (int j = 0; j < nb; j++) {
		bkey(key, sizeof(key), j);
		set_ok(f->b, key, (uint32_t)j, 100, 0);
	}
	int lost = 0;
	for (int j = 0; j < nb; j++) {
		bkey(key, sizeof(key), j);
		lost += get_chk(f->b, key) != 0;
	}
	struct ns_space_info a = info_of(f->a), b = info_of(f->b);
	print_message("# %llu A items cleared, %d B keys written, %d lost; "
		      "A items now %llu\n", (unsigned long long)items, nb, lost,
		      (unsigned long long)a.items);
	assert_true(a.items < items); /* reclaimed, at least in part */
	assert_true(lost * 100 < nb);
	assert_true(b.items >= (uint64_t)(nb - lost));
	t_assert_consistent(f->c);
}

/* ---- quota -------------------------------------------------------------- */

#define QUOTA (256u << 10)
#define QUOTA_KEYS 20000

static void test_quota_evicts_only_own_items(void **state)
{
	struct fx *f = *state;
	char key[32];

	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		set_ok(f->b, key, (uint32_t)j, 200, 0);
	}
	struct ns_space_info b0 = info_of(f->b);
	/* Every item here has one size, hence one chunk size. */
	uint64_t chunk = b0.bytes / b0.items;
	assert_int_equal(b0.bytes % b0.items, 0);

	assert_int_equal(ns_space_config(f->a, 0, QUOTA), 0);
	struct ns_space_info a = info_of(f->a);
	assert_int_equal(a.quota_bytes, QUOTA);
	assert_int_equal(a.default_ttl_ms, 0);

	/* Over twenty times the quota: every store succeeds, the key just
	 * stored is there, and A never holds more than its quota (plus the
	 * one item that took it over). */
	uint64_t peak = 0;
	for (int j = 0; j < QUOTA_KEYS; j++) {
		akey(key, sizeof(key), j);
		set_ok(f->a, key, (uint32_t)j, 200, 0);
		if (get_chk(f->a, key) != 0)
			fail_msg("%s missing right after its set", key);
		a = info_of(f->a);
		if (a.bytes > peak)
			peak = a.bytes;
		if (a.bytes > QUOTA + chunk)
			fail_msg("after %d sets A holds %llu bytes, quota %u, chunk %llu",
				 j + 1, (unsigned long long)a.bytes, QUOTA,
				 (unsigned long long)chunk);
	}
	a = info_of(f->a);
	print_message("# quota %u: A peak %llu bytes, %llu items, %llu evictions\n",
		      QUOTA, (unsigned long long)peak, (unsigned long long)a.items,
		      (unsigned long long)a.evictions);
	/* It used its quota, and every key it does not hold was evicted. */
	assert_true(a.bytes + chunk > QUOTA);
	assert_int_equal(a.items + a.evictions, QUOTA_KEYS);
	assert_int_equal(f->c->spaces[a.id - 1].quota_evictions, a.evictions);
	assert_int_equal(a.sets, QUOTA_KEYS);
	assert_int_equal(a.bytes, a.items * chunk);
	uint64_t present = 0;
	for (int j = 0; j < QUOTA_KEYS; j++) {
		akey(key, sizeof(key), j);
		present += ns_exists(f->a, key, strlen(key)) == 0;
	}
	assert_int_equal(present, a.items);

	/* B lost nothing, and counted no eviction. */
	struct ns_space_info b = info_of(f->b);
	assert_int_equal(b.items, OTHER_KEYS);
	assert_int_equal(b.bytes, b0.bytes);
	assert_int_equal(b.evictions, 0);
	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		assert_int_equal(get_chk(f->b, key), 0);
	}

	/* B, without a quota, may grow past A's. */
	for (int j = OTHER_KEYS; j < 3 * OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		set_ok(f->b, key, (uint32_t)j, 200, 0);
	}
	assert_int_equal(info_of(f->b).items, 3 * OTHER_KEYS);
	assert_int_equal(info_of(f->b).evictions, 0);
	t_assert_consistent(f->c);
}

/* Three processes write into A at once: A still keeps to its quota (give
 * or take an item per writer), B loses nothing, and the counters agree with
 * what is stored once they are done. */
#define QUOTA_PROCS 3

static void test_quota_with_concurrent_writers(void **state)
{
	struct fx *f = *state;
	char key[32];
	pid_t pid[QUOTA_PROCS];

	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		set_ok(f->b, key, (uint32_t)j, 200, 0);
	}
	struct ns_space_info b0 = info_of(f->b);
	uint64_t chunk = b0.bytes / b0.items;
	assert_int_equal(ns_space_config(f->a, 0, QUOTA), 0);

	for (int p = 0; p < QUOTA_PROCS; p++) {
		pid[p] = fork();
		assert_true(pid[p] >= 0);
		if (pid[p] == 0) {
			char k[32], val[512];
			for (int j = 0; j < QUOTA_KEYS / 2; j++) {
				snprintf(k, sizeof(k), "a%d:%05d", p, j);
				size_t vl = t_make_value(val, sizeof(val), k, (uint32_t)j, 199);
				if (ns_set(f->a, k, strlen(k), val, vl, 0) != 0)
					_exit(1);
			}
			_exit(0);
		}
	}
	for (int p = 0; p < QUOTA_PROCS; p++) {
		int st = t_wait(pid[p], 60000);
		assert_true(st != -1 && WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	struct ns_space_info a = info_of(f->a), b = info_of(f->b);
	print_message("# %d writers: A %llu bytes, %llu items, %llu evictions\n",
		      QUOTA_PROCS, (unsigned long long)a.bytes,
		      (unsigned long long)a.items, (unsigned long long)a.evictions);
	assert_true(a.bytes <= QUOTA + QUOTA_PROCS * chunk);
	assert_int_equal(a.sets, QUOTA_PROCS * (QUOTA_KEYS / 2));
	assert_int_equal(a.items + a.evictions, QUOTA_PROCS * (QUOTA_KEYS / 2));
	assert_int_equal(a.bytes, a.items * chunk);
	uint64_t present = 0;
	for (int p = 0; p < QUOTA_PROCS; p++) {
		for (int j = 0; j < QUOTA_KEYS / 2; j++) {
			snprintf(key, sizeof(key), "a%d:%05d", p, j);
			present += ns_exists(f->a, key, strlen(key)) == 0;
		}
	}
	assert_int_equal(present, a.items);
	assert_int_equal(b.items, OTHER_KEYS);
	assert_int_equal(b.evictions, 0);
	for (int j = 0; j < OTHER_KEYS; j++) {
		bkey(key, sizeof(key), j);
		assert_int_equal(get_chk(f->b, key), 0);
	}
	ns__recover_dead(f->c);
	t_assert_consistent(f->c);
}

/* An item that cannot fit in the quota even alone: NS_ENOMEM, and
 * nothing of another namespace goes to make room for it. */
static void test_quota_too_small_for_item_is_enomem(void **state)
{
	struct fx *f = *state;
	char val[4096];

	set_ok(f->b, "b", 1, 40, 0);
	memset(val, 'x', sizeof(val));
	assert_int_equal(ns_space_config(f->a, 0, 1000), 0);
	assert_int_equal(ns_set(f->a, "big", 3, val, sizeof(val), 0), NS_ENOMEM);
	assert_int_equal(get_chk(f->a, "big"), NS_ENOTFOUND);
	assert_int_equal(info_of(f->a).items, 0);
	assert_int_equal(get_chk(f->b, "b"), 0);
	/* Quota 0 lifts it. */
	assert_int_equal(ns_space_config(f->a, 0, 0), 0);
	assert_int_equal(ns_set(f->a, "big", 3, val, sizeof(val), 0), 0);
	t_assert_consistent(f->c);
}

/* ---- default TTL -------------------------------------------------------- */

static void test_default_ttl(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = f->t0;

	set_ok(f->a, "before", 1, 40, 0); /* stored before the call: no TTL */
	assert_int_equal(ns_space_config(f->a, 1000, 0), 0);
	struct ns_space_info i = info_of(f->a);
	assert_int_equal(i.default_ttl_ms, 1000);
	assert_int_equal(i.quota_bytes, 0);
	assert_int_equal(info_of(f->b).default_ttl_ms, 0);

	set_ok(f->a, "dflt", 2, 40, 0);
	set_ok(f->a, "never", 3, 40, NS_TTL_NEVER);
	set_ok(f->a, "own", 4, 40, 5000);
	set_ok(f->b, "dflt", 5, 40, 0); /* B has no default */

	ns__test_clock(t0 + 999);
	assert_int_equal(get_chk(f->a, "dflt"), 0);
	ns__test_clock(t0 + 1000);
	assert_int_equal(get_chk(f->a, "dflt"), NS_ENOTFOUND);
	assert_int_equal(get_chk(f->a, "own"), 0);
	assert_int_equal(get_chk(f->a, "before"), 0);
	ns__test_clock(t0 + 5000);
	assert_int_equal(get_chk(f->a, "own"), NS_ENOTFOUND);
	ns__test_clock(t0 + 100ull * 365 * 86400 * 1000);
	assert_int_equal(get_chk(f->a, "never"), 0);
	assert_int_equal(get_chk(f->a, "before"), 0);
	assert_int_equal(get_chk(f->b, "dflt"), 0);

	/* Another process stores with the shared default. */
	uint64_t t1 = t0 + 200000;
	ns__test_clock(t1);
	pid_t p = fork();
	assert_true(p >= 0);
	if (p == 0)
		_exit(ns_set(f->a, "child", 5, "v", 1, 0) == 0 ? 0 : 1);
	int st = t_wait(p, 10000);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	char buf[8];
	size_t vl;
	ns__test_clock(t1 + 999);
	assert_int_equal(ns_get(f->a, "child", 5, buf, sizeof(buf), &vl), 0);
	ns__test_clock(t1 + 1000);
	assert_int_equal(ns_get(f->a, "child", 5, buf, sizeof(buf), &vl), NS_ENOTFOUND);

	/* Back to no default. */
	assert_int_equal(ns_space_config(f->a, 0, 0), 0);
	assert_int_equal(info_of(f->a).default_ttl_ms, 0);
	set_ok(f->a, "after", 6, 40, 0);
	ns__test_clock(t1 + 1000ull * 86400 * 1000);
	assert_int_equal(get_chk(f->a, "after"), 0);
	t_assert_consistent(f->c);
}

/* ---- errors ------------------------------------------------------------- */

static void test_errors(void **state)
{
	struct fx *f = *state;
	struct ns_space_info i, out[4];
	size_t n;

	assert_int_equal(ns_space_config(NULL, 0, 0), NS_EINVAL);
	/* "Never" is a store's choice, not a default. */
	assert_int_equal(ns_space_config(f->a, NS_TTL_NEVER, 0), NS_EINVAL);
	assert_int_equal(ns_space_info(NULL, &i), NS_EINVAL);
	assert_int_equal(ns_space_info(f->a, NULL), NS_EINVAL);
	assert_int_equal(ns_space_list(NULL, out, 4, &n), NS_EINVAL);
	assert_int_equal(ns_space_list(f->c, out, 4, NULL), NS_EINVAL);
	assert_int_equal(ns_space_list(f->c, NULL, 4, &n), NS_EINVAL);
	assert_int_equal(ns_space_clear(NULL), NS_EINVAL);
}

static void test_read_only(void **state)
{
	struct fx *f = *state;
	struct ns_attach_opts o = { .flags = NS_RDONLY };
	ns_cache *ro;
	ns_space *s;
	size_t n = 0;

	set_ok(f->a, "k", 1, 40, 0);
	assert_int_equal(ns_space_config(f->a, 777, 1u << 20), 0);
	assert_int_equal(ns_attach(f->name, &o, &ro), 0);
	assert_int_equal(ns_space_open(ro, "test:a", &s), 0);
	struct ns_space_info before = info_of(s);

	assert_int_equal(ns_space_config(s, 0, 0), NS_ERDONLY);
	assert_int_equal(ns_space_clear(s), NS_ERDONLY);
	/* Reading works, and nothing changed. */
	struct ns_space_info i = info_of(s);
	assert_int_equal(i.generation, before.generation);
	assert_int_equal(i.default_ttl_ms, 777);
	assert_int_equal(i.quota_bytes, 1u << 20);
	assert_int_equal(i.items, 1);
	assert_int_equal(get_chk(s, "k"), 0);
	assert_int_equal(get_chk(f->a, "k"), 0);
	assert_int_equal(ns_space_list(ro, NULL, 0, &n), 0);
	assert_int_equal(n, 2);
	ns_detach(ro);
}

/* A client killed between a store and its counter update leaves items and
 * bytes off; the audit (exact when alone) recounts them from the index. */
static void test_audit_recounts_items_and_bytes(void **state)
{
	struct fx *f = *state;
	struct ns_space_info a, b;
	char key[16];

	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(ns_set(f->a, key, strlen(key), "v", 1, 0), 0);
	}
	assert_int_equal(ns_set(f->b, "x", 1, "y", 1, 0), 0);
	assert_int_equal(ns_space_info(f->a, &a), 0);
	assert_int_equal(ns_space_info(f->b, &b), 0);
	/* What a crash at the wrong instant would leave. */
	f->c->spaces[f->a->id - 1].items += 7;
	f->c->spaces[f->a->id - 1].bytes -= 3000;
	f->c->spaces[f->b->id - 1].items = -2;
	assert_true(ns__audit(f->c) >= 0);
	struct ns_space_info a2, b2;
	assert_int_equal(ns_space_info(f->a, &a2), 0);
	assert_int_equal(ns_space_info(f->b, &b2), 0);
	assert_int_equal(a2.items, 100);
	assert_int_equal(a2.bytes, a.bytes);
	assert_int_equal(b2.items, 1);
	assert_int_equal(b2.bytes, b.bytes);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fresh_space_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_recounts_items_and_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counters_follow_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expirations_count_removed_expired_items, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counters_include_other_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_counters_exact_across_many_namespaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_in_id_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_sees_other_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clear_100k, setup_big, teardown),
		cmocka_unit_test_setup_teardown(test_cleared_memory_is_reused, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_quota_evicts_only_own_items, setup_quota, teardown),
		cmocka_unit_test_setup_teardown(test_quota_with_concurrent_writers, setup_quota, teardown),
		cmocka_unit_test_setup_teardown(test_quota_too_small_for_item_is_enomem, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_ttl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
