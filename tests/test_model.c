/*
 * test_model.c - a random sequence of operations from one process gives the
 * same results as a plain in-memory map given the same sequence.
 *
 * The model is key -> {value, expire_at} per namespace; a key whose
 * expire_at is at or before the (fake) clock reads as absent, and deleting
 * it gives NS_ENOTFOUND.  The segment is large enough that nothing is ever
 * evicted, so every return code and every byte must agree.
 *
 * Replay one failing run with NS_MODEL_SEED=<seed> (and NS_MODEL_OPS=<n>).
 */
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define NKEYS 500          /* small, so overwrites and deletes hit */
#define NSPACES 2          /* the same key in two spaces is two keys */
#define NSEEDS 5
#define NOPS 20000
#define SEG_SIZE (64u << 20)
#define BIG_VALUE 4096     /* the occasional value of a few KiB */
#define START_MS 1700000000000ull /* a fixed fake wall clock (Nov 2023) */

struct entry {
	bool present;
	uint64_t expire_ms; /* 0: never */
	size_t vlen;
	uint8_t val[BIG_VALUE];
};

struct model {
	uint64_t seed, rng, now;
	int op;
	const char *what;
	struct {
		size_t len;
		uint8_t b[NS_KEY_MAX];
	} key[NKEYS];
	struct entry e[NSPACES][NKEYS];
};

static uint64_t rnd(struct model *m)
{
	/* splitmix64 (Vigna): every seed, including 0, gives a full sequence. */
	uint64_t z = (m->rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(struct model *m, uint64_t n) { return rnd(m) % n; }

#define mismatch(m, ...)                                                     \
	do {                                                                 \
		print_error("seed %llu op %d (%s): ", (unsigned long long)(m)->seed, \
			    (m)->op, (m)->what);                             \
		fail_msg(__VA_ARGS__);                                       \
	} while (0)

#define check_rc(m, got, want)                                               \
	do {                                                                 \
		int g_ = (got), w_ = (want);                                 \
		if (g_ != w_)                                                \
			mismatch(m, "got %d (%s), model says %d (%s); replay "  \
				 "with NS_MODEL_SEED=%llu", g_, ns_strerror(g_), \
				 w_, ns_strerror(w_),                        \
				 (unsigned long long)(m)->seed);             \
	} while (0)

/* Distinct binary keys: two bytes of index, then random bytes, sometimes
 * up to NS_KEY_MAX. */
static void make_keys(struct model *m)
{
	for (int i = 0; i < NKEYS; i++) {
		size_t len = 2 + (below(m, 10) == 0 ? below(m, NS_KEY_MAX - 1)
						    : below(m, 30));
		m->key[i].len = len;
		m->key[i].b[0] = (uint8_t)i;
		m->key[i].b[1] = (uint8_t)(i >> 8);
		for (size_t j = 2; j < len; j++)
			m->key[i].b[j] = (uint8_t)rnd(m);
	}
}

/* The model's answer for a read of E at the current clock. */
static bool live(const struct model *m, const struct entry *e)
{
	return e->present && (e->expire_ms == 0 || e->expire_ms > m->now);
}

static void do_set(struct model *m, ns_space *s, struct entry *e, int k)
{
	uint8_t val[BIG_VALUE];
	size_t vlen = below(m, 20) == 0 ? below(m, BIG_VALUE + 1) : below(m, 301);
	/* Half the TTLs are whole multiples of 10 ms, like most clock steps
	 * below, so that expire_at == now happens at some reads. */
	uint64_t ttl = below(m, 2) ? 0 : below(m, 2) ? 10 * (1 + below(m, 300))
						      : 1 + below(m, 3000);

	for (size_t j = 0; j < vlen; j++)
		val[j] = (uint8_t)rnd(m);
	m->what = "set";
	check_rc(m, ns_set(s, m->key[k].b, m->key[k].len, val, vlen, ttl), 0);
	e->present = true;
	e->expire_ms = ttl ? m->now + ttl : 0;
	e->vlen = vlen;
	memcpy(e->val, val, vlen);
}

static void do_get(struct model *m, ns_space *s, const struct entry *e, int k)
{
	static uint8_t buf[BIG_VALUE + 1];
	bool small = below(m, 10) == 0;
	size_t cap = sizeof(buf), vlen = (size_t)-1;

	m->what = "get";
	if (small && live(m, e))
		cap = below(m, e->vlen + 1); /* at most exactly enough */
	memset(buf, 0xa5, sizeof(buf));
	int r = ns_get(s, m->key[k].b, m->key[k].len, buf, cap, &vlen);
	if (!live(m, e)) {
		check_rc(m, r, NS_ENOTFOUND);
		return;
	}
	check_rc(m, r, cap < e->vlen ? NS_ERANGE : 0);
	if (vlen != e->vlen)
		mismatch(m, "key %d: length %zu, model says %zu", k, vlen, e->vlen);
	if (r == NS_ERANGE) {
		for (size_t j = 0; j < sizeof(buf); j++)
			if (buf[j] != 0xa5)
				mismatch(m, "key %d: NS_ERANGE wrote byte %zu", k, j);
		return;
	}
	if (memcmp(buf, e->val, vlen) != 0)
		mismatch(m, "key %d: value of %zu bytes differs", k, vlen);
}

static void do_del(struct model *m, ns_space *s, struct entry *e, int k)
{
	m->what = "del";
	check_rc(m, ns_del(s, m->key[k].b, m->key[k].len),
		 live(m, e) ? 0 : NS_ENOTFOUND);
	e->present = false;
}

/* Read every key of every space and compare with the model. */
static void compare_all(struct model *m, ns_space **sp)
{
	static uint8_t buf[BIG_VALUE];

	m->what = "final read";
	for (int n = 0; n < NSPACES; n++) {
		for (int k = 0; k < NKEYS; k++) {
			const struct entry *e = &m->e[n][k];
			size_t vlen = 0;
			int r = ns_get(sp[n], m->key[k].b, m->key[k].len, buf,
				       sizeof(buf), &vlen);
			check_rc(m, r, live(m, e) ? 0 : NS_ENOTFOUND);
			if (r == 0 && (vlen != e->vlen || memcmp(buf, e->val, vlen) != 0))
				mismatch(m, "space %d key %d differs", n, k);
		}
	}
}

/* t_assert_consistent, with the seed printed first when it fails. */
static void consistent(const struct model *m, ns_cache *c)
{
	struct ns_verify_report rep;

	if (ns__verify(c, &rep) != 0 || rep.locked != 0)
		print_error("seed %llu op %d: inconsistent; replay with "
			    "NS_MODEL_SEED=%llu\n", (unsigned long long)m->seed, m->op,
			    (unsigned long long)m->seed);
	t_assert_consistent(c);
}

static const char *cur_name; /* the segment a failed test leaves behind */

static int cleanup(void **state)
{
	(void)state;
	if (cur_name)
		ns_unlink(cur_name);
	cur_name = NULL;
	ns__test_clock(0);
	return 0;
}

static void run_seed(uint64_t seed, int nops)
{
	static struct model m; /* about 4 MiB: not on the stack */
	const char *name = cur_name = t_name("model");
	ns_space *sp[NSPACES];
	ns_cache *c;

	memset(&m, 0, sizeof(m));
	m.seed = m.rng = seed;
	m.now = START_MS;
	make_keys(&m);
	/* The segment's creation time comes from the same fake clock. */
	ns__test_clock(m.now);
	c = t_create(name, SEG_SIZE, 0);
	assert_int_equal(ns_space_open(c, "model:a", &sp[0]), 0);
	assert_int_equal(ns_space_open(c, "model:b", &sp[1]), 0);

	for (m.op = 0; m.op < nops; m.op++) {
		uint64_t dice = below(&m, 100);
		int n = (int)below(&m, NSPACES), k = (int)below(&m, NKEYS);
		struct entry *e = &m.e[n][k];

		if (dice < 40) {
			do_set(&m, sp[n], e, k);
		} else if (dice < 80) {
			do_get(&m, sp[n], e, k);
		} else if (dice < 92) {
			do_del(&m, sp[n], e, k);
		} else if (dice < 94 && live(&m, e) && e->expire_ms != 0) {
			/* To the very millisecond it expires, then touch it. */
			m.now = e->expire_ms;
			ns__test_clock(m.now);
			if (below(&m, 2))
				do_get(&m, sp[n], e, k);
			else
				do_del(&m, sp[n], e, k);
		} else {
			/* A key is touched about every 2,500 ops, ~200 clock
			 * steps of ~10 ms: about the TTLs above, so reads
			 * see live, expired and just-expiring items alike.
			 * Rarely a jump past every TTL. */
			uint64_t r = below(&m, 100);
			m.now += r == 0 ? 10000 : r < 80 ? 10 * below(&m, 3) : below(&m, 25);
			ns__test_clock(m.now);
		}
		if (m.op % 5000 == 4999)
			consistent(&m, c);
	}
	compare_all(&m, sp);
	consistent(&m, c);
	ns_detach(c);
	ns_unlink(name);
	ns__test_clock(0);
}

static void random_ops_match_a_plain_map(void **state)
{
	const char *env = getenv("NS_MODEL_SEED"), *ops = getenv("NS_MODEL_OPS");
	int nops = ops ? atoi(ops) : NOPS;
	(void)state;

	if (env) {
		run_seed(strtoull(env, NULL, 0), nops);
		return;
	}
	/* Fixed seeds, so a failure in CI replays the same way. */
	for (uint64_t i = 0; i < NSEEDS; i++)
		run_seed(0x6d6f64656c000000ull + i, nops);
}

/* Expiry at the exact millisecond, and a delete of an expired key. */
static void expiry_boundary_matches_model(void **state)
{
	const char *name = cur_name = t_name("modelttl");
	ns_cache *c;
	ns_space *s;
	char buf[8];
	size_t vlen;
	(void)state;

	ns__test_clock(START_MS);
	c = t_create(name, SEG_SIZE, 0);
	assert_int_equal(ns_space_open(c, "model:ttl", &s), 0);
	assert_int_equal(ns_set(s, "k", 1, "v", 1, 100), 0);
	ns__test_clock(START_MS + 99);
	assert_int_equal(ns_get(s, "k", 1, buf, sizeof(buf), &vlen), 0);
	ns__test_clock(START_MS + 100); /* expire_at <= now: gone */
	assert_int_equal(ns_get(s, "k", 1, buf, sizeof(buf), &vlen), NS_ENOTFOUND);
	assert_int_equal(ns_del(s, "k", 1), NS_ENOTFOUND);
	/* Setting it again revives it, without a TTL this time. */
	assert_int_equal(ns_set(s, "k", 1, "w", 1, 0), 0);
	ns__test_clock(START_MS + 1000000000ull);
	assert_int_equal(ns_get(s, "k", 1, buf, sizeof(buf), &vlen), 0);
	assert_int_equal(buf[0], 'w');
	t_assert_consistent(c);
	ns_detach(c);
	ns_unlink(name);
	ns__test_clock(0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(expiry_boundary_matches_model, cleanup),
		cmocka_unit_test_teardown(random_ops_match_a_plain_map, cleanup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
